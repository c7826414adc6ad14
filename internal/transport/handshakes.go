package transport

import (
	"context"
	"errors"
	"net"
	"time"

	"google.golang.org/grpc/credentials"
)

// ErrHandshakeBusy is returned to a connection that waited too long for a
// free handshake slot; gRPC closes it, and the client dials again after
// its backoff.
var ErrHandshakeBusy = errors.New("transport: too many TLS handshakes in progress; try again")

// LimitServerHandshakes wraps server credentials so that at most n TLS
// handshakes run at once; the others wait, up to wait, holding no CPU.
//
// Why: when 10,000 agents reconnect at once (their server died), gRPC
// starts a goroutine per connection for its handshake, each a few ms of
// ECDHE and signature work. Thousands of runnable goroutines ahead of
// raft's put its heartbeats hundreds of ms late, past the 500 ms leader
// lease: the survivors lost and re-elected leaders for minutes while the
// storm went on (make bench, reconnect row). With the handshakes queued,
// raft's goroutines wait behind at most n of them.
func LimitServerHandshakes(c credentials.TransportCredentials, n int, wait time.Duration) credentials.TransportCredentials {
	return &limitedCreds{TransportCredentials: c, slots: make(chan struct{}, max(n, 1)), wait: wait}
}

type limitedCreds struct {
	credentials.TransportCredentials
	slots chan struct{}
	wait  time.Duration
}

func (l *limitedCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	t := time.NewTimer(l.wait)
	defer t.Stop()
	select {
	case l.slots <- struct{}{}:
	case <-t.C:
		return nil, nil, ErrHandshakeBusy
	}
	defer func() { <-l.slots }()
	return l.TransportCredentials.ServerHandshake(conn)
}

// ClientHandshake is not limited: a server dials few connections.
func (l *limitedCreds) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return l.TransportCredentials.ClientHandshake(ctx, authority, conn)
}

// Clone keeps the slots: gRPC may clone credentials, and the limit is the
// server's, not each copy's.
func (l *limitedCreds) Clone() credentials.TransportCredentials {
	return &limitedCreds{TransportCredentials: l.TransportCredentials.Clone(), slots: l.slots, wait: l.wait}
}
