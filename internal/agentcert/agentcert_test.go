package agentcert

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/relhq/rel/internal/pki"
	"github.com/relhq/rel/internal/testcluster"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// joinToken makes a join token on the cluster and writes it to a file.
func joinToken(t *testing.T, c *testcluster.Cluster, uses uint32, labels map[string]string) (file string, pins []string) {
	t.Helper()
	resp, err := relv1.NewACLServiceClient(c.Nodes[0].Admin()).CreateJoinToken(ctxT(t), &relv1.CreateJoinTokenRequest{Uses: uses, Labels: labels})
	if err != nil {
		t.Fatal(err)
	}
	file = filepath.Join(t.TempDir(), "join.token")
	if err := os.WriteFile(file, []byte(resp.GetSecret()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return file, resp.GetCaPins()
}

// TestEnrolWithPin: an agent that knows only the join token and the CA pin
// enrols, keeps its key 0600 in its dir, gets the token's labels fixed in
// its certificate, and on the next start uses the stored certificate
// without spending another use of the token.
func TestEnrolWithPin(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{})
	tokFile, pins := joinToken(t, c, 1, map[string]string{"env": "prod"})
	if len(pins) != 1 || pins[0] != pki.Pin(c.PKI.CA.Cert) {
		t.Fatalf("pins %v, want the CA's %s", pins, pki.Pin(c.PKI.CA.Cert))
	}
	dir := filepath.Join(t.TempDir(), "tls")
	cfg := Config{Servers: []string{c.Nodes[0].GRPCAddr()}, NodeID: "web-1", Dir: dir, Pin: pins[0], JoinTokenFile: tokFile}
	certs, err := Load(ctxT(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	id := certs.Current().Identity
	if id.Kind != pki.KindAgent || id.ID != "web-1" || id.Labels["env"] != "prod" {
		t.Fatalf("identity %v", id)
	}
	fi, err := os.Stat(filepath.Join(dir, keyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v, want mode 0600", fi, err)
	}
	// The token was single-use: a restart must not need it again.
	again, err := Load(ctxT(t), cfg)
	if err != nil {
		t.Fatalf("restart with a stored certificate: %v", err)
	}
	if again.Current().Leaf.SerialNumber.Cmp(certs.Current().Leaf.SerialNumber) != 0 {
		t.Error("the restart enrolled again instead of using the stored certificate")
	}
	// A second agent with the spent token is refused for good.
	_, err = Load(ctxT(t), Config{Servers: cfg.Servers, NodeID: "web-2", Pin: pins[0], JoinTokenFile: tokFile})
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "used up") {
		t.Fatalf("enrolment with a spent token: %v, want ErrRefused 'used up'", err)
	}
}

// TestWrongPin: a server whose CA does not match the pin is not trusted,
// and the token is not sent anywhere that could spend it.
func TestWrongPin(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{})
	tokFile, _ := joinToken(t, c, 1, nil)
	other := testcluster.NewPKI(t, "other")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_, err := Load(ctx, Config{Servers: []string{c.Nodes[0].GRPCAddr()}, NodeID: "web-1", Pin: pki.Pin(other.CA.Cert), JoinTokenFile: tokFile})
	if err == nil || !strings.Contains(err.Error(), "pin") {
		t.Fatalf("enrolment against the wrong pin: %v, want an error about the pin", err)
	}
	toks, err := relv1.NewACLServiceClient(c.Nodes[0].Admin()).ListJoinTokens(ctxT(t), &relv1.ListJoinTokensRequest{})
	if err != nil || len(toks.GetTokens()) != 1 || toks.GetTokens()[0].GetUsesLeft() != 1 {
		t.Fatalf("join tokens after a refused server: %v %v, want the token unspent", toks, err)
	}
}

// TestRenew: the renewal keeps the id and the fixed labels, changes the key
// and serial, persists the new certificate and tells the listeners; a
// revoked agent cannot renew and, with a spent token, cannot enrol again.
func TestRenew(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{})
	tokFile, pins := joinToken(t, c, 1, map[string]string{"zone": "eu"})
	dir := t.TempDir()
	certs, err := Load(ctxT(t), Config{Servers: []string{c.Nodes[0].GRPCAddr()}, NodeID: "web-1", Dir: dir, Pin: pins[0], JoinTokenFile: tokFile})
	if err != nil {
		t.Fatal(err)
	}
	old := certs.Current()
	renewed := make(chan struct{}, 1)
	certs.OnRenew(func() { renewed <- struct{}{} })
	b, err := certs.renew(ctxT(t), c.Nodes[0].GRPCAddr())
	if err != nil {
		t.Fatal(err)
	}
	if b.Identity.ID != "web-1" || b.Identity.Labels["zone"] != "eu" || b.Leaf.SerialNumber.Cmp(old.Leaf.SerialNumber) == 0 ||
		pki.PublicKeysEqual(b.Leaf.PublicKey, old.Leaf.PublicKey) {
		t.Fatalf("renewed certificate %v (serial %v), old %v", b.Identity, b.Leaf.SerialNumber, old.Leaf.SerialNumber)
	}
	stored, err := (&Certs{cfg: certs.cfg}).loadDir()
	if err != nil || stored.Leaf.SerialNumber.Cmp(b.Leaf.SerialNumber) != 0 {
		t.Fatalf("stored certificate after renewal: %v %v", stored, err)
	}
	if _, err := relv1.NewACLServiceClient(c.Nodes[0].Admin()).RevokeAgent(ctxT(t), &relv1.RevokeAgentRequest{AgentId: "web-1", Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	certs.m.Set(b)
	_, err = certs.renew(ctxT(t), c.Nodes[0].GRPCAddr())
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("renewal after revocation: %v, want ErrRefused naming the revocation", err)
	}
}

// TestRenewAt: renewal is due about two thirds into the lifetime, spread by
// a tenth of it.
func TestRenewAt(t *testing.T) {
	ca, err := pki.NewCA("test", 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	certPEM, _, err := ca.Issue(pki.Leaf{Identity: pki.Identity{Kind: pki.KindAgent, ID: "a"}, NotBefore: start, Validity: 30 * time.Hour}, start)
	if err != nil {
		t.Fatal(err)
	}
	certs, _ := pki.ParseCerts(certPEM)
	lo, hi := start.Add(17*time.Hour), start.Add(23*time.Hour)
	seen := map[bool]bool{}
	for range 200 {
		at := RenewAt(certs[0])
		if at.Before(lo) || at.After(hi) {
			t.Fatalf("RenewAt %s outside [%s, %s]", at, lo, hi)
		}
		seen[at.Before(start.Add(20*time.Hour))] = true
	}
	if len(seen) != 2 {
		t.Error("RenewAt is not spread around two thirds")
	}
}

func TestConfigCheck(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{}, "no way to get a certificate"},
		{Config{JoinTokenFile: "t"}, "needs a way to check the servers"},
		{Config{JoinTokenFile: "t", Pin: "sha256:zz"}, "CA pin"},
		{Config{CertFile: "c"}, "go together"},
		{Config{CertFile: "c", KeyFile: "k"}, "needs --ca-file"},
	} {
		if err := tc.cfg.Check(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

// TestRunRenews: Run renews a certificate about two thirds into its life
// (here a 3-second one), stores and uses the new one, and tells the agent
// (which then reconnects with it).
func TestRunRenews(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{})
	dir := t.TempDir()
	// An agent certificate that expires in 3 s, as if enrolled long ago.
	now := time.Now()
	certPEM, keyPEM, err := c.PKI.CA.Issue(pki.Leaf{Identity: testcluster.AgentID("web-1"), NotBefore: now.Add(-time.Second), Validity: 4 * time.Second}, now)
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{certFile: certPEM, keyFile: keyPEM, caFile: c.PKI.CA.CertPEM()} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	certs, err := Load(ctxT(t), Config{Servers: []string{c.Nodes[0].GRPCAddr()}, NodeID: "web-1", Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	old := certs.Current().Leaf
	renewed := make(chan struct{}, 1)
	certs.OnRenew(func() { renewed <- struct{}{} })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); certs.Run(ctx) }()
	defer func() { cancel(); <-done }()
	select {
	case <-renewed:
	case <-time.After(10 * time.Second):
		t.Fatal("no renewal within 10 s of a certificate expiring in 3 s")
	}
	got := certs.Current().Leaf
	if got.SerialNumber.Cmp(old.SerialNumber) == 0 || !got.NotAfter.After(old.NotAfter.Add(time.Hour)) {
		t.Fatalf("after renewal the certificate is serial %v until %s (was %v until %s)", got.SerialNumber, got.NotAfter, old.SerialNumber, old.NotAfter)
	}
	stored, err := (&Certs{cfg: certs.cfg}).loadDir()
	if err != nil || stored.Leaf.SerialNumber.Cmp(got.SerialNumber) != 0 {
		t.Fatalf("stored certificate after renewal: %v %v", stored, err)
	}
}
