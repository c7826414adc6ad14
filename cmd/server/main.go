// Command rel-server runs one node of Rel's control-plane cluster.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/relhq/rel/internal/server"
	"github.com/relhq/rel/internal/version"
)

const usage = `rel-server runs one node of Rel's control-plane cluster.

Usage:
  rel-server --dev
  rel-server --node-id ID --data-dir DIR --bootstrap [flags]
  rel-server --node-id ID --data-dir DIR --join ADDR[,ADDR...] [flags]

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
		maxArtifact  = fs.Int64("max-artifact-bytes", server.DefaultMaxArtifactBytes, "largest artifact accepted by uploads")
		heartbeat    = fs.Duration("heartbeat-interval", server.DefaultHeartbeatInterval, "how often agents are told to send heartbeats")
		agentGrace   = fs.Duration("agent-grace", server.DefaultAgentGrace, "silence or disconnection past this marks an agent down (\"agent lost\")")
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
	if *showVersion {
		fmt.Fprintf(stdout, "rel-server %s\n", version.Version)
		return 0
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
		NodeID:            *nodeID,
		DataDir:           *dataDir,
		GRPCAddr:          *grpcAddr,
		RaftAddr:          *raftAddr,
		HTTPAddr:          *httpAddr,
		Bootstrap:         *bootstrap,
		SnapshotThreshold: *snapThresh,
		SnapshotInterval:  *snapInterval,
		TrailingLogs:      *trailingLogs,
		MaxArtifactBytes:  *maxArtifact,
		HeartbeatInterval: *heartbeat,
		AgentGrace:        *agentGrace,
		Logger:            logger,
		LogOutput:         stderr,
		LogJSON:           *logFormat == "json",
		LogLevel:          level,
	}
	if *join != "" {
		for _, a := range strings.Split(*join, ",") {
			if a = strings.TrimSpace(a); a != "" {
				cfg.Join = append(cfg.Join, a)
			}
		}
	}
	if *dev {
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
	}

	srv, err := server.New(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "rel-server: %v\n", err)
		return 1
	}
	if *dev {
		fmt.Fprintf(stdout, "rel-server %s (dev mode: one node, data in %s, removed on exit)\n", version.Version, cfg.DataDir)
		fmt.Fprintf(stdout, "  gRPC API: %s   (relctl --addr %s)\n", srv.GRPCAddr(), srv.GRPCAddr())
		fmt.Fprintf(stdout, "  HTTP:     http://%s/v1/health  http://%s/metrics\n", srv.HTTPAddr(), srv.HTTPAddr())
		fmt.Fprintf(stdout, "  raft:     %s\n", srv.RaftAddr())
		fmt.Fprintf(stdout, "Press Ctrl-C to stop.\n")
	}

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	sig := <-sigs
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
