package server

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/relhq/rel/internal/auth"
	"github.com/relhq/rel/internal/pki"
	"github.com/relhq/rel/internal/transport"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// gRPC's per-connection buffers (its defaults are 32 KiB each).
const (
	grpcReadBuffer  = 8 << 10
	grpcWriteBuffer = 16 << 10
)

func (s *Server) setupGRPC() {
	opts := append(s.sec.GRPCServerOptions(),
		// Agents ping every 10 s to notice half-open streams; the default
		// policy (5 min) would answer that with GOAWAY.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		// A connection must finish its TLS handshake within 10 s.
		grpc.ConnectionTimeout(10*time.Second),
		// Most connections are idle agent streams: smaller per-connection
		// read buffers than gRPC's 32 KiB (make bench's streams row); write
		// buffers go back to a pool after each flush by default.
		grpc.ReadBufferSize(grpcReadBuffer),
		grpc.WriteBufferSize(grpcWriteBuffer),
		// Metrics first, so refused calls are counted too; then the one
		// place that authenticates and authorizes every call.
		grpc.ChainUnaryInterceptor(s.metrics.unaryInterceptor, s.unaryAuth, s.unaryRequestID),
		grpc.ChainStreamInterceptor(s.metrics.streamInterceptor, s.streamAuth),
	)
	s.grpcSrv = grpc.NewServer(opts...)
	relv1.RegisterControlServiceServer(s.grpcSrv, &controlService{s: s})
	relv1.RegisterClusterServiceServer(s.grpcSrv, &clusterService{s: s})
	relv1.RegisterAgentServiceServer(s.grpcSrv, &agentService{s: s})
	relv1.RegisterArtifactServiceServer(s.grpcSrv, &artifactService{s: s})
	relv1.RegisterACLServiceServer(s.grpcSrv, &aclService{s: s})
	relv1.RegisterEnrollServiceServer(s.grpcSrv, &enrollService{s: s})
	relv1.RegisterLifecycleServiceServer(s.grpcSrv, &lifecycleService{s: s})
	relv1.RegisterApprovalServiceServer(s.grpcSrv, &approvalService{s: s})
	relv1.RegisterAuditServiceServer(s.grpcSrv, &auditService{s: s})
	relv1.RegisterFreezeServiceServer(s.grpcSrv, &freezeService{s: s})
	relv1.RegisterReportServiceServer(s.grpcSrv, &reportService{s: s})
	relv1.RegisterEventServiceServer(s.grpcSrv, &eventService{s: s})
	relv1.RegisterWebhookServiceServer(s.grpcSrv, &webhookService{s: s})
}

// healthResponse is the body of GET /v1/health. Field names are part of the
// HTTP API: keep them stable.
type healthResponse struct {
	NodeID       string `json:"node_id"`
	Role         string `json:"role"`
	LeaderID     string `json:"leader_id"`
	HasLeader    bool   `json:"has_leader"`
	AppliedIndex uint64 `json:"applied_index"`
	CommitIndex  uint64 `json:"commit_index"`
	LastIndex    uint64 `json:"last_index"`
	Term         uint64 `json:"term"`
	Version      string `json:"version"`
}

// HTTP timeouts. Requests are small GETs; answers are small, except
// artifacts and profiles, whose handlers extend their own write deadline.
const (
	httpReadHeaderTimeout = 10 * time.Second
	httpReadTimeout       = 30 * time.Second
	httpWriteTimeout      = 60 * time.Second
	httpIdleTimeout       = 2 * time.Minute
	artifactWriteTimeout  = time.Hour
	debugWriteTimeout     = 5 * time.Minute
)

// setupHTTP builds the HTTPS server. /v1/health answers anyone (load
// balancers); /metrics needs a server or client certificate or a token
// that may read metrics; artifacts need a server or agent certificate;
// /debug/pprof/ exists only with --enable-debug and then needs a client
// certificate whose role may debug (operator, admin).
func (s *Server) setupHTTP() {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/health", s.handleHealth)
	mux.Handle("GET /v1/artifacts/sha256/{digest}", s.httpAuth(httpRule{kinds: []string{auth.KindServer, auth.KindAgent}}, artifactWriteTimeout,
		s.artifacts.Handler(s.fetchFromPeers)))
	mux.Handle("GET /metrics", s.httpAuth(httpRule{kinds: []string{auth.KindServer}, perm: auth.ReadMetrics, tokens: true}, 0,
		promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{Registry: s.metrics.reg})))
	if s.cfg.EnableDebug {
		debug := http.NewServeMux()
		debug.HandleFunc("/debug/pprof/", pprof.Index)
		debug.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		debug.HandleFunc("/debug/pprof/profile", pprof.Profile)
		debug.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		debug.HandleFunc("/debug/pprof/trace", pprof.Trace)
		mux.Handle("/debug/pprof/", s.httpAuth(httpRule{perm: auth.Debug}, debugWriteTimeout, debug))
	}
	if !s.cfg.DisableUI {
		s.setupUI(mux)
	}
	s.httpSrv = &http.Server{
		Handler:           mux,
		TLSConfig:         s.sec.HTTPServerTLS(),
		ReadHeaderTimeout: httpReadHeaderTimeout,
		ReadTimeout:       httpReadTimeout,
		WriteTimeout:      httpWriteTimeout,
		IdleTimeout:       httpIdleTimeout,
		// Failed handshakes (scanners, wrong CAs) are routine: debug level.
		ErrorLog: slog.NewLogLogger(s.logger.Handler(), slog.LevelDebug),
	}
}

