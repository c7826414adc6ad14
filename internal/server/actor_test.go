package server_test

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/relhq/rel/internal/testcluster"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// TestActorStamped: a release and a rollout record who asked for them, as
// the accepting server authenticated the caller, on every replica, also
// when a follower forwards the write; the request's fields cannot claim
// another author.
func TestActorStamped(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{})
	leader := c.WaitLeader()
	admin := relv1.NewControlServiceClient(c.Admin(leader.GRPCAddr()))
	ctx := ctxT(t)
	if _, err := admin.CreateApp(ctx, &relv1.CreateAppRequest{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CreateEnvironment(ctx, &relv1.CreateEnvironmentRequest{Name: "prod", Selector: map[string]string{"env": "prod"}}); err != nil {
		t.Fatal(err)
	}
	startAutoAgent(t, leader, "web-1", map[string]string{"env": "prod"}, nil)
	secret, accessor := createToken(t, c.Admin(leader.GRPCAddr()), "ci-pipeline", []string{"release-creator", "deployer"}, nil, 0)
	follower := c.Followers()[0]
	conn := tokenConn(t, c, follower.GRPCAddr(), secret)
	ctl := relv1.NewControlServiceClient(conn)
	waitFor(t, "the token on the follower", func() bool {
		_, err := relv1.NewACLServiceClient(conn).WhoAmI(ctx, &relv1.WhoAmIRequest{})
		return err == nil
	})
	if _, err := ctl.CreateRelease(ctx, &relv1.CreateReleaseRequest{App: "web", Version: "1.0.0",
		ArtifactUrl: "https://example.com/web.tar.gz", Sha256: digest("a")}); err != nil {
		t.Fatal(err)
	}
	want := &relv1.Actor{Kind: "token", Id: accessor, Name: "ci-pipeline"}
	for _, n := range c.Running() {
		waitFor(t, "the release on "+n.ID, func() bool {
			r, _, err := n.Server().Store().Release(nil, "web", "1.0.0")
			return err == nil && r != nil && proto.Equal(r.GetCreatedBy(), want)
		})
	}
	resp, err := ctl.StartRollout(ctx, &relv1.StartRolloutRequest{App: "web", Version: "1.0.0", Environment: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Running() {
		waitFor(t, "the rollout on "+n.ID, func() bool {
			r, err := n.Server().Store().Rollout(nil, resp.GetRollout().GetId())
			return err == nil && r != nil && proto.Equal(r.GetRequestedBy(), want)
		})
	}
	// The leader's own commands (a certificate of a server) carry none, and
	// an admin certificate is a client: its name is the id.
	if _, err := admin.CreateRelease(ctx, &relv1.CreateReleaseRequest{App: "web", Version: "1.0.1",
		ArtifactUrl: "https://example.com/web.tar.gz", Sha256: digest("b")}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the admin's release", func() bool {
		r, _, err := leader.Server().Store().Release(nil, "web", "1.0.1")
		return err == nil && r != nil && r.GetCreatedBy().GetKind() == "client" && r.GetCreatedBy().GetId() == testcluster.AdminID().ID
	})
}

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
