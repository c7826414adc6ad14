package validate

import (
	"slices"
	"time"

	"github.com/relhq/rel/internal/auth"
	"github.com/relhq/rel/internal/rollout"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// Limits of an approval policy.
const (
	// MaxApprovers bounds a policy's roles and names together.
	MaxApprovers = 32
	// MaxApprovalExpiry bounds how long a rollout may wait for approvals.
	MaxApprovalExpiry = 90 * 24 * time.Hour
	// MinApprovalExpiry keeps an expiry long enough to approve in.
	MinApprovalExpiry = time.Second
)

// ApprovalPolicy checks an environment's approval policy: 1-10 approvals
// required, known roles, well-formed names, an expiry from 1s to 90 days,
// and, when it names no role, at least as many named approvers as it
// requires (else nobody could ever approve enough).
func ApprovalPolicy(p *relv1.ApprovalPolicy) error {
	if p == nil {
		return nil
	}
	if p.GetRequired() < 1 || p.GetRequired() > rollout.MaxApprovalsRequired {
		return invalid("approvals required %d: give 1-%d", p.GetRequired(), rollout.MaxApprovalsRequired)
	}
	if len(p.GetRoles())+len(p.GetNames()) == 0 {
		return invalid("the approval policy names no approver: give --approver role:NAME or --approver token:NAME (or client:NAME)")
	}
	if n := len(p.GetRoles()) + len(p.GetNames()); n > MaxApprovers {
		return invalid("the approval policy names %d approvers: the limit is %d (name a role instead)", n, MaxApprovers)
	}
	for i, r := range p.GetRoles() {
		if _, err := auth.ParseRole(r); err != nil {
			return invalid("approver role:%s: %v", r, err)
		}
		if !auth.Role(r).Has(auth.Approve) {
			return invalid("approver role:%s: that role has no approve permission (roles with it: approver, admin)", r)
		}
		if slices.Contains(p.GetRoles()[:i], r) {
			return invalid("approver role:%s is named twice", r)
		}
	}
	for i, n := range p.GetNames() {
		if !idRE.MatchString(n) {
			return invalid("approver name %q: want a token's name or accessor, or a client certificate's name (1-64 letters, digits and . _ -)", n)
		}
		if slices.Contains(p.GetNames()[:i], n) {
			return invalid("approver %q is named twice", n)
		}
	}
	if len(p.GetRoles()) == 0 && uint32(len(p.GetNames())) < p.GetRequired() {
		return invalid("%d approvals required but only %d approver(s) named (%v) and no role: name at least %d, or add --approver role:approver",
			p.GetRequired(), len(p.GetNames()), p.GetNames(), p.GetRequired())
	}
	if ms := p.GetExpiryMs(); ms != 0 {
		d := time.Duration(ms) * time.Millisecond
		if ms < 0 || d < MinApprovalExpiry || d > MaxApprovalExpiry {
			return invalid("approval expiry %s: give 1s to %s", d, rollout.FormatDuration(MaxApprovalExpiry))
		}
	}
	return nil
}

func approvalRoles(roles []string) error {
	if len(roles) > len(auth.Roles) {
		return invalid("%d roles: there are only %d", len(roles), len(auth.Roles))
	}
	for _, r := range roles {
		if _, err := auth.ParseRole(r); err != nil {
			return invalid("role %q: %v", r, err)
		}
	}
	return nil
}

func approvalCommand(cmd *relv1.Command) (bool, error) {
	switch k := cmd.GetKind().(type) {
	case *relv1.Command_ApproveRollout:
		c := k.ApproveRollout
		return true, first(id("rollout id", c.GetRolloutId()), Description(c.GetComment()), positive("approval time", c.GetAtUnixNano()), approvalRoles(c.GetRoles()))
	case *relv1.Command_RejectRollout:
		c := k.RejectRollout
		return true, first(id("rollout id", c.GetRolloutId()), Description(c.GetComment()), positive("rejection time", c.GetAtUnixNano()), approvalRoles(c.GetRoles()))
	case *relv1.Command_ReviewRollout:
		c := k.ReviewRollout
		return true, first(id("rollout id", c.GetRolloutId()), Description(c.GetComment()), positive("review time", c.GetAtUnixNano()))
	case *relv1.Command_ExpireApprovals:
		c := k.ExpireApprovals
		if len(c.GetRolloutIds()) == 0 || len(c.GetRolloutIds()) > MaxRemovedRollouts {
			return true, invalid("expire_approvals names %d rollouts: give 1-%d", len(c.GetRolloutIds()), MaxRemovedRollouts)
		}
		for _, r := range c.GetRolloutIds() {
			if err := id("rollout id", r); err != nil {
				return true, err
			}
		}
		return true, positive("expiry time", c.GetAtUnixNano())
	case *relv1.Command_SetApprovalPolicy:
		c := k.SetApprovalPolicy
		return true, first(Name("environment name", c.GetEnvironment()), ApprovalPolicy(c.GetPolicy()))
	}
	return false, nil
}
