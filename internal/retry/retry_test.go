package retry

import (
	"context"
	"testing"
	"time"
)

func TestJitter(t *testing.T) {
	if Jitter(0) != 0 || Jitter(-time.Second) != 0 {
		t.Error("Jitter of a non-positive duration is not 0")
	}
	lo, hi := false, false
	for range 1000 {
		d := Jitter(100 * time.Millisecond)
		if d < 50*time.Millisecond || d >= 150*time.Millisecond {
			t.Fatalf("Jitter(100ms) = %s, want [50ms, 150ms)", d)
		}
		lo, hi = lo || d < 100*time.Millisecond, hi || d >= 100*time.Millisecond
	}
	if !lo || !hi {
		t.Error("Jitter does not spread around its duration")
	}
}

func TestSleep(t *testing.T) {
	if !Sleep(context.Background(), time.Millisecond) {
		t.Error("Sleep with a live context reported it ended")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if Sleep(ctx, time.Hour) {
		t.Error("Sleep with an ended context reported it live")
	}
}
