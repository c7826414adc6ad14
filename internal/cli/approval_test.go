package cli

import (
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// fakeApprovals is an ApprovalService and a ControlService (GetRollout
// only) answering with one rollout awaiting two approvals.
type fakeApprovals struct {
	relv1.UnimplementedApprovalServiceServer
	relv1.UnimplementedControlServiceServer
	policy  chan *relv1.SetApprovalPolicyRequest
	approve chan *relv1.ApproveRolloutRequest
}

func approvalRollout() *relv1.Rollout {
	return &relv1.Rollout{Id: "r-1", Kind: "deploy", App: "web", Version: "1.2.3", Environment: "prod", State: "awaiting_approval",
		ChangeType: "normal", RequestedBy: &relv1.Actor{Kind: "token", Id: "d0", Name: "dave"},
		ApprovalPolicy:          &relv1.ApprovalPolicy{Required: 2, Roles: []string{"approver"}, Names: []string{"alice"}},
		ApprovalExpiresUnixNano: t0, CreatedUnixNano: t0}
}

func (f *fakeApprovals) GetRollout(context.Context, *relv1.GetRolloutRequest) (*relv1.GetRolloutResponse, error) {
	return &relv1.GetRolloutResponse{Status: &relv1.RolloutStatus{Rollout: approvalRollout()}}, nil
}

func (f *fakeApprovals) SetPolicy(_ context.Context, req *relv1.SetApprovalPolicyRequest) (*relv1.SetApprovalPolicyResponse, error) {
	f.policy <- req
	return &relv1.SetApprovalPolicyResponse{Environment: &relv1.Environment{Name: "prod", ApprovalPolicy: req.GetPolicy(), ApprovalPolicyVersion: 3}, Index: 9}, nil
}

func (f *fakeApprovals) Approve(_ context.Context, req *relv1.ApproveRolloutRequest) (*relv1.ApproveRolloutResponse, error) {
	f.approve <- req
	ro := approvalRollout()
	ro.Approvals = []*relv1.Approval{{Actor: &relv1.Actor{Kind: "token", Id: "a1", Name: "alice"}, AtUnixNano: t0, Comment: req.GetComment()}}
	return &relv1.ApproveRolloutResponse{Rollout: ro, Index: 10}, nil
}

func (f *fakeApprovals) Pending(context.Context, *relv1.PendingApprovalsRequest) (*relv1.PendingApprovalsResponse, error) {
	ro := approvalRollout()
	return &relv1.PendingApprovalsResponse{Pending: []*relv1.PendingApproval{{Rollout: ro, Approved: 1, Required: 2, Approvers: []string{"role:approver", "alice"}}}}, nil
}

func (f *fakeApprovals) Reviews(context.Context, *relv1.ListReviewsRequest) (*relv1.ListReviewsResponse, error) {
	ro := approvalRollout()
	ro.State, ro.ChangeType, ro.ChangeReason = "succeeded", "emergency", "checkout down"
	return &relv1.ListReviewsResponse{Rollouts: []*relv1.Rollout{ro}}, nil
}

func TestApprovalCommands(t *testing.T) {
	f := &fakeApprovals{policy: make(chan *relv1.SetApprovalPolicyRequest, 1), approve: make(chan *relv1.ApproveRolloutRequest, 1)}
	addr := serveWith(t, func(s *grpc.Server) {
		relv1.RegisterApprovalServiceServer(s, f)
		relv1.RegisterControlServiceServer(s, f)
	})
	env := map[string]string{envAddr: addr}

	res := runCLI(t, env, "", "env", "approval-policy", "set", "prod", "--approvals", "2", "--approver", "role:approver", "--approver", "token:alice",
		"--approval-expiry", "24h", "--allow-standard-changes")
	if res.code != exitOK || res.stdout != "environment prod: approval policy 2 approval(s) from role:approver, alice, expiry 24h, standard changes skip it (version 3)\n" {
		t.Fatalf("policy set: %d %q %q", res.code, res.stdout, res.stderr)
	}
	want := &relv1.SetApprovalPolicyRequest{Environment: "prod", Policy: &relv1.ApprovalPolicy{Required: 2, Roles: []string{"approver"}, Names: []string{"alice"}, ExpiryMs: 86_400_000, AllowStandard: true}}
	if got := <-f.policy; !proto.Equal(got, want) {
		t.Errorf("policy request %v, want %v", got, want)
	}
	res = runCLI(t, env, "", "env", "approval-policy", "set", "prod", "--approvals", "2", "--approver", "boss:x")
	if res.code != exitUsage || !strings.Contains(res.stderr, `"boss" is not role, token or client`) {
		t.Errorf("bad approver: %d %q", res.code, res.stderr)
	}

	res = runCLI(t, env, "", "rollout", "approve", "r-1", "--comment", "lgtm")
	if res.code != exitOK || res.stdout != "rollout r-1: awaiting_approval; 1 of 2 approvals\n" {
		t.Fatalf("approve: %d %q %q", res.code, res.stdout, res.stderr)
	}
	if got := <-f.approve; got.GetComment() != "lgtm" || got.GetWave() != 0 {
		t.Errorf("approve request %v", got)
	}

	res = runCLI(t, env, "", "approvals", "pending")
	wantTable := "ROLLOUT  APP  ENV   VERSION  GATE   REQUESTER  APPROVALS  EXPIRES               APPROVERS\n" +
		"r-1      web  prod  1.2.3    start  dave       1/2        2025-03-04T04:06:07Z  role:approver,alice (not self)\n" +
		"what changes: relctl release notes web@1.2.3 --env prod\n"
	if res.code != exitOK || res.stdout != wantTable {
		t.Errorf("pending: %d\n%s\nwant\n%s%s", res.code, res.stdout, wantTable, res.stderr)
	}
	res = runCLI(t, env, "", "reviews", "--open")
	if res.code != exitOK || !strings.Contains(res.stdout, "r-1      web  prod  1.2.3    succeeded  dave       checkout down  open") {
		t.Errorf("reviews: %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	res = runCLI(t, env, "", "rollout", "reject", "r-1")
	if res.code != exitUsage {
		t.Errorf("reject without comment: %d %q", res.code, res.stderr)
	}
}

func TestRolloutStartChangeFlags(t *testing.T) {
	srv := newFakeOps("succeeded", "")
	addr := serve(t, srv, nil)
	res := runCLI(t, map[string]string{envAddr: addr}, "", "rollout", "start", "web@1.2.3", "--env", "prod", "--emergency", "--reason", "checkout down")
	if res.code != exitOK {
		t.Fatalf("exit code = %d, stderr %q", res.code, res.stderr)
	}
	if req := <-srv.started; req.GetChangeType() != "emergency" || req.GetChangeReason() != "checkout down" {
		t.Errorf("request %v", req)
	}
	res = runCLI(t, map[string]string{envAddr: addr}, "", "rollout", "start", "web@1.2.3", "--env", "prod", "--emergency", "--change", "standard")
	if res.code != exitUsage || !strings.Contains(res.stderr, "--emergency and --change standard") {
		t.Errorf("both: %d %q", res.code, res.stderr)
	}
}
