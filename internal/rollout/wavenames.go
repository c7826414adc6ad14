package rollout

import (
	"fmt"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// WaveNumber is the number people know the wave at index i of r by: in
// relctl's tables, in event messages and in "relctl rollout approve
// --wave". A canary deploy's canary is wave 0 and its other waves count
// from 1; every other rollout counts its waves from 1, so that the last is
// always "wave M of M". Rows, events and JSON keep the index, from 0.
func WaveNumber(r *relv1.Rollout, i uint32) uint32 {
	if r.GetKind() != KindRollback && r.GetSpec().GetStrategy() == Canary {
		return i
	}
	return i + 1
}

// WaveLabel names the wave at index i of r for people: "canary", or
// "wave N of M" numbered as WaveNumber numbers them.
func WaveLabel(r *relv1.Rollout, i uint32) string {
	if r.GetKind() != KindRollback && r.GetSpec().GetStrategy() == Canary && i == 0 {
		return "canary"
	}
	last := WaveNumber(r, max(r.GetWaveCount(), 1)-1)
	return fmt.Sprintf("wave %d of %d", WaveNumber(r, i), last)
}

// waveIndex is the index of the wave people number n in r, and whether
// there is one.
func waveIndex(r *relv1.Rollout, n uint32) (uint32, bool) {
	base := WaveNumber(r, 0)
	if n < base || n-base >= r.GetWaveCount() {
		return 0, false
	}
	return n - base, true
}
