package state

import (
	"fmt"

	"github.com/relhq/rel/internal/rollout"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// RemoveRollouts removes terminal rollouts and their events (a retention
// pass the leader decided). A rollout that is missing or not terminal is
// skipped: the FSM decides in raft order, so a repeat, or a rollout that
// changed since the leader looked, changes nothing. It returns how many it
// removed.
func (s *Store) RemoveRollouts(index uint64, ids []string) (int, error) {
	txn := s.writeTxn()
	defer txn.Abort()
	removed := 0
	for _, id := range ids {
		raw, err := txn.First(TableRollouts, "id", id)
		if err != nil {
			return 0, fmt.Errorf("state: lookup rollout: %w", err)
		}
		if raw == nil || !rollout.Terminal(raw.(*relv1.Rollout).GetState()) {
			continue
		}
		// By prefix, then by id: "ro-1" is a prefix of "ro-10" too.
		it, err := txn.Get(TableEvents, "id_prefix", id)
		if err != nil {
			return 0, fmt.Errorf("state: rollout events: %w", err)
		}
		var evs []any
		for e := it.Next(); e != nil; e = it.Next() {
			if e.(*relv1.RolloutEvent).GetRolloutId() == id {
				evs = append(evs, e)
			}
		}
		for _, e := range evs {
			if err := txn.Delete(TableEvents, e); err != nil {
				return 0, fmt.Errorf("state: remove rollout event: %w", err)
			}
		}
		if err := txn.Delete(TableRollouts, raw); err != nil {
			return 0, fmt.Errorf("state: remove rollout: %w", err)
		}
		removed++
	}
	if removed > 0 {
		if err := setIndex(txn, TableRollouts, index); err != nil {
			return 0, err
		}
		if err := setIndex(txn, TableEvents, index); err != nil {
			return 0, err
		}
	}
	txn.Commit()
	return removed, nil
}
