package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/relhq/rel/internal/transport"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// SimConfig configures Simulate.
type SimConfig struct {
	// Servers are the cluster's gRPC addresses.
	Servers []string
	// Count is how many agents to run.
	Count int
	// IDPrefix names the agents <prefix>-0001, <prefix>-0002, ...
	IDPrefix string
	// Labels are given to every agent.
	Labels map[string]string
	// DialOptions are added to ClientOptions for every agent's connections.
	DialOptions []grpc.DialOption
	// Certs gives each agent its certificate (enrolment with a shared
	// join token, or certificates a test made): every agent has its own
	// identity, so each holds its own connection to its server.
	Certs func(ctx context.Context, id string) (transport.Security, error)
	// EnrolParallel bounds concurrent enrolments (default 16).
	EnrolParallel int
	// Connecting bounds the agents dialling at once, from the dial to the
	// server's welcome (Config.ConnectSlots; default
	// DefaultSimConnecting; negative: no bound).
	Connecting int
	// Logger; slog.Default() when nil. Each agent logs with node=<id>.
	Logger *slog.Logger
	// Facts and Load are what every agent reports; a fixed fake host (8
	// CPUs, 16 GiB, Linux) and a fixed light load when nil. Simulated
	// agents never call gopsutil.
	Facts *relv1.HostFacts
	Load  *relv1.Load
	// Ramp spreads the agents' starts evenly over this long (0: all at once).
	Ramp time.Duration
	// ReportEvery logs how many agents are connected at this interval
	// (0: never).
	ReportEvery time.Duration
	// Started, when set, is called with every agent once it is built, before
	// it runs (tests use it to watch the agents).
	Started func(*Agent)
}

// DefaultSimConnecting is SimConfig.Connecting's default: enough dials
// in flight to keep a simulator's cores busy while each waits on its
// server (a round trip, a raft commit before the welcome), few enough
// that each finishes its handshake well within the connect timeout.
const DefaultSimConnecting = 64

// Simulate runs cfg.Count agents in this process until ctx ends, each with
// its own NoopInstaller. Each agent has its own certificate (cfg.Certs) and
// so its own TLS connection to its server, as real agents do, and keeps its
// generation in memory only (no data dir: nothing is written to disk).
// Each agent costs its connection's goroutines plus three while connected
// (its send loop, its receiver and gRPC's stream watcher) and one per
// install in progress. Unless the logger is at
// debug, the agents themselves only log warnings and errors; Simulate logs a
// summary every ReportEvery.
func Simulate(ctx context.Context, cfg SimConfig) error {
	if cfg.Count <= 0 {
		return errors.New("simulate: count must be positive")
	}
	if cfg.IDPrefix == "" {
		return errors.New("simulate: empty id prefix")
	}
	if len(cfg.Servers) == 0 {
		return errors.New("simulate: no servers")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	facts := cfg.Facts
	if facts == nil {
		facts = &relv1.HostFacts{
			Hostname: "simulated", Os: "linux", Platform: "simulated", PlatformVersion: "1",
			Kernel: "6.0.0-sim", Arch: "amd64", Cpus: 8, MemoryBytes: 16 << 30,
		}
	}
	load := cfg.Load
	if load == nil {
		load = &relv1.Load{CpuPercent: 5, MemoryPercent: 30, DiskFreeBytes: 80 << 30, DiskTotalBytes: 100 << 30}
	}
	loadFunc := func() *relv1.Load { return load }

	if cfg.Certs == nil {
		return errors.New("simulate: no certificates (Certs)")
	}
	secs, err := simulatedCerts(ctx, cfg)
	if err != nil {
		return err
	}

	// Thousands of agents each logging every connect would drown the
	// summary: their info lines only show when the logger is at debug.
	agentLog := log
	if !log.Enabled(context.Background(), slog.LevelDebug) {
		agentLog = slog.New(minLevel{log.Handler(), slog.LevelWarn})
	}
	var slots chan struct{}
	switch {
	case cfg.Connecting == 0:
		slots = make(chan struct{}, DefaultSimConnecting)
	case cfg.Connecting > 0:
		slots = make(chan struct{}, cfg.Connecting)
	}
	agents := make([]*Agent, 0, cfg.Count)
	for i := 1; i <= cfg.Count; i++ {
		id := fmt.Sprintf("%s-%04d", cfg.IDPrefix, i)
		f := proto.Clone(facts).(*relv1.HostFacts)
		f.Hostname = id
		a, err := New(Config{
			Servers:      cfg.Servers,
			NodeID:       id,
			Labels:       cfg.Labels,
			Installer:    &NoopInstaller{},
			Logger:       agentLog.With("node", id),
			Security:     secs[i-1],
			DialOptions:  cfg.DialOptions,
			Facts:        f,
			LoadFunc:     loadFunc,
			ConnectSlots: slots,
		})
		if err != nil {
			return fmt.Errorf("simulate: %w", err)
		}
		agents = append(agents, a)
	}

	var wg sync.WaitGroup
	if cfg.ReportEvery > 0 {
		wg.Go(func() {
			t := time.NewTicker(cfg.ReportEvery)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					n := 0
					for _, a := range agents {
						if a.Status().Connected {
							n++
						}
					}
					log.Info("simulated agents", "connected", n, "of", len(agents))
				}
			}
		})
	}
	log.Info("starting simulated agents", "count", cfg.Count, "servers", cfg.Servers)
	for i, a := range agents {
		if cfg.Started != nil {
			cfg.Started(a)
		}
		if cfg.Ramp > 0 && i > 0 {
			t := time.NewTimer(cfg.Ramp / time.Duration(cfg.Count))
			select {
			case <-ctx.Done():
				t.Stop()
			case <-t.C:
			}
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() { _ = a.Run(ctx) })
	}
	wg.Wait()
	return nil
}

// simulatedCerts gets every simulated agent's certificate, EnrolParallel
// at a time.
func simulatedCerts(ctx context.Context, cfg SimConfig) ([]transport.Security, error) {
	par := cfg.EnrolParallel
	if par <= 0 {
		par = 16
	}
	secs := make([]transport.Security, cfg.Count)
	errs := make([]error, cfg.Count)
	sem := make(chan struct{}, par)
	var wg sync.WaitGroup
	for i := range cfg.Count {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			secs[i], errs[i] = cfg.Certs(ctx, fmt.Sprintf("%s-%04d", cfg.IDPrefix, i+1))
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return nil, fmt.Errorf("simulate: certificate of agent %d: %w", i+1, err)
		}
	}
	return secs, nil
}

// minLevel drops the records of a handler below a level.
type minLevel struct {
	slog.Handler
	min slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(as []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(as), h.min}
}

func (h minLevel) WithGroup(name string) slog.Handler {
	return minLevel{h.Handler.WithGroup(name), h.min}
}
