package state

import (
	"cmp"
	"fmt"
	"math"
	"slices"
	"unique"

	"github.com/hashicorp/go-memdb"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// historyBucketSize is how many history entries a bucket holds at most.
// A row of the history table costs about 390 bytes of radix tree (leaf,
// nodes, their mutate channels) whatever it holds: one row per entry made
// the tree more than half of a steady fleet's heap. A bucket of 32 spends
// about 12 bytes an entry on it, and rewriting one (copy on write) copies
// at most 32 pointers. A variable so tests can make buckets small and
// change their size under a store: no layout may change what it answers.
var historyBucketSize = 32

// historyBucket is a row of the history table: up to historyBucketSize
// entries of one (app, agent), by create index. The buckets of an
// (app, agent) hold disjoint ranges, in the order of their First: every
// entry of a bucket is at or after its First and before the next bucket's
// First. Rows are immutable once inserted, like every row: a write
// inserts a new bucket with a new slice, sharing the entries it does not
// change.
//
// The layout (which entry is in which bucket) is never observable: every
// reader sees the entries through historyNext, in the order one row per
// entry gave (app, agent, create index), and snapshots hold one record
// per entry, so a replica restored from a snapshot (full buckets) and one
// that applied the log (buckets thinned by folds) answer the same.
type historyBucket struct {
	App     string
	AgentId string
	// First is the bucket's key: at most its first entry's create index.
	First   uint64
	Entries []*relv1.HistoryEntry
	// open counts the entries that have not ended (to 0), so openHistory
	// skips the buckets of closed ones.
	open int
}

func newHistoryBucket(app, agentID string, first uint64, entries []*relv1.HistoryEntry) *historyBucket {
	b := &historyBucket{App: app, AgentId: agentID, First: first, Entries: entries}
	for _, h := range entries {
		if h.GetToUnixNano() == 0 {
			b.open++
		}
	}
	return b
}

// historyNext turns an iterator over history buckets into one over their
// entries, in key order: by app, agent and create index. It returns nil
// after the last.
func historyNext(it memdb.ResultIterator) func() any {
	var cur []*relv1.HistoryEntry
	return func() any {
		for len(cur) == 0 {
			raw := it.Next()
			if raw == nil {
				return nil
			}
			cur = raw.(*historyBucket).Entries
		}
		h := cur[0]
		cur = cur[1:]
		return h
	}
}

// openHistory returns (app, agent)'s open history entry, or nil. Were there
// several, the last by create index.
func openHistory(txn *memdb.Txn, app, agentID string) (*relv1.HistoryEntry, error) {
	// From the newest bucket back: the open entry is nearly always in it.
	it, err := txn.ReverseLowerBound(TableHistory, "id", app, agentID, uint64(math.MaxUint64))
	if err != nil {
		return nil, fmt.Errorf("state: history: %w", err)
	}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		b := raw.(*historyBucket)
		if b.App != app || b.AgentId != agentID {
			// Below (app, agent)'s buckets: another host's, or app's.
			return nil, nil
		}
		if b.open == 0 {
			continue
		}
		for _, h := range slices.Backward(b.Entries) {
			if h.GetToUnixNano() == 0 {
				return h, nil
			}
		}
	}
	return nil, nil
}

// putHistory inserts or updates (same app, agent and create index) a
// history entry at index. It keeps h, its strings interned.
func putHistory(txn *memdb.Txn, index uint64, h *relv1.HistoryEntry) error {
	h.ModifyIndex = index
	if h.CreateIndex == 0 {
		h.CreateIndex = index
	}
	internHistory(h)
	if err := insertHistory(txn, h); err != nil {
		return fmt.Errorf("state: history: %w", err)
	}
	return setIndex(txn, TableHistory, index)
}

// internHistory makes h's repeated strings share one copy each (unique),
// so the 200 hosts of a rollout keep one "web", one version and one
// rollout id, not one each, and the strings of the reports they came from
// can be freed. While no bucket pins a unique.Handle, a copy lives as
// long as some entry uses it, and the first entry stored after a garbage
// collection freed the handle makes a new one: a few copies per rollout,
// still not one per host.
func internHistory(h *relv1.HistoryEntry) {
	for _, s := range []*string{&h.App, &h.AgentId, &h.Version, &h.RolloutId, &h.RolloutKind, &h.Outcome,
		&h.ReplacedByRolloutId, &h.ReplacedByKind} {
		if *s != "" {
			*s = unique.Make(*s).Value()
		}
	}
}

// historyBucketOf returns the bucket an entry of (app, agent) created at c
// belongs in: the last with First at or before c; else (c is before them
// all) the first; nil when (app, agent) has none.
func historyBucketOf(txn *memdb.Txn, app, agentID string, c uint64) (*historyBucket, error) {
	it, err := txn.ReverseLowerBound(TableHistory, "id", app, agentID, c)
	if err != nil {
		return nil, err
	}
	if raw := it.Next(); raw != nil {
		if b := raw.(*historyBucket); b.App == app && b.AgentId == agentID {
			return b, nil
		}
	}
	it, err = txn.LowerBound(TableHistory, "id", app, agentID, c)
	if err != nil {
		return nil, err
	}
	if raw := it.Next(); raw != nil {
		if b := raw.(*historyBucket); b.App == app && b.AgentId == agentID {
			return b, nil
		}
	}
	return nil, nil
}

func byCreateIndex(h *relv1.HistoryEntry, c uint64) int { return cmp.Compare(h.GetCreateIndex(), c) }

