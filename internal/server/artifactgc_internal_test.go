package server

import (
	"context"
	"testing"
	"time"
)

// TestRemovals: wait returns once the handled index reaches it, the index
// only moves forward, and a restart reads it back from its file.
func TestRemovals(t *testing.T) {
	dir := t.TempDir()
	r := newRemovals(dir)
	if r.processed() != 0 {
		t.Fatalf("a new store has handled %d", r.processed())
	}
	done := make(chan error, 1)
	go func() { done <- r.wait(context.Background(), 7) }()
	r.advance(5)
	select {
	case err := <-done:
		t.Fatalf("wait(7) returned at 5: %v", err)
	default:
	}
	r.advance(9)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("wait(7) still blocked at 9")
	}
	r.advance(3)
	if r.processed() != 9 {
		t.Fatalf("handled index went back to %d", r.processed())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := r.wait(ctx, 10); err == nil {
		t.Fatal("wait(10) returned at 9")
	}
	if again := newRemovals(dir); again.processed() != 9 {
		t.Fatalf("after a restart: %d, want 9", again.processed())
	}
}
