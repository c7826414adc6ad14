package server_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/relhq/rel/internal/testcluster"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

func waitAgents(t *testing.T, ctl relv1.ControlServiceClient, env string, n int) {
	t.Helper()
	testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
		resp, err := ctl.ListAgents(ctxT(t), &relv1.ListAgentsRequest{Environment: env})
		if err != nil {
			return false, err.Error()
		}
		up := 0
		for _, a := range resp.GetAgents() {
			if a.GetAgent().GetConnected() {
				up++
			}
		}
		return up == n, fmt.Sprintf("%d connected agents in %s, want %d", up, env, n)
	})
}

// TestLifecyclePromotion: on a 3-server cluster, through a follower, a
// release cannot go to prod until staging has a succeeded rollout of the
// same artifact digest (another version of it counts); rolling staging
// back un-promotes it; a blocked release cannot be promoted, naming the
// reason, but a rollback is still allowed.
func TestLifecyclePromotion(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{Configure: fastAgents})
	c.WaitLeader()
	f := c.Followers()[0]
	ctl, lcs := dial(t, f), relv1.NewLifecycleServiceClient(f.Admin())
	ctx := ctxT(t)
	for _, e := range []string{"staging", "prod"} {
		if _, err := ctl.CreateEnvironment(ctx, &relv1.CreateEnvironmentRequest{Name: e, Selector: map[string]string{"env": e}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := lcs.CreateLifecycle(ctx, &relv1.CreateLifecycleRequest{Lifecycle: &relv1.Lifecycle{Name: "std", Phases: []*relv1.Phase{
		{Name: "staging", Environments: []string{"staging"}, Progress: "all"},
		{Name: "prod", Environments: []string{"prod"}, Progress: "all"},
	}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := ctl.CreateApp(ctx, &relv1.CreateAppRequest{Name: "web", Lifecycle: "std"}); err != nil {
		t.Fatal(err)
	}
	d1 := digest("build-1")
	for _, r := range []struct{ v, sha string }{{"0.9.0", digest("build-0")}, {"1.0.0", d1}, {"1.0.0-rebuilt", d1}} {
		if _, err := ctl.CreateRelease(ctx, &relv1.CreateReleaseRequest{App: "web", Version: r.v, ArtifactUrl: "https://a.example.com/web-" + r.v + ".tgz", Sha256: r.sha}); err != nil {
			t.Fatal(err)
		}
	}
	startAutoAgent(t, c.Nodes[0], "stg-1", map[string]string{"env": "staging"}, nil)
	startAutoAgent(t, c.Nodes[1], "prd-1", map[string]string{"env": "prod"}, nil)
	waitAgents(t, ctl, "staging", 1)
	waitAgents(t, ctl, "prod", 1)

	promote := func(version, env string) (*relv1.StartRolloutResponse, error) {
		return lcs.PromoteRelease(ctx, &relv1.PromoteReleaseRequest{App: "web", Version: version, Environment: env})
	}
	_, err := promote("1.0.0", "prod")
	wantCode(t, "prod first", err, codes.FailedPrecondition,
		"web@1.0.0 cannot go to prod: phase staging is not done: no succeeded rollout of sha256:"+d1[:12]+"… to staging (need 1 of 1)")
	// rollout start is the same path.
	_, err = ctl.StartRollout(ctx, &relv1.StartRolloutRequest{App: "web", Version: "1.0.0", Environment: "prod"})
	wantCode(t, "rollout start to prod first", err, codes.FailedPrecondition, "phase staging is not done")
	plan, err := ctl.PlanRollout(ctx, &relv1.PlanRolloutRequest{App: "web", Version: "1.0.0", Environment: "prod"})
	if err != nil || len(plan.GetBlockers()) == 0 || !strings.Contains(plan.GetBlockers()[0], "phase staging is not done") {
		t.Fatalf("plan to prod first: %v %v, want the gate as a blocker", plan.GetBlockers(), err)
	}

	r0, err := promote("0.9.0", "staging")
	if err != nil {
		t.Fatal(err)
	}
	waitState(t, ctl, r0.GetRollout().GetId(), "succeeded")
	r1, err := promote("1.0.0", "staging")
	if err != nil {
		t.Fatal(err)
	}
	if st := waitState(t, ctl, r1.GetRollout().GetId(), "succeeded"); st.GetRollout().GetRequestedBy().GetId() == "" {
		t.Errorf("promoted rollout has no requester: %v", st.GetRollout())
	}

	st, err := lcs.ReleaseStatus(ctx, &relv1.ReleaseStatusRequest{App: "web", Version: "1.0.0-rebuilt"})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(st.GetNext(), ","); got != "prod" || len(st.GetBlockers()) != 0 {
		t.Fatalf("status of the rebuilt release: next %q blockers %v, want prod and none", got, st.GetBlockers())
	}
	if e := st.GetPhases()[0].GetEnvironments()[0]; e.GetState() != "succeeded" || e.GetVersion() != "1.0.0" || e.GetRolloutId() != r1.GetRollout().GetId() {
		t.Fatalf("staging progress %v", e)
	}

	// The same digest under another version goes to prod.
	r2, err := promote("1.0.0-rebuilt", "prod")
	if err != nil {
		t.Fatalf("prod after staging: %v", err)
	}
	waitState(t, ctl, r2.GetRollout().GetId(), "succeeded")

	// Rolling staging back un-promotes the digest.
	rb, err := ctl.RollbackRollout(ctx, &relv1.RollbackRolloutRequest{Id: r1.GetRollout().GetId()})
	if err != nil {
		t.Fatal(err)
	}
	waitState(t, ctl, rb.GetRollback().GetId(), "succeeded")
	waitState(t, ctl, r1.GetRollout().GetId(), "rolled_back")
	_, err = promote("1.0.0", "prod")
	wantCode(t, "prod after the staging rollback", err, codes.FailedPrecondition, "phase staging is not done")
	st, err = lcs.ReleaseStatus(ctx, &relv1.ReleaseStatusRequest{App: "web", Version: "1.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	if e := st.GetPhases()[0].GetEnvironments()[0]; e.GetState() != "rolled_back" {
		t.Fatalf("staging after the rollback: %v", e)
	}
	if len(st.GetBlockers()) != 1 || !strings.Contains(st.GetBlockers()[0], "phase staging is not done") {
		t.Fatalf("blockers %v", st.GetBlockers())
	}

	// A blocked release: refused with who and why; rollbacks to a
	// blocked release still go.
	if _, err := lcs.BlockRelease(ctx, &relv1.BlockReleaseRequest{App: "web", Version: "1.0.0", Blocked: true, Reason: "CVE-2026-1234"}); err != nil {
		t.Fatal(err)
	}
	_, err = promote("1.0.0", "staging")
	wantCode(t, "blocked", err, codes.FailedPrecondition, "web@1.0.0 is blocked by client test-admin: CVE-2026-1234")
	if _, err := lcs.BlockRelease(ctx, &relv1.BlockReleaseRequest{App: "web", Version: "1.0.0", Blocked: false}); err != nil {
		t.Fatal(err)
	}
	r3, err := promote("1.0.0", "staging")
	if err != nil {
		t.Fatalf("after unblock: %v", err)
	}
	waitState(t, ctl, r3.GetRollout().GetId(), "succeeded")
	if _, err := lcs.BlockRelease(ctx, &relv1.BlockReleaseRequest{App: "web", Version: "0.9.0", Blocked: true, Reason: "old"}); err != nil {
		t.Fatal(err)
	}
	rb2, err := ctl.RollbackRollout(ctx, &relv1.RollbackRolloutRequest{Id: r3.GetRollout().GetId()})
	if err != nil {
		t.Fatalf("rollback to a blocked release: %v", err)
	}
	waitState(t, ctl, rb2.GetRollback().GetId(), "succeeded")
}

// TestLifecycleAutoDeploy: a release whose digest completes phase dev is
// rolled out to phase qa's auto-deploy environment by the leader, once.
func TestLifecycleAutoDeploy(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{Configure: fastAgents})
	c.WaitLeader()
	ctl, lcs := dial(t, c.Nodes[0]), relv1.NewLifecycleServiceClient(c.Nodes[0].Admin())
	ctx := ctxT(t)
	for _, e := range []string{"dev", "qa", "prod"} {
		if _, err := ctl.CreateEnvironment(ctx, &relv1.CreateEnvironmentRequest{Name: e, Selector: map[string]string{"env": e}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ctl.CreateApp(ctx, &relv1.CreateAppRequest{Name: "api"}); err != nil {
		t.Fatal(err)
	}
	if _, err := lcs.CreateLifecycle(ctx, &relv1.CreateLifecycleRequest{Lifecycle: &relv1.Lifecycle{Name: "auto", Phases: []*relv1.Phase{
		{Name: "dev", Environments: []string{"dev"}, Progress: "all"},
		{Name: "qa", Environments: []string{"qa"}, Progress: "all", AutoDeploy: []string{"qa"}},
		{Name: "prod", Environments: []string{"prod"}, Progress: "all"},
	}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := lcs.SetAppLifecycle(ctx, &relv1.SetAppLifecycleRequest{App: "api", Lifecycle: "auto"}); err != nil {
		t.Fatal(err)
	}
	if _, err := ctl.CreateRelease(ctx, &relv1.CreateReleaseRequest{App: "api", Version: "2.0.0", ArtifactUrl: "https://a.example.com/api.tgz", Sha256: digest("api-2")}); err != nil {
		t.Fatal(err)
	}
	startAutoAgent(t, c.Nodes[0], "dev-1", map[string]string{"env": "dev"}, nil)
	qa := startAutoAgent(t, c.Nodes[1], "qa-1", map[string]string{"env": "qa"}, nil)
	waitAgents(t, ctl, "dev", 1)
	waitAgents(t, ctl, "qa", 1)

	r, err := lcs.PromoteRelease(ctx, &relv1.PromoteReleaseRequest{App: "api", Version: "2.0.0", Environment: "dev"})
	if err != nil {
		t.Fatal(err)
	}
	waitState(t, ctl, r.GetRollout().GetId(), "succeeded")
	qaRollouts := func() []*relv1.Rollout {
		resp, err := ctl.ListRollouts(ctx, &relv1.ListRolloutsRequest{App: "api", Environment: "qa"})
		if err != nil {
			t.Fatal(err)
		}
		var out []*relv1.Rollout
		for _, st := range resp.GetRollouts() {
			out = append(out, st.GetRollout())
		}
		return out
	}
	var auto *relv1.Rollout
	testcluster.WaitFor(t, 20*time.Second, func() (bool, string) {
		ros := qaRollouts()
		if len(ros) == 0 {
			return false, "no rollout to qa yet"
		}
		auto = ros[0]
		return auto.GetState() == "succeeded", fmt.Sprintf("%d rollouts to qa, the newest %s", len(ros), auto.GetState())
	})
	if auto.GetVersion() != "2.0.0" || auto.GetRequestedBy() != nil {
		t.Fatalf("auto-deploy rollout %v: want api@2.0.0 requested by the cluster", auto)
	}
	if qa.count("api@2.0.0") != 1 {
		t.Fatalf("qa installed api@2.0.0 %d times", qa.count("api@2.0.0"))
	}
	// Deploying to dev again re-enters qa: no second auto-deploy.
	r2, err := lcs.PromoteRelease(ctx, &relv1.PromoteReleaseRequest{App: "api", Version: "2.0.0", Environment: "dev"})
	if err != nil {
		t.Fatal(err)
	}
	waitState(t, ctl, r2.GetRollout().GetId(), "succeeded")
	deadline := time.Now().Add(time.Second)
	for time.Now().Before(deadline) {
		if n := len(qaRollouts()); n != 1 {
			t.Fatalf("%d rollouts to qa, want the one auto-deploy", n)
		}
		time.Sleep(100 * time.Millisecond)
	}
	st, err := lcs.ReleaseStatus(ctx, &relv1.ReleaseStatusRequest{App: "api", Version: "2.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(st.GetNext(), ","); got != "prod" {
		t.Fatalf("next %q, want prod", got)
	}
}

// TestLifecycleBadInput: each bad lifecycle or app lifecycle is refused
// with a clear message, and nothing is written.
func TestLifecycleBadInput(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{})
	leader := c.WaitLeader()
	f := c.Followers()[0]
	ctl, lcs := dial(t, f), relv1.NewLifecycleServiceClient(f.Admin())
	ctx := ctxT(t)
	for _, e := range []string{"dev", "prod"} {
		if _, err := ctl.CreateEnvironment(ctx, &relv1.CreateEnvironmentRequest{Name: e, Selector: map[string]string{"env": e}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ctl.CreateApp(ctx, &relv1.CreateAppRequest{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	phase := func(name, progress string, min uint32, envs ...string) *relv1.Phase {
		return &relv1.Phase{Name: name, Environments: envs, Progress: progress, MinEnvironments: min}
	}
	create := func(phases ...*relv1.Phase) func() error {
		return func() error {
			_, err := lcs.CreateLifecycle(ctx, &relv1.CreateLifecycleRequest{Lifecycle: &relv1.Lifecycle{Name: "std", Phases: phases}})
			return err
		}
	}
	before := leader.Server().Store().LatestIndex()
	tests := []struct {
		name string
		call func() error
		code codes.Code
		msg  string
	}{
		{"unknown environment", create(phase("dev", "all", 0, "dev"), phase("prod", "all", 0, "prod", "prod-us")),
			codes.NotFound, "lifecycle std names unknown environments prod-us: create them first"},
		{"environment in two phases", create(phase("dev", "all", 0, "dev"), phase("prod", "all", 0, "prod", "dev")),
			codes.InvalidArgument, "environment dev is in two phases, dev and prod: an environment belongs to one phase of a lifecycle"},
		{"duplicate phase names", create(phase("dev", "all", 0, "dev"), phase("dev", "all", 0, "prod")),
			codes.InvalidArgument, "phase dev appears twice in lifecycle std: give every phase its own name"},
		{"min above size", create(phase("dev", "min", 2, "dev"), phase("prod", "all", 0, "prod")),
			codes.InvalidArgument, "phase dev needs min 2 of its 1 environments (dev): use 1 to 1"},
		{"empty phase", create(phase("dev", "all", 0), phase("prod", "all", 0, "prod")),
			codes.InvalidArgument, "phase dev has no environments: list at least one"},
		{"no phases", create(), codes.InvalidArgument, "lifecycle std has no phases"},
		{"unknown lifecycle on app create", func() error {
			_, err := ctl.CreateApp(ctx, &relv1.CreateAppRequest{Name: "api", Lifecycle: "nope"})
			return err
		}, codes.NotFound, `lifecycle "nope" not found: 'relctl lifecycle list' shows them`},
		{"unknown lifecycle on app update", func() error {
			_, err := lcs.SetAppLifecycle(ctx, &relv1.SetAppLifecycleRequest{App: "web", Lifecycle: "nope"})
			return err
		}, codes.NotFound, `lifecycle "nope" not found`},
		{"block without reason", func() error {
			_, err := lcs.BlockRelease(ctx, &relv1.BlockReleaseRequest{App: "web", Version: "1.0.0", Blocked: true})
			return err
		}, codes.InvalidArgument, "a block needs a reason"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			wantCode(t, tc.name, tc.call(), tc.code, tc.msg)
		})
	}
	if after := leader.Server().Store().LatestIndex(); after != before {
		t.Fatalf("bad input changed the state: index %d -> %d", before, after)
	}
	if _, err := ctl.CreateApp(ctx, &relv1.CreateAppRequest{Name: "api"}); err != nil {
		t.Fatalf("app api after the refused create: %v", err)
	}

	// An environment in a lifecycle refuses deletion; a lifecycle in use too.
	if err := create(phase("dev", "all", 0, "dev"), phase("prod", "all", 0, "prod"))(); err != nil {
		t.Fatal(err)
	}
	_, err := ctl.DeleteEnvironment(ctx, &relv1.DeleteEnvironmentRequest{Name: "prod"})
	wantCode(t, "delete an environment in a lifecycle", err, codes.FailedPrecondition, `environment "prod" is in lifecycle(s) std`)
	if _, err := lcs.SetAppLifecycle(ctx, &relv1.SetAppLifecycleRequest{App: "web", Lifecycle: "std"}); err != nil {
		t.Fatal(err)
	}
	_, err = lcs.DeleteLifecycle(ctx, &relv1.DeleteLifecycleRequest{Name: "std"})
	wantCode(t, "delete a lifecycle in use", err, codes.FailedPrecondition, "lifecycle std is used by app(s) web")
}
