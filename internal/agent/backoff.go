package agent

import (
	"math/rand/v2"
	"time"
)

// backoff is exponential backoff with full jitter: the n-th wait is uniform
// in [0, min(max, min*2^n)), so agents that lost the same server spread
// their reconnects over the whole window instead of arriving together.
type backoff struct {
	min, max time.Duration
	attempt  int
}

// next returns the wait before the next attempt and counts it.
func (b *backoff) next() time.Duration {
	ceil := b.max
	if b.attempt < 32 { // beyond that the shift overflows; max has long been reached
		if d := b.min << b.attempt; d > 0 && d < b.max {
			ceil = d
		}
	}
	b.attempt++
	return fullJitter(ceil)
}

// reset starts over from min, after a connection that worked.
func (b *backoff) reset() { b.attempt = 0 }

// fullJitter returns a uniformly random duration in [0, d).
func fullJitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return rand.N(d)
}
