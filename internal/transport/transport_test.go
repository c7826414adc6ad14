package transport_test

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/relhq/rel/internal/pki"
	"github.com/relhq/rel/internal/transport"
)

// testCA is a cluster CA with helpers to issue material in memory and on disk.
type testCA struct {
	t   *testing.T
	ca  *pki.CA
	dir string
}

func newTestCA(t *testing.T, cluster string) *testCA {
	t.Helper()
	ca, err := pki.NewCA(cluster, 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{t: t, ca: ca, dir: t.TempDir()}
}

func serverID(id string) pki.Identity { return pki.Identity{Kind: pki.KindServer, ID: id} }
func agentID(id string) pki.Identity  { return pki.Identity{Kind: pki.KindAgent, ID: id} }
func clientID(id, role string) pki.Identity {
	return pki.Identity{Kind: pki.KindClient, ID: id, Role: role}
}

func (c *testCA) issue(leaf pki.Leaf) (certPEM, keyPEM []byte) {
	c.t.Helper()
	certPEM, keyPEM, err := c.ca.Issue(leaf, time.Now())
	if err != nil {
		c.t.Fatal(err)
	}
	return certPEM, keyPEM
}

func (c *testCA) bundle(leaf pki.Leaf) *transport.Bundle {
	c.t.Helper()
	certPEM, keyPEM := c.issue(leaf)
	certs, err := pki.ParseCerts(certPEM)
	if err != nil {
		c.t.Fatal(err)
	}
	key, err := pki.ParseKey(keyPEM)
	if err != nil {
		c.t.Fatal(err)
	}
	b, err := transport.NewBundle([]*x509.Certificate{c.ca.Cert}, certs, key)
	if err != nil {
		c.t.Fatal(err)
	}
	return b
}

func (c *testCA) security(id pki.Identity) transport.Security {
	c.t.Helper()
	return transport.Security{M: transport.StaticMaterial(c.bundle(pki.Leaf{Identity: id}))}
}

func (c *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.ca.Cert)
	return p
}

func write(t *testing.T, path string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

// files writes a CA bundle, a certificate and its key for leaf.
func (c *testCA) files(leaf pki.Leaf, cas ...*x509.Certificate) transport.Files {
	c.t.Helper()
	certPEM, keyPEM := c.issue(leaf)
	f := transport.Files{CA: filepath.Join(c.dir, "ca.pem"), Cert: filepath.Join(c.dir, "cert.pem"), Key: filepath.Join(c.dir, "key.pem")}
	var caPEM []byte
	if len(cas) == 0 {
		cas = []*x509.Certificate{c.ca.Cert}
	}
	for _, ca := range cas {
		caPEM = append(caPEM, pki.EncodeCert(ca.Raw)...)
	}
	write(c.t, f.CA, caPEM, 0o644)
	write(c.t, f.Cert, certPEM, 0o644)
	write(c.t, f.Key, keyPEM, 0o600)
	return f
}

func TestNewMaterialRefuses(t *testing.T) {
	ca := newTestCA(t, "prod")
	f := ca.files(pki.Leaf{Identity: serverID("s1")})
	if _, err := transport.NewMaterial(f); err != nil {
		t.Fatalf("good material: %v", err)
	}

	os.Chmod(f.Key, 0o644)
	if _, err := transport.NewMaterial(f); !errors.Is(err, pki.ErrKeyPermissions) || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("world-readable key: %v, want ErrKeyPermissions", err)
	}
	os.Chmod(f.Key, 0o600)

	// A key that is not the certificate's.
	_, otherKey := ca.issue(pki.Leaf{Identity: serverID("s1")})
	write(t, f.Key, otherKey, 0o600)
	if _, err := transport.NewMaterial(f); err == nil || !strings.Contains(err.Error(), "does not match the key") {
		t.Errorf("mismatched key: %v", err)
	}

	// A certificate of another CA than the one trusted.
	other := newTestCA(t, "prod")
	of := other.files(pki.Leaf{Identity: serverID("s1")})
	mixed := transport.Files{CA: f.CA, Cert: of.Cert, Key: of.Key}
	if _, err := transport.NewMaterial(mixed); err == nil || !strings.Contains(err.Error(), "not signed by any CA in the CA file") {
		t.Errorf("certificate of an untrusted CA: %v", err)
	}

	if _, err := transport.NewMaterial(transport.Files{CA: f.CA}); err == nil {
		t.Error("material without certificate and key")
	}
}

