package state

import (
	"errors"
	"fmt"
	"sort"

	"github.com/hashicorp/go-memdb"
	"google.golang.org/protobuf/proto"

	"github.com/relhq/rel/internal/rollout"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// The lifecycle's decisions (which transitions are allowed, what a control
// or a rollback does to a rollout, its events) are internal/rollout's pure
// functions; this file keeps the rows, the indexes and the compare-and-set
// that makes each decision apply only to the row it was made from.

// CreateRollout stores a new rollout with its first events. Only one rollout
// per app and host (or environment) may be active (see overlap.go), unless
// the new one is queued; a rollback may start while the rollout it reverts
// is active, and marks it rolling_back.
func (s *Store) CreateRollout(index uint64, r *relv1.Rollout, desired []*relv1.Desired, events []*relv1.RolloutEvent) error {
	txn := s.writeTxn()
	defer txn.Abort()
	if err := createRollout(txn, index, r, desired, events); err != nil {
		return err
	}
	if err := setIndex(txn, TableRollouts, index); err != nil {
		return err
	}
	txn.Commit()
	return nil
}

func createRollout(txn *memdb.Txn, index uint64, r *relv1.Rollout, desired []*relv1.Desired, events []*relv1.RolloutEvent) error {
	if raw, err := txn.First(TableRollouts, "id", r.GetId()); err != nil {
		return fmt.Errorf("state: lookup rollout: %w", err)
	} else if raw != nil {
		return newError(ErrAlreadyExists, fmt.Sprintf("rollout %q already exists", r.GetId()))
	}
	var orig *relv1.Rollout
	if r.GetKind() == rollout.KindRollback {
		raw, err := txn.First(TableRollouts, "id", r.GetRollbackOf())
		if err != nil {
			return fmt.Errorf("state: lookup rollout: %w", err)
		}
		if raw != nil {
			orig = raw.(*relv1.Rollout)
		}
	}
	// Change control: a deploy inside a freeze is held (frozen), whatever
	// the accepting server saw, decided at the time it stamped.
	r, desired, events, err := freezeAtCreate(txn, r, desired, events)
	if err != nil {
		return err
	}
	if r.GetKind() == rollout.KindDeploy || r.GetKind() == "" {
		// Lifecycle and block first, decided in raft order (see
		// lifecycle.go); then whether another rollout holds the hosts.
		if err := deployGate(txn, r.GetApp(), r.GetVersion(), r.GetEnvironment()); err != nil {
			return err
		}
	}
	if err := checkApprovalGate(txn, r); err != nil {
		return err
	}
	// Queued rollouts wait for what blocks them; frozen and awaiting ones
	// hold no host yet, and are queued when they are released.
	if r.GetState() != rollout.StateQueued && r.GetState() != rollout.StateFrozen && r.GetState() != rollout.StateAwaitingApproval {
		if o, shared, err := blocker(txn, r); err != nil {
			return err
		} else if o != nil {
			return BlockedError(o, shared)
		}
	}
	if r.GetKind() == rollout.KindRollback {
		if orig == nil {
			return newError(ErrNotFound, fmt.Sprintf("rollout %q not found", r.GetRollbackOf()))
		}
		o, ev, err := rollout.StartRollingBack(orig, r)
		if err != nil {
			return refusal(err)
		}
		o.ModifyIndex = index
		if err := insertEvent(txn, index, ev); err != nil {
			return err
		}
		if err := txn.Insert(TableRollouts, o); err != nil {
			return fmt.Errorf("state: update rollout: %w", err)
		}
		if err := trackPromotion(txn, index, o); err != nil {
			return err
		}
		if err := trackDeployment(txn, index, o); err != nil {
			return err
		}
	} else if raw, err := txn.First(TableReleases, "id", r.GetApp(), r.GetVersion()); err != nil {
		return fmt.Errorf("state: lookup release: %w", err)
	} else if raw == nil {
		return newError(ErrNotFound, fmt.Sprintf("release %s@%s not found", r.GetApp(), r.GetVersion()))
	}
	row := proto.Clone(r).(*relv1.Rollout)
	if row.State == "" {
		row.State = rollout.StateRunning
	}
	row.CreateIndex, row.ModifyIndex = index, index
	if err := txn.Insert(TableRollouts, row); err != nil {
		return fmt.Errorf("state: insert rollout: %w", err)
	}
	if err := trackPromotion(txn, index, row); err != nil {
		return err
	}
	if err := trackDeployment(txn, index, row); err != nil {
		return err
	}
	if err := upsertDesired(txn, index, desired); err != nil {
		return err
	}
	for _, e := range events {
		if err := insertEvent(txn, index, e); err != nil {
			return err
		}
	}
	return nil
}

func upsertDesired(txn *memdb.Txn, index uint64, desired []*relv1.Desired) error {
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
	if len(desired) > 0 {
		return setIndex(txn, TableDesired, index)
	}
	return nil
}

func insertEvent(txn *memdb.Txn, index uint64, e *relv1.RolloutEvent) error {
	row := proto.Clone(e).(*relv1.RolloutEvent)
	row.CreateIndex, row.ModifyIndex = index, index
	if err := txn.Insert(TableEvents, row); err != nil {
		return fmt.Errorf("state: insert rollout event: %w", err)
	}
	return setIndex(txn, TableEvents, index)
}

// StepRollout applies one engine decision: the rollout's new row (with
// hostsDelta, only its changed hosts: see rollout.MergeDelta), the
// desired state of the hosts it dispatches and its events. It refuses
// (ErrConflict) when the rollout changed since the engine read it. When a
// rollback ends, the rollout it reverted ends too: rolled_back if the
// rollback succeeded, failed otherwise.
func (s *Store) StepRollout(index uint64, r *relv1.Rollout, hostsDelta bool, expect uint64, desired []*relv1.Desired, events []*relv1.RolloutEvent, rollback *relv1.CreateRollout) error {
	txn := s.writeTxn()
	defer txn.Abort()
	raw, err := txn.First(TableRollouts, "id", r.GetId())
	if err != nil {
		return fmt.Errorf("state: lookup rollout: %w", err)
	}
	if raw == nil {
		return newError(ErrNotFound, fmt.Sprintf("rollout %q not found", r.GetId()))
	}
	cur := raw.(*relv1.Rollout)
	if cur.GetModifyIndex() != expect {
		return newError(ErrConflict, fmt.Sprintf("rollout %s changed at index %d after the engine read it at %d", r.GetId(), cur.GetModifyIndex(), expect))
	}
	row, err := stepRow(cur, r, hostsDelta)
	if err != nil {
		return err
	}
	row.CreateIndex, row.ModifyIndex = cur.GetCreateIndex(), index
	if waiting(cur.GetState()) && !waiting(row.GetState()) {
		// Leaving the queue: what blocked it must be gone in this very
		// entry, not just when the engine looked.
		if o, shared, err := blocker(txn, row); err != nil {
			return err
		} else if o != nil {
			return BlockedError(o, shared)
		}
	}
	if err := txn.Insert(TableRollouts, row); err != nil {
		return fmt.Errorf("state: update rollout: %w", err)
	}
	if err := trackPromotion(txn, index, row); err != nil {
		return err
	}
	if err := trackDeployment(txn, index, row); err != nil {
		return err
	}
	if err := upsertDesired(txn, index, desired); err != nil {
		return err
	}
	for _, e := range events {
		if err := insertEvent(txn, index, e); err != nil {
			return err
		}
	}
	if row.GetKind() == rollout.KindRollback && rollout.Terminal(row.GetState()) && !rollout.Terminal(cur.GetState()) {
		if err := endReverted(txn, index, row); err != nil {
			return err
		}
	}
	if rollback != nil {
		if err := createRollout(txn, index, rollback.GetRollout(), rollback.GetDesired(), rollback.GetEvents()); err != nil {
			return err
		}
	}
	if err := setIndex(txn, TableRollouts, index); err != nil {
		return err
	}
	txn.Commit()
	return nil
}

// waiting reports whether a rollout in state st has not started: queued,
// or held by change control. What blocks it is checked when it leaves.
func waiting(st string) bool {
	return st == rollout.StateQueued || st == rollout.StateFrozen || st == rollout.StateAwaitingApproval
}

// endReverted ends the rollout a finished rollback reverted.
func endReverted(txn *memdb.Txn, index uint64, rb *relv1.Rollout) error {
	raw, err := txn.First(TableRollouts, "id", rb.GetRollbackOf())
	if err != nil || raw == nil {
		return err
	}
	o, ev := rollout.EndReverted(raw.(*relv1.Rollout), rb)
	o.ModifyIndex = index
	if err := insertEvent(txn, index, ev); err != nil {
		return err
	}
	if err := txn.Insert(TableRollouts, o); err != nil {
		return fmt.Errorf("state: update rollout: %w", err)
	}
	if err := trackPromotion(txn, index, o); err != nil {
		return err
	}
	if err := trackDeployment(txn, index, o); err != nil {
		return err
	}
	return nil
}

// ControlRollout applies a release manager's pause, resume, approve or
// abort, as rollout.Control decides it.
func (s *Store) ControlRollout(index uint64, id, action, reason string, at int64, wave uint32) error {
	txn := s.writeTxn()
	defer txn.Abort()
	raw, err := txn.First(TableRollouts, "id", id)
	if err != nil {
		return fmt.Errorf("state: lookup rollout: %w", err)
	}
	if raw == nil {
		return newError(ErrNotFound, fmt.Sprintf("rollout %q not found: 'relctl rollout list' shows them", id))
	}
	r, ev, err := rollout.Control(raw.(*relv1.Rollout), action, reason, wave, at)
	if err != nil {
		return refusal(err)
	}
	r.ModifyIndex = index
	if err := insertEvent(txn, index, ev); err != nil {
		return err
	}
	if err := txn.Insert(TableRollouts, r); err != nil {
		return fmt.Errorf("state: update rollout: %w", err)
	}
	if err := trackPromotion(txn, index, r); err != nil {
		return err
	}
	if err := trackDeployment(txn, index, r); err != nil {
		return err
	}
	if err := setIndex(txn, TableRollouts, index); err != nil {
		return err
	}
	txn.Commit()
	return nil
}

// refusal turns a lifecycle refusal into the store's Conflict.
func refusal(err error) error {
	if errors.Is(err, rollout.ErrRefused) {
		return newError(ErrConflict, rollout.Reason(err))
	}
	return err
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
	out, _, idx, err := s.QueryRollouts(ws, RolloutQuery{App: app})
	return out, idx, err
}

// RolloutQuery selects rollouts for QueryRollouts; zero fields select all.
type RolloutQuery struct {
	App         string
	Environment string
	// A rollout state, or "active" for any of rollout.ActiveStates.
	State string
	// Only rollouts created at or after this time.
	SinceUnixNano int64
	// Only rollouts after After in the list's order (newest first: a lower
	// create index, or the same and a greater id), when set; only its
	// CreateIndex and Id count, so it need not still exist.
	After *relv1.Rollout
	// At most Limit rollouts (0: all).
	Limit int
}

// RolloutNewer is the order of rollout lists: newest (highest create index)
// first, then by id.
func RolloutNewer(a, b *relv1.Rollout) bool {
	if a.GetCreateIndex() != b.GetCreateIndex() {
		return a.GetCreateIndex() > b.GetCreateIndex()
	}
	return a.GetId() < b.GetId()
}

// QueryRollouts lists the rollouts q selects, newest first, and whether
// more follow the last one returned (when q.Limit cut the list).
func (s *Store) QueryRollouts(ws memdb.WatchSet, q RolloutQuery) ([]*relv1.Rollout, bool, uint64, error) {
	txn := s.readTxn()
	var its []memdb.ResultIterator
	get := func(index string, args ...any) error {
		it, err := txn.Get(TableRollouts, index, args...)
		if err != nil {
			return fmt.Errorf("state: list rollouts: %w", err)
		}
		ws.Add(it.WatchCh())
		its = append(its, it)
		return nil
	}
	var err error
	switch {
	case q.State == "active":
		for _, st := range rollout.ActiveStates {
			if err = get("state", st); err != nil {
				break
			}
		}
	case q.State != "":
		err = get("state", q.State)
	case q.App != "":
		err = get("app", q.App)
	default:
		err = get("id")
	}
	if err != nil {
		return nil, false, 0, err
	}
	var out []*relv1.Rollout
	for _, it := range its {
		for raw := it.Next(); raw != nil; raw = it.Next() {
			r := raw.(*relv1.Rollout)
			switch {
			case q.App != "" && r.GetApp() != q.App,
				q.Environment != "" && r.GetEnvironment() != q.Environment,
				q.SinceUnixNano != 0 && r.GetCreatedUnixNano() < q.SinceUnixNano,
				q.After != nil && !RolloutNewer(q.After, r):
				continue
			}
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return RolloutNewer(out[i], out[j]) })
	more := false
	if q.Limit > 0 && len(out) > q.Limit {
		out, more = out[:q.Limit], true
	}
	return out, more, tableIndexOf(txn, ws, TableRollouts), nil
}

// ActiveRollouts lists the rollouts not yet in a terminal state.
func (s *Store) ActiveRollouts(ws memdb.WatchSet) ([]*relv1.Rollout, error) {
	txn := s.readTxn()
	var out []*relv1.Rollout
	for _, st := range rollout.ActiveStates {
		it, err := txn.Get(TableRollouts, "state", st)
		if err != nil {
			return nil, fmt.Errorf("state: active rollouts: %w", err)
		}
		ws.Add(it.WatchCh())
		for raw := it.Next(); raw != nil; raw = it.Next() {
			out = append(out, raw.(*relv1.Rollout))
		}
	}
	return out, nil
}

// RolloutEvents lists a rollout's events with a sequence number above after.
func (s *Store) RolloutEvents(ws memdb.WatchSet, id string, after uint64) ([]*relv1.RolloutEvent, uint64, error) {
	txn := s.readTxn()
	// memdb's UintFieldIndex encodes uvarints, which do not sort in numeric
	// order, so read the rollout's events by prefix and sort them here.
	it, err := txn.Get(TableEvents, "id_prefix", id)
	if err != nil {
		return nil, 0, fmt.Errorf("state: rollout events: %w", err)
	}
	var out []*relv1.RolloutEvent
	for raw := it.Next(); raw != nil; raw = it.Next() {
		if e := raw.(*relv1.RolloutEvent); e.GetRolloutId() == id && e.GetSeq() > after {
			out = append(out, e)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetSeq() < out[j].GetSeq() })
	// Watch the rollout row: every event comes with a change of it.
	ch, _, err := txn.FirstWatch(TableRollouts, "id", id)
	if err == nil {
		ws.Add(ch)
	}
	return out, tableIndexOf(txn, ws, TableEvents), nil
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

// RolloutEventsAfter lists up to limit rollout events written by raft entries
// above index, in index order (an entry's events in their rollout's seq
// order), with the table's index. Each event is written once, so a reader
// that remembers the highest create index it saw reads every event once.
func (s *Store) RolloutEventsAfter(ws memdb.WatchSet, index uint64, limit int) ([]*relv1.RolloutEvent, uint64, error) {
	txn := s.readTxn()
	it, err := txn.LowerBound(TableEvents, "create", index+1)
	if err != nil {
		return nil, 0, fmt.Errorf("state: list rollout events: %w", err)
	}
	ws.Add(it.WatchCh())
	var out []*relv1.RolloutEvent
	for raw := it.Next(); raw != nil && len(out) < limit; raw = it.Next() {
		out = append(out, raw.(*relv1.RolloutEvent))
	}
	return out, tableIndexOf(txn, ws, TableEvents), nil
}

// FirstRolloutEvent returns the first event of a rollout with type typ for
// wave (any wave when wave is -1), nil if there is none.
func (s *Store) FirstRolloutEvent(id, typ string, wave int64) (*relv1.RolloutEvent, error) {
	it, err := s.readTxn().Get(TableEvents, "id_prefix", id)
	if err != nil {
		return nil, fmt.Errorf("state: rollout events of %s: %w", id, err)
	}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		e := raw.(*relv1.RolloutEvent)
		if e.GetRolloutId() == id && e.GetType() == typ && (wave < 0 || int64(e.GetWave()) == wave) {
			return e, nil
		}
	}
	return nil, nil
}
