package server

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/hashicorp/go-memdb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/relhq/rel/internal/auth"
	"github.com/relhq/rel/internal/retry"
	"github.com/relhq/rel/internal/rollout"
	"github.com/relhq/rel/internal/state"
	"github.com/relhq/rel/internal/validate"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// approvalService serves change control's approvals (approval.proto).
type approvalService struct {
	relv1.UnimplementedApprovalServiceServer
	s *Server
}

// changeControl decides, for a deploy requested by the caller of ctx, its
// change type and the approval policy it waits for (nil: none): an
// emergency change needs the emergency permission and a reason, and
// waits for one approval where the environment has a policy; a standard
// change skips the approvals only where the policy allows it, and is
// refused elsewhere; a normal one (the default) waits for the policy's.
func changeControl(ctx context.Context, req *relv1.StartRolloutRequest, env *relv1.Environment) (string, *relv1.ApprovalPolicy, error) {
	ct := req.GetChangeType()
	switch ct {
	case "":
		ct = rollout.ChangeNormal
	case rollout.ChangeStandard, rollout.ChangeNormal, rollout.ChangeEmergency:
	default:
		return "", nil, status.Errorf(codes.InvalidArgument, "change type %q: use standard, normal or emergency", ct)
	}
	if err := validate.Description(req.GetChangeReason()); err != nil {
		return "", nil, toStatus(err)
	}
	p := env.GetApprovalPolicy()
	switch ct {
	case rollout.ChangeEmergency:
		caller := auth.FromContext(ctx)
		if !caller.Allows(auth.Emergency, auth.Resource{App: req.GetApp(), Env: req.GetEnvironment()}) {
			return "", nil, status.Errorf(codes.PermissionDenied, "an emergency change of %s in %s needs the emergency permission (roles operator and admin have it); %s has not: start a normal change instead", req.GetApp(), req.GetEnvironment(), caller)
		}
		if strings.TrimSpace(req.GetChangeReason()) == "" {
			return "", nil, status.Error(codes.InvalidArgument, "an emergency change needs a reason (--reason TEXT): say why it cannot wait; it is recorded and the change stays open for review")
		}
		if p != nil {
			p = proto.Clone(p).(*relv1.ApprovalPolicy)
			p.Required = 1
		}
	case rollout.ChangeStandard:
		if p != nil && !p.GetAllowStandard() {
			return "", nil, status.Errorf(codes.FailedPrecondition, "environment %s's approval policy does not allow standard changes: start a normal change (it waits for %d approval(s) from %s), or allow them with 'relctl env approval-policy set %s ... --allow-standard-changes'",
				env.GetName(), p.GetRequired(), strings.Join(rollout.Approvers(p), ", "), env.GetName())
		}
		p = nil
	}
	return ct, p, nil
}

