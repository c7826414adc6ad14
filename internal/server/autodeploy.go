package server

import (
	"context"
	"time"

	"github.com/relhq/rel/internal/lifecycle"
	"github.com/relhq/rel/internal/retry"
	"github.com/relhq/rel/internal/state"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// Auto-deploy: when a release's digest enters a phase of its app's
// lifecycle (the succeeded rollout that completes the phase before), the
// leader starts a deploy rollout of it to each of the phase's auto_deploy
// environments, through StartRollout (queued behind what holds the hosts),
// so every check of a rollout start applies and the requester is the
// cluster itself (no actor).
//
// Once per release and environment: the promotions table records the
// first deploy rollout ever created of a digest in an environment, in the
// entry that creates it, so neither this loop nor a new leader starts a
// second one. Only entries into a phase after the app got its lifecycle
// and after the lifecycle's last change count, so setting a lifecycle does
// not deploy old releases.

// autoDeployRetry is how soon a start that failed (no connected host,
// say) is tried again when nothing else changed.
const autoDeployRetry = 10 * time.Second

// autoDeployLoop runs on the leader until ctx ends.
func (s *Server) autoDeployLoop(ctx context.Context) {
	failed := map[string]time.Time{}
	for ctx.Err() == nil {
		ws := newWatch(s.store)
		s.store.WatchTables(ws, state.TablePromotions, state.TableApps, state.TableLifecycles, state.TableReleases)
		s.autoDeployPass(ctx, failed, time.Now())
		wctx, cancel := context.WithTimeout(ctx, autoDeployRetry)
		_ = ws.WatchCtx(wctx)
		cancel()
		if !retry.Sleep(ctx, retry.Jitter(catchUpSettle)) {
			return
		}
	}
}

// autoDeployTarget is one start the pass decided.
type autoDeployTarget struct {
	app, version, env string
	key               string
}

// autoDeployTargets decides, from the rows, the rollouts auto-deploy
// should start now.
func autoDeployTargets(st *state.Store) ([]autoDeployTarget, error) {
	apps, _, err := st.Apps(nil)
	if err != nil {
		return nil, err
	}
	proms, _, err := st.AllPromotions(newWatch(st))
	if err != nil {
		return nil, err
	}
	type key struct{ app, sha string }
	groups := map[key]map[string]*relv1.Promotion{}
	var order []key
	for _, p := range proms {
		k := key{p.GetApp(), p.GetSha256()}
		if groups[k] == nil {
			groups[k] = map[string]*relv1.Promotion{}
			order = append(order, k)
		}
		groups[k][p.GetEnvironment()] = p
	}
	byName := map[string]*relv1.App{}
	for _, a := range apps {
		byName[a.GetName()] = a
	}
	var out []autoDeployTarget
	for _, k := range order {
		a := byName[k.app]
		if a.GetLifecycle() == "" {
			continue
		}
		lc, _, err := st.Lifecycle(nil, a.GetLifecycle())
		if err != nil {
			continue
		}
		since := max(a.GetModifyIndex(), lc.GetModifyIndex())
		ps := groups[k]
		promoted := state.Promoted(ps)
		entered := lifecycle.Entered(lc, promoted)
		for j := 1; j <= entered; j++ {
			// The newest succeeded rollout of the phases before j: the
			// entry into phase j, and the version to take on.
			var last *relv1.Promotion
			for _, p := range lc.GetPhases()[:j] {
				for _, e := range p.GetEnvironments() {
					if pr := ps[e]; pr.GetSucceededRollout() != "" && (last == nil || pr.GetModifyIndex() > last.GetModifyIndex()) {
						last = pr
					}
				}
			}
			if last == nil || last.GetModifyIndex() <= since {
				continue
			}
			for _, env := range lc.GetPhases()[j].GetAutoDeploy() {
				if ps[env].GetFirstRollout() != "" {
					continue // a rollout of this digest went there already
				}
				out = append(out, autoDeployTarget{app: k.app, version: last.GetSucceededVersion(), env: env, key: k.app + "/" + k.sha + "/" + env})
			}
		}
	}
	return out, nil
}

func (s *Server) autoDeployPass(ctx context.Context, failed map[string]time.Time, now time.Time) {
	targets, err := autoDeployTargets(s.store)
	if err != nil {
		s.logger.Warn("auto-deploy: read state", "err", err)
		return
	}
	for _, t := range targets {
		if at, ok := failed[t.key]; ok && now.Sub(at) < autoDeployRetry {
			continue
		}
		if rel, _, err := s.store.Release(nil, t.app, t.version); err != nil || rel.GetBlocked() {
			continue // deleted or blocked: nothing to start
		}
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		resp, err := (&controlService{s: s}).StartRollout(actx, &relv1.StartRolloutRequest{App: t.app, Version: t.version, Environment: t.env, Queue: true})
		cancel()
		if err != nil {
			failed[t.key] = now
			if ctx.Err() == nil {
				s.logger.Warn("auto-deploy: could not start", "app", t.app, "version", t.version, "environment", t.env, "err", err)
			}
			continue
		}
		delete(failed, t.key)
		s.logger.Info("auto-deploy started", "app", t.app, "version", t.version, "environment", t.env, "rollout", resp.GetRollout().GetId())
	}
}
