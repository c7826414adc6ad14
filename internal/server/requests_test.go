package server_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/relhq/rel/internal/testcluster"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// withRequestID is a context whose calls carry request id id, as relctl
// sends it on every attempt of a request.
func withRequestID(t *testing.T, id string) context.Context {
	return metadata.AppendToOutgoingContext(ctxT(t), "rel-request-id", id)
}

// prodAgents starts n agents of environment prod, spread over nodes, and
// waits until the leader's replica has them connected (a rollout selects
// the connected ones).
func prodAgents(t *testing.T, c *testcluster.Cluster, nodes []*testcluster.Node, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		startAutoAgent(t, nodes[i%len(nodes)], fmt.Sprintf("h%d", i), map[string]string{"env": "prod"}, nil)
	}
	testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
		agents, _, _ := c.WaitLeader().Server().Store().Agents(nil)
		up := 0
		for _, a := range agents {
			if a.GetConnected() {
				up++
			}
		}
		return up == n, fmt.Sprintf("%d of %d agents connected", up, n)
	})
}

// TestRetriedRequestsActOnce: a create, a start and a rollback sent again
// with the same request id (through a follower, which forwards them to
// the leader, or to the leader itself) are answered with what the first
// attempt made: the same app, rollout and rollback, not AlreadyExists or
// a refusal, and nothing is made twice.
func TestRetriedRequestsActOnce(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{Configure: fastAgents})
	leader := c.WaitLeader()
	fs := c.Followers()
	lctl, fctl := dial(t, leader), dial(t, fs[0])

	app, err := fctl.CreateApp(withRequestID(t, "rq-app"), &relv1.CreateAppRequest{Name: "web"})
	if err != nil {
		t.Fatal(err)
	}
	again, err := fctl.CreateApp(withRequestID(t, "rq-app"), &relv1.CreateAppRequest{Name: "web"})
	if err != nil || again.GetIndex() != app.GetIndex() || again.GetApp().GetCreateIndex() != app.GetIndex() {
		t.Fatalf("create sent again: %v, %v; want the first answer (index %d)", again, err, app.GetIndex())
	}
	if _, err := fctl.CreateApp(withRequestID(t, "rq-app-2"), &relv1.CreateAppRequest{Name: "web"}); status.Code(err) != codes.AlreadyExists {
		t.Fatalf("another request creating web: %v, want AlreadyExists", err)
	}
	for _, v := range []string{"1.0.0", "2.0.0"} {
		if _, err := lctl.CreateRelease(ctxT(t), &relv1.CreateReleaseRequest{App: "web", Version: v, ArtifactUrl: "https://a.example.com/web-" + v + ".tgz", Sha256: digest(v)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := lctl.CreateEnvironment(ctxT(t), &relv1.CreateEnvironmentRequest{Name: "prod", Selector: map[string]string{"env": "prod"}}); err != nil {
		t.Fatal(err)
	}
	prodAgents(t, c, fs, 3)

	rollouts := func() int {
		t.Helper()
		resp, err := lctl.ListRollouts(ctxT(t), &relv1.ListRolloutsRequest{Read: &relv1.ReadOptions{Consistent: true}})
		if err != nil {
			t.Fatal(err)
		}
		return len(resp.GetRollouts())
	}
	start := func(ctl relv1.ControlServiceClient, id, version string) *relv1.StartRolloutResponse {
		t.Helper()
		resp, err := ctl.StartRollout(withRequestID(t, id), &relv1.StartRolloutRequest{App: "web", Version: version, Environment: "prod",
			Spec: &relv1.RolloutSpec{Strategy: "rolling", Waves: []*relv1.Quantity{{Count: 1}, {Percent: 100}}}})
		if err != nil {
			t.Fatalf("start %s (request %s): %v", version, id, err)
		}
		return resp
	}
	first := start(fctl, "rq-start-1", "1.0.0")
	for _, ctl := range []relv1.ControlServiceClient{fctl, lctl} {
		again := start(ctl, "rq-start-1", "1.0.0")
		if again.GetRollout().GetId() != first.GetRollout().GetId() || again.GetIndex() != first.GetIndex() {
			t.Fatalf("start sent again answered rollout %s at %d, want %s at %d", again.GetRollout().GetId(), again.GetIndex(), first.GetRollout().GetId(), first.GetIndex())
		}
	}
	waitState(t, lctl, first.GetRollout().GetId(), "succeeded")
	// Sent again once the rollout is over: still the first answer, not a
	// second rollout of 1.0.0.
	if again := start(lctl, "rq-start-1", "1.0.0"); again.GetRollout().GetId() != first.GetRollout().GetId() || again.GetRollout().GetState() != "succeeded" {
		t.Fatalf("start sent again after the rollout ended: %v", again.GetRollout())
	}
	if n := rollouts(); n != 1 {
		t.Fatalf("%d rollouts after one start sent four times", n)
	}

	second := start(lctl, "rq-start-2", "2.0.0")
	waitState(t, lctl, second.GetRollout().GetId(), "succeeded")
	rollback := func(ctl relv1.ControlServiceClient, id string) (*relv1.RollbackRolloutResponse, error) {
		return ctl.RollbackRollout(withRequestID(t, id), &relv1.RollbackRolloutRequest{Id: second.GetRollout().GetId()})
	}
	rb, err := rollback(fctl, "rq-rollback")
	if err != nil {
		t.Fatal(err)
	}
	for _, ctl := range []relv1.ControlServiceClient{fctl, lctl} {
		again, err := rollback(ctl, "rq-rollback")
		if err != nil || again.GetRollback().GetId() != rb.GetRollback().GetId() || again.GetIndex() != rb.GetIndex() {
			t.Fatalf("rollback sent again: %v, %v; want rollback %s at %d", again.GetRollback(), err, rb.GetRollback().GetId(), rb.GetIndex())
		}
	}
	// Another request is a second rollback, which is refused.
	if _, err := rollback(lctl, "rq-rollback-2"); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("a second rollback: %v, want FailedPrecondition", err)
	}
	waitState(t, lctl, rb.GetRollback().GetId(), "succeeded")
	if n := rollouts(); n != 3 {
		t.Fatalf("%d rollouts, want 3 (two starts, one rollback)", n)
	}
}

// TestRetriedApproveOpensOneGate: an approve sent again after the engine
// moved on to the next gate opens nothing; approves name their wave, and
// any other than the one waiting is refused.
func TestRetriedApproveOpensOneGate(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{Configure: fastAgents})
	leader := c.WaitLeader()
	fs := c.Followers()
	lctl, fctl := dial(t, leader), dial(t, fs[0])
	setupApp(t, lctl, "1.0.0")
	prodAgents(t, c, fs, 3)

	start, err := lctl.StartRollout(ctxT(t), &relv1.StartRolloutRequest{App: "web", Version: "1.0.0", Environment: "prod",
		Spec: &relv1.RolloutSpec{Strategy: "rolling", Waves: []*relv1.Quantity{{Count: 1}, {Count: 2}, {Percent: 100}}, ApproveWaves: true}})
	if err != nil {
		t.Fatal(err)
	}
	id := start.GetRollout().GetId()
	gate := func(wave uint32) {
		t.Helper()
		testcluster.WaitFor(t, 20*time.Second, func() (bool, string) {
			ro := waitState(t, lctl, id, "waiting_approval").GetRollout()
			return ro.GetCurrentWave() == wave, fmt.Sprintf("waiting after wave index %d, want %d", ro.GetCurrentWave(), wave)
		})
	}
	control := func(ctl relv1.ControlServiceClient, reqID, action string, wave uint32) (*relv1.ControlRolloutResponse, error) {
		return ctl.ControlRollout(withRequestID(t, reqID), &relv1.ControlRolloutRequest{Id: id, Action: action, Wave: wave})
	}

	gate(0) // wave 1 of 3 done: wave 2 waits
	wantCode(t, "approve naming no wave", func() error { _, err := control(fctl, "rq-0", "approve", 0); return err }(), codes.InvalidArgument, "approve names the wave it approves")
	wantCode(t, "approve of wave 3 while wave 2 waits", func() error { _, err := control(fctl, "rq-1", "approve", 3); return err }(), codes.FailedPrecondition,
		"cannot approve wave 3 of rollout "+id+": it waits for approval of wave 2 of 3 (--wave 2)")
	wantCode(t, "pause naming a wave", func() error { _, err := control(fctl, "rq-2", "pause", 2); return err }(), codes.InvalidArgument, "only approve names a wave")

	first, err := control(fctl, "rq-approve", "approve", 2)
	if err != nil {
		t.Fatal(err)
	}
	gate(1) // wave 2 done: wave 3 waits
	// The approve sent again (relctl after an Unavailable answer, through
	// the follower or straight to the leader) opens nothing.
	for _, ctl := range []relv1.ControlServiceClient{fctl, lctl} {
		again, err := control(ctl, "rq-approve", "approve", 2)
		if err != nil || again.GetIndex() != first.GetIndex() {
			t.Fatalf("approve sent again: %v, %v; want the first answer (index %d)", again, err, first.GetIndex())
		}
	}
	time.Sleep(300 * time.Millisecond) // time enough for the engine to dispatch, were the gate open
	ro := waitState(t, lctl, id, "waiting_approval").GetRollout()
	if ro.GetCurrentWave() != 1 || ro.GetApprovedWave() != 1 {
		t.Fatalf("after the repeated approve: wave index %d, approved %d; want the gate of wave 3 closed", ro.GetCurrentWave(), ro.GetApprovedWave())
	}
	// A new approve of wave 2 (another invocation) is told it is late.
	wantCode(t, "approve of wave 2 again", func() error { _, err := control(fctl, "rq-3", "approve", 2); return err }(), codes.FailedPrecondition,
		"cannot approve wave 2 of rollout "+id+": wave 2 of 3 was approved already; it waits for approval of wave 3 of 3 (--wave 3)")
	// The approve's id on another request is refused.
	wantCode(t, "the approve's request id on a pause", func() error { _, err := control(fctl, "rq-approve", "pause", 0); return err }(), codes.InvalidArgument,
		`request id "rq-approve" was used at index`)

	if _, err := control(lctl, "rq-4", "approve", 3); err != nil {
		t.Fatal(err)
	}
	waitState(t, lctl, id, "succeeded")
	var approved []string
	for _, e := range events(t, lctl, id) {
		if e.GetType() == "approved" {
			approved = append(approved, e.GetMessage())
		}
	}
	if strings.Join(approved, "; ") != "approved wave 2 of 3; approved wave 3 of 3" {
		t.Errorf("approvals recorded: %q", approved)
	}
}

