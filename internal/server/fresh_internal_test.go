package server

import (
	"context"
	"testing"
	"time"
)

// A replica starts stale; wait blocks until it is fresh, and blocks again
// once it has gone stale (a partition) until it has caught up.
func TestFreshnessGate(t *testing.T) {
	f := newFreshness()
	short := func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		return f.wait(ctx)
	}
	if short() {
		t.Fatal("a new replica is fresh before it heard from the leader")
	}
	done := make(chan bool)
	go func() { done <- f.wait(context.Background()) }()
	f.set(true)
	if !<-done {
		t.Fatal("wait did not return once fresh")
	}
	f.set(true) // idempotent: closing twice would panic
	if !short() {
		t.Fatal("fresh replica blocks")
	}
	f.set(false)
	f.set(false)
	if short() || !f.isStale() {
		t.Fatal("stale replica lets updates through")
	}
	f.set(true)
	if !short() {
		t.Fatal("caught-up replica blocks")
	}
}
