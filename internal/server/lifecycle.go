package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/go-memdb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/relhq/rel/internal/lifecycle"
	"github.com/relhq/rel/internal/rollout"
	"github.com/relhq/rel/internal/state"
	"github.com/relhq/rel/internal/validate"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// lifecycleService is LifecycleService: lifecycles, an app's lifecycle,
// release blocks, promotion and release status. The gate itself is the
// FSM's (state.deployGate over internal/lifecycle); StartRollout asks it
// first for an early answer.
type lifecycleService struct {
	relv1.UnimplementedLifecycleServiceServer
	s *Server
}

// checkLifecycleEnvs refuses early (nothing proposed) a lifecycle naming
// environments this replica does not know; the FSM checks again.
func (s *Server) checkLifecycleEnvs(lc *relv1.Lifecycle) error {
	envs, _, err := s.store.Environments(nil)
	if err != nil {
		return toStatus(err)
	}
	known := map[string]bool{}
	for _, e := range envs {
		known[e.GetName()] = true
	}
	var missing []string
	for _, p := range lc.GetPhases() {
		for _, e := range p.GetEnvironments() {
			if !known[e] {
				missing = append(missing, e)
			}
		}
	}
	if len(missing) > 0 {
		return status.Errorf(codes.NotFound, "lifecycle %s names unknown environments %s: create them first ('relctl env create NAME --selector ...'); 'relctl env list' shows those that exist",
			lc.GetName(), strings.Join(missing, ", "))
	}
	return nil
}

func (l *lifecycleService) putLifecycle(ctx context.Context, req *relv1.CreateLifecycleRequest, create bool) (*relv1.LifecycleResponse, error) {
	s := l.s
	if err := validate.Lifecycle(req.GetLifecycle()); err != nil {
		return nil, toStatus(err)
	}
	lc := proto.Clone(req.GetLifecycle()).(*relv1.Lifecycle)
	if err := s.checkLifecycleEnvs(lc); err != nil {
		return nil, err
	}
	lc.CreatedUnixNano = time.Now().UnixNano()
	lc.UpdatedBy, lc.CreateIndex, lc.ModifyIndex = nil, 0, 0
	cmd := &relv1.Command{StampedUnixNano: lc.GetCreatedUnixNano()}
	if create {
		cmd.Kind = &relv1.Command_CreateLifecycle{CreateLifecycle: &relv1.CreateLifecycle{Lifecycle: lc}}
	} else {
		cmd.Kind = &relv1.Command_UpdateLifecycle{UpdateLifecycle: &relv1.UpdateLifecycle{Lifecycle: lc}}
	}
	a, err := s.applyCommand(ctx, cmd)
	if err != nil {
		return nil, toStatus(err)
	}
	row, _, err := s.store.Lifecycle(nil, lc.GetName())
	if err != nil {
		return nil, toStatus(err)
	}
	return &relv1.LifecycleResponse{Lifecycle: row, Index: a.Index}, nil
}

func (l *lifecycleService) CreateLifecycle(ctx context.Context, req *relv1.CreateLifecycleRequest) (*relv1.LifecycleResponse, error) {
	return l.putLifecycle(ctx, req, true)
}

func (l *lifecycleService) UpdateLifecycle(ctx context.Context, req *relv1.CreateLifecycleRequest) (*relv1.LifecycleResponse, error) {
	return l.putLifecycle(ctx, req, false)
}

func (l *lifecycleService) DeleteLifecycle(ctx context.Context, req *relv1.DeleteLifecycleRequest) (*relv1.DeleteLifecycleResponse, error) {
	if err := validate.Name("lifecycle name", req.GetName()); err != nil {
		return nil, toStatus(err)
	}
	a, err := l.s.applyCommand(ctx, &relv1.Command{Kind: &relv1.Command_DeleteLifecycle{DeleteLifecycle: &relv1.DeleteLifecycle{Name: req.GetName()}}})
	if err != nil {
		return nil, toStatus(err)
	}
	return &relv1.DeleteLifecycleResponse{Index: a.Index}, nil
}

func (l *lifecycleService) GetLifecycle(ctx context.Context, req *relv1.GetLifecycleRequest) (*relv1.LifecycleResponse, error) {
	if err := validate.Name("lifecycle name", req.GetName()); err != nil {
		return nil, toStatus(err)
	}
	if conn, err := l.s.readTarget(ctx, req.GetRead()); err != nil {
		return nil, toStatus(err)
	} else if conn != nil {
		return relv1.NewLifecycleServiceClient(conn).GetLifecycle(forwardCtx(ctx), req)
	}
	lc, idx, err := l.s.store.Lifecycle(nil, req.GetName())
	if err != nil {
		return nil, toStatus(err)
	}
	apps, err := l.s.store.AppsUsing(req.GetName())
	if err != nil {
		return nil, toStatus(err)
	}
	return &relv1.LifecycleResponse{Lifecycle: lc, Index: idx, Apps: apps}, nil
}

