package install

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// artifactServer serves artifacts over real HTTP on loopback and records
// every request, with faults to inject per path.
type artifactServer struct {
	*httptest.Server

	mu          sync.Mutex
	files       map[string][]byte
	requests    []request
	cutOnce     map[string]int64 // the next full-body request gets this many bytes, then the connection drops
	ignoreRange map[string]bool  // answer 200 with the whole file (chunked) even to a Range request
	status      map[string]int   // always answer this status
}

type request struct{ path, rangeHeader string }

func newArtifactServer(t *testing.T) *artifactServer {
	s := &artifactServer{files: map[string][]byte{}, cutOnce: map[string]int64{}, ignoreRange: map[string]bool{}, status: map[string]int{}}
	s.Server = httptest.NewServer(s)
	t.Cleanup(s.Close)
	return s
}

// add serves data at /name and returns its URL.
func (s *artifactServer) add(name string, data []byte) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.files["/"+name] = data
	return s.URL + "/" + name
}

func (s *artifactServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	rng := r.Header.Get("Range")
	s.requests = append(s.requests, request{r.URL.Path, rng})
	data, ok := s.files[r.URL.Path]
	cut, hasCut := s.cutOnce[r.URL.Path]
	if hasCut && rng == "" {
		delete(s.cutOnce, r.URL.Path)
	}
	st := s.status[r.URL.Path]
	ignore := s.ignoreRange[r.URL.Path]
	s.mu.Unlock()

	switch {
	case st != 0:
		http.Error(w, "injected", st)
	case !ok:
		http.NotFound(w, r)
	case hasCut && rng == "":
		// Promise the whole file, send part of it, hang up.
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic(err)
		}
		fmt.Fprintf(buf, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nContent-Type: application/octet-stream\r\n\r\n", len(data))
		buf.Write(data[:cut])
		buf.Flush()
		conn.Close()
	case ignore:
		// Chunked, without Content-Length: the size shows only as it
		// streams.
		w.Write(data[:1])
		http.NewResponseController(w).Flush()
		w.Write(data[1:])
	default:
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
	}
}

func (s *artifactServer) requestsFor(name string) []request {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []request
	for _, r := range s.requests {
		if r.path == "/"+name {
			out = append(out, r)
		}
	}
	return out
}

func (s *artifactServer) total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.requests)
}

// recorder collects Events and checks that report is never called
// concurrently for one app.
type recorder struct {
	t      *testing.T
	mu     sync.Mutex
	events []Event
	busy   map[string]bool
}

func newRecorder(t *testing.T) *recorder { return &recorder{t: t, busy: map[string]bool{}} }

func (r *recorder) report(e Event) {
	r.mu.Lock()
	if r.busy[e.App] {
		r.t.Errorf("report called concurrently for %s", e.App)
	}
	r.busy[e.App] = true
	r.events = append(r.events, e)
	r.mu.Unlock()
	time.Sleep(time.Millisecond) // widen the window a concurrent call would hit
	r.mu.Lock()
	r.busy[e.App] = false
	r.mu.Unlock()
}

// take returns the events so far and forgets them.
func (r *recorder) take() []Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	ev := r.events
	r.events = nil
	return ev
}

func phases(events []Event) []Phase {
	var out []Phase
	for _, e := range events {
		out = append(out, e.Phase)
	}
	return out
}

func checkPhases(t *testing.T, events []Event, want ...Phase) {
	t.Helper()
	if got := phases(events); !slices.Equal(got, want) {
		for _, e := range events {
			t.Logf("event: %s %s prev=%q %s %q", e.App, e.Version, e.PreviousVersion, e.Phase, e.Reason)
		}
		t.Fatalf("phases %v, want %v", got, want)
	}
}

type testEnv struct {
	t      *testing.T
	srv    *artifactServer
	cfg    Config
	host   *Host
	rec    *recorder
	hooks  string // file the hooks of the test bundles append to
	closed bool
}

func newTestEnv(t *testing.T) *testEnv { return newTestEnvWith(t, nil) }

// newTestEnvWith is newTestEnv with the Host's Config changed by mod
// before it opens.
func newTestEnvWith(t *testing.T, mod func(*Config)) *testEnv {
	base := t.TempDir()
	e := &testEnv{t: t, srv: newArtifactServer(t), rec: newRecorder(t), hooks: filepath.Join(base, "hooks.log")}
	e.cfg = Config{
		Root:        filepath.Join(base, "root"),
		DataDir:     filepath.Join(base, "data"),
		NodeID:      "node-7",
		Keep:        3,
		HookTimeout: 10 * time.Second,
		HTTPClient:  &http.Client{Transport: &http.Transport{}},
		Logger:      testLogger(),
		// The test servers are plain HTTP on loopback, which the default
		// policy refuses (policy_test.go checks that).
		AllowedSchemes: []string{"https", "http", "file"},
		AllowFetchFrom: loopback,
	}
	if mod != nil {
		mod(&e.cfg)
	}
	e.open()
	t.Cleanup(e.shutdown)
	return e
}

func testLogger() *slog.Logger {
	if os.Getenv("REL_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return nil
}

// loopback allows fetching from the test servers.
var loopback = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}

