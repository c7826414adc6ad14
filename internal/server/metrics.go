package server

import (
	"context"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// metrics is one node's Prometheus registry. It is per server, not global,
// so that tests can run several servers in one process.
type metrics struct {
	reg          *prometheus.Registry
	collectors   []prometheus.Collector
	applyLatency prometheus.Histogram
	grpcRequests *prometheus.CounterVec
	grpcLatency  *prometheus.HistogramVec
	reportBatch  prometheus.Histogram
	authDenied   *prometheus.CounterVec
	enrolments   *prometheus.CounterVec
	// agentStreamsRefused counts streams refused past --max-agent-streams.
	agentStreamsRefused prometheus.Counter
	// rolloutsRemoved counts rollouts the retention passes removed.
	rolloutsRemoved prometheus.Counter
	// historyFolded and agentsRemoved count what the history and agent
	// retention passes folded and removed.
	historyFolded prometheus.Counter
	agentsRemoved prometheus.Counter
	// auditRemoved counts audit records the audit retention passes
	// removed (archived ones only).
	auditRemoved prometheus.Counter
	// artifactsRemoved counts blobs the artifact GC passes removed (on the
	// leader); artifactBytesFreed, the bytes this server deleted for them.
	artifactsRemoved   prometheus.Counter
	artifactBytesFreed prometheus.Counter
	// uploadsRefused counts uploads refused by a limit, by reason.
	uploadsRefused *prometheus.CounterVec
	// sessionEntries and sessionsBatched count agent_sessions entries this
	// server committed and the connects and disconnects they held.
	sessionEntries prometheus.Counter
	// auditDropped counts refusals this server could not record.
	auditDropped    prometheus.Counter
	sessionsBatched prometheus.Counter
	// rollouts are the release figures: outcomes, durations, hosts.
	rollouts *rolloutMetrics
	// webhooks: deliveries by webhook and outcome, and their durations.
	webhooks *webhookMetrics
}

func newMetrics(s *Server) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.applyLatency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "rel_raft_apply_duration_seconds",
		Help:    "Time from proposing a command on the leader to the FSM having applied it.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
	})
	m.grpcRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rel_grpc_requests_total",
		Help: "gRPC requests served, by full method and status code.",
	}, []string{"method", "code"})
	m.grpcLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "rel_grpc_request_duration_seconds",
		Help:    "gRPC request handling time, by full method.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
	}, []string{"method"})
	m.reportBatch = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "rel_agent_report_batch_size",
		Help:    "Agent reports committed per raft entry.",
		Buckets: prometheus.ExponentialBuckets(1, 2, 12),
	})
	m.authDenied = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rel_auth_denied_total",
		Help: "Requests refused for their credentials, by full method and status code (Unauthenticated or PermissionDenied).",
	}, []string{"method", "code"})
	m.enrolments = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rel_agent_certificates_issued_total",
		Help: "Agent certificates signed by this server, by how (enrol, renew).",
	}, []string{"how"})
	m.agentStreamsRefused = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "rel_agent_streams_refused_total",
		Help: "Agent streams refused because this server held its --max-agent-streams.",
	})
	m.rolloutsRemoved = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "rel_retention_rollouts_removed_total",
		Help: "Finished rollouts (with their events) removed by retention passes of this server while it led.",
	})
	m.historyFolded = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "rel_retention_history_folded_total",
		Help: "History entries folded into per-host summaries by retention passes of this server while it led.",
	})
	m.agentsRemoved = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "rel_retention_agents_removed_total",
		Help: "Long-disconnected agents removed (with their rows) by retention passes of this server while it led.",
	})
	m.auditRemoved = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "rel_retention_audit_removed_total",
		Help: "Audit records an archive covered, removed past --audit-retention by retention passes of this server while it led.",
	})
	m.artifactsRemoved = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "rel_retention_artifacts_removed_total",
		Help: "Artifacts no release referenced past --artifact-grace, removed from the cluster's store by GC passes of this server while it led.",
	})
	m.artifactBytesFreed = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "rel_artifact_gc_bytes_freed_total",
		Help: "Bytes this server deleted from its artifact store for artifacts the GC removed.",
	})
	m.uploadsRefused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rel_artifact_uploads_refused_total",
		Help: "Uploads this server refused by a limit: reason quota (--artifact-quota) or concurrency (--max-concurrent-uploads).",
	}, []string{"reason"})
	m.sessionEntries = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "rel_agent_session_entries_total",
		Help: "Raft entries this server committed for its agents' connects and disconnects (agent_sessions).",
	})
	m.sessionsBatched = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "rel_agent_sessions_batched_total",
		Help: "Agent connects and disconnects this server committed in agent_sessions entries.",
	})
	m.auditDropped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "rel_audit_refusals_dropped_total",
		Help: "Refused requests this server could not record in the audit trail (its queue was full, or the entry failed); the trail records how many in its next entry.",
	})
	m.webhooks = newWebhookMetrics(m.register)
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	m.register(
		m.applyLatency, m.grpcRequests, m.grpcLatency, m.reportBatch, m.authDenied, m.enrolments, m.agentStreamsRefused, m.rolloutsRemoved,
		m.historyFolded, m.agentsRemoved, m.auditRemoved,
		m.artifactsRemoved, m.artifactBytesFreed, m.uploadsRefused,
		gauge("rel_artifact_store_bytes", "Bytes of the blobs in this server's artifact store.", func() float64 { return float64(s.artifacts.Used()) }),
		gauge("rel_artifact_store_quota_bytes", "This server's --artifact-quota (0: none).", func() float64 { return float64(s.artifacts.Quota()) }),
		m.sessionEntries, m.sessionsBatched, m.auditDropped,
		gauge("rel_tls_certificate_expiry_seconds", "Seconds until this server's certificate expires.", func() float64 {
			return time.Until(s.sec.M.Current().Leaf.NotAfter).Seconds()
		}),
		gauge("rel_agent_streams", "Agent streams held by this server.", func() float64 { return float64(len(s.sessions.all())) }),
		gauge("rel_raft_state", "Raft state of this node: 0 follower, 1 candidate, 2 leader, 3 shutdown.",
			func() float64 { return float64(s.raft.State()) }),
		gauge("rel_raft_is_leader", "1 when this node is the raft leader.", func() float64 {
			if s.raft.State() == raft.Leader {
				return 1
			}
			return 0
		}),
		gauge("rel_raft_commit_index", "Highest raft index known committed.", func() float64 { return float64(s.raft.CommitIndex()) }),
		gauge("rel_raft_applied_index", "Highest raft index applied to the FSM.", func() float64 { return float64(s.raft.AppliedIndex()) }),
		gauge("rel_raft_last_index", "Last raft index in the log.", func() float64 { return float64(s.raft.LastIndex()) }),
		gauge("rel_raft_trailing_logs", "Log entries kept after a snapshot, as the raft log budget set them (0 before its first look).", func() float64 { return float64(s.logTrailing.Load()) }),
		gauge("rel_raft_snapshot_threshold", "Log entries between snapshots, as the raft log budget set them (0 before its first look).", func() float64 { return float64(s.logThreshold.Load()) }),
		gauge("rel_raft_term", "Current raft term.", func() float64 { return float64(s.raft.CurrentTerm()) }),
		gauge("rel_raft_last_contact_seconds", "Seconds since this follower last heard from the leader (0 on the leader).", func() float64 {
			if s.raft.State() == raft.Leader {
				return 0
			}
			lc := s.raft.LastContact()
			if lc.IsZero() {
				return -1
			}
			return time.Since(lc).Seconds()
		}),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	m.rollouts = newRolloutMetrics(s, m.register)
	return m
}

// register adds collectors to the registry and keeps them, so that a test
// can list every metric a server exports, also the labelled ones that have
// no series yet.
func (m *metrics) register(cs ...prometheus.Collector) {
	m.collectors = append(m.collectors, cs...)
	m.reg.MustRegister(cs...)
}

func (m *metrics) unaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := handler(ctx, req)
	m.grpcRequests.WithLabelValues(info.FullMethod, status.Code(err).String()).Inc()
	m.grpcLatency.WithLabelValues(info.FullMethod).Observe(time.Since(start).Seconds())
	return resp, err
}

func (m *metrics) streamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	start := time.Now()
	err := handler(srv, ss)
	m.grpcRequests.WithLabelValues(info.FullMethod, status.Code(err).String()).Inc()
	m.grpcLatency.WithLabelValues(info.FullMethod).Observe(time.Since(start).Seconds())
	return err
}
