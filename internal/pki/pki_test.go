package pki

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

func newCA(t *testing.T) *CA {
	t.Helper()
	ca, err := NewCA("prod", 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func issue(t *testing.T, ca *CA, leaf Leaf) *x509.Certificate {
	t.Helper()
	certPEM, _, err := ca.Issue(leaf, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	certs, err := ParseCerts(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	return certs[0]
}

// rawLeaf signs a hand-made certificate template with the CA, for
// certificates relctl would never make.
func rawLeaf(t *testing.T, ca *CA, tmpl *x509.Certificate) *x509.Certificate {
	t.Helper()
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	tmpl.SerialNumber = big.NewInt(time.Now().UnixNano())
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Minute), time.Now().Add(time.Hour)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, key.Public(), ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestIdentityRoundTrip(t *testing.T) {
	ids := []Identity{
		{Cluster: "prod", Kind: KindServer, ID: "s1"},
		{Cluster: "prod", Kind: KindAgent, ID: "web-1.example_com"},
		// Values with characters that need escaping in a URI query.
		{Cluster: "prod", Kind: KindAgent, ID: "web-2", Labels: map[string]string{"env": "prod", "rack": "r1/a+b", "k8s.io/zone": "eu=west&1"}},
		{Cluster: "prod", Kind: KindClient, ID: "alice", Role: "deployer"},
		{Cluster: "c-1", Kind: KindClient, ID: "ci", Role: "admin"},
	}
	ca, err := NewCA("prod", 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	ca1, err := NewCA("c-1", 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		u, err := url.Parse(id.String())
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseURI(u)
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		if !reflect.DeepEqual(got, id) {
			t.Errorf("URI round trip: %#v, want %#v", got, id)
		}
		signer := ca
		if id.Cluster == "c-1" {
			signer = ca1
		}
		cert := issue(t, signer, Leaf{Identity: id})
		got, err = ParseIdentity(cert)
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		if !reflect.DeepEqual(got, id) {
			t.Errorf("certificate round trip: %#v, want %#v", got, id)
		}
	}
}

func TestIdentityCheck(t *testing.T) {
	tests := []struct {
		id   Identity
		want string
	}{
		{Identity{Cluster: "Prod", Kind: KindServer, ID: "s1"}, `cluster name "Prod"`},
		{Identity{Cluster: "prod", Kind: "root", ID: "s1"}, `kind "root"`},
		{Identity{Cluster: "prod", Kind: KindServer, ID: "s1", Role: "admin"}, "server certificates have no role"},
		{Identity{Cluster: "prod", Kind: KindAgent, ID: "a1", Role: "admin"}, "agent certificates have no role"},
		{Identity{Cluster: "prod", Kind: KindClient, ID: "alice"}, "needs a role"},
		{Identity{Cluster: "prod", Kind: KindServer, ID: "s1", Labels: map[string]string{"a": "b"}}, "only agent certificates carry labels"},
		{Identity{Cluster: "prod", Kind: KindAgent, ID: "-a"}, `id "-a"`},
		{Identity{Cluster: "prod", Kind: KindAgent, ID: ""}, `id ""`},
		{Identity{Cluster: "prod", Kind: KindAgent, ID: "a/b"}, `id "a/b"`},
	}
	for _, tt := range tests {
		if err := tt.id.Check(); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%#v: %v, want an error containing %q", tt.id, err, tt.want)
		}
	}
}

func TestParseURIRefuses(t *testing.T) {
	for _, s := range []string{
		"https://prod/server/s1",
		"rel://prod/server",
		"rel://prod/server/s1/extra",
		"rel://prod/agent/a1?label=novalue",
		"rel://prod/agent/a1?label==v",
		"rel://prod/client/alice",
	} {
		u, _ := url.Parse(s)
		if _, err := ParseURI(u); !errors.Is(err, ErrNoIdentity) {
			t.Errorf("%s: %v, want ErrNoIdentity", s, err)
		}
	}
}

// TestParseIdentityRefuses: a certificate names exactly one identity, and
// a server certificate carries the name clients check.
func TestParseIdentityRefuses(t *testing.T) {
	ca := newCA(t)
	s1, _ := url.Parse("rel://prod/server/s1")
	s2, _ := url.Parse("rel://prod/server/s2")
	web, _ := url.Parse("https://example.com/")
	tests := []struct {
		name string
		tmpl *x509.Certificate
		want string
	}{
		{"no identity", &x509.Certificate{Subject: pkix.Name{CommonName: "plain"}, DNSNames: []string{"server.prod.rel"}}, "names no Rel identity"},
		{"only a web URI", &x509.Certificate{Subject: pkix.Name{CommonName: "web"}, URIs: []*url.URL{web}}, "names no Rel identity"},
		{"two identities", &x509.Certificate{Subject: pkix.Name{CommonName: "two"}, URIs: []*url.URL{s1, s2}, DNSNames: []string{"server.prod.rel"}}, "names 2 identities"},
		{"server without its DNS name", &x509.Certificate{Subject: pkix.Name{CommonName: "s1"}, URIs: []*url.URL{s1}, DNSNames: []string{"localhost"}}, "lacks the DNS name server.prod.rel"},
		{"server with another cluster's DNS name", &x509.Certificate{Subject: pkix.Name{CommonName: "s1"}, URIs: []*url.URL{s1}, DNSNames: []string{"server.test.rel"}}, "lacks the DNS name server.prod.rel"},
	}
	for _, tt := range tests {
		_, err := ParseIdentity(rawLeaf(t, ca, tt.tmpl))
		if !errors.Is(err, ErrNoIdentity) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want ErrNoIdentity containing %q", tt.name, err, tt.want)
		}
	}
}

func TestCAIssue(t *testing.T) {
	ca := newCA(t)
	if cl, err := CACluster(ca.Cert); err != nil || cl != "prod" {
		t.Fatalf("CA cluster %q %v", cl, err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)

	srv := issue(t, ca, Leaf{Identity: Identity{Kind: KindServer, ID: "s1"}, DNSNames: []string{"rel1.example.com"}})
	if _, err := srv.Verify(x509.VerifyOptions{Roots: pool, DNSName: "server.prod.rel", KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		t.Errorf("server certificate does not verify as server.prod.rel: %v", err)
	}
	if _, err := srv.Verify(x509.VerifyOptions{Roots: pool, DNSName: "rel1.example.com", KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("server certificate cannot dial peers or lacks its extra name: %v", err)
	}
	agent := issue(t, ca, Leaf{Identity: Identity{Kind: KindAgent, ID: "web-1"}, Validity: DefaultAgentValidity})
	if _, err := agent.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err == nil {
		t.Error("an agent certificate verifies for serving")
	}
	if _, err := agent.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("agent certificate does not verify as a client: %v", err)
	}
	if d := agent.NotAfter.Sub(agent.NotBefore); d != DefaultAgentValidity {
		t.Errorf("agent certificate valid for %s, want %s", d, DefaultAgentValidity)
	}
	// A leaf cannot outlive its CA.
	long := issue(t, ca, Leaf{Identity: Identity{Kind: KindAgent, ID: "web-1"}, Validity: 2 * DefaultCAValidity})
	if long.NotAfter.After(ca.Cert.NotAfter) {
		t.Errorf("leaf expires %s after its CA %s", long.NotAfter, ca.Cert.NotAfter)
	}
	// Explicit validity window (tests make expired and future certificates).
	nb := time.Now().Add(48 * time.Hour).Truncate(time.Second)
	future := issue(t, ca, Leaf{Identity: Identity{Kind: KindClient, ID: "alice", Role: "viewer"}, NotBefore: nb, Validity: time.Hour})
	if !future.NotBefore.Equal(nb) || !future.NotAfter.Equal(nb.Add(time.Hour)) {
		t.Errorf("window %s-%s, want %s + 1h", future.NotBefore, future.NotAfter, nb)
	}

	if _, _, err := ca.Issue(Leaf{Identity: Identity{Cluster: "other", Kind: KindServer, ID: "s1"}}, time.Now()); err == nil || !strings.Contains(err.Error(), `not "other"`) {
		t.Errorf("leaf for another cluster: %v", err)
	}
	if _, _, err := ca.Issue(Leaf{Identity: Identity{Kind: KindClient, ID: "alice"}}, time.Now()); err == nil {
		t.Error("a client certificate without a role was issued")
	}
	if _, err := NewCA("Not A DNS Label", 0, time.Now()); err == nil {
		t.Error("CA for a bad cluster name")
	}
}

func TestSignCSR(t *testing.T) {
	ca := newCA(t)
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	// The request's subject claims to be a server: it does not matter.
	csr, err := NewCSR(key, "server s1")
	if err != nil {
		t.Fatal(err)
	}
	der, err := ca.SignCSR(csr, Leaf{Identity: Identity{Kind: KindAgent, ID: "web-1", Labels: map[string]string{"env": "prod"}}, Validity: time.Hour}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	id, err := ParseIdentity(cert)
	if err != nil {
		t.Fatal(err)
	}
	want := Identity{Cluster: "prod", Kind: KindAgent, ID: "web-1", Labels: map[string]string{"env": "prod"}}
	if !reflect.DeepEqual(id, want) {
		t.Errorf("identity %#v, want %#v", id, want)
	}
	if !PublicKeysEqual(cert.PublicKey, key.Public()) {
		t.Error("the certificate is not for the request's key")
	}
	if err := cert.CheckSignatureFrom(ca.Cert); err != nil {
		t.Error(err)
	}
	for _, n := range cert.DNSNames {
		if n == "server.prod.rel" {
			t.Error("an agent certificate carries the servers' name")
		}
	}
}

func TestCheckCSR(t *testing.T) {
	ecKey, _ := NewKey()
	good, err := NewCSR(ecKey, "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := CheckCSR(good); err != nil {
		t.Errorf("P-256 request: %v", err)
	}
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	edCSR, _ := NewCSR(edKey, "x")
	if _, err := CheckCSR(edCSR); err != nil {
		t.Errorf("Ed25519 request: %v", err)
	}

	tampered := append([]byte(nil), good...)
	tampered[len(tampered)-5] ^= 0xff // inside the signature
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaCSR, _ := NewCSR(rsaKey, "x")
	p224, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	p224CSR, _ := NewCSR(p224, "x")
	tests := []struct {
		name string
		der  []byte
		want string
	}{
		{"garbage", []byte("not a CSR"), "certificate request"},
		{"bad signature", tampered, ""},
		{"RSA key", rsaCSR, "use ECDSA P-256 or Ed25519"},
		{"P-224 key", p224CSR, "P-256 or P-384"},
	}
	for _, tt := range tests {
		_, err := CheckCSR(tt.der)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want an error containing %q", tt.name, err, tt.want)
		}
	}
	// The CA refuses to sign them too.
	ca := newCA(t)
	if _, err := ca.SignCSR(rsaCSR, Leaf{Identity: Identity{Kind: KindAgent, ID: "a"}}, time.Now()); err == nil {
		t.Error("the CA signed an RSA request")
	}
}

func TestPin(t *testing.T) {
	ca := newCA(t)
	pin := Pin(ca.Cert)
	if !regexp.MustCompile(`^sha256:[0-9a-f]{64}$`).MatchString(pin) {
		t.Fatalf("pin %q", pin)
	}
	if err := CheckPin(pin); err != nil {
		t.Errorf("CheckPin(%q): %v", pin, err)
	}
	for _, bad := range []string{"", "sha1:abcd", "sha256:", "sha256:xyz", "sha256:" + strings.Repeat("a", 63), strings.TrimPrefix(pin, "sha256:")} {
		if err := CheckPin(bad); err == nil || !strings.Contains(err.Error(), "want sha256:<64 hex digits>") {
			t.Errorf("CheckPin(%q): %v", bad, err)
		}
	}
	// The pin is of the key: a CA certificate re-issued with the same key
	// keeps it, another CA does not.
	tmpl := *ca.Cert
	tmpl.SerialNumber = big.NewInt(42)
	tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, &tmpl, ca.Key.Public(), ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	reissued, _ := x509.ParseCertificate(der)
	if Pin(reissued) != pin {
		t.Error("a re-issued CA certificate with the same key has another pin")
	}
	if Pin(newCA(t).Cert) == pin {
		t.Error("two CAs share a pin")
	}
	if fp := Fingerprint(ca.Cert); !regexp.MustCompile(`^([0-9A-F]{2}:){31}[0-9A-F]{2}$`).MatchString(fp) {
		t.Errorf("fingerprint %q", fp)
	}
}

func TestReadKeyFile(t *testing.T) {
	dir := t.TempDir()
	key, _ := NewKey()
	pemKey, err := EncodeKey(key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "key.pem")
	if err := WriteFile(path, pemKey, 0o600, true); err != nil {
		t.Fatal(err)
	}
	got, err := ReadKeyFile(path)
	if err != nil {
		t.Fatalf("0600 key: %v", err)
	}
	if !PublicKeysEqual(got.Public(), key.Public()) {
		t.Error("read another key")
	}
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o666} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		_, err := ReadKeyFile(path)
		if !errors.Is(err, ErrKeyPermissions) || !strings.Contains(err.Error(), "chmod 600") {
			t.Errorf("mode %04o: %v, want ErrKeyPermissions saying chmod 600", mode, err)
		}
	}
	os.Chmod(path, 0o400)
	if _, err := ReadKeyFile(path); err != nil {
		t.Errorf("0400 key: %v", err)
	}
	garbage := filepath.Join(dir, "garbage.pem")
	os.WriteFile(garbage, []byte("not a key"), 0o600)
	if _, err := ReadKeyFile(garbage); err == nil || !strings.Contains(err.Error(), "no PEM private key") {
		t.Errorf("garbage key: %v", err)
	}
}

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ca-key.pem")
	if err := WriteFile(path, []byte("first"), 0o600, true); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %04o, want 0600", fi.Mode().Perm())
	}
	// Making a CA twice must not destroy the first key.
	if err := WriteFile(path, []byte("second"), 0o600, true); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("exclusive overwrite: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "first" {
		t.Errorf("content %q after a refused overwrite", b)
	}
	if err := WriteFile(path, []byte("third"), 0o644, false); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "third" {
		t.Errorf("content %q after an overwrite", b)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("temp files left: %v", entries)
	}
}

func TestLoadCA(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t)
	keyPEM, _ := EncodeKey(ca.Key)
	certFile, keyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	WriteFile(certFile, ca.CertPEM(), 0o644, true)
	WriteFile(keyFile, keyPEM, 0o600, true)
	got, err := LoadCA(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if got.Cluster != "prod" || !got.Cert.Equal(ca.Cert) {
		t.Errorf("loaded CA %s", got.Cluster)
	}
	other := newCA(t)
	otherKey, _ := EncodeKey(other.Key)
	otherFile := filepath.Join(dir, "other-key.pem")
	WriteFile(otherFile, otherKey, 0o600, true)
	if _, err := LoadCA(certFile, otherFile); err == nil || !strings.Contains(err.Error(), "matches the key") {
		t.Errorf("CA with another CA's key: %v", err)
	}
	os.Chmod(keyFile, 0o644)
	if _, err := LoadCA(certFile, keyFile); !errors.Is(err, ErrKeyPermissions) {
		t.Errorf("world-readable CA key: %v", err)
	}
}
