// Package agentcert gets and keeps an agent's certificate. An agent starts
// with a join token and either the cluster's CA file or a CA pin; it makes
// its key locally, sends a certificate request with the token to any
// server, checks what comes back (signed by the pinned CA, naming its own
// node id), and keeps key and certificate in its data dir (0600). It renews
// at about two thirds of the certificate's lifetime, with jitter, using
// the certificate itself; an agent whose certificate expired enrols again
// with the (possibly new) token in its token file.
//
// An agent may instead be given a certificate made with `relctl tls cert
// create --agent` (CertFile, KeyFile): then nothing is enrolled or renewed.
package agentcert

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/relhq/rel/internal/pki"
	"github.com/relhq/rel/internal/retry"
	"github.com/relhq/rel/internal/transport"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// Files in Config.Dir.
const (
	caFile   = "ca.pem"
	certFile = "agent.pem"
	keyFile  = "agent-key.pem"
)

// Timing of enrolment and renewal.
const (
	rpcTimeout = 10 * time.Second
	retryMin   = 500 * time.Millisecond
	retryMax   = time.Minute
)

// ErrRefused is wrapped when the cluster refused the credential (an
// unknown, used-up, expired or revoked token; a revoked agent): retrying
// with the same one will not help.
var ErrRefused = errors.New("refused by the cluster")

// ErrSetup is wrapped when the agent's own configuration cannot enrol it
// (no token, an unreadable token or CA file): nothing was asked of the
// cluster, and retrying will not help.
var ErrSetup = errors.New("cannot enrol")

// Config says how the agent gets its certificate.
type Config struct {
	// Servers are gRPC addresses of the cluster's servers.
	Servers []string
	// NodeID is the id the certificate is for.
	NodeID string
	// Dir keeps key, certificate and CA bundle; "" keeps them in memory
	// (simulated agents).
	Dir string
	// CAFile is the CA bundle to trust; or Pin, the CA pin checked on the
	// first contact (the servers then send the bundle).
	CAFile, Pin string
	// JoinTokenFile holds the join token; JoinToken is the token itself
	// (simulations share one). Needed to enrol, not once enrolled.
	JoinTokenFile, JoinToken string
	// CertFile and KeyFile are a certificate made for the agent by an
	// operator: no enrolment, no renewal.
	CertFile, KeyFile string
	Logger            *slog.Logger
	// DialOptions are added to every connection (tests).
	DialOptions []grpc.DialOption
}

// Certs is an agent's current certificate.
type Certs struct {
	cfg    Config
	log    *slog.Logger
	m      *transport.Material
	static bool

	mu      sync.Mutex
	renewed []func()
}

// Check reports configuration mistakes before anything is dialled.
func (c Config) Check() error {
	switch {
	case c.CertFile != "" || c.KeyFile != "":
		if c.CertFile == "" || c.KeyFile == "" {
			return errors.New("--cert-file and --key-file go together")
		}
		if c.CAFile == "" {
			return errors.New("--cert-file needs --ca-file, the cluster's CA bundle")
		}
	case c.JoinTokenFile == "" && c.JoinToken == "" && c.Dir == "":
		return errors.New("no way to get a certificate: give --join-token-file and --ca-pin (make them with 'relctl agent token create'), or --ca-file, --cert-file and --key-file")
	}
	if c.Pin != "" {
		if err := pki.CheckPin(c.Pin); err != nil {
			return err
		}
	}
	if c.CertFile == "" && c.CAFile == "" && c.Pin == "" && (c.JoinTokenFile != "" || c.JoinToken != "") {
		return errors.New("enrolling needs a way to check the servers: give --ca-pin (printed by 'relctl agent token create') or --ca-file")
	}
	return nil
}

