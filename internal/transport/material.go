package transport

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/relhq/rel/internal/pki"
)

// Files names a process's TLS material on disk.
type Files struct {
	// CA is a PEM bundle of the CA certificates to trust. While a CA is
	// being replaced it holds both the old and the new one.
	CA string
	// Cert is the process's own certificate (PEM); Key its private key,
	// which must not be readable by group or others.
	Cert, Key string
}

// Bundle is one loaded set of TLS material.
type Bundle struct {
	// Cert is presented in handshakes: the leaf followed by the CA that
	// issued it, so that an agent holding only a CA pin can check it.
	Cert     tls.Certificate
	Leaf     *x509.Certificate
	Identity pki.Identity
	CAs      []*x509.Certificate
	Pool     *x509.CertPool
}

// Cluster is the cluster the bundle's certificate belongs to.
func (b *Bundle) Cluster() string { return b.Identity.Cluster }

// CAPEM is the trusted CA bundle in PEM.
func (b *Bundle) CAPEM() []byte {
	var out []byte
	for _, c := range b.CAs {
		out = append(out, pki.EncodeCert(c.Raw)...)
	}
	return out
}

// LoadBundle reads and checks the files: the key must match the
// certificate, the certificate must name a Rel identity and chain to one of
// the CAs, and the key file must be private.
func LoadBundle(f Files) (*Bundle, error) {
	if f.CA == "" || f.Cert == "" || f.Key == "" {
		return nil, errors.New("TLS needs a CA file, a certificate and a key")
	}
	cas, err := pki.ReadCertsFile(f.CA)
	if err != nil {
		return nil, err
	}
	certs, err := pki.ReadCertsFile(f.Cert)
	if err != nil {
		return nil, err
	}
	key, err := pki.ReadKeyFile(f.Key)
	if err != nil {
		return nil, err
	}
	b, err := NewBundle(cas, certs, key)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", f.Cert, err)
	}
	return b, nil
}

// NewBundle assembles a bundle from parsed material (an agent's enrolled
// certificate, tests).
func NewBundle(cas, certs []*x509.Certificate, key crypto.Signer) (*Bundle, error) {
	if len(certs) == 0 {
		return nil, errors.New("no certificate")
	}
	leaf := certs[0]
	if !pki.PublicKeysEqual(leaf.PublicKey, key.Public()) {
		return nil, errors.New("the certificate does not match the key")
	}
	id, err := pki.ParseIdentity(leaf)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	var issuer *x509.Certificate
	for _, c := range cas {
		if !c.IsCA {
			return nil, fmt.Errorf("CA file holds %q, which is not a CA certificate", c.Subject.CommonName)
		}
		pool.AddCert(c)
		if leaf.CheckSignatureFrom(c) == nil {
			issuer = c
		}
	}
	if issuer == nil {
		return nil, fmt.Errorf("certificate %q is not signed by any CA in the CA file", leaf.Subject.CommonName)
	}
	if cl, err := pki.CACluster(issuer); err == nil && cl != id.Cluster {
		return nil, fmt.Errorf("certificate is for cluster %q but its CA is for %q", id.Cluster, cl)
	}
	chain := [][]byte{leaf.Raw}
	if len(certs) > 1 {
		for _, c := range certs[1:] {
			chain = append(chain, c.Raw)
		}
	} else {
		chain = append(chain, issuer.Raw)
	}
	return &Bundle{
		Cert:     tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: leaf},
		Leaf:     leaf,
		Identity: id,
		CAs:      cas,
		Pool:     pool,
	}, nil
}

// Material is a process's current TLS material. Handshakes read it at the
// moment they happen, so a Reload (SIGHUP) or Set (an agent's renewed
// certificate) applies to every new connection without restarting
// listeners; established connections keep what they were made with.
type Material struct {
	files Files
	cur   atomic.Pointer[Bundle]
}

// NewMaterial loads files.
func NewMaterial(f Files) (*Material, error) {
	b, err := LoadBundle(f)
	if err != nil {
		return nil, err
	}
	m := &Material{files: f}
	m.cur.Store(b)
	return m, nil
}

// StaticMaterial holds b; Reload has no files to read.
func StaticMaterial(b *Bundle) *Material {
	m := &Material{}
	m.cur.Store(b)
	return m
}

// Current is the bundle in use.
func (m *Material) Current() *Bundle { return m.cur.Load() }

// Set replaces the bundle (an agent's renewed certificate).
func (m *Material) Set(b *Bundle) { m.cur.Store(b) }

// Reload reads the files again. If anything does not parse or fit
// together, the material in use is kept and the error says why; a reload
// never leaves a process without a certificate. The new certificate must
// name the same identity: a server's identity does not change by SIGHUP.
func (m *Material) Reload() error {
	if m.files.Cert == "" {
		return errors.New("no files to reload: the material was not loaded from files")
	}
	b, err := LoadBundle(m.files)
	if err != nil {
		return fmt.Errorf("TLS reload failed, still using the previous certificate: %w", err)
	}
	// A certificate outside its validity window would make every peer
	// refuse this process: keep the one in use.
	if now := time.Now(); now.Before(b.Leaf.NotBefore) || now.After(b.Leaf.NotAfter) {
		return fmt.Errorf("TLS reload refused, still using the previous certificate: %s is valid from %s to %s, not now",
			m.files.Cert, b.Leaf.NotBefore.UTC().Format(time.RFC3339), b.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	old := m.cur.Load()
	if old != nil && (old.Identity.Kind != b.Identity.Kind || old.Identity.ID != b.Identity.ID || old.Identity.Cluster != b.Identity.Cluster) {
		return fmt.Errorf("TLS reload refused, still using the previous certificate: the new certificate is %s, the running one %s", b.Identity, old.Identity)
	}
	m.cur.Store(b)
	return nil
}
