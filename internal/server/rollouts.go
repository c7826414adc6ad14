package server

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/go-memdb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/relhq/rel/internal/auth"
	"github.com/relhq/rel/internal/rollout"
	"github.com/relhq/rel/internal/rollout/engine"
	"github.com/relhq/rel/internal/state"
	"github.com/relhq/rel/internal/validate"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// maxWait caps a long-polling GetRollout.
const maxWait = 5 * time.Minute

// planInput gathers what a rollout of app@version to env would take:
// the release, the environment, the connected candidates and the offline
// ones, and what each host runs now.
type planInput struct {
	rel        *relv1.Release
	env        *relv1.Environment
	candidates []rollout.Candidate
	offline    []*relv1.Agent
	agents     map[string]*relv1.Agent
	current    map[string]*relv1.AppReport
}

func (s *Server) gatherPlan(app, version, envName string) (*planInput, error) {
	rel, _, err := s.store.Release(nil, app, version)
	if err != nil {
		return nil, err
	}
	envs, _, err := s.store.Environments(nil)
	if err != nil {
		return nil, err
	}
	in := &planInput{rel: rel, agents: map[string]*relv1.Agent{}, current: map[string]*relv1.AppReport{}}
	for _, e := range envs {
		if e.GetName() == envName {
			in.env = e
		}
	}
	if in.env == nil {
		return nil, status.Errorf(codes.NotFound, "environment %q not found: 'relctl env list' shows them", envName)
	}
	agents, _, err := s.store.Agents(nil)
	if err != nil {
		return nil, err
	}
	for _, a := range agents {
		if !state.Matches(in.env.GetSelector(), a.GetLabels()) {
			continue
		}
		in.agents[a.GetId()] = a
		if aa, _ := s.store.AgentApp(nil, a.GetId(), app); aa != nil {
			in.current[a.GetId()] = aa.GetReport()
		}
		if !a.GetConnected() {
			in.offline = append(in.offline, a)
			continue
		}
		in.candidates = append(in.candidates, rollout.Candidate{ID: a.GetId(), Labels: a.GetLabels()})
	}
	return in, nil
}

func (in *planInput) previous() map[string]string {
	out := map[string]string{}
	for id, r := range in.current {
		if r.GetPhase() == "healthy" {
			out[id] = r.GetVersion()
		}
	}
	return out
}

func (in *planInput) noHostsError() error {
	msg := fmt.Sprintf("environment %q (selector %s) selects no connected agent", in.env.GetName(), selectorString(in.env.GetSelector()))
	if len(in.offline) > 0 {
		var ids []string
		for _, a := range in.offline {
			ids = append(ids, a.GetId())
		}
		msg += fmt.Sprintf("; %d selected agents are disconnected: %s", len(ids), strings.Join(ids, ", "))
	} else {
		msg += ": start rel-agent with matching --labels; 'relctl agent list' shows the agents"
	}
	return status.Error(codes.FailedPrecondition, msg)
}