// approveRoles are the caller's roles that may approve on the rollout's
// app and environment (scoped grants count only where they apply).
func approveRoles(ctx context.Context, ro *relv1.Rollout) []string {
	res := auth.Resource{App: ro.GetApp(), Env: ro.GetEnvironment()}
	var out []string
	for _, g := range auth.FromContext(ctx).Grants {
		if g.Allows(auth.Approve, res) && !containsString(out, string(g.Role)) {
			out = append(out, string(g.Role))
		}
	}
	return out
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// lookupRollout reads a rollout from the local replica for a write that
// names it (the FSM decides again on its own replica).
func (s *Server) lookupRollout(id string) (*relv1.Rollout, error) {
	if id == "" {
		return nil, status.Error(codes.InvalidArgument, "rollout id is empty: 'relctl approvals pending' shows the rollouts awaiting approval")
	}
	ro, err := s.store.Rollout(nil, id)
	if err != nil {
		return nil, toStatus(err)
	}
	return ro, nil
}

// approve commits an approval of rollout ro's gate wave by the caller.
func (s *Server) approve(ctx context.Context, ro *relv1.Rollout, comment string, wave uint32) (*relv1.Rollout, uint64, error) {
	if err := validate.Description(comment); err != nil {
		return nil, 0, toStatus(err)
	}
	idx, err := s.apply(ctx, &relv1.Command{Kind: &relv1.Command_ApproveRollout{ApproveRollout: &relv1.ApproveRollout{
		RolloutId: ro.GetId(), Comment: comment, AtUnixNano: time.Now().UnixNano(), Roles: approveRoles(ctx, ro), Wave: wave,
	}}})
	if err != nil {
		return nil, 0, toStatus(err)
	}
	out, err := s.readAfter(ctx, idx, ro.GetId())
	if err != nil {
		return nil, 0, toStatus(err)
	}
	return out, idx, nil
}

func (a *approvalService) Approve(ctx context.Context, req *relv1.ApproveRolloutRequest) (*relv1.ApproveRolloutResponse, error) {
	ro, err := a.s.lookupRollout(req.GetId())
	if err != nil {
		return nil, err
	}
	out, idx, err := a.s.approve(ctx, ro, req.GetComment(), req.GetWave())
	if err != nil {
		return nil, err
	}
	return &relv1.ApproveRolloutResponse{Rollout: out, Index: idx}, nil
}

func (a *approvalService) Reject(ctx context.Context, req *relv1.RejectRolloutRequest) (*relv1.RejectRolloutResponse, error) {
	s := a.s
	ro, err := s.lookupRollout(req.GetId())
	if err != nil {
		return nil, err
	}
	if err := validate.Description(req.GetComment()); err != nil {
		return nil, toStatus(err)
	}
	if strings.TrimSpace(req.GetComment()) == "" {
		return nil, status.Error(codes.InvalidArgument, "a rejection needs a comment (--comment TEXT): it is the rollout's reason for ending")
	}
	idx, err := s.apply(ctx, &relv1.Command{Kind: &relv1.Command_RejectRollout{RejectRollout: &relv1.RejectRollout{
		RolloutId: ro.GetId(), Comment: req.GetComment(), AtUnixNano: time.Now().UnixNano(), Roles: approveRoles(ctx, ro),
	}}})
	if err != nil {
		return nil, toStatus(err)
	}
	out, err := s.readAfter(ctx, idx, ro.GetId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &relv1.RejectRolloutResponse{Rollout: out, Index: idx}, nil
}

func (a *approvalService) Review(ctx context.Context, req *relv1.ReviewRolloutRequest) (*relv1.ReviewRolloutResponse, error) {
	s := a.s
	ro, err := s.lookupRollout(req.GetId())
	if err != nil {
		return nil, err
	}
	if err := validate.Description(req.GetComment()); err != nil {
		return nil, toStatus(err)
	}
	idx, err := s.apply(ctx, &relv1.Command{Kind: &relv1.Command_ReviewRollout{ReviewRollout: &relv1.ReviewRollout{
		RolloutId: ro.GetId(), Comment: req.GetComment(), AtUnixNano: time.Now().UnixNano(),
	}}})
	if err != nil {
		return nil, toStatus(err)
	}
	out, err := s.readAfter(ctx, idx, ro.GetId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &relv1.ReviewRolloutResponse{Rollout: out, Index: idx}, nil
}

func (a *approvalService) SetPolicy(ctx context.Context, req *relv1.SetApprovalPolicyRequest) (*relv1.SetApprovalPolicyResponse, error) {
	s := a.s
	if err := validate.Name("environment name", req.GetEnvironment()); err != nil {
		return nil, toStatus(err)
	}
	p := req.GetPolicy()
	switch {
	case req.GetClear() && p != nil:
		return nil, status.Error(codes.InvalidArgument, "clear and a policy together: give one")
	case !req.GetClear() && p == nil:
		return nil, status.Error(codes.InvalidArgument, "no policy given: set one, or clear it")
	}
	if err := validate.ApprovalPolicy(p); err != nil {
		return nil, toStatus(err)
	}
	idx, err := s.apply(ctx, &relv1.Command{Kind: &relv1.Command_SetApprovalPolicy{SetApprovalPolicy: &relv1.SetApprovalPolicy{Environment: req.GetEnvironment(), Policy: p}}})
	if err != nil {
		return nil, toStatus(err)
	}
	envs, _, err := s.store.Environments(nil)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &relv1.SetApprovalPolicyResponse{Index: idx}
	for _, e := range envs {
		if e.GetName() == req.GetEnvironment() {
			resp.Environment = e
		}
	}
	return resp, nil
}

// pendingOf describes the gate a rollout waits at, or nil.
func pendingOf(ro *relv1.Rollout) *relv1.PendingApproval {
	wave, ok := rollout.Gate(ro)
	if !ok || ro.GetApprovalPolicy() == nil {
		return nil
	}
	p := ro.GetApprovalPolicy()
	return &relv1.PendingApproval{Rollout: rollout.Header(ro), Approved: rollout.Approved(ro, wave), Required: p.GetRequired(),
		Wave: wave, Approvers: rollout.Approvers(p), AllowSelf: p.GetAllowSelf()}
}

func (a *approvalService) Pending(ctx context.Context, req *relv1.PendingApprovalsRequest) (*relv1.PendingApprovalsResponse, error) {
	s := a.s
	if conn, err := s.readTarget(ctx, req.GetRead()); err != nil {
		return nil, toStatus(err)
	} else if conn != nil {
		return relv1.NewApprovalServiceClient(conn).Pending(forwardCtx(ctx), req)
	}
	resp := &relv1.PendingApprovalsResponse{}
	for _, st := range []string{rollout.StateAwaitingApproval, rollout.StateWaitingApproval} {
		ros, _, idx, err := s.store.QueryRollouts(memdb.NewWatchSet(), state.RolloutQuery{State: st, App: req.GetApp(), Environment: req.GetEnvironment()})
		if err != nil {
			return nil, toStatus(err)
		}
		resp.Index = max(resp.Index, idx)
		for _, ro := range ros {
			if p := pendingOf(ro); p != nil {
				resp.Pending = append(resp.Pending, p)
			}
		}
	}
	return resp, nil
}

func (a *approvalService) Reviews(ctx context.Context, req *relv1.ListReviewsRequest) (*relv1.ListReviewsResponse, error) {
	s := a.s
	if conn, err := s.readTarget(ctx, req.GetRead()); err != nil {
		return nil, toStatus(err)
	} else if conn != nil {
		return relv1.NewApprovalServiceClient(conn).Reviews(forwardCtx(ctx), req)
	}
	ros, _, idx, err := s.store.QueryRollouts(memdb.NewWatchSet(), state.RolloutQuery{})
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &relv1.ListReviewsResponse{Index: idx}
	for _, ro := range ros {
		if ro.GetChangeType() != rollout.ChangeEmergency || (req.GetOpen() && !rollout.ReviewOpen(ro)) {
			continue
		}
		resp.Rollouts = append(resp.Rollouts, rollout.Header(ro))
	}
	return resp, nil
}

// approvalExpiryLoop runs on the leader: it ends the rollouts whose
// approval expired (state failed, "approval expired after 72h"), each
// decided in the FSM from the stamp of the leader's entry.
func (s *Server) approvalExpiryLoop(ctx context.Context) {
	for ctx.Err() == nil {
		ws := memdb.NewWatchSet()
		ws.Add(s.store.AbandonCh())
		ros, _, _, err := s.store.QueryRollouts(ws, state.RolloutQuery{State: rollout.StateAwaitingApproval})
		if err != nil {
			s.logger.Error("approval expiry: read rollouts", "err", err)
			return
		}
		now := time.Now()
		var due []string
		var next time.Time
		for _, ro := range ros {
			exp := ro.GetApprovalExpiresUnixNano()
			if exp == 0 {
				continue
			}
			if t := time.Unix(0, exp); !t.After(now) {
				due = append(due, ro.GetId())
			} else if next.IsZero() || t.Before(next) {
				next = t
			}
		}
		if len(due) > validate.MaxRemovedRollouts {
			due = due[:validate.MaxRemovedRollouts]
		}
		if len(due) > 0 {
			actx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, err := s.apply(actx, &relv1.Command{StampedUnixNano: now.UnixNano(), Kind: &relv1.Command_ExpireApprovals{ExpireApprovals: &relv1.ExpireApprovals{RolloutIds: due, AtUnixNano: now.UnixNano()}}})
			cancel()
			if err != nil && ctx.Err() == nil {
				s.logger.Warn("approval expiry: commit failed; retrying", "err", err)
				retry.Sleep(ctx, time.Duration(100+rand.IntN(200))*time.Millisecond)
			} else if err == nil {
				s.logger.Info("approval expired", "rollouts", due)
			}
			continue
		}
		wctx, cancel := ctx, context.CancelFunc(func() {})
		if !next.IsZero() {
			wctx, cancel = context.WithDeadline(ctx, next)
		}
		_ = ws.WatchCtx(wctx)
		cancel()
	}
}

// errNotUnderPolicy is not an error for callers: ControlRollout's approve
// of a rollout without a policy goes the old way.
var errNotUnderPolicy = errors.New("no approval policy")

// approveWave sends ControlRollout's approve of a rollout under an
// approval policy through the policy's rules; errNotUnderPolicy when the
// rollout has none.
func (s *Server) approveWave(ctx context.Context, req *relv1.ControlRolloutRequest) (*relv1.ControlRolloutResponse, error) {
	ro, err := s.store.Rollout(nil, req.GetId())
	if err != nil || ro.GetApprovalPolicy() == nil {
		return nil, errNotUnderPolicy
	}
	if !auth.FromContext(ctx).Allows(auth.Approve, auth.Resource{App: ro.GetApp(), Env: ro.GetEnvironment()}) {
		return nil, status.Errorf(codes.PermissionDenied, "rollout %s is under environment %s's approval policy: its waves are approved by %s, with the approve permission", ro.GetId(), ro.GetEnvironment(), strings.Join(rollout.Approvers(ro.GetApprovalPolicy()), ", "))
	}
	out, idx, err := s.approve(ctx, ro, req.GetReason(), req.GetWave())
	if err != nil {
		return nil, err
	}
	return &relv1.ControlRolloutResponse{Rollout: out, Index: idx}, nil
}

// describeGate says what a new rollout waits for, for StartRollout's log.
func describeGate(p *relv1.ApprovalPolicy) string {
	return fmt.Sprintf("%d approval(s) from %s", p.GetRequired(), strings.Join(rollout.Approvers(p), ", "))
}