// Load returns the agent's certificate: an operator-made one, the one in
// Dir if it is still valid and names this node, or a new one enrolled with
// the join token (retrying servers until ctx ends or the cluster refuses).
func Load(ctx context.Context, cfg Config) (*Certs, error) {
	if err := cfg.Check(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	c := &Certs{cfg: cfg, log: log}
	if cfg.CertFile != "" {
		m, err := transport.NewMaterial(transport.Files{CA: cfg.CAFile, Cert: cfg.CertFile, Key: cfg.KeyFile})
		if err != nil {
			return nil, err
		}
		if err := c.checkIdentity(m.Current()); err != nil {
			return nil, err
		}
		c.m, c.static = m, true
		return c, nil
	}
	if b, err := c.loadDir(); err == nil {
		c.m = transport.StaticMaterial(b)
		log.Info("using the certificate in the data dir", "expires", b.Leaf.NotAfter.UTC().Format(time.RFC3339))
		return c, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		log.Warn("the certificate in the data dir cannot be used: enrolling again", "err", err)
	}
	b, err := c.enrolRetrying(ctx)
	if err != nil {
		return nil, err
	}
	c.m = transport.StaticMaterial(b)
	return c, nil
}

// Security is the transport security of the agent's connections: they
// present the current certificate (renewals included).
func (c *Certs) Security() transport.Security { return transport.Security{M: c.m} }

// Current is the certificate in use.
func (c *Certs) Current() *transport.Bundle { return c.m.Current() }

// OnRenew registers f to run after each renewal (the agent reconnects, so
// its stream is made with the new certificate).
func (c *Certs) OnRenew(f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.renewed = append(c.renewed, f)
}

func (c *Certs) checkIdentity(b *transport.Bundle) error {
	id := b.Identity
	if id.Kind != pki.KindAgent {
		return fmt.Errorf("the certificate is not an agent's but %s", id)
	}
	if id.ID != c.cfg.NodeID {
		return fmt.Errorf("the certificate is for agent %q, not --node-id %q", id.ID, c.cfg.NodeID)
	}
	if time.Now().After(b.Leaf.NotAfter) {
		return fmt.Errorf("the certificate expired at %s", b.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

func (c *Certs) loadDir() (*transport.Bundle, error) {
	if c.cfg.Dir == "" {
		return nil, os.ErrNotExist
	}
	files := transport.Files{CA: filepath.Join(c.cfg.Dir, caFile), Cert: filepath.Join(c.cfg.Dir, certFile), Key: filepath.Join(c.cfg.Dir, keyFile)}
	if _, err := os.Stat(files.Cert); err != nil {
		return nil, err
	}
	if c.cfg.CAFile != "" {
		// The operator's CA bundle wins over the one the servers sent.
		files.CA = c.cfg.CAFile
	}
	b, err := transport.LoadBundle(files)
	if err != nil {
		return nil, err
	}
	if err := c.checkIdentity(b); err != nil {
		return nil, err
	}
	// The pin is for the first contact only: after a CA rotation the
	// stored bundle may no longer hold the pinned CA, and is still right.
	return b, nil
}

func hasPin(cas []*x509.Certificate, pin string) bool {
	for _, ca := range cas {
		if pki.Pin(ca) == pin {
			return true
		}
	}
	return false
}

func (c *Certs) token() (string, error) {
	if c.cfg.JoinToken != "" {
		return c.cfg.JoinToken, nil
	}
	if c.cfg.JoinTokenFile == "" {
		where := "in the data dir"
		if c.cfg.Dir != "" {
			where = "in " + c.cfg.Dir
		}
		return "", fmt.Errorf("no valid certificate %s and no join token to enrol with: give --join-token-file and --ca-pin (make them with 'relctl agent token create'), or --ca-file, --cert-file and --key-file", where)
	}
	b, err := os.ReadFile(c.cfg.JoinTokenFile)
	if err != nil {
		return "", fmt.Errorf("read --join-token-file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("--join-token-file %s is empty", c.cfg.JoinTokenFile)
	}
	return tok, nil
}

// firstContact is the TLS config of enrolment: the CA file, or the pin.
func (c *Certs) firstContact() (*tls.Config, error) {
	if c.cfg.CAFile != "" {
		cas, err := pki.ReadCertsFile(c.cfg.CAFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		cluster := ""
		for _, ca := range cas {
			pool.AddCert(ca)
			if cl, err := pki.CACluster(ca); err == nil && cluster == "" {
				cluster = cl
			}
		}
		if cluster == "" {
			return nil, fmt.Errorf("--ca-file %s holds no Rel CA certificate", c.cfg.CAFile)
		}
		return transport.VerifyingClientConfig(pool, cluster, nil), nil
	}
	return transport.PinnedClientConfig(c.cfg.Pin), nil
}

// enrolRetrying tries the servers in turn, with jittered backoff, until one
// enrols the agent, the cluster refuses the token, or ctx ends.
func (c *Certs) enrolRetrying(ctx context.Context) (*transport.Bundle, error) {
	wait := retryMin
	for i := 0; ; i++ {
		addr := c.cfg.Servers[i%len(c.cfg.Servers)]
		b, err := c.enrol(ctx, addr)
		if err == nil {
			c.log.Info("enrolled", "server", addr, "expires", b.Leaf.NotAfter.UTC().Format(time.RFC3339), "labels", b.Identity.Labels)
			return b, nil
		}
		if errors.Is(err, ErrRefused) || errors.Is(err, ErrSetup) {
			return nil, err
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("enrolment stopped (%w); the last attempt: %v", ctx.Err(), err)
		}
		c.log.Warn("enrolment failed; trying the next server", "server", addr, "err", err, "retry_in", wait)
		if !retry.Sleep(ctx, retry.Jitter(wait)) {
			return nil, fmt.Errorf("enrolment stopped (%w); the last attempt: %v", ctx.Err(), err)
		}
		wait = min(wait*2, retryMax)
	}
}

func (c *Certs) enrol(ctx context.Context, addr string) (*transport.Bundle, error) {
	tok, err := c.token()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSetup, err)
	}
	cfg, err := c.firstContact()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSetup, err)
	}
	key, err := pki.NewKey()
	if err != nil {
		return nil, err
	}
	csr, err := pki.NewCSR(key, c.cfg.NodeID)
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cfg))}, c.cfg.DialOptions...)...)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	rctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	resp, err := relv1.NewEnrollServiceClient(conn).Enroll(rctx, &relv1.EnrollRequest{JoinToken: tok, NodeId: c.cfg.NodeID, Csr: csr})
	if err != nil {
		return nil, classify("enrol", err)
	}
	return c.accept(resp, key, true)
}

