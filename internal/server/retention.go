package server

import (
	"context"
	"time"

	"github.com/relhq/rel/internal/retry"
	"github.com/relhq/rel/internal/rollout"
	"github.com/relhq/rel/internal/validate"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// retentionLoop runs on the leader: every RetentionInterval it removes the
// terminal rollouts (with their events) that rollout.Expired picks, one
// small raft entry per pass; the time is the leader's, the decision is
// replayed by id, and the FSM skips any rollout that is no longer terminal.
func (s *Server) retentionLoop(ctx context.Context) {
	for retry.Sleep(ctx, retry.Jitter(s.cfg.RetentionInterval)) {
		ros, _, err := s.store.Rollouts(nil, "")
		if err != nil {
			continue
		}
		ids := rollout.Expired(ros, time.Now(), s.cfg.RolloutRetention, s.cfg.RolloutKeep, validate.MaxRemovedRollouts)
		if len(ids) == 0 {
			continue
		}
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err = s.apply(actx, &relv1.Command{Kind: &relv1.Command_RemoveRollouts{RemoveRollouts: &relv1.RemoveRollouts{RolloutIds: ids}}})
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				s.logger.Warn("retention: removing rollouts failed; next pass retries", "err", err)
			}
			continue
		}
		s.metrics.rolloutsRemoved.Add(float64(len(ids)))
		s.logger.Info("retention: removed finished rollouts", "count", len(ids), "older_than", s.cfg.RolloutRetention, "kept_per_app_and_env", s.cfg.RolloutKeep)
	}
}
