// Package agent is rel-agent's runtime: it holds one long-lived stream to
// any server of the cluster, says who it is (Hello), converges the host to
// the desired state the server streams back by driving an Installer, and
// reports every install phase and a heartbeat with the host's load.
//
// The shape follows Teleport's inventory control stream: a reconnect loop
// (random first server, rotation on failure, exponential backoff with full
// jitter), a hello exchange, one goroutine that receives (a type switch on
// the message; anything unexpected closes the stream) and one goroutine
// that sends (Hello, reports, heartbeats: never two senders on a stream).
//
// Connection: the server list is shuffled once per agent (a random first
// server, and agents leaving a dead server spread over the others) and
// walked in that order, one step per ended stream. The wait between
// attempts is uniform in [0, min(5s, 100ms*2^n)); it starts over after a
// stream that got a Welcome or lasted 10 s, so a dead server costs a
// working agent under 100 ms plus the dial. A closed connection fails the
// receiver at once; gRPC keepalive (ping after 10 s of silence, 5 s to
// answer) catches half-open ones.
//
// Desired state is level-triggered: every DesiredState is the agent's
// complete desired state and carries a generation (a raft index). The agent
// persists the newest generation it acted on (DataDir/agent.json, written
// atomically) and ignores anything older, so reconnecting to a lagging
// server never takes it back in time. Per app, one worker calls
// Installer.Apply; a desired target (version, sha256) already being
// converged to or already healthy is left alone, a new target cancels the
// worker and starts another. A target that failed is not retried for the
// same rollout; an install interrupted by a stop or crash is.
//
// Reports: install events become AppReports in a queue that keeps only the
// latest report per app until the send loop takes them, so workers never
// wait for the network and a stream that is down or slow gets the newest
// state per app, after the Hello (whose installed list comes from
// Installer.Installed) on the next stream.
package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	gbackoff "google.golang.org/grpc/backoff"
	"google.golang.org/grpc/keepalive"

	"github.com/relhq/rel/internal/install"
	"github.com/relhq/rel/internal/transport"
	"github.com/relhq/rel/internal/version"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// Tunables of the connection loop and the stream.
const (
	// BackoffMin and BackoffMax bound the reconnect backoff. The wait before
	// the n-th consecutive retry is uniform in [0, min(BackoffMax,
	// BackoffMin*2^n)) ("full jitter").
	BackoffMin = 100 * time.Millisecond
	BackoffMax = 5 * time.Second
	// StableStream is how long a stream must have lasted for the backoff to
	// start over when it ends (a stream that got a Welcome resets it too).
	StableStream = 10 * time.Second
	// WelcomeTimeout is how long the agent waits for the server's Welcome
	// after sending its Hello before trying another server.
	WelcomeTimeout = 10 * time.Second
	// DefaultHeartbeatInterval is used when the Welcome names none;
	// MinHeartbeatInterval is the shortest the agent accepts.
	DefaultHeartbeatInterval = 10 * time.Second
	MinHeartbeatInterval     = 100 * time.Millisecond
	// KeepaliveTime and KeepaliveTimeout are gRPC client keepalive: after
	// KeepaliveTime without anything received the client pings and gives up
	// on the connection when no answer comes within KeepaliveTimeout, so a
	// half-open connection is found in about 15 s. A closed connection is
	// noticed at once, without keepalive. Servers must allow pings this
	// often (keepalive.EnforcementPolicy{MinTime: <= 10s,
	// PermitWithoutStream: true}) or they close the connection with
	// ENHANCE_YOUR_CALM.
	KeepaliveTime    = 10 * time.Second
	KeepaliveTimeout = 5 * time.Second
	// ConnectTimeout bounds one TCP+HTTP/2 connection attempt, so a server
	// that drops packets costs 5 s, not gRPC's default 20 s.
	ConnectTimeout = 5 * time.Second
)

// ErrProtocol is wrapped by the errors that end a stream because the server
// sent something the protocol does not allow.
var ErrProtocol = errors.New("protocol violation")

