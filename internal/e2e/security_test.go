package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestFileReleaseRefused: the file:// attack, with the real
// binaries. A release pointing at /etc/shadow is refused by an agent with
// default flags (https only): nothing is installed, the rollout fails
// saying why, and neither the digest nor the content of the file reaches
// the cluster.
func TestFileReleaseRefused(t *testing.T) {
	p := newProc(t, "s1")
	p.start(t, "--bootstrap", "--heartbeat-interval", "300ms", "--agent-grace", "3s")
	waitLeader(t, []*proc{p}, "a leader")
	a := &agentProc{id: "web-1", dataDir: t.TempDir(), root: t.TempDir(), labels: "env=prod"}
	a.start(t, p.grpc)
	waitFor(t, 15*time.Second, "the agent to connect", func() bool {
		r := relctl(t, p.grpc, "agent", "list", "-o", "json")
		return r.code == 0 && strings.Contains(r.stdout, `"connected": true`)
	})
	secret, err := os.ReadFile("/etc/shadow")
	if err != nil {
		secret = []byte("no /etc/shadow here")
	}
	sum := sha256.Sum256(secret)
	actual := hex.EncodeToString(sum[:])
	wrong := strings.Repeat("0", 64)
	mustRelctl(t, p.grpc, "app", "create", "evil")
	mustRelctl(t, p.grpc, "env", "create", "prod", "--selector", "env=prod")
	mustRelctl(t, p.grpc, "release", "create", "evil", "1.0.0", "--artifact", "file:///etc/shadow", "--sha256", wrong)
	id := startRollout(t, p.grpc, "evil@1.0.0", "prod")
	st := waitRollout(t, p.grpc, id, 60*time.Second)
	if st.Rollout.State != "failed" || !strings.Contains(st.Rollout.Reason, `scheme "file" is not allowed`) {
		t.Fatalf("file:// rollout: %+v", st)
	}
	if _, err := os.Stat(filepath.Join(a.root, "evil")); !os.IsNotExist(err) {
		t.Errorf("something was installed for the file:// release: %v", err)
	}
	show := mustRelctl(t, p.grpc, "agent", "show", "web-1", "-o", "json")
	if strings.Contains(show, actual) || (len(secret) > 8 && strings.Contains(show, string(secret[:8]))) {
		t.Errorf("the agent's report carries the file's digest or content:\n%s", show)
	}
}

// TestSIGHUPReload: rel-server reloads its certificate on SIGHUP; a file
// that does not parse keeps the old one (the server says so and keeps
// serving), a new valid certificate is taken.
func TestSIGHUPReload(t *testing.T) {
	p := newProc(t, "s1")
	// Reload reads the files the server was started with: give it copies
	// this test may overwrite.
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "s1.pem"), filepath.Join(dir, "s1-key.pem")
	for src, dst := range map[string]string{p.cert: cert, p.key: key} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	p.cert, p.key = cert, key
	p.start(t, "--bootstrap")
	waitLeader(t, []*proc{p}, "a leader")
	hup := func() {
		t.Helper()
		if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}

	if err := os.WriteFile(cert, []byte("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	hup()
	waitFor(t, 10*time.Second, "the failed reload to be logged", func() bool {
		return strings.Contains(p.log.String(), "TLS reload failed")
	})
	mustRelctl(t, p.grpc, "app", "create", "still-serving")

	newDir := t.TempDir()
	newCert, newKey := serverCert(t, newDir, "s1")
	for src, dst := range map[string]string{newCert: cert, newKey: key} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	hup()
	waitFor(t, 10*time.Second, "the reload to be logged", func() bool {
		return strings.Contains(p.log.String(), "TLS material reloaded")
	})
	mustRelctl(t, p.grpc, "app", "create", "after-reload")
	if err := p.signal(t, syscall.SIGTERM); err != nil {
		t.Fatalf("stop after reloads: %v\n%s", err, p.log)
	}
}
