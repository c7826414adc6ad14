// Package e2e runs the real binaries: three rel-server processes on loopback
// driven by relctl, as a user would from the README.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var binDir string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(0)
	}
	dir, err := os.MkdirTemp("", "rel-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	for name, pkg := range map[string]string{"rel-server": "./cmd/server", "relctl": "./cmd/relctl", "rel-agent": "./cmd/agent", "hello": "./examples/hello"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, name), pkg)
		cmd.Dir = filepath.Join("..", "..")
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", name, err, out)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type proc struct {
	id, grpc, raft, http, dir string
	cmd                       *exec.Cmd
	log                       *syncBuffer
	done                      chan error
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func newProc(t *testing.T, id string) *proc {
	return &proc{id: id, grpc: freePort(t), raft: freePort(t), http: freePort(t), dir: t.TempDir()}
}

func (p *proc) start(t *testing.T, extra ...string) {
	t.Helper()
	args := append([]string{"--node-id", p.id, "--data-dir", p.dir, "--grpc-addr", p.grpc, "--raft-addr", p.raft, "--http-addr", p.http}, extra...)
	p.cmd = exec.Command(filepath.Join(binDir, "rel-server"), args...)
	p.log = &syncBuffer{}
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", p.id, err)
	}
	p.done = make(chan error, 1)
	go func(cmd *exec.Cmd, done chan error) { done <- cmd.Wait() }(p.cmd, p.done)
	t.Cleanup(func() {
		if p.cmd != nil && p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
			<-p.done
		}
	})
}

func (p *proc) signal(t *testing.T, sig syscall.Signal) error {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %s: %v", p.id, err)
	}
	select {
	case err := <-p.done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not exit after %v; log:\n%s", p.id, sig, p.log)
		return nil
	}
}

// syncBuffer collects a process's output: exec copies into it from its own
// goroutine while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type health struct {
	NodeID       string `json:"node_id"`
	Role         string `json:"role"`
	LeaderID     string `json:"leader_id"`
	AppliedIndex uint64 `json:"applied_index"`
}

func (p *proc) health() (health, int) {
	var h health
	c := http.Client{Timeout: time.Second}
	resp, err := c.Get("http://" + p.http + "/v1/health")
	if err != nil {
		return h, 0
	}
	defer resp.Body.Close()
	_ = json.NewDecoder(resp.Body).Decode(&h)
	return h, resp.StatusCode
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type result struct {
	code           int
	stdout, stderr string
}

func relctl(t *testing.T, addr string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "relctl"), args...)
	cmd.Env = append(os.Environ(), "REL_ADDR="+addr)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run relctl: %v", err)
	}
	return result{code, out.String(), errb.String()}
}

func mustRelctl(t *testing.T, addr string, args ...string) string {
	t.Helper()
	r := relctl(t, addr, args...)
	if r.code != 0 {
		t.Fatalf("relctl %s: exit %d: %s", strings.Join(args, " "), r.code, r.stderr)
	}
	return r.stdout
}

func leaderOf(ps []*proc) *proc {
	for _, p := range ps {
		if p.cmd == nil || p.cmd.ProcessState != nil {
			continue
		}
		if h, code := p.health(); code == 200 && h.Role == "leader" {
			return p
		}
	}
	return nil
}

const sum = "0883fd2f7cd5262a98665f210e32d54a27e1293fba0fd6e16839c7388b95151e"

