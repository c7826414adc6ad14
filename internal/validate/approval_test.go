package validate

import (
	"errors"
	"strings"
	"testing"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

func approvalValidCommands() map[string]*relv1.Command {
	c := func(k any) *relv1.Command {
		cmd := &relv1.Command{StampedUnixNano: 1}
		switch k := k.(type) {
		case *relv1.Command_ApproveRollout:
			cmd.Kind = k
		case *relv1.Command_RejectRollout:
			cmd.Kind = k
		case *relv1.Command_ReviewRollout:
			cmd.Kind = k
		case *relv1.Command_ExpireApprovals:
			cmd.Kind = k
		case *relv1.Command_SetApprovalPolicy:
			cmd.Kind = k
		}
		return cmd
	}
	return map[string]*relv1.Command{
		"approve_rollout":  c(&relv1.Command_ApproveRollout{ApproveRollout: &relv1.ApproveRollout{RolloutId: "ro-1", Comment: "lgtm", AtUnixNano: 1, Roles: []string{"approver"}}}),
		"reject_rollout":   c(&relv1.Command_RejectRollout{RejectRollout: &relv1.RejectRollout{RolloutId: "ro-1", Comment: "no", AtUnixNano: 1}}),
		"review_rollout":   c(&relv1.Command_ReviewRollout{ReviewRollout: &relv1.ReviewRollout{RolloutId: "ro-1", AtUnixNano: 1}}),
		"expire_approvals": c(&relv1.Command_ExpireApprovals{ExpireApprovals: &relv1.ExpireApprovals{RolloutIds: []string{"ro-1"}, AtUnixNano: 1}}),
		"set_approval_policy": c(&relv1.Command_SetApprovalPolicy{SetApprovalPolicy: &relv1.SetApprovalPolicy{Environment: "prod",
			Policy: &relv1.ApprovalPolicy{Required: 2, Roles: []string{"approver"}, Names: []string{"alice"}}}}),
	}
}

func approvalInvalidCommandCases() []invalidCase {
	return []invalidCase{
		{"approve_rollout", "no rollout", func(c *relv1.Command) { c.GetApproveRollout().RolloutId = "" }, "rollout id"},
		{"approve_rollout", "not stamped", func(c *relv1.Command) { c.GetApproveRollout().AtUnixNano = 0 }, "approval time is not stamped"},
		{"approve_rollout", "unknown role", func(c *relv1.Command) { c.GetApproveRollout().Roles = []string{"boss"} }, `role "boss"`},
		{"approve_rollout", "long comment", func(c *relv1.Command) { c.GetApproveRollout().Comment = strings.Repeat("x", MaxDescriptionLen+1) }, "description is"},
		{"reject_rollout", "no rollout", func(c *relv1.Command) { c.GetRejectRollout().RolloutId = "" }, "rollout id"},
		{"reject_rollout", "not stamped", func(c *relv1.Command) { c.GetRejectRollout().AtUnixNano = 0 }, "rejection time"},
		{"review_rollout", "no rollout", func(c *relv1.Command) { c.GetReviewRollout().RolloutId = "" }, "rollout id"},
		{"expire_approvals", "no rollouts", func(c *relv1.Command) { c.GetExpireApprovals().RolloutIds = nil }, "names 0 rollouts"},
		{"expire_approvals", "not stamped", func(c *relv1.Command) { c.GetExpireApprovals().AtUnixNano = 0 }, "expiry time"},
		{"set_approval_policy", "no environment", func(c *relv1.Command) { c.GetSetApprovalPolicy().Environment = "" }, "environment name"},
		{"set_approval_policy", "zero required", func(c *relv1.Command) { c.GetSetApprovalPolicy().Policy.Required = 0 }, "approvals required 0: give 1-10"},
	}
}

// TestApprovalPolicy: each bad policy is refused with what is wrong and
// what to do.
func TestApprovalPolicy(t *testing.T) {
	tests := []struct {
		name string
		p    *relv1.ApprovalPolicy
		want string
	}{
		{"none required", &relv1.ApprovalPolicy{Roles: []string{"approver"}}, "approvals required 0: give 1-10"},
		{"too many required", &relv1.ApprovalPolicy{Required: 11, Roles: []string{"approver"}}, "approvals required 11: give 1-10"},
		{"no approver", &relv1.ApprovalPolicy{Required: 1}, "names no approver"},
		{"unknown role", &relv1.ApprovalPolicy{Required: 1, Roles: []string{"boss"}}, "approver role:boss"},
		{"role without approve", &relv1.ApprovalPolicy{Required: 1, Roles: []string{"deployer"}}, "has no approve permission"},
		{"role twice", &relv1.ApprovalPolicy{Required: 1, Roles: []string{"approver", "approver"}}, "named twice"},
		{"name twice", &relv1.ApprovalPolicy{Required: 1, Names: []string{"alice", "alice"}}, `"alice" is named twice`},
		{"bad name", &relv1.ApprovalPolicy{Required: 1, Names: []string{"a b"}}, `approver name "a b"`},
		{"more required than named", &relv1.ApprovalPolicy{Required: 3, Names: []string{"alice", "bob"}}, "3 approvals required but only 2 approver(s) named"},
		{"expiry too short", &relv1.ApprovalPolicy{Required: 1, Roles: []string{"approver"}, ExpiryMs: 10}, "approval expiry 10ms: give 1s to 2160h"},
		{"expiry too long", &relv1.ApprovalPolicy{Required: 1, Roles: []string{"approver"}, ExpiryMs: 91 * 24 * 3600 * 1000}, "give 1s to 2160h"},
	}
	for _, tt := range tests {
		err := ApprovalPolicy(tt.p)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want ErrInvalid containing %q", tt.name, err, tt.want)
		}
	}
	for _, ok := range []*relv1.ApprovalPolicy{
		nil,
		{Required: 2, Roles: []string{"approver"}},
		{Required: 2, Names: []string{"alice", "0123456789abcdef"}},
		{Required: 10, Roles: []string{"admin"}, ExpiryMs: 5000, AllowSelf: true, AllowStandard: true},
	} {
		if err := ApprovalPolicy(ok); err != nil {
			t.Errorf("%v: %v", ok, err)
		}
	}
}
