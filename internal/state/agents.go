package state

import (
	"fmt"

	"github.com/hashicorp/go-memdb"
	"google.golang.org/protobuf/proto"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// AgentUp records a new session of an agent and what it says is installed.
func (s *Store) AgentUp(index uint64, agent *relv1.Agent, installed []*relv1.AppReport) error {
	txn := s.writeTxn()
	defer txn.Abort()
	row := proto.Clone(agent).(*relv1.Agent)
	row.Connected = true
	row.DisconnectedUnixNano, row.DisconnectReason = 0, ""
	row.CreateIndex, row.ModifyIndex = index, index
	existing, err := txn.First(TableAgents, "id", agent.GetId())
	if err != nil {
		return fmt.Errorf("state: lookup agent: %w", err)
	}
	if existing != nil {
		row.CreateIndex = existing.(*relv1.Agent).GetCreateIndex()
	}
	if err := txn.Insert(TableAgents, row); err != nil {
		return fmt.Errorf("state: insert agent: %w", err)
	}
	if err := setIndex(txn, TableAgents, index); err != nil {
		return err
	}
	for _, r := range installed {
		if err := applyReport(txn, index, agent.GetId(), r); err != nil {
			return err
		}
	}
	txn.Commit()
	return nil
}

// AgentDown marks an agent disconnected, but only if the session named is
// still its current one: a stale server's verdict about an old stream must
// not mark down an agent that reconnected elsewhere.
func (s *Store) AgentDown(index uint64, id, session string, at int64, reason string) error {
	txn := s.writeTxn()
	defer txn.Abort()
	raw, err := txn.First(TableAgents, "id", id)
	if err != nil {
		return fmt.Errorf("state: lookup agent: %w", err)
	}
	if raw == nil {
		return newError(ErrNotFound, fmt.Sprintf("agent %q not found", id))
	}
	cur := raw.(*relv1.Agent)
	if cur.GetSessionId() != session || !cur.GetConnected() {
		return nil
	}
	row := proto.Clone(cur).(*relv1.Agent)
	row.Connected = false
	row.DisconnectedUnixNano, row.DisconnectReason = at, reason
	row.ModifyIndex = index
	if err := txn.Insert(TableAgents, row); err != nil {
		return fmt.Errorf("state: update agent: %w", err)
	}
	if err := setIndex(txn, TableAgents, index); err != nil {
		return err
	}
	txn.Commit()
	return nil
}

// ApplyReports stores a batch of agents' reports. Reports of unknown agents
// are skipped (the agent's AgentUp is always committed first by the server
// holding its stream, so this only happens for a removed agent), and so
// are reports of a session that is not the agent's current one.
func (s *Store) ApplyReports(index uint64, reports []*relv1.AgentReport) error {
	txn := s.writeTxn()
	defer txn.Abort()
	for _, r := range reports {
		raw, err := txn.First(TableAgents, "id", r.GetAgentId())
		if err != nil {
			return fmt.Errorf("state: lookup agent: %w", err)
		}
		if raw == nil {
			continue
		}
		if raw.(*relv1.Agent).GetSessionId() != r.GetSessionId() {
			// From a stream the agent has since replaced: a batch of the
			// old stream committed after the new stream's hello must not
			// win over what the new stream says.
			continue
		}
		if err := applyReport(txn, index, r.GetAgentId(), r.GetReport()); err != nil {
			return err
		}
	}
	txn.Commit()
	return nil
}

// applyReport updates an agent's app row and, when a version becomes
// healthy, the app's history on that host.
func applyReport(txn *memdb.Txn, index uint64, agentID string, rep *relv1.AppReport) error {
	if rep.GetApp() == "" {
		return nil
	}
	raw, err := txn.First(TableAgentApps, "id", agentID, rep.GetApp())
	if err != nil {
		return fmt.Errorf("state: lookup agent app: %w", err)
	}
	row := &relv1.AgentApp{AgentId: agentID, App: rep.GetApp(), Report: proto.Clone(rep).(*relv1.AppReport),
		PhaseSinceUnixNano: rep.GetAtUnixNano(), CreateIndex: index, ModifyIndex: index}
	if raw != nil {
		// Reports come in raft order, which is their stream's order (the
		// current session only; times are the receiving server's).
		old := raw.(*relv1.AgentApp)
		row.CreateIndex = old.GetCreateIndex()
		if old.GetReport().GetPhase() == rep.GetPhase() && old.GetReport().GetVersion() == rep.GetVersion() {
			row.PhaseSinceUnixNano = old.GetPhaseSinceUnixNano()
		}
	}
	if err := txn.Insert(TableAgentApps, row); err != nil {
		return fmt.Errorf("state: insert agent app: %w", err)
	}
	if err := setIndex(txn, TableAgentApps, index); err != nil {
		return err
	}
	if rep.GetPhase() == "healthy" {
		return recordHealthy(txn, index, agentID, rep)
	}
	return nil
}

// recordHealthy closes the open history entry of (app, agent) if it is for
// another version and opens one for this version.
func recordHealthy(txn *memdb.Txn, index uint64, agentID string, rep *relv1.AppReport) error {
	it, err := txn.Get(TableHistory, "id_prefix", rep.GetApp(), agentID)
	if err != nil {
		return fmt.Errorf("state: history: %w", err)
	}
	var open *relv1.HistoryEntry
	for raw := it.Next(); raw != nil; raw = it.Next() {
		// The prefix of (app, "host-1") also finds "host-10"'s rows.
		if h := raw.(*relv1.HistoryEntry); h.GetAgentId() == agentID && h.GetToUnixNano() == 0 {
			open = h
		}
	}
	if open != nil {
		if open.GetVersion() == rep.GetVersion() {
			return nil
		}
		closed := proto.Clone(open).(*relv1.HistoryEntry)
		closed.ToUnixNano = rep.GetAtUnixNano()
		closed.ModifyIndex = index
		if err := txn.Insert(TableHistory, closed); err != nil {
			return fmt.Errorf("state: close history: %w", err)
		}
		if open.GetCreateIndex() == index {
			// Opened and closed within one entry: nothing more can share
			// the key, but there is nothing to add either.
			return setIndex(txn, TableHistory, index)
		}
	}
	h := &relv1.HistoryEntry{App: rep.GetApp(), AgentId: agentID, Version: rep.GetVersion(),
		FromUnixNano: rep.GetAtUnixNano(), RolloutId: rep.GetRolloutId(), CreateIndex: index, ModifyIndex: index}
	if err := txn.Insert(TableHistory, h); err != nil {
		return fmt.Errorf("state: open history: %w", err)
	}
	return setIndex(txn, TableHistory, index)
}

// Agents lists every agent by id.
func (s *Store) Agents(ws memdb.WatchSet) ([]*relv1.Agent, uint64, error) {
	txn := s.readTxn()
	it, err := txn.Get(TableAgents, "id")
	if err != nil {
		return nil, 0, fmt.Errorf("state: list agents: %w", err)
	}
	ws.Add(it.WatchCh())
	var out []*relv1.Agent
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*relv1.Agent))
	}
	return out, tableIndexOf(txn, ws, TableAgents, TableAgentApps), nil
}

