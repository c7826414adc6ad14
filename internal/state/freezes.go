package state

import (
	"fmt"
	"time"

	"github.com/hashicorp/go-memdb"
	"google.golang.org/protobuf/proto"

	"github.com/relhq/rel/internal/freeze"
	"github.com/relhq/rel/internal/rollout"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// Freeze windows (change control). The rows are kept here; whether a
// window holds a rollout at a time is freeze.Evaluate's decision, made in
// the FSM from the time stamped in the command.

// CreateFreeze stores a new freeze window; a window of that name already
// stored is refused (ErrAlreadyExists). The window was validated before
// it was proposed (validate.Command).
func (s *Store) CreateFreeze(index uint64, w *relv1.FreezeWindow) error {
	txn := s.writeTxn()
	defer txn.Abort()
	if raw, err := txn.First(TableFreezes, "id", w.GetName()); err != nil {
		return fmt.Errorf("state: lookup freeze: %w", err)
	} else if raw != nil {
		return newError(ErrAlreadyExists, fmt.Sprintf("freeze window %q already exists: delete it first ('relctl freeze delete %s') or choose another name", w.GetName(), w.GetName()))
	}
	row := proto.Clone(w).(*relv1.FreezeWindow)
	row.CreateIndex, row.ModifyIndex = index, index
	if err := txn.Insert(TableFreezes, row); err != nil {
		return fmt.Errorf("state: insert freeze: %w", err)
	}
	if err := setIndex(txn, TableFreezes, index); err != nil {
		return err
	}
	txn.Commit()
	return nil
}

// DeleteFreeze removes a freeze window. Rollouts it held go on when the
// engine next looks (it watches this table).
func (s *Store) DeleteFreeze(index uint64, name string) error {
	txn := s.writeTxn()
	defer txn.Abort()
	raw, err := txn.First(TableFreezes, "id", name)
	if err != nil {
		return fmt.Errorf("state: lookup freeze: %w", err)
	}
	if raw == nil {
		return newError(ErrNotFound, fmt.Sprintf("freeze window %q not found: 'relctl freeze list' shows them", name))
	}
	if err := txn.Delete(TableFreezes, raw); err != nil {
		return fmt.Errorf("state: delete freeze: %w", err)
	}
	if err := setIndex(txn, TableFreezes, index); err != nil {
		return err
	}
	txn.Commit()
	return nil
}

// Freezes lists the freeze windows by name.
func (s *Store) Freezes(ws memdb.WatchSet) ([]*relv1.FreezeWindow, uint64, error) {
	txn := s.readTxn()
	out, err := freezesTxn(txn, ws)
	if err != nil {
		return nil, 0, err
	}
	return out, tableIndexOf(txn, ws, TableFreezes), nil
}

func freezesTxn(txn *memdb.Txn, ws memdb.WatchSet) ([]*relv1.FreezeWindow, error) {
	it, err := txn.Get(TableFreezes, "id")
	if err != nil {
		return nil, fmt.Errorf("state: list freezes: %w", err)
	}
	if ws != nil {
		ws.Add(it.WatchCh())
	}
	var out []*relv1.FreezeWindow
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*relv1.FreezeWindow))
	}
	return out, nil
}

// freezeAtCreate decides what the freeze windows stored do to a new
// rollout at the time it was stamped (its created_unix_nano): a deploy
// inside a freeze is held in state frozen (nothing dispatched, so its
// desired rows are dropped); an emergency deploy inside one records the
// window it overrode; rollbacks and catch-ups are never held. r and
// events are the command's; the returned ones may be new.
func freezeAtCreate(txn *memdb.Txn, r *relv1.Rollout, desired []*relv1.Desired, events []*relv1.RolloutEvent) (*relv1.Rollout, []*relv1.Desired, []*relv1.RolloutEvent, error) {
	if r.GetKind() != rollout.KindDeploy {
		return r, desired, events, nil
	}
	windows, err := freezesTxn(txn, nil)
	if err != nil || len(windows) == 0 {
		return r, desired, events, err
	}
	v := freeze.ForRollout(windows, r, time.Unix(0, r.GetCreatedUnixNano()))
	if !v.Frozen {
		return r, desired, events, nil
	}
	if !rollout.FreezeApplies(r) {
		if r.GetFreezeOverridden() == v.Window.GetName() {
			return r, desired, events, nil
		}
		r = proto.Clone(r).(*relv1.Rollout)
		r.FreezeOverridden = v.Window.GetName()
		return r, desired, events, nil
	}
	if r.GetState() == rollout.StateFrozen {
		return r, desired, events, nil
	}
	// The accepting server did not see this freeze (it was created in
	// between): hold the rollout now.
	r, events = rollout.Hold(r, events, freeze.Hold(v), v.Until.UnixNano(), r.GetCreatedUnixNano())
	return r, nil, events, nil
}
