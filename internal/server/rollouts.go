package server

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/go-memdb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/relhq/rel/internal/state"
	"github.com/relhq/rel/internal/validate"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// maxWait caps a long-polling GetRollout.
const maxWait = 5 * time.Minute

func (c *controlService) StartRollout(ctx context.Context, req *relv1.StartRolloutRequest) (*relv1.StartRolloutResponse, error) {
	s := c.s
	if err := validate.Name("app name", req.GetApp()); err != nil {
		return nil, toStatus(err)
	}
	if err := validate.Version(req.GetVersion()); err != nil {
		return nil, toStatus(err)
	}
	if err := validate.Name("environment name", req.GetEnvironment()); err != nil {
		return nil, toStatus(err)
	}
	spec := req.GetSpec()
	if spec == nil {
		spec = &relv1.RolloutSpec{}
	}
	switch spec.GetStrategy() {
	case "":
		spec.Strategy = "all-at-once"
	case "all-at-once":
	default:
		return nil, status.Errorf(codes.InvalidArgument, "strategy %q: only all-at-once is supported so far", spec.GetStrategy())
	}
	// The plan is made from a consistent view: this runs on the leader, or
	// is forwarded there, so the hosts and releases it sees are current.
	if !s.IsLeader() {
		if isForwarded(ctx) {
			return nil, status.Error(codes.Unavailable, "leadership moved while the request was forwarded: retry")
		}
		conn, err := s.waitLeaderConn(ctx)
		if err != nil {
			return nil, toStatus(err)
		}
		return relv1.NewControlServiceClient(conn).StartRollout(forwardCtx(ctx), req)
	}
	if err := s.raft.Barrier(timeoutFrom(ctx)).Error(); err != nil {
		return nil, toStatus(err)
	}
	rel, _, err := s.store.Release(nil, req.GetApp(), req.GetVersion())
	if err != nil {
		return nil, toStatus(err)
	}
	envs, _, err := s.store.Environments(nil)
	if err != nil {
		return nil, toStatus(err)
	}
	var env *relv1.Environment
	for _, e := range envs {
		if e.GetName() == req.GetEnvironment() {
			env = e
		}
	}
	if env == nil {
		return nil, status.Errorf(codes.NotFound, "environment %q not found: 'relctl env list' shows them", req.GetEnvironment())
	}
	agents, _, err := s.store.Agents(nil)
	if err != nil {
		return nil, toStatus(err)
	}
	now := time.Now().UnixNano()
	ro := &relv1.Rollout{
		Id: newID("ro-"), App: rel.GetApp(), Version: rel.GetVersion(), Environment: env.GetName(),
		Spec: spec, CreatedUnixNano: now,
	}
	var (
		desired []*relv1.Desired
		offline []string
	)
	for _, a := range agents {
		if !state.Matches(env.GetSelector(), a.GetLabels()) {
			continue
		}
		if !a.GetConnected() {
			offline = append(offline, a.GetId())
			continue
		}
		prev := ""
		if aa, _ := s.store.AgentApp(nil, a.GetId(), rel.GetApp()); aa != nil && aa.GetReport().GetPhase() == "healthy" {
			prev = aa.GetReport().GetVersion()
		}
		ro.Hosts = append(ro.Hosts, &relv1.RolloutHost{AgentId: a.GetId(), PreviousVersion: prev})
		desired = append(desired, &relv1.Desired{
			AgentId: a.GetId(), App: rel.GetApp(), Version: rel.GetVersion(), Sha256: rel.GetSha256(),
			Size: rel.GetSize(), ArtifactUrl: rel.GetArtifactUrl(), RolloutId: ro.GetId(),
		})
	}
	if len(ro.Hosts) == 0 {
		msg := fmt.Sprintf("environment %q (selector %s) selects no connected agent", env.GetName(), selectorString(env.GetSelector()))
		if len(offline) > 0 {
			msg += fmt.Sprintf("; %d selected agents are disconnected: %s", len(offline), strings.Join(offline, ", "))
		} else {
			msg += ": start rel-agent with matching --labels, 'relctl agent list' shows the agents"
		}
		return nil, status.Error(codes.FailedPrecondition, msg)
	}
	if len(offline) > 0 {
		ro.Reason = fmt.Sprintf("skipped %d disconnected agents: %s", len(offline), strings.Join(offline, ", "))
	}
	idx, err := s.apply(ctx, &relv1.Command{StampedUnixNano: now, Kind: &relv1.Command_CreateRollout{CreateRollout: &relv1.CreateRollout{Rollout: ro, Desired: desired}}})
	if err != nil {
		return nil, toStatus(err)
	}
	ro.State, ro.CreateIndex, ro.ModifyIndex = state.RolloutRunning, idx, idx
	s.logger.Info("rollout started", "rollout", ro.GetId(), "release", rel.GetApp()+"@"+rel.GetVersion(), "env", env.GetName(), "hosts", len(ro.Hosts))
	return &relv1.StartRolloutResponse{Rollout: ro, Index: idx}, nil
}

