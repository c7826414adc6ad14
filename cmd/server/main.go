// Command rel-server runs one node of Rel's control-plane cluster.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
	// Freeze windows are read in IANA time zones: every server (scratch
	// images included) carries the same database.
	_ "time/tzdata"

	"github.com/relhq/rel/internal/artifact"
	"github.com/relhq/rel/internal/audit"
	"github.com/relhq/rel/internal/pki"
	"github.com/relhq/rel/internal/server"
	"github.com/relhq/rel/internal/version"
)

const usage = `rel-server runs one node of Rel's control-plane cluster.

Usage:
  rel-server --dev
  rel-server --node-id ID --data-dir DIR --ca-file CA --cert-file CERT --key-file KEY --bootstrap [flags]
  rel-server --node-id ID --data-dir DIR --ca-file CA --cert-file CERT --key-file KEY --join ADDR[,ADDR...] [flags]

Every port (gRPC, raft, HTTP) is mutual TLS with certificates of the
cluster CA, and every request is authorised from the caller's certificate
or token: there is no plaintext mode. Make the CA and the server's
certificate with relctl:

  relctl tls ca create --cluster prod              # ca.pem, ca-key.pem
  relctl tls cert create --server --node-id s1     # s1.pem, s1-key.pem

Give servers --ca-key-file too and they enrol agents (signing short-lived
agent certificates for join tokens). SIGHUP reloads the certificate, key,
CA bundle and CA key; a file that does not load keeps the old material.

--dev runs a one-node cluster on loopback with its data, a CA, its
certificates and a management token in a temporary directory, and prints
the export lines that make relctl and a local rel-agent use them.

Start the first node of a cluster with --bootstrap, every other node with
--join naming the gRPC address of any member. A node restarted on the same
--data-dir rejoins by itself: give it neither flag again (they are ignored
when the data dir already holds raft state).

Every flag can also be set by an environment variable: REL_ and the flag name
in upper case with '-' as '_' (REL_NODE_ID, REL_DATA_DIR, REL_JOIN, ...).
Flags given on the command line win.

Flags:
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("rel-server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	hostname, _ := os.Hostname()
	var (
		dev          = fs.Bool("dev", false, "run a one-node cluster with its data in a temporary directory (removed on exit); nothing else to configure")
		nodeID       = fs.String("node-id", hostname, "this node's id in the cluster, stable across restarts")
		dataDir      = fs.String("data-dir", "", "directory for the raft log, stable store and snapshots")
		grpcAddr     = fs.String("grpc-addr", server.DefaultGRPCAddr, "address of the gRPC API (relctl, agents, peers)")
		raftAddr     = fs.String("raft-addr", server.DefaultRaftAddr, "address of raft's TCP transport; peers must reach it")
		httpAddr     = fs.String("http-addr", server.DefaultHTTPAddr, "address of /v1/health, /metrics and /debug/pprof/")
		bootstrap    = fs.Bool("bootstrap", false, "make this node a new one-voter cluster (first node only; ignored once the data dir has raft state)")
		join         = fs.String("join", "", "comma-separated gRPC addresses of members to ask for admission")
		logLevel     = fs.String("log-level", "info", "debug, info, warn or error")
		logFormat    = fs.String("log-format", "text", "text or json")
		snapThresh   = fs.Uint64("snapshot-threshold", server.DefaultSnapshotThreshold, "raft log entries between snapshots")
		snapInterval = fs.Duration("snapshot-interval", server.DefaultSnapshotInterval, "how often to check whether a snapshot is due")
		trailingLogs = fs.Uint64("trailing-logs", server.DefaultTrailingLogs, "log entries kept after a snapshot, so slow followers catch up without one")
		logBudget    = fs.String("raft-log-budget", "64MiB", "bytes the raft log holds, about: --trailing-logs and --snapshot-threshold are lowered (never raised) so that each holds half of it at the recent entry size, and a snapshot is taken when the log passes it (0: no budget, the counts alone)")
		maxArtifact  = fs.Int64("max-artifact-bytes", server.DefaultMaxArtifactBytes, "largest artifact accepted by uploads")
		retention    = fs.Duration("rollout-retention", server.DefaultRolloutRetention, "finished rollouts older than this are removed with their events, beyond the newest --rollout-keep per app and environment; the one whose release an environment holds is always kept")
		keep         = fs.Int("rollout-keep", server.DefaultRolloutKeep, "finished rollouts kept per app and environment whatever their age (-1: none beyond the retention)")
		histRet      = fs.Duration("history-retention", server.DefaultHistoryRetention, "closed per-host history entries older than this are folded into one summary per app and host (counts by outcome, first and last time, last version); what runs now is always kept")
		agentRet     = fs.Duration("agent-retention", server.DefaultAgentRetention, "agents disconnected for longer than this are removed with their app and desired rows (their history is kept); never one an active rollout holds; one that comes back registers again")
		deployRet    = fs.Duration("deployment-retention", server.DefaultDeploymentRetention, "deployment records (one per finished rollout, what 'relctl report' counts) older than this are removed; they outlive the rollouts themselves")
		auditRet     = fs.Duration("audit-retention", server.DefaultAuditRetention, "audit records that an archive covers ('relctl audit archive') and that are older than this are removed from the cluster, oldest first; records not archived are kept whatever their age (0: keep every record)")
		artGrace     = fs.Duration("artifact-grace", server.DefaultArtifactGrace, "an artifact no release references is removed from every server's store once it is older than this (counted from when the leader stored it), so an upload whose release is not created yet survives")
		artQuota     = fs.String("artifact-quota", "0", "bytes this server's artifact store may hold, e.g. 50GiB or 500GB (0: no quota); an upload past it is refused with ResourceExhausted")
		maxUploads   = fs.Int("max-concurrent-uploads", server.DefaultMaxConcurrentUploads, "uploads this server receives at once; the next is refused with ResourceExhausted and relctl tries again (-1: no limit)")
		maxStreams   = fs.Int("max-agent-streams", server.DefaultMaxAgentStreams, "agent streams this server holds at most; past it new agents are refused and connect to another server (-1: no limit)")
		heartbeat    = fs.Duration("heartbeat-interval", server.DefaultHeartbeatInterval, "how often agents are told to send heartbeats")
		agentGrace   = fs.Duration("agent-grace", server.DefaultAgentGrace, "silence or disconnection past this marks an agent down (\"agent lost\")")
		caFile       = fs.String("ca-file", "", "the cluster CA bundle (PEM) every peer and client certificate is checked against; during a CA rotation, both CAs")
		certFile     = fs.String("cert-file", "", "this server's certificate (relctl tls cert create --server --node-id ID)")
		keyFile      = fs.String("key-file", "", "the key of --cert-file; must not be readable by group or others")
		auditKeyFile = fs.String("audit-key-file", "", "the cluster's audit key (audit.key, ed25519, mode 0600, written by 'relctl tls ca create'): with it this server signs audit checkpoints ('relctl audit checkpoint')")
		caKeyFile    = fs.String("ca-key-file", "", "the CA's key: with it this server signs agent certificates (enrolment with join tokens, renewal)")
		agentCertTTL = fs.Duration("agent-cert-ttl", pki.DefaultAgentValidity, "how long the agent certificates this server signs are valid; agents renew at about two thirds")
		enableDebug  = fs.Bool("enable-debug", false, "serve /debug/pprof/ on the HTTP port, to client certificates of role operator or admin")
		ui           = fs.Bool("ui", true, "serve the web dashboard at https://HTTP-ADDR/ui/ (sign in with an ACL token; --ui=false turns it off)")
		retInterval  = fs.Duration("retention-interval", time.Minute, "how often the leader runs retention; for tests and benches (keep the default in production)")
		showVersion  = fs.Bool("version", false, "print the version and exit")
	)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "rel-server: unexpected argument %q (see rel-server --help)\n", fs.Arg(0))
		return 2
	}
	if err := applyEnv(fs); err != nil {
		fmt.Fprintf(stderr, "rel-server: %v\n", err)
		return 2
	}
	quota, err := artifact.ParseSize(*artQuota)
	if err != nil {
		fmt.Fprintf(stderr, "rel-server: --artifact-quota: %v\n", err)
		return 2
	}
	budget, err := artifact.ParseSize(*logBudget)
	if err != nil {
		fmt.Fprintf(stderr, "rel-server: --raft-log-budget: %v\n", err)
		return 2
	}
	if budget == 0 {
		budget = -1 // the flag's 0 is "none"; Config's 0 is "the default"
	}
	if *showVersion {
		fmt.Fprintf(stdout, "rel-server %s\n", version.Version)
		return 0
	}

	for _, d := range []struct {
		flag string
		v    time.Duration
	}{{"history-retention", *histRet}, {"agent-retention", *agentRet}, {"deployment-retention", *deployRet}} {
		if d.v <= 0 {
			fmt.Fprintf(stderr, "rel-server: --%s %s: give a positive duration (the default is %s); retention cannot be turned off\n", d.flag, d.v, map[string]time.Duration{
				"history-retention": server.DefaultHistoryRetention, "agent-retention": server.DefaultAgentRetention,
				"deployment-retention": server.DefaultDeploymentRetention}[d.flag])
			return 2
		}
	}

	if *auditRet < 0 {
		fmt.Fprintf(stderr, "rel-server: --audit-retention %s is negative: give how long archived audit records stay in the cluster (the default is %s), or 0 to keep every record\n", *auditRet, server.DefaultAuditRetention)
		return 2
	}
	auditRetention := *auditRet
	if auditRetention == 0 {
		auditRetention = -1 // the flag's 0 is "off"; Config's 0 is "the default"
	}

	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "rel-server: --log-level %q: use debug, info, warn or error\n", *logLevel)
		return 2
	}
	var handler slog.Handler
	switch *logFormat {
	case "text":
		handler = slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})
	case "json":
		handler = slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level})
	default:
		fmt.Fprintf(stderr, "rel-server: --log-format %q: use text or json\n", *logFormat)
		return 2
	}
	logger := slog.New(handler)

	cfg := server.Config{
		NodeID:              *nodeID,
		DataDir:             *dataDir,
		GRPCAddr:            *grpcAddr,
		RaftAddr:            *raftAddr,
		HTTPAddr:            *httpAddr,
		Bootstrap:           *bootstrap,
		SnapshotThreshold:   *snapThresh,
		SnapshotInterval:    *snapInterval,
		TrailingLogs:        *trailingLogs,
		RaftLogBudget:       budget,
		MaxArtifactBytes:    *maxArtifact,
		MaxAgentStreams:     *maxStreams,
		ArtifactGrace:       *artGrace,
		ArtifactQuota:       quota,
		RolloutRetention:    *retention,
		RolloutKeep:         *keep,
		HistoryRetention:    *histRet,
		AgentRetention:      *agentRet,
		DeploymentRetention: *deployRet,
		HeartbeatInterval:   *heartbeat,
		AgentGrace:          *agentGrace,
		CAFile:              *caFile,
		CertFile:            *certFile,
		KeyFile:             *keyFile,
		CAKeyFile:           *caKeyFile,
		AuditKeyFile:        *auditKeyFile,
		AgentCertTTL:        *agentCertTTL,
		EnableDebug:         *enableDebug,
		DisableUI:           !*ui,
		RetentionInterval:   *retInterval,
		Logger:              logger,
		LogOutput:           stderr,
		LogJSON:             *logFormat == "json",
		LogLevel:            level,
	}
	// Set apart from the literal above, whose alignment they would change.
	cfg.ArtifactGrace, cfg.ArtifactQuota, cfg.MaxConcurrentUploads = *artGrace, quota, *maxUploads
	cfg.AuditRetention = auditRetention
	if *join != "" {
		for _, a := range strings.Split(*join, ",") {
			if a = strings.TrimSpace(a); a != "" {
				cfg.Join = append(cfg.Join, a)
			}
		}
	}
	if *dev {
		for _, a := range []struct{ flag, addr string }{{"grpc-addr", cfg.GRPCAddr}, {"raft-addr", cfg.RaftAddr}, {"http-addr", cfg.HTTPAddr}} {
			if err := checkLoopback(a.flag, a.addr); err != nil {
				fmt.Fprintf(stderr, "rel-server: %v\n", err)
				return 2
			}
		}
		if cfg.CAFile != "" || cfg.CertFile != "" || cfg.KeyFile != "" || cfg.CAKeyFile != "" {
			fmt.Fprintf(stderr, "rel-server: --dev makes its own CA and certificates: drop --ca-file, --cert-file, --key-file and --ca-key-file\n")
			return 2
		}
		dir, err := os.MkdirTemp("", "rel-dev-")
		if err != nil {
			fmt.Fprintf(stderr, "rel-server: --dev: create temp dir: %v\n", err)
			return 1
		}
		defer os.RemoveAll(dir)
		cfg.DataDir, cfg.Bootstrap, cfg.Join = dir, true, nil
		if !isSet(fs, "node-id") {
			cfg.NodeID = "dev"
		}
		files, err := makeDevTLS(dir, cfg.NodeID)
		if err != nil {
			fmt.Fprintf(stderr, "rel-server: --dev: make TLS material: %v\n", err)
			return 1
		}
		cfg.CAFile, cfg.CertFile, cfg.KeyFile, cfg.CAKeyFile = files.ca, files.cert, files.key, files.caKey
		if cfg.AuditKeyFile == "" {
			cfg.AuditKeyFile = files.auditKey
		}
	}

	srv, err := server.New(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "rel-server: %v\n", err)
		return 1
	}
	if *dev {
		if err := printDev(stdout, srv, cfg); err != nil {
			fmt.Fprintf(stderr, "rel-server: --dev: %v\n", err)
			srv.Shutdown()
			return 1
		}
	}

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	hups := make(chan os.Signal, 1)
	signal.Notify(hups, syscall.SIGHUP)
	var sig os.Signal
	for sig == nil {
		select {
		case sig = <-sigs:
		case <-hups:
			if err := srv.ReloadTLS(); err != nil {
				logger.Error("SIGHUP: TLS reload failed; the previous certificate stays in use", "err", err)
			}
		}
	}
	logger.Info("signal received: stopping gracefully (send it again to stop at once)", "signal", sig.String())
	done := make(chan error, 1)
	go func() { done <- srv.Shutdown() }()
	select {
	case err := <-done:
		if err != nil {
			logger.Error("shutdown", "err", err)
			return 1
		}
	case <-sigs:
		logger.Warn("second signal: exiting without a clean shutdown")
		return 1
	case <-time.After(30 * time.Second):
		logger.Error("shutdown did not finish in 30s; exiting")
		return 1
	}
	logger.Info("stopped")
	return 0
}

// printDev writes how to use a dev server: where it listens, and the
// export lines for relctl and a local agent. The credentials are files in
// the dev data dir (0600), so they are not in the terminal's scrollback.
func printDev(w io.Writer, srv *server.Server, cfg server.Config) error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	mgmt, join, err := srv.DevCredentials(ctx, 100, 24*time.Hour)
	if err != nil {
		return err
	}
	mgmtFile := filepath.Join(cfg.DataDir, "management.token")
	joinFile := filepath.Join(cfg.DataDir, "agent-join.token")
	for _, f := range []struct{ path, secret string }{{mgmtFile, mgmt}, {joinFile, join}} {
		if err := pki.WriteFile(f.path, []byte(f.secret+"\n"), 0o600, true); err != nil {
			return err
		}
	}
	fmt.Fprintf(w, "rel-server %s (dev mode: one node on loopback, TLS and ACLs on; data, CA and tokens in %s, removed on exit)\n", version.Version, cfg.DataDir)
	fmt.Fprintf(w, "  gRPC API: %s\n", srv.GRPCAddr())
	fmt.Fprintf(w, "  HTTP:     https://%s/v1/health (curl --cacert %s ...)\n", srv.HTTPAddr(), cfg.CAFile)
	fmt.Fprintf(w, "  raft:     %s\n", srv.RaftAddr())
	if !cfg.DisableUI {
		fmt.Fprintf(w, "  web UI:   https://%s/ui/ (sign in with the token in %s; the certificate is the dev CA's)\n", srv.HTTPAddr(), mgmtFile)
	}
	if cfg.AuditKeyFile != "" {
		fmt.Fprintf(w, "  audit:    checkpoints signed with %s (check them with --public-key %s)\n", cfg.AuditKeyFile,
			filepath.Join(filepath.Dir(cfg.AuditKeyFile), audit.PubKeyFileName))
	}
	fmt.Fprintf(w, "In another terminal, these make relctl (as admin) and a local rel-agent (enrolling) use it:\n")
	if srv.GRPCAddr() != server.DefaultGRPCAddr {
		fmt.Fprintf(w, "  export REL_ADDR=%s REL_SERVERS=%s\n", srv.GRPCAddr(), srv.GRPCAddr())
	}
	fmt.Fprintf(w, "  export REL_CA_FILE=%s\n", cfg.CAFile)
	fmt.Fprintf(w, "  export REL_TOKEN_FILE=%s\n", mgmtFile)
	fmt.Fprintf(w, "  export REL_JOIN_TOKEN_FILE=%s\n", joinFile)
	fmt.Fprintf(w, "Press Ctrl-C to stop.\n")
	return nil
}

// applyEnv sets every flag not given on the command line from its REL_*
// environment variable.
func applyEnv(fs *flag.FlagSet) error {
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || isSet(fs, f.Name) {
			return
		}
		key := "REL_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(key); ok {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s=%q: %v", key, v, e)
			}
		}
	})
	return err
}

func isSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			set = true
		}
	})
	return set
}
