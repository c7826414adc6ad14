package main

import (
	"math"
	"testing"
)

// TestSteadyFlat: flatness compares the mean of the checkpoints around
// halfway with the mean of the last ones, so one checkpoint that falls
// just before a retention pass does not decide it, while steady growth
// still does.
func TestSteadyFlat(t *testing.T) {
	// series builds checkpoints every 500 rollouts from each one's
	// highest live heap (MiB) and snapshot (MiB); RSS follows the heap.
	series := func(live, snap []float64) []steadyPoint {
		var ps []steadyPoint
		for i := range live {
			ps = append(ps, steadyPoint{rollouts: 500 * (i + 1),
				maxLiveKiB: int64(live[i] * 1024), maxRSSKiB: int64(3 * live[i] * 1024), maxSnapBytes: int64(snap[i] * (1 << 20))})
		}
		return ps
	}
	for _, tc := range []struct {
		name            string
		live, snap      []float64
		half, end       string
		wantLive, wantS float64 // growth, ±0.005
	}{
		{
			// make bench on 2026-11-28 (commit 1921956): the single
			// checkpoints gave snapshot +16 % (21.8 at 2,500, 25.1 at
			// 5,000), the replicas at 5,000 being 22.4-25.1 MiB.
			name: "the 2026-11-28 run",
			live: []float64{71, 81, 86, 87, 89, 95, 99, 97, 102, 100},
			snap: []float64{17.4, 21.3, 22.9, 22.5, 21.8, 22.9, 23.1, 23.3, 23.1, 25.1},
			half: "2,000-3,000", end: "4,000-5,000", wantLive: 0.104, wantS: 0.064,
		},
		{
			name: "growing by a fifth",
			live: []float64{50, 60, 70, 80, 90, 100, 110, 120, 130, 140},
			snap: []float64{10, 11, 12, 13, 14, 15, 16, 17, 18, 19},
			half: "2,000-3,000", end: "4,000-5,000", wantLive: 0.444, wantS: 0.286,
		},
		{
			name: "two checkpoints",
			live: []float64{80, 100},
			snap: []float64{20, 20},
			half: "500-1,000", end: "500-1,000", wantLive: 0, wantS: 0,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			half, end, _, snapG, liveG := steadyFlat(series(tc.live, tc.snap))
			if half != tc.half || end != tc.end {
				t.Errorf("windows %s and %s, want %s and %s", half, end, tc.half, tc.end)
			}
			if math.Abs(liveG-tc.wantLive) > 0.005 || math.Abs(snapG-tc.wantS) > 0.005 {
				t.Errorf("live heap %+.3f, snapshot %+.3f, want %+.3f, %+.3f", liveG, snapG, tc.wantLive, tc.wantS)
			}
		})
	}
}
