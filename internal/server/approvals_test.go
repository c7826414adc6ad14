package server_test

import (
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/relhq/rel/internal/rollout"
	"github.com/relhq/rel/internal/testcluster"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// ccPeople are the tokens of the change-control tests, all talking to one
// server.
type ccPeople struct {
	creator, deployer, alice, bob, ops *grpc.ClientConn
}

func (p ccPeople) ctl(c *grpc.ClientConn) relv1.ControlServiceClient {
	return relv1.NewControlServiceClient(c)
}
func (p ccPeople) apr(c *grpc.ClientConn) relv1.ApprovalServiceClient {
	return relv1.NewApprovalServiceClient(c)
}

// changeControlCluster starts n servers, app web with environment prod
// (one automatic agent) and the tokens of a release creator (who may also
// approve, to test four eyes), a deployer, two approvers and an operator
// who may deploy, all connected to node at.
func changeControlCluster(t *testing.T, n int) (*testcluster.Cluster, *testcluster.Node, ccPeople) {
	t.Helper()
	c := testcluster.New(t, n, testcluster.Options{})
	leader := c.WaitLeader()
	at := leader
	if n > 1 {
		at = c.Followers()[0]
	}
	admin := c.Admin(leader.GRPCAddr())
	ctl := relv1.NewControlServiceClient(admin)
	ctx := ctxT(t)
	if _, err := ctl.CreateApp(ctx, &relv1.CreateAppRequest{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	if _, err := ctl.CreateEnvironment(ctx, &relv1.CreateEnvironmentRequest{Name: "prod", Selector: map[string]string{"env": "prod"}}); err != nil {
		t.Fatal(err)
	}
	startAutoAgent(t, at, "web-1", map[string]string{"env": "prod"}, nil)
	conn := func(name string, roles ...string) *grpc.ClientConn {
		secret, _ := createToken(t, admin, name, roles, nil, 0)
		cc := tokenConn(t, c, at.GRPCAddr(), secret)
		waitFor(t, name+"'s token on "+at.ID, func() bool {
			_, err := relv1.NewACLServiceClient(cc).WhoAmI(ctx, &relv1.WhoAmIRequest{})
			return err == nil
		})
		return cc
	}
	p := ccPeople{
		creator:  conn("carol", "release-creator", "approver"),
		deployer: conn("dave", "deployer"),
		alice:    conn("alice", "approver"),
		bob:      conn("bob", "approver"),
		ops:      conn("olga", "deployer", "operator"),
	}
	return c, at, p
}

func (p ccPeople) release(t *testing.T, version string) {
	t.Helper()
	if _, err := p.ctl(p.creator).CreateRelease(ctxT(t), &relv1.CreateReleaseRequest{App: "web", Version: version,
		ArtifactUrl: "https://a.example.com/web-" + version + ".tgz", Sha256: digest(version)}); err != nil {
		t.Fatal(err)
	}
}

func (p ccPeople) start(t *testing.T, version string, change, reason string) *relv1.Rollout {
	t.Helper()
	resp, err := p.ctl(p.deployer).StartRollout(ctxT(t), &relv1.StartRolloutRequest{App: "web", Version: version, Environment: "prod", ChangeType: change, ChangeReason: reason})
	if err != nil {
		t.Fatalf("start %s: %v", version, err)
	}
	return resp.GetRollout()
}

func setPolicy(t *testing.T, conn *grpc.ClientConn, p *relv1.ApprovalPolicy) {
	t.Helper()
	if _, err := relv1.NewApprovalServiceClient(conn).SetPolicy(ctxT(t), &relv1.SetApprovalPolicyRequest{Environment: "prod", Policy: p}); err != nil {
		t.Fatalf("set policy: %v", err)
	}
}

// TestFourEyesLeaderKilled: a rollout into an environment with a policy of
// two approvers waits; the deployer cannot approve, the release's creator
// is refused (forbid self), an approver counts once; the leader is killed
// while the rollout awaits approval, and the second approval, through the
// new leader, starts it, which then succeeds.
func TestFourEyesLeaderKilled(t *testing.T) {
	c, at, p := changeControlCluster(t, 3)
	ctx := ctxT(t)
	setPolicy(t, c.Admin(c.WaitLeader().GRPCAddr()), &relv1.ApprovalPolicy{Required: 2, Roles: []string{"approver"}})
	p.release(t, "1.0.0")
	ro := p.start(t, "1.0.0", "", "")
	if ro.GetState() != rollout.StateAwaitingApproval || ro.GetApprovalPolicy().GetRequired() != 2 || ro.GetApprovalDigest() != digest("1.0.0") {
		t.Fatalf("started %v", ro)
	}
	id := ro.GetId()

	_, err := p.apr(p.deployer).Approve(ctx, &relv1.ApproveRolloutRequest{Id: id})
	wantCode(t, "the deployer's approval", err, codes.PermissionDenied)
	_, err = p.apr(p.creator).Approve(ctx, &relv1.ApproveRolloutRequest{Id: id})
	wantCode(t, "the creator's approval", err, codes.PermissionDenied, "carol created release web@1.0.0", "may not approve")
	resp, err := p.apr(p.alice).Approve(ctx, &relv1.ApproveRolloutRequest{Id: id, Comment: "lgtm"})
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.GetRollout(); got.GetState() != rollout.StateAwaitingApproval || len(got.GetApprovals()) != 1 {
		t.Fatalf("after alice: %v", got)
	}
	_, err = p.apr(p.alice).Approve(ctx, &relv1.ApproveRolloutRequest{Id: id})
	wantCode(t, "alice twice", err, codes.FailedPrecondition, "alice already approved rollout "+id)
	pending, err := p.apr(p.deployer).Pending(ctx, &relv1.PendingApprovalsRequest{})
	if err != nil || len(pending.GetPending()) != 1 || pending.GetPending()[0].GetApproved() != 1 || pending.GetPending()[0].GetRequired() != 2 {
		t.Fatalf("pending: %v %v", pending, err)
	}
	// Nothing dispatched while it waits.
	if st := waitState(t, p.ctl(p.deployer), id, rollout.StateAwaitingApproval); st.GetTotals()["pending"] != 1 {
		t.Fatalf("awaiting rollout dispatched: %v", st)
	}

	old := c.WaitLeader()
	if old == at {
		t.Fatal("the test's clients talk to the leader")
	}
	c.Kill(old)
	c.WaitNewLeader(old)
	testcluster.WaitFor(t, 20*time.Second, func() (bool, string) {
		resp, err = p.apr(p.bob).Approve(ctx, &relv1.ApproveRolloutRequest{Id: id, Comment: "ok"})
		if err != nil {
			return false, err.Error()
		}
		return true, ""
	})
	if got := resp.GetRollout(); len(got.GetApprovals()) != 2 || got.GetApprovals()[0].GetComment() != "lgtm" {
		t.Fatalf("after bob: %v", got)
	}
	waitState(t, p.ctl(p.deployer), id, rollout.StateSucceeded)
}

// TestRejectExpireAndPolicyChange: a rejection ends a rollout with its
// reason; a rollout nobody approves in time fails by itself; a policy
// change refuses the approvals of rollouts requested before it.
func TestRejectExpireAndPolicyChange(t *testing.T) {
	c, _, p := changeControlCluster(t, 1)
	ctx := ctxT(t)
	admin := c.Admin(c.WaitLeader().GRPCAddr())
	setPolicy(t, admin, &relv1.ApprovalPolicy{Required: 1, Names: []string{"alice"}})
	for _, v := range []string{"1.0.0", "1.0.1", "1.0.2", "1.0.3"} {
		p.release(t, v)
	}

	ro := p.start(t, "1.0.0", "", "")
	_, err := p.apr(p.bob).Reject(ctx, &relv1.RejectRolloutRequest{Id: ro.GetId(), Comment: "no"})
	wantCode(t, "bob, not named, rejects", err, codes.PermissionDenied, "bob may not reject", "alice")
	_, err = p.apr(p.alice).Reject(ctx, &relv1.RejectRolloutRequest{Id: ro.GetId()})
	wantCode(t, "a rejection without comment", err, codes.InvalidArgument, "needs a comment")
	rj, err := p.apr(p.alice).Reject(ctx, &relv1.RejectRolloutRequest{Id: ro.GetId(), Comment: "not during the sale"})
	if err != nil {
		t.Fatal(err)
	}
	if r := rj.GetRollout(); r.GetState() != rollout.StateAborted || r.GetReason() != "rejected by alice: not during the sale" || r.GetRejectedBy().GetName() != "alice" {
		t.Fatalf("rejected: %v", r)
	}
	_, err = p.apr(p.alice).Approve(ctx, &relv1.ApproveRolloutRequest{Id: ro.GetId()})
	wantCode(t, "approving a rejected rollout", err, codes.FailedPrecondition, "not waiting for approval")

	// A policy change: the waiting rollout's approvals are refused.
	ro = p.start(t, "1.0.1", "", "")
	setPolicy(t, admin, &relv1.ApprovalPolicy{Required: 1, Names: []string{"alice"}, ExpiryMs: 2000})
	_, err = p.apr(p.alice).Approve(ctx, &relv1.ApproveRolloutRequest{Id: ro.GetId()})
	wantCode(t, "approval after a policy change", err, codes.FailedPrecondition, "policy changed", "request again")
	if _, err := p.apr(p.alice).Reject(ctx, &relv1.RejectRolloutRequest{Id: ro.GetId(), Comment: "stale"}); err != nil {
		t.Fatal(err)
	}

	// Expiry, 2 s: the leader ends it.
	ro = p.start(t, "1.0.2", "", "")
	st := waitState(t, p.ctl(p.deployer), ro.GetId(), rollout.StateFailed)
	if r := st.GetRollout().GetReason(); r != "approval expired after 2s (0 of 1 approvals)" {
		t.Fatalf("expired: %q", r)
	}
	_, err = p.apr(p.alice).Approve(ctx, &relv1.ApproveRolloutRequest{Id: ro.GetId()})
	wantCode(t, "approval after expiry", err, codes.FailedPrecondition, "not waiting for approval")

	// The named approver starts the next one.
	ro = p.start(t, "1.0.3", "", "")
	if _, err := p.apr(p.alice).Approve(ctx, &relv1.ApproveRolloutRequest{Id: ro.GetId()}); err != nil {
		t.Fatal(err)
	}
	waitState(t, p.ctl(p.deployer), ro.GetId(), rollout.StateSucceeded)
}

// TestChangeTypes: standard changes skip approvals only where allowed;
// emergency changes need the permission and a reason, wait for one
// approval and stay open for review until an approver reviews them.
func TestChangeTypes(t *testing.T) {
	c, _, p := changeControlCluster(t, 1)
	ctx := ctxT(t)
	admin := c.Admin(c.WaitLeader().GRPCAddr())
	setPolicy(t, admin, &relv1.ApprovalPolicy{Required: 2, Roles: []string{"approver"}})
	for _, v := range []string{"1.0.0", "1.0.1", "1.0.2"} {
		p.release(t, v)
	}
	start := func(conn *grpc.ClientConn, version, change, reason string) (*relv1.StartRolloutResponse, error) {
		return p.ctl(conn).StartRollout(ctx, &relv1.StartRolloutRequest{App: "web", Version: version, Environment: "prod", ChangeType: change, ChangeReason: reason})
	}
	_, err := start(p.deployer, "1.0.0", "standard", "")
	wantCode(t, "a standard change where not allowed", err, codes.FailedPrecondition, "does not allow standard changes")
	_, err = start(p.deployer, "1.0.0", "urgent", "")
	wantCode(t, "an unknown change type", err, codes.InvalidArgument, `change type "urgent"`)
	_, err = start(p.deployer, "1.0.0", "emergency", "outage")
	wantCode(t, "an emergency by a deployer", err, codes.PermissionDenied, "needs the emergency permission")
	_, err = start(p.ops, "1.0.0", "emergency", "")
	wantCode(t, "an emergency without reason", err, codes.InvalidArgument, "needs a reason")

	em, err := start(p.ops, "1.0.0", "emergency", "checkout is down")
	if err != nil {
		t.Fatal(err)
	}
	ro := em.GetRollout()
	if ro.GetState() != rollout.StateAwaitingApproval || ro.GetApprovalPolicy().GetRequired() != 1 || ro.GetChangeType() != "emergency" || ro.GetChangeReason() != "checkout is down" {
		t.Fatalf("emergency: %v", ro)
	}
	if _, err := p.apr(p.alice).Approve(ctx, &relv1.ApproveRolloutRequest{Id: ro.GetId()}); err != nil {
		t.Fatal(err)
	}
	waitState(t, p.ctl(p.deployer), ro.GetId(), rollout.StateSucceeded)
	open, err := p.apr(p.deployer).Reviews(ctx, &relv1.ListReviewsRequest{Open: true})
	if err != nil || len(open.GetRollouts()) != 1 || open.GetRollouts()[0].GetId() != ro.GetId() {
		t.Fatalf("open reviews: %v %v", open, err)
	}
	_, err = p.apr(p.deployer).Review(ctx, &relv1.ReviewRolloutRequest{Id: ro.GetId()})
	wantCode(t, "a review by a deployer", err, codes.PermissionDenied)
	if _, err := p.apr(p.bob).Review(ctx, &relv1.ReviewRolloutRequest{Id: ro.GetId(), Comment: "needed"}); err != nil {
		t.Fatal(err)
	}
	_, err = p.apr(p.alice).Review(ctx, &relv1.ReviewRolloutRequest{Id: ro.GetId()})
	wantCode(t, "a second review", err, codes.FailedPrecondition, "reviewed already by bob")
	if open, _ := p.apr(p.deployer).Reviews(ctx, &relv1.ListReviewsRequest{Open: true}); len(open.GetRollouts()) != 0 {
		t.Fatalf("still open: %v", open)
	}

	// Allowed: a standard change starts at once.
	setPolicy(t, admin, &relv1.ApprovalPolicy{Required: 2, Roles: []string{"approver"}, AllowStandard: true})
	std, err := start(p.deployer, "1.0.1", "standard", "")
	if err != nil {
		t.Fatal(err)
	}
	if std.GetRollout().GetState() == rollout.StateAwaitingApproval {
		t.Fatalf("standard change waits: %v", std.GetRollout())
	}
	waitState(t, p.ctl(p.deployer), std.GetRollout().GetId(), rollout.StateSucceeded)
}

// TestApprovalPolicyBadInput: bad policies are refused with what to do,
// and change nothing.
func TestApprovalPolicyBadInput(t *testing.T) {
	c, _, p := changeControlCluster(t, 1)
	ctx := ctxT(t)
	admin := relv1.NewApprovalServiceClient(c.Admin(c.WaitLeader().GRPCAddr()))
	for _, tc := range []struct {
		name string
		req  *relv1.SetApprovalPolicyRequest
		code codes.Code
		want string
	}{
		{"unknown environment", &relv1.SetApprovalPolicyRequest{Environment: "qa", Policy: &relv1.ApprovalPolicy{Required: 1, Roles: []string{"approver"}}}, codes.NotFound, `"qa"`},
		{"unknown role", &relv1.SetApprovalPolicyRequest{Environment: "prod", Policy: &relv1.ApprovalPolicy{Required: 1, Roles: []string{"boss"}}}, codes.InvalidArgument, "role:boss"},
		{"more required than approvers", &relv1.SetApprovalPolicyRequest{Environment: "prod", Policy: &relv1.ApprovalPolicy{Required: 3, Names: []string{"alice", "bob"}}}, codes.InvalidArgument, "3 approvals required but only 2"},
		{"eleven", &relv1.SetApprovalPolicyRequest{Environment: "prod", Policy: &relv1.ApprovalPolicy{Required: 11, Roles: []string{"approver"}}}, codes.InvalidArgument, "give 1-10"},
		{"nothing", &relv1.SetApprovalPolicyRequest{Environment: "prod"}, codes.InvalidArgument, "no policy given"},
	} {
		_, err := admin.SetPolicy(ctx, tc.req)
		wantCode(t, tc.name, err, tc.code, tc.want)
	}
	_, err := p.apr(p.deployer).SetPolicy(ctx, &relv1.SetApprovalPolicyRequest{Environment: "prod", Policy: &relv1.ApprovalPolicy{Required: 1, Roles: []string{"approver"}}})
	wantCode(t, "a deployer sets a policy", err, codes.PermissionDenied)
	envs, err := p.ctl(p.deployer).ListEnvironments(ctx, &relv1.ListEnvironmentsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range envs.GetEnvironments() {
		if e.GetApprovalPolicy() != nil || e.GetApprovalPolicyVersion() != 0 {
			t.Fatalf("bad input changed %v", e)
		}
	}
}

// TestWaveGatesUnderPolicy: between-wave gates of a rollout requested
// under a policy follow it: approvers only, distinct people, the required
// count per wave; the deployer's old-style approve is refused.
func TestWaveGatesUnderPolicy(t *testing.T) {
	c, at, p := changeControlCluster(t, 1)
	ctx := ctxT(t)
	for _, id := range []string{"web-2", "web-3"} {
		startAutoAgent(t, at, id, map[string]string{"env": "prod"}, nil)
	}
	waitFor(t, "three agents", func() bool {
		st, _, err := at.Server().Store().Agents(nil)
		return err == nil && len(st) == 3
	})
	setPolicy(t, c.Admin(c.WaitLeader().GRPCAddr()), &relv1.ApprovalPolicy{Required: 2, Roles: []string{"approver"}})
	p.release(t, "1.0.0")
	resp, err := p.ctl(p.deployer).StartRollout(ctx, &relv1.StartRolloutRequest{App: "web", Version: "1.0.0", Environment: "prod",
		Spec: &relv1.RolloutSpec{Strategy: "canary", ApproveWaves: true}})
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetRollout().GetId()
	for _, who := range []*grpc.ClientConn{p.alice, p.bob} {
		if _, err := p.apr(who).Approve(ctx, &relv1.ApproveRolloutRequest{Id: id}); err != nil {
			t.Fatal(err)
		}
	}
	waitState(t, p.ctl(p.deployer), id, rollout.StateWaitingApproval)
	_, err = p.ctl(p.deployer).ControlRollout(ctx, &relv1.ControlRolloutRequest{Id: id, Action: "approve", Wave: 1})
	wantCode(t, "the deployer approves a wave under a policy", err, codes.PermissionDenied, "approval policy")
	_, err = p.apr(p.alice).Approve(ctx, &relv1.ApproveRolloutRequest{Id: id, Wave: 2})
	wantCode(t, "the wrong wave", err, codes.FailedPrecondition, "--wave 1")
	if _, err := p.apr(p.alice).Approve(ctx, &relv1.ApproveRolloutRequest{Id: id, Wave: 1}); err != nil {
		t.Fatal(err)
	}
	_, err = p.apr(p.alice).Approve(ctx, &relv1.ApproveRolloutRequest{Id: id, Wave: 1})
	wantCode(t, "alice twice at the wave", err, codes.FailedPrecondition, "alice already approved")
	if st := waitState(t, p.ctl(p.deployer), id, rollout.StateWaitingApproval); st.GetRollout().GetApprovedWave() != 0 {
		t.Fatalf("one approval opened the gate: %v", st.GetRollout())
	}
	pending, err := p.apr(p.deployer).Pending(ctx, &relv1.PendingApprovalsRequest{Environment: "prod"})
	if err != nil || len(pending.GetPending()) != 1 || pending.GetPending()[0].GetWave() != 1 || pending.GetPending()[0].GetApproved() != 1 {
		t.Fatalf("pending at the gate: %v %v", pending, err)
	}
	if _, err := p.apr(p.bob).Approve(ctx, &relv1.ApproveRolloutRequest{Id: id, Wave: 1}); err != nil {
		t.Fatal(err)
	}
	waitState(t, p.ctl(p.deployer), id, rollout.StateSucceeded)
}
