// Package transport builds every listener and dialer of Rel: the gRPC API,
// raft's stream layer and the HTTP server, and the clients of each. Transport
// security is decided here and nowhere else.
//
// Every connection is TLS (1.3 preferred, 1.2 at least) with certificates of
// the cluster CA:
//
//   - gRPC and HTTP servers ask for a client certificate but do not require
//     one in the handshake: people may authenticate with a token instead, an
//     agent enrolling has no certificate yet, and a load balancer checks
//     /v1/health without one. Who may do what is decided per call from the
//     verified certificate (internal/auth), with an error that says why.
//   - raft requires a server certificate of this cluster from both ends, in
//     the handshake: nothing else gets a byte to raft.
//   - every client checks that it talks to a server of the cluster
//     (server.<cluster>.rel) and presents its own certificate.
//
// Handshakes read the current Material, so certificates and CAs reload
// without restarting anything.
package transport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/relhq/rel/internal/pki"
)

// handshakeTimeout bounds a TLS handshake on raft connections, whose
// reader has no deadline of its own: a peer that connects and says
// nothing must not hold a goroutine forever.
const handshakeTimeout = 10 * time.Second

// Security is the transport security of one process: its TLS material.
type Security struct {
	M *Material
	// RaftPeer, when set, is asked about every server certificate that
	// connects to raft, after the handshake verified it: a server of the
	// cluster's CA that is not a member (a removed one) is refused.
	RaftPeer func(id string) error
}

// Listen opens a listener for one of the node's servers. kind ("grpc",
// "raft", "http") names it in errors.
func (Security) Listen(kind, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for %s on %s: %w (is another rel-server using the port? pick another with --%s-addr)", kind, addr, err, kind)
	}
	return ln, nil
}

// PeerIdentity is the verified identity of the certificate a TLS peer
// presented, or ok=false when it presented none.
func PeerIdentity(cs *tls.ConnectionState) (id pki.Identity, leaf *x509.Certificate, ok bool, err error) {
	if cs == nil || len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return pki.Identity{}, nil, false, nil
	}
	leaf = cs.VerifiedChains[0][0]
	id, err = pki.ParseIdentity(leaf)
	return id, leaf, true, err
}

// serverConfig is the TLS config of a listener. requireServer makes the
// handshake accept only a server certificate of this cluster (raft);
// otherwise a client certificate is verified if given, and judged later.
func (s Security) serverConfig(nextProtos []string, requireServer bool) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: nextProtos,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			b := s.M.Current()
			cfg := &tls.Config{
				MinVersion:   tls.VersionTLS12,
				NextProtos:   nextProtos,
				Certificates: []tls.Certificate{b.Cert},
				ClientCAs:    b.Pool,
				ClientAuth:   tls.VerifyClientCertIfGiven,
			}
			if requireServer {
				cfg.ClientAuth = tls.RequireAndVerifyClientCert
				cluster := b.Cluster()
				cfg.VerifyConnection = func(cs tls.ConnectionState) error {
					if err := checkServerPeer(&cs, cluster); err != nil {
						return err
					}
					if s.RaftPeer != nil {
						id, _, _, _ := PeerIdentity(&cs)
						return s.RaftPeer(id.ID)
					}
					return nil
				}
			}
			return cfg, nil
		},
	}
}

// ErrNotServer is wrapped when a peer that must be a server of this cluster
// is something else.
var ErrNotServer = errors.New("peer is not a server of this cluster")

func checkServerPeer(cs *tls.ConnectionState, cluster string) error {
	id, _, ok, err := PeerIdentity(cs)
	switch {
	case err != nil:
		return fmt.Errorf("%w: %v", ErrNotServer, err)
	case !ok:
		return fmt.Errorf("%w: no certificate", ErrNotServer)
	case id.Kind != pki.KindServer || id.Cluster != cluster:
		return fmt.Errorf("%w: certificate is %s", ErrNotServer, id)
	}
	return nil
}

// ClientConfig is the TLS config of a client that talks to servers of
// this process's cluster: it presents the process's current certificate
// and accepts only a server certificate of the cluster, verified by Go's
// own verification against the CAs trusted now. Build one per connection
// (GRPCDialOptions, HTTPTransport and raft's Dial do), so that a reloaded
// CA bundle or a renewed certificate applies to the next connection.
func (s Security) ClientConfig() *tls.Config {
	b := s.M.Current()
	return VerifyingClientConfig(b.Pool, b.Cluster(), func() *tls.Certificate { return &b.Cert })
}