func specStatus(err error) error {
	if errors.Is(err, rollout.ErrInvalidSpec) {
		msg := err.Error()
		if p := rollout.ErrInvalidSpec.Error() + ": "; strings.HasPrefix(msg, p) {
			msg = msg[len(p):]
		}
		return status.Error(codes.InvalidArgument, msg)
	}
	return toStatus(err)
}

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
	spec, err := rollout.Normalize(req.GetSpec())
	if err != nil {
		return nil, specStatus(err)
	}
	if err := checkChangeType(req); err != nil {
		return nil, err
	}
	// The plan is made from a current view: on the leader after a barrier.
	if conn, err := s.leaderTarget(ctx); err != nil {
		return nil, err
	} else if conn != nil {
		resp, err := relv1.NewControlServiceClient(conn).StartRollout(forwardCtx(ctx), req)
		if err == nil {
			s.waitLocal(ctx, resp.GetIndex())
		}
		return resp, err
	}
	if ro, idx, ok, err := s.repeatedRollout(ctx, startProbe(req)); ok && err != nil {
		return nil, err
	} else if ok {
		return &relv1.StartRolloutResponse{Rollout: ro, Index: idx}, nil
	}
	// Lifecycle gate and release block first (the FSM decides again).
	if err := s.checkDeployGate(req.GetApp(), req.GetVersion(), req.GetEnvironment()); err != nil {
		return nil, err
	}
	// No barrier of its own: leaderTarget saw this term's (the replica
	// holds what earlier leaders committed), entries in flight aside, and
	// the FSM re-checks what matters (one active rollout per
	// app and environment, the release, a repeated request) when the
	// rollout is committed.
	in, err := s.gatherPlan(req.GetApp(), req.GetVersion(), req.GetEnvironment())
	if err != nil {
		return nil, toStatus(err)
	}
	if len(in.candidates) == 0 {
		return nil, in.noHostsError()
	}
	waves, err := rollout.AssignWaves(spec, in.candidates)
	if err != nil {
		return nil, specStatus(err)
	}
	// Change control: the change type, and the approvals the environment's
	// policy asks for (the FSM checks the policy is still the one decided on).
	changeType, policy, err := changeControl(ctx, req, in.env)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	ro := rollout.NewRollout(newID("ro-"), in.rel.GetApp(), in.rel.GetVersion(), in.env.GetName(), spec, waves, in.previous(), now)
	ro.ChangeType, ro.ChangeReason = changeType, req.GetChangeReason()
	msg := fmt.Sprintf("%s@%s to %s: %d hosts in %d wave(s), strategy %s", ro.GetApp(), ro.GetVersion(), ro.GetEnvironment(), len(ro.GetHosts()), len(waves), spec.GetStrategy())
	if len(in.offline) > 0 {
		var ids []string
		for _, a := range in.offline {
			ids = append(ids, a.GetId())
		}
		msg += fmt.Sprintf("; skipped %d disconnected agents: %s", len(ids), strings.Join(ids, ", "))
	}
	// Change control: a deploy inside a freeze is held (frozen) instead of
	// starting; it goes on by itself when the freeze ends, to its approvals
	// first when the environment's policy asks for them. Otherwise it waits
	// for its approvals, holding nothing (what blocks it is looked at when
	// it is queued), or starts (or queues).
	started := &relv1.RolloutEvent{RolloutId: ro.GetId(), Seq: 1, AtUnixNano: now.UnixNano(), Type: rollout.EventStarted, Message: msg}
	ro, events, held, err := s.holdForFreeze(ro, []*relv1.RolloutEvent{started}, now)
	if err != nil {
		return nil, toStatus(err)
	}
	var (
		d       rollout.Decision
		desired []*relv1.Desired
	)
	switch {
	case held:
		if policy != nil {
			ro.ApprovalPolicy, ro.ApprovalPolicyVersion, ro.ApprovalDigest = policy, in.env.GetApprovalPolicyVersion(), in.rel.GetSha256()
		}
	case policy != nil:
		ro.EventSeq = 1
		events = []*relv1.RolloutEvent{started}
		events = append(events, rollout.AwaitApproval(ro, policy, in.env.GetApprovalPolicyVersion(), in.rel.GetSha256(), now))
		s.logger.Info("rollout awaits approval", "rollout", ro.GetId(), "needs", describeGate(policy))
	default:
		b, shared, err := s.store.Blocker(ro)
		if err != nil {
			return nil, toStatus(err)
		}
		if b != nil && !req.GetQueue() {
			return nil, toStatus(state.BlockedError(b, shared))
		}
		d = rollout.Start(ro, msg, b.GetId(), engine.Observe(s.store, ro), now)
		ro, events = d.Rollout, d.Events
	}
	if len(d.Dispatch) > 0 {
		rows, err := engine.DesiredRows(s.store, ro, d.Dispatch)
		if err != nil {
			return nil, toStatus(err)
		}
		desired = rows
	}
	a, err := s.applyCommand(ctx, &relv1.Command{StampedUnixNano: now.UnixNano(), Kind: &relv1.Command_CreateRollout{CreateRollout: &relv1.CreateRollout{Rollout: ro, Desired: desired, Events: events}}})
	if err != nil {
		return nil, toStatus(err)
	}
	if a.Duplicate {
		// An earlier attempt of this request created the rollout.
		first, err := s.firstRollout(ctx, a.Index, a.Ref)
		if err != nil {
			return nil, err
		}
		return &relv1.StartRolloutResponse{Rollout: first, Index: a.Index}, nil
	}
	idx := a.Index
	ro.CreateIndex, ro.ModifyIndex = idx, idx
	s.logger.Info("rollout started", "rollout", ro.GetId(), "state", ro.GetState(), "msg", msg)
	// The FSM may have decided otherwise (a freeze created meanwhile):
	// answer with the row it stored.
	if stored, err := s.readAfter(ctx, idx, ro.GetId()); err == nil {
		ro = stored
	}
	return &relv1.StartRolloutResponse{Rollout: ro, Index: idx}, nil
}