// Config configures one agent.
type Config struct {
	// Servers are the gRPC addresses of the cluster's servers; any of them
	// serves agents. Required.
	Servers []string
	// NodeID is the agent's id in the cluster, stable across restarts.
	// Required.
	NodeID string
	// Labels are matched by environment selectors.
	Labels map[string]string
	// DataDir holds agent.json (last generation, last target per app). Empty
	// keeps them in memory only (simulated agents).
	DataDir string
	// Installer converges the host. Required.
	Installer Installer
	// Logger; slog.Default() when nil.
	Logger *slog.Logger
	// Security is the agent's TLS: its certificate and the CAs it trusts
	// (internal/agentcert keeps it current). Required unless Dial is set.
	Security transport.Security
	// DialOptions are added after the agent's own (transport security from
	// internal/transport, keepalive, connect backoff) when the agent dials
	// the servers itself; later options win.
	DialOptions []grpc.DialOption
	// ConnectSlots, when set, is shared by the agents of one process:
	// an agent takes a slot before it dials and gives it back once
	// welcomed or failed. Simulate sets it: thousands of simulated hosts
	// sharing a process's CPU would otherwise all start their TLS
	// handshakes at once after a server dies, each crawl through its
	// share of the CPU, and spend the 5 s connect timeout queueing for
	// the simulator's own CPU, which a real host, alone on its own, does
	// not.
	ConnectSlots chan struct{}
	// Dial, when set, returns the connection to use for a server address
	// instead of the agent dialling its own. The agent never closes those
	// connections: simulations share one per server among all agents (HTTP/2
	// multiplexes the streams). Build them with ClientOptions.
	Dial func(addr string) (*grpc.ClientConn, error)
	// Facts override the host facts read with gopsutil at New.
	Facts *relv1.HostFacts
	// LoadFunc overrides the load sampled with gopsutil for heartbeats.
	LoadFunc func() *relv1.Load
	// DiskPath is the path whose file system's free space heartbeats report
	// (the install root); DataDir, then "/", when empty.
	DiskPath string
}

// Status is a snapshot of an agent's connection.
type Status struct {
	// Connected is true from the Welcome until the stream ends.
	Connected bool
	// Server is the address of the server holding the stream.
	Server string
	// ServerID and SessionID come from the Welcome.
	ServerID, SessionID string
	// LastGeneration is the newest desired-state generation acted on.
	LastGeneration uint64
	// Sessions counts the streams that got a Welcome.
	Sessions uint64
}

// Agent is one rel-agent. Build it with New and run it with Run.
type Agent struct {
	cfg       Config
	log       *slog.Logger
	installer Installer
	facts     *relv1.HostFacts
	load      func() *relv1.Load
	servers   []string // the rotation order: cfg.Servers shuffled once
	reports   *reportQueue
	running   atomic.Bool

	// reconcileMu serialises desired-state handling, which may wait for a
	// superseded worker to stop. Never taken while holding mu.
	reconcileMu sync.Mutex
	// saveMu serialises writes of agent.json.
	saveMu sync.Mutex

	// mu guards the fields below; it is only ever held briefly.
	mu      sync.Mutex
	state   localState
	workers map[string]*worker
	// drift holds apps changed outside Rel (watchDrift), by what is current
	// now; guarded by mu.
	drift     map[string]string
	status    Status
	workerCtx context.Context
	// endSession ends the current stream; redial makes the next one use
	// new connections (after a certificate renewal: TLS presents a
	// certificate only when a connection is made).
	endSession context.CancelFunc
	redial     bool

	workerWG sync.WaitGroup
}

// worker converges one app to one target in its own goroutine.
type worker struct {
	app, version, sha256 string
	cancel               context.CancelFunc
	done                 chan struct{}
	// Guarded by Agent.mu: a duplicate desired state for the same target
	// updates the rollout and generation its reports carry.
	rolloutID  string
	generation uint64
	lastPhase  install.Phase
}

func (w *worker) running() bool {
	select {
	case <-w.done:
		return false
	default:
		return true
	}
}

