package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/relhq/rel/internal/install"
	"github.com/relhq/rel/internal/transport"
	"github.com/relhq/rel/internal/version"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

var phaseOrder = map[string]int{"downloading": 0, "installing": 1, "starting": 2, "verifying": 3, "healthy": 4, "failed": 4}

func TestHello(t *testing.T) {
	srv := startFakeServer(t, "s1")
	dir := t.TempDir()
	if err := saveState(dir, localState{NodeID: "web-7", LastGeneration: 42, Apps: map[string]attempt{
		"web": {Version: "1.0.0", SHA256: sha256Of("web@1.0.0"), RolloutID: "r-1", Generation: 40},
	}}); err != nil {
		t.Fatal(err)
	}
	inst := newRecInstaller()
	if err := inst.NoopInstaller.Apply(context.Background(), install.Desired{App: "web", Version: "1.0.0"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := inst.NoopInstaller.Apply(context.Background(), install.Desired{App: "api", Version: "0.9"}, nil); err != nil {
		t.Fatal(err)
	}
	inst.resume = []install.Event{{App: "web", Version: "1.0.0", Phase: install.PhaseHealthy, At: time.Unix(100, 0)}}

	startAgent(t, Config{
		Servers: []string{srv.addr}, NodeID: "web-7", DataDir: dir,
		Labels:    map[string]string{"env": "prod", "tier": "web"},
		Installer: inst,
	})
	ss := srv.session(t, 0)
	h := ss.hello
	if h.GetNodeId() != "web-7" || h.GetAgentVersion() != version.Version || h.GetLastGeneration() != 42 {
		t.Errorf("hello = %v", h)
	}
	if h.GetLabels()["env"] != "prod" || h.GetLabels()["tier"] != "web" || len(h.GetLabels()) != 2 {
		t.Errorf("labels = %v", h.GetLabels())
	}
	if !proto.Equal(h.GetFacts(), testFacts) {
		t.Errorf("facts = %v, want %v", h.GetFacts(), testFacts)
	}
	if len(h.GetInstalled()) != 2 {
		t.Fatalf("installed = %v", h.GetInstalled())
	}
	api, web := h.GetInstalled()[0], h.GetInstalled()[1]
	if api.GetApp() != "api" || api.GetVersion() != "0.9" || api.GetPhase() != "healthy" || api.GetRolloutId() != "" || api.GetAtUnixNano() == 0 {
		t.Errorf("installed api = %v", api)
	}
	if web.GetApp() != "web" || web.GetVersion() != "1.0.0" || web.GetPhase() != "healthy" || web.GetRolloutId() != "r-1" || web.GetGeneration() != 40 {
		t.Errorf("installed web = %v", web)
	}
	// Resume's events are reports, sent after the Welcome.
	r := ss.waitPhase(t, "web", "1.0.0", "healthy")
	if r.GetRolloutId() != "r-1" || r.GetGeneration() != 40 || r.GetAtUnixNano() != time.Unix(100, 0).UnixNano() {
		t.Errorf("resume report = %v", r)
	}
	// Heartbeats carry the load.
	waitFor(t, 5*time.Second, "a heartbeat", func() bool {
		for _, m := range ss.messages() {
			if hb := m.GetHeartbeat(); hb != nil {
				if !proto.Equal(hb.GetLoad(), testLoad) || hb.GetSentUnixNano() == 0 {
					t.Errorf("heartbeat = %v", hb)
				}
				return true
			}
		}
		return false
	})
}

func TestDesiredStateAppliedAndReported(t *testing.T) {
	srv := startFakeServer(t, "s1")
	dir := t.TempDir()
	inst := newRecInstaller()
	a := startAgent(t, Config{Servers: []string{srv.addr}, DataDir: dir, Installer: inst})
	ss := srv.session(t, 0)

	web, api := desiredApp("web", "2.0.0", "r-7"), desiredApp("api", "1.1.0", "r-8")
	ss.sendDesired(7, web, api)
	ss.waitPhase(t, "web", "2.0.0", "healthy")
	ss.waitPhase(t, "api", "1.1.0", "healthy")

	for _, want := range []*relv1.DesiredApp{web, api} {
		got := inst.appliesOf(want.GetApp())
		if len(got) != 1 {
			t.Fatalf("%s applied %d times", want.GetApp(), len(got))
		}
		d := got[0]
		if d.App != want.GetApp() || d.Version != want.GetVersion() || d.SHA256 != want.GetSha256() || d.Size != want.GetSize() || !slices.Equal(d.URLs, want.GetUrls()) {
			t.Errorf("Apply got %+v, want %v", d, want)
		}
	}
	// Per app, phases only move forward, and every report names the
	// rollout and generation.
	last := map[string]int{}
	for _, r := range ss.reports() {
		p, ok := phaseOrder[r.GetPhase()]
		if !ok {
			t.Fatalf("unknown phase in %v", r)
		}
		if p < last[r.GetApp()] {
			t.Errorf("report for %s went back to %s", r.GetApp(), r.GetPhase())
		}
		last[r.GetApp()] = p
		wantRollout := map[string]string{"web": "r-7", "api": "r-8"}[r.GetApp()]
		if r.GetRolloutId() != wantRollout || r.GetGeneration() != 7 || r.GetAtUnixNano() == 0 {
			t.Errorf("report %v: want rollout %s generation 7", r, wantRollout)
		}
	}
	waitFor(t, 5*time.Second, "status generation 7", func() bool { return a.Status().LastGeneration == 7 })
	var st localState
	waitFor(t, 5*time.Second, "agent.json to hold generation 7", func() bool {
		st, _ = loadState(dir)
		return st.LastGeneration == 7
	})
	if st.Apps["web"].Version != "2.0.0" || st.Apps["api"].RolloutID != "r-8" || st.NodeID != "node-1" {
		t.Errorf("persisted state = %+v", st)
	}
}

func TestStaleGenerationIgnored(t *testing.T) {
	srv := startFakeServer(t, "s1")
	inst := newRecInstaller()
	a := startAgent(t, Config{Servers: []string{srv.addr}, DataDir: t.TempDir(), Installer: inst})
	ss := srv.session(t, 0)

	ss.sendDesired(10, desiredApp("web", "1.0.0", "r-1"))
	ss.waitPhase(t, "web", "1.0.0", "healthy")
	ss.sendDesired(5, desiredApp("web", "0.1.0", "r-0")) // older: ignored
	// Desired states are handled in order: once api is applied, the stale
	// one has been seen.
	ss.sendDesired(11, desiredApp("web", "1.0.0", "r-1"), desiredApp("api", "1.0.0", "r-2"))
	ss.waitPhase(t, "api", "1.0.0", "healthy")
	if got := inst.appliesOf("web"); len(got) != 1 || got[0].Version != "1.0.0" {
		t.Errorf("web applies = %+v", got)
	}
	waitFor(t, 5*time.Second, "status generation 11", func() bool { return a.Status().LastGeneration == 11 })
}

func TestSameDesiredStateAfterReconnect(t *testing.T) {
	srv := startFakeServer(t, "s1")
	inst := newRecInstaller()
	startAgent(t, Config{Servers: []string{srv.addr}, DataDir: t.TempDir(), Installer: inst})
	ss := srv.session(t, 0)
	ss.sendDesired(5, desiredApp("web", "1.0.0", "r-1"))
	ss.waitPhase(t, "web", "1.0.0", "healthy")

	close(ss.close) // the server ends the stream
	ss2 := srv.session(t, 1)
	h := ss2.hello
	if h.GetLastGeneration() != 5 || len(h.GetInstalled()) != 1 {
		t.Fatalf("hello after reconnect = %v", h)
	}
	if in := h.GetInstalled()[0]; in.GetApp() != "web" || in.GetVersion() != "1.0.0" || in.GetPhase() != "healthy" || in.GetRolloutId() != "r-1" || in.GetGeneration() != 5 {
		t.Errorf("installed = %v", in)
	}
	ss2.sendDesired(5, desiredApp("web", "1.0.0", "r-1"))
	ss2.sendDesired(6, desiredApp("web", "1.0.0", "r-1"), desiredApp("api", "1.0.0", "r-2"))
	ss2.waitPhase(t, "api", "1.0.0", "healthy")
	if n := len(inst.appliesOf("web")); n != 1 {
		t.Errorf("web applied %d times, want once", n)
	}
	for _, r := range ss2.reports() {
		if r.GetApp() == "web" {
			t.Errorf("unexpected report for web after reconnect: %v", r)
		}
	}
}

func TestFailedInstallNotRetriedOnReconnect(t *testing.T) {
	srv := startFakeServer(t, "s1")
	inst := newRecInstaller()
	inst.fail["bad"] = true
	startAgent(t, Config{Servers: []string{srv.addr}, Installer: inst})
	ss := srv.session(t, 0)
	ss.sendDesired(3, desiredApp("bad", "1.0.0", "r-1"))
	r := ss.waitPhase(t, "bad", "1.0.0", "failed")
	if r.GetReason() != "sha256 mismatch" {
		t.Errorf("failed report = %v", r)
	}

	close(ss.close)
	ss2 := srv.session(t, 1)
	ss2.sendDesired(3, desiredApp("bad", "1.0.0", "r-1"))
	ss2.sendDesired(4, desiredApp("bad", "1.0.0", "r-1"), desiredApp("api", "1.0.0", "r-2"))
	ss2.waitPhase(t, "api", "1.0.0", "healthy")
	if n := len(inst.appliesOf("bad")); n != 1 {
		t.Fatalf("bad applied %d times after reconnect, want 1", n)
	}
	// A new rollout of the same release is a new attempt.
	ss2.sendDesired(5, desiredApp("bad", "1.0.0", "r-3"), desiredApp("api", "1.0.0", "r-2"))
	waitFor(t, 5*time.Second, "a retry for the new rollout", func() bool { return len(inst.appliesOf("bad")) == 2 })
}

func TestFailoverToSecondServer(t *testing.T) {
	s1, s2 := startFakeServer(t, "s1"), startFakeServer(t, "s2")
	startAgent(t, Config{Servers: []string{s1.addr, s2.addr}, Installer: newRecInstaller()})
	waitFor(t, 5*time.Second, "a first session", func() bool { return s1.sessionCount()+s2.sessionCount() > 0 })
	holder, other := s1, s2
	if s2.sessionCount() > 0 {
		holder, other = s2, s1
	}
	holder.session(t, 0)
	start := time.Now()
	holder.kill()
	waitFor(t, 5*time.Second, "the agent on "+other.id, func() bool { return other.sessionCount() > 0 })
	t.Logf("on the other server %s after the first one died", time.Since(start).Round(time.Millisecond))
	if h := other.session(t, 0).hello; h.GetNodeId() != "node-1" {
		t.Errorf("hello = %v", h)
	}
}

func TestDuplicateDesiredMidInstall(t *testing.T) {
	srv := startFakeServer(t, "s1")
	inst := newRecInstaller()
	gate := make(chan struct{})
	inst.gates["web"] = gate
	startAgent(t, Config{Servers: []string{srv.addr}, Installer: inst})
	ss := srv.session(t, 0)

	ss.sendDesired(1, desiredApp("web", "1.0.0", "r-1"))
	waitFor(t, 5*time.Second, "web's install to start", func() bool { return len(inst.appliesOf("web")) == 1 })
	ss.sendDesired(2, desiredApp("web", "1.0.0", "r-1"), desiredApp("api", "1.0.0", "r-2"))
	ss.waitPhase(t, "api", "1.0.0", "healthy")
	if n, c := len(inst.appliesOf("web")), inst.cancels(); n != 1 || c != 0 {
		t.Fatalf("web applied %d times, cancelled %d times; want 1, 0", n, c)
	}
	close(gate)
	r := ss.waitPhase(t, "web", "1.0.0", "healthy")
	if r.GetGeneration() != 2 {
		t.Errorf("healthy report after the duplicate: generation %d, want 2", r.GetGeneration())
	}
}

func TestTargetChangeMidInstall(t *testing.T) {
	srv := startFakeServer(t, "s1")
	inst := newRecInstaller()
	inst.gates["web"] = make(chan struct{}) // never opened: 1.0.0 blocks
	startAgent(t, Config{Servers: []string{srv.addr}, Installer: inst})
	ss := srv.session(t, 0)
	ss.sendDesired(1, desiredApp("web", "1.0.0", "r-1"))
	waitFor(t, 5*time.Second, "web's install to start", func() bool { return len(inst.appliesOf("web")) == 1 })
	inst.mu.Lock()
	delete(inst.gates, "web")
	inst.mu.Unlock()
	ss.sendDesired(2, desiredApp("web", "2.0.0", "r-2"))
	r := ss.waitPhase(t, "web", "2.0.0", "healthy")
	if inst.cancels() != 1 || r.GetRolloutId() != "r-2" {
		t.Errorf("cancels = %d, report = %v", inst.cancels(), r)
	}
	for _, r := range ss.reports() {
		if r.GetVersion() == "1.0.0" && r.GetPhase() != "downloading" {
			t.Errorf("report from the superseded install: %v", r)
		}
	}
}

func TestProtocolViolationReconnects(t *testing.T) {
	srv := startFakeServer(t, "s1")
	srv.first = func(n int) *relv1.ServerMessage {
		if n == 0 { // a desired state before any Welcome
			return &relv1.ServerMessage{Kind: &relv1.ServerMessage_Desired{Desired: &relv1.DesiredState{Generation: 9, Apps: []*relv1.DesiredApp{desiredApp("web", "1.0.0", "r")}}}}
		}
		return &relv1.ServerMessage{Kind: &relv1.ServerMessage_Welcome{Welcome: &relv1.Welcome{ServerId: "s1", SessionId: fmt.Sprint(n), HeartbeatIntervalMs: 200}}}
	}
	inst := newRecInstaller()
	a := startAgent(t, Config{Servers: []string{srv.addr}, Installer: inst})
	ss := srv.session(t, 1)
	waitFor(t, 5*time.Second, "connected", func() bool { return a.Status().Connected })
	if n := len(inst.appliesOf("web")); n != 0 || ss.hello.GetLastGeneration() != 0 {
		t.Errorf("desired state before the welcome was acted on: %d applies, hello %v", n, ss.hello)
	}
	// A second Welcome on the same stream is a violation too.
	ss.out <- &relv1.ServerMessage{Kind: &relv1.ServerMessage_Welcome{Welcome: &relv1.Welcome{ServerId: "s1"}}}
	srv.session(t, 2)
	<-ss.ended
}

func TestOneSenderPerStream(t *testing.T) {
	srv := startFakeServer(t, "s1")
	srv.hbMs = 1 // clamped to MinHeartbeatInterval
	var (
		mu       sync.Mutex
		senders  = map[grpc.ClientStream]map[uint64]bool{}
		inFlight atomic.Int32
		overlap  atomic.Bool
	)
	interceptor := func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		cs, err := streamer(ctx, desc, cc, method, opts...)
		if err != nil {
			return nil, err
		}
		return &watchedStream{ClientStream: cs, onSend: func(s grpc.ClientStream) func() {
			if inFlight.Add(1) > 1 {
				overlap.Store(true)
			}
			mu.Lock()
			if senders[s] == nil {
				senders[s] = map[uint64]bool{}
			}
			senders[s][goid()] = true
			mu.Unlock()
			return func() { inFlight.Add(-1) }
		}}, nil
	}
	inst := newRecInstaller()
	startAgent(t, Config{Servers: []string{srv.addr}, Installer: inst, DialOptions: []grpc.DialOption{grpc.WithStreamInterceptor(interceptor)}})
	for round := range 3 {
		ss := srv.session(t, round)
		for g := uint64(1); g <= 20; g++ {
			var apps []*relv1.DesiredApp
			for i := range 10 {
				apps = append(apps, desiredApp(fmt.Sprintf("app%d", i), fmt.Sprintf("%d.%d.0", round, g), "r"))
			}
			ss.sendDesired(uint64(round*100)+g, apps...)
		}
		ss.waitPhase(t, "app9", fmt.Sprintf("%d.20.0", round), "healthy")
		waitFor(t, 5*time.Second, "heartbeats", func() bool {
			n := 0
			for _, m := range ss.messages() {
				if m.GetHeartbeat() != nil {
					n++
				}
			}
			return n >= 3
		})
		close(ss.close)
	}
	srv.session(t, 3)
	if overlap.Load() {
		t.Error("two Sends were in flight at once")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(senders) < 3 {
		t.Fatalf("saw %d streams, want at least 3", len(senders))
	}
	for s, ids := range senders {
		if len(ids) != 1 {
			t.Errorf("stream %p was sent on by %d goroutines", s, len(ids))
		}
	}
}

type watchedStream struct {
	grpc.ClientStream
	onSend func(grpc.ClientStream) func()
}

func (w *watchedStream) SendMsg(m any) error {
	done := w.onSend(w)
	defer done()
	return w.ClientStream.SendMsg(m)
}

func TestSimulate(t *testing.T) {
	srv := startFakeServer(t, "s1")
	const n = 50
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var (
		mu     sync.Mutex
		agents []*Agent
	)
	go func() {
		done <- Simulate(ctx, SimConfig{
			Servers: []string{srv.addr}, Count: n, IDPrefix: "sim",
			Labels: map[string]string{"env": "bench"}, Logger: testLogger(t),
			Started: func(a *Agent) { mu.Lock(); agents = append(agents, a); mu.Unlock() },
			Certs: func(_ context.Context, id string) (transport.Security, error) {
				return agentSecurity(t, id), nil
			},
		})
	}()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Error(err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Simulate did not return")
		}
	}()
	waitFor(t, 10*time.Second, "50 hellos", func() bool { return srv.sessionCount() >= n })
	ids := map[string]bool{}
	for _, h := range srv.hellos() {
		ids[h.GetNodeId()] = true
		if h.GetLabels()["env"] != "bench" || h.GetFacts().GetHostname() != h.GetNodeId() || h.GetFacts().GetCpus() != 8 {
			t.Errorf("hello = %v", h)
		}
	}
	for i := 1; i <= n; i++ {
		if id := fmt.Sprintf("sim-%04d", i); !ids[id] {
			t.Errorf("no hello from %s", id)
		}
	}
	if len(ids) != n {
		t.Errorf("%d distinct ids, want %d", len(ids), n)
	}
	// Every agent is its own TLS identity, so each has its own connection.
	if got := srv.accepts.Load(); got != n {
		t.Errorf("%d connections for %d agents, want one each", got, n)
	}
	// Every simulated agent converges with the no-op installer.
	for i := range n {
		srv.session(t, i).sendDesired(1, desiredApp("web", "1.0.0", "r"))
	}
	for i := range n {
		srv.session(t, i).waitPhase(t, "web", "1.0.0", "healthy")
	}
	// Idle agents cost two goroutines of their own each (the send loop and
	// the receiver; gRPC adds one per stream).
	buf := make([]byte, 8<<20)
	buf = buf[:runtime.Stack(buf, true)]
	own := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "internal/agent.(*Agent)") {
			own++
		}
	}
	t.Logf("%d agent goroutines for %d agents", own, n)
	if own > 2*n {
		t.Errorf("%d agent goroutines for %d idle agents, want at most %d", own, n, 2*n)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(agents) != n {
		t.Errorf("Started saw %d agents", len(agents))
	}
	for _, a := range agents {
		if !a.Status().Connected {
			t.Errorf("%s not connected", a.cfg.NodeID)
		}
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	inst := &NoopInstaller{}
	for name, cfg := range map[string]Config{
		"no servers":   {NodeID: "n", Installer: inst},
		"empty server": {Servers: []string{""}, NodeID: "n", Installer: inst},
		"no node id":   {Servers: []string{"x:1"}, Installer: inst},
		"no installer": {Servers: []string{"x:1"}, NodeID: "n"},
	} {
		cfg.Facts = testFacts
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, stateFile), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(Config{Servers: []string{"x:1"}, NodeID: "n", Installer: inst, DataDir: dir, Facts: testFacts}); err == nil {
		t.Error("New accepted a corrupt agent.json")
	}
}

func TestRestartConvergesFromDisk(t *testing.T) {
	srv := startFakeServer(t, "s1")
	dir := t.TempDir()
	inst := newRecInstaller()
	inst.fail["bad"] = true
	inst.gates["web"] = make(chan struct{}) // never opened: interrupted by the stop
	_, stop := runAgent(t, Config{Servers: []string{srv.addr}, DataDir: dir, Installer: inst})
	ss := srv.session(t, 0)
	ss.sendDesired(3, desiredApp("bad", "1.0.0", "r-1"), desiredApp("web", "1.0.0", "r-1"))
	ss.waitPhase(t, "bad", "1.0.0", "failed")
	ss.waitPhase(t, "web", "1.0.0", "downloading")
	waitFor(t, 5*time.Second, "the failure to be persisted", func() bool {
		st, _ := loadState(dir)
		return st.Apps["bad"].Failed
	})
	stop()
	if inst.cancels() != 1 {
		t.Fatalf("the interrupted install was cancelled %d times", inst.cancels())
	}

	inst.mu.Lock()
	delete(inst.gates, "web")
	inst.mu.Unlock()
	startAgent(t, Config{Servers: []string{srv.addr}, DataDir: dir, Installer: inst})
	ss2 := srv.session(t, 1)
	if ss2.hello.GetLastGeneration() != 3 {
		t.Errorf("hello after restart: last generation %d, want 3", ss2.hello.GetLastGeneration())
	}
	ss2.sendDesired(3, desiredApp("bad", "1.0.0", "r-1"), desiredApp("web", "1.0.0", "r-1"))
	// The interrupted install is tried again; the failed one is not.
	ss2.waitPhase(t, "web", "1.0.0", "healthy")
	if n, m := len(inst.appliesOf("web")), len(inst.appliesOf("bad")); n != 2 || m != 1 {
		t.Errorf("applies after restart: web %d (want 2), bad %d (want 1)", n, m)
	}
}

func TestRealInstaller(t *testing.T) {
	srv := startFakeServer(t, "s1")
	dir := t.TempDir()
	artifact := filepath.Join(dir, "hello.txt")
	if err := os.WriteFile(artifact, []byte("hello, world\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte("hello, world\n"))
	want := &relv1.DesiredApp{
		App: "hello", Version: "1.0.0", Sha256: hex.EncodeToString(sum[:]), Size: 13,
		Urls: []string{"file://" + artifact}, RolloutId: "r-1",
	}
	newHost := func() *install.Host {
		// The release comes from a file:// URL, which agents refuse
		// unless told otherwise.
		h, err := install.New(install.Config{Root: filepath.Join(dir, "root"), DataDir: filepath.Join(dir, "data"), NodeID: "node-1",
			AllowedSchemes: []string{"https", "file"}})
		if err != nil {
			t.Fatal(err)
		}
		return h
	}

	host := newHost()
	_, stop := runAgent(t, Config{Servers: []string{srv.addr}, DataDir: filepath.Join(dir, "data"), Installer: host})
	ss := srv.session(t, 0)
	ss.sendDesired(1, want)
	r := ss.waitPhase(t, "hello", "1.0.0", "healthy")
	if r.GetRolloutId() != "r-1" || r.GetGeneration() != 1 {
		t.Errorf("report = %v", r)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "root", "hello", "current", "hello.txt")); err != nil || string(b) != "hello, world\n" {
		t.Errorf("installed file: %q, %v", b, err)
	}
	stop()
	if err := host.Close(); err != nil {
		t.Fatal(err)
	}

	// A restarted agent resumes, says what is installed, and does not
	// install it again when the same desired state comes.
	host = newHost()
	defer host.Close()
	startAgent(t, Config{Servers: []string{srv.addr}, DataDir: filepath.Join(dir, "data"), Installer: host})
	ss2 := srv.session(t, 1)
	in := ss2.hello.GetInstalled()
	if len(in) != 1 || in[0].GetApp() != "hello" || in[0].GetVersion() != "1.0.0" || in[0].GetRolloutId() != "r-1" {
		t.Fatalf("installed after restart = %v", in)
	}
	ss2.waitPhase(t, "hello", "1.0.0", "healthy") // from Resume
	n := len(ss2.reports())
	ss2.sendDesired(1, want)
	other := desiredApp("other", "1", "r-2")
	other.Urls = []string{"file://" + filepath.Join(dir, "missing")}
	ss2.sendDesired(2, want, other) // fails: a sync point
	ss2.waitPhase(t, "other", "1", "failed")
	for _, r := range ss2.reports()[n:] {
		if r.GetApp() == "hello" {
			t.Errorf("hello reported again after the same desired state: %v", r)
		}
	}
}

// TestRebuiltClusterResetsGeneration: an agent that acted on generation 50
// of cluster A and then meets cluster B (rebuilt: its indexes start again)
// forgets the old generation instead of ignoring B's desired states forever.
func TestRebuiltClusterResetsGeneration(t *testing.T) {
	srv := startFakeServer(t, "s1")
	cluster := "cl-a"
	srv.first = func(n int) *relv1.ServerMessage {
		return &relv1.ServerMessage{Kind: &relv1.ServerMessage_Welcome{Welcome: &relv1.Welcome{
			ServerId: "s1", SessionId: "s1-" + strconv.Itoa(n), HeartbeatIntervalMs: 200, ClusterId: cluster,
		}}}
	}
	inst := newRecInstaller()
	a := startAgent(t, Config{Servers: []string{srv.addr}, DataDir: t.TempDir(), Installer: inst})
	ss := srv.session(t, 0)
	ss.sendDesired(50, desiredApp("web", "1.0.0", "r-1"))
	ss.waitPhase(t, "web", "1.0.0", "healthy")

	cluster = "cl-b" // the next stream meets a rebuilt cluster
	close(ss.close)
	ss2 := srv.session(t, 1)
	if h := ss2.hello; h.GetClusterId() != "cl-a" || h.GetLastGeneration() != 50 {
		t.Fatalf("hello to the new cluster = cluster %q generation %d, want cl-a 50", h.GetClusterId(), h.GetLastGeneration())
	}
	ss2.sendDesired(3, desiredApp("web", "2.0.0", "r-9"))
	ss2.waitPhase(t, "web", "2.0.0", "healthy")
	waitFor(t, 5*time.Second, "generation 3 of the new cluster", func() bool { return a.Status().LastGeneration == 3 })
}

// TestReconnectAfterRenewal: Reconnect (called when the certificate was
// renewed) ends the stream and opens the next one on a new connection, so
// the server sees the new certificate.
func TestReconnectAfterRenewal(t *testing.T) {
	srv := startFakeServer(t, "s1")
	a := startAgent(t, Config{Servers: []string{srv.addr}, Installer: &NoopInstaller{}})
	srv.session(t, 0)
	waitFor(t, 5*time.Second, "connected", func() bool { return a.Status().Connected })
	before := srv.accepts.Load()
	a.Reconnect()
	srv.session(t, 1)
	waitFor(t, 5*time.Second, "connected again", func() bool { return a.Status().Connected && a.Status().Sessions == 2 })
	if got := srv.accepts.Load(); got != before+1 {
		t.Errorf("connections accepted: %d after Reconnect, %d before: want a new one", got, before)
	}
}

// TestStopSaysGoodbye (issue 9): an agent stopping gracefully says goodbye
// as the last message on its stream, so its server records it down at once.
func TestStopSaysGoodbye(t *testing.T) {
	srv := startFakeServer(t, "s1")
	a, stop := runAgent(t, Config{Servers: []string{srv.addr}, NodeID: "web-1", Installer: newRecInstaller()})
	ss := srv.session(t, 0)
	waitFor(t, 5*time.Second, "the agent connected", func() bool { return a.Status().Connected })
	stop()
	msgs := ss.messages()
	if len(msgs) == 0 || msgs[len(msgs)-1].GetGoodbye().GetReason() != "agent stopping" {
		t.Fatalf("last message of a stopping agent: %v, want a goodbye", msgs)
	}
}

// driftInstaller is a recInstaller whose apps can be said changed by hand.
type driftInstaller struct {
	*recInstaller
	dmu     sync.Mutex
	drifted map[string]string
}

func (d *driftInstaller) Drifted() map[string]string {
	d.dmu.Lock()
	defer d.dmu.Unlock()
	return maps.Clone(d.drifted)
}

// TestDriftReportedAndReapplied (issue 9): an app changed by hand is
// reported drifted, and the next desired state for the very release it
// had is applied again instead of being taken as done.
func TestDriftReportedAndReapplied(t *testing.T) {
	old := DriftInterval
	DriftInterval = 20 * time.Millisecond
	t.Cleanup(func() { DriftInterval = old })
	srv := startFakeServer(t, "s1")
	inst := &driftInstaller{recInstaller: newRecInstaller(), drifted: map[string]string{}}
	startAgent(t, Config{Servers: []string{srv.addr}, DataDir: t.TempDir(), Installer: inst})
	ss := srv.session(t, 0)
	ss.sendDesired(5, desiredApp("web", "2.0.0", "r-1"))
	ss.waitPhase(t, "web", "2.0.0", "healthy")

	inst.dmu.Lock()
	inst.drifted["web"] = "1.0.0"
	inst.dmu.Unlock()
	waitFor(t, 5*time.Second, "a drifted report", func() bool {
		r := ss.latest("web")
		return r.GetPhase() == PhaseDrifted && r.GetVersion() == "1.0.0" && strings.Contains(r.GetReason(), "current points at 1.0.0, not at 2.0.0")
	})
	ss.sendDesired(6, desiredApp("web", "2.0.0", "r-catch-up"))
	waitFor(t, 5*time.Second, "2.0.0 applied again", func() bool { return len(inst.appliesOf("web")) == 2 })
	ss.waitPhase(t, "web", "2.0.0", "healthy")
}

// TestSimulateConnectingBound: a simulator's agents dial at most
// SimConfig.Connecting at once, each holding its slot until welcomed, so
// a crowd reconnecting does not spend its connect timeout queueing for the
// simulator's own CPU; -1 lifts the bound.
func TestSimulateConnectingBound(t *testing.T) {
	for _, tc := range []struct {
		name       string
		connecting int
		want       int // most hellos waiting for a welcome at once
	}{
		{"bound of 3", 3, 3},
		{"no bound", -1, 10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const n = 10
			srv := startFakeServer(t, "s1")
			var waiting, most, passed atomic.Int32
			release := make(chan struct{})
			srv.first = func(k int) *relv1.ServerMessage {
				w := waiting.Add(1)
				for m := most.Load(); w > m && !most.CompareAndSwap(m, w); m = most.Load() {
				}
				<-release
				waiting.Add(-1)
				passed.Add(1)
				return &relv1.ServerMessage{Kind: &relv1.ServerMessage_Welcome{Welcome: &relv1.Welcome{
					ServerId: "s1", SessionId: fmt.Sprintf("s1-%d", k), HeartbeatIntervalMs: 200,
				}}}
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() {
				done <- Simulate(ctx, SimConfig{
					Servers: []string{srv.addr}, Count: n, IDPrefix: "sim", Connecting: tc.connecting,
					Logger: testLogger(t),
					Certs: func(_ context.Context, id string) (transport.Security, error) {
						return agentSecurity(t, id), nil
					},
				})
			}()
			defer func() {
				cancel()
				select {
				case <-done:
				case <-time.After(10 * time.Second):
					t.Error("Simulate did not return")
				}
			}()
			// Welcome one agent at a time: each time, the hellos waiting
			// fill up to the bound again, and no more get through.
			for welcomed := 0; welcomed < n; welcomed++ {
				want := int32(min(tc.want, n-welcomed))
				waitFor(t, 10*time.Second, fmt.Sprintf("%d welcomes", welcomed), func() bool { return passed.Load() == int32(welcomed) })
				waitFor(t, 10*time.Second, fmt.Sprintf("%d hellos waiting", want), func() bool { return waiting.Load() == want })
				if got := srv.sessionCount(); got != welcomed+int(want) {
					t.Fatalf("after %d welcomes: %d streams opened, want %d", welcomed, got, welcomed+int(want))
				}
				release <- struct{}{}
			}
			if got := most.Load(); got != int32(tc.want) {
				t.Errorf("at most %d agents waited for a welcome at once, want %d", got, tc.want)
			}
		})
	}
}
