package server_test

import (
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/relhq/rel/internal/testcluster"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// TestPromoteUsesEnvironmentDefaultSpec: release promote rolls out with
// the environment's default spec (set by env update); without one, with
// rollout start's defaults; a default spec the planner would refuse is
// refused when it is set, and nothing changes.
func TestPromoteUsesEnvironmentDefaultSpec(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{Configure: fastAgents})
	n := c.WaitLeader()
	ctl := dial(t, n)
	ctx := ctxT(t)
	setupApp(t, ctl, "1.0.0", "2.0.0")
	for _, h := range []string{"h1", "h2"} {
		startAutoAgent(t, n, h, map[string]string{"env": "prod"}, nil)
	}
	lc := relv1.NewLifecycleServiceClient(c.Admin(n.GRPCAddr()))
	waitFor(t, "two agents in prod", func() bool {
		resp, err := ctl.ListAgents(ctx, &relv1.ListAgentsRequest{Environment: "prod"})
		return err == nil && len(resp.GetAgents()) == 2
	})

	first, err := lc.PromoteRelease(ctx, &relv1.PromoteReleaseRequest{App: "web", Version: "1.0.0", Environment: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	if s := first.GetRollout().GetSpec(); s.GetStrategy() != "all-at-once" {
		t.Fatalf("promote without a default spec: %v", s)
	}
	waitState(t, ctl, first.GetRollout().GetId(), "succeeded")

	bad := &relv1.RolloutSpec{Strategy: "sideways"}
	if _, err := ctl.UpdateEnvironment(ctx, &relv1.UpdateEnvironmentRequest{Name: "prod", DefaultSpec: bad}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("a bad default spec: %v, want InvalidArgument", err)
	}
	if _, err := ctl.CreateEnvironment(ctx, &relv1.CreateEnvironmentRequest{Name: "qa", Selector: map[string]string{"env": "qa"}, DefaultSpec: bad}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("an environment with a bad default spec: %v, want InvalidArgument", err)
	}
	envs, err := ctl.ListEnvironments(ctx, &relv1.ListEnvironmentsRequest{})
	if err != nil || len(envs.GetEnvironments()) != 1 || envs.GetEnvironments()[0].GetDefaultSpec() != nil {
		t.Fatalf("after the refusals: %v %v", envs, err)
	}

	rolling := &relv1.RolloutSpec{Strategy: "rolling", MaxParallel: 1, ProgressDeadlineMs: 60000}
	if _, err := ctl.UpdateEnvironment(ctx, &relv1.UpdateEnvironmentRequest{Name: "prod", DefaultSpec: rolling}); err != nil {
		t.Fatal(err)
	}
	second, err := lc.PromoteRelease(ctx, &relv1.PromoteReleaseRequest{App: "web", Version: "2.0.0", Environment: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	if s := second.GetRollout().GetSpec(); s.GetStrategy() != "rolling" || s.GetMaxParallel() != 1 || s.GetProgressDeadlineMs() != 60000 {
		t.Fatalf("promote with the default spec: %v", s)
	}
	waitState(t, ctl, second.GetRollout().GetId(), "succeeded")
}
