package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"strings"
	"time"
)

// Validity defaults.
const (
	DefaultCAValidity    = 10 * 365 * 24 * time.Hour
	DefaultLeafValidity  = 365 * 24 * time.Hour
	DefaultAgentValidity = 24 * time.Hour
	MaxAgentValidity     = 90 * 24 * time.Hour
	MinAgentValidity     = 5 * time.Minute
	// backdate absorbs clock skew between the signer and the verifier.
	backdate = time.Minute
)

// CA is a certificate authority with its key.
type CA struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	Cluster string
}

// NewKey makes the private key of a new certificate: ECDSA P-256, which
// every TLS stack speaks and which signs fast.
func NewKey() (*ecdsa.PrivateKey, error) {
	return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
}

func serial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	return n.Add(n, big.NewInt(1)), nil
}

// NewCA makes a self-signed CA for cluster, valid from now for validity.
func NewCA(cluster string, validity time.Duration, now time.Time) (*CA, error) {
	if err := CheckCluster(cluster); err != nil {
		return nil, err
	}
	if validity <= 0 {
		validity = DefaultCAValidity
	}
	key, err := NewKey()
	if err != nil {
		return nil, err
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          sn,
		Subject:               pkix.Name{CommonName: "Rel CA " + cluster, Organization: []string{"Rel"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		URIs:                  []*url.URL{{Scheme: uriScheme, Host: cluster}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, Cluster: cluster}, nil
}

// LoadCA reads a CA certificate and its key (the key file must not be
// readable by group or others).
func LoadCA(certFile, keyFile string) (*CA, error) {
	certs, err := ReadCertsFile(certFile)
	if err != nil {
		return nil, err
	}
	key, err := ReadKeyFile(keyFile)
	if err != nil {
		return nil, err
	}
	for _, c := range certs {
		if c.IsCA && PublicKeysEqual(c.PublicKey, key.Public()) {
			cluster, err := CACluster(c)
			if err != nil {
				return nil, err
			}
			return &CA{Cert: c, Key: key, Cluster: cluster}, nil
		}
	}
	return nil, fmt.Errorf("%s: no CA certificate in it matches the key in %s", certFile, keyFile)
}

// CertPEM is the CA certificate in PEM.
func (ca *CA) CertPEM() []byte { return EncodeCert(ca.Cert.Raw) }

// Leaf describes a certificate to issue.
type Leaf struct {
	Identity
	// DNSNames and IPs are extra SANs (servers: names HTTP clients such
	// as curl or a load balancer check).
	DNSNames []string
	IPs      []net.IP
	// NotBefore defaults to now minus a minute (clock skew); NotAfter to
	// NotBefore plus Validity.
	NotBefore time.Time
	Validity  time.Duration
}

// Issue makes a key and a certificate for leaf, signed by the CA.
func (ca *CA) Issue(leaf Leaf, now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := NewKey()
	if err != nil {
		return nil, nil, err
	}
	der, err := ca.sign(leaf, key.Public(), now)
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err = EncodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return EncodeCert(der), keyPEM, nil
}

// SignCSR checks a certificate request's signature and key and signs it for
// leaf: the identity comes from leaf, never from the request's subject.
func (ca *CA) SignCSR(csrDER []byte, leaf Leaf, now time.Time) ([]byte, error) {
	csr, err := CheckCSR(csrDER)
	if err != nil {
		return nil, err
	}
	return ca.sign(leaf, csr.PublicKey, now)
}

// CheckCSR parses a DER certificate request and checks its signature and
// key type.
func CheckCSR(csrDER []byte) (*x509.CertificateRequest, error) {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("certificate request: bad signature: %w", err)
	}
	if err := checkPublicKey(csr.PublicKey); err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	return csr, nil
}

func checkPublicKey(pub any) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return errors.New("ECDSA keys must use P-256 or P-384")
		}
	case ed25519.PublicKey:
	default:
		return fmt.Errorf("key type %T: use ECDSA P-256 or Ed25519", pub)
	}
	return nil
}

func (ca *CA) sign(leaf Leaf, pub crypto.PublicKey, now time.Time) ([]byte, error) {
	if leaf.Cluster == "" {
		leaf.Cluster = ca.Cluster
	}
	if leaf.Cluster != ca.Cluster {
		return nil, fmt.Errorf("the CA is for cluster %q, not %q", ca.Cluster, leaf.Cluster)
	}
	if err := leaf.Check(); err != nil {
		return nil, err
	}
	nb := leaf.NotBefore
	if nb.IsZero() {
		nb = now.Add(-backdate)
	}
	validity := leaf.Validity
	if validity <= 0 {
		validity = DefaultLeafValidity
	}
	na := nb.Add(validity)
	if na.After(ca.Cert.NotAfter) {
		na = ca.Cert.NotAfter // a leaf cannot outlive its CA
	}
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: sn,
		Subject:      pkix.Name{CommonName: leaf.Kind + " " + leaf.ID, Organization: []string{"Rel " + leaf.Cluster}},
		NotBefore:    nb,
		NotAfter:     na,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		URIs:         []*url.URL{leaf.URI()},
		DNSNames:     leaf.DNSNames,
		IPAddresses:  leaf.IPs,
	}
	switch leaf.Kind {
	case KindServer:
		// Servers serve, and dial their peers.
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		tmpl.DNSNames = append([]string{ServerName(leaf.Cluster)}, leaf.DNSNames...)
	default:
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("sign certificate: %w", err)
	}
	return der, nil
}

// NewCSR makes a certificate request for key. Its subject is informative
// only: the signer decides the identity.
func NewCSR(key crypto.Signer, name string) ([]byte, error) {
	return x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}}, key)
}

// Pin is the CA pin agents are given: sha256 of the CA's public key
// (SubjectPublicKeyInfo), so it survives a re-issued CA certificate with
// the same key.
func Pin(ca *x509.Certificate) string {
	sum := sha256.Sum256(ca.RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// CheckPin checks the syntax of a pin.
func CheckPin(pin string) error {
	h, ok := strings.CutPrefix(pin, "sha256:")
	if !ok {
		return fmt.Errorf("CA pin %q: want sha256:<64 hex digits> (relctl agent token create prints it)", pin)
	}
	if b, err := hex.DecodeString(h); err != nil || len(b) != sha256.Size {
		return fmt.Errorf("CA pin %q: want sha256:<64 hex digits> (relctl agent token create prints it)", pin)
	}
	return nil
}

// Fingerprint is the sha256 of a certificate's DER, as openssl prints it.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	parts := make([]string, len(sum))
	for i, b := range sum {
		parts[i] = fmt.Sprintf("%02X", b)
	}
	return strings.Join(parts, ":")
}

// PublicKeysEqual reports whether two public keys are the same key.
func PublicKeysEqual(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	ea, ok := a.(equaler)
	return ok && ea.Equal(b)
}

// EncodeCert is a DER certificate in PEM.
func EncodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// EncodeKey is a private key in PKCS#8 PEM.
func EncodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseCerts reads every certificate in PEM data.
func ParseCerts(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return out, nil
}

// ParseKey reads a PEM private key (PKCS#8, EC or PKCS#1).
func ParseKey(data []byte) (crypto.Signer, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, errors.New("no PEM private key found")
		}
		var (
			k   any
			err error
		)
		switch b.Type {
		case "PRIVATE KEY":
			k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		case "EC PRIVATE KEY":
			k, err = x509.ParseECPrivateKey(b.Bytes)
		case "RSA PRIVATE KEY":
			k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, err
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("key type %T cannot sign", k)
		}
		return s, nil
	}
}