// VerifyingClientConfig is a client TLS config that verifies the server
// against pool with the name server.<cluster>.rel (Go's verification: the
// chain, the name, the server usage), then checks that the certificate
// names a server of cluster; it presents cert's certificate if cert is
// non-nil.
func VerifyingClientConfig(pool *x509.CertPool, cluster string, cert func() *tls.Certificate) *tls.Config {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		RootCAs:    pool,
		ServerName: pki.ServerName(cluster),
		VerifyConnection: func(cs tls.ConnectionState) error {
			return checkServerIdentity(cs.PeerCertificates[0], cluster)
		},
	}
	if cert != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return cert(), nil
		}
	}
	return cfg
}

// checkServerIdentity checks that a verified server certificate names a
// server of cluster, not an agent or a person whose certificate happens to
// carry the server name.
func checkServerIdentity(leaf *x509.Certificate, cluster string) error {
	id, err := pki.ParseIdentity(leaf)
	if err != nil {
		return err
	}
	if id.Kind != pki.KindServer || id.Cluster != cluster {
		return fmt.Errorf("%w: certificate is %s", ErrNotServer, id)
	}
	return nil
}

// verifyServer verifies a server's chain against pool by hand: for the
// pinned first contact, where the CA to trust is only known once the
// server has sent it.
func verifyServer(cs tls.ConnectionState, pool *x509.CertPool, cluster string) error {
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	leaf := cs.PeerCertificates[0]
	if _, err := leaf.Verify(x509.VerifyOptions{
		DNSName:       pki.ServerName(cluster),
		Roots:         pool,
		Intermediates: inter,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		return fmt.Errorf("the server's certificate is not a server certificate of cluster %q signed by the pinned CA: %w", cluster, err)
	}
	return checkServerIdentity(leaf, cluster)
}

// PinnedClientConfig is the client config of an agent's first contact,
// when all it knows is the CA pin: the server's chain must hold a CA whose
// public key hashes to pin, and the server's certificate must verify
// against that CA as a server of its cluster. The agent's cluster is
// learnt from that certificate.
//
// This is the one client config that turns Go's verification off: there
// is no CA to give it as RootCAs before the server has sent one (kubeadm's
// discovery with a CA hash does the same). VerifyConnection then does the
// full verification, chain, name and usage, against the CA the pin
// selects, and refuses the connection otherwise; nothing is sent before it
// has passed. Agents use it only to enrol; afterwards they trust the CA
// bundle they were given.
func PinnedClientConfig(pin string) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // no RootCAs yet: verified in VerifyConnection against the pinned CA
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the server presented no certificate")
			}
			var pinned *x509.Certificate
			for _, c := range cs.PeerCertificates[1:] {
				if c.IsCA && pki.Pin(c) == pin {
					pinned = c
				}
			}
			if pinned == nil {
				return fmt.Errorf("no CA of the server matches the CA pin %s: check --ca-pin against 'relctl agent token create' or 'relctl tls cert info ca.pem'", pin)
			}
			id, err := pki.ParseIdentity(cs.PeerCertificates[0])
			if err != nil {
				return err
			}
			pool := x509.NewCertPool()
			pool.AddCert(pinned)
			return verifyServer(cs, pool, id.Cluster)
		},
	}
}

// GRPCServerOptions are the options every gRPC server is built with.
func (s Security) GRPCServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.Creds(credentials.NewTLS(s.serverConfig([]string{"h2"}, false)))}
}

// GRPCDialOptions are the options every gRPC client connection to a server
// of the cluster (server to server, agents) is dialled with. The TLS config
// is built at each handshake, from the material current then.
func (s Security) GRPCDialOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithTransportCredentials(ClientCredentials(s))}
}

// ClientCredentials are the gRPC transport credentials of s's clients.
func ClientCredentials(s Security) credentials.TransportCredentials { return clientCreds{s} }

// clientCreds are gRPC transport credentials whose TLS config is made per
// connection (Security.ClientConfig), so a long-lived client such as a
// peer pool picks up reloaded CAs and renewed certificates when it
// reconnects.
type clientCreds struct{ sec Security }

// ClientHandshake verifies the server as server.<cluster>.rel whatever
// address or authority it was dialled by: gRPC's TLS credentials check the
// authority they are given, so they are given that name.
func (c clientCreds) ClientHandshake(ctx context.Context, _ string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	cfg := c.sec.ClientConfig()
	return credentials.NewTLS(cfg).ClientHandshake(ctx, cfg.ServerName, conn)
}

func (c clientCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("transport: client credentials cannot serve")
}

func (c clientCreds) Info() credentials.ProtocolInfo {
	return credentials.NewTLS(c.sec.ClientConfig()).Info()
}

func (c clientCreds) Clone() credentials.TransportCredentials { return c }

// OverrideServerName is deprecated in gRPC and unused: the server name is
// always server.<cluster>.rel.
func (c clientCreds) OverrideServerName(string) error { return nil }

