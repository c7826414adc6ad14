package state

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/hashicorp/go-memdb"
	"google.golang.org/protobuf/proto"

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

// foldable lists the closed history entries that ended at or before
// cutoff, oldest end first (then by app, host and create index: the
// order an index on the end time gave, so replicas of every version fold
// the same entries), at most limit. It scans the table: an index on the
// end time cost 450 bytes an entry, 38 % of the table's memory (issue 10),
// and a pass runs once per --retention-interval.
func foldable(txn *memdb.Txn, cutoff int64, limit int) ([]*relv1.HistoryEntry, error) {
	it, err := txn.Get(TableHistory, "id")
	if err != nil {
		return nil, fmt.Errorf("state: history: %w", err)
	}
	var out []*relv1.HistoryEntry
	next := historyNext(it)
	for raw := next(); raw != nil; raw = next() {
		// From 1: the open entries (to 0) say what runs now; never folded.
		if h := raw.(*relv1.HistoryEntry); h.GetToUnixNano() >= 1 && h.GetToUnixNano() <= cutoff {
			out = append(out, h)
		}
	}
	slices.SortFunc(out, func(a, b *relv1.HistoryEntry) int {
		return cmp.Or(cmp.Compare(a.GetToUnixNano(), b.GetToUnixNano()), cmp.Compare(a.GetApp(), b.GetApp()),
			cmp.Compare(a.GetAgentId(), b.GetAgentId()), cmp.Compare(a.GetCreateIndex(), b.GetCreateIndex()))
	})
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// FoldableHistory counts the entries a FoldHistory at cutoff would fold
// (at most limit), so the leader proposes a pass only when there is work.
func (s *Store) FoldableHistory(cutoff int64, limit int) (int, error) {
	hs, err := foldable(s.readTxn(), cutoff, limit)
	return len(hs), err
}

// FoldHistory removes closed history entries that ended at or before
// cutoff, at most limit of them, oldest first, and counts each into its
// (app, host)'s summary row. It returns how many it folded; a repeat
// finds none left.
func (s *Store) FoldHistory(index uint64, cutoff int64, limit int) (int, error) {
	txn := s.writeTxn()
	defer txn.Abort()
	hs, err := foldable(txn, cutoff, limit)
	if err != nil {
		return 0, err
	}
	for _, h := range hs {
		raw, err := txn.First(TableHistorySummaries, "id", h.GetApp(), h.GetAgentId())
		if err != nil {
			return 0, fmt.Errorf("state: history summary: %w", err)
		}
		sum := &relv1.HistorySummary{App: h.GetApp(), AgentId: h.GetAgentId(), CreateIndex: index}
		if raw != nil {
			sum = proto.Clone(raw.(*relv1.HistorySummary)).(*relv1.HistorySummary)
		}
		foldInto(sum, h)
		sum.ModifyIndex = index
		if err := txn.Insert(TableHistorySummaries, sum); err != nil {
			return 0, fmt.Errorf("state: history summary: %w", err)
		}
	}
	if err := deleteHistory(txn, hs...); err != nil {
		return 0, fmt.Errorf("state: fold history: %w", err)
	}
	if len(hs) > 0 {
		if err := setIndex(txn, TableHistory, index); err != nil {
			return 0, err
		}
		if err := setIndex(txn, TableHistorySummaries, index); err != nil {
			return 0, err
		}
	}
	txn.Commit()
	return len(hs), nil
}

// foldInto counts one closed entry into its summary.
func foldInto(sum *relv1.HistorySummary, h *relv1.HistoryEntry) {
	sum.Entries++
	switch h.GetOutcome() {
	case OutcomeReplaced:
		sum.Replaced++
	case OutcomeFailed:
		sum.Failed++
	case OutcomeRolledBack:
		sum.RolledBack++
	default:
		sum.Other++
	}
	if from := h.GetFromUnixNano(); sum.FirstUnixNano == 0 || from < sum.FirstUnixNano {
		sum.FirstUnixNano = from
	}
	if to := h.GetToUnixNano(); to >= sum.LastUnixNano {
		sum.LastUnixNano, sum.LastVersion = to, h.GetVersion()
	}
}

// HistorySummaries lists an app's history summaries by host.
func (s *Store) HistorySummaries(ws memdb.WatchSet, app string) ([]*relv1.HistorySummary, uint64, error) {
	txn := s.readTxn()
	it, err := txn.Get(TableHistorySummaries, "id_prefix", app)
	if err != nil {
		return nil, 0, fmt.Errorf("state: history summaries: %w", err)
	}
	ws.Add(it.WatchCh())
	var out []*relv1.HistorySummary
	for raw := it.Next(); raw != nil; raw = it.Next() {
		// The prefix "web" also finds "web2"'s rows.
		if h := raw.(*relv1.HistorySummary); h.GetApp() == app {
			out = append(out, h)
		}
	}
	return out, tableIndexOf(txn, ws, TableHistorySummaries), nil
}

// ReasonAgentRemoved is the replaced_by_kind of a history entry closed
// because agent retention removed its host.
const ReasonAgentRemoved = "agent_removed"

// heldAgents are the agents an active rollout names among its hosts: a
// rollout (or the rollback it may start) still needs to know them.
func heldAgents(txn *memdb.Txn) (map[string]string, error) {
	held := map[string]string{}
	for _, st := range rollout.ActiveStates {
		it, err := txn.Get(TableRollouts, "state", st)
		if err != nil {
			return nil, fmt.Errorf("state: active rollouts: %w", err)
		}
		for raw := it.Next(); raw != nil; raw = it.Next() {
			ro := raw.(*relv1.Rollout)
			for _, h := range ro.GetHosts() {
				held[h.GetAgentId()] = ro.GetId()
			}
		}
	}
	return held, nil
}

// agentExpired is the agent retention policy, the same for the leader's
// choice and the FSM's check: disconnected, since at or before cutoff,
// and held by no active rollout.
func agentExpired(a *relv1.Agent, cutoff int64, held map[string]string) bool {
	d := a.GetDisconnectedUnixNano()
	return !a.GetConnected() && d != 0 && d <= cutoff && held[a.GetId()] == ""
}

// ExpiredAgents picks the agents a RemoveAgents at cutoff removes, by id,
// at most limit.
func (s *Store) ExpiredAgents(cutoff int64, limit int) ([]string, error) {
	txn := s.readTxn()
	held, err := heldAgents(txn)
	if err != nil {
		return nil, err
	}
	it, err := txn.Get(TableAgents, "id")
	if err != nil {
		return nil, fmt.Errorf("state: list agents: %w", err)
	}
	var ids []string
	for raw := it.Next(); raw != nil && len(ids) < limit; raw = it.Next() {
		if a := raw.(*relv1.Agent); agentExpired(a, cutoff, held) {
			ids = append(ids, a.GetId())
		}
	}
	return ids, nil
}

// RemoveAgents removes the agents named that the policy still picks at
// cutoff (one that reconnected since the leader decided, or that a
// rollout started since holds, stays), with their app and desired rows.
// Their open history entries are closed at at (replaced_by_kind
// agent_removed) and kept: the history of a removed host is still
// audit, and history retention folds it later. Revocations stay. A
// removed agent that comes back registers anew (AgentUp). It returns how
// many it removed.
func (s *Store) RemoveAgents(index uint64, ids []string, cutoff, at int64) (int, error) {
	txn := s.writeTxn()
	defer txn.Abort()
	held, err := heldAgents(txn)
	if err != nil {
		return 0, err
	}
	removed := map[string]bool{}
	for _, id := range ids {
		raw, err := txn.First(TableAgents, "id", id)
		if err != nil {
			return 0, fmt.Errorf("state: lookup agent: %w", err)
		}
		if raw == nil || removed[id] || !agentExpired(raw.(*relv1.Agent), cutoff, held) {
			continue
		}
		if err := txn.Delete(TableAgents, raw); err != nil {
			return 0, fmt.Errorf("state: remove agent: %w", err)
		}
		// By prefix, then by id: "web-1" is a prefix of "web-10" too.
		it, err := txn.Get(TableAgentApps, "id_prefix", id)
		if err != nil {
			return 0, fmt.Errorf("state: agent apps: %w", err)
		}
		var apps []any
		for raw := it.Next(); raw != nil; raw = it.Next() {
			if raw.(*relv1.AgentApp).GetAgentId() == id {
				apps = append(apps, raw)
			}
		}
		for _, a := range apps {
			if err := txn.Delete(TableAgentApps, a); err != nil {
				return 0, fmt.Errorf("state: remove agent app: %w", err)
			}
		}
		if _, err := txn.DeleteAll(TableDesired, "agent", id); err != nil {
			return 0, fmt.Errorf("state: remove desired: %w", err)
		}
		removed[id] = true
	}
	if len(removed) == 0 {
		return 0, nil
	}
	it, err := txn.Get(TableHistory, "id")
	if err != nil {
		return 0, fmt.Errorf("state: history: %w", err)
	}
	var open []*relv1.HistoryEntry
	next := historyNext(it)
	for raw := next(); raw != nil; raw = next() {
		if h := raw.(*relv1.HistoryEntry); removed[h.GetAgentId()] && h.GetToUnixNano() == 0 {
			open = append(open, h)
		}
	}
	for _, h := range open {
		closed := proto.Clone(h).(*relv1.HistoryEntry)
		closed.ToUnixNano, closed.ReplacedByKind = at, ReasonAgentRemoved
		if err := putHistory(txn, index, closed); err != nil {
			return 0, err
		}
	}
	for _, t := range []string{TableAgents, TableAgentApps, TableDesired} {
		if err := setIndex(txn, t, index); err != nil {
			return 0, err
		}
	}
	txn.Commit()
	return len(removed), nil
}