// New checks cfg, reads the agent's state from DataDir and the host facts
// (unless given). It connects to nothing: Run does.
func New(cfg Config) (*Agent, error) {
	if len(cfg.Servers) == 0 {
		return nil, errors.New("agent: no servers to connect to")
	}
	for _, s := range cfg.Servers {
		if s == "" {
			return nil, errors.New("agent: empty server address")
		}
	}
	if cfg.NodeID == "" {
		return nil, errors.New("agent: node id is empty")
	}
	if cfg.Installer == nil {
		return nil, errors.New("agent: no installer")
	}
	if cfg.Dial == nil && cfg.Security.M == nil {
		return nil, errors.New("agent: no TLS material (Security)")
	}
	cfg.Labels = maps.Clone(cfg.Labels)
	a := &Agent{
		cfg:       cfg,
		log:       cfg.Logger,
		installer: cfg.Installer,
		facts:     cfg.Facts,
		load:      cfg.LoadFunc,
		reports:   newReportQueue(),
		workers:   map[string]*worker{},
		drift:     map[string]string{},
	}
	if a.log == nil {
		a.log = slog.Default()
	}
	if cfg.DataDir != "" {
		if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
			return nil, fmt.Errorf("agent: data dir: %w", err)
		}
		st, err := loadState(cfg.DataDir)
		if err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
		if st.NodeID != "" && st.NodeID != cfg.NodeID {
			a.log.Warn("agent state was written under another node id; keeping its generation", "file_node_id", st.NodeID, "node_id", cfg.NodeID)
		}
		a.state = st
	}
	a.state.NodeID = cfg.NodeID
	if a.state.Apps == nil {
		a.state.Apps = map[string]attempt{}
	}
	a.status.LastGeneration = a.state.LastGeneration
	if a.facts == nil {
		a.facts = ReadHostFacts()
	}
	if a.load == nil {
		path := cfg.DiskPath
		if path == "" {
			path = cfg.DataDir
		}
		if path == "" {
			path = "/"
		}
		a.load = func() *relv1.Load { return ReadLoad(path) }
	}
	a.servers = slices.Clone(cfg.Servers)
	rand.Shuffle(len(a.servers), func(i, j int) { a.servers[i], a.servers[j] = a.servers[j], a.servers[i] })
	return a, nil
}

// ClientOptions are the dial options of an agent's connections: transport
// security from internal/transport (mutual TLS with sec's certificate),
// keepalive (KeepaliveTime, KeepaliveTimeout, also without active streams),
// and gRPC's own reconnect backoff aligned with the agent's (100 ms to 5 s,
// ConnectTimeout per attempt), followed by extra (later options win).
func ClientOptions(sec transport.Security, extra ...grpc.DialOption) []grpc.DialOption {
	opts := sec.GRPCDialOptions()
	opts = append(opts,
		grpc.WithKeepaliveParams(keepalive.ClientParameters{
			Time:                KeepaliveTime,
			Timeout:             KeepaliveTimeout,
			PermitWithoutStream: true,
		}),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff: gbackoff.Config{
				BaseDelay:  BackoffMin,
				Multiplier: 1.6,
				Jitter:     0.2,
				MaxDelay:   BackoffMax,
			},
			MinConnectTimeout: ConnectTimeout,
		}),
	)
	return append(opts, extra...)
}

// Reconnect ends the current stream and makes the next one on new
// connections: after its certificate is renewed, so that the cluster sees
// the new one (TLS presents a certificate only when connecting).
func (a *Agent) Reconnect() {
	a.mu.Lock()
	a.redial = true
	end := a.endSession
	a.mu.Unlock()
	if end != nil {
		end()
	}
}

// Status returns the agent's connection status.
func (a *Agent) Status() Status {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.status
}