// TestMaterialReload: a reload that fails keeps what is in use and says
// so; a good one replaces it; the identity may not change.
func TestMaterialReload(t *testing.T) {
	ca := newTestCA(t, "prod")
	f := ca.files(pki.Leaf{Identity: serverID("s1")})
	m, err := transport.NewMaterial(f)
	if err != nil {
		t.Fatal(err)
	}
	orig := m.Current()
	keepsOld := func(what string, err error) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), "still using the previous certificate") {
			t.Errorf("%s: %v, want an error saying the previous certificate is kept", what, err)
		}
		if m.Current() != orig {
			t.Errorf("%s replaced the material in use", what)
		}
	}

	goodCert, _ := os.ReadFile(f.Cert)
	write(t, f.Cert, []byte("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"), 0o644)
	keepsOld("corrupt certificate", m.Reload())
	write(t, f.Cert, goodCert[:len(goodCert)/2], 0o644)
	keepsOld("truncated certificate", m.Reload())
	write(t, f.Cert, goodCert, 0o644)

	os.Chmod(f.Key, 0o644)
	err = m.Reload()
	keepsOld("world-readable key", err)
	if !errors.Is(err, pki.ErrKeyPermissions) {
		t.Errorf("world-readable key: %v, want ErrKeyPermissions", err)
	}
	os.Chmod(f.Key, 0o600)

	// SIGHUP does not turn s1 into s2, or into an agent.
	ca.files(pki.Leaf{Identity: serverID("s2")})
	keepsOld("another identity", m.Reload())
	ca.files(pki.Leaf{Identity: agentID("s1")})
	keepsOld("another kind", m.Reload())

	// An expired certificate, or one not valid yet, would make every peer
	// refuse this process: keep the one that works.
	ca.files(pki.Leaf{Identity: serverID("s1"), NotBefore: time.Now().Add(-48 * time.Hour), Validity: time.Hour})
	keepsOld("expired certificate", m.Reload())
	ca.files(pki.Leaf{Identity: serverID("s1"), NotBefore: time.Now().Add(48 * time.Hour), Validity: time.Hour})
	keepsOld("certificate not valid yet", m.Reload())

	ca.files(pki.Leaf{Identity: serverID("s1")})
	if err := m.Reload(); err != nil {
		t.Fatalf("good reload: %v", err)
	}
	if m.Current() == orig || m.Current().Leaf.SerialNumber.Cmp(orig.Leaf.SerialNumber) == 0 {
		t.Error("a good reload kept the old certificate")
	}

	// Rotation: the new CA is trusted beside the old one, and the
	// certificate may come from either.
	next := newTestCA(t, "prod")
	next.dir = ca.dir
	next.files(pki.Leaf{Identity: serverID("s1")}, ca.ca.Cert, next.ca.Cert)
	if err := m.Reload(); err != nil {
		t.Fatalf("reload with two CAs: %v", err)
	}
	b := m.Current()
	if len(b.CAs) != 2 {
		t.Fatalf("%d CAs trusted, want 2", len(b.CAs))
	}
	for _, c := range []*testCA{ca, next} {
		leaf := c.bundle(pki.Leaf{Identity: agentID("a1")}).Leaf
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: b.Pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("a certificate of CA %s is not trusted during rotation: %v", c.ca.Cert.Subject.CommonName, err)
		}
	}

	if err := transport.StaticMaterial(orig).Reload(); err == nil || !strings.Contains(err.Error(), "no files to reload") {
		t.Errorf("reload of static material: %v", err)
	}
}