// checkChangeType checks a StartRollout's change type: empty (normal),
// standard, normal or emergency, and an emergency names its reason.
func checkChangeType(req *relv1.StartRolloutRequest) error {
	switch req.GetChangeType() {
	case "", rollout.ChangeStandard, rollout.ChangeNormal:
	case rollout.ChangeEmergency:
		if strings.TrimSpace(req.GetChangeReason()) == "" {
			return status.Error(codes.InvalidArgument, "an emergency change needs a reason: add --reason TEXT saying why it cannot wait")
		}
	default:
		return status.Errorf(codes.InvalidArgument, "change type %q: use standard, normal or emergency", req.GetChangeType())
	}
	return toStatus(validate.Description(req.GetChangeReason()))
}

func (c *controlService) PlanRollout(ctx context.Context, req *relv1.PlanRolloutRequest) (*relv1.PlanRolloutResponse, error) {
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
	spec, err := rollout.Normalize(req.GetSpec())
	if err != nil {
		return nil, specStatus(err)
	}
	in, err := s.gatherPlan(req.GetApp(), req.GetVersion(), req.GetEnvironment())
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &relv1.PlanRolloutResponse{Spec: spec}
	if err := s.checkDeployGate(req.GetApp(), req.GetVersion(), req.GetEnvironment()); err != nil {
		// The lifecycle gate or a block: what a start would answer first.
		resp.Blockers = append(resp.Blockers, status.Convert(err).Message())
	}
	planned := func(a *relv1.Agent) *relv1.PlannedHost {
		ph := &relv1.PlannedHost{AgentId: a.GetId(), Connected: a.GetConnected(), Labels: a.GetLabels()}
		if r := in.current[a.GetId()]; r != nil {
			ph.CurrentVersion, ph.CurrentPhase = r.GetVersion(), r.GetPhase()
			if r.GetVersion() == req.GetVersion() && r.GetPhase() == "healthy" {
				resp.UpToDate++
			}
		}
		return ph
	}
	for _, a := range in.offline {
		resp.Offline = append(resp.Offline, planned(a))
	}
	if len(in.candidates) == 0 {
		resp.Blockers = append(resp.Blockers, status.Convert(in.noHostsError()).Message())
	} else if waves, err := rollout.AssignWaves(spec, in.candidates); err != nil {
		resp.Blockers = append(resp.Blockers, status.Convert(specStatus(err)).Message())
	} else {
		for i, w := range waves {
			pw := &relv1.PlannedWave{Index: uint32(i), Kind: w.Kind}
			for _, id := range w.Hosts {
				pw.Hosts = append(pw.Hosts, planned(in.agents[id]))
			}
			resp.Waves = append(resp.Waves, pw)
		}
	}
	probe := &relv1.Rollout{App: req.GetApp(), Environment: req.GetEnvironment()}
	for _, c := range in.candidates {
		probe.Hosts = append(probe.Hosts, &relv1.RolloutHost{AgentId: c.ID})
	}
	if b, shared, err := s.store.Blocker(probe); err == nil && b != nil {
		// The very refusal a start would get.
		resp.Blockers = append(resp.Blockers, state.BlockedError(b, shared).Error())
	}
	return resp, nil
}