// Run starts Installer.Resume (in the background), then keeps a stream to
// one of the servers until ctx ends, reconnecting (and moving to the next
// server) whenever the stream ends. It returns nil once ctx has ended and
// every install worker has stopped; it may be called once. It does not
// close the Installer.
func (a *Agent) Run(ctx context.Context) error {
	if !a.running.CompareAndSwap(false, true) {
		return errors.New("agent: Run called twice")
	}
	wctx, stopWorkers := context.WithCancel(ctx)
	a.mu.Lock()
	a.workerCtx = wctx
	a.mu.Unlock()
	// Resume starts before the first connection but runs alongside it: a
	// slow health check must not keep the agent offline. The installer
	// serialises it with any Apply of the same app.
	resumeDone := make(chan struct{})
	go func() {
		defer close(resumeDone)
		if err := a.installer.Resume(wctx, a.resumeEvent); err != nil && wctx.Err() == nil {
			a.log.Error("resuming installed apps", "err", err)
		}
	}()
	driftDone := make(chan struct{})
	go func() {
		defer close(driftDone)
		if dc, ok := a.installer.(DriftChecker); ok {
			a.watchDrift(wctx, dc)
		}
	}()
	defer func() {
		stopWorkers()
		<-resumeDone
		<-driftDone
		a.workerWG.Wait()
	}()

	dial := a.cfg.Dial
	if dial == nil {
		conns := map[string]*grpc.ClientConn{}
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		opts := ClientOptions(a.cfg.Security, a.cfg.DialOptions...)
		dial = func(addr string) (*grpc.ClientConn, error) {
			a.mu.Lock()
			redial := a.redial
			a.redial = false
			a.mu.Unlock()
			if redial {
				for k, c := range conns {
					c.Close()
					delete(conns, k)
				}
			}
			if c, ok := conns[addr]; ok {
				return c, nil
			}
			c, err := grpc.NewClient(addr, opts...)
			if err != nil {
				return nil, err
			}
			conns[addr] = c
			return c, nil
		}
	}

	bo := backoff{min: BackoffMin, max: BackoffMax}
	for i := 0; ctx.Err() == nil; i++ {
		addr := a.servers[i%len(a.servers)]
		if a.cfg.ConnectSlots != nil {
			select {
			case a.cfg.ConnectSlots <- struct{}{}:
			case <-ctx.Done():
				continue
			}
		}
		// From the dial: a wait for a connect slot is not the stream's.
		start := time.Now()
		welcomed, err := a.session(ctx, addr, dial)
		if ctx.Err() != nil {
			break
		}
		if welcomed || time.Since(start) > StableStream {
			bo.reset()
		}
		wait := bo.next()
		a.log.Warn("stream to server ended; trying the next one", "server", addr, "err", err, "retry_in", wait.Round(time.Millisecond))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
	}
	return nil
}