// echoRaft runs a raft stream layer for sec that echoes what each accepted
// connection sends; errs receives the error that ended each connection.
func echoRaft(t *testing.T, sec transport.Security) (addr string, errs <-chan error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	layer := sec.RaftStreamLayer(ln, nil)
	ch := make(chan error, 16)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := layer.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				buf := make([]byte, 64)
				for {
					n, err := c.Read(buf)
					if err != nil {
						ch <- err
						return
					}
					if _, err := c.Write(buf[:n]); err != nil {
						ch <- err
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		layer.Close()
		wg.Wait()
	})
	return ln.Addr().String(), ch
}

// attackerTLS is a client that presents cert (nil: none) and trusts any
// server: an attacker does not care whom it talks to.
func attackerTLS(cert *tls.Certificate) *tls.Config {
	cfg := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return cfg
}

func roundTrip(conn net.Conn) error {
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte("append entries")); err != nil {
		return err
	}
	buf := make([]byte, 14)
	_, err := io.ReadFull(conn, buf)
	return err
}

// TestRaftStreamLayerRefusesNonServers: the raft port completes a
// handshake only with a server certificate of its cluster; nothing else
// gets a byte through to raft.
func TestRaftStreamLayerRefusesNonServers(t *testing.T) {
	ca := newTestCA(t, "prod")
	addr, errs := echoRaft(t, ca.security(serverID("s1")))

	// A peer server of the cluster, dialling with its own stream layer.
	peerLn, _ := net.Listen("tcp", "127.0.0.1:0")
	peer := ca.security(serverID("s2")).RaftStreamLayer(peerLn, nil)
	defer peer.Close()
	conn, err := peer.Dial("127.0.0.1:1", time.Second)
	if err == nil {
		conn.Close()
		t.Fatal("dialled a closed port")
	}
	conn, err = peer.Dial(raft.ServerAddress(addr), 5*time.Second)
	if err != nil {
		t.Fatalf("peer dial: %v", err)
	}
	if err := roundTrip(conn); err != nil {
		t.Fatalf("peer round trip: %v", err)
	}
	conn.Close()
	<-errs

	other := newTestCA(t, "prod")
	expired := ca.bundle(pki.Leaf{Identity: serverID("s3"), NotBefore: time.Now().Add(-48 * time.Hour), Validity: time.Hour})
	tests := []struct {
		name      string
		cert      *tls.Certificate
		plaintext bool
		serverErr string // in the error that ended the accepted connection
	}{
		{"plaintext", nil, true, "first record does not look like a TLS handshake"},
		{"no certificate", nil, false, "certificate"},
		{"agent certificate", &ca.bundle(pki.Leaf{Identity: agentID("web-1")}).Cert, false, "peer is not a server of this cluster"},
		{"client certificate posing as a server", &ca.bundle(pki.Leaf{Identity: clientID("s2", "admin")}).Cert, false, "peer is not a server of this cluster"},
		{"server certificate of another CA", &other.bundle(pki.Leaf{Identity: serverID("s2")}).Cert, false, "certificate"},
		{"expired server certificate", &expired.Cert, false, "expired"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			conn := raw
			if !tt.plaintext {
				conn = tls.Client(raw, attackerTLS(tt.cert))
			}
			if err := roundTrip(conn); err == nil {
				t.Fatal("the raft port echoed an outsider's bytes")
			}
			select {
			case err := <-errs:
				if !strings.Contains(err.Error(), tt.serverErr) {
					t.Errorf("connection ended with %v, want it to say %q", err, tt.serverErr)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the raft port kept the connection open")
			}
		})
	}
}

// TestRaftDialRefusesNonServers: a raft client only talks to a server of
// its cluster, so a node cannot be made to replicate to an impostor.
func TestRaftDialRefusesNonServers(t *testing.T) {
	ca := newTestCA(t, "prod")
	other := newTestCA(t, "prod")
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	layer := ca.security(serverID("s1")).RaftStreamLayer(ln, nil)
	defer layer.Close()
	for name, b := range map[string]*transport.Bundle{
		"agent":             ca.bundle(pki.Leaf{Identity: agentID("s2")}),
		"client":            ca.bundle(pki.Leaf{Identity: clientID("s2", "admin")}),
		"another CA server": other.bundle(pki.Leaf{Identity: serverID("s2")}),
	} {
		tln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{b.Cert}})
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			c, err := tln.Accept()
			if err == nil {
				c.(*tls.Conn).Handshake()
				c.Close()
			}
		}()
		conn, err := layer.Dial(raft.ServerAddress(tln.Addr().String()), 5*time.Second)
		if err == nil {
			conn.Close()
			t.Errorf("%s: raft dialled an impostor", name)
		} else if !strings.Contains(err.Error(), "raft TLS handshake") {
			t.Errorf("%s: %v", name, err)
		}
		tln.Close()
	}
}

