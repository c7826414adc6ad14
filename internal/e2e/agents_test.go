package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// agentProc is a real rel-agent process.
type agentProc struct {
	id, dataDir, root string
	labels            string
	// token is the agent's join token file, made on its first start: the
	// agent enrols with it, then keeps its certificate in dataDir.
	token string
	// flags are extra rel-agent flags.
	flags []string
	// node, when set, is the network namespace the agent runs in.
	node *netNode
	cmd  *exec.Cmd
	log  *syncBuffer
	done chan error
}

func (a *agentProc) start(t *testing.T, servers string) {
	t.Helper()
	// Its services outlive it: stopped after it (cleanups run in reverse).
	t.Cleanup(func() { stopServices(t, a.dataDir) })
	if a.token == "" {
		a.token = filepath.Join(t.TempDir(), "join.token")
		mustRelctl(t, servers, "agent", "token", "create", "--uses", "1", "--ttl", "10m", "--description", "e2e "+a.id, "--out", a.token)
	}
	args := []string{"--node-id", a.id, "--servers", servers,
		"--labels", a.labels, "--data-dir", a.dataDir, "--install-root", a.root, "--log-level", "debug",
		"--ca-file", caFile, "--join-token-file", a.token}
	a.cmd = exec.Command(filepath.Join(binDir, "rel-agent"), append(args, a.flags...)...)
	if a.node != nil {
		a.node.wrap(a.cmd)
	}
	a.log = &syncBuffer{}
	a.cmd.Stdout, a.cmd.Stderr = a.log, a.log
	if err := a.cmd.Start(); err != nil {
		t.Fatalf("start agent %s: %v", a.id, err)
	}
	a.done = make(chan error, 1)
	go func(cmd *exec.Cmd, done chan error) { done <- cmd.Wait() }(a.cmd, a.done)
	t.Cleanup(func() {
		if a.cmd.ProcessState == nil {
			a.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-a.done:
			case <-time.After(10 * time.Second):
				a.cmd.Process.Kill()
				<-a.done
			}
		}
	})
}

func (a *agentProc) kill(t *testing.T) {
	t.Helper()
	a.cmd.Process.Kill()
	<-a.done
}

// bundle builds a release bundle of the hello sample app: the binary, a
// rel.yaml with an exec health check, and optional padding (incompressible,
// to make downloads and extraction take measurable time).
func bundle(t *testing.T, dir, version string, padding int) (path, digest string) {
	t.Helper()
	return bundleWith(t, dir, version, padding, "./hello check", "20s")
}

// bundleWith builds a hello bundle with the given exec health check and
// health deadline.
func bundleWith(t *testing.T, dir, version string, padding int, check, deadline string) (path, digest string) {
	t.Helper()
	helloBin, err := os.ReadFile(filepath.Join(binDir, "hello"))
	if err != nil {
		t.Fatal(err)
	}
	relYAML := `run: ./hello serve
health:
  exec: ` + check + `
  interval: 100ms
  timeout: 2s
  healthy_after: 300ms
  deadline: ` + deadline + `
stop_timeout: 3s
`
	var buf bytes.Buffer
	// The padding is random: compressing it would only cost time (a lot of
	// it under the race detector).
	gz, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	if padding > 0 {
		gz, _ = gzip.NewWriterLevel(&buf, gzip.NoCompression)
	}
	tw := tar.NewWriter(gz)
	add := func(name string, mode int64, data []byte) {
		tw.WriteHeader(&tar.Header{Name: name, Mode: mode, Size: int64(len(data)), Typeflag: tar.TypeReg, ModTime: time.Now()})
		tw.Write(data)
	}
	add("hello", 0o755, helloBin)
	add("rel.yaml", 0o644, []byte(relYAML))
	add("VERSION", 0o644, []byte(version+"\n"))
	if padding > 0 {
		pad := make([]byte, padding)
		rand.Read(pad)
		add("data/padding.bin", 0o644, pad)
	}
	tw.Close()
	gz.Close()
	path = filepath.Join(dir, "hello-"+version+".tar.gz")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(buf.Bytes())
	return path, hex.EncodeToString(sum[:])
}

type rolloutJSON struct {
	Rollout struct {
		ID     string `json:"id"`
		State  string `json:"state"`
		Reason string `json:"reason"`
	} `json:"rollout"`
	Hosts []struct {
		AgentID         string `json:"agent_id"`
		Phase           string `json:"phase"`
		Reason          string `json:"reason"`
		PreviousVersion string `json:"previous_version"`
		TargetVersion   string `json:"target_version"`
		CurrentVersion  string `json:"current_version"`
	} `json:"hosts"`
}