func (l *lifecycleService) ListLifecycles(ctx context.Context, req *relv1.ListLifecyclesRequest) (*relv1.ListLifecyclesResponse, error) {
	if conn, err := l.s.readTarget(ctx, req.GetRead()); err != nil {
		return nil, toStatus(err)
	} else if conn != nil {
		return relv1.NewLifecycleServiceClient(conn).ListLifecycles(forwardCtx(ctx), req)
	}
	lcs, idx, err := l.s.store.Lifecycles(memdb.NewWatchSet())
	if err != nil {
		return nil, toStatus(err)
	}
	return &relv1.ListLifecyclesResponse{Lifecycles: lcs, Index: idx}, nil
}

func (l *lifecycleService) SetAppLifecycle(ctx context.Context, req *relv1.SetAppLifecycleRequest) (*relv1.SetAppLifecycleResponse, error) {
	if err := validate.Name("app name", req.GetApp()); err != nil {
		return nil, toStatus(err)
	}
	if req.GetLifecycle() != "" {
		if err := validate.Name("lifecycle name", req.GetLifecycle()); err != nil {
			return nil, toStatus(err)
		}
	}
	a, err := l.s.applyCommand(ctx, &relv1.Command{Kind: &relv1.Command_SetAppLifecycle{SetAppLifecycle: &relv1.SetAppLifecycle{App: req.GetApp(), Lifecycle: req.GetLifecycle()}}})
	if err != nil {
		return nil, toStatus(err)
	}
	app, err := l.s.store.App(nil, req.GetApp())
	if err != nil {
		return nil, toStatus(err)
	}
	return &relv1.SetAppLifecycleResponse{App: app, Index: a.Index}, nil
}

func (l *lifecycleService) BlockRelease(ctx context.Context, req *relv1.BlockReleaseRequest) (*relv1.BlockReleaseResponse, error) {
	if err := validate.Name("app name", req.GetApp()); err != nil {
		return nil, toStatus(err)
	}
	if err := validate.Version(req.GetVersion()); err != nil {
		return nil, toStatus(err)
	}
	reason := strings.TrimSpace(req.GetReason())
	if !req.GetBlocked() {
		reason = ""
	}
	a, err := l.s.applyCommand(ctx, &relv1.Command{Kind: &relv1.Command_BlockRelease{BlockRelease: &relv1.BlockRelease{
		App: req.GetApp(), Version: req.GetVersion(), Blocked: req.GetBlocked(), Reason: reason, AtUnixNano: time.Now().UnixNano()}}})
	if err != nil {
		return nil, toStatus(err)
	}
	rel, _, err := l.s.store.Release(nil, req.GetApp(), req.GetVersion())
	if err != nil {
		return nil, toStatus(err)
	}
	return &relv1.BlockReleaseResponse{Release: rel, Index: a.Index}, nil
}

// PromoteRelease starts a deploy rollout with rollout start's defaults,
// through StartRollout itself: every check a rollout start makes (the
// lifecycle gate, and what later comes before the queue) applies.
// PromoteRelease starts a rollout with the environment's default spec
// (rollout start's defaults when it has none) through StartRollout, so
// every check of a rollout start applies. The spec is read here, on the
// server that took the request; StartRollout forwards the whole request.
func (l *lifecycleService) PromoteRelease(ctx context.Context, req *relv1.PromoteReleaseRequest) (*relv1.StartRolloutResponse, error) {
	var spec *relv1.RolloutSpec
	if env, err := l.s.environment(req.GetEnvironment()); err == nil {
		spec = env.GetDefaultSpec() // an unknown environment: StartRollout says so
	}
	return (&controlService{s: l.s}).StartRollout(ctx, &relv1.StartRolloutRequest{
		App: req.GetApp(), Version: req.GetVersion(), Environment: req.GetEnvironment(), Spec: spec,
		Queue: req.GetQueue(), ChangeType: req.GetChangeType(), ChangeReason: req.GetChangeReason(),
	})
}

// checkDeployGate is StartRollout's early answer (nothing proposed) to a
// deploy the FSM would refuse: a blocked release, or the app's lifecycle.
// An unknown release is left to the plan's own answer.
func (s *Server) checkDeployGate(app, version, env string) error {
	if err := s.store.DeployGate(app, version, env); err != nil && !errors.Is(err, state.ErrNotFound) {
		return toStatus(err)
	}
	return nil
}

