package state

import (
	"errors"
	"fmt"

	"github.com/hashicorp/go-memdb"
	"google.golang.org/protobuf/proto"

	"github.com/relhq/rel/internal/rollout"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// Change control's approvals: the rows and the lookups; the decisions are
// internal/rollout's (approvals.go).

// SetApprovalPolicy replaces an environment's approval policy (nil: none)
// and bumps its version, so that approvals given under the old one no
// longer count for rollouts requested under it.
func (s *Store) SetApprovalPolicy(index uint64, envName string, p *relv1.ApprovalPolicy) error {
	txn := s.writeTxn()
	defer txn.Abort()
	raw, err := txn.First(TableEnvironments, "id", envName)
	if err != nil {
		return fmt.Errorf("state: lookup environment: %w", err)
	}
	if raw == nil {
		return envNotFound(envName)
	}
	row := proto.Clone(raw.(*relv1.Environment)).(*relv1.Environment)
	row.ApprovalPolicy = p
	row.ApprovalPolicyVersion++
	row.ModifyIndex = index
	if err := txn.Insert(TableEnvironments, row); err != nil {
		return fmt.Errorf("state: update environment: %w", err)
	}
	if err := setIndex(txn, TableEnvironments, index); err != nil {
		return err
	}
	txn.Commit()
	return nil
}

// checkApprovalGate refuses a new deploy rollout whose approval policy is
// not its environment's current one (the policy changed, or was set,
// while the request was decided): the FSM, not the accepting server,
// decides that the rollout skips or waits for approvals.
func checkApprovalGate(txn *memdb.Txn, r *relv1.Rollout) error {
	if r.GetKind() != rollout.KindDeploy {
		return nil
	}
	raw, err := txn.First(TableEnvironments, "id", r.GetEnvironment())
	if err != nil {
		return fmt.Errorf("state: lookup environment: %w", err)
	}
	if raw == nil {
		return nil // CreateRollout's other checks answer
	}
	env := raw.(*relv1.Environment)
	p := env.GetApprovalPolicy()
	switch {
	case p == nil && r.GetApprovalPolicy() == nil:
		return nil
	case p != nil && r.GetApprovalPolicy() == nil && r.GetChangeType() == rollout.ChangeStandard && p.GetAllowStandard():
		return nil
	case env.GetApprovalPolicyVersion() != r.GetApprovalPolicyVersion() || (p == nil) != (r.GetApprovalPolicy() == nil):
		return newError(ErrConflict, fmt.Sprintf("policy changed: environment %s's approval policy changed while rollout %s was requested: request again", env.GetName(), r.GetId()))
	}
	return nil
}

// approvalInput gathers what an approval of rollout id is decided on.
func approvalInput(txn *memdb.Txn, id string) (rollout.ApprovalInput, error) {
	raw, err := txn.First(TableRollouts, "id", id)
	if err != nil {
		return rollout.ApprovalInput{}, fmt.Errorf("state: lookup rollout: %w", err)
	}
	if raw == nil {
		return rollout.ApprovalInput{}, newError(ErrNotFound, fmt.Sprintf("rollout %q not found: 'relctl approvals pending' shows the rollouts awaiting approval", id))
	}
	in := rollout.ApprovalInput{Rollout: raw.(*relv1.Rollout)}
	if raw, err := txn.First(TableReleases, "id", in.Rollout.GetApp(), in.Rollout.GetVersion()); err != nil {
		return in, fmt.Errorf("state: lookup release: %w", err)
	} else if raw != nil {
		in.Release = raw.(*relv1.Release)
	}
	if raw, err := txn.First(TableEnvironments, "id", in.Rollout.GetEnvironment()); err != nil {
		return in, fmt.Errorf("state: lookup environment: %w", err)
	} else if raw != nil {
		in.EnvPolicyVersion = raw.(*relv1.Environment).GetApprovalPolicyVersion()
	}
	return in, nil
}

// approvalRefusal maps the approval decisions' refusals to the store's
// sentinels.
func approvalRefusal(err error) error {
	if errors.Is(err, rollout.ErrNotEligible) {
		msg := err.Error()
		if p := rollout.ErrNotEligible.Error() + ": "; len(msg) > len(p) && msg[:len(p)] == p {
			msg = msg[len(p):]
		}
		return newError(ErrPermissionDenied, msg)
	}
	return refusal(err)
}

func saveRollout(txn *memdb.Txn, index uint64, r *relv1.Rollout, events []*relv1.RolloutEvent) error {
	r.ModifyIndex = index
	for _, e := range events {
		if err := insertEvent(txn, index, e); err != nil {
			return err
		}
	}
	if err := txn.Insert(TableRollouts, r); err != nil {
		return fmt.Errorf("state: update rollout: %w", err)
	}
	if err := trackDeployment(txn, index, r); err != nil {
		return err
	}
	return setIndex(txn, TableRollouts, index)
}

// ApproveRollout records one approval by actor (with roles over the
// rollout's app and environment) as rollout.Approve decides it.
func (s *Store) ApproveRollout(index uint64, c *relv1.ApproveRollout, actor *relv1.Actor) error {
	txn := s.writeTxn()
	defer txn.Abort()
	in, err := approvalInput(txn, c.GetRolloutId())
	if err != nil {
		return err
	}
	in.Actor, in.Roles, in.Comment, in.Wave, in.At = actor, c.GetRoles(), c.GetComment(), c.GetWave(), c.GetAtUnixNano()
	r, events, err := rollout.Approve(in)
	if err != nil {
		return approvalRefusal(err)
	}
	if err := saveRollout(txn, index, r, events); err != nil {
		return err
	}
	txn.Commit()
	return nil
}

// RejectRollout ends a rollout awaiting approval, as rollout.Reject
// decides it.
func (s *Store) RejectRollout(index uint64, c *relv1.RejectRollout, actor *relv1.Actor) error {
	txn := s.writeTxn()
	defer txn.Abort()
	in, err := approvalInput(txn, c.GetRolloutId())
	if err != nil {
		return err
	}
	in.Actor, in.Roles, in.Comment, in.At = actor, c.GetRoles(), c.GetComment(), c.GetAtUnixNano()
	r, ev, err := rollout.Reject(in)
	if err != nil {
		return approvalRefusal(err)
	}
	if err := saveRollout(txn, index, r, []*relv1.RolloutEvent{ev}); err != nil {
		return err
	}
	txn.Commit()
	return nil
}

// ReviewRollout closes an emergency change's review.
func (s *Store) ReviewRollout(index uint64, c *relv1.ReviewRollout, actor *relv1.Actor) error {
	txn := s.writeTxn()
	defer txn.Abort()
	raw, err := txn.First(TableRollouts, "id", c.GetRolloutId())
	if err != nil {
		return fmt.Errorf("state: lookup rollout: %w", err)
	}
	if raw == nil {
		return newError(ErrNotFound, fmt.Sprintf("rollout %q not found: 'relctl reviews --open' shows the emergency changes to review", c.GetRolloutId()))
	}
	r, ev, err := rollout.Review(raw.(*relv1.Rollout), actor, c.GetComment(), c.GetAtUnixNano())
	if err != nil {
		return approvalRefusal(err)
	}
	if err := saveRollout(txn, index, r, []*relv1.RolloutEvent{ev}); err != nil {
		return err
	}
	txn.Commit()
	return nil
}

// ExpireApprovals ends the named rollouts whose approval expired at or
// before at; the others (approved meanwhile, say) are left alone. It
// returns how many it ended.
func (s *Store) ExpireApprovals(index uint64, ids []string, at int64) (int, error) {
	txn := s.writeTxn()
	defer txn.Abort()
	n := 0
	for _, id := range ids {
		raw, err := txn.First(TableRollouts, "id", id)
		if err != nil {
			return 0, fmt.Errorf("state: lookup rollout: %w", err)
		}
		if raw == nil {
			continue
		}
		r, ev, ok := rollout.ExpireApproval(raw.(*relv1.Rollout), at)
		if !ok {
			continue
		}
		if err := saveRollout(txn, index, r, []*relv1.RolloutEvent{ev}); err != nil {
			return 0, err
		}
		n++
	}
	txn.Commit()
	return n, nil
}