// session runs one stream to addr until it fails or ctx ends. It is the
// stream's only sender; a second goroutine (recvLoop) is its only receiver
// and has ended when session returns. welcomed says whether the server
// answered the Hello.
func (a *Agent) session(ctx context.Context, addr string, dial func(string) (*grpc.ClientConn, error)) (welcomed bool, err error) {
	// The connect slot (ConnectSlots) taken by Run goes back once the
	// server welcomed this stream, or when the attempt ends.
	slot := a.cfg.ConnectSlots != nil
	freeSlot := func() {
		if slot {
			slot = false
			<-a.cfg.ConnectSlots
		}
	}
	defer freeSlot()
	conn, err := dial(addr)
	if err != nil {
		return false, fmt.Errorf("dial: %w", err)
	}
	// The stream outlives ctx by a moment: an agent that stops says
	// goodbye on it (goodbye), so its own stop must not cancel it first.
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	a.mu.Lock()
	a.endSession = cancel
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.endSession = nil
		a.mu.Unlock()
	}()
	stream, err := relv1.NewAgentServiceClient(conn).Connect(sctx)
	if err != nil {
		return false, fmt.Errorf("open stream: %w", err)
	}

	welcomeCh := make(chan *relv1.Welcome, 1)
	recvErr := make(chan error, 1)
	go func() { recvErr <- a.recvLoop(stream, welcomeCh) }()
	recvDone := false
	// end closes the stream and waits for the receiver. A failed Send only
	// says io.EOF; the stream's status then comes from the receiver.
	end := func(err error) (bool, error) {
		cancel()
		if !recvDone {
			if rerr := <-recvErr; errors.Is(err, io.EOF) && rerr != nil {
				err = rerr
			}
		}
		if welcomed {
			a.mu.Lock()
			a.status.Connected = false
			a.mu.Unlock()
		}
		return welcomed, err
	}

	if err := stream.Send(&relv1.AgentMessage{Kind: &relv1.AgentMessage_Hello{Hello: a.hello()}}); err != nil {
		return end(fmt.Errorf("send hello: %w", err))
	}

	welcomeTimer := time.NewTimer(WelcomeTimeout)
	defer welcomeTimer.Stop()
	hb := time.NewTimer(time.Hour)
	hb.Stop()
	defer hb.Stop()
	var (
		hbC      <-chan time.Time
		reportsC <-chan struct{}
		interval time.Duration
	)
	for {
		select {
		case <-ctx.Done():
			if welcomed && a.goodbye(stream, recvErr) {
				recvDone = true
			}
			return end(ctx.Err())
		case err := <-recvErr:
			recvDone = true
			select {
			case <-welcomeCh: // welcomed just before the end: still a working server
				welcomed = true
			default:
			}
			if errors.Is(err, io.EOF) {
				err = errors.New("server closed the stream")
			}
			return end(err)
		case <-welcomeTimer.C:
			return end(fmt.Errorf("no welcome within %s", WelcomeTimeout))
		case w := <-welcomeCh:
			welcomeTimer.Stop()
			welcomed = true
			freeSlot()
			interval = time.Duration(w.GetHeartbeatIntervalMs()) * time.Millisecond
			if interval <= 0 {
				interval = DefaultHeartbeatInterval
			}
			interval = max(interval, MinHeartbeatInterval)
			// The first heartbeat is spread over a whole interval, so
			// agents reconnecting together after a server restart do not
			// keep beating together.
			hb.Reset(fullJitter(interval))
			hbC = hb.C
			reportsC = a.reports.ready
			a.mu.Lock()
			a.status.Connected = true
			a.status.Server = addr
			a.status.ServerID = w.GetServerId()
			a.status.SessionID = w.GetSessionId()
			a.status.Sessions++
			a.mu.Unlock()
			a.log.Info("connected", "server", addr, "server_id", w.GetServerId(), "session_id", w.GetSessionId(), "heartbeat_interval", interval)
			if err := a.sendReports(stream); err != nil {
				return end(err)
			}
		case <-reportsC:
			if err := a.sendReports(stream); err != nil {
				return end(err)
			}
		case <-hbC:
			msg := &relv1.AgentMessage{Kind: &relv1.AgentMessage_Heartbeat{Heartbeat: &relv1.Heartbeat{
				Load:         a.load(),
				SentUnixNano: time.Now().UnixNano(),
			}}}
			if err := stream.Send(msg); err != nil {
				return end(fmt.Errorf("send heartbeat: %w", err))
			}
			hb.Reset(interval)
		}
	}
}

// GoodbyeWait bounds how long a stopping agent waits for its server to
// record it down after saying goodbye.
const GoodbyeWait = 2 * time.Second

// goodbye tells the server the agent is stopping, so that it is recorded
// down at once and no rollout dispatches to it, and waits (GoodbyeWait at
// most) for the server to end the stream. It reports whether the receiver
// has returned.
func (a *Agent) goodbye(stream grpc.BidiStreamingClient[relv1.AgentMessage, relv1.ServerMessage], recvErr <-chan error) bool {
	if err := stream.Send(&relv1.AgentMessage{Kind: &relv1.AgentMessage_Goodbye{Goodbye: &relv1.Goodbye{Reason: "agent stopping"}}}); err != nil {
		return false
	}
	_ = stream.CloseSend()
	t := time.NewTimer(GoodbyeWait)
	defer t.Stop()
	select {
	case <-recvErr:
		return true
	case <-t.C:
		return false
	}
}

// sendReports sends every pending report in one Reports message. Reports a
// failed send could not deliver go back to the queue (unless a newer one
// for the same app arrived meanwhile): the next stream sends them after its
// Hello.
func (a *Agent) sendReports(stream grpc.BidiStreamingClient[relv1.AgentMessage, relv1.ServerMessage]) error {
	rs := a.reports.take()
	if len(rs) == 0 {
		return nil
	}
	err := stream.Send(&relv1.AgentMessage{Kind: &relv1.AgentMessage_Reports{Reports: &relv1.Reports{Reports: rs}}})
	if err != nil {
		a.reports.putBack(rs)
		return fmt.Errorf("send reports: %w", err)
	}
	return nil
}

