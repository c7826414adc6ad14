package cli

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"
	"unicode"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/relhq/rel/internal/auth"
	"github.com/relhq/rel/internal/pki"
	"github.com/relhq/rel/internal/transport"
)

// Environment variables of the TLS and token settings. Each flag wins over
// its variable; REL_TOKEN carries the secret itself and is used only when no
// token file is given.
const (
	envCAFile    = "REL_CA_FILE"
	envCertFile  = "REL_CERT_FILE"
	envKeyFile   = "REL_KEY_FILE"
	envTokenFile = "REL_TOKEN_FILE"
	envToken     = "REL_TOKEN"
)

// maxTokenFile bounds what --token-file reads: a token is one short line.
const maxTokenFile = 4 << 10

// setting is one resolved global setting: its value and where it came from
// ("--ca-file" or "REL_CA_FILE"), for error messages. An empty value means
// it was not given.
type setting struct {
	value, source string
}

func (s setting) given() bool { return s.value != "" }

// describe names the setting and its value for messages: "--ca-file (ca.pem)".
func (s setting) describe() string { return fmt.Sprintf("%s (%s)", s.source, s.value) }

// securitySettings are the resolved --ca-file, --cert-file, --key-file,
// --token-file and REL_TOKEN.
type securitySettings struct {
	ca, cert, key, tokenFile setting
	token                    string // REL_TOKEN
}

// security is what relctl checks and proves on every connection: the
// cluster's CAs and name, and optionally a client certificate and a token.
type security struct {
	ca      setting
	pool    *x509.CertPool
	cluster string

	certFile setting
	cert     *tls.Certificate // nil: no client certificate

	token       string // "" without a token
	tokenSource string
}

// errNoCA is the usage error of a command that must talk to a server when
// no CA was given.
var errNoCA = usagef("no CA certificate to check the servers with: give --ca-file or set %s (rel-server --dev prints the export line)", envCAFile)

// loadSecurity reads and checks the TLS material and token before anything
// is dialled. Every failure is a usage error naming the flag or variable to
// fix: relctl cannot act on material it cannot read, and retrying cannot
// help.
func loadSecurity(st securitySettings, now time.Time) (*security, error) {
	if !st.ca.given() {
		return nil, errNoCA
	}
	s := &security{ca: st.ca, pool: x509.NewCertPool()}
	cas, err := pki.ReadCertsFile(st.ca.value)
	if err != nil {
		return nil, usagef("%s: %v", st.ca.source, err)
	}
	for _, c := range cas {
		if !c.IsCA {
			return nil, usagef("%s: %q is not a CA certificate: give the cluster's CA bundle (ca.pem), not a server or client certificate",
				st.ca.describe(), c.Subject.CommonName)
		}
		cluster, err := pki.CACluster(c)
		if err != nil {
			return nil, usagef("%s: %v", st.ca.describe(), err)
		}
		if s.cluster != "" && cluster != s.cluster {
			return nil, usagef("%s holds CAs of two clusters, %q and %q: give the CA bundle of one cluster", st.ca.describe(), s.cluster, cluster)
		}
		s.cluster = cluster
		if now.After(c.NotAfter) {
			return nil, usagef("%s: the CA certificate %q expired at %s: the cluster needs a new CA (relctl tls ca create)",
				st.ca.describe(), c.Subject.CommonName, c.NotAfter.UTC().Format(time.RFC3339))
		}
		s.pool.AddCert(c)
	}

	if st.cert.given() != st.key.given() {
		have, missing := st.cert, "--key-file/"+envKeyFile
		if st.key.given() {
			have, missing = st.key, "--cert-file/"+envCertFile
		}
		return nil, usagef("a client certificate needs both a certificate and its key: %s is given but not %s; give both or neither", have.describe(), missing)
	}
	if st.cert.given() {
		if err := s.loadClientCert(st.cert, st.key, cas, now); err != nil {
			return nil, err
		}
	}

	if err := s.loadToken(st); err != nil {
		return nil, err
	}
	return s, nil
}

