package state

import (
	"fmt"

	"github.com/hashicorp/go-memdb"
	"google.golang.org/protobuf/proto"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// Rollout states.
const (
	RolloutRunning   = "running"
	RolloutSucceeded = "succeeded"
	RolloutFailed    = "failed"
)

// Terminal reports whether a rollout state is final.
func Terminal(state string) bool {
	return state != RolloutRunning && state != ""
}

// CreateRollout stores a rollout and the desired state of its hosts in one
// transaction. Only one rollout per app and environment may be running.
func (s *Store) CreateRollout(index uint64, r *relv1.Rollout, desired []*relv1.Desired) error {
	txn := s.writeTxn()
	defer txn.Abort()
	if raw, err := txn.First(TableRollouts, "id", r.GetId()); err != nil {
		return fmt.Errorf("state: lookup rollout: %w", err)
	} else if raw != nil {
		return newError(ErrAlreadyExists, fmt.Sprintf("rollout %q already exists", r.GetId()))
	}
	it, err := txn.Get(TableRollouts, "app", r.GetApp())
	if err != nil {
		return fmt.Errorf("state: list rollouts: %w", err)
	}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		o := raw.(*relv1.Rollout)
		if o.GetEnvironment() == r.GetEnvironment() && !Terminal(o.GetState()) {
			return newError(ErrConflict, fmt.Sprintf("rollout %s of %s@%s to %s is still %s: wait for it to finish ('relctl rollout status %s')",
				o.GetId(), o.GetApp(), o.GetVersion(), o.GetEnvironment(), o.GetState(), o.GetId()))
		}
	}
	if raw, err := txn.First(TableReleases, "id", r.GetApp(), r.GetVersion()); err != nil {
		return fmt.Errorf("state: lookup release: %w", err)
	} else if raw == nil {
		return newError(ErrNotFound, fmt.Sprintf("release %s@%s not found", r.GetApp(), r.GetVersion()))
	}
	row := proto.Clone(r).(*relv1.Rollout)
	row.State = RolloutRunning
	row.CreateIndex, row.ModifyIndex = index, index
	if err := txn.Insert(TableRollouts, row); err != nil {
		return fmt.Errorf("state: insert rollout: %w", err)
	}
	for _, d := range desired {
		drow := proto.Clone(d).(*relv1.Desired)
		drow.CreateIndex, drow.ModifyIndex = index, index
		if raw, err := txn.First(TableDesired, "id", d.GetAgentId(), d.GetApp()); err != nil {
			return fmt.Errorf("state: lookup desired: %w", err)
		} else if raw != nil {
			drow.CreateIndex = raw.(*relv1.Desired).GetCreateIndex()
		}
		if err := txn.Insert(TableDesired, drow); err != nil {
			return fmt.Errorf("state: insert desired: %w", err)
		}
	}
	if err := setIndex(txn, TableRollouts, index); err != nil {
		return err
	}
	if len(desired) > 0 {
		if err := setIndex(txn, TableDesired, index); err != nil {
			return err
		}
	}
	txn.Commit()
	return nil
}

// FinishRollout moves a running rollout to a terminal state. Finishing a
// rollout that already finished changes nothing.
func (s *Store) FinishRollout(index uint64, id, state, reason string, at int64) error {
	txn := s.writeTxn()
	defer txn.Abort()
	raw, err := txn.First(TableRollouts, "id", id)
	if err != nil {
		return fmt.Errorf("state: lookup rollout: %w", err)
	}
	if raw == nil {
		return newError(ErrNotFound, fmt.Sprintf("rollout %q not found", id))
	}
	cur := raw.(*relv1.Rollout)
	if Terminal(cur.GetState()) {
		return nil
	}
	row := proto.Clone(cur).(*relv1.Rollout)
	row.State, row.Reason, row.FinishedUnixNano, row.ModifyIndex = state, reason, at, index
	if err := txn.Insert(TableRollouts, row); err != nil {
		return fmt.Errorf("state: update rollout: %w", err)
	}
	if err := setIndex(txn, TableRollouts, index); err != nil {
		return err
	}
	txn.Commit()
	return nil
}

// Rollout returns one rollout or ErrNotFound.
func (s *Store) Rollout(ws memdb.WatchSet, id string) (*relv1.Rollout, error) {
	txn := s.readTxn()
	ch, raw, err := txn.FirstWatch(TableRollouts, "id", id)
	if err != nil {
		return nil, fmt.Errorf("state: get rollout: %w", err)
	}
	ws.Add(ch)
	if raw == nil {
		return nil, newError(ErrNotFound, fmt.Sprintf("rollout %q not found: 'relctl rollout list' shows them", id))
	}
	return raw.(*relv1.Rollout), nil
}

// Rollouts lists rollouts, newest first, optionally of one app.
func (s *Store) Rollouts(ws memdb.WatchSet, app string) ([]*relv1.Rollout, uint64, error) {
	txn := s.readTxn()
	var (
		it  memdb.ResultIterator
		err error
	)
	if app == "" {
		it, err = txn.Get(TableRollouts, "id")
	} else {
		it, err = txn.Get(TableRollouts, "app", app)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("state: list rollouts: %w", err)
	}
	ws.Add(it.WatchCh())
	var out []*relv1.Rollout
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*relv1.Rollout))
	}
	sortNewestFirst(out)
	return out, tableIndexOf(txn, ws, TableRollouts), nil
}

// RunningRollouts lists the rollouts not yet finished.
func (s *Store) RunningRollouts(ws memdb.WatchSet) ([]*relv1.Rollout, error) {
	txn := s.readTxn()
	it, err := txn.Get(TableRollouts, "state", RolloutRunning)
	if err != nil {
		return nil, fmt.Errorf("state: running rollouts: %w", err)
	}
	ws.Add(it.WatchCh())
	var out []*relv1.Rollout
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*relv1.Rollout))
	}
	return out, nil
}

func sortNewestFirst(rs []*relv1.Rollout) {
	for i := 1; i < len(rs); i++ {
		for j := i; j > 0 && rs[j].GetCreateIndex() > rs[j-1].GetCreateIndex(); j-- {
			rs[j], rs[j-1] = rs[j-1], rs[j]
		}
	}
}

// DesiredFor returns one agent's desired rows and the generation: the
// newest ModifyIndex among them (0 when it has none). The watch covers only
// this agent's rows, so a change for another agent does not wake it.
func (s *Store) DesiredFor(ws memdb.WatchSet, agentID string) ([]*relv1.Desired, uint64, error) {
	txn := s.readTxn()
	it, err := txn.Get(TableDesired, "agent", agentID)
	if err != nil {
		return nil, 0, fmt.Errorf("state: desired: %w", err)
	}
	ws.Add(it.WatchCh())
	var (
		out []*relv1.Desired
		gen uint64
	)
	for raw := it.Next(); raw != nil; raw = it.Next() {
		d := raw.(*relv1.Desired)
		out = append(out, d)
		if d.GetModifyIndex() > gen {
			gen = d.GetModifyIndex()
		}
	}
	return out, gen, nil
}
