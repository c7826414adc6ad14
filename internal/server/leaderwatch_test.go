package server

import (
	"context"
	"testing"
	"time"
)

// TestSleepOrLeader: a wait for a leader ends soon after a leader change,
// at its timer otherwise, and reports an ended context.
func TestSleepOrLeader(t *testing.T) {
	tests := []struct {
		name     string
		d        time.Duration
		notify   bool
		cancel   bool
		wantLive bool
	}{
		{"a new leader ends an hour's wait", time.Hour, true, false, true},
		{"the timer ends it without one", 10 * time.Millisecond, false, false, true},
		{"an ended context", time.Hour, false, true, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var w leaderWatch
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			changed := w.changed()
			if tc.notify {
				w.notify()
			}
			if tc.cancel {
				cancel()
			}
			done := make(chan bool, 1)
			go func() { done <- sleepOrLeader(ctx, tc.d, changed) }()
			select {
			case live := <-done:
				if live != tc.wantLive {
					t.Errorf("sleepOrLeader reported live=%v, want %v", live, tc.wantLive)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("sleepOrLeader still waiting after 5s")
			}
			if tc.notify {
				select {
				case <-w.changed():
					t.Error("the channel after a change is closed already")
				default:
				}
			}
		})
	}
}