// loadClientCert reads the client certificate and key and checks them
// against the CA bundle, so that a certificate the servers cannot accept is
// refused here with the reason instead of in a TLS handshake.
func (s *security) loadClientCert(certFile, keyFile setting, cas []*x509.Certificate, now time.Time) error {
	certs, err := pki.ReadCertsFile(certFile.value)
	if err != nil {
		return usagef("%s: %v", certFile.source, err)
	}
	key, err := pki.ReadKeyFile(keyFile.value)
	if err != nil {
		// pki says why and what to run (chmod 600 for a readable key).
		return usagef("%s: %v", keyFile.source, err)
	}
	leaf := certs[0]
	if !pki.PublicKeysEqual(leaf.PublicKey, key.Public()) {
		return usagef("%s and %s do not belong together: the key is not the certificate's", certFile.describe(), keyFile.describe())
	}
	id, err := pki.ParseIdentity(leaf)
	if err != nil {
		return usagef("%s: %v", certFile.describe(), err)
	}
	if id.Kind != pki.KindClient {
		return usagef("%s is the certificate of %s %s: relctl presents a person's client certificate (relctl tls cert create --client NAME --role ROLE)",
			certFile.describe(), id.Kind, id.ID)
	}
	if _, err := auth.ParseRole(id.Role); err != nil {
		return usagef("%s: %v", certFile.describe(), err)
	}
	fix := fmt.Sprintf("make a new one with 'relctl tls cert create --client %s --role %s'", id.ID, id.Role)
	switch {
	case now.After(leaf.NotAfter):
		return usagef("%s: the certificate of %s expired at %s: %s", certFile.describe(), id.ID, leaf.NotAfter.UTC().Format(time.RFC3339), fix)
	case now.Before(leaf.NotBefore):
		return usagef("%s: the certificate of %s is not valid until %s: check this machine's clock, or %s",
			certFile.describe(), id.ID, leaf.NotBefore.UTC().Format(time.RFC3339), fix)
	}
	signed := false
	for _, c := range cas {
		signed = signed || leaf.CheckSignatureFrom(c) == nil
	}
	if !signed {
		return usagef("%s is not signed by the CA in %s: the servers will refuse it; %s with this cluster's CA key",
			certFile.describe(), s.ca.describe(), fix)
	}
	if id.Cluster != s.cluster {
		return usagef("%s is for cluster %q, but the CA in %s is cluster %q's", certFile.describe(), id.Cluster, s.ca.describe(), s.cluster)
	}
	b, err := transport.NewBundle(cas, certs, key)
	if err != nil {
		return usagef("%s: %v", certFile.describe(), err)
	}
	s.certFile, s.cert = certFile, &b.Cert
	return nil
}

// loadToken reads --token-file (or REL_TOKEN_FILE), else REL_TOKEN.
func (s *security) loadToken(st securitySettings) error {
	switch {
	case st.tokenFile.given():
		data, err := readSmallFile(st.tokenFile.value, maxTokenFile)
		if err != nil {
			return usagef("%s: %v", st.tokenFile.source, err)
		}
		s.token, s.tokenSource = strings.TrimSpace(string(data)), st.tokenFile.describe()
	case st.token != "":
		s.token, s.tokenSource = strings.TrimSpace(st.token), envToken
	default:
		return nil
	}
	switch {
	case s.token == "":
		return usagef("%s is empty: it should hold the secret 'relctl acl bootstrap' or 'relctl acl token create' printed", s.tokenSource)
	case strings.HasPrefix(s.token, auth.JoinPrefix):
		return usagef("%s holds a join token (%s...), which only enrols agents: give an operator token (%s...)", s.tokenSource, auth.JoinPrefix, auth.TokenPrefix)
	case strings.ContainsFunc(s.token, func(r rune) bool { return unicode.IsSpace(r) || r < 0x21 || r > 0x7e }):
		return usagef("%s does not hold one token: it has spaces, several lines or non-ASCII characters", s.tokenSource)
	}
	return nil
}

// readSmallFile reads a file of at most limit bytes.
func readSmallFile(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// One byte past the limit tells "exactly limit" from "more".
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes: not a token file", path, limit)
	}
	return data, nil
}

// dialOptions are the credentials of one connection: TLS verifying that the
// peer is a server of the CA's cluster, presenting the client certificate if
// there is one, and the token on every call. rec records why a handshake
// failed, so that invoke can say it in words.
func (s *security) dialOptions(rec *handshakeRecord) []grpc.DialOption {
	pool, cluster := s.pool, s.cluster
	var cert func() *tls.Certificate
	if s.cert != nil {
		c := s.cert
		cert = func() *tls.Certificate { return c }
	}
	cfg := transport.VerifyingClientConfig(pool, cluster, cert)
	creds := &recordingCreds{TransportCredentials: credentials.NewTLS(cfg), rec: rec, awaitVerdict: s.cert != nil}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	if s.token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearerToken(s.token)))
	}
	return opts
}

// bearerToken sends an operator token as "authorization: Bearer <secret>".
type bearerToken string

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (t bearerToken) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(t)}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials: gRPC
// refuses to send the token over a connection without TLS.
func (bearerToken) RequireTransportSecurity() bool { return true }

// handshakeRecord keeps the first error of a connection's TLS handshake or
// of its first reads (in TLS 1.3 a server refusing the client certificate
// says so after the client has finished its side of the handshake). gRPC
// only passes these errors on as text; recording them keeps their types.
type handshakeRecord struct {
	mu  sync.Mutex
	err error
}

func (h *handshakeRecord) set(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err == nil {
		h.err = err
	}
}

func (h *handshakeRecord) get() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.err
}

// recordingCreds are TLS transport credentials that record handshake and
// read errors in rec.
type recordingCreds struct {
	credentials.TransportCredentials
	rec *handshakeRecord
	// awaitVerdict: relctl presents a client certificate, so the handshake
	// is only over once the server has had its say about it (see
	// awaitServer).
	awaitVerdict bool
}

