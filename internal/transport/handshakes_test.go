package transport

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/credentials"
)

// blockingCreds' server handshakes wait for release and count how many
// run at once.
type blockingCreds struct {
	credentials.TransportCredentials
	release      chan struct{}
	running, top atomic.Int32
	started      chan struct{}
}

func (b *blockingCreds) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	n := b.running.Add(1)
	for {
		t := b.top.Load()
		if n <= t || b.top.CompareAndSwap(t, n) {
			break
		}
	}
	b.started <- struct{}{}
	<-b.release
	b.running.Add(-1)
	return c, nil, nil
}

func (b *blockingCreds) Clone() credentials.TransportCredentials { return b }

func TestLimitServerHandshakes(t *testing.T) {
	inner := &blockingCreds{release: make(chan struct{}), started: make(chan struct{}, 64)}
	lim := LimitServerHandshakes(inner, 3, time.Minute)
	// A clone shares the limit: gRPC may clone credentials.
	clone := lim.Clone()
	var wg sync.WaitGroup
	for i := range 10 {
		c := lim
		if i%2 == 1 {
			c = clone
		}
		wg.Go(func() {
			a, b := net.Pipe()
			defer a.Close()
			defer b.Close()
			if _, _, err := c.ServerHandshake(a); err != nil {
				t.Errorf("handshake %d: %v", i, err)
			}
		})
	}
	for range 3 {
		<-inner.started
	}
	// Three run; the other seven wait without starting.
	select {
	case <-inner.started:
		t.Fatalf("a fourth handshake started while three ran (limit 3)")
	case <-time.After(100 * time.Millisecond):
	}
	for range 10 {
		inner.release <- struct{}{}
	}
	wg.Wait()
	if top := inner.top.Load(); top != 3 {
		t.Fatalf("at most %d handshakes ran at once, want 3", top)
	}
}

func TestLimitServerHandshakesGivesUp(t *testing.T) {
	inner := &blockingCreds{release: make(chan struct{}), started: make(chan struct{}, 4)}
	lim := LimitServerHandshakes(inner, 1, 50*time.Millisecond)
	done := make(chan struct{})
	go func() {
		defer close(done)
		a, b := net.Pipe()
		defer a.Close()
		defer b.Close()
		lim.ServerHandshake(a)
	}()
	<-inner.started
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, _, err := lim.ServerHandshake(a); !errors.Is(err, ErrHandshakeBusy) {
		t.Fatalf("a handshake that found no slot within the wait: %v, want ErrHandshakeBusy", err)
	}
	inner.release <- struct{}{}
	<-done
	// The slot is free again.
	go func() { inner.release <- struct{}{} }()
	if _, _, err := lim.ServerHandshake(a); err != nil {
		t.Fatalf("after the slot was freed: %v", err)
	}
}