func (l *lifecycleService) ReleaseStatus(ctx context.Context, req *relv1.ReleaseStatusRequest) (*relv1.ReleaseStatusResponse, error) {
	s := l.s
	if err := validate.Name("app name", req.GetApp()); err != nil {
		return nil, toStatus(err)
	}
	if err := validate.Version(req.GetVersion()); err != nil {
		return nil, toStatus(err)
	}
	if conn, err := s.readTarget(ctx, req.GetRead()); err != nil {
		return nil, toStatus(err)
	} else if conn != nil {
		return relv1.NewLifecycleServiceClient(conn).ReleaseStatus(forwardCtx(ctx), req)
	}
	return s.releaseStatus(req.GetApp(), req.GetVersion())
}

// releaseStatus joins a release's promotions, its active rollouts and its
// app's lifecycle: where it has been, where it may go, what blocks it.
func (s *Server) releaseStatus(app, version string) (*relv1.ReleaseStatusResponse, error) {
	rel, idx, err := s.store.Release(nil, app, version)
	if err != nil {
		return nil, toStatus(err)
	}
	a, err := s.store.App(nil, app)
	if err != nil {
		return nil, toStatus(err)
	}
	out := &relv1.ReleaseStatusResponse{Release: rel, Lifecycle: a.GetLifecycle(), Index: idx}
	if rel.GetBlocked() {
		by := "someone"
		if b := rel.GetBlockedBy(); b != nil {
			by = state.ActorName(b)
		}
		out.Blockers = append(out.Blockers, fmt.Sprintf("blocked by %s: %s", by, rel.GetBlockReason()))
	}
	ps, err := s.store.Promotions(nil, app, rel.GetSha256())
	if err != nil {
		return nil, toStatus(err)
	}
	running := map[string]string{}
	ros, _, _, err := s.store.QueryRollouts(nil, state.RolloutQuery{App: app, State: "active"})
	if err != nil {
		return nil, toStatus(err)
	}
	for _, ro := range ros {
		if ro.GetVersion() == version && (ro.GetKind() == rollout.KindDeploy || ro.GetKind() == "") {
			running[ro.GetEnvironment()] = ro.GetId()
		}
	}
	progress := func(env string, allowed bool, why string) *relv1.EnvironmentProgress {
		ep := &relv1.EnvironmentProgress{Environment: env, State: "none", Allowed: allowed && !rel.GetBlocked(), BlockedBy: why}
		if p := ps[env]; p != nil {
			switch {
			case p.GetSucceededRollout() != "":
				ep.State, ep.RolloutId, ep.Version = "succeeded", p.GetSucceededRollout(), p.GetSucceededVersion()
			case p.GetRolledBackRollout() != "":
				ep.State, ep.RolloutId = "rolled_back", p.GetRolledBackRollout()
			}
		}
		if id, ok := running[env]; ok {
			ep.State, ep.RolloutId, ep.Version = "running", id, version
		}
		if rel.GetBlocked() && ep.BlockedBy == "" {
			ep.BlockedBy = "release blocked"
		}
		return ep
	}
	if a.GetLifecycle() == "" {
		envs := make([]string, 0, len(ps))
		for e := range ps {
			envs = append(envs, e)
		}
		slices.Sort(envs)
		pp := &relv1.PhaseProgress{Phase: &relv1.Phase{Name: "(no lifecycle)", Environments: envs}, Done: true}
		for _, e := range envs {
			pp.Environments = append(pp.Environments, progress(e, true, ""))
		}
		out.Phases = append(out.Phases, pp)
		return out, nil
	}
	lc, _, err := s.store.Lifecycle(nil, a.GetLifecycle())
	if err != nil {
		return nil, toStatus(err)
	}
	promoted := state.Promoted(ps)
	blockerNoted := false
	for _, p := range lc.GetPhases() {
		done, _ := lifecycle.Done(p, promoted)
		pp := &relv1.PhaseProgress{Phase: p, Done: done}
		for _, e := range p.GetEnvironments() {
			v := lifecycle.Gate(lc, e, promoted)
			why := ""
			if !v.Allowed {
				why = fmt.Sprintf("phase %s not done: needs %d of %s", v.Missing.GetName(), lifecycle.Need(v.Missing), strings.Join(v.Missing.GetEnvironments(), ", "))
				if !blockerNoted {
					out.Blockers = append(out.Blockers, v.Reason(lc, app, version, rel.GetSha256(), e))
					blockerNoted = true
				}
			}
			ep := progress(e, v.Allowed, why)
			pp.Environments = append(pp.Environments, ep)
			if ep.GetAllowed() && ep.GetState() != "succeeded" && ep.GetState() != "running" {
				out.Next = append(out.Next, e)
			}
		}
		out.Phases = append(out.Phases, pp)
	}
	return out, nil
}