func (c *recordingCreds) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ClientHandshake(ctx, authority, raw)
	if err != nil {
		c.rec.set(err)
		return nil, nil, err
	}
	rc := &recordingConn{Conn: conn, rec: c.rec}
	if tlsInfo, ok := info.(credentials.TLSInfo); ok && c.awaitVerdict && tlsInfo.State.Version >= tls.VersionTLS13 {
		if err := rc.awaitServer(ctx); err != nil {
			c.rec.set(err)
			conn.Close()
			return nil, nil, err
		}
	}
	return rc, info, nil
}

func (c *recordingCreds) Clone() credentials.TransportCredentials {
	return &recordingCreds{TransportCredentials: c.TransportCredentials.Clone(), rec: c.rec, awaitVerdict: c.awaitVerdict}
}

// verdictWait bounds how long awaitServer waits for the server's first
// bytes; a gRPC server sends its settings at once, so this is only reached
// by a server that says nothing first, and then the connection goes on.
const verdictWait = time.Second

// recordingConn records read errors, and hands out first the bytes
// awaitServer read.
type recordingConn struct {
	net.Conn
	rec     *handshakeRecord
	pending []byte
}

// awaitServer reads the server's first byte. In TLS 1.3 the client's side
// of the handshake ends before the server has checked the client's
// certificate, and a server that refuses it says so in an alert after the
// handshake; by then gRPC may have written its preface into the closed
// connection and see only "broken pipe". Reading first gets the alert
// itself. A gRPC server sends its settings frame right after the
// handshake, so this costs no round trip.
func (c *recordingConn) awaitServer(ctx context.Context) error {
	deadline := time.Now().Add(verdictWait)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := c.Conn.SetReadDeadline(deadline); err != nil {
		return err
	}
	buf := make([]byte, 1)
	n, err := c.Conn.Read(buf)
	if rerr := c.Conn.SetReadDeadline(time.Time{}); rerr != nil && err == nil {
		err = rerr
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		// Read timeouts leave a TLS connection usable: go on.
		err = nil
	}
	c.pending = buf[:n]
	return err
}

func (c *recordingConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	n, err := c.Conn.Read(p)
	if err != nil {
		c.rec.set(err)
	}
	return n, err
}

// tlsError is a connection that failed in its TLS handshake, described for
// people. It counts as unavailable (exit 3): no request reached a server.
type tlsError struct{ msg string }

func (e *tlsError) Error() string { return e.msg }

// describeHandshake turns the error a handshake with addr failed with into
// one sentence that says what to check.
func (s *security) describeHandshake(addr string, err error) error {
	var (
		unknownCA x509.UnknownAuthorityError
		invalid   x509.CertificateInvalidError
		hostname  x509.HostnameError
		notTLS    tls.RecordHeaderError
		opErr     *net.OpError
	)
	ca := "the CA in " + s.ca.describe()
	var msg string
	switch {
	case errors.As(err, &unknownCA):
		msg = fmt.Sprintf("the server at %s presented a certificate not signed by %s: check %s and --addr", addr, ca, s.ca.source)
	case errors.As(err, &hostname):
		msg = fmt.Sprintf("the server at %s is not a server of cluster %q (its certificate is for %s, not %s): check --addr and %s",
			addr, s.cluster, certNames(hostname.Certificate), pki.ServerName(s.cluster), s.ca.source)
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		msg = fmt.Sprintf("the server at %s presented a certificate that is expired or not yet valid (%v): renew the server's certificate, or check this machine's clock", addr, invalid)
	case errors.As(err, &invalid):
		msg = fmt.Sprintf("the server at %s presented a certificate that is not a server certificate of cluster %q: %v", addr, s.cluster, invalid)
	case errors.Is(err, transport.ErrNotServer):
		msg = fmt.Sprintf("the server at %s is not a server of cluster %q: %v", addr, s.cluster, err)
	case errors.As(err, &notTLS):
		msg = fmt.Sprintf("the server at %s does not speak TLS: is --addr the gRPC port (7400) of a rel-server of this version?", addr)
	case errors.As(err, &opErr) && opErr.Op == "remote error" && s.cert != nil:
		msg = fmt.Sprintf("the server at %s refused the client certificate in %s (%v): the cluster does not trust its CA, or it was revoked or expired; check it with 'relctl tls cert info %s'",
			addr, s.certFile.describe(), opErr.Err, s.certFile.value)
	case errors.As(err, &opErr) && opErr.Op == "remote error":
		msg = fmt.Sprintf("the server at %s refused the TLS handshake (%v)", addr, opErr.Err)
	default:
		msg = fmt.Sprintf("TLS handshake with the server at %s failed: %v", addr, err)
	}
	return &tlsError{msg: msg}
}

// certNames lists the DNS names a certificate is for, or its subject.
func certNames(c *x509.Certificate) string {
	if c == nil {
		return "another name"
	}
	if len(c.DNSNames) > 0 {
		return strings.Join(c.DNSNames, ", ")
	}
	return fmt.Sprintf("%q", c.Subject.CommonName)
}
