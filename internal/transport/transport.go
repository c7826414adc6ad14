// Package transport builds every listener and dialer of Rel: the gRPC API,
// raft's TCP stream layer and the HTTP server. Transport security is decided
// here and nowhere else, so that turning on mTLS (with the security work) is
// a change to this package, not a hunt through the code base.
//
// Today every connection is plaintext TCP.
package transport

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// Security is the transport security of one process. Its zero value is
// plaintext; mTLS settings will be fields of it.
type Security struct{}

// Listen opens a listener for one of the node's servers. kind ("grpc",
// "raft", "http") names it in errors.
func (Security) Listen(kind, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen for %s on %s: %w (is another rel-server using the port? pick another with --%s-addr)", kind, addr, err, kind)
	}
	return ln, nil
}

// GRPCServerOptions are the options every gRPC server is built with.
func (Security) GRPCServerOptions() []grpc.ServerOption {
	return nil
}

// GRPCDialOptions are the options every gRPC client connection (relctl,
// agents, server-to-server forwarding) is dialled with.
func (Security) GRPCDialOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
}

// HTTPTransport is the transport of every HTTP client between servers and
// from agents (artifact downloads).
func (Security) HTTPTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 16
	return t
}

// RaftStreamLayer wraps a listener into raft's stream layer. advertise is the
// address peers reach this node at.
func (Security) RaftStreamLayer(ln net.Listener, advertise net.Addr) raft.StreamLayer {
	return &streamLayer{Listener: ln, advertise: advertise, conns: map[net.Conn]struct{}{}}
}

// streamLayer tracks the connections it accepted: raft's NetworkTransport
// does not close inbound connections on Close, so their handlers would
// outlive the node, blocked in a read, until the peer hangs up.
type streamLayer struct {
	net.Listener
	advertise net.Addr

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
}

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
	tc := &trackedConn{Conn: c, layer: s}
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

func (s *streamLayer) Addr() net.Addr {
	if s.advertise != nil {
		return s.advertise
	}
	return s.Listener.Addr()
}

func (s *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	return d.DialContext(context.Background(), "tcp", string(address))
}