// HTTPServerTLS is the TLS config of the HTTP server.
func (s Security) HTTPServerTLS() *tls.Config {
	return s.serverConfig([]string{"h2", "http/1.1"}, false)
}

// HTTPTransport is the transport of every HTTP client between servers and
// from agents (artifact downloads from the cluster's store).
func (s Security) HTTPTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 16
	// The TLS config is made per connection, from the material current
	// then (a reloaded CA, a renewed certificate).
	t.DialTLSContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		raw, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		cfg := s.ClientConfig()
		cfg.NextProtos = []string{"h2", "http/1.1"}
		conn := tls.Client(raw, cfg)
		if err := conn.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, err
		}
		return conn, nil
	}
	t.ForceAttemptHTTP2 = true
	return t
}

// RaftStreamLayer wraps a listener into raft's stream layer over mutual
// TLS. advertise is the address peers reach this node at.
func (s Security) RaftStreamLayer(ln net.Listener, advertise net.Addr) raft.StreamLayer {
	return &streamLayer{Listener: ln, advertise: advertise, sec: s, conns: map[net.Conn]struct{}{}}
}

// ProbeRaft dials a raft address and completes a TLS handshake, checking
// that the node there is server id of this cluster; then it hangs up.
// The leader runs it before admitting a node, so a join naming an address
// nobody answers at (or somebody else answers at) is refused instead of
// costing the cluster its quorum.
func (s Security) ProbeRaft(ctx context.Context, addr, id string) error {
	d := net.Dialer{Timeout: 5 * time.Second}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer raw.Close()
	var got pki.Identity
	cfg := s.ClientConfig()
	verify := cfg.VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if err := verify(cs); err != nil {
			return err
		}
		got, _ = pki.ParseIdentity(cs.PeerCertificates[0])
		return nil
	}
	conn := tls.Client(raw, cfg)
	hctx, cancel := context.WithTimeout(ctx, handshakeTimeout)
	defer cancel()
	if err := conn.HandshakeContext(hctx); err != nil {
		return err
	}
	defer conn.Close()
	if got.ID != id {
		return fmt.Errorf("the node at %s is server %q, not %q", addr, got.ID, id)
	}
	return nil
}

// streamLayer is raft's transport over mutual TLS. It tracks the
// connections it accepted: raft's NetworkTransport does not close inbound
// connections on Close, so their handlers would outlive the node, blocked
// in a read, until the peer hangs up.
type streamLayer struct {
	net.Listener
	advertise net.Addr
	sec       Security

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
}

// Accept returns the next connection. Its TLS handshake runs on the first
// read or write, in raft's per-connection goroutine, so a slow or hostile
// peer cannot stall the accept loop; the handshake has its own deadline
// and fails unless the peer is a server of this cluster.
func (s *streamLayer) Accept() (net.Conn, error) {
	c, err := s.Listener.Accept()
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.Close()
		return nil, net.ErrClosed
	}
	tc := &trackedConn{Conn: &handshakingConn{Conn: tls.Server(c, s.sec.serverConfig(nil, true))}, layer: s}
	s.conns[tc] = struct{}{}
	return tc, nil
}

// Close stops accepting and closes every accepted connection.
func (s *streamLayer) Close() error {
	err := s.Listener.Close()
	s.mu.Lock()
	s.closed = true
	conns := s.conns
	s.conns = map[net.Conn]struct{}{}
	s.mu.Unlock()
	for c := range conns {
		c.(*trackedConn).Conn.Close()
	}
	return err
}

type trackedConn struct {
	net.Conn
	layer *streamLayer
	once  sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.layer.mu.Lock()
		delete(c.layer.conns, c)
		c.layer.mu.Unlock()
	})
	return c.Conn.Close()
}

// handshakingConn completes the TLS handshake, bounded by handshakeTimeout,
// before the first read or write.
type handshakingConn struct {
	*tls.Conn
	once sync.Once
	err  error
}

func (c *handshakingConn) handshake() error {
	c.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
		defer cancel()
		c.err = c.Conn.HandshakeContext(ctx)
	})
	return c.err
}

func (c *handshakingConn) Read(p []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

func (c *handshakingConn) Write(p []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

func (s *streamLayer) Addr() net.Addr {
	if s.advertise != nil {
		return s.advertise
	}
	return s.Listener.Addr()
}

// Dial connects to a peer's raft port and completes the handshake, which
// fails unless the peer is a server of this cluster.
func (s *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	raw, err := d.DialContext(context.Background(), "tcp", string(address))
	if err != nil {
		return nil, err
	}
	conn := tls.Client(raw, s.sec.ClientConfig())
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := conn.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("raft TLS handshake with %s: %w", address, err)
	}
	return conn, nil
}
