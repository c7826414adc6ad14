// Package rollout decides how a release reaches the hosts of an
// environment. The planner is pure: AssignWaves places hosts in waves when a
// rollout starts, and Step looks at a rollout and what its hosts' agents
// reported and returns the next decision. The Engine, which runs on the
// leader only, feeds Step from the state store and commits its decisions;
// all progress lives in the replicated rollout row, so a new leader
// continues exactly where the old one stopped.
package rollout

import (
	"errors"
	"fmt"
	"math"
	"time"

	"google.golang.org/protobuf/proto"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// Strategies.
const (
	AllAtOnce = "all-at-once"
	Rolling   = "rolling"
	Canary    = "canary"
)

// Defaults a spec gets when a field is left unset.
const (
	DefaultProgressDeadline = 10 * time.Minute
)

// ErrInvalidSpec is wrapped by every spec validation error.
var ErrInvalidSpec = errors.New("invalid rollout spec")

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidSpec, fmt.Sprintf(format, args...))
}

// Normalize checks a spec and returns a copy with the strategy's defaults
// filled in: what the rollout will store and run with.
func Normalize(in *relv1.RolloutSpec) (*relv1.RolloutSpec, error) {
	s := &relv1.RolloutSpec{}
	if in != nil {
		s = proto.Clone(in).(*relv1.RolloutSpec)
	}
	if s.Strategy == "" {
		s.Strategy = AllAtOnce
	}
	switch s.Strategy {
	case AllAtOnce:
		if s.Canary != nil || len(s.Waves) > 0 || s.WaveBy != "" {
			return nil, invalid("all-at-once takes no --canary, --waves or --wave-by: use --strategy canary or rolling")
		}
	case Rolling:
		if s.Canary != nil {
			return nil, invalid("--canary needs --strategy canary")
		}
		if s.MaxParallel == 0 {
			s.MaxParallel = 1
		}
	case Canary:
		if s.Canary == nil {
			s.Canary = &relv1.Quantity{Count: 1}
		}
		if err := checkQuantity("--canary", s.Canary, true); err != nil {
			return nil, err
		}
	default:
		return nil, invalid("strategy %q: use all-at-once, rolling or canary", s.Strategy)
	}
	if s.WaveBy != "" && len(s.Waves) > 0 {
		return nil, invalid("--wave-by and --waves together: waves follow either the label or the list")
	}
	if err := checkWaves(s.Waves); err != nil {
		return nil, err
	}
	if s.MaxFailures == nil {
		s.MaxFailures = &relv1.Quantity{}
	} else if err := checkQuantity("--max-failures", s.MaxFailures, false); err != nil {
		return nil, err
	}
	if s.BakeMs < 0 {
		return nil, invalid("--bake %s is negative", time.Duration(s.BakeMs)*time.Millisecond)
	}
	if s.ProgressDeadlineMs < 0 {
		return nil, invalid("--progress-deadline %s is negative", time.Duration(s.ProgressDeadlineMs)*time.Millisecond)
	}
	if s.ProgressDeadlineMs == 0 {
		s.ProgressDeadlineMs = DefaultProgressDeadline.Milliseconds()
	}
	if s.BakeMs > 0 && s.Strategy == AllAtOnce {
		return nil, invalid("--bake %s with all-at-once: a bake waits between waves, and all-at-once has one; use --strategy rolling (it bakes between batches of --max-parallel hosts) or canary", time.Duration(s.BakeMs)*time.Millisecond)
	}
	if s.ApproveWaves && s.Strategy == AllAtOnce {
		return nil, invalid("--approve-waves with all-at-once: there is one wave; use --strategy canary or rolling with --waves")
	}
	return s, nil
}

func checkQuantity(flag string, q *relv1.Quantity, positive bool) error {
	switch {
	case q.Count > 0 && q.Percent > 0:
		return invalid("%s: give a count or a percentage, not both", flag)
	case q.Percent > 100:
		return invalid("%s %d%%: a percentage is at most 100%%", flag, q.Percent)
	case positive && q.Count == 0 && q.Percent == 0:
		return invalid("%s is 0: give at least 1 host or 1%%", flag)
	}
	return nil
}

// checkWaves requires a non-empty list of increasing cumulative targets
// ending at 100%. Counts and percentages may be mixed only in that order
// of certainty: each is compared where the units allow.
func checkWaves(ws []*relv1.Quantity) error {
	for i, w := range ws {
		if err := checkQuantity(fmt.Sprintf("--waves item %d", i+1), w, true); err != nil {
			return err
		}
		if i == 0 {
			continue
		}
		p := ws[i-1]
		if (p.Percent > 0) == (w.Percent > 0) && quantityValue(p) >= quantityValue(w) {
			return invalid("--waves %s: wave %d (%s) is not above wave %d (%s); targets are cumulative", waveList(ws), i+1, QuantityString(w), i, QuantityString(p))
		}
	}
	if n := len(ws); n > 0 && ws[n-1].Percent != 100 && ws[n-1].Percent != 0 {
		return invalid("--waves %s: the last wave must reach 100%%", waveList(ws))
	}
	return nil
}

func quantityValue(q *relv1.Quantity) uint32 {
	if q.Percent > 0 {
		return q.Percent
	}
	return q.Count
}

// QuantityString renders a quantity as users write it: 5 or 10%.
func QuantityString(q *relv1.Quantity) string {
	if q.GetPercent() > 0 {
		return fmt.Sprintf("%d%%", q.GetPercent())
	}
	return fmt.Sprintf("%d", q.GetCount())
}

func waveList(ws []*relv1.Quantity) string {
	out := ""
	for i, w := range ws {
		if i > 0 {
			out += ","
		}
		out += QuantityString(w)
	}
	return out
}

// Resolve turns a quantity into a number of hosts out of total: counts as
// they are, percentages rounded up (10% of 5 hosts is 1 host, not 0).
func Resolve(q *relv1.Quantity, total int) int {
	if q == nil {
		return 0
	}
	if q.GetPercent() > 0 {
		return int(math.Ceil(float64(q.GetPercent()) * float64(total) / 100))
	}
	return int(q.GetCount())
}
