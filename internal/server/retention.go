package server

import (
	"context"
	"time"

	"github.com/relhq/rel/internal/retry"
	"github.com/relhq/rel/internal/rollout"
	"github.com/relhq/rel/internal/validate"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// retentionLoop runs on the leader: every RetentionInterval it runs each
// retention pass, each one small raft entry when it has work: finished
// rollouts (removeRollouts), old history (foldHistory), long-gone agents
// (removeAgents), old deployment records (pruneDeployments), old
// archived audit records (trimAudit). The times are the leader's, stamped into the entry; the
// FSM re-checks the policy there, so a stale decision changes nothing it
// should not.
//
// A pass that was full (it hit its per-entry bound) is run again at once,
// up to maxPassesPerWake times: a busy fleet writes history faster than one
// bounded entry per interval folds it (200 hosts and 10 rollouts a second
// close 2,000 entries a second), and a backlog must shrink, not grow.
func (s *Server) retentionLoop(ctx context.Context) {
	for retry.Sleep(ctx, retry.Jitter(s.cfg.RetentionInterval)) {
		s.retentionWake(ctx)
	}
}

// retentionWake runs the passes, again while one was full.
func (s *Server) retentionWake(ctx context.Context) {
	for range maxPassesPerWake {
		more := s.removeRollouts(ctx)
		more = s.foldHistory(ctx) || more
		more = s.removeAgents(ctx) || more
		more = s.pruneDeployments(ctx) || more
		more = s.trimAudit(ctx) || more
		more = s.trimEvents(ctx) || more
		if !more || ctx.Err() != nil {
			return
		}
	}
}

// maxPassesPerWake bounds the back-to-back passes of one wake of the
// retention loop (each a small entry), so a huge backlog is worked off
// over several intervals without starving other writes.
const maxPassesPerWake = 100

// retentionApply proposes one retention pass's command.
func (s *Server) retentionApply(ctx context.Context, what string, cmd *relv1.Command) bool {
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := s.apply(actx, cmd); err != nil {
		if ctx.Err() == nil {
			s.logger.Warn("retention: "+what+" failed; next pass retries", "err", err)
		}
		return false
	}
	return true
}

// removeRollouts removes the terminal rollouts (with their events) that
// rollout.Expired picks; the decision is replayed by id, and the FSM skips
// any rollout that is no longer terminal.
func (s *Server) removeRollouts(ctx context.Context) (full bool) {
	ros, _, err := s.store.Rollouts(nil, "")
	if err != nil {
		return false
	}
	ids := rollout.Expired(ros, time.Now(), s.cfg.RolloutRetention, s.cfg.RolloutKeep, validate.MaxRemovedRollouts)
	if len(ids) == 0 {
		return false
	}
	cmd := &relv1.Command{Kind: &relv1.Command_RemoveRollouts{RemoveRollouts: &relv1.RemoveRollouts{RolloutIds: ids}}}
	if !s.retentionApply(ctx, "removing rollouts", cmd) {
		return false
	}
	s.metrics.rolloutsRemoved.Add(float64(len(ids)))
	s.logger.Info("retention: removed finished rollouts", "count", len(ids), "older_than", s.cfg.RolloutRetention, "kept_per_app_and_env", s.cfg.RolloutKeep)
	return len(ids) == validate.MaxRemovedRollouts
}

// foldHistory folds closed history entries that ended before
// now-HistoryRetention into per-host summaries, at most
// validate.MaxFoldedHistory per entry; a backlog takes several passes.
// The FSM picks the entries from the cutoff; the count here is what it
// will fold, as only this leader proposes folds.
func (s *Server) foldHistory(ctx context.Context) (full bool) {
	cutoff := time.Now().Add(-s.cfg.HistoryRetention).UnixNano()
	n, err := s.store.FoldableHistory(cutoff, validate.MaxFoldedHistory)
	if err != nil || n == 0 {
		return false
	}
	cmd := &relv1.Command{Kind: &relv1.Command_FoldHistory{FoldHistory: &relv1.FoldHistory{CutoffUnixNano: cutoff, MaxEntries: validate.MaxFoldedHistory}}}
	if !s.retentionApply(ctx, "folding history", cmd) {
		return false
	}
	s.metrics.historyFolded.Add(float64(n))
	s.logger.Info("retention: folded history into per-host summaries", "count", n, "older_than", s.cfg.HistoryRetention)
	return n == validate.MaxFoldedHistory
}

// removeAgents removes agents disconnected since before
// now-AgentRetention that no active rollout holds; the FSM checks each
// again in the entry (one that reconnected meanwhile stays).
func (s *Server) removeAgents(ctx context.Context) (full bool) {
	now := time.Now()
	cutoff := now.Add(-s.cfg.AgentRetention).UnixNano()
	ids, err := s.store.ExpiredAgents(cutoff, validate.MaxRemovedAgents)
	if err != nil || len(ids) == 0 {
		return false
	}
	cmd := &relv1.Command{Kind: &relv1.Command_RemoveAgents{RemoveAgents: &relv1.RemoveAgents{AgentIds: ids, CutoffUnixNano: cutoff, AtUnixNano: now.UnixNano()}}}
	if !s.retentionApply(ctx, "removing agents", cmd) {
		return false
	}
	s.metrics.agentsRemoved.Add(float64(len(ids)))
	s.logger.Info("retention: removed long-disconnected agents", "count", len(ids), "away_longer_than", s.cfg.AgentRetention)
	return len(ids) == validate.MaxRemovedAgents
}

// pruneDeployments removes deployment records that finished before
// now-DeploymentRetention, at most validate.MaxPrunedDeployments per
// entry; the FSM picks them from the cutoff.
func (s *Server) pruneDeployments(ctx context.Context) (full bool) {
	cutoff := time.Now().Add(-s.cfg.DeploymentRetention).UnixNano()
	n, err := s.store.PrunableDeployments(cutoff, validate.MaxPrunedDeployments)
	if err != nil || n == 0 {
		return false
	}
	cmd := &relv1.Command{Kind: &relv1.Command_PruneDeployments{PruneDeployments: &relv1.PruneDeployments{CutoffUnixNano: cutoff, MaxEntries: validate.MaxPrunedDeployments}}}
	if !s.retentionApply(ctx, "pruning deployment records", cmd) {
		return false
	}
	s.logger.Info("retention: removed old deployment records", "count", n, "older_than", s.cfg.DeploymentRetention)
	return n == validate.MaxPrunedDeployments
}

// trimAudit removes audit records an archive covers (the archived mark)
// that were stamped before now-AuditRetention, oldest first, at most
// validate.MaxTrimmedAudit per entry; the FSM picks them from the mark
// and the cutoff, stopping at the first that is not both, so the chain
// kept stays contiguous. Nothing is archived, nothing goes: without
// 'relctl audit archive' the trail is kept whole. AuditRetention < 0
// turns it off.
func (s *Server) trimAudit(ctx context.Context) (full bool) {
	if s.cfg.AuditRetention < 0 {
		return false
	}
	cutoff := time.Now().Add(-s.cfg.AuditRetention).UnixNano()
	n, err := s.store.TrimmableAudit(cutoff, validate.MaxTrimmedAudit)
	if err != nil || n == 0 {
		return false
	}
	cmd := &relv1.Command{Kind: &relv1.Command_TrimAudit{TrimAudit: &relv1.TrimAudit{CutoffUnixNano: cutoff, MaxRecords: validate.MaxTrimmedAudit}}}
	if !s.retentionApply(ctx, "removing archived audit records", cmd) {
		return false
	}
	s.metrics.auditRemoved.Add(float64(n))
	s.logger.Info("retention: removed archived audit records", "count", n, "older_than", s.cfg.AuditRetention)
	return n == validate.MaxTrimmedAudit
}