func selectorString(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + m[k]
	}
	return strings.Join(parts, ",")
}

// rolloutStatus computes each host's progress from its agent's reports.
func (s *Server) rolloutStatus(ws memdb.WatchSet, ro *relv1.Rollout) (*relv1.RolloutStatus, uint64) {
	st := &relv1.RolloutStatus{Rollout: ro, Totals: map[string]uint32{}}
	index := ro.GetModifyIndex()
	for _, h := range ro.GetHosts() {
		hs := &relv1.RolloutHostStatus{AgentId: h.GetAgentId(), PreviousVersion: h.GetPreviousVersion(), Phase: "pending"}
		if a, err := s.store.Agent(ws, h.GetAgentId()); err == nil {
			hs.Connected = a.GetConnected()
			if a.GetModifyIndex() > index {
				index = a.GetModifyIndex()
			}
			if !a.GetConnected() {
				hs.Reason = "agent disconnected: " + a.GetDisconnectReason()
			}
		}
		if aa, _ := s.store.AgentApp(ws, h.GetAgentId(), ro.GetApp()); aa != nil {
			if aa.GetModifyIndex() > index {
				index = aa.GetModifyIndex()
			}
			r := aa.GetReport()
			if r.GetRolloutId() == ro.GetId() {
				hs.Phase, hs.Version, hs.UpdatedUnixNano = r.GetPhase(), r.GetVersion(), r.GetAtUnixNano()
				if r.GetReason() != "" {
					hs.Reason = r.GetReason()
				}
			} else {
				hs.Version = r.GetVersion()
			}
		}
		st.Hosts = append(st.Hosts, hs)
		st.Totals[hs.Phase]++
	}
	return st, index
}

func (c *controlService) GetRollout(ctx context.Context, req *relv1.GetRolloutRequest) (*relv1.GetRolloutResponse, error) {
	s := c.s
	if req.GetId() == "" {
		return nil, status.Error(codes.InvalidArgument, "rollout id is empty: 'relctl rollout list' shows them")
	}
	if conn, err := s.readTarget(ctx, req.GetRead()); err != nil {
		return nil, toStatus(err)
	} else if conn != nil {
		return relv1.NewControlServiceClient(conn).GetRollout(forwardCtx(ctx), req)
	}
	wctx, cancel := context.WithTimeout(ctx, maxWait)
	defer cancel()
	out, idx, err := s.store.BlockingQuery(wctx, req.GetWaitIndex(), func(ws memdb.WatchSet, st *state.Store) (any, uint64, error) {
		ro, err := st.Rollout(ws, req.GetId())
		if err != nil {
			return nil, 0, err
		}
		rs, idx := s.rolloutStatus(ws, ro)
		return rs, idx, nil
	})
	if err != nil {
		return nil, toStatus(err)
	}
	return &relv1.GetRolloutResponse{Status: out.(*relv1.RolloutStatus), Index: idx}, nil
}