func TestProbeRaft(t *testing.T) {
	ca := newTestCA(t, "prod")
	addr, _ := echoRaft(t, ca.security(serverID("s1")))
	leader := ca.security(serverID("s0"))
	ctx := context.Background()
	if err := leader.ProbeRaft(ctx, addr, "s1"); err != nil {
		t.Fatalf("probe of s1: %v", err)
	}
	if err := leader.ProbeRaft(ctx, addr, "s2"); err == nil || !strings.Contains(err.Error(), `is server "s1", not "s2"`) {
		t.Errorf("probe expecting s2: %v", err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := ln.Addr().String()
	ln.Close()
	if err := leader.ProbeRaft(ctx, closed, "s1"); err == nil {
		t.Error("probe of a closed port succeeded")
	}
	// Another cluster's server at the address is not s1 of this one.
	other := newTestCA(t, "prod")
	otherAddr, _ := echoRaft(t, other.security(serverID("s1")))
	if err := leader.ProbeRaft(ctx, otherAddr, "s1"); err == nil {
		t.Error("probe accepted another CA's s1")
	}
}

// tlsServer serves handshakes with cert and reports nothing: the tests
// look at the client's side.
func tlsServer(t *testing.T, cert tls.Certificate) string {
	t.Helper()
	// h2, as gRPC servers negotiate: gRPC clients require it.
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

func handshake(addr string, cfg *tls.Config) (*tls.ConnectionState, error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	cs := conn.ConnectionState()
	return &cs, nil
}

// TestVerifyingClientConfig: clients accept only a server certificate of
// their cluster from a trusted CA carrying server.<cluster>.rel.
func TestVerifyingClientConfig(t *testing.T) {
	ca := newTestCA(t, "prod")
	other := newTestCA(t, "prod")
	cfg := transport.VerifyingClientConfig(ca.pool(), "prod", nil)

	if _, err := handshake(tlsServer(t, ca.bundle(pki.Leaf{Identity: serverID("s1")}).Cert), cfg); err != nil {
		t.Fatalf("right server: %v", err)
	}

	// A certificate naming server s1 but without the name clients check,
	// made by hand since the CA never makes one.
	key, _ := pki.NewKey()
	u, _ := url.Parse("rel://prod/server/s1")
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "server s1"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		URIs: []*url.URL{u}, DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.ca.Cert, key.Public(), ca.ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	wrongSAN := tls.Certificate{Certificate: [][]byte{der, ca.ca.Cert.Raw}, PrivateKey: key}

	tests := []struct {
		name string
		cert tls.Certificate
		want string
	}{
		{"wrong SAN", wrongSAN, "server.prod.rel"},
		{"agent certificate", ca.bundle(pki.Leaf{Identity: agentID("web-1")}).Cert, "server.prod.rel"},
		{"client certificate", ca.bundle(pki.Leaf{Identity: clientID("s1", "admin")}).Cert, "server.prod.rel"},
		{"server of another CA", other.bundle(pki.Leaf{Identity: serverID("s1")}).Cert, "unknown authority"},
		{"expired server", ca.bundle(pki.Leaf{Identity: serverID("s1"), NotBefore: time.Now().Add(-48 * time.Hour), Validity: time.Hour}).Cert, "expired"},
		{"server not valid yet", ca.bundle(pki.Leaf{Identity: serverID("s1"), NotBefore: time.Now().Add(48 * time.Hour), Validity: time.Hour}).Cert, "not yet valid"},
	}
	for _, tt := range tests {
		_, err := handshake(tlsServer(t, tt.cert), cfg)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want an error containing %q", tt.name, err, tt.want)
		}
	}
	// Another cluster's server, though the CA were trusted.
	otherCluster := newTestCA(t, "staging")
	both := ca.pool()
	both.AddCert(otherCluster.ca.Cert)
	if _, err := handshake(tlsServer(t, otherCluster.bundle(pki.Leaf{Identity: serverID("s1")}).Cert), transport.VerifyingClientConfig(both, "prod", nil)); err == nil {
		t.Error("a server of cluster staging was accepted by a client of prod")
	}
	// A certificate carrying the server name but naming an agent.
	key2, _ := pki.NewKey()
	ua, _ := url.Parse("rel://prod/agent/web-1")
	tmpl.SerialNumber, tmpl.URIs, tmpl.DNSNames, tmpl.IPAddresses = big.NewInt(8), []*url.URL{ua}, []string{"server.prod.rel"}, nil
	der2, err := x509.CreateCertificate(rand.Reader, tmpl, ca.ca.Cert, key2.Public(), ca.ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	agentWithName := tls.Certificate{Certificate: [][]byte{der2, ca.ca.Cert.Raw}, PrivateKey: key2}
	if _, err := handshake(tlsServer(t, agentWithName), cfg); err == nil || !strings.Contains(err.Error(), "not a server of this cluster") {
		t.Errorf("an agent certificate carrying the server name: %v, want it refused as not a server", err)
	}

	// Security builds its client config from the material current at each
	// connection: a CA bundle replaced by a reload (or an agent's renewal)
	// counts for the next handshake, through gRPC's credentials as well.
	sec := transport.Security{M: transport.StaticMaterial(ca.bundle(pki.Leaf{Identity: agentID("web-1")}))}
	addr := tlsServer(t, other.bundle(pki.Leaf{Identity: serverID("s1")}).Cert)
	if _, err := handshake(addr, sec.ClientConfig()); err == nil {
		t.Fatal("untrusted CA accepted")
	}
	grpcHandshake := func() error {
		raw, err := net.Dial("tcp", addr)
		if err != nil {
			return err
		}
		defer raw.Close()
		conn, _, err := transport.ClientCredentials(sec).ClientHandshake(context.Background(), addr, raw)
		if err == nil {
			conn.Close()
		}
		return err
	}
	if err := grpcHandshake(); err == nil {
		t.Fatal("untrusted CA accepted by the gRPC credentials")
	}
	sec.M.Set(other.bundle(pki.Leaf{Identity: agentID("web-1")}))
	if _, err := handshake(addr, sec.ClientConfig()); err != nil {
		t.Errorf("after the reload: %v", err)
	}
	if err := grpcHandshake(); err != nil {
		t.Errorf("gRPC credentials after the reload: %v", err)
	}
}

func TestPinnedClientConfig(t *testing.T) {
	ca := newTestCA(t, "prod")
	addr := tlsServer(t, ca.bundle(pki.Leaf{Identity: serverID("s1")}).Cert)
	if _, err := handshake(addr, transport.PinnedClientConfig(pki.Pin(ca.ca.Cert))); err != nil {
		t.Fatalf("right pin: %v", err)
	}
	wrong := pki.Pin(newTestCA(t, "prod").ca.Cert)
	_, err := handshake(addr, transport.PinnedClientConfig(wrong))
	if err == nil || !strings.Contains(err.Error(), "no CA of the server matches the CA pin "+wrong) {
		t.Errorf("wrong pin: %v, want an error naming the pin", err)
	}
	// The pinned CA must also have signed the server's certificate: a
	// server presenting the right CA next to its own leaf of another CA
	// is refused.
	other := newTestCA(t, "prod")
	forged := other.bundle(pki.Leaf{Identity: serverID("s1")}).Cert
	forged.Certificate = [][]byte{forged.Certificate[0], ca.ca.Cert.Raw}
	if _, err := handshake(tlsServer(t, forged), transport.PinnedClientConfig(pki.Pin(ca.ca.Cert))); err == nil {
		t.Error("a leaf of another CA was accepted next to the pinned CA")
	}
}
