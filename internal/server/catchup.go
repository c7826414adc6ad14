package server

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/relhq/rel/internal/retry"
	"github.com/relhq/rel/internal/rollout"
	"github.com/relhq/rel/internal/rollout/engine"
	"github.com/relhq/rel/internal/state"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// Environments as desired state (issue 9). An environment's current
// release of an app is that of its last succeeded rollout or rollback
// there (envstatus.go). A host that comes to match the selector with
// nothing of the app, or that runs another release no rollout put there,
// converges to it through a catch-up: a rolling rollout of kind catch_up
// over those hosts, at most the environment's catch_up_parallel at a time,
// health-gated and recorded like any rollout, started by the leader. Hosts
// running a release some rollout put there (to an overlapping environment,
// or a failed rollout here) are left alone: a person decided that, and two
// environments would otherwise take a shared host back and forth.

// maxCatchUpParallel bounds --catch-up-parallel.
const maxCatchUpParallel = 1000

// catchUpSettle is how long the catch-up loop lets changes settle before
// looking: a burst of reports is one look, not one per report.
const catchUpSettle = 250 * time.Millisecond

// catchUpLoop runs on the leader until ctx ends.
func (s *Server) catchUpLoop(ctx context.Context) {
	for ctx.Err() == nil {
		ws := newWatch(s.store)
		s.store.WatchTables(ws, state.TableAgents, state.TableAgentApps, state.TableRollouts, state.TableEnvironments)
		s.catchUpPass(ctx)
		if ws.WatchCtx(ctx) != nil {
			return
		}
		if !retry.Sleep(ctx, retry.Jitter(catchUpSettle)) {
			return
		}
	}
}

// catchUpTargets are the hosts of st a catch-up takes: connected (offline
// ones are not in st.Off as these), with nothing of the app, behind (on a
// release an earlier rollout here put there), or running one no rollout
// put there; not hosts that failed, nor ones on what a rollout elsewhere
// (or one here that did not succeed) put there.
func catchUpTargets(st *relv1.EnvAppStatus) []string {
	var ids []string
	for _, o := range st.GetOff() {
		switch o.GetWhy() {
		case offNotInstalled, offOutOfBand, offBehind, offDrifted:
			ids = append(ids, o.GetAgentId())
		}
	}
	sort.Strings(ids)
	return ids
}

func (s *Server) catchUpPass(ctx context.Context) {
	v, err := s.readWhere()
	if err != nil {
		s.logger.Warn("catch-up: read state", "err", err)
		return
	}
	for _, env := range v.envs {
		if env.GetCatchUpManual() {
			continue
		}
		for _, app := range v.apps {
			st := v.envStatus(app.GetName(), env)
			if st.GetCurrentVersion() == "" || st.GetActiveRolloutId() != "" {
				continue
			}
			if ids := catchUpTargets(st); len(ids) > 0 {
				s.startCatchUp(ctx, env, st, ids, v)
			}
		}
	}
}

func (s *Server) startCatchUp(ctx context.Context, env *relv1.Environment, st *relv1.EnvAppStatus, ids []string, v *whereView) {
	if _, _, err := s.store.Release(nil, st.GetApp(), st.GetCurrentVersion()); err != nil {
		return // a rollback of mixed releases ("previous"), or a deleted release: nothing to converge to
	}
	spec, err := rollout.Normalize(&relv1.RolloutSpec{Strategy: rollout.Rolling, MaxParallel: max(env.GetCatchUpParallel(), 1)})
	if err != nil {
		s.logger.Warn("catch-up: spec", "err", err)
		return
	}
	previous := map[string]string{}
	for _, id := range ids {
		if r := v.reports[id][st.GetApp()]; r.GetPhase() == "healthy" {
			previous[id] = r.GetVersion()
		}
	}
	now := time.Now()
	ro := rollout.NewRollout(newID("ro-"), st.GetApp(), st.GetCurrentVersion(), env.GetName(), spec, []rollout.Wave{{Kind: "wave", Hosts: ids}}, previous, now)
	ro.Kind = rollout.KindCatchUp
	if b, _, err := s.store.Blocker(ro); err != nil || b != nil {
		return // something holds these hosts; the next look tries again
	}
	summary := fmt.Sprintf("catch-up of %s to %s@%s, its current release (rollout %s): %d host(s) off it: %s",
		env.GetName(), st.GetApp(), st.GetCurrentVersion(), st.GetCurrentRolloutId(), len(ids), strings.Join(ids, ", "))
	d := rollout.Start(ro, summary, "", engine.Observe(s.store, ro), now)
	desired, err := engine.DesiredRows(s.store, d.Rollout, d.Dispatch)
	if err != nil {
		s.logger.Warn("catch-up: desired rows", "err", err)
		return
	}
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := s.apply(actx, &relv1.Command{StampedUnixNano: now.UnixNano(), Kind: &relv1.Command_CreateRollout{CreateRollout: &relv1.CreateRollout{
		Rollout: d.Rollout, Desired: desired, Events: d.Events}}}); err != nil {
		if ctx.Err() == nil {
			s.logger.Warn("catch-up not started", "environment", env.GetName(), "app", st.GetApp(), "err", err)
		}
		return
	}
	s.logger.Info("catch-up started", "rollout", ro.GetId(), "msg", summary)
}