func rolloutStatus(t *testing.T, addr, id string) rolloutJSON {
	t.Helper()
	var st rolloutJSON
	out := mustRelctl(t, addr, "rollout", "status", id, "-o", "json")
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("rollout status json: %v\n%s", err, out)
	}
	return st
}

func startRollout(t *testing.T, addr, release, env string) string {
	t.Helper()
	out := mustRelctl(t, addr, "rollout", "start", release, "--env", env, "-o", "json")
	var ro struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(out), &ro); err != nil || ro.ID == "" {
		t.Fatalf("rollout start output: %v\n%s", err, out)
	}
	return ro.ID
}

func waitRollout(t *testing.T, addr, id string, timeout time.Duration) rolloutJSON {
	t.Helper()
	var st rolloutJSON
	waitFor(t, timeout, "rollout "+id+" to finish", func() bool {
		st = rolloutStatus(t, addr, id)
		return st.Rollout.State != "running"
	})
	return st
}

type agentShow struct {
	Connected bool   `json:"connected"`
	ServerID  string `json:"server_id"`
	SessionID string `json:"session_id"`
	Apps      []struct {
		App     string `json:"app"`
		Version string `json:"version"`
		Phase   string `json:"phase"`
	} `json:"apps"`
}

func showAgent(t *testing.T, addr, id string) agentShow {
	t.Helper()
	var a agentShow
	out := mustRelctl(t, addr, "agent", "show", id, "-o", "json")
	if err := json.Unmarshal([]byte(out), &a); err != nil {
		t.Fatalf("agent show json: %v\n%s", err, out)
	}
	return a
}