// classify marks the answers that retrying cannot change.
func classify(what string, err error) error {
	switch status.Code(err) {
	case codes.Unauthenticated, codes.PermissionDenied, codes.InvalidArgument, codes.FailedPrecondition:
		return fmt.Errorf("%w: %s: %s", ErrRefused, what, status.Convert(err).Message())
	}
	return fmt.Errorf("%s: %w", what, err)
}

// accept checks a signed certificate (it must name this node, match the
// key, and chain to a CA the agent trusts) and stores it. The CAs trusted
// from then on are the CA file's if there is one; else the bundle the
// server sent, which is authenticated: on the first contact it must hold
// the pinned CA, and a renewal's connection was verified against the CAs
// trusted until now (so a CA rotation reaches agents as they renew).
func (c *Certs) accept(resp *relv1.EnrollResponse, key crypto.Signer, first bool) (*transport.Bundle, error) {
	certs, err := pki.ParseCerts(resp.GetCertificate())
	if err != nil {
		return nil, fmt.Errorf("the server's certificate: %w", err)
	}
	cas, err := pki.ParseCerts(resp.GetCaCertificates())
	if err != nil {
		return nil, fmt.Errorf("the server's CA bundle: %w", err)
	}
	switch {
	case c.cfg.CAFile != "":
		// Trust what the operator gave, not what the server says.
		if cas, err = pki.ReadCertsFile(c.cfg.CAFile); err != nil {
			return nil, err
		}
	case first && !hasPin(cas, c.cfg.Pin):
		return nil, fmt.Errorf("%w: the CA bundle the server sent has no CA matching --ca-pin %s", ErrRefused, c.cfg.Pin)
	}
	b, err := transport.NewBundle(cas, certs, key)
	if err != nil {
		return nil, fmt.Errorf("the certificate the server signed: %w", err)
	}
	if err := c.checkIdentity(b); err != nil {
		return nil, fmt.Errorf("the certificate the server signed: %w", err)
	}
	if err := c.save(b, key); err != nil {
		return nil, err
	}
	return b, nil
}

// save writes the key (0600), the certificate and the CA bundle (0640) to
// Dir, key first: a crash in between leaves a key without its certificate,
// which Load treats as "enrol again", never a certificate without its key.
func (c *Certs) save(b *transport.Bundle, key crypto.Signer) error {
	if c.cfg.Dir == "" {
		return nil
	}
	if err := os.MkdirAll(c.cfg.Dir, 0o700); err != nil {
		return err
	}
	keyPEM, err := pki.EncodeKey(key)
	if err != nil {
		return err
	}
	var certPEM []byte
	for _, der := range b.Cert.Certificate {
		certPEM = append(certPEM, pki.EncodeCert(der)...)
	}
	for _, f := range []struct {
		name string
		data []byte
		perm os.FileMode
	}{{keyFile, keyPEM, 0o600}, {certFile, certPEM, 0o640}, {caFile, b.CAPEM(), 0o640}} {
		if err := pki.WriteFile(filepath.Join(c.cfg.Dir, f.name), f.data, f.perm, false); err != nil {
			return fmt.Errorf("save the agent's certificate: %w", err)
		}
	}
	return nil
}

