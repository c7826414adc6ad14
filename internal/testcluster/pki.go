package testcluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/relhq/rel/internal/audit"
	"github.com/relhq/rel/internal/auth"
	"github.com/relhq/rel/internal/pki"
	"github.com/relhq/rel/internal/transport"
)

// Cluster is the name of test clusters' CA.
const ClusterName = "test"

// PKI is a test cluster's CA, on disk as the servers read it.
type PKI struct {
	Dir       string
	CA        *pki.CA
	CAFile    string
	CAKeyFile string
	// AuditKeyFile and AuditPubFile are the cluster's audit key pair
	// (audit.key, audit.pub beside the CA), as relctl tls ca create
	// writes them.
	AuditKeyFile, AuditPubFile string
}

// NewPKI makes a CA for cluster in a temp dir.
func NewPKI(t testing.TB, cluster string) *PKI {
	t.Helper()
	ca, err := pki.NewCA(cluster, 0, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p := &PKI{Dir: dir, CA: ca, CAFile: filepath.Join(dir, "ca.pem"), CAKeyFile: filepath.Join(dir, "ca-key.pem")}
	key, err := pki.EncodeKey(ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, p.CAFile, ca.CertPEM(), 0o644)
	writeFile(t, p.CAKeyFile, key, 0o600)
	if p.AuditKeyFile, p.AuditPubFile, err = audit.WriteKeyPair(dir); err != nil {
		t.Fatal(err)
	}
	return p
}

func writeFile(t testing.TB, path string, data []byte, perm os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, perm); err != nil {
		t.Fatal(err)
	}
}

// Files issues a certificate for leaf and writes it and its key; it
// returns their paths.
func (p *PKI) Files(t testing.TB, leaf pki.Leaf) (certFile, keyFile string) {
	t.Helper()
	certPEM, keyPEM, err := p.CA.Issue(leaf, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	name := leaf.Kind + "-" + leaf.ID
	certFile, keyFile = filepath.Join(p.Dir, name+".pem"), filepath.Join(p.Dir, name+"-key.pem")
	writeFile(t, certFile, certPEM, 0o644)
	writeFile(t, keyFile, keyPEM, 0o600)
	return certFile, keyFile
}

// Bundle issues an in-memory certificate for leaf.
func (p *PKI) Bundle(t testing.TB, leaf pki.Leaf) *transport.Bundle {
	t.Helper()
	certPEM, keyPEM, err := p.CA.Issue(leaf, time.Now())
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
	b, err := transport.NewBundle([]*x509.Certificate{p.CA.Cert}, certs, key)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Identities tests connect as.
func AdminID() pki.Identity { return ClientID("test-admin", auth.Admin) }

// ClientID is a person's client certificate with role.
func ClientID(name string, role auth.Role) pki.Identity {
	return pki.Identity{Cluster: ClusterName, Kind: pki.KindClient, ID: name, Role: string(role)}
}

// AgentID is an agent's certificate.
func AgentID(id string) pki.Identity {
	return pki.Identity{Cluster: ClusterName, Kind: pki.KindAgent, ID: id}
}

// ServerID is a server's certificate.
func ServerID(id string) pki.Identity {
	return pki.Identity{Cluster: ClusterName, Kind: pki.KindServer, ID: id}
}

// Security is the transport security of a process holding a certificate
// for id.
func (p *PKI) Security(t testing.TB, id pki.Identity) transport.Security {
	t.Helper()
	id.Cluster = p.CA.Cluster
	return transport.Security{M: transport.StaticMaterial(p.Bundle(t, pki.Leaf{Identity: id}))}
}

// DialOptions are the dial options of a client presenting a certificate
// for id, or none when id is nil; either way it verifies the servers.
func (p *PKI) DialOptions(t testing.TB, id *pki.Identity) []grpc.DialOption {
	t.Helper()
	if id == nil {
		pool := x509.NewCertPool()
		pool.AddCert(p.CA.Cert)
		cfg := transport.VerifyingClientConfig(pool, p.CA.Cluster, nil)
		return []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cfg))}
	}
	return p.Security(t, *id).GRPCDialOptions()
}

// Dial connects to addr presenting a certificate for id (nil: none). The
// connection is closed when the test ends.
func (p *PKI) Dial(t testing.TB, addr string, id *pki.Identity, extra ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, append(p.DialOptions(t, id), extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TLSConfig is a client TLS config presenting a certificate for id (nil:
// none) that verifies the servers: for HTTP clients.
func (p *PKI) TLSConfig(t testing.TB, id *pki.Identity) *tls.Config {
	t.Helper()
	if id == nil {
		pool := x509.NewCertPool()
		pool.AddCert(p.CA.Cert)
		return transport.VerifyingClientConfig(pool, p.CA.Cluster, nil)
	}
	return p.Security(t, *id).ClientConfig()
}

// Token is per-RPC credentials carrying an operator token.
type Token string

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (tok Token) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(tok)}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials: a
// token never travels in the clear.
func (Token) RequireTransportSecurity() bool { return true }
