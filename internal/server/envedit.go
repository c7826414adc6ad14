package server

import (
	"context"
	"sort"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/relhq/rel/internal/rollout"
	"github.com/relhq/rel/internal/state"
	"github.com/relhq/rel/internal/validate"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// UpdateEnvironment changes an environment's selector or description. The
// accepting server works out which agents join and leave (old selector
// against new, over the agents its replica knows) and proposes the new row
// with the index it read it at; the FSM applies it only if the row has not
// changed since, and refuses a selector change while a rollout to the
// environment is active.
func (c *controlService) UpdateEnvironment(ctx context.Context, req *relv1.UpdateEnvironmentRequest) (*relv1.UpdateEnvironmentResponse, error) {
	s := c.s
	if err := validate.Name("environment name", req.GetName()); err != nil {
		return nil, toStatus(err)
	}
	if req.GetDefaultSpec() != nil {
		if _, err := rollout.Normalize(req.GetDefaultSpec()); err != nil {
			return nil, specStatus(err)
		}
	}
	if len(req.GetSelector()) == 0 && req.Description == nil && req.CatchUp == nil && req.CatchUpParallel == nil && req.GetDefaultSpec() == nil {
		return nil, status.Error(codes.InvalidArgument, "nothing to change: give --selector, --description, --catch-up, --catch-up-parallel or a default spec")
	}
	if req.CatchUp != nil && req.GetCatchUp() != "auto" && req.GetCatchUp() != "manual" {
		return nil, status.Errorf(codes.InvalidArgument, "--catch-up %q: use auto or manual", req.GetCatchUp())
	}
	if req.GetCatchUpParallel() > maxCatchUpParallel {
		return nil, status.Errorf(codes.InvalidArgument, "--catch-up-parallel %d: at most %d hosts at a time", req.GetCatchUpParallel(), maxCatchUpParallel)
	}
	if len(req.GetSelector()) > 0 {
		if err := validate.Labels("selector", req.GetSelector(), true); err != nil {
			return nil, toStatus(err)
		}
	}
	if req.Description != nil {
		if err := validate.Description(req.GetDescription()); err != nil {
			return nil, toStatus(err)
		}
	}
	probe := &relv1.Command{Kind: &relv1.Command_UpdateEnvironment{UpdateEnvironment: &relv1.UpdateEnvironment{Environment: &relv1.Environment{Name: req.GetName()}}}}
	if !req.GetDryRun() {
		if index, _, ok, err := s.repeatedAnswer(ctx, probe); ok {
			if err != nil {
				return nil, err
			}
			return s.firstEnvUpdate(req.GetName(), index), nil
		}
	}
	old, err := s.environment(req.GetName())
	if err != nil {
		return nil, toStatus(err)
	}
	env := proto.Clone(old).(*relv1.Environment)
	if len(req.GetSelector()) > 0 {
		env.Selector = req.GetSelector()
	}
	if req.Description != nil {
		env.Description = req.GetDescription()
	}
	if req.CatchUp != nil {
		env.CatchUpManual = req.GetCatchUp() == "manual"
	}
	if req.GetDefaultSpec() != nil {
		env.DefaultSpec = req.GetDefaultSpec()
	}
	if req.CatchUpParallel != nil {
		env.CatchUpParallel = req.GetCatchUpParallel()
	}
	resp := &relv1.UpdateEnvironmentResponse{Environment: env, DryRun: req.GetDryRun()}
	resp.Joining, resp.Leaving, err = s.selectorChange(old.GetSelector(), env.GetSelector())
	if err != nil {
		return nil, toStatus(err)
	}
	if !sameSelector(old.GetSelector(), env.GetSelector()) {
		// The FSM decides; this gives a dry run the refusal the update
		// would get.
		if ro, err := s.store.ActiveRolloutTo(env.GetName()); err != nil {
			return nil, toStatus(err)
		} else if ro != nil && req.GetDryRun() {
			return nil, status.Errorf(codes.FailedPrecondition, "environment %q has an active rollout, %s (%s@%s, %s): its hosts were chosen by the current selector; wait until it finishes or abort it ('relctl rollout abort %s'), then change the selector",
				env.GetName(), ro.GetId(), ro.GetApp(), ro.GetVersion(), ro.GetState(), ro.GetId())
		}
	}
	if req.GetDryRun() || (sameSelector(old.GetSelector(), env.GetSelector()) && old.GetDescription() == env.GetDescription() &&
		old.GetCatchUpManual() == env.GetCatchUpManual() && old.GetCatchUpParallel() == env.GetCatchUpParallel() &&
		proto.Equal(old.GetDefaultSpec(), env.GetDefaultSpec())) {
		return resp, nil
	}
	a, err := s.applyCommand(ctx, &relv1.Command{Kind: &relv1.Command_UpdateEnvironment{UpdateEnvironment: &relv1.UpdateEnvironment{
		Environment: env, ExpectModifyIndex: old.GetModifyIndex(), Joining: resp.Joining, Leaving: resp.Leaving,
	}}})
	if err != nil {
		return nil, toStatus(err)
	}
	if a.Duplicate {
		return s.firstEnvUpdate(req.GetName(), a.Index), nil
	}
	env.ModifyIndex = a.Index
	resp.Index = a.Index
	return resp, nil
}

// firstEnvUpdate answers a repeated update with the first answer: the
// joining and leaving hosts its entry recorded (while this server's log
// still holds it) and the environment as it is now.
func (s *Server) firstEnvUpdate(name string, index uint64) *relv1.UpdateEnvironmentResponse {
	resp := &relv1.UpdateEnvironmentResponse{Index: index, Environment: &relv1.Environment{Name: name}}
	if env, err := s.environment(name); err == nil {
		resp.Environment = env
	}
	var l raft.Log
	if s.boltStore != nil && s.boltStore.GetLog(index, &l) == nil {
		var cmd relv1.Command
		if proto.Unmarshal(l.Data, &cmd) == nil {
			if u := cmd.GetUpdateEnvironment(); u != nil && u.GetEnvironment().GetName() == name {
				resp.Joining, resp.Leaving = u.GetJoining(), u.GetLeaving()
			}
		}
	}
	return resp
}

// DeleteEnvironment deletes an environment; the FSM refuses it while a
// rollout to it is active.
func (c *controlService) DeleteEnvironment(ctx context.Context, req *relv1.DeleteEnvironmentRequest) (*relv1.DeleteEnvironmentResponse, error) {
	s := c.s
	if err := validate.Name("environment name", req.GetName()); err != nil {
		return nil, toStatus(err)
	}
	cmd := &relv1.Command{Kind: &relv1.Command_DeleteEnvironment{DeleteEnvironment: &relv1.DeleteEnvironment{Name: req.GetName()}}}
	if index, _, ok, err := s.repeatedAnswer(ctx, cmd); ok {
		if err != nil {
			return nil, err
		}
		return &relv1.DeleteEnvironmentResponse{Name: req.GetName(), Index: index}, nil
	}
	a, err := s.applyCommand(ctx, cmd)
	if err != nil {
		return nil, toStatus(err)
	}
	return &relv1.DeleteEnvironmentResponse{Name: req.GetName(), Index: a.Index}, nil
}

// environment reads one environment from the local replica.
func (s *Server) environment(name string) (*relv1.Environment, error) {
	envs, _, err := s.store.Environments(nil)
	if err != nil {
		return nil, err
	}
	for _, e := range envs {
		if e.GetName() == name {
			return e, nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "environment %q not found: 'relctl env list' shows them", name)
}

// selectorChange lists the agents (by id, sorted) that the new selector
// matches and the old does not (joining), and the other way round
// (leaving).
func (s *Server) selectorChange(old, sel map[string]string) (joining, leaving []string, err error) {
	agents, _, err := s.store.Agents(nil)
	if err != nil {
		return nil, nil, err
	}
	for _, a := range agents {
		was, is := state.Matches(old, a.GetLabels()), state.Matches(sel, a.GetLabels())
		switch {
		case is && !was:
			joining = append(joining, a.GetId())
		case was && !is:
			leaving = append(leaving, a.GetId())
		}
	}
	sort.Strings(joining)
	sort.Strings(leaving)
	return joining, leaving, nil
}

func sameSelector(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}
