package state

import (
	"fmt"

	"github.com/hashicorp/go-memdb"
	"google.golang.org/protobuf/proto"

	"github.com/relhq/rel/internal/event"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// TableClusterEvents holds the cluster's event stream (rel.v1.Event), by
// seq: numbered without gaps in raft order, trimmed only from the oldest
// end (TrimEvents), and never emptied, so the newest row carries the
// sequence on.
const TableClusterEvents = "events"

// addEventTables adds the event stream's table to the schema, and to the
// rollout events an index by the raft index that wrote them, through which
// AppendEvents finds the rollout events of the entry being applied.
func addEventTables(sc *memdb.DBSchema) {
	sc.Tables[TableClusterEvents] = &memdb.TableSchema{
		Name: TableClusterEvents,
		Indexes: map[string]*memdb.IndexSchema{
			"id": {Name: "id", Unique: true, Indexer: &memdb.UintFieldIndex{Field: "Seq"}},
		},
	}
	sc.Tables[TableEvents].Indexes["create"] = &memdb.IndexSchema{
		Name: "create", Indexer: &memdb.UintFieldIndex{Field: "CreateIndex"},
	}
	addWebhookTables(sc)
}

// AppendEvents appends the cluster events of the entry at index, in one
// transaction: first those made from the rollout events the entry wrote
// (event.FromRollout, in the order of the rollout events' index), then
// extra (the FSM's own, from the command). Each gets the next seq and
// the raft index; one without a time gets stamped, one without an actor
// gets actor. The FSM calls it right after applying the entry, in the
// same Apply, as it does for audit records. The events passed are not
// modified.
func (s *Store) AppendEvents(index uint64, stamped int64, actor *relv1.Actor, extra []*relv1.Event) error {
	if len(extra) == 0 {
		// Most entries (reports, sessions without a change) make no
		// event: a read is enough to know, without a write transaction.
		if raw, err := s.readTxn().First(TableEvents, "create", index); err == nil && raw == nil {
			return nil
		}
	}
	txn := s.writeTxn()
	defer txn.Abort()
	var evs []*relv1.Event
	it, err := txn.Get(TableEvents, "create", index)
	if err != nil {
		return fmt.Errorf("state: rollout events of index %d: %w", index, err)
	}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		re := raw.(*relv1.RolloutEvent)
		rraw, err := txn.First(TableRollouts, "id", re.GetRolloutId())
		if err != nil {
			return fmt.Errorf("state: lookup rollout: %w", err)
		}
		if rraw == nil {
			continue
		}
		evs = append(evs, event.FromRollout(rraw.(*relv1.Rollout), re)...)
	}
	evs = append(evs, extra...)
	if len(evs) == 0 {
		return nil
	}
	var seq uint64
	last, err := txn.Last(TableClusterEvents, "id")
	if err != nil {
		return fmt.Errorf("state: last event: %w", err)
	}
	if last != nil {
		seq = last.(*relv1.Event).GetSeq()
	}
	for _, e := range evs {
		row := proto.Clone(e).(*relv1.Event)
		seq++
		row.Seq, row.Index = seq, index
		if row.TimeUnixNano == 0 {
			row.TimeUnixNano = stamped
		}
		if row.Actor == nil && actor != nil {
			row.Actor = actor
		}
		if err := txn.Insert(TableClusterEvents, row); err != nil {
			return fmt.Errorf("state: insert event: %w", err)
		}
	}
	if err := setIndex(txn, TableClusterEvents, index); err != nil {
		return err
	}
	txn.Commit()
	return nil
}

// TrimEvents removes, oldest first, events with seq below beforeSeq
// stamped before cutoff, at most max (0: no bound), and never the newest
// event. It returns how many it removed. Stopping at the first event that
// is to be kept keeps what remains a contiguous range of seqs.
func (s *Store) TrimEvents(index, beforeSeq uint64, cutoff int64, max int) (int, error) {
	txn := s.writeTxn()
	defer txn.Abort()
	last, err := txn.Last(TableClusterEvents, "id")
	if err != nil || last == nil {
		return 0, err
	}
	newest := last.(*relv1.Event).GetSeq()
	it, err := txn.Get(TableClusterEvents, "id")
	if err != nil {
		return 0, fmt.Errorf("state: events: %w", err)
	}
	var gone []*relv1.Event
	for raw := it.Next(); raw != nil; raw = it.Next() {
		e := raw.(*relv1.Event)
		if e.GetSeq() >= beforeSeq || e.GetSeq() >= newest || e.GetTimeUnixNano() >= cutoff || (max > 0 && len(gone) >= max) {
			break
		}
		gone = append(gone, e)
	}
	if len(gone) == 0 {
		return 0, nil
	}
	for _, e := range gone {
		if err := txn.Delete(TableClusterEvents, e); err != nil {
			return 0, fmt.Errorf("state: delete event: %w", err)
		}
	}
	if err := setIndex(txn, TableClusterEvents, index); err != nil {
		return 0, err
	}
	txn.Commit()
	return len(gone), nil
}

// EventBounds returns the oldest and newest events' seqs (0, 0 when there
// is none), registering the table's index in ws.
func (s *Store) EventBounds(ws memdb.WatchSet) (first, last uint64) {
	txn := s.readTxn()
	tableIndexOf(txn, ws, TableClusterEvents)
	if raw, err := txn.First(TableClusterEvents, "id"); err == nil && raw != nil {
		first = raw.(*relv1.Event).GetSeq()
	}
	if raw, err := txn.Last(TableClusterEvents, "id"); err == nil && raw != nil {
		last = raw.(*relv1.Event).GetSeq()
	}
	return first, last
}

// EventQuery selects events for Events.
type EventQuery struct {
	// After: events with seq above it.
	After uint64
	// SinceUnixNano: events stamped at or after it.
	SinceUnixNano int64
	Filter        event.Filter
}

// Events calls fn with the events q selects, in seq order, until fn
// returns false, from one read transaction. It returns the events
// table's index, the newest seq, and the oldest seq kept; ws (if not nil)
// fires on the next write to the table.
func (s *Store) Events(ws memdb.WatchSet, q EventQuery, fn func(*relv1.Event) bool) (idx, first, last uint64, err error) {
	txn := s.readTxn()
	idx = tableIndexOf(txn, ws, TableClusterEvents)
	if raw, err := txn.First(TableClusterEvents, "id"); err == nil && raw != nil {
		first = raw.(*relv1.Event).GetSeq()
	}
	if raw, err := txn.Last(TableClusterEvents, "id"); err == nil && raw != nil {
		last = raw.(*relv1.Event).GetSeq()
	}
	it, err := txn.LowerBound(TableClusterEvents, "id", q.After+1)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("state: events: %w", err)
	}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		e := raw.(*relv1.Event)
		if e.GetTimeUnixNano() < q.SinceUnixNano || !q.Filter.Match(e) {
			continue
		}
		if !fn(e) {
			break
		}
	}
	return idx, first, last, nil
}