// Agent returns one agent or ErrNotFound.
func (s *Store) Agent(ws memdb.WatchSet, id string) (*relv1.Agent, error) {
	txn := s.readTxn()
	ch, raw, err := txn.FirstWatch(TableAgents, "id", id)
	if err != nil {
		return nil, fmt.Errorf("state: get agent: %w", err)
	}
	ws.Add(ch)
	if raw == nil {
		return nil, newError(ErrNotFound, fmt.Sprintf("agent %q not found: 'relctl agent list' shows the agents", id))
	}
	return raw.(*relv1.Agent), nil
}

// AgentApps lists the app rows of one agent.
func (s *Store) AgentApps(ws memdb.WatchSet, agentID string) ([]*relv1.AgentApp, error) {
	txn := s.readTxn()
	it, err := txn.Get(TableAgentApps, "id_prefix", agentID)
	if err != nil {
		return nil, fmt.Errorf("state: list agent apps: %w", err)
	}
	ws.Add(it.WatchCh())
	var out []*relv1.AgentApp
	for raw := it.Next(); raw != nil; raw = it.Next() {
		if a := raw.(*relv1.AgentApp); a.GetAgentId() == agentID {
			out = append(out, a)
		}
	}
	return out, nil
}

// AgentApp returns one agent's row for one app, or nil.
func (s *Store) AgentApp(ws memdb.WatchSet, agentID, app string) (*relv1.AgentApp, error) {
	txn := s.readTxn()
	ch, raw, err := txn.FirstWatch(TableAgentApps, "id", agentID, app)
	if err != nil {
		return nil, fmt.Errorf("state: get agent app: %w", err)
	}
	ws.Add(ch)
	if raw == nil {
		return nil, nil
	}
	return raw.(*relv1.AgentApp), nil
}

// History lists an app's history entries, oldest first per host.
func (s *Store) History(ws memdb.WatchSet, app string) ([]*relv1.HistoryEntry, uint64, error) {
	txn := s.readTxn()
	it, err := txn.Get(TableHistory, "id_prefix", app)
	if err != nil {
		return nil, 0, fmt.Errorf("state: history: %w", err)
	}
	ws.Add(it.WatchCh())
	var out []*relv1.HistoryEntry
	for raw := it.Next(); raw != nil; raw = it.Next() {
		if h := raw.(*relv1.HistoryEntry); h.GetApp() == app {
			out = append(out, h)
		}
	}
	return out, tableIndexOf(txn, ws, TableHistory), nil
}

// Matches reports whether labels satisfy every selector pair.
func Matches(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if lv, ok := labels[k]; !ok || lv != v {
			return false
		}
	}
	return true
}
