package rollout

import (
	"fmt"
	"sort"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// Candidate is a host a rollout may take.
type Candidate struct {
	ID     string
	Labels map[string]string
}

// Wave is one group of hosts that change together.
type Wave struct {
	// Kind is "canary" for a canary wave, else "wave".
	Kind  string
	Hosts []string
}

// AssignWaves places every candidate in exactly one wave, in order: the
// canary first, then the cumulative targets of spec.waves (or one wave per
// value of the wave_by label, in sorted order of the values; or, for a
// rolling rollout that bakes, one wave per batch of max_parallel hosts). Hosts are
// taken in a stable order (by label value for wave_by, then by id). Empty
// waves are dropped. spec must be normalized.
func AssignWaves(spec *relv1.RolloutSpec, hosts []Candidate) ([]Wave, error) {
	if len(hosts) == 0 {
		return nil, nil
	}
	hs := append([]Candidate(nil), hosts...)
	sort.SliceStable(hs, func(i, j int) bool {
		if spec.GetWaveBy() != "" {
			a, b := hs[i].Labels[spec.GetWaveBy()], hs[j].Labels[spec.GetWaveBy()]
			if a != b {
				return a < b
			}
		}
		return hs[i].ID < hs[j].ID
	})
	total := len(hs)
	var waves []Wave
	taken := 0
	take := func(kind string, upTo int) {
		upTo = min(upTo, total)
		if upTo <= taken {
			return
		}
		w := Wave{Kind: kind}
		for _, h := range hs[taken:upTo] {
			w.Hosts = append(w.Hosts, h.ID)
		}
		waves = append(waves, w)
		taken = upTo
	}
	if spec.GetStrategy() == AllAtOnce {
		take("wave", total)
		return waves, nil
	}
	if spec.GetStrategy() == Canary {
		n := Resolve(spec.GetCanary(), total)
		if n >= total && total > 1 {
			return nil, invalid("--canary %s takes all %d hosts: a canary must leave hosts for the waves after it", QuantityString(spec.GetCanary()), total)
		}
		take("canary", max(n, 1))
	}
	switch {
	case spec.GetWaveBy() != "":
		label := spec.GetWaveBy()
		for _, h := range hs {
			if _, ok := h.Labels[label]; !ok {
				return nil, invalid("--wave-by %s: host %s has no label %q; every selected host needs it", label, h.ID, label)
			}
		}
		for taken < total {
			v := hs[taken].Labels[label]
			end := taken
			for end < total && hs[end].Labels[label] == v {
				end++
			}
			take("wave", end)
		}
	case len(spec.GetWaves()) > 0:
		for _, q := range spec.GetWaves() {
			n := Resolve(q, total)
			if q.GetCount() > 0 && n > total {
				return nil, invalid("--waves %s: %d hosts, but the environment selects only %d", waveList(spec.GetWaves()), n, total)
			}
			take("wave", n)
		}
		if taken < total {
			return nil, invalid("--waves %s reach %d of %d hosts: the last wave must take every host (end with 100%%)", waveList(spec.GetWaves()), taken, total)
		}
	case spec.GetStrategy() == Rolling && spec.GetBakeMs() > 0:
		// A bake waits between waves: a rolling rollout that bakes without
		// waves of its own bakes between its batches, so each batch of
		// max-parallel hosts is a wave.
		for taken < total {
			take("wave", taken+int(max(spec.GetMaxParallel(), 1)))
		}
	default:
		take("wave", total)
	}
	if taken != total {
		return nil, fmt.Errorf("rollout: %d of %d hosts placed in waves", taken, total)
	}
	return waves, nil
}
