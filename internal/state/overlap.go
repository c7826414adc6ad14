package state

import (
	"fmt"
	"sort"
	"strings"

	"github.com/hashicorp/go-memdb"

	"github.com/relhq/rel/internal/rollout"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// One active rollout per app and host: two rollouts of one app over the
// same hosts (overlapping environments, say env=prod and zone=eu) would each
// count the other's version as healthy. A rollout is blocked by another of
// the same app that is not terminal and shares its environment or any of
// its hosts; a rollback is not blocked by the rollout it reverts, and a
// queued rollout only by active ones and by queued ones ahead of it.

// Blocker returns the rollout that holds some of r's hosts, and those
// hosts, or nil when none does.
func (s *Store) Blocker(r *relv1.Rollout) (*relv1.Rollout, []string, error) {
	return blocker(s.readTxn(), r)
}

func blocker(txn *memdb.Txn, r *relv1.Rollout) (*relv1.Rollout, []string, error) {
	it, err := txn.Get(TableRollouts, "app", r.GetApp())
	if err != nil {
		return nil, nil, fmt.Errorf("state: list rollouts: %w", err)
	}
	mine := make(map[string]bool, len(r.GetHosts()))
	for _, h := range r.GetHosts() {
		mine[h.GetAgentId()] = true
	}
	var (
		best   *relv1.Rollout
		shared []string
	)
	for raw := it.Next(); raw != nil; raw = it.Next() {
		o := raw.(*relv1.Rollout)
		if o.GetId() == r.GetId() || rollout.Terminal(o.GetState()) || o.GetId() == r.GetRollbackOf() || (r.GetId() != "" && o.GetRollbackOf() == r.GetId()) {
			continue
		}
		if o.GetState() == rollout.StateQueued && r.GetCreateIndex() != 0 && o.GetCreateIndex() > r.GetCreateIndex() {
			continue // behind r in the queue (a new r has no index yet: it may not jump the queue)
		}
		if o.GetState() == rollout.StateFrozen && (r.GetKind() == rollout.KindRollback || !rollout.FreezeApplies(r)) {
			// A freeze never holds back a rollback, a catch-up or an
			// emergency change: the frozen rollout waits for them in turn
			// once its freeze ends (it is queued then).
			continue
		}
		if o.GetState() == rollout.StateQueued && r.GetKind() == rollout.KindRollback {
			// A rollback never waits for a queued rollout: it takes back
			// what an active one did (an automatic one is decided in the
			// very entry that fails the rollout, which must not be
			// refused), and the queued one waits for it in turn.
			continue
		}
		var common []string
		for _, h := range o.GetHosts() {
			if mine[h.GetAgentId()] {
				common = append(common, h.GetAgentId())
			}
		}
		if len(common) == 0 && o.GetEnvironment() != r.GetEnvironment() {
			continue
		}
		// The oldest blocker is the one to name: it ends first.
		if best == nil || o.GetCreateIndex() < best.GetCreateIndex() {
			best, shared = o, common
		}
	}
	sort.Strings(shared)
	if best != nil && best.GetState() == rollout.StateRollingBack && best.GetRolledBackBy() != "" {
		// A rollout being rolled back ends when its rollback does: name
		// the rollback, whose state says what it waits for.
		if raw, err := txn.First(TableRollouts, "id", best.GetRolledBackBy()); err == nil && raw != nil && !rollout.Terminal(raw.(*relv1.Rollout).GetState()) {
			best = raw.(*relv1.Rollout)
		}
	}
	return best, shared, nil
}

// BlockedError says which rollout holds the hosts and what to do.
func BlockedError(o *relv1.Rollout, shared []string) error {
	holds := "runs in the same environment"
	if len(shared) > 0 {
		list := shared
		more := ""
		if len(list) > 5 {
			list, more = list[:5], fmt.Sprintf(" and %d more", len(shared)-5)
		}
		holds = fmt.Sprintf("holds %d of its hosts (%s%s)", len(shared), strings.Join(list, ", "), more)
	}
	what, abort := fmt.Sprintf("rollout %s of %s@%s to %s is %s", o.GetId(), o.GetApp(), o.GetVersion(), o.GetEnvironment(), o.GetState()), ", or 'relctl rollout abort "+o.GetId()+"'"
	if o.GetKind() == rollout.KindRollback {
		what = fmt.Sprintf("rollback %s of rollout %s to %s is %s", o.GetId(), o.GetRollbackOf(), o.GetEnvironment(), o.GetState())
		if o.GetReason() != "" {
			what += " (" + o.GetReason() + ")"
		}
		abort = ""
	}
	return newError(ErrConflict, fmt.Sprintf("%s and %s: only one rollout per app and host may be active; wait for it ('relctl rollout start --queue' starts this one when it ends)%s",
		what, holds, abort))
}