func answer(t *testing.T, root string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "hello", "current", "listen.addr"))
	if err != nil {
		t.Fatalf("listen.addr: %v", err)
	}
	resp, err := (&http.Client{Timeout: 2 * time.Second}).Get("http://" + strings.TrimSpace(string(b)) + "/")
	if err != nil {
		t.Fatalf("service on %s: %v", root, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return strings.TrimSpace(string(body))
}

func startCluster(t *testing.T, extra ...string) []*proc {
	t.Helper()
	ps := []*proc{newProc(t, "s1"), newProc(t, "s2"), newProc(t, "s3")}
	ps[0].start(t, append([]string{"--bootstrap"}, extra...)...)
	waitLeader(t, ps[:1], "s1 to lead")
	ps[1].start(t, append([]string{"--join", ps[0].grpc}, extra...)...)
	ps[2].start(t, append([]string{"--join", ps[0].grpc}, extra...)...)
	waitFor(t, 20*time.Second, "three members", func() bool {
		r := relctl(t, ps[0].grpc, "cluster", "members", "-o", "json")
		// Joiners are non-voters until caught up: wait for three voters.
		return r.code == 0 && strings.Count(r.stdout, `"follower"`) == 2 && strings.Count(r.stdout, `"Voter"`) == 3
	})
	return ps
}

func addrs(ps []*proc) string {
	var out []string
	for _, p := range ps {
		out = append(out, p.grpc)
	}
	return strings.Join(out, ",")
}

// TestAgentsEndToEnd: upload, rollout to three real agents, every host
// healthy with files, symlink and the service answering; a bad digest is
// never installed; the server holding an agent's stream dies and the agent
// moves within 5 s without reinstalling anything.
func TestAgentsEndToEnd(t *testing.T) {
	ps := startCluster(t, "--heartbeat-interval", "300ms", "--agent-grace", "3s")
	all := addrs(ps)
	var agents []*agentProc
	for i := 0; i < 3; i++ {
		// file:// sources are refused unless allowed: this test uses one
		// for a release whose digest is wrong.
		a := &agentProc{id: fmt.Sprintf("web-%d", i+1), dataDir: t.TempDir(), root: t.TempDir(), labels: fmt.Sprintf("env=prod,zone=z%d", i+1),
			flags: []string{"--allow-url-schemes", "https,file"}}
		a.start(t, all)
		agents = append(agents, a)
	}
	waitFor(t, 15*time.Second, "three connected agents", func() bool {
		r := relctl(t, all, "agent", "list", "-o", "json")
		return r.code == 0 && strings.Count(r.stdout, `"connected": true`) == 3
	})

	work := t.TempDir()
	path, _ := bundle(t, work, "1.0.0", 0)
	mustRelctl(t, all, "app", "create", "hello")
	mustRelctl(t, all, "env", "create", "prod", "--selector", "env=prod")
	mustRelctl(t, all, "release", "create", "hello", "1.0.0", "--artifact", path)
	id := startRollout(t, all, "hello@1.0.0", "prod")
	st := waitRollout(t, all, id, 60*time.Second)
	if st.Rollout.State != "succeeded" {
		t.Fatalf("rollout %s: %+v", id, st)
	}
	for _, a := range agents {
		target, err := os.Readlink(filepath.Join(a.root, "hello", "current"))
		if err != nil || filepath.Base(target) != "1.0.0" {
			t.Fatalf("%s: current -> %q (%v)", a.id, target, err)
		}
		if _, err := os.Stat(filepath.Join(a.root, "hello", "current", "rel.yaml")); err != nil {
			t.Fatalf("%s: release files missing: %v", a.id, err)
		}
		if got, want := answer(t, a.root), "hello from "+a.id+", version 1.0.0"; got != want {
			t.Fatalf("%s answered %q, want %q", a.id, got, want)
		}
	}

	// A release whose digest does not match its artifact is never
	// installed: the hosts report the mismatch, current stays on 1.0.0.
	bad, _ := bundle(t, work, "1.1.0", 0)
	wrong := sha256.Sum256([]byte("not the bundle"))
	mustRelctl(t, all, "release", "create", "hello", "1.1.0", "--artifact", "file://"+bad, "--sha256", hex.EncodeToString(wrong[:]))
	id2 := startRollout(t, all, "hello@1.1.0", "prod")
	st = waitRollout(t, all, id2, 60*time.Second)
	if st.Rollout.State != "failed" || !strings.Contains(st.Rollout.Reason, "digest mismatch") {
		t.Fatalf("bad-digest rollout: %+v", st)
	}
	for _, a := range agents {
		target, _ := os.Readlink(filepath.Join(a.root, "hello", "current"))
		if filepath.Base(target) != "1.0.0" {
			t.Fatalf("%s: current -> %s after a bad digest", a.id, target)
		}
		if _, err := os.Stat(filepath.Join(a.root, "hello", "releases", "1.1.0")); !os.IsNotExist(err) {
			t.Fatalf("%s: unverified release extracted: %v", a.id, err)
		}
	}

	// Kill the server holding web-1's stream: web-1 is on another server
	// within 5 s and nothing is reinstalled (same service process, same
	// release directory).
	before := showAgent(t, all, "web-1")
	// The service listens on a port it picks at start: the same address
	// afterwards means the same process, not restarted.
	addrBefore := listenAddr(agents[0].root)
	relDir := filepath.Join(agents[0].root, "hello", "releases", "1.0.0")
	fiBefore, _ := os.Stat(relDir)
	var victim *proc
	for _, p := range ps {
		if p.id == before.ServerID {
			victim = p
		}
	}
	if victim == nil {
		t.Fatalf("web-1's server %q not found", before.ServerID)
	}
	victim.signal(t, syscall.SIGKILL)
	killed := time.Now()
	var others []*proc
	for _, p := range ps {
		if p != victim {
			others = append(others, p)
		}
	}
	rest := addrs(others)
	var moved time.Duration
	waitFor(t, 10*time.Second, "web-1 on another server", func() bool {
		r := relctl(t, rest, "agent", "show", "web-1", "-o", "json")
		if r.code != 0 {
			return false
		}
		var a agentShow
		json.Unmarshal([]byte(r.stdout), &a)
		if a.Connected && a.ServerID != victim.id && a.SessionID != before.SessionID {
			moved = time.Since(killed)
			return true
		}
		return false
	})
	t.Logf("web-1 moved from %s in %s (the leader may have changed too)", victim.id, moved.Round(time.Millisecond))
	if moved > 5*time.Second {
		t.Errorf("agent took %s to move to another server, want within 5s", moved)
	}
	if got := answer(t, agents[0].root); got != "hello from web-1, version 1.0.0" {
		t.Fatalf("after failover web-1 answers %q", got)
	}
	if got := listenAddr(agents[0].root); addrBefore == "" || got != addrBefore {
		t.Fatalf("web-1's service was restarted after failover: listening on %q, was %q", got, addrBefore)
	}
	fiAfter, _ := os.Stat(relDir)
	if !os.SameFile(fiBefore, fiAfter) || !fiAfter.ModTime().Equal(fiBefore.ModTime()) {
		t.Fatalf("release dir of web-1 was recreated after failover")
	}
	if strings.Count(agents[0].log.String(), "phase=downloading") > 2 {
		t.Errorf("web-1 downloaded again after failover:\n%s", agents[0].log)
	}
}

// TestAgentKilledMidInstall: kill -9 an agent while it downloads and again
// while it extracts; restarted, it converges and current never points at a
// partial release.
func TestAgentKilledMidInstall(t *testing.T) {
	ps := startCluster(t, "--heartbeat-interval", "300ms", "--agent-grace", "10s")
	all := addrs(ps)
	a := &agentProc{id: "web-1", dataDir: t.TempDir(), root: t.TempDir(), labels: "env=prod"}
	a.start(t, all)
	waitFor(t, 15*time.Second, "the agent", func() bool {
		r := relctl(t, all, "agent", "list", "-o", "json")
		return r.code == 0 && strings.Count(r.stdout, `"connected": true`) == 1
	})
	work := t.TempDir()
	mustRelctl(t, all, "app", "create", "hello")
	mustRelctl(t, all, "env", "create", "prod", "--selector", "env=prod")

	// Checks that current, whenever it exists, names a complete release.
	checkCurrent := func() {
		target, err := os.Readlink(filepath.Join(a.root, "hello", "current"))
		if err != nil {
			return
		}
		dir := filepath.Join(a.root, "hello", target)
		if !strings.HasPrefix(target, "/") {
			dir = filepath.Join(a.root, "hello", target)
		}
		if _, err := os.Stat(filepath.Join(dir, "rel.yaml")); err != nil {
			t.Fatalf("current -> %s which is not a complete release: %v", target, err)
		}
	}

	for i, stage := range []struct {
		version string
		// when reports whether the agent is at the point to kill it.
		when func() bool
		what string
	}{
		{"1.0.0", func() bool {
			parts, _ := filepath.Glob(filepath.Join(a.dataDir, "downloads", "*.part"))
			for _, p := range parts {
				if fi, err := os.Stat(p); err == nil && fi.Size() > 0 {
					return true
				}
			}
			return false
		}, "mid-download"},
		{"2.0.0", func() bool {
			tmps, _ := filepath.Glob(filepath.Join(a.root, "hello", "releases", ".tmp-*"))
			return len(tmps) > 0
		}, "mid-install"},
	} {
		path, _ := bundle(t, work, stage.version, 64<<20)
		mustRelctl(t, all, "release", "create", "hello", stage.version, "--artifact", path, "--upload-timeout", "5m")
		id := startRollout(t, all, "hello@"+stage.version, "prod")
		deadline := time.Now().Add(60 * time.Second)
		for !stage.when() {
			checkCurrent()
			if time.Now().After(deadline) {
				t.Fatalf("stage %d: never saw the agent %s", i, stage.what)
			}
			time.Sleep(2 * time.Millisecond)
		}
		a.kill(t)
		t.Logf("killed the agent %s", stage.what)
		checkCurrent()
		a.start(t, all)
		st := waitRollout(t, all, id, 120*time.Second)
		if st.Rollout.State != "succeeded" {
			t.Fatalf("after kill %s the rollout ended %+v\nagent log:\n%s", stage.what, st, tail(a.log.String(), 3000))
		}
		checkCurrent()
		target, _ := os.Readlink(filepath.Join(a.root, "hello", "current"))
		if filepath.Base(target) != stage.version {
			t.Fatalf("current -> %s, want %s", target, stage.version)
		}
		if got := answer(t, a.root); got != "hello from web-1, version "+stage.version {
			t.Fatalf("service answers %q", got)
		}
		tmps, _ := filepath.Glob(filepath.Join(a.root, "hello", "releases", ".tmp-*"))
		if len(tmps) != 0 {
			t.Fatalf("partial extractions left: %v", tmps)
		}
		// The killed agent's service did not outlive it next to the new one.
		if n := processesUnder(a.root); n != 1 {
			t.Fatalf("%d processes run under %s after the restart, want 1 (the service)", n, a.root)
		}
	}
}

// processesUnder counts the processes whose working directory is under dir.
func processesUnder(dir string) int {
	entries, _ := os.ReadDir("/proc")
	n := 0
	for _, e := range entries {
		cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
		if err == nil && strings.HasPrefix(cwd, dir+"/") {
			n++
		}
	}
	return n
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