func (c *controlService) ListRollouts(ctx context.Context, req *relv1.ListRolloutsRequest) (*relv1.ListRolloutsResponse, error) {
	s := c.s
	if conn, err := s.readTarget(ctx, req.GetRead()); err != nil {
		return nil, toStatus(err)
	} else if conn != nil {
		return relv1.NewControlServiceClient(conn).ListRollouts(forwardCtx(ctx), req)
	}
	ros, idx, err := s.store.Rollouts(memdb.NewWatchSet(), req.GetApp())
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &relv1.ListRolloutsResponse{Index: idx}
	for _, ro := range ros {
		if req.GetEnvironment() != "" && ro.GetEnvironment() != req.GetEnvironment() {
			continue
		}
		st, _ := s.rolloutStatus(memdb.NewWatchSet(), ro)
		resp.Rollouts = append(resp.Rollouts, st)
	}
	return resp, nil
}

// agentStatus joins an agent's row with its apps, its environments and,
// when its server answered, its live load.
func (s *Server) agentStatus(a *relv1.Agent, envs []*relv1.Environment, live map[string]*relv1.LocalAgent) *relv1.AgentStatus {
	st := &relv1.AgentStatus{Agent: a}
	apps, _ := s.store.AgentApps(memdb.NewWatchSet(), a.GetId())
	for _, aa := range apps {
		st.Apps = append(st.Apps, aa.GetReport())
	}
	for _, e := range envs {
		if state.Matches(e.GetSelector(), a.GetLabels()) {
			st.Environments = append(st.Environments, e.GetName())
		}
	}
	if la := live[a.GetId()]; la != nil && la.GetSessionId() == a.GetSessionId() {
		st.Load, st.LastHeartbeatUnixNano = la.GetLoad(), la.GetLastHeartbeatUnixNano()
	}
	return st
}

func (c *controlService) ListAgents(ctx context.Context, req *relv1.ListAgentsRequest) (*relv1.ListAgentsResponse, error) {
	s := c.s
	if conn, err := s.readTarget(ctx, req.GetRead()); err != nil {
		return nil, toStatus(err)
	} else if conn != nil {
		return relv1.NewControlServiceClient(conn).ListAgents(forwardCtx(ctx), req)
	}
	envs, _, err := s.store.Environments(memdb.NewWatchSet())
	if err != nil {
		return nil, toStatus(err)
	}
	var sel map[string]string
	if req.GetEnvironment() != "" {
		found := false
		for _, e := range envs {
			if e.GetName() == req.GetEnvironment() {
				sel, found = e.GetSelector(), true
			}
		}
		if !found {
			return nil, status.Errorf(codes.NotFound, "environment %q not found: 'relctl env list' shows them", req.GetEnvironment())
		}
	}
	agents, idx, err := s.store.Agents(memdb.NewWatchSet())
	if err != nil {
		return nil, toStatus(err)
	}
	live, _ := s.liveAgents(ctx)
	resp := &relv1.ListAgentsResponse{Index: idx}
	for _, a := range agents {
		if sel != nil && !state.Matches(sel, a.GetLabels()) {
			continue
		}
		resp.Agents = append(resp.Agents, s.agentStatus(a, envs, live))
	}
	return resp, nil
}

func (c *controlService) GetAgent(ctx context.Context, req *relv1.GetAgentRequest) (*relv1.GetAgentResponse, error) {
	s := c.s
	if conn, err := s.readTarget(ctx, req.GetRead()); err != nil {
		return nil, toStatus(err)
	} else if conn != nil {
		return relv1.NewControlServiceClient(conn).GetAgent(forwardCtx(ctx), req)
	}
	a, err := s.store.Agent(nil, req.GetId())
	if err != nil {
		return nil, toStatus(err)
	}
	envs, _, _ := s.store.Environments(memdb.NewWatchSet())
	live, _ := s.liveAgents(ctx)
	return &relv1.GetAgentResponse{Agent: s.agentStatus(a, envs, live), Index: a.GetModifyIndex()}, nil
}