// insertHistory stores h in its bucket: in place of the entry with its
// create index, or added. The FSM only ever adds after the last entry of
// an (app, agent) (create indexes are raft indexes), which rewrites the
// newest bucket, or starts a bucket when that one is full; an entry added
// before others (tests, a snapshot out of order) may split a full bucket.
func insertHistory(txn *memdb.Txn, h *relv1.HistoryEntry) error {
	app, agentID, c := h.GetApp(), h.GetAgentId(), h.GetCreateIndex()
	b, err := historyBucketOf(txn, app, agentID, c)
	if err != nil {
		return err
	}
	if b == nil {
		return txn.Insert(TableHistory, newHistoryBucket(app, agentID, c, []*relv1.HistoryEntry{h}))
	}
	i, found := slices.BinarySearchFunc(b.Entries, c, byCreateIndex)
	switch {
	case found:
		entries := slices.Clone(b.Entries)
		entries[i] = h
		return txn.Insert(TableHistory, newHistoryBucket(app, agentID, b.First, entries))
	case len(b.Entries) < historyBucketSize:
		entries := make([]*relv1.HistoryEntry, 0, len(b.Entries)+1)
		entries = append(append(append(entries, b.Entries[:i]...), h), b.Entries[i:]...)
		if c < b.First {
			// Before every bucket of (app, agent): the first takes it
			// under a new key.
			if err := txn.Delete(TableHistory, b); err != nil {
				return err
			}
			return txn.Insert(TableHistory, newHistoryBucket(app, agentID, c, entries))
		}
		return txn.Insert(TableHistory, newHistoryBucket(app, agentID, b.First, entries))
	case i == len(b.Entries) || c < b.First:
		// After the full bucket's entries (and before the next bucket),
		// or before every bucket: a bucket of its own.
		return txn.Insert(TableHistory, newHistoryBucket(app, agentID, c, []*relv1.HistoryEntry{h}))
	default:
		// Inside a full bucket: split it in two.
		entries := slices.Insert(slices.Clone(b.Entries), i, h)
		left := slices.Clone(entries[:len(entries)/2])
		right := slices.Clone(entries[len(entries)/2:])
		if err := txn.Insert(TableHistory, newHistoryBucket(app, agentID, b.First, left)); err != nil {
			return err
		}
		return txn.Insert(TableHistory, newHistoryBucket(app, agentID, right[0].GetCreateIndex(), right))
	}
}

// deleteHistory removes the entries with hs's app, agent and create
// index, each bucket rewritten once however many of its entries go (a
// fold removes thousands); memdb.ErrNotFound when one is not there. A
// bucket left empty goes.
func deleteHistory(txn *memdb.Txn, hs ...*relv1.HistoryEntry) error {
	hs = slices.SortedFunc(slices.Values(hs), historyOrder)
	for len(hs) > 0 {
		b, err := historyBucketOf(txn, hs[0].GetApp(), hs[0].GetAgentId(), hs[0].GetCreateIndex())
		if err != nil {
			return fmt.Errorf("state: history: %w", err)
		}
		if b == nil {
			return fmt.Errorf("state: history: %w", memdb.ErrNotFound)
		}
		// Merge the bucket's entries with hs (both by create index):
		// the bucket keeps those hs does not name.
		keep := make([]*relv1.HistoryEntry, 0, len(b.Entries))
		n := 0
		for _, e := range b.Entries {
			if n < len(hs) && hs[n].GetApp() == b.App && hs[n].GetAgentId() == b.AgentId && hs[n].GetCreateIndex() <= e.GetCreateIndex() {
				if hs[n].GetCreateIndex() < e.GetCreateIndex() {
					return fmt.Errorf("state: history: %w", memdb.ErrNotFound)
				}
				n++
				continue
			}
			keep = append(keep, e)
		}
		if n == 0 {
			return fmt.Errorf("state: history: %w", memdb.ErrNotFound)
		}
		hs = hs[n:]
		if len(keep) == 0 {
			err = txn.Delete(TableHistory, b)
		} else {
			err = txn.Insert(TableHistory, newHistoryBucket(b.App, b.AgentId, b.First, slices.Clip(keep)))
		}
		if err != nil {
			return fmt.Errorf("state: history: %w", err)
		}
	}
	return nil
}

// historyOrder is the order of the history table's key: app, agent,
// create index. Names hold no NUL, so comparing them compares the key's
// NUL-terminated bytes.
func historyOrder(a, b *relv1.HistoryEntry) int {
	return cmp.Or(cmp.Compare(a.GetApp(), b.GetApp()), cmp.Compare(a.GetAgentId(), b.GetAgentId()),
		cmp.Compare(a.GetCreateIndex(), b.GetCreateIndex()))
}

// restoreHistory fills the history table of a store being restored with
// entries, in any order: sorted by (app, agent, create index), the later
// of two with the same key kept (as inserting rows one by one did), in
// full buckets.
func restoreHistory(txn *memdb.Txn, entries []*relv1.HistoryEntry) error {
	slices.SortStableFunc(entries, historyOrder)
	var cur []*relv1.HistoryEntry
	flush := func() error {
		if len(cur) == 0 {
			return nil
		}
		b := newHistoryBucket(cur[0].GetApp(), cur[0].GetAgentId(), cur[0].GetCreateIndex(), slices.Clone(cur))
		cur = cur[:0]
		if err := txn.Insert(TableHistory, b); err != nil {
			return fmt.Errorf("state: restore %s: %w", TableHistory, err)
		}
		return nil
	}
	for i, h := range entries {
		if i+1 < len(entries) && historyOrder(h, entries[i+1]) == 0 {
			continue // a later record of the same key replaces it
		}
		if len(cur) > 0 && (len(cur) == historyBucketSize || cur[0].GetApp() != h.GetApp() || cur[0].GetAgentId() != h.GetAgentId()) {
			if err := flush(); err != nil {
				return err
			}
		}
		internHistory(h)
		cur = append(cur, h)
	}
	return flush()
}
