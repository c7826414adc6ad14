package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestAgentRestartKeepsService: an agent killed with SIGKILL and started
// again leaves its service running: the same process (pid and start time),
// adopted by the new agent, and a client polling the service every 10 ms
// through the kill, the restart and the reconnection sees no failed
// request. A new rollout afterwards still replaces the service.
func TestAgentRestartKeepsService(t *testing.T) {
	s := newProc(t, "s1")
	s.start(t, "--bootstrap", "--heartbeat-interval", "300ms", "--agent-grace", "3s")
	waitLeader(t, []*proc{s}, "s1 to lead")
	addr := s.grpc
	a := &agentProc{id: "web-1", dataDir: t.TempDir(), root: t.TempDir(), labels: "env=prod"}
	a.start(t, addr)
	waitFor(t, 15*time.Second, "the agent", func() bool {
		r := relctl(t, addr, "agent", "list", "-o", "json")
		return r.code == 0 && strings.Count(r.stdout, `"connected": true`) == 1
	})

	work := t.TempDir()
	mustRelctl(t, addr, "app", "create", "hello")
	mustRelctl(t, addr, "env", "create", "prod", "--selector", "env=prod")
	for _, v := range []string{"1.0.0", "1.1.0"} {
		path, _ := bundle(t, work, v, 0)
		mustRelctl(t, addr, "release", "create", "hello", v, "--artifact", path)
	}
	if st := waitRollout(t, addr, startRollout(t, addr, "hello@1.0.0", "prod"), 60*time.Second); st.Rollout.State != "succeeded" {
		t.Fatalf("rollout of 1.0.0: %+v", st)
	}
	// The service, as /proc shows it: the leader of its process group
	// working in the release dir.
	relDir := filepath.Join(a.root, "hello", "releases", "1.0.0")
	svc := serviceIn(t, relDir)
	runLog := filepath.Join(relDir, ".rel", "run.log")
	logBefore, _ := os.ReadFile(runLog)

	// The client: a new connection every 10 ms, so a listener that is
	// down for a moment (or a service restarted on another port) fails.
	target := "http://" + listenAddr(a.root) + "/"
	want := "hello from web-1, version 1.0.0"
	p := &poller{url: target, want: want, stop: make(chan struct{}), done: make(chan struct{})}
	go p.run()
	waitFor(t, 5*time.Second, "50 polls", func() bool { return p.count() >= 50 })

	a.kill(t)
	killed := time.Now()
	if !svc.running() {
		t.Fatal("the service died with its agent")
	}
	n0 := p.count()
	waitFor(t, 3*time.Second, "30 polls without an agent", func() bool { return p.count() >= n0+30 })
	a.start(t, addr)
	// Adopted and verified again by the new agent, which reconnected.
	waitFor(t, 30*time.Second, "the new agent to adopt and verify the service", func() bool {
		log := a.log.String()
		return strings.Contains(log, "adopted the run process an earlier agent started") && strings.Contains(log, "phase=healthy")
	})
	waitFor(t, 15*time.Second, "the new agent to be connected with hello healthy", func() bool {
		r := relctl(t, addr, "agent", "show", "web-1", "-o", "json")
		var sh agentShow
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &sh) != nil || !sh.Connected {
			return false
		}
		for _, app := range sh.Apps {
			if app.App == "hello" && app.Version == "1.0.0" && app.Phase == "healthy" {
				return true
			}
		}
		return false
	})
	readopted := time.Since(killed)
	n1 := p.count()
	waitFor(t, 5*time.Second, "100 more polls", func() bool { return p.count() >= n1+100 })
	close(p.stop)
	<-p.done

	polls, failures := p.result()
	t.Logf("%d polls over %s, %d failed; the agent was killed, restarted, adopted pid %d and verified it again in %s",
		polls, p.elapsed().Round(time.Millisecond), len(failures), svc.PID, readopted.Round(time.Millisecond))
	if len(failures) > 0 {
		t.Errorf("%d of %d requests failed through the agent's restart, first: %s", len(failures), polls, failures[0])
	}
	// The same process, and the new agent's record says so.
	if after := serviceIn(t, relDir); after != svc {
		t.Errorf("service after the restart %+v, want the same process as %+v", after, svc)
	}
	if rec := recordedService(t, a.dataDir, "hello"); rec.PID != svc.PID || rec.PGID != svc.PID || rec.StartTicks != svc.StartTicks || rec.Release != "1.0.0" {
		t.Errorf("recorded service %+v, want %+v", rec, svc)
	}
	if logAfter, _ := os.ReadFile(runLog); string(logAfter) != string(logBefore) {
		t.Errorf("the service was restarted: run.log went on with %q", strings.TrimPrefix(string(logAfter), string(logBefore)))
	}

	// A new release still replaces the adopted service.
	if st := waitRollout(t, addr, startRollout(t, addr, "hello@1.1.0", "prod"), 60*time.Second); st.Rollout.State != "succeeded" {
		t.Fatalf("rollout of 1.1.0: %+v", st)
	}
	waitFor(t, 10*time.Second, "the adopted 1.0.0 process to end", func() bool { return !svc.running() })
	if next := recordedService(t, a.dataDir, "hello"); next.PID == svc.PID || next.Release != "1.1.0" || !next.running() {
		t.Errorf("service after the 1.1.0 rollout: %+v", next)
	}
	if got := answer(t, a.root); got != "hello from web-1, version 1.1.0" {
		t.Errorf("service answers %q", got)
	}
}

