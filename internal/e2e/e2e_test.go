// Package e2e runs the real binaries: three rel-server processes on loopback
// driven by relctl, as a user would from the README.
package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
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

	"github.com/relhq/rel/internal/testport"
)

var (
	binDir string
	// pkiDir holds the CA every test cluster's certificates come from
	// (made with relctl tls, as an operator would) and an admin client
	// certificate relctl uses unless a test says otherwise.
	pkiDir              string
	caFile, caKeyFile   string
	adminCert, adminKey string
	caPool              *x509.CertPool
)

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
	if err := makePKI(dir); err != nil {
		fmt.Fprintln(os.Stderr, "e2e PKI:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// makePKI makes the tests' CA and admin certificate with relctl.
func makePKI(dir string) error {
	pkiDir = filepath.Join(dir, "pki")
	run := func(args ...string) error {
		out, err := exec.Command(filepath.Join(binDir, "relctl"), args...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("relctl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	caFile, caKeyFile = filepath.Join(pkiDir, "ca.pem"), filepath.Join(pkiDir, "ca-key.pem")
	if err := run("tls", "ca", "create", "--cluster", "e2e", "--dir", pkiDir); err != nil {
		return err
	}
	if err := run("tls", "cert", "create", "--client", "e2e-admin", "--role", "admin", "--ca-file", caFile, "--ca-key-file", caKeyFile, "--dir", pkiDir); err != nil {
		return err
	}
	adminCert, adminKey = filepath.Join(pkiDir, "e2e-admin.pem"), filepath.Join(pkiDir, "e2e-admin-key.pem")
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return err
	}
	caPool = x509.NewCertPool()
	if !caPool.AppendCertsFromPEM(pem) {
		return fmt.Errorf("%s holds no certificate", caFile)
	}
	return nil
}

// serverCert makes a server certificate for id in dir with relctl.
func serverCert(t *testing.T, dir, id string) (cert, key string) {
	t.Helper()
	out, err := exec.Command(filepath.Join(binDir, "relctl"), "tls", "cert", "create", "--server", "--node-id", id,
		"--ca-file", caFile, "--ca-key-file", caKeyFile, "--dir", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("server certificate for %s: %v\n%s", id, err, out)
	}
	return filepath.Join(dir, id+".pem"), filepath.Join(dir, id+"-key.pem")
}

// tlsFlags are the flags that give a rel-server its TLS material.
func (p *proc) tlsFlags() []string {
	return []string{"--ca-file", caFile, "--cert-file", p.cert, "--key-file", p.key, "--ca-key-file", caKeyFile}
}

type proc struct {
	id, grpc, raft, http, dir string
	cert, key                 string
	// node, when set, is the network namespace the server runs in.
	node *netNode
	cmd  *exec.Cmd
	log  *syncBuffer
	out  *syncBuffer // stdout, when kept apart from log
	done chan error
}

func freePort(t *testing.T) string {
	t.Helper()
	addr, err := testport.Addr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

func newProc(t *testing.T, id string) *proc {
	p := &proc{id: id, grpc: freePort(t), raft: freePort(t), http: freePort(t), dir: t.TempDir()}
	p.cert, p.key = serverCert(t, t.TempDir(), id)
	return p
}

func (p *proc) start(t *testing.T, extra ...string) {
	t.Helper()
	args := append([]string{"--node-id", p.id, "--data-dir", p.dir, "--grpc-addr", p.grpc, "--raft-addr", p.raft, "--http-addr", p.http}, p.tlsFlags()...)
	args = append(args, extra...)
	p.cmd = exec.Command(filepath.Join(binDir, "rel-server"), args...)
	if p.node != nil {
		p.node.wrap(p.cmd)
	}
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

func (p *proc) stdout() string {
	if p.out == nil {
		return ""
	}
	return p.out.String()
}

// exportLines reads the "export K=V ..." lines of a banner as K=V pairs.
func exportLines(banner string) []string {
	var env []string
	for _, line := range strings.Split(banner, "\n") {
		fields := strings.Fields(line)
		if len(fields) < 2 || fields[0] != "export" {
			continue
		}
		env = append(env, fields[1:]...)
	}
	return env
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
	resp, err := healthClient().Get("https://" + p.http + "/v1/health")
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

// waitLeader waits for one of ps to lead. On a timeout it shows each
// server's state and the end of its log: a server that did not start (a
// port taken meanwhile) says why there.
func waitLeader(t *testing.T, ps []*proc, what string) *proc {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if l := leaderOf(ps); l != nil {
			return l
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			for _, p := range ps {
				state := "running"
				if p.cmd == nil {
					state = "not started"
				} else if p.cmd.ProcessState != nil {
					state = "exited: " + p.cmd.ProcessState.String()
				}
				lines := strings.Split(strings.TrimSpace(p.log.String()), "\n")
				fmt.Fprintf(&b, "\n%s (%s), last log lines:\n  %s", p.id, state, strings.Join(lines[max(len(lines)-15, 0):], "\n  "))
			}
			t.Fatalf("timed out after 30s waiting for %s%s", what, b.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type result struct {
	code           int
	stdout, stderr string
}

// healthClient is an HTTPS client that checks the servers against the
// tests' CA and presents no certificate, like a load balancer.
func healthClient() *http.Client {
	return &http.Client{Timeout: time.Second, Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: caPool, ServerName: "server.e2e.rel"},
		DisableKeepAlives: true,
	}}
}

// relctl runs relctl against addr as the tests' admin (a client
// certificate of role admin).
func relctl(t *testing.T, addr string, args ...string) result {
	t.Helper()
	return relctlEnv(t, []string{"REL_ADDR=" + addr, "REL_CA_FILE=" + caFile, "REL_CERT_FILE=" + adminCert, "REL_KEY_FILE=" + adminKey}, args...)
}

// relctlEnv runs relctl with env added to a clean environment (no REL_*
// from the developer's shell).
func relctlEnv(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "relctl"), args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "REL_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
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
	waitLeader(t, ps[:1], "s1 to lead")
	ps[1].start(t, "--join", ps[0].grpc)
	ps[2].start(t, "--join", ps[0].grpc+","+ps[1].grpc)
	waitFor(t, 20*time.Second, "three members", func() bool {
		r := relctl(t, ps[0].grpc, "cluster", "members", "-o", "json")
		// Joiners are non-voters until caught up: wait for three voters.
		return r.code == 0 && strings.Count(r.stdout, `"id"`) == 3 && strings.Count(r.stdout, `"follower"`) == 2 && strings.Count(r.stdout, `"Voter"`) == 3
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
	waitLeader(t, []*proc{p}, "a leader")
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
	certDir := t.TempDir()
	cert, key := serverCert(t, certDir, "a")
	tlsA := []string{"--ca-file", caFile, "--cert-file", cert, "--key-file", key}
	// A copy of the key that others may read.
	openKey := filepath.Join(certDir, "open-key.pem")
	if b, err := os.ReadFile(key); err != nil {
		t.Fatal(err)
	} else if err := os.WriteFile(openKey, b, 0o644); err != nil {
		t.Fatal(err)
	}
	addrs := []string{"--grpc-addr", freePort(t), "--raft-addr", freePort(t), "--http-addr", freePort(t)}
	// Ports another process holds: start-up errors say which, never panic.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	busy := taken.Addr().String()
	tests := []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"bootstrap and join", append([]string{"--node-id", "a", "--data-dir", dir, "--bootstrap", "--join", "127.0.0.1:1"}, tlsA...), 1, "--bootstrap and --join together"},
		{"no data dir", []string{"--node-id", "a"}, 1, "--data-dir is empty"},
		{"bad node id", []string{"--node-id", "a b", "--data-dir", dir}, 1, `--node-id "a b"`},
		{"bad log level", []string{"--log-level", "loud"}, 2, `--log-level "loud"`},
		{"unknown flag", []string{"--frobnicate"}, 2, "flag provided but not defined: -frobnicate"},
		{"no TLS", []string{"--node-id", "a", "--data-dir", dir}, 1, "TLS is required: give --ca-file, --cert-file and --key-file"},
		{"world-readable key", []string{"--node-id", "a", "--data-dir", dir, "--ca-file", caFile, "--cert-file", cert, "--key-file", openKey}, 1, "mode 0644: run 'chmod 600"},
		{"another node's certificate", append([]string{"--node-id", "b", "--data-dir", dir}, tlsA...), 1, `is the certificate of server "a", not of --node-id "b"`},
		{"a client certificate", []string{"--node-id", "a", "--data-dir", dir, "--ca-file", caFile, "--cert-file", adminCert, "--key-file", adminKey}, 1, "holds the certificate of client"},
		{"dev off loopback", []string{"--dev", "--grpc-addr", "0.0.0.0:0"}, 2, "--dev listens on loopback only"},
		{"dev with files", append([]string{"--dev"}, append(tlsA, addrs...)...), 2, "--dev makes its own CA"},
		{"grpc port taken", append([]string{"--node-id", "a", "--data-dir", t.TempDir(), "--bootstrap", "--grpc-addr", busy, "--raft-addr", freePort(t), "--http-addr", freePort(t)}, tlsA...), 1,
			"listen for grpc on " + busy + ": listen tcp " + busy + ": bind: address already in use (is another rel-server using the port? pick another with --grpc-addr)"},
		{"raft port taken", append([]string{"--node-id", "a", "--data-dir", t.TempDir(), "--bootstrap", "--grpc-addr", freePort(t), "--raft-addr", busy, "--http-addr", freePort(t)}, tlsA...), 1, "address already in use"},
		{"http port taken", append([]string{"--node-id", "a", "--data-dir", t.TempDir(), "--bootstrap", "--grpc-addr", freePort(t), "--raft-addr", freePort(t), "--http-addr", busy}, tlsA...), 1, "address already in use"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out := run(tt.args...)
			if strings.Contains(out, "panic") || strings.Contains(out, "goroutine ") {
				t.Fatalf("rel-server panicked: %s", out)
			}
			if code != tt.code || !strings.Contains(out, tt.msg) {
				t.Fatalf("exit %d output %q; want exit %d containing %q", code, out, tt.code, tt.msg)
			}
		})
	}

	// A data dir belongs to the node that created it.
	p := newProc(t, "owner")
	p.start(t, "--bootstrap")
	waitLeader(t, []*proc{p}, "a leader")
	if err := p.signal(t, syscall.SIGTERM); err != nil {
		t.Fatalf("graceful stop: %v\n%s", err, p.log)
	}
	icert, ikey := serverCert(t, t.TempDir(), "intruder")
	code, out := run("--node-id", "intruder", "--data-dir", p.dir, "--grpc-addr", freePort(t), "--raft-addr", freePort(t), "--http-addr", freePort(t),
		"--ca-file", caFile, "--cert-file", icert, "--key-file", ikey)
	if code != 1 || !strings.Contains(out, `belongs to node "owner", not "intruder"`) {
		t.Fatalf("foreign data dir: exit %d %q", code, out)
	}
}

// TestDevMode: --dev needs nothing else, says where it listens, and its
// export lines, pasted, make relctl an admin of it; without them relctl
// gets nowhere.
func TestDevMode(t *testing.T) {
	p := &proc{id: "dev", grpc: freePort(t), raft: freePort(t), http: freePort(t)}
	p.cmd = exec.Command(filepath.Join(binDir, "rel-server"), "--dev", "--grpc-addr", p.grpc, "--raft-addr", p.raft, "--http-addr", p.http)
	p.log, p.out = &syncBuffer{}, &syncBuffer{}
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.done = make(chan error, 1)
	go func() { p.done <- p.cmd.Wait() }()
	var env []string
	waitFor(t, 15*time.Second, "the dev banner's export lines", func() bool {
		env = exportLines(p.stdout())
		return len(env) >= 3
	})
	if r := relctlEnv(t, []string{"REL_ADDR=" + p.grpc}, "app", "list"); r.code != 2 || !strings.Contains(r.stderr, "--ca-file") {
		t.Fatalf("relctl without the exports: exit %d %q, want a usage error naming --ca-file", r.code, r.stderr)
	}
	if r := relctlEnv(t, append(env[:len(env):len(env)], "REL_ADDR="+p.grpc, "REL_TOKEN_FILE="), "app", "create", "nope"); r.code != 1 || !strings.Contains(r.stderr, "Unauthenticated") {
		t.Fatalf("relctl with the CA but no token: exit %d %q, want Unauthenticated", r.code, r.stderr)
	}
	if r := relctlEnv(t, append(env, "REL_ADDR="+p.grpc), "app", "create", "demo"); r.code != 0 {
		t.Fatalf("relctl with the dev exports: exit %d %s\nbanner:\n%s", r.code, r.stderr, p.stdout())
	}
	if err := p.signal(t, syscall.SIGTERM); err != nil {
		t.Fatalf("dev server exit: %v\n%s", err, p.log)
	}
	out := p.stdout()
	if !strings.Contains(out, "gRPC API: "+p.grpc) || !strings.Contains(out, "https://"+p.http+"/v1/health") {
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