// TestThreeProcessCluster: real processes, SIGKILL of the leader, restart,
// and relctl against all of it.
func TestThreeProcessCluster(t *testing.T) {
	ps := []*proc{newProc(t, "s1"), newProc(t, "s2"), newProc(t, "s3")}
	ps[0].start(t, "--bootstrap")
	waitFor(t, 15*time.Second, "s1 to lead", func() bool { return leaderOf(ps[:1]) != nil })
	ps[1].start(t, "--join", ps[0].grpc)
	ps[2].start(t, "--join", ps[0].grpc+","+ps[1].grpc)
	waitFor(t, 20*time.Second, "three members", func() bool {
		r := relctl(t, ps[0].grpc, "cluster", "members", "-o", "json")
		return r.code == 0 && strings.Count(r.stdout, `"id"`) == 3 && strings.Count(r.stdout, `"follower"`) == 2
	})

	follower := ps[1].grpc
	mustRelctl(t, follower, "app", "create", "web", "--description", "storefront")
	mustRelctl(t, follower, "env", "create", "prod", "--selector", "env=prod")
	for i := 0; i < 20; i++ {
		mustRelctl(t, follower, "release", "create", "web", fmt.Sprintf("1.%d.0", i), "--artifact", "https://a.example.com/web.tgz", "--sha256", sum)
	}

	old := leaderOf(ps)
	if err := old.signal(t, syscall.SIGKILL); err == nil {
		t.Fatalf("SIGKILL'd leader exited cleanly?")
	}
	killed := time.Now()
	var survivors []*proc
	for _, p := range ps {
		if p != old {
			survivors = append(survivors, p)
		}
	}
	waitFor(t, 10*time.Second, "a new leader", func() bool { return leaderOf(survivors) != nil })
	t.Logf("new leader %s after %s", leaderOf(survivors).id, time.Since(killed).Round(time.Millisecond))

	// relctl skips the dead address at the front of the list.
	addrs := old.grpc + "," + survivors[0].grpc + "," + survivors[1].grpc
	mustRelctl(t, addrs, "release", "create", "web", "2.0.0", "--artifact", "https://a.example.com/web.tgz", "--sha256", sum)

	old.start(t)
	nl := leaderOf(survivors)
	target, _ := nl.health()
	waitFor(t, 20*time.Second, "the old leader to catch up", func() bool {
		h, code := old.health()
		return code == 200 && h.AppliedIndex >= target.AppliedIndex
	})
	var lists []string
	for _, p := range ps {
		lists = append(lists, mustRelctl(t, p.grpc, "release", "list", "web", "-o", "json"))
	}
	if strings.Count(lists[0], `"version"`) != 21 {
		t.Fatalf("want 21 releases, got:\n%s", lists[0])
	}
	for i := range lists {
		if lists[i] != lists[0] {
			t.Fatalf("%s lists differently from %s:\n%s\n---\n%s", ps[i].id, ps[0].id, lists[i], lists[0])
		}
	}

	// Graceful stop: exit 0 on SIGTERM.
	for _, p := range ps {
		if err := p.signal(t, syscall.SIGTERM); err != nil {
			t.Errorf("%s exited with %v after SIGTERM; log:\n%s", p.id, err, p.log)
		}
	}
}

// TestRelctlErrors: every failure is one line on stderr and a documented
// exit code.
func TestRelctlErrors(t *testing.T) {
	p := newProc(t, "s1")
	p.start(t, "--bootstrap")
	waitFor(t, 15*time.Second, "a leader", func() bool { return leaderOf([]*proc{p}) != nil })
	mustRelctl(t, p.grpc, "app", "create", "web")
	dead := freePort(t)

	tests := []struct {
		name string
		addr string
		args []string
		code int
		msg  string
	}{
		{"duplicate app", p.grpc, []string{"app", "create", "web"}, 1, `relctl: app "web" already exists (AlreadyExists)`},
		{"bad name", p.grpc, []string{"app", "create", "Web!"}, 1, `(InvalidArgument)`},
		{"unknown app", p.grpc, []string{"release", "create", "nope", "1.0.0", "--artifact", "https://a.example.com/a", "--sha256", sum}, 1, `app "nope" not found`},
		{"bad sha", p.grpc, []string{"release", "create", "web", "1.0.0", "--artifact", "https://a.example.com/a", "--sha256", "xyz"}, 1, `sha256 "xyz" is not 64 hex digits`},
		{"bad url", p.grpc, []string{"release", "create", "web", "1.0.0", "--artifact", "gopher://a/a", "--sha256", sum}, 1, `scheme "gopher" is not supported`},
		{"show unknown", p.grpc, []string{"release", "show", "web@9.9.9"}, 1, "release web@9.9.9 not found (NotFound)"},
		{"unknown flag", p.grpc, []string{"app", "list", "--bogus"}, 2, "unknown flag: --bogus"},
		{"missing @", p.grpc, []string{"release", "show", "web"}, 2, "APP@VERSION"},
		{"bad selector", p.grpc, []string{"env", "create", "qa", "--selector", "novalue"}, 2, "novalue"},
		{"no server", dead, []string{"app", "list"}, 3, dead},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := relctl(t, tt.addr, tt.args...)
			if r.code != tt.code {
				t.Fatalf("exit %d, want %d; stderr: %s", r.code, tt.code, r.stderr)
			}
			lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
			if len(lines) != 1 {
				t.Fatalf("stderr has %d lines, want 1:\n%s", len(lines), r.stderr)
			}
			if !strings.Contains(lines[0], tt.msg) {
				t.Fatalf("stderr %q does not contain %q", lines[0], tt.msg)
			}
		})
	}
	// Nothing was half-written: still one app, no releases.
	if out := mustRelctl(t, p.grpc, "release", "list", "-o", "json"); strings.Contains(out, `"version"`) {
		t.Fatalf("bad input left releases behind: %s", out)
	}
}