// RenewAt is when a certificate should be renewed: two thirds into its
// lifetime, moved by up to a tenth of the lifetime either way, so agents
// enrolled together do not all renew together.
func RenewAt(leaf *x509.Certificate) time.Time {
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	spread := life / 10
	at := leaf.NotBefore.Add(life * 2 / 3)
	if spread > 0 {
		at = at.Add(time.Duration(rand.Int64N(int64(2*spread))) - spread)
	}
	return at
}

// Run renews the certificate until ctx ends: at RenewAt with the current
// certificate (any server); if that keeps failing until the certificate
// expires, by enrolling again with the join token. An operator-made
// certificate is not renewed: Run warns as its expiry nears.
func (c *Certs) Run(ctx context.Context) {
	if c.static {
		leaf := c.Current().Leaf
		if !retry.Sleep(ctx, time.Until(leaf.NotAfter.Add(-24*time.Hour))) {
			return
		}
		c.log.Warn("the agent's certificate expires within a day and this agent cannot renew a certificate it was given: make a new one with 'relctl tls cert create --agent', or enrol with a join token", "expires", leaf.NotAfter.UTC().Format(time.RFC3339))
		return
	}
	wait := retryMin
	for {
		leaf := c.Current().Leaf
		if !retry.Sleep(ctx, time.Until(RenewAt(leaf))) {
			return
		}
		b, err := c.renewRetrying(ctx, leaf)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			// Neither renewal nor a new enrolment worked (revoked, no
			// token): try again later, not in a loop.
			c.log.Error("the agent's certificate could not be renewed; retrying", "err", err, "retry_in", wait)
			if !retry.Sleep(ctx, retry.Jitter(wait)) {
				return
			}
			wait = min(wait*2, retryMax)
			continue
		}
		wait = retryMin
		c.m.Set(b)
		c.mu.Lock()
		hooks := append([]func(){}, c.renewed...)
		c.mu.Unlock()
		for _, f := range hooks {
			f()
		}
	}
}

// renewRetrying renews with the current certificate until it works or the
// certificate expires; then it enrols again with the join token.
func (c *Certs) renewRetrying(ctx context.Context, leaf *x509.Certificate) (*transport.Bundle, error) {
	wait := retryMin
	for i := 0; time.Now().Before(leaf.NotAfter); i++ {
		addr := c.cfg.Servers[i%len(c.cfg.Servers)]
		b, err := c.renew(ctx, addr)
		if err == nil {
			c.log.Info("certificate renewed", "server", addr, "expires", b.Leaf.NotAfter.UTC().Format(time.RFC3339))
			return b, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		c.log.Warn("certificate renewal failed; retrying", "server", addr, "err", err, "expires", leaf.NotAfter.UTC().Format(time.RFC3339))
		if errors.Is(err, ErrRefused) {
			break // revoked, or the CA changed: only a new enrolment helps
		}
		d := min(retry.Jitter(wait), time.Until(leaf.NotAfter))
		if !retry.Sleep(ctx, max(d, 0)) {
			return nil, ctx.Err()
		}
		wait = min(wait*2, retryMax)
	}
	c.log.Warn("enrolling again with the join token")
	return c.enrolRetrying(ctx)
}

func (c *Certs) renew(ctx context.Context, addr string) (*transport.Bundle, error) {
	key, err := pki.NewKey()
	if err != nil {
		return nil, err
	}
	csr, err := pki.NewCSR(key, c.cfg.NodeID)
	if err != nil {
		return nil, err
	}
	conn, err := grpc.NewClient(addr, append(c.Security().GRPCDialOptions(), c.cfg.DialOptions...)...)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	rctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	resp, err := relv1.NewEnrollServiceClient(conn).Renew(rctx, &relv1.RenewRequest{Csr: csr})
	if err != nil {
		return nil, classify("renew", err)
	}
	return c.accept(resp, key, false)
}