// open starts a Host on the env's dirs (again, after close: an agent
// restart).
func (e *testEnv) open() {
	h, err := New(e.cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	h.backoff = 20 * time.Millisecond
	h.restartBackoff = 50 * time.Millisecond
	e.host, e.closed = h, false
}

// shutdown stops the test's services, which outlive a closed Host as they
// outlive an agent, and closes the Host; nothing may be left running under
// Root.
func (e *testEnv) shutdown() {
	if e.closed {
		h, err := New(e.cfg)
		if err != nil {
			e.t.Errorf("reopening the host to stop its services: %v", err)
			return
		}
		e.host, e.closed = h, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.host.StopServices(ctx); err != nil {
		e.t.Errorf("StopServices: %v", err)
	}
	e.close()
	if pids := processesUnder(e.cfg.Root); len(pids) > 0 {
		e.t.Errorf("processes left running under %s: %v", e.cfg.Root, pids)
	}
}

// processesUnder lists the live processes working inside dir.
func processesUnder(dir string) []int {
	entries, _ := os.ReadDir("/proc")
	var out []int
	for _, en := range entries {
		pid, err := strconv.Atoi(en.Name())
		if err != nil {
			continue
		}
		if st, err := readProcStat(pid); err != nil || st.ended() {
			continue
		}
		cwd, err := os.Readlink(filepath.Join("/proc", en.Name(), "cwd"))
		if err == nil && (cwd == dir || strings.HasPrefix(cwd, dir+"/")) {
			out = append(out, pid)
		}
	}
	return out
}

func (e *testEnv) close() {
	if !e.closed {
		e.closed = true
		if err := e.host.Close(); err != nil {
			e.t.Error(err)
		}
	}
}

func (e *testEnv) apply(d Desired) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return e.host.Apply(ctx, d, e.rec.report)
}

// publish serves a bundle for version and returns its Desired.
func (e *testEnv) publish(app, version string, data []byte) Desired {
	name := app + "-" + version + ".tar.gz"
	return Desired{App: app, Version: version, URLs: []string{e.srv.add(name, data)}, SHA256: sha(data), Size: int64(len(data))}
}

func (e *testEnv) lay(app string) layout { return layout{e.cfg.Root, app} }

func (e *testEnv) current(app string) string {
	e.t.Helper()
	v, err := e.lay(app).current()
	if err != nil {
		e.t.Fatal(err)
	}
	return v
}

func (e *testEnv) hookLines() []string {
	b, err := os.ReadFile(e.hooks)
	if err != nil && !os.IsNotExist(err) {
		e.t.Fatal(err)
	}
	var out []string
	for _, l := range bytes.Split(bytes.TrimSpace(b), []byte("\n")) {
		if len(l) > 0 {
			out = append(out, string(l))
		}
	}
	return out
}

// serverScript is a bundle's long-running process: it marks itself ready,
// and on SIGTERM says so in its log and removes the mark.
const serverScript = `#!/bin/sh
echo "server $REL_VERSION up greeting=$GREETING node=$REL_NODE_ID"
trap 'echo "server $REL_VERSION got TERM"; rm -f ready; exit 0' TERM
touch ready
while :; do sleep 0.05; done
`

// relYAML is a rel.yaml with every hook (each logging a line tagged with
// tag, the release it belongs to), a supervised run command and an exec
// health check.
func relYAML(hookLog, tag string) string {
	return fmt.Sprintf(`hooks:
  before_install: echo "before_install of=%[2]s v=$REL_VERSION prev=$REL_PREVIOUS_VERSION dir=$PWD node=$REL_NODE_ID" >> "$HOOKLOG"
  after_install: echo "after_install of=%[2]s v=$REL_VERSION dir=$PWD" >> "$HOOKLOG"
  stop:
    command: echo "stop of=%[2]s v=$REL_VERSION prev=$REL_PREVIOUS_VERSION dir=$PWD" >> "$HOOKLOG"
    timeout: 5s
  start: echo "start of=%[2]s v=$REL_VERSION dir=$PWD" >> "$HOOKLOG"
  validate: test -f VERSION && echo "validate of=%[2]s" >> "$HOOKLOG"
run: exec ./bin/server
health:
  exec: test -f ready
  interval: 20ms
  timeout: 1s
  healthy_after: 100ms
  deadline: 10s
env:
  HOOKLOG: %[1]s
  GREETING: "hello world"
stop_timeout: 2s
`, hookLog, tag)
}

// bundle is a tar.gz release with bin/server, VERSION and the given
// rel.yaml ("" for none).
func bundle(t *testing.T, version, spec string, extra ...ent) []byte {
	entries := []ent{dir("./"), dir("./bin/"), exe("./bin/server", serverScript), file("./VERSION", version+"\n")}
	if spec != "" {
		entries = append(entries, file("./rel.yaml", spec))
	}
	return gzipBytes(t, makeTar(t, append(entries, extra...)...))
}

// stdBundle is bundle with relYAML tagged with the version.
func (e *testEnv) stdBundle(version string) []byte {
	return bundle(e.t, version, relYAML(e.hooks, version))
}
