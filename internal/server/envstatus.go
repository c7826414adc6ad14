package server

import (
	"context"
	"fmt"
	"sort"

	"github.com/hashicorp/go-memdb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/relhq/rel/internal/rollout"
	"github.com/relhq/rel/internal/state"
	"github.com/relhq/rel/internal/validate"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// What runs where, computed on read from the replicated rows: an
// environment's current release of an app is the release of its newest
// rollout (or rollback, not catch-up) there that succeeded; every host the environment
// selects now is on it, or off it for a reason.

// Why a host is off its environment's current release.
const (
	offOffline      = "offline"
	offFailed       = "failed"
	offInRollout    = "in_rollout"
	offOutOfBand    = "out_of_band"
	offNotInstalled = "not_installed"
	offInstalling   = "installing"
	// offBehind runs the release of an earlier rollout here, superseded
	// since (the host was away, or joined, when the newer one ran).
	offBehind = "behind"
	// offOtherRollout runs what a rollout to another (overlapping)
	// environment, or a rollout here that did not succeed, put there.
	offOtherRollout = "other_rollout"
	// offDrifted was changed outside Rel (its agent saw the release it
	// installed replaced by hand).
	offDrifted = "drifted"
)

// whereView is one consistent read of what envStatus needs.
type whereView struct {
	apps     []*relv1.App
	envs     []*relv1.Environment
	agents   []*relv1.Agent
	rollouts map[string][]*relv1.Rollout // by app, newest first
	reports  map[string]map[string]*relv1.AppReport
	index    uint64
}

func (s *Server) readWhere() (*whereView, error) {
	ws := memdb.NewWatchSet()
	v := &whereView{rollouts: map[string][]*relv1.Rollout{}, reports: map[string]map[string]*relv1.AppReport{}}
	var idx uint64
	var err error
	if v.apps, idx, err = s.store.Apps(ws); err != nil {
		return nil, err
	}
	v.index = max(v.index, idx)
	if v.envs, idx, err = s.store.Environments(ws); err != nil {
		return nil, err
	}
	v.index = max(v.index, idx)
	if v.agents, idx, err = s.store.Agents(ws); err != nil {
		return nil, err
	}
	v.index = max(v.index, idx)
	for _, a := range v.apps {
		ros, idx, err := s.store.Rollouts(ws, a.GetName())
		if err != nil {
			return nil, err
		}
		v.rollouts[a.GetName()], v.index = ros, max(v.index, idx)
	}
	for _, ag := range v.agents {
		aas, err := s.store.AgentApps(ws, ag.GetId())
		if err != nil {
			return nil, err
		}
		m := map[string]*relv1.AppReport{}
		for _, aa := range aas {
			m[aa.GetApp()] = aa.GetReport()
			v.index = max(v.index, aa.GetModifyIndex())
		}
		v.reports[ag.GetId()] = m
	}
	return v, nil
}

// envStatus is app's status in env.
func (v *whereView) envStatus(app string, env *relv1.Environment) *relv1.EnvAppStatus {
	st := &relv1.EnvAppStatus{App: app, Environment: env.GetName()}
	var (
		active       *relv1.Rollout
		currentIndex uint64
	)
	for _, ro := range v.rollouts[app] { // newest first
		if ro.GetEnvironment() != env.GetName() {
			continue
		}
		if !rollout.Terminal(ro.GetState()) && active == nil {
			active = ro
		}
		// A catch-up converges hosts to the current release; it does not
		// set it.
		if ro.GetState() == rollout.StateSucceeded && ro.GetKind() != rollout.KindCatchUp && st.CurrentRolloutId == "" {
			st.CurrentVersion, st.CurrentRolloutId = ro.GetVersion(), ro.GetId()
			currentIndex = ro.GetCreateIndex()
		}
	}
	held := map[string]bool{}
	if active != nil {
		st.ActiveRolloutId, st.ActiveRolloutState, st.ActiveRolloutVersion = active.GetId(), active.GetState(), active.GetVersion()
		for _, h := range active.GetHosts() {
			held[h.GetAgentId()] = true
		}
	}
	for _, ag := range v.agents {
		if !state.Matches(env.GetSelector(), ag.GetLabels()) {
			continue
		}
		st.Hosts++
		r := v.reports[ag.GetId()][app]
		if st.CurrentVersion != "" && r.GetVersion() == st.CurrentVersion && r.GetPhase() == "healthy" && ag.GetConnected() {
			st.OnCurrent++
			continue
		}
		if st.CurrentVersion == "" && r == nil {
			continue // nothing was ever rolled out here, and nothing runs
		}
		off := &relv1.OffHost{AgentId: ag.GetId(), Version: r.GetVersion(), Phase: r.GetPhase()}
		switch {
		case !ag.GetConnected():
			off.Why, off.Detail = offOffline, ag.GetDisconnectReason()
		case held[ag.GetId()]:
			off.Why, off.Detail = offInRollout, "rollout "+active.GetId()+" is "+active.GetState()
		case r == nil:
			off.Why = offNotInstalled
		case r.GetPhase() == "failed":
			off.Why, off.Detail = offFailed, r.GetReason()
		case r.GetPhase() == "drifted":
			off.Why, off.Detail = offDrifted, r.GetReason()
		case r.GetPhase() != "healthy":
			off.Why = offInstalling
		default:
			off.Why, off.Detail = offOutOfBand, "runs "+r.GetVersion()+" that no rollout put there"
			if from := v.rollout(app, r.GetRolloutId()); from != nil {
				off.Detail = fmt.Sprintf("runs %s from rollout %s to %s (%s)", r.GetVersion(), from.GetId(), from.GetEnvironment(), from.GetState())
				switch {
				case from.GetEnvironment() != env.GetName() || from.GetCreateIndex() > currentIndex:
					off.Why = offOtherRollout
				default:
					off.Why = offBehind
				}
			}
		}
		st.Off = append(st.Off, off)
	}
	return st
}

func (v *whereView) rollout(app, id string) *relv1.Rollout {
	if id == "" {
		return nil
	}
	for _, ro := range v.rollouts[app] {
		if ro.GetId() == id {
			return ro
		}
	}
	return nil
}

func (v *whereView) env(name string) *relv1.Environment {
	for _, e := range v.envs {
		if e.GetName() == name {
			return e
		}
	}
	return nil
}

func (c *controlService) ShowEnvironment(ctx context.Context, req *relv1.ShowEnvironmentRequest) (*relv1.ShowEnvironmentResponse, error) {
	if err := validate.Name("environment name", req.GetName()); err != nil {
		return nil, toStatus(err)
	}
	if conn, err := c.s.readTarget(ctx, req.GetRead()); err != nil {
		return nil, toStatus(err)
	} else if conn != nil {
		return relv1.NewControlServiceClient(conn).ShowEnvironment(forwardCtx(ctx), req)
	}
	v, err := c.s.readWhere()
	if err != nil {
		return nil, toStatus(err)
	}
	env := v.env(req.GetName())
	if env == nil {
		return nil, status.Errorf(codes.NotFound, "environment %q not found: 'relctl env list' shows them", req.GetName())
	}
	resp := &relv1.ShowEnvironmentResponse{Environment: env, Index: v.index}
	for _, ag := range v.agents {
		if state.Matches(env.GetSelector(), ag.GetLabels()) {
			resp.Hosts = append(resp.Hosts, ag.GetId())
			if !ag.GetConnected() {
				resp.Offline = append(resp.Offline, ag.GetId())
			}
		}
	}
	for _, a := range v.apps {
		st := v.envStatus(a.GetName(), env)
		if st.GetCurrentVersion() != "" || st.GetActiveRolloutId() != "" || len(st.GetOff()) > 0 {
			resp.Apps = append(resp.Apps, st)
		}
	}
	return resp, nil
}

func (c *controlService) Overview(ctx context.Context, req *relv1.OverviewRequest) (*relv1.OverviewResponse, error) {
	if conn, err := c.s.readTarget(ctx, req.GetRead()); err != nil {
		return nil, toStatus(err)
	} else if conn != nil {
		return relv1.NewControlServiceClient(conn).Overview(forwardCtx(ctx), req)
	}
	v, err := c.s.readWhere()
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &relv1.OverviewResponse{Index: v.index}
	for _, a := range v.apps {
		resp.Apps = append(resp.Apps, a.GetName())
	}
	for _, e := range v.envs {
		resp.Environments = append(resp.Environments, e.GetName())
	}
	sort.Strings(resp.Apps)
	sort.Strings(resp.Environments)
	for _, app := range resp.Apps {
		for _, name := range resp.Environments {
			st := v.envStatus(app, v.env(name))
			if st.GetCurrentVersion() != "" || st.GetActiveRolloutId() != "" || len(st.GetOff()) > 0 {
				resp.Cells = append(resp.Cells, st)
			}
		}
	}
	return resp, nil
}