// poller GETs url every 10 ms on a new connection and counts the answers
// that are not a 200 with the expected body.
type poller struct {
	url, want  string
	stop, done chan struct{}

	mu       sync.Mutex
	started  time.Time
	last     time.Time
	polls    int
	failures []string
}

func (p *poller) run() {
	defer close(p.done)
	client := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	defer client.CloseIdleConnections()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	p.mu.Lock()
	p.started = time.Now()
	p.mu.Unlock()
	for {
		select {
		case <-p.stop:
			return
		case <-tick.C:
		}
		err := p.get(client)
		p.mu.Lock()
		p.polls++
		p.last = time.Now()
		if err != nil {
			p.failures = append(p.failures, fmt.Sprintf("%s: %v", time.Now().Format("15:04:05.000"), err))
		}
		p.mu.Unlock()
	}
}

func (p *poller) get(client *http.Client) error {
	resp, err := client.Get(p.url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != p.want {
		return fmt.Errorf("%s %q", resp.Status, body)
	}
	return nil
}

func (p *poller) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.polls
}

func (p *poller) result() (int, []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.polls, p.failures
}

func (p *poller) elapsed() time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.last.Sub(p.started)
}

// serviceJSON is a run process as an agent records it in
// <data-dir>/state.json.
type serviceJSON struct {
	Release    string `json:"release"`
	PID        int    `json:"pid"`
	PGID       int    `json:"pgid"`
	StartTicks uint64 `json:"start_ticks"`
	BootID     string `json:"boot_id"`
}

// running reports whether the recorded process still runs: its pid is
// held by a process of the same start time that is not a zombie (init may
// never reap a service whose agent died).
func (s serviceJSON) running() bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(s.PID) + "/stat")
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 19 && f[0] != "Z" && f[0] != "X" && f[19] == strconv.FormatUint(s.StartTicks, 10)
}

// serviceIn finds the running process that leads its process group and
// works in dir.
func serviceIn(t *testing.T, dir string) serviceJSON {
	t.Helper()
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cwd, _ := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil || cwd != dir {
			continue
		}
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) > 19 && f[2] == e.Name() {
			start, _ := strconv.ParseUint(f[19], 10, 64)
			return serviceJSON{PID: pid, PGID: pid, StartTicks: start}
		}
	}
	t.Fatalf("no process leading its group works in %s", dir)
	return serviceJSON{}
}

func readServices(dataDir string) (map[string]serviceJSON, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, "state.json"))
	if err != nil {
		return nil, err
	}
	var st struct {
		Apps map[string]struct {
			Service *serviceJSON `json:"service"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, err
	}
	out := map[string]serviceJSON{}
	for app, r := range st.Apps {
		if r.Service != nil {
			out[app] = *r.Service
		}
	}
	return out, nil
}

func recordedService(t *testing.T, dataDir, app string) serviceJSON {
	t.Helper()
	svcs, err := readServices(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	s, ok := svcs[app]
	if !ok {
		t.Fatalf("no service recorded for %s in %s", app, dataDir)
	}
	return s
}

// stopServices ends the services an agent recorded: they outlive the agent
// (a stopped agent leaves them running for the next one to adopt), so a
// test that started an agent stops them when it ends. SIGTERM to the
// process group, SIGKILL after 5 s.
func stopServices(t *testing.T, dataDir string) {
	svcs, err := readServices(dataDir)
	if err != nil {
		return // no state.json: the agent never installed anything
	}
	for app, s := range svcs {
		if !s.running() || s.PGID <= 1 {
			continue
		}
		syscall.Kill(-s.PGID, syscall.SIGTERM)
		deadline := time.Now().Add(5 * time.Second)
		for s.running() && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		syscall.Kill(-s.PGID, syscall.SIGKILL)
		for deadline := time.Now().Add(5 * time.Second); s.running(); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Errorf("the service of %s (pid %d) survived SIGKILL", app, s.PID)
				break
			}
		}
	}
}
