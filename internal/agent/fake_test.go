package agent

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/relhq/rel/internal/install"
	"github.com/relhq/rel/internal/pki"
	"github.com/relhq/rel/internal/transport"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// testCA signs the fake servers' and the agents' certificates: the agent
// speaks mutual TLS only.
var testCA *pki.CA

func TestMain(m *testing.M) {
	var err error
	if testCA, err = pki.NewCA("test", 0, time.Now()); err != nil {
		panic(err)
	}
	goleak.VerifyTestMain(m)
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// fakeServer is a scripted AgentService on loopback. Each stream becomes a
// fakeSession the test drives: what the server sends is pushed through
// session.out, what the agent sent is recorded.
type fakeServer struct {
	relv1.UnimplementedAgentServiceServer
	id      string
	addr    string
	gs      *grpc.Server
	lis     net.Listener
	accepts atomic.Int32

	// hbMs is the heartbeat interval the Welcome names.
	hbMs int64
	// first, when set, is sent instead of the Welcome.
	first func(n int) *relv1.ServerMessage

	mu       sync.Mutex
	sessions []*fakeSession
}

type fakeSession struct {
	hello *relv1.Hello
	out   chan *relv1.ServerMessage
	close chan struct{}
	ended chan struct{}

	mu   sync.Mutex
	msgs []*relv1.AgentMessage
}

type countingListener struct {
	net.Listener
	n *atomic.Int32
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

func startFakeServer(t *testing.T, id string) *fakeServer {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeServer{id: id, addr: lis.Addr().String(), lis: lis, hbMs: 200}
	sec := testSecurity(t, pki.Identity{Kind: pki.KindServer, ID: id})
	s.gs = grpc.NewServer(append(sec.GRPCServerOptions(), grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
		MinTime:             5 * time.Second,
		PermitWithoutStream: true,
	}))...)
	relv1.RegisterAgentServiceServer(s.gs, s)
	go s.gs.Serve(countingListener{Listener: lis, n: &s.accepts})
	t.Cleanup(s.kill)
	return s
}

// kill closes the listener and every connection at once, like a crash.
func (s *fakeServer) kill() {
	s.lis.Close()
	s.gs.Stop()
}