// recvLoop is the stream's only receiver: a Welcome first, then desired
// states. Anything else ends the stream with an ErrProtocol error.
func (a *Agent) recvLoop(stream grpc.BidiStreamingClient[relv1.AgentMessage, relv1.ServerMessage], welcomeCh chan<- *relv1.Welcome) error {
	msg, err := stream.Recv()
	if err != nil {
		return err
	}
	w := msg.GetWelcome()
	if w == nil {
		return fmt.Errorf("%w: first message from the server is %s, want a welcome", ErrProtocol, kindName(msg))
	}
	a.adoptCluster(w.GetClusterId())
	welcomeCh <- w
	for {
		msg, err := stream.Recv()
		if err != nil {
			return err
		}
		switch k := msg.GetKind().(type) {
		case *relv1.ServerMessage_Desired:
			a.handleDesired(k.Desired)
		default:
			return fmt.Errorf("%w: unexpected %s from the server", ErrProtocol, kindName(msg))
		}
	}
}

// adoptCluster records the cluster the agent is talking to. If it is not the
// one the agent's generation came from (the cluster was rebuilt and its
// raft indexes started again), the generation is forgotten: otherwise every
// desired state of the new cluster would look older than one already acted
// on. It runs before any desired state of the stream is handled.
func (a *Agent) adoptCluster(id string) {
	if id == "" {
		return
	}
	a.reconcileMu.Lock()
	defer a.reconcileMu.Unlock()
	a.mu.Lock()
	old, gen := a.state.ClusterID, a.state.LastGeneration
	if old == id {
		a.mu.Unlock()
		return
	}
	a.state.ClusterID = id
	if old != "" {
		a.state.LastGeneration = 0
		a.status.LastGeneration = 0
	}
	a.mu.Unlock()
	if old != "" {
		a.log.Warn("connected to another cluster than before: forgetting the desired-state generation of the old one", "old_cluster", old, "cluster", id, "generation", gen)
	}
	a.persist()
}

func kindName(m *relv1.ServerMessage) string {
	switch m.GetKind().(type) {
	case *relv1.ServerMessage_Welcome:
		return "a welcome"
	case *relv1.ServerMessage_Desired:
		return "a desired state"
	case nil:
		return "an empty message"
	default:
		return fmt.Sprintf("an unknown message (%T)", m.GetKind())
	}
}

// hello describes the agent: identity, facts, what the installer says is
// installed (with the rollout and generation the agent converged it for,
// when it did), and the newest generation acted on.
func (a *Agent) hello() *relv1.Hello {
	installed := a.installer.Installed()
	a.mu.Lock()
	gen := a.state.LastGeneration
	clusterID := a.state.ClusterID
	recs := maps.Clone(a.state.Apps)
	a.mu.Unlock()
	h := &relv1.Hello{
		NodeId:         a.cfg.NodeID,
		Labels:         a.cfg.Labels,
		AgentVersion:   version.Version,
		Facts:          a.facts,
		LastGeneration: gen,
		ClusterId:      clusterID,
		Installed:      make([]*relv1.AppReport, 0, len(installed)),
	}
	for _, ia := range installed {
		r := &relv1.AppReport{
			App:             ia.App,
			Version:         ia.Version,
			PreviousVersion: ia.PreviousVersion,
			Phase:           string(ia.Phase),
			Reason:          ia.Reason,
		}
		if !ia.Since.IsZero() {
			r.AtUnixNano = ia.Since.UnixNano()
		}
		if rec, ok := recs[ia.App]; ok && rec.Version == ia.Version {
			// An install the agent's own stop interrupted (not one that
			// failed) is about to be tried again: it is no verdict on the
			// rollout, so it is not attributed to it.
			if !(ia.Phase == install.PhaseFailed && !rec.Failed) {
				r.RolloutId, r.Generation = rec.RolloutID, rec.Generation
			}
		}
		h.Installed = append(h.Installed, r)
	}
	return h
}