// httpRule is who may use an HTTP endpoint: certificates of the given
// kinds; people's client certificates whose role has perm; and, with
// tokens, tokens whose role has perm.
type httpRule struct {
	kinds  []string
	perm   auth.Permission
	tokens bool
}

// httpAuth authenticates an HTTP request like the gRPC interceptors do and
// applies rule; writeTimeout > 0 replaces the server's write deadline for
// long answers.
func (s *Server) httpAuth(rule httpRule, writeTimeout time.Duration, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := s.httpPrincipal(r, rule.tokens)
		if err == nil {
			err = rule.allow(p)
		}
		if err != nil {
			st := status.Convert(err)
			code := http.StatusForbidden
			if st.Code() == codes.Unauthenticated {
				code = http.StatusUnauthorized
			}
			s.metrics.authDenied.WithLabelValues("HTTP "+r.URL.Path, st.Code().String()).Inc()
			s.logger.Warn("HTTP request refused", "path", r.URL.Path, "caller", p.String(), "remote", r.RemoteAddr, "err", st.Message())
			http.Error(w, st.Message(), code)
			return
		}
		if writeTimeout > 0 {
			_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(writeTimeout))
		}
		next.ServeHTTP(w, r.WithContext(auth.NewContext(r.Context(), p)))
	})
}

func (rule httpRule) allow(p auth.Principal) error {
	if slices.Contains(rule.kinds, p.Kind) {
		return nil
	}
	if p.IsPerson() && rule.perm != "" && p.HasPermission(rule.perm) && (p.Kind == auth.KindClient || rule.tokens) {
		return nil
	}
	if p.Kind == auth.KindAnonymous {
		if rule.tokens {
			return status.Error(codes.Unauthenticated, "this endpoint needs a client certificate of the cluster or a token (Authorization: Bearer ...)")
		}
		return status.Error(codes.Unauthenticated, "this endpoint needs a client certificate of the cluster")
	}
	return status.Errorf(codes.PermissionDenied, "%s may not use this endpoint", p)
}

// httpPrincipal is who made an HTTP request: its verified client
// certificate, or (when tokens count) its bearer token.
func (s *Server) httpPrincipal(r *http.Request, tokens bool) (auth.Principal, error) {
	id, leaf, ok, err := transport.PeerIdentity(r.TLS)
	if err != nil {
		return auth.Anonymous, status.Errorf(codes.Unauthenticated, "client certificate: %v", err)
	}
	if ok {
		if id.Cluster != s.cluster() {
			return auth.Anonymous, status.Errorf(codes.Unauthenticated, "client certificate is for cluster %q; this is cluster %q", id.Cluster, s.cluster())
		}
		if time.Now().After(leaf.NotAfter) {
			return auth.Anonymous, status.Errorf(codes.Unauthenticated, "client certificate of %s has expired", id)
		}
		switch id.Kind {
		case pki.KindServer:
			return auth.Principal{Kind: auth.KindServer, ID: id.ID, Cluster: id.Cluster}, nil
		case pki.KindAgent:
			if err := s.checkRevoked(id.ID, leaf); err != nil {
				return auth.Anonymous, err
			}
			return auth.Principal{Kind: auth.KindAgent, ID: id.ID, Cluster: id.Cluster}, nil
		case pki.KindClient:
			role, err := auth.ParseRole(id.Role)
			if err != nil {
				return auth.Anonymous, status.Errorf(codes.Unauthenticated, "client certificate %s: %v", id, err)
			}
			return auth.Principal{Kind: auth.KindClient, ID: id.ID, Cluster: id.Cluster, Grants: []auth.Grant{{Role: role}}}, nil
		}
	}
	if h := r.Header.Get("Authorization"); h != "" && tokens {
		return s.tokenPrincipal(h)
	}
	return auth.Anonymous, nil
}

// handleHealth answers 200 when the node knows a leader (it can serve
// writes), 503 otherwise; the body says which, for load balancers and people.
func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	st := s.status()
	body := healthResponse{
		NodeID: st.GetId(), Role: st.GetRole(), LeaderID: st.GetLeaderId(), HasLeader: st.GetLeaderId() != "",
		AppliedIndex: st.GetAppliedIndex(), CommitIndex: st.GetCommitIndex(), LastIndex: st.GetLastIndex(),
		Term: st.GetTerm(), Version: st.GetVersion(),
	}
	w.Header().Set("Content-Type", "application/json")
	if !body.HasLeader {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(body)
}