func (s *fakeServer) Connect(stream relv1.AgentService_ConnectServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	if first.GetHello() == nil {
		return errors.New("first message is not a hello")
	}
	sess := &fakeSession{
		hello: first.GetHello(),
		out:   make(chan *relv1.ServerMessage, 64),
		close: make(chan struct{}),
		ended: make(chan struct{}),
	}
	defer close(sess.ended)
	s.mu.Lock()
	n := len(s.sessions)
	s.sessions = append(s.sessions, sess)
	s.mu.Unlock()

	msg := &relv1.ServerMessage{Kind: &relv1.ServerMessage_Welcome{Welcome: &relv1.Welcome{
		ServerId: s.id, SessionId: s.id + "-" + strconv.Itoa(n), HeartbeatIntervalMs: s.hbMs,
	}}}
	if s.first != nil {
		msg = s.first(n)
	}
	if err := stream.Send(msg); err != nil {
		return err
	}
	recvDone := make(chan error, 1)
	go func() {
		for {
			m, err := stream.Recv()
			if err != nil {
				recvDone <- err
				return
			}
			sess.mu.Lock()
			sess.msgs = append(sess.msgs, m)
			sess.mu.Unlock()
		}
	}()
	for {
		select {
		case m := <-sess.out:
			if err := stream.Send(m); err != nil {
				return err
			}
		case <-sess.close:
			return nil
		case err := <-recvDone:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

func (s *fakeServer) sessionCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// session waits for the n-th stream (0-based) and returns it.
func (s *fakeServer) session(t *testing.T, n int) *fakeSession {
	t.Helper()
	waitFor(t, 5*time.Second, "session "+strconv.Itoa(n)+" on "+s.id, func() bool { return s.sessionCount() > n })
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions[n]
}

func (s *fakeServer) hellos() []*relv1.Hello {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*relv1.Hello, len(s.sessions))
	for i, ss := range s.sessions {
		out[i] = ss.hello
	}
	return out
}

func (ss *fakeSession) sendDesired(gen uint64, apps ...*relv1.DesiredApp) {
	ss.out <- &relv1.ServerMessage{Kind: &relv1.ServerMessage_Desired{Desired: &relv1.DesiredState{Generation: gen, Apps: apps}}}
}

func (ss *fakeSession) messages() []*relv1.AgentMessage {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return append([]*relv1.AgentMessage(nil), ss.msgs...)
}

// reports lists every report the agent sent on this stream, in order.
func (ss *fakeSession) reports() []*relv1.AppReport {
	var out []*relv1.AppReport
	for _, m := range ss.messages() {
		out = append(out, m.GetReports().GetReports()...)
	}
	return out
}

// latest returns the last report for app, or nil.
func (ss *fakeSession) latest(app string) *relv1.AppReport {
	var last *relv1.AppReport
	for _, r := range ss.reports() {
		if r.GetApp() == app {
			last = r
		}
	}
	return last
}

func (ss *fakeSession) waitPhase(t *testing.T, app, version, phase string) *relv1.AppReport {
	t.Helper()
	var r *relv1.AppReport
	waitFor(t, 5*time.Second, app+" "+version+" "+phase, func() bool {
		r = ss.latest(app)
		return r.GetVersion() == version && r.GetPhase() == phase
	})
	return r
}

func desiredApp(app, version, rollout string) *relv1.DesiredApp {
	sum := sha256Of(app + "@" + version)
	return &relv1.DesiredApp{
		App: app, Version: version, Sha256: sum, Size: int64(len(app)) * 100,
		Urls:      []string{"http://s1.example/a/" + sum, "http://s2.example/a/" + sum},
		RolloutId: rollout,
	}
}

func sha256Of(s string) string {
	const hex = "0123456789abcdef"
	var b bytes.Buffer
	for i := 0; b.Len() < 64; i++ {
		b.WriteByte(hex[(int(s[i%len(s)])+i)%16])
	}
	return b.String()
}

// recInstaller is a NoopInstaller that records Apply calls; an app with a
// gate blocks after reporting "downloading" until the gate is closed; an app
// in fail fails.
type recInstaller struct {
	NoopInstaller
	mu        sync.Mutex
	applies   []install.Desired
	cancelled int
	gates     map[string]chan struct{}
	fail      map[string]bool
	resume    []install.Event
}

func newRecInstaller() *recInstaller {
	return &recInstaller{gates: map[string]chan struct{}{}, fail: map[string]bool{}}
}

func (r *recInstaller) Apply(ctx context.Context, d install.Desired, report func(install.Event)) error {
	r.mu.Lock()
	r.applies = append(r.applies, d)
	gate, fail := r.gates[d.App], r.fail[d.App]
	r.mu.Unlock()
	if fail {
		report(install.Event{App: d.App, Version: d.Version, Phase: install.PhaseDownloading, At: time.Now()})
		r.NoopInstaller.mu.Lock()
		if r.NoopInstaller.apps == nil {
			r.NoopInstaller.apps = map[string]install.InstalledApp{}
		}
		r.NoopInstaller.apps[d.App] = install.InstalledApp{App: d.App, Version: d.Version, Phase: install.PhaseFailed, Reason: "sha256 mismatch", Since: time.Now()}
		r.NoopInstaller.mu.Unlock()
		report(install.Event{App: d.App, Version: d.Version, Phase: install.PhaseFailed, Reason: "sha256 mismatch", At: time.Now()})
		return errors.New("sha256 mismatch")
	}
	if gate != nil {
		report(install.Event{App: d.App, Version: d.Version, Phase: install.PhaseDownloading, At: time.Now()})
		select {
		case <-gate:
		case <-ctx.Done():
			r.mu.Lock()
			r.cancelled++
			r.mu.Unlock()
			return ctx.Err()
		}
	}
	return r.NoopInstaller.Apply(ctx, d, report)
}

func (r *recInstaller) Resume(ctx context.Context, report func(install.Event)) error {
	for _, ev := range r.resume {
		report(ev)
	}
	return nil
}

// appliesOf lists the Apply calls for app.
func (r *recInstaller) appliesOf(app string) []install.Desired {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []install.Desired
	for _, d := range r.applies {
		if d.App == app {
			out = append(out, d)
		}
	}
	return out
}

func (r *recInstaller) cancels() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cancelled
}

var testFacts = &relv1.HostFacts{Hostname: "h1", Os: "linux", Platform: "debian", PlatformVersion: "13", Kernel: "6.12", Arch: "amd64", Cpus: 2, MemoryBytes: 4 << 30}

var testLoad = &relv1.Load{CpuPercent: 12.5, MemoryPercent: 40, DiskFreeBytes: 1 << 30, DiskTotalBytes: 2 << 30}

// testLogger writes to the test log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tLogWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tLogWriter struct{ t *testing.T }

func (w tLogWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// testSecurity is TLS material for id, signed by testCA.
func testSecurity(t testing.TB, id pki.Identity) transport.Security {
	t.Helper()
	id.Cluster = testCA.Cluster
	certPEM, keyPEM, err := testCA.Issue(pki.Leaf{Identity: id}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	certs, err := pki.ParseCerts(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.ParseKey(keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	b, err := transport.NewBundle([]*x509.Certificate{testCA.Cert}, certs, key)
	if err != nil {
		t.Fatal(err)
	}
	return transport.Security{M: transport.StaticMaterial(b)}
}

// agentSecurity is an agent certificate for id.
func agentSecurity(t testing.TB, id string) transport.Security {
	return testSecurity(t, pki.Identity{Kind: pki.KindAgent, ID: id})
}

// startAgent builds an agent from cfg (test facts, load and logger unless
// set) and runs it until the test ends.
func startAgent(t *testing.T, cfg Config) *Agent {
	t.Helper()
	a, _ := runAgent(t, cfg)
	return a
}

// runAgent is startAgent that also returns a function stopping the agent
// (waiting for Run to return); the test's cleanup calls it too.
func runAgent(t *testing.T, cfg Config) (*Agent, func()) {
	t.Helper()
	if cfg.NodeID == "" {
		cfg.NodeID = "node-1"
	}
	if cfg.Facts == nil {
		cfg.Facts = testFacts
	}
	if cfg.LoadFunc == nil {
		cfg.LoadFunc = func() *relv1.Load { return testLoad }
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	if cfg.Dial == nil && cfg.Security.M == nil {
		cfg.Security = agentSecurity(t, cfg.NodeID)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Error("Run did not return within 10s of cancel")
			}
		})
	}
	t.Cleanup(stop)
	return a, stop
}

// goid returns the current goroutine's id.
func goid() uint64 {
	var buf [64]byte
	n := runtime.Stack(buf[:], false)
	b := bytes.TrimPrefix(buf[:n], []byte("goroutine "))
	b = b[:bytes.IndexByte(b, ' ')]
	id, _ := strconv.ParseUint(string(b), 10, 64)
	return id
}
