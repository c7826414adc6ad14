package rollout_test

import (
	"testing"

	"github.com/relhq/rel/internal/rollout"
	"github.com/relhq/rel/internal/rollout/rolloutsim"
)

// TestRaftBytesGrowLinearly runs whole rolling rollouts (max-parallel 1)
// through the real planner, engine commit and FSM over n and 2n simulated
// hosts and weighs what they write to the raft log. When every step carried
// the whole rollout row, a step grew with the fleet and the rollout's bytes
// with its square (x4 for twice the hosts); a step carries what changed,
// so twice the hosts write about twice the bytes and no step grows.
func TestRaftBytesGrowLinearly(t *testing.T) {
	const n = 100
	var res [2]rolloutsim.Result
	for i, hosts := range []int{n, 2 * n} {
		// Replay: the log applied as it was written before deltas (whole
		// rows) ends in the very same state.
		r, err := rolloutsim.Rolling(rolloutsim.Config{Hosts: hosts, Replay: i == 0})
		if err != nil {
			t.Fatal(err)
		}
		if r.FinalState != rollout.StateSucceeded || r.Steps < hosts {
			t.Fatalf("%d hosts: rollout ended %s after %d steps", hosts, r.FinalState, r.Steps)
		}
		t.Logf("%d hosts: %d entries, %d bytes (%d per host), largest entry %d, largest step %d; with whole rows %d bytes, largest step %d",
			hosts, r.Entries, r.Bytes, r.Bytes/int64(hosts), r.Largest, r.LargestStep, r.WholeBytes(), r.WholeLargestStep)
		res[i] = r
	}
	if ratio := float64(res[1].Bytes) / float64(res[0].Bytes); ratio >= 2.5 {
		t.Errorf("twice the hosts wrote x%.2f the raft bytes (%d, then %d): want linear growth (below x2.5)", ratio, res[0].Bytes, res[1].Bytes)
	}
	// A step is one host's outcome and the next dispatch: a header, two
	// hosts, a desired row and a few events, whatever the fleet.
	const maxStep = 2 << 10
	for i, r := range res {
		if r.LargestStep > maxStep {
			t.Errorf("%d hosts: largest engine step %d bytes, want at most %d whatever the fleet", r.Hosts, r.LargestStep, maxStep)
		}
		if i == 1 && r.LargestStep > res[0].LargestStep+64 {
			t.Errorf("largest step grew with the fleet: %d bytes for %d hosts, %d for %d", res[0].LargestStep, res[0].Hosts, r.LargestStep, r.Hosts)
		}
	}
}
