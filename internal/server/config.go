package server

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"time"

	"github.com/relhq/rel/internal/pki"
)

// Defaults of the node's tunables.
const (
	DefaultGRPCAddr          = "127.0.0.1:7400"
	DefaultRaftAddr          = "127.0.0.1:7401"
	DefaultHTTPAddr          = "127.0.0.1:7480"
	DefaultSnapshotThreshold = 8192
	DefaultSnapshotInterval  = 2 * time.Minute
	DefaultTrailingLogs      = 10240
	// DefaultRaftLogBudget is the bytes the raft log holds, about (see
	// raftbudget.go).
	DefaultRaftLogBudget = 64 << 20
	// snapshotsRetained is how many snapshots the file store keeps.
	snapshotsRetained = 2
	// DefaultHeartbeatInterval is how often agents send heartbeats.
	DefaultHeartbeatInterval = 5 * time.Second
	// Raft's timeouts (server.go says why they are half of raft's own).
	DefaultRaftHeartbeatTimeout   = 500 * time.Millisecond
	DefaultRaftElectionTimeout    = 500 * time.Millisecond
	DefaultRaftLeaderLeaseTimeout = 500 * time.Millisecond
	// DefaultAgentGrace is how long an agent may be silent or disconnected
	// before it is recorded as down.
	DefaultAgentGrace = 15 * time.Second
	// DefaultReportWindow is how long reports are gathered into one raft entry.
	DefaultReportWindow = 5 * time.Millisecond
	// DefaultMaxArtifactBytes limits uploaded artifacts.
	DefaultMaxArtifactBytes = 2 << 30
	// DefaultMaxAgentStreams caps one server's agent streams: well above
	// what a server of this size holds (about 100 KiB of memory each).
	DefaultMaxAgentStreams = 50_000
	// DefaultArtifactGrace protects an upload whose release is not created
	// yet: a day covers a build pipeline that uploads, then waits for tests.
	DefaultArtifactGrace = 24 * time.Hour
	// DefaultMaxConcurrentUploads: uploads are disk- and network-bound, so
	// a few at a time use a server's bandwidth; more only slow each other.
	DefaultMaxConcurrentUploads = 4
	// DefaultRolloutRetention and DefaultRolloutKeep: what a week of
	// release history needs, and enough to roll back.
	DefaultRolloutRetention = 7 * 24 * time.Hour
	DefaultRolloutKeep      = 20
	// DefaultHistoryRetention: a quarter of per-host history in full;
	// older entries live on as one summary per app and host.
	DefaultHistoryRetention = 90 * 24 * time.Hour
	// DefaultAgentRetention: a host away for three days (a long weekend)
	// is taken to be gone; if it comes back it simply registers again.
	DefaultAgentRetention = 72 * time.Hour
	// DefaultDeploymentRetention: a year of deployment records and a
	// month more, so a yearly report still has its previous period's
	// start; a record is about 200 bytes.
	DefaultDeploymentRetention = 400 * 24 * time.Hour
	// DefaultAuditRetention: a quarter of the audit trail kept in the
	// cluster; older records leave it once an archive covers them
	// ('relctl audit archive').
	DefaultAuditRetention = 90 * 24 * time.Hour
	// DefaultLeaderWait bounds how long a request waits for a leader to be
	// elected before it fails with Unavailable.
	DefaultLeaderWait = 5 * time.Second
)

// ErrConfig is wrapped by every configuration error.
var ErrConfig = errors.New("invalid configuration")

// ErrNoTLS is the configuration error of a server started without TLS
// material: Rel is secure by default and has no plaintext mode.
var ErrNoTLS = errors.New(`TLS is required: give --ca-file, --cert-file and --key-file.
Make them with:
  relctl tls ca create --cluster NAME                  # ca.pem, ca-key.pem (keep the key safe)
  relctl tls cert create --server --node-id ID         # ID.pem, ID-key.pem
or try Rel on one machine with 'rel-server --dev', which makes its own`)

var nodeIDRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]{0,62})$`)

// Config configures one rel-server node.
type Config struct {
	// NodeID names the node in raft and in the cluster; stable across restarts.
	NodeID string
	// DataDir holds the raft log, stable store and snapshots.
	DataDir string
	// Addresses to listen on. Port 0 picks a free port (tests); the node
	// advertises the address it actually got.
	GRPCAddr, RaftAddr, HTTPAddr string
	// Bootstrap makes this node a one-voter cluster when its data dir is new.
	Bootstrap bool
	// Join lists gRPC addresses of existing members to ask for admission when
	// the data dir is new.
	Join []string

	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	// TrailingLogs is how many log entries stay after a snapshot compacts the log.
	TrailingLogs uint64
	// RaftLogBudget bounds the log in bytes, about, by lowering
	// TrailingLogs and SnapshotThreshold to the entries' size and
	// snapshotting early (raftbudget.go). 0: DefaultRaftLogBudget; -1:
	// none. LogBudgetInterval is how often it looks (0: 5 s; tests
	// shorten it).
	RaftLogBudget     int64
	LogBudgetInterval time.Duration

	// Raft timing. Zero means the production defaults (DefaultRaft*:
	// 500 ms each); tests shorten them.
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration

	// LeaderWait bounds how long a request waits for a leader.
	LeaderWait time.Duration

	// HeartbeatInterval is what agents are told to heartbeat at.
	HeartbeatInterval time.Duration
	// AgentGrace: silence or absence past this marks an agent down.
	AgentGrace time.Duration
	// HelloTimeout bounds how long a new agent stream may take to say
	// hello (default 10 s; tests that open many streams first raise it).
	HelloTimeout time.Duration
	// ReportWindow: agent reports arriving within it share a raft entry.
	ReportWindow time.Duration
	// MaxArtifactBytes limits uploads to the artifact store.
	MaxArtifactBytes int64
	// RolloutRetention: finished rollouts older than this are removed with
	// their events, beyond the newest RolloutKeep per app and environment
	// and never the one whose release an environment holds.
	RolloutRetention time.Duration
	RolloutKeep      int
	// HistoryRetention: closed history entries that ended longer ago are
	// folded into their (app, host)'s summary. 0: the default.
	HistoryRetention time.Duration
	// AgentRetention: agents disconnected for longer are removed with
	// their rows (not those an active rollout holds). 0: the default.
	AgentRetention time.Duration
	// DeploymentRetention: deployment records (what the management
	// report counts) that finished longer ago are removed. 0: the default.
	DeploymentRetention time.Duration
	// AuditRetention: audit records an archive covers (the archived mark)
	// and stamped longer ago are removed, oldest first. 0: the default;
	// negative: never (the flag's 0).
	AuditRetention time.Duration
	// RetentionInterval is how often the leader looks (0: a minute).
	RetentionInterval time.Duration
	// ArtifactGrace: a blob in the leader's store that no release
	// references is removed from every server once it is older than this
	// (0: DefaultArtifactGrace).
	ArtifactGrace time.Duration
	// ArtifactGCInterval is how often the leader looks (0: ten minutes).
	ArtifactGCInterval time.Duration
	// ArtifactQuota bounds the bytes of this server's artifact store (0:
	// no bound).
	ArtifactQuota int64
	// MaxConcurrentUploads caps the uploads this server receives at once
	// (0: DefaultMaxConcurrentUploads; negative: no limit).
	MaxConcurrentUploads int
	// MaxAgentStreams caps the agent streams this server holds; past it a
	// new agent is refused (ResourceExhausted) and tries another server.
	// 0: DefaultMaxAgentStreams; negative: no limit.
	MaxAgentStreams int

	// TLS material, required: the cluster CA bundle to trust, this node's
	// server certificate and its key (0600).
	CAFile, CertFile, KeyFile string
	// CAKeyFile is the CA's key, with which this server signs agent
	// certificates (enrolment and renewal). Without it, enrolments are
	// forwarded to the leader.
	CAKeyFile string
	// AuditKeyFile is the cluster's audit key (ed25519, 0600), with which
	// this server signs checkpoints of the audit trail. Without it,
	// AuditCheckpoint answers FailedPrecondition.
	AuditKeyFile string
	// WebhookRetryFor and WebhookRetryBase: how long a webhook delivery
	// is retried before its event is dead-lettered, and the first pause
	// of its backoff (0: 24 h and 1 s; tests shorten them).
	WebhookRetryFor  time.Duration
	WebhookRetryBase time.Duration
	// AgentCertTTL is how long agent certificates are valid.
	AgentCertTTL time.Duration
	// EnableDebug serves /debug/pprof/ to operators' client certificates.
	EnableDebug bool
	// DisableUI turns the web dashboard (/ui/ on the HTTP port) off.
	DisableUI bool

	Logger *slog.Logger
	// LogOutput receives raft's own log lines; nil discards them.
	LogOutput io.Writer
	// LogJSON makes raft's log lines JSON like the rest.
	LogJSON  bool
	LogLevel slog.Level
}

func (c *Config) withDefaults() Config {
	out := *c
	if out.GRPCAddr == "" {
		out.GRPCAddr = DefaultGRPCAddr
	}
	if out.RaftAddr == "" {
		out.RaftAddr = DefaultRaftAddr
	}
	if out.HTTPAddr == "" {
		out.HTTPAddr = DefaultHTTPAddr
	}
	if out.SnapshotThreshold == 0 {
		out.SnapshotThreshold = DefaultSnapshotThreshold
	}
	if out.SnapshotInterval == 0 {
		out.SnapshotInterval = DefaultSnapshotInterval
	}
	if out.TrailingLogs == 0 {
		out.TrailingLogs = DefaultTrailingLogs
	}
	if out.RaftLogBudget == 0 {
		out.RaftLogBudget = DefaultRaftLogBudget
	}
	if out.LeaderWait == 0 {
		out.LeaderWait = DefaultLeaderWait
	}
	if out.HeartbeatInterval == 0 {
		out.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if out.AgentGrace == 0 {
		out.AgentGrace = DefaultAgentGrace
	}
	if out.HelloTimeout == 0 {
		out.HelloTimeout = helloTimeout
	}
	if out.ReportWindow == 0 {
		out.ReportWindow = DefaultReportWindow
	}
	if out.RolloutRetention == 0 {
		out.RolloutRetention = DefaultRolloutRetention
	}
	if out.RolloutKeep == 0 {
		out.RolloutKeep = DefaultRolloutKeep
	} else if out.RolloutKeep < 0 {
		out.RolloutKeep = 0
	}
	if out.HistoryRetention == 0 {
		out.HistoryRetention = DefaultHistoryRetention
	}
	if out.AgentRetention == 0 {
		out.AgentRetention = DefaultAgentRetention
	}
	if out.DeploymentRetention == 0 {
		out.DeploymentRetention = DefaultDeploymentRetention
	}
	if out.AuditRetention == 0 {
		out.AuditRetention = DefaultAuditRetention
	}
	if out.RetentionInterval == 0 {
		out.RetentionInterval = time.Minute
	}
	if out.ArtifactGrace == 0 {
		out.ArtifactGrace = DefaultArtifactGrace
	}
	if out.ArtifactGCInterval == 0 {
		out.ArtifactGCInterval = 10 * time.Minute
	}
	if out.MaxConcurrentUploads == 0 {
		out.MaxConcurrentUploads = DefaultMaxConcurrentUploads
	} else if out.MaxConcurrentUploads < 0 {
		out.MaxConcurrentUploads = 0
	}
	if out.MaxAgentStreams == 0 {
		out.MaxAgentStreams = DefaultMaxAgentStreams
	} else if out.MaxAgentStreams < 0 {
		out.MaxAgentStreams = 0
	}
	if out.MaxArtifactBytes == 0 {
		out.MaxArtifactBytes = DefaultMaxArtifactBytes
	}
	if out.AgentCertTTL == 0 {
		out.AgentCertTTL = pki.DefaultAgentValidity
	}
	if out.Logger == nil {
		out.Logger = slog.New(slog.DiscardHandler)
	}
	if out.LogOutput == nil {
		out.LogOutput = io.Discard
	}
	return out
}

// Validate checks the configuration, naming the flag to fix.
func (c *Config) Validate() error {
	if c.NodeID == "" {
		return fmt.Errorf("%w: --node-id is empty: give the node a name, e.g. --node-id s1", ErrConfig)
	}
	if !nodeIDRE.MatchString(c.NodeID) {
		return fmt.Errorf("%w: --node-id %q: use 1-63 letters, digits and . _ -, starting with a letter or digit", ErrConfig, c.NodeID)
	}
	if c.DataDir == "" {
		return fmt.Errorf("%w: --data-dir is empty: give a directory for the raft log and snapshots", ErrConfig)
	}
	if c.CAFile == "" || c.CertFile == "" || c.KeyFile == "" {
		return fmt.Errorf("%w: %w", ErrConfig, ErrNoTLS)
	}
	if c.AgentCertTTL != 0 && (c.AgentCertTTL < pki.MinAgentValidity || c.AgentCertTTL > pki.MaxAgentValidity) {
		return fmt.Errorf("%w: --agent-cert-ttl %s: want %s to %s", ErrConfig, c.AgentCertTTL, pki.MinAgentValidity, pki.MaxAgentValidity)
	}
	if c.Bootstrap && len(c.Join) > 0 {
		return fmt.Errorf("%w: --bootstrap and --join together: bootstrap the first node only, join the others to it", ErrConfig)
	}
	if c.RolloutRetention < 0 {
		return fmt.Errorf("%w: --rollout-retention %s is negative", ErrConfig, c.RolloutRetention)
	}
	if c.HistoryRetention < 0 {
		return fmt.Errorf("%w: --history-retention %s is negative: give how long history is kept in full, e.g. 2160h", ErrConfig, c.HistoryRetention)
	}
	if c.DeploymentRetention < 0 {
		return fmt.Errorf("%w: --deployment-retention %s is negative: give how long deployment records are kept for reports, e.g. 9600h", ErrConfig, c.DeploymentRetention)
	}
	if c.AgentRetention < 0 {
		return fmt.Errorf("%w: --agent-retention %s is negative: give how long a disconnected agent is kept, e.g. 72h", ErrConfig, c.AgentRetention)
	}
	if c.RolloutKeep < -1 {
		return fmt.Errorf("%w: --rollout-keep %d: give a count (-1 keeps none beyond the retention)", ErrConfig, c.RolloutKeep)
	}
	if c.MaxAgentStreams < -1 {
		return fmt.Errorf("%w: --max-agent-streams %d: give a count, or -1 for no limit", ErrConfig, c.MaxAgentStreams)
	}
	if c.ArtifactGrace < 0 {
		return fmt.Errorf("%w: --artifact-grace %s is negative", ErrConfig, c.ArtifactGrace)
	}
	if c.ArtifactQuota < 0 {
		return fmt.Errorf("%w: --artifact-quota %d is negative (0: no quota)", ErrConfig, c.ArtifactQuota)
	}
	if c.MaxConcurrentUploads < -1 {
		return fmt.Errorf("%w: --max-concurrent-uploads %d: give a count, or -1 for no limit", ErrConfig, c.MaxConcurrentUploads)
	}
	if c.MaxArtifactBytes < 0 {
		return fmt.Errorf("%w: --max-artifact-bytes %d is negative", ErrConfig, c.MaxArtifactBytes)
	}
	if c.HeartbeatInterval < 0 || c.AgentGrace < 0 {
		return fmt.Errorf("%w: --heartbeat-interval and --agent-grace must be positive", ErrConfig)
	}
	if c.HeartbeatInterval > 0 && c.AgentGrace > 0 && c.AgentGrace < 2*c.HeartbeatInterval {
		return fmt.Errorf("%w: --agent-grace %s is less than two --heartbeat-interval (%s): agents would be marked down between heartbeats", ErrConfig, c.AgentGrace, c.HeartbeatInterval)
	}
	if c.SnapshotInterval < 0 {
		return fmt.Errorf("%w: --snapshot-interval %s is negative", ErrConfig, c.SnapshotInterval)
	}
	if c.RetentionInterval < 0 {
		// A negative interval would run retention back to back.
		return fmt.Errorf("%w: --retention-interval %s is negative: give a positive duration (default 1m)", ErrConfig, c.RetentionInterval)
	}
	return nil
}

// ensureDataDir creates the data dir and checks that it belongs to this node:
// starting node s2 on s1's data would split one raft identity in two.
func ensureDataDir(dir, nodeID string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("%w: create --data-dir %s: %v", ErrConfig, dir, err)
	}
	idFile := dir + string(os.PathSeparator) + "node-id"
	b, err := os.ReadFile(idFile)
	switch {
	case err == nil:
		if got := string(trimNewline(b)); got != nodeID {
			return fmt.Errorf("%w: --data-dir %s belongs to node %q, not %q: use that node id or another data dir", ErrConfig, dir, got, nodeID)
		}
		return nil
	case errors.Is(err, os.ErrNotExist):
		return writeFileAtomic(idFile, []byte(nodeID+"\n"))
	default:
		return fmt.Errorf("%w: read %s: %v", ErrConfig, idFile, err)
	}
}

func trimNewline(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// writeFileAtomic writes via a synced temp file and rename, so a crash leaves
// either the old file or the new one.
func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
