package state

import (
	"errors"
	"fmt"

	"github.com/hashicorp/go-memdb"
	"google.golang.org/protobuf/proto"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// AgentUp records a new session of an agent and what it says is installed
// (the agent_up kind, written before sessions were batched).
func (s *Store) AgentUp(index uint64, agent *relv1.Agent, installed []*relv1.AppReport) error {
	txn := s.writeTxn()
	defer txn.Abort()
	if err := agentUp(txn, index, &relv1.AgentUp{Agent: agent, Installed: installed}); err != nil {
		return err
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
	if err := agentDown(txn, index, &relv1.AgentDown{AgentId: id, SessionId: session, AtUnixNano: at, Reason: reason}); err != nil {
		return err
	}
	txn.Commit()
	return nil
}

// AgentSessions applies one server's batch of connects and disconnects:
// every up in order, then every down in order, in one transaction. Each
// item gets its own answer in items (ups first, then downs; nil when
// applied): a refused item (a revoked agent, an unknown one) writes
// nothing and the others still apply. err is for the store failing, which
// fails the whole entry.
func (s *Store) AgentSessions(index uint64, ups []*relv1.AgentUp, downs []*relv1.AgentDown) (items []error, err error) {
	txn := s.writeTxn()
	defer txn.Abort()
	items = make([]error, 0, len(ups)+len(downs))
	for _, up := range ups {
		err := agentUp(txn, index, up)
		if err != nil && !isRefusal(err) {
			return nil, err
		}
		items = append(items, err)
	}
	for _, down := range downs {
		err := agentDown(txn, index, down)
		if err != nil && !isRefusal(err) {
			return nil, err
		}
		items = append(items, err)
	}
	txn.Commit()
	return items, nil
}

// isRefusal says err is an application error (the item is refused and
// wrote nothing), not the store failing.
func isRefusal(err error) bool {
	var e *Error
	return errors.As(err, &e)
}

// agentUp records a session in txn. A session whose certificate became
// valid at or before the agent's revocation is refused, as the servers'
// revocation watchers end such streams: a revocation committed between a
// stream's handshake and its AgentUp must not leave the agent connected.
// Entries written before the certificate time was stamped (0) skip that.
func agentUp(txn *memdb.Txn, index uint64, up *relv1.AgentUp) error {
	agent := up.GetAgent()
	if nb := up.GetCertNotBeforeUnixNano(); nb != 0 {
		rev, err := txn.First(TableRevocations, "id", agent.GetId())
		if err != nil {
			return fmt.Errorf("state: lookup revocation: %w", err)
		}
		if rev != nil && rev.(*relv1.AgentRevocation).GetRevokedUnixNano() >= nb {
			return newError(ErrUnauthenticated, fmt.Sprintf("agent %q was revoked: its certificates are refused; enrol it again with a new join token ('relctl agent token create')", agent.GetId()))
		}
	}
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
	for _, r := range up.GetInstalled() {
		if err := applyReport(txn, index, agent.GetId(), r); err != nil {
			return err
		}
	}
	return nil
}

// agentDown marks a session down in txn if it is the agent's current one.
func agentDown(txn *memdb.Txn, index uint64, d *relv1.AgentDown) error {
	raw, err := txn.First(TableAgents, "id", d.GetAgentId())
	if err != nil {
		return fmt.Errorf("state: lookup agent: %w", err)
	}
	if raw == nil {
		return newError(ErrNotFound, fmt.Sprintf("agent %q not found", d.GetAgentId()))
	}
	cur := raw.(*relv1.Agent)
	if cur.GetSessionId() != d.GetSessionId() || !cur.GetConnected() {
		return nil
	}
	row := proto.Clone(cur).(*relv1.Agent)
	row.Connected = false
	row.DisconnectedUnixNano, row.DisconnectReason = d.GetAtUnixNano(), d.GetReason()
	row.ModifyIndex = index
	if err := txn.Insert(TableAgents, row); err != nil {
		return fmt.Errorf("state: update agent: %w", err)
	}
	return setIndex(txn, TableAgents, index)
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

// applyReport updates an agent's app row and the app's history on that
// host (see recordHistory).
func applyReport(txn *memdb.Txn, index uint64, agentID string, rep *relv1.AppReport) error {
	if rep.GetApp() == "" {
		return nil
	}
	raw, err := txn.First(TableAgentApps, "id", agentID, rep.GetApp())
	if err != nil {
		return fmt.Errorf("state: lookup agent app: %w", err)
	}
	row := &relv1.AgentApp{AgentId: agentID, App: rep.GetApp(), Report: proto.Clone(rep).(*relv1.AppReport),
		PhaseSinceUnixNano: rep.GetAtUnixNano(), AttemptSinceUnixNano: rep.GetAtUnixNano(), CreateIndex: index, ModifyIndex: index}
	var prev *relv1.AppReport
	if raw != nil {
		// Reports come in raft order, which is their stream's order (the
		// current session only; times are the receiving server's).
		old := raw.(*relv1.AgentApp)
		prev = old.GetReport()
		row.CreateIndex = old.GetCreateIndex()
		if prev.GetVersion() == rep.GetVersion() && prev.GetRolloutId() == rep.GetRolloutId() && old.GetAttemptSinceUnixNano() != 0 {
			row.AttemptSinceUnixNano = old.GetAttemptSinceUnixNano()
		}
		if prev.GetPhase() == rep.GetPhase() && prev.GetVersion() == rep.GetVersion() {
			row.PhaseSinceUnixNano = old.GetPhaseSinceUnixNano()
		}
	}
	if err := txn.Insert(TableAgentApps, row); err != nil {
		return fmt.Errorf("state: insert agent app: %w", err)
	}
	if err := setIndex(txn, TableAgentApps, index); err != nil {
		return err
	}
	return recordHistory(txn, index, agentID, rep, prev, row.GetAttemptSinceUnixNano())
}

// History outcomes.
const (
	OutcomeStarting   = "starting"
	OutcomeRunning    = "running"
	OutcomeFailed     = "failed"
	OutcomeReplaced   = "replaced"
	OutcomeRolledBack = "rolled_back"
)

// recordHistory keeps (app, agent)'s history: at most one open row, the
// version the host switched to last.
//
//   - A starting, verifying or healthy report of another version than the
//     open row's closes that row (replaced, or rolled_back when the report's
//     rollout is a rollback; a failed row stays failed) and opens one for the
//     version (starting, or running once healthy).
//   - A healthy report of the open row's version makes it running; if that
//     row had failed, the failed row closes and a running one opens.
//   - A failed report of the open row's version marks it failed with the
//     reason; it stays open while the host is on it. A failed report of
//     another version (it failed before the switch: download, install)
//     adds a closed failed row from the attempt's first report.
//
// Everything comes from the reports in raft order and their server-stamped
// times, and the rollouts table, so every replica records the same.
func recordHistory(txn *memdb.Txn, index uint64, agentID string, rep, prev *relv1.AppReport, attemptSince int64) error {
	phase := rep.GetPhase()
	switch phase {
	case "starting", "verifying", "healthy", "failed":
	default:
		return nil
	}
	if phase == "failed" && prev != nil && prev.GetPhase() == "failed" &&
		prev.GetVersion() == rep.GetVersion() && prev.GetRolloutId() == rep.GetRolloutId() {
		// The same failure again (a reconnect's report of what is installed).
		return nil
	}
	open, err := openHistory(txn, rep.GetApp(), agentID)
	if err != nil {
		return err
	}
	at := rep.GetAtUnixNano()
	kind, err := rolloutKind(txn, rep.GetRolloutId())
	if err != nil {
		return err
	}
	if phase == "failed" {
		if open != nil && open.GetVersion() == rep.GetVersion() {
			if open.GetOutcome() == OutcomeFailed {
				return nil
			}
			failed := proto.Clone(open).(*relv1.HistoryEntry)
			failed.Outcome, failed.Reason, failed.FailedUnixNano = OutcomeFailed, rep.GetReason(), at
			return putHistory(txn, index, failed)
		}
		from := attemptSince
		if from == 0 || from > at {
			from = at
		}
		return putHistory(txn, index, &relv1.HistoryEntry{App: rep.GetApp(), AgentId: agentID, Version: rep.GetVersion(),
			FromUnixNano: from, ToUnixNano: at, RolloutId: rep.GetRolloutId(), RolloutKind: kind,
			Outcome: OutcomeFailed, Reason: rep.GetReason(), FailedUnixNano: at, CreateIndex: index})
	}
	outcome := OutcomeStarting
	if phase == "healthy" {
		outcome = OutcomeRunning
	}
	if open != nil && open.GetVersion() == rep.GetVersion() {
		switch {
		case open.GetOutcome() == OutcomeFailed && phase == "healthy":
			// It came back: the failure ends here, a healthy run starts.
		case phase == "healthy" && open.GetOutcome() != OutcomeRunning:
			running := proto.Clone(open).(*relv1.HistoryEntry)
			running.Outcome = OutcomeRunning
			return putHistory(txn, index, running)
		default:
			return nil
		}
	}
	if open != nil {
		closed := proto.Clone(open).(*relv1.HistoryEntry)
		closed.ToUnixNano = at
		closed.ReplacedByRolloutId, closed.ReplacedByKind = rep.GetRolloutId(), kind
		switch {
		case open.GetOutcome() == OutcomeFailed:
			// Failed stays failed, also when the same version comes
			// back healthy (a new row says so).
		case kind == "rollback":
			closed.Outcome = OutcomeRolledBack
		default:
			closed.Outcome = OutcomeReplaced
		}
		if err := putHistory(txn, index, closed); err != nil {
			return err
		}
		if open.GetCreateIndex() == index {
			// Opened within this same entry: the new row would take its
			// key. The later report wins.
			if err := deleteHistory(txn, closed); err != nil {
				return err
			}
		}
	}
	return putHistory(txn, index, &relv1.HistoryEntry{App: rep.GetApp(), AgentId: agentID, Version: rep.GetVersion(),
		FromUnixNano: at, RolloutId: rep.GetRolloutId(), RolloutKind: kind, Outcome: outcome, CreateIndex: index})
}

// rolloutKind is the kind of a rollout ("" when the id is empty or gone).
func rolloutKind(txn *memdb.Txn, id string) (string, error) {
	if id == "" {
		return "", nil
	}
	raw, err := txn.First(TableRollouts, "id", id)
	if err != nil {
		return "", fmt.Errorf("state: lookup rollout: %w", err)
	}
	if raw == nil {
		return "", nil
	}
	kind := raw.(*relv1.Rollout).GetKind()
	if kind == "" {
		kind = "deploy"
	}
	return kind, nil
}

// CurrentVersion is the version agentID runs for app as far as the cluster
// knows: the reported version once healthy; else the host's open history
// row (the version it switched to last); else, before any switch, the
// version the report says it replaces. "" when nothing is known.
func (s *Store) CurrentVersion(ws memdb.WatchSet, agentID, app string) (string, error) {
	txn := s.readTxn()
	ch, raw, err := txn.FirstWatch(TableAgentApps, "id", agentID, app)
	if err != nil {
		return "", fmt.Errorf("state: get agent app: %w", err)
	}
	ws.Add(ch)
	var rep *relv1.AppReport
	if raw != nil {
		rep = raw.(*relv1.AgentApp).GetReport()
		if rep.GetPhase() == "healthy" {
			return rep.GetVersion(), nil
		}
	}
	open, err := openHistory(txn, app, agentID)
	if err != nil {
		return "", err
	}
	if open != nil {
		return open.GetVersion(), nil
	}
	return rep.GetPreviousVersion(), nil
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
	next := historyNext(it)
	for raw := next(); raw != nil; raw = next() {
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