// TestServerFlags: rel-server refuses bad configurations with one clear line.
func TestServerFlags(t *testing.T) {
	dir := t.TempDir()
	run := func(args ...string) (int, string) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, filepath.Join(binDir, "rel-server"), args...)
		out, err := cmd.CombinedOutput()
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), string(out)
		}
		return 0, string(out)
	}
	tests := []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"bootstrap and join", []string{"--node-id", "a", "--data-dir", dir, "--bootstrap", "--join", "127.0.0.1:1"}, 1, "--bootstrap and --join together"},
		{"no data dir", []string{"--node-id", "a"}, 1, "--data-dir is empty"},
		{"bad node id", []string{"--node-id", "a b", "--data-dir", dir}, 1, `--node-id "a b"`},
		{"bad log level", []string{"--log-level", "loud"}, 2, `--log-level "loud"`},
		{"unknown flag", []string{"--frobnicate"}, 2, "flag provided but not defined: -frobnicate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out := run(tt.args...)
			if code != tt.code || !strings.Contains(out, tt.msg) {
				t.Fatalf("exit %d output %q; want exit %d containing %q", code, out, tt.code, tt.msg)
			}
		})
	}

	// A data dir belongs to the node that created it.
	p := newProc(t, "owner")
	p.start(t, "--bootstrap")
	waitFor(t, 15*time.Second, "a leader", func() bool { return leaderOf([]*proc{p}) != nil })
	if err := p.signal(t, syscall.SIGTERM); err != nil {
		t.Fatalf("graceful stop: %v\n%s", err, p.log)
	}
	code, out := run("--node-id", "intruder", "--data-dir", p.dir, "--grpc-addr", freePort(t), "--raft-addr", freePort(t), "--http-addr", freePort(t))
	if code != 1 || !strings.Contains(out, `belongs to node "owner", not "intruder"`) {
		t.Fatalf("foreign data dir: exit %d %q", code, out)
	}
}

// TestDevMode: --dev needs nothing else and says where it listens.
func TestDevMode(t *testing.T) {
	p := &proc{id: "dev", grpc: freePort(t), raft: freePort(t), http: freePort(t)}
	p.cmd = exec.Command(filepath.Join(binDir, "rel-server"), "--dev", "--grpc-addr", p.grpc, "--raft-addr", p.raft, "--http-addr", p.http)
	p.log = &syncBuffer{}
	var stdout bytes.Buffer
	p.cmd.Stdout, p.cmd.Stderr = &stdout, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.done = make(chan error, 1)
	go func() { p.done <- p.cmd.Wait() }()
	waitFor(t, 15*time.Second, "the dev server to lead", func() bool { return leaderOf([]*proc{p}) != nil })
	mustRelctl(t, p.grpc, "app", "create", "demo")
	if err := p.signal(t, syscall.SIGTERM); err != nil {
		t.Fatalf("dev server exit: %v\n%s", err, p.log)
	}
	out := stdout.String()
	if !strings.Contains(out, "gRPC API: "+p.grpc) || !strings.Contains(out, "http://"+p.http+"/v1/health") {
		t.Fatalf("dev banner does not say where it listens:\n%s", out)
	}
	// The temp data dir is gone after exit.
	for _, line := range strings.Split(out, "\n") {
		if i := strings.Index(line, "data in "); i >= 0 {
			dir := strings.TrimSuffix(strings.Fields(line[i+len("data in "):])[0], ",")
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Fatalf("dev data dir %s still exists after exit", dir)
			}
		}
	}
}
