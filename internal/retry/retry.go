// Package retry has the two pieces every retry loop of Rel waits with:
// jittered durations, so that many nodes or clients retrying after the same
// event spread out instead of arriving together, and a sleep that a
// context ends.
package retry

import (
	"context"
	"math/rand/v2"
	"time"
)

// Jitter returns a duration drawn uniformly from [d/2, d*3/2).
func Jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return d/2 + rand.N(d)
}

// Sleep waits d or until ctx ends; it reports whether ctx is still live.
func Sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