func (c *controlService) History(ctx context.Context, req *relv1.HistoryRequest) (*relv1.HistoryResponse, error) {
	s := c.s
	if err := validate.Name("app name", req.GetApp()); err != nil {
		return nil, toStatus(err)
	}
	if conn, err := s.readTarget(ctx, req.GetRead()); err != nil {
		return nil, toStatus(err)
	} else if conn != nil {
		return relv1.NewControlServiceClient(conn).History(forwardCtx(ctx), req)
	}
	if _, err := s.store.App(nil, req.GetApp()); err != nil {
		return nil, toStatus(err)
	}
	var sel map[string]string
	if req.GetEnvironment() != "" {
		envs, _, _ := s.store.Environments(nil)
		for _, e := range envs {
			if e.GetName() == req.GetEnvironment() {
				sel = e.GetSelector()
			}
		}
		if sel == nil {
			return nil, status.Errorf(codes.NotFound, "environment %q not found: 'relctl env list' shows them", req.GetEnvironment())
		}
	}
	entries, idx, err := s.store.History(memdb.NewWatchSet(), req.GetApp())
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &relv1.HistoryResponse{Index: idx}
	for _, h := range entries {
		if sel != nil {
			a, err := s.store.Agent(nil, h.GetAgentId())
			if err != nil || !state.Matches(sel, a.GetLabels()) {
				continue
			}
		}
		resp.Entries = append(resp.Entries, h)
	}
	sort.SliceStable(resp.Entries, func(i, j int) bool { return resp.Entries[i].GetFromUnixNano() < resp.Entries[j].GetFromUnixNano() })
	return resp, nil
}

// watchRollouts runs on the leader: it decides when a running rollout has
// finished, by a blocking query over the running rollouts and their hosts'
// reports. All at once: succeeded when every host is healthy on the
// release, failed as soon as one host failed or its agent is lost.
func (s *Server) watchRollouts(ctx context.Context) {
	for ctx.Err() == nil {
		ws := newWatch(s.store)
		running, err := s.store.RunningRollouts(ws)
		if err != nil {
			s.logger.Error("rollout watcher", "err", err)
			return
		}
		for _, ro := range running {
			st, _ := s.rolloutStatus(ws, ro)
			verdict, reason := allAtOnceVerdict(st)
			if verdict == "" {
				continue
			}
			actx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, err := s.apply(actx, &relv1.Command{Kind: &relv1.Command_FinishRollout{FinishRollout: &relv1.FinishRollout{
				Id: ro.GetId(), State: verdict, Reason: reason, AtUnixNano: time.Now().UnixNano(),
			}}})
			cancel()
			if err != nil {
				s.logger.Warn("could not finish rollout; will retry", "rollout", ro.GetId(), "err", err)
				sleepCtx(ctx, jitter(200*time.Millisecond))
				continue
			}
			s.logger.Info("rollout finished", "rollout", ro.GetId(), "state", verdict, "reason", reason)
		}
		if err := ws.WatchCtx(ctx); err != nil {
			return
		}
	}
}

// allAtOnceVerdict is the all-at-once strategy's decision on a rollout's
// status: "" while it runs, else the terminal state and why.
func allAtOnceVerdict(st *relv1.RolloutStatus) (string, string) {
	healthy := 0
	for _, h := range st.GetHosts() {
		switch {
		case h.GetPhase() == "failed":
			return state.RolloutFailed, fmt.Sprintf("host %s failed: %s", h.GetAgentId(), h.GetReason())
		case !h.GetConnected():
			return state.RolloutFailed, fmt.Sprintf("host %s: agent lost (%s)", h.GetAgentId(), strings.TrimPrefix(h.GetReason(), "agent disconnected: "))
		case h.GetPhase() == "healthy":
			healthy++
		}
	}
	if healthy == len(st.GetHosts()) {
		return state.RolloutSucceeded, fmt.Sprintf("%d of %d hosts healthy", healthy, healthy)
	}
	return "", ""
}
