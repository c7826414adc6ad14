package server

import (
	"context"
	"time"

	"github.com/hashicorp/go-memdb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/relhq/rel/internal/auth"
	"github.com/relhq/rel/internal/freeze"
	"github.com/relhq/rel/internal/rollout"
	"github.com/relhq/rel/internal/validate"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// freezeService implements relv1.FreezeService: freeze windows (change
// control). Whether a window holds a rollout is freeze.Evaluate's
// decision, made by the accepting server, again by the FSM at the
// command's stamped time, and by the leader's engine as time passes
// (internal/rollout/freeze.go).
type freezeService struct {
	relv1.UnimplementedFreezeServiceServer
	s *Server
}

func (f *freezeService) CreateFreeze(ctx context.Context, req *relv1.CreateFreezeRequest) (*relv1.CreateFreezeResponse, error) {
	if req.GetWindow() == nil {
		return nil, status.Error(codes.InvalidArgument, "no window given: name it, give its apps, environments and times")
	}
	w := proto.Clone(req.GetWindow()).(*relv1.FreezeWindow)
	now := time.Now()
	w.CreatedUnixNano, w.CreatedBy, w.CreateIndex, w.ModifyIndex = now.UnixNano(), nil, 0, 0
	if err := validate.FreezeWindow(w, now); err != nil {
		return nil, toStatus(err)
	}
	a, err := f.s.applyCommand(ctx, &relv1.Command{StampedUnixNano: now.UnixNano(), Kind: &relv1.Command_CreateFreeze{CreateFreeze: &relv1.CreateFreeze{Window: w}}})
	if err != nil {
		return nil, toStatus(err)
	}
	f.s.waitLocal(ctx, a.Index)
	stored, err := f.window(w.GetName())
	if err != nil {
		// Deleted since; answer with what was created.
		w.CreateIndex, w.ModifyIndex = a.Index, a.Index
		stored = w
	}
	f.s.logger.Info("freeze window created", "name", w.GetName(), "by", auth.FromContext(ctx).String())
	return &relv1.CreateFreezeResponse{Window: stored, Index: a.Index}, nil
}

func (f *freezeService) window(name string) (*relv1.FreezeWindow, error) {
	ws, _, err := f.s.store.Freezes(nil)
	if err != nil {
		return nil, err
	}
	for _, w := range ws {
		if w.GetName() == name {
			return w, nil
		}
	}
	return nil, status.Errorf(codes.NotFound, "freeze window %q not found", name)
}

func (f *freezeService) ListFreezes(ctx context.Context, req *relv1.ListFreezesRequest) (*relv1.ListFreezesResponse, error) {
	if conn, err := f.s.readTarget(ctx, req.GetRead()); err != nil {
		return nil, toStatus(err)
	} else if conn != nil {
		return relv1.NewFreezeServiceClient(conn).ListFreezes(forwardCtx(ctx), req)
	}
	ws, idx, err := f.s.store.Freezes(memdb.NewWatchSet())
	if err != nil {
		return nil, toStatus(err)
	}
	return &relv1.ListFreezesResponse{Windows: ws, Index: idx}, nil
}

func (f *freezeService) DeleteFreeze(ctx context.Context, req *relv1.DeleteFreezeRequest) (*relv1.DeleteFreezeResponse, error) {
	if err := validate.Name("freeze name", req.GetName()); err != nil {
		return nil, toStatus(err)
	}
	idx, err := f.s.apply(ctx, &relv1.Command{Kind: &relv1.Command_DeleteFreeze{DeleteFreeze: &relv1.DeleteFreeze{Name: req.GetName()}}})
	if err != nil {
		return nil, toStatus(err)
	}
	f.s.logger.Info("freeze window deleted", "name", req.GetName(), "by", auth.FromContext(ctx).String())
	return &relv1.DeleteFreezeResponse{Index: idx}, nil
}

func (f *freezeService) FreezeStatus(ctx context.Context, req *relv1.FreezeStatusRequest) (*relv1.FreezeStatusResponse, error) {
	if err := validate.Name("environment name", req.GetEnvironment()); err != nil {
		return nil, toStatus(err)
	}
	if req.GetApp() != "" {
		if err := validate.Name("app name", req.GetApp()); err != nil {
			return nil, toStatus(err)
		}
	}
	if req.GetAtUnixNano() < 0 {
		return nil, status.Error(codes.InvalidArgument, "at is before 1970: give an RFC 3339 time, e.g. 2026-11-28T10:00:00Z")
	}
	if conn, err := f.s.readTarget(ctx, req.GetRead()); err != nil {
		return nil, toStatus(err)
	} else if conn != nil {
		return relv1.NewFreezeServiceClient(conn).FreezeStatus(forwardCtx(ctx), req)
	}
	at := time.Now()
	if req.GetAtUnixNano() != 0 {
		at = time.Unix(0, req.GetAtUnixNano())
	}
	ws, _, err := f.s.store.Freezes(nil)
	if err != nil {
		return nil, toStatus(err)
	}
	v := freeze.Evaluate(ws, req.GetApp(), req.GetEnvironment(), at)
	resp := &relv1.FreezeStatusResponse{Frozen: v.Frozen, Window: v.Window, NextWindow: v.Next,
		Message: freeze.Describe(v, req.GetApp(), req.GetEnvironment()), AtUnixNano: at.UnixNano()}
	if v.Frozen {
		resp.UntilUnixNano = v.Until.UnixNano()
	}
	if v.Next != nil {
		resp.NextStartUnixNano, resp.NextEndUnixNano = v.NextStart.UnixNano(), v.NextEnd.UnixNano()
	}
	return resp, nil
}

// holdForFreeze is StartRollout's freeze check (step 2 of change
// control, after the lifecycle gate and before approvals and the queue),
// on a new deploy planned at now: inside a freeze it is held (frozen,
// nothing dispatched) and the answer says so; an emergency change inside
// one records the window it overrides. It reports whether the rollout is
// held. The FSM decides the same again at the command's time.
func (s *Server) holdForFreeze(ro *relv1.Rollout, events []*relv1.RolloutEvent, now time.Time) (*relv1.Rollout, []*relv1.RolloutEvent, bool, error) {
	if ro.GetKind() != rollout.KindDeploy {
		return ro, events, false, nil
	}
	ws, _, err := s.store.Freezes(nil)
	if err != nil {
		return nil, nil, false, err
	}
	v := freeze.ForRollout(ws, ro, now)
	if !v.Frozen {
		return ro, events, false, nil
	}
	if !rollout.FreezeApplies(ro) {
		ro.FreezeOverridden = v.Window.GetName()
		return ro, events, false, nil
	}
	ro, events = rollout.Hold(ro, events, freeze.Hold(v), v.Until.UnixNano(), now.UnixNano())
	return ro, events, true, nil
}