// TestForwardedCommandSentAgainAfterLeaderChange: a server forwards a
// command to the leader, which commits it and dies before answering; the
// server sends the same bytes to the next leader, which answers with the
// first answer instead of applying it again (or answering AlreadyExists).
func TestForwardedCommandSentAgainAfterLeaderChange(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{})
	leader := c.WaitLeader()
	c.WaitMembers(3)
	fwd := c.Followers()[0]
	b, err := proto.Marshal(&relv1.Command{StampedUnixNano: time.Now().UnixNano(), RequestId: "rq-forwarded",
		Kind: &relv1.Command_CreateApp{CreateApp: &relv1.CreateApp{App: &relv1.App{Name: "web", CreatedUnixNano: time.Now().UnixNano()}}}})
	if err != nil {
		t.Fatal(err)
	}
	send := func(to *testcluster.Node) (*relv1.ApplyResponse, error) {
		cc := relv1.NewClusterServiceClient(idConn(t, c, to.GRPCAddr(), testcluster.ServerID(fwd.ID)))
		return cc.Apply(metadata.AppendToOutgoingContext(ctxT(t), "rel-forwarded", "1"), &relv1.ApplyRequest{Command: b})
	}
	first, err := send(leader)
	if err != nil || first.GetDuplicate() {
		t.Fatalf("first apply: %v, %v", first, err)
	}
	// The leader's answer is lost: it dies; the forwarding server waits
	// for the next leader and sends the command again.
	c.Kill(leader)
	next := c.WaitNewLeader(leader)
	again, err := send(next)
	if err != nil || !again.GetDuplicate() || again.GetIndex() != first.GetIndex() {
		t.Fatalf("apply sent again to the new leader: %v, %v; want the first answer (index %d) marked duplicate", again, err, first.GetIndex())
	}
	apps, err := dial(t, next).ListApps(ctxT(t), &relv1.ListAppsRequest{Read: &relv1.ReadOptions{Consistent: true}})
	if err != nil || len(apps.GetApps()) != 1 || apps.GetApps()[0].GetCreateIndex() != first.GetIndex() {
		t.Fatalf("apps after the command was sent twice: %v, %v", apps.GetApps(), err)
	}
}

// TestBadRequestID: a request id that is not 1-64 printable characters is
// refused before anything is done.
func TestBadRequestID(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{})
	ctl := dial(t, c.WaitLeader())
	// (gRPC itself refuses to send other characters than printable ASCII.)
	for _, id := range []string{strings.Repeat("x", 65), "has space"} {
		_, err := ctl.CreateApp(withRequestID(t, id), &relv1.CreateAppRequest{Name: "web"})
		wantCode(t, fmt.Sprintf("request id %q", id), err, codes.InvalidArgument, "request id (rel-request-id metadata)")
	}
	ctx := metadata.AppendToOutgoingContext(ctxT(t), "rel-request-id", "a", "rel-request-id", "b")
	_, err := ctl.CreateApp(ctx, &relv1.CreateAppRequest{Name: "web"})
	wantCode(t, "two request ids", err, codes.InvalidArgument, "2 request ids")
	if apps, _, _ := c.Nodes[0].Server().Store().Apps(nil); len(apps) != 0 {
		t.Errorf("a refused request created %v", apps)
	}
}