func (c *controlService) ControlRollout(ctx context.Context, req *relv1.ControlRolloutRequest) (*relv1.ControlRolloutResponse, error) {
	s := c.s
	switch req.GetAction() {
	case rollout.ActionPause, rollout.ActionResume, rollout.ActionApprove, rollout.ActionAbort:
	default:
		return nil, status.Errorf(codes.InvalidArgument, "action %q: use pause, resume, approve or abort", req.GetAction())
	}
	if req.GetId() == "" {
		return nil, status.Error(codes.InvalidArgument, "rollout id is empty: 'relctl rollout list' shows them")
	}
	if err := validate.Description(req.GetReason()); err != nil {
		return nil, toStatus(err)
	}
	switch {
	case req.GetAction() == "approve" && req.GetWave() == 0:
		return nil, status.Errorf(codes.InvalidArgument, "approve names the wave it approves: give the number 'relctl rollout status %s' shows for the wave that waits (the next one; waves count from 1, a canary's from 0, and the canary never waits)", req.GetId())
	case req.GetAction() != "approve" && req.GetWave() != 0:
		return nil, status.Errorf(codes.InvalidArgument, "wave %d: only approve names a wave, not %s", req.GetWave(), req.GetAction())
	}
	if req.GetAction() == rollout.ActionApprove {
		// Under an approval policy a wave's gate follows the policy's rules.
		if resp, err := s.approveWave(ctx, req); !errors.Is(err, errNotUnderPolicy) {
			return resp, err
		}
	}
	// A repeated request is answered by the FSM with the first answer (its
	// index): an approve sent again after the rollout moved on opens no
	// other gate, and the wave it names would not be the one waiting.
	idx, err := s.apply(ctx, &relv1.Command{Kind: &relv1.Command_RolloutControl{RolloutControl: &relv1.RolloutControl{
		RolloutId: req.GetId(), Action: req.GetAction(), Reason: req.GetReason(), AtUnixNano: time.Now().UnixNano(), Wave: req.GetWave(),
	}}})
	if err != nil {
		return nil, toStatus(err)
	}
	ro, err := s.readAfter(ctx, idx, req.GetId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &relv1.ControlRolloutResponse{Rollout: ro, Index: idx}, nil
}

// readAfter reads a rollout once the local replica has applied index: a
// follower that forwarded the write may not have it yet.
func (s *Server) readAfter(ctx context.Context, index uint64, id string) (*relv1.Rollout, error) {
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, _, err := s.store.BlockingQuery(wctx, index-1, func(ws memdb.WatchSet, st *state.Store) (any, uint64, error) {
		ro, err := st.Rollout(ws, id)
		if err != nil {
			return nil, 0, err
		}
		return ro, ro.GetModifyIndex(), nil
	})
	if err != nil {
		return nil, err
	}
	return out.(*relv1.Rollout), nil
}

func (c *controlService) RollbackRollout(ctx context.Context, req *relv1.RollbackRolloutRequest) (*relv1.RollbackRolloutResponse, error) {
	s := c.s
	if req.GetId() == "" {
		return nil, status.Error(codes.InvalidArgument, "rollout id is empty: 'relctl rollout list' shows them")
	}
	if conn, err := s.leaderTarget(ctx); err != nil {
		return nil, err
	} else if conn != nil {
		resp, err := relv1.NewControlServiceClient(conn).RollbackRollout(forwardCtx(ctx), req)
		if err == nil {
			s.waitLocal(ctx, resp.GetIndex())
		}
		return resp, err
	}
	if err := s.raft.Barrier(timeoutFrom(ctx)).Error(); err != nil {
		return nil, toStatus(err)
	}
	if rb, idx, ok, err := s.repeatedRollout(ctx, rollbackProbe(req)); ok && err != nil {
		return nil, err
	} else if ok {
		return &relv1.RollbackRolloutResponse{Rollback: rb, Index: idx}, nil
	}
	orig, err := s.store.Rollout(nil, req.GetId())
	if err != nil {
		return nil, toStatus(err)
	}
	switch {
	case orig.GetKind() == rollout.KindRollback:
		return nil, status.Errorf(codes.FailedPrecondition, "rollout %s is itself a rollback (of %s): start a new rollout of the release you want instead", orig.GetId(), orig.GetRollbackOf())
	case orig.GetRolledBackBy() != "":
		return nil, status.Errorf(codes.FailedPrecondition, "rollout %s is already rolled back by %s", orig.GetId(), orig.GetRolledBackBy())
	}
	cmd, err := rollout.RollbackCommand(orig, newID("ro-"), req.GetAllAtOnce(), time.Now())
	if err != nil {
		if errors.Is(err, rollout.ErrInvalidSpec) {
			return nil, status.Error(codes.FailedPrecondition, strings.TrimPrefix(err.Error(), rollout.ErrInvalidSpec.Error()+": "))
		}
		return nil, toStatus(err)
	}
	a, err := s.applyCommand(ctx, cmd)
	if err != nil {
		return nil, toStatus(err)
	}
	if a.Duplicate {
		// An earlier attempt of this request started the rollback.
		first, err := s.firstRollout(ctx, a.Index, a.Ref)
		if err != nil {
			return nil, err
		}
		return &relv1.RollbackRolloutResponse{Rollback: first, Index: a.Index}, nil
	}
	idx := a.Index
	rb := cmd.GetCreateRollout().GetRollout()
	rb.CreateIndex, rb.ModifyIndex = idx, idx
	return &relv1.RollbackRolloutResponse{Rollback: rb, Index: idx}, nil
}

func (c *controlService) RolloutEvents(ctx context.Context, req *relv1.RolloutEventsRequest) (*relv1.RolloutEventsResponse, error) {
	s := c.s
	if req.GetId() == "" {
		return nil, status.Error(codes.InvalidArgument, "rollout id is empty: 'relctl rollout list' shows them")
	}
	if conn, err := s.readTarget(ctx, req.GetRead()); err != nil {
		return nil, toStatus(err)
	} else if conn != nil {
		return relv1.NewControlServiceClient(conn).RolloutEvents(forwardCtx(ctx), req)
	}
	wait := min(time.Duration(req.GetWaitMs())*time.Millisecond, maxWait)
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	type answer struct {
		events []*relv1.RolloutEvent
		ro     *relv1.Rollout
	}
	// Wait while there is nothing new; answer at once when there is.
	var last *answer
	var lastIdx uint64
	for {
		ws := newWatch(s.store)
		ro, err := s.store.Rollout(ws, req.GetId())
		if err != nil {
			return nil, toStatus(err)
		}
		evs, idx, err := s.store.RolloutEvents(ws, req.GetId(), req.GetAfterSeq())
		if err != nil {
			return nil, toStatus(err)
		}
		last, lastIdx = &answer{evs, ro}, idx
		if len(evs) > 0 || wait <= 0 || rollout.Terminal(ro.GetState()) {
			break
		}
		if ws.WatchCtx(wctx) != nil {
			break
		}
	}
	return &relv1.RolloutEventsResponse{Events: last.events, Rollout: last.ro, Index: lastIdx}, nil
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

// rolloutStatus joins a rollout's row with what its hosts' agents report.
// rolloutTotals is a rollout's status for lists: its header (no hosts) and
// its hosts per phase, as rolloutStatus counts them, reading only the
// reports of the hosts still dispatched.
func (s *Server) rolloutTotals(ro *relv1.Rollout) *relv1.RolloutStatus {
	st := &relv1.RolloutStatus{Rollout: rollout.Header(ro), Totals: map[string]uint32{}}
	for _, h := range ro.GetHosts() {
		phase := h.GetState()
		if phase == rollout.HostDispatched {
			phase = "dispatched"
			if aa, _ := s.store.AgentApp(nil, h.GetAgentId(), ro.GetApp()); aa != nil && aa.GetReport().GetRolloutId() == ro.GetId() {
				phase = aa.GetReport().GetPhase()
			}
		}
		st.Totals[phase]++
	}
	return st
}

func (s *Server) rolloutStatus(ws memdb.WatchSet, ro *relv1.Rollout) (*relv1.RolloutStatus, uint64) {
	st := &relv1.RolloutStatus{Rollout: ro, Totals: map[string]uint32{}}
	index := ro.GetModifyIndex()
	for _, h := range ro.GetHosts() {
		hs := &relv1.RolloutHostStatus{AgentId: h.GetAgentId(), PreviousVersion: h.GetPreviousVersion(),
			Phase: h.GetState(), Reason: h.GetReason(), Version: h.GetTargetVersion()}
		if h.GetState() == rollout.HostDispatched {
			hs.Phase = "dispatched"
		}
		if a, err := s.store.Agent(ws, h.GetAgentId()); err == nil {
			hs.Connected = a.GetConnected()
			index = max(index, a.GetModifyIndex())
			if !a.GetConnected() && hs.Reason == "" {
				hs.Reason = "agent disconnected: " + a.GetDisconnectReason()
			}
		}
		if aa, _ := s.store.AgentApp(ws, h.GetAgentId(), ro.GetApp()); aa != nil {
			index = max(index, aa.GetModifyIndex())
			r := aa.GetReport()
			if r.GetRolloutId() == ro.GetId() {
				hs.UpdatedUnixNano = r.GetAtUnixNano()
				if h.GetState() == rollout.HostDispatched {
					hs.Phase = r.GetPhase()
					if r.GetReason() != "" {
						hs.Reason = r.GetReason()
					}
				}
			}
		}
		if hs.UpdatedUnixNano == 0 {
			hs.UpdatedUnixNano = max(h.GetFinishedUnixNano(), h.GetDispatchedUnixNano())
		}
		if cur, err := s.store.CurrentVersion(ws, h.GetAgentId(), ro.GetApp()); err == nil && cur != "" {
			hs.CurrentVersion = cur
		} else if h.GetState() == rollout.HostPending || h.GetState() == rollout.HostSkipped {
			// Nothing reported: a host the rollout never touched still
			// runs what it ran.
			hs.CurrentVersion = h.GetPreviousVersion()
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
	q := state.RolloutQuery{App: req.GetApp(), Environment: req.GetEnvironment(), State: req.GetState(), SinceUnixNano: req.GetSinceUnixNano()}
	if q.State != "" && q.State != "active" && !slices.Contains(rollout.States, q.State) {
		return nil, status.Errorf(codes.InvalidArgument, "state %q is not a rollout state: use active or one of %s", q.State, strings.Join(rollout.States, ", "))
	}
	if q.SinceUnixNano < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "since_unix_nano %d is negative", q.SinceUnixNano)
	}
	after := &relv1.Rollout{}
	if ok, err := parsePageToken("rollouts", req.GetPageToken(), after); err != nil {
		return nil, err
	} else if ok {
		q.After = after
	}
	b := newPageBudget(req.GetPageSize())
	q.Limit = b.size
	ros, more, idx, err := s.store.QueryRollouts(memdb.NewWatchSet(), q)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &relv1.ListRolloutsResponse{Index: idx}
	for _, ro := range ros {
		var st *relv1.RolloutStatus
		if req.GetHosts() {
			st, _ = s.rolloutStatus(memdb.NewWatchSet(), ro)
		} else {
			st = s.rolloutTotals(ro)
		}
		if !b.take(st) {
			more = true
			break
		}
		resp.Rollouts = append(resp.Rollouts, st)
	}
	if more {
		last := resp.Rollouts[len(resp.Rollouts)-1].GetRollout()
		resp.NextPageToken = pageToken("rollouts", &relv1.Rollout{CreateIndex: last.GetCreateIndex(), Id: last.GetId()})
	}
	return resp, nil
}

// agentStatus joins an agent's row with its apps, its environments and,
// when its server answered, its live load.
//
// Hook output may hold anything a hook printed; callers whose roles may not
// read it (viewers, release creators) get the reports without it.
func (s *Server) agentStatus(ctx context.Context, a *relv1.Agent, envs []*relv1.Environment, live map[string]*relv1.LocalAgent) *relv1.AgentStatus {
	st := &relv1.AgentStatus{Agent: a}
	apps, _ := s.store.AgentApps(memdb.NewWatchSet(), a.GetId())
	mayReadOutput := auth.FromContext(ctx).HasPermission(auth.ReadOutput)
	for _, aa := range apps {
		r := aa.GetReport()
		if r.GetOutput() != "" && !mayReadOutput {
			r = proto.Clone(r).(*relv1.AppReport)
			r.Output = ""
		}
		st.Apps = append(st.Apps, r)
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
	key := &relv1.Agent{}
	hasKey, err := parsePageToken("agents", req.GetPageToken(), key)
	if err != nil {
		return nil, err
	}
	var sorted []*relv1.Agent
	for _, a := range agents {
		if sel != nil && !state.Matches(sel, a.GetLabels()) {
			continue
		}
		sorted = append(sorted, a)
	}
	byID := func(a, b *relv1.Agent) bool { return a.GetId() < b.GetId() }
	sort.Slice(sorted, func(i, j int) bool { return byID(sorted[i], sorted[j]) })
	if hasKey {
		sorted = after(sorted, key, byID)
	}
	live, _ := s.liveAgents(ctx)
	resp := &relv1.ListAgentsResponse{Index: idx}
	page, more := fillPage(newPageBudget(req.GetPageSize()), sorted, func(a *relv1.Agent) *relv1.AgentStatus { return s.agentStatus(ctx, a, envs, live) })
	resp.Agents = page
	if more {
		resp.NextPageToken = pageToken("agents", &relv1.Agent{Id: page[len(page)-1].GetAgent().GetId()})
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
	return &relv1.GetAgentResponse{Agent: s.agentStatus(ctx, a, envs, live), Index: a.GetModifyIndex()}, nil
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
	// The summaries of folded history come first, by host, then the
	// entries; each phase has its own page tokens, and one page may hold
	// the last summaries and the first entries.
	sumKey, key := &relv1.HistorySummary{}, &relv1.HistoryEntry{}
	inSums, hasKey := true, false
	var err error
	if strings.HasPrefix(req.GetPageToken(), "history.") {
		inSums = false
		if hasKey, err = parsePageToken("history", req.GetPageToken(), key); err != nil {
			return nil, err
		}
	}
	hasSumKey, err := parsePageToken("historysum", req.GetPageToken(), sumKey)
	if inSums && err != nil {
		return nil, err
	}
	keep := func(agentID string) bool {
		if req.GetHost() != "" && agentID != req.GetHost() {
			return false
		}
		if sel != nil {
			a, err := s.store.Agent(nil, agentID)
			if err != nil || !state.Matches(sel, a.GetLabels()) {
				return false
			}
		}
		return true
	}
	entries, idx, err := s.store.History(memdb.NewWatchSet(), req.GetApp())
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &relv1.HistoryResponse{Index: idx}
	budget := newPageBudget(req.GetPageSize())
	if inSums {
		all, sidx, err := s.store.HistorySummaries(nil, req.GetApp())
		if err != nil {
			return nil, toStatus(err)
		}
		resp.Index = max(resp.Index, sidx)
		var sums []*relv1.HistorySummary // by host, as the store lists them
		for _, m := range all {
			if since := req.GetSinceUnixNano(); since != 0 && m.GetLastUnixNano() < since {
				continue
			}
			if keep(m.GetAgentId()) {
				sums = append(sums, m)
			}
		}
		sumLess := func(a, b *relv1.HistorySummary) bool { return a.GetAgentId() < b.GetAgentId() }
		if hasSumKey {
			sums = after(sums, sumKey, sumLess)
		}
		page, more := fillPage(budget, sums, func(m *relv1.HistorySummary) *relv1.HistorySummary { return m })
		resp.Summaries = page
		if more {
			resp.NextPageToken = pageToken("historysum", &relv1.HistorySummary{AgentId: page[len(page)-1].GetAgentId()})
			return resp, nil
		}
	}
	var sorted []*relv1.HistoryEntry
	for _, h := range entries {
		if since := req.GetSinceUnixNano(); since != 0 && h.GetToUnixNano() != 0 && h.GetToUnixNano() < since {
			continue
		}
		if keep(h.GetAgentId()) {
			sorted = append(sorted, h)
		}
	}
	sort.Slice(sorted, func(i, j int) bool { return historyLess(sorted[i], sorted[j]) })
	if hasKey {
		sorted = after(sorted, key, historyLess)
	}
	page, more := fillPage(budget, sorted, func(h *relv1.HistoryEntry) *relv1.HistoryEntry { return h })
	resp.Entries = page
	switch {
	case more && len(page) == 0:
		// The summaries filled this page: the entries start on the next.
		resp.NextPageToken = pageToken("history", &relv1.HistoryEntry{FromUnixNano: math.MinInt64})
	case more:
		last := page[len(page)-1]
		resp.NextPageToken = pageToken("history", &relv1.HistoryEntry{FromUnixNano: last.GetFromUnixNano(), AgentId: last.GetAgentId(), CreateIndex: last.GetCreateIndex()})
	}
	return resp, nil
}

// historyLess is the order of History: oldest first, then by host and the
// index that created the entry.
func historyLess(a, b *relv1.HistoryEntry) bool {
	if a.GetFromUnixNano() != b.GetFromUnixNano() {
		return a.GetFromUnixNano() < b.GetFromUnixNano()
	}
	if a.GetAgentId() != b.GetAgentId() {
		return a.GetAgentId() < b.GetAgentId()
	}
	return a.GetCreateIndex() < b.GetCreateIndex()
}
