package server_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/relhq/rel/internal/auth"
	"github.com/relhq/rel/internal/testcluster"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// planned is the hosts a rollout plan of web@1.0.0 to env selects, sorted.
func planned(t *testing.T, ctl relv1.ControlServiceClient, env string) []string {
	t.Helper()
	resp, err := ctl.PlanRollout(ctxT(t), &relv1.PlanRolloutRequest{App: "web", Version: "1.0.0", Environment: env})
	if err != nil {
		t.Fatalf("plan: %v", err)
	}
	var out []string
	for _, w := range resp.GetWaves() {
		for _, h := range w.GetHosts() {
			out = append(out, h.GetAgentId())
		}
	}
	slices.Sort(out)
	return out
}

func strPtr(s string) *string { return &s }

// TestEnvUpdateSelector: through a follower, a dry run shows who joins and
// leaves and changes nothing; the update itself changes what a rollout
// plan selects; bad input is refused with what to do; the same request id
// sent again answers the first answer.
func TestEnvUpdateSelector(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{Configure: fastAgents})
	c.WaitLeader()
	fs := c.Followers()
	ctl := dial(t, fs[0])
	setupApp(t, ctl, "1.0.0")
	// h0, h1 are prod/eu; h2 prod/us; h3 staging/eu.
	for i, labels := range []map[string]string{
		{"env": "prod", "region": "eu"}, {"env": "prod", "region": "eu"}, {"env": "prod", "region": "us"}, {"env": "staging", "region": "eu"},
	} {
		startAutoAgent(t, fs[i%2], fmt.Sprintf("h%d", i), labels, nil)
	}
	testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
		agents, _, _ := fs[0].Server().Store().Agents(nil)
		return len(agents) == 4, fmt.Sprintf("%d agents", len(agents))
	})
	if got := planned(t, ctl, "prod"); !slices.Equal(got, []string{"h0", "h1", "h2"}) {
		t.Fatalf("plan before: %v", got)
	}

	newSel := map[string]string{"region": "eu"}
	dry, err := ctl.UpdateEnvironment(ctxT(t), &relv1.UpdateEnvironmentRequest{Name: "prod", Selector: newSel, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(dry.GetJoining(), []string{"h3"}) || !slices.Equal(dry.GetLeaving(), []string{"h2"}) || dry.GetIndex() != 0 || !dry.GetDryRun() {
		t.Fatalf("dry run: joining %v leaving %v index %d", dry.GetJoining(), dry.GetLeaving(), dry.GetIndex())
	}
	if got := planned(t, ctl, "prod"); !slices.Equal(got, []string{"h0", "h1", "h2"}) {
		t.Fatalf("plan after the dry run: %v, want it unchanged", got)
	}

	// Bad input: said what is wrong and what to do; nothing written.
	wantCode(t, "unknown env", func() error {
		_, err := ctl.UpdateEnvironment(ctxT(t), &relv1.UpdateEnvironmentRequest{Name: "nope", Selector: newSel})
		return err
	}(), codes.NotFound, `environment "nope" not found`, "relctl env list")
	wantCode(t, "nothing to change", func() error {
		_, err := ctl.UpdateEnvironment(ctxT(t), &relv1.UpdateEnvironmentRequest{Name: "prod"})
		return err
	}(), codes.InvalidArgument, "nothing to change: give --selector, --description, --catch-up, --catch-up-parallel or a default spec")
	wantCode(t, "bad selector", func() error {
		_, err := ctl.UpdateEnvironment(ctxT(t), &relv1.UpdateEnvironmentRequest{Name: "prod", Selector: map[string]string{"bad key": "x"}})
		return err
	}(), codes.InvalidArgument, `selector key "bad key"`)

	up, err := ctl.UpdateEnvironment(withRequestID(t, "rq-env-up"), &relv1.UpdateEnvironmentRequest{Name: "prod", Selector: newSel, Description: strPtr("Europe")})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(up.GetJoining(), []string{"h3"}) || !slices.Equal(up.GetLeaving(), []string{"h2"}) || up.GetIndex() == 0 {
		t.Fatalf("update: joining %v leaving %v index %d", up.GetJoining(), up.GetLeaving(), up.GetIndex())
	}
	env := up.GetEnvironment()
	if env.GetDescription() != "Europe" || len(env.GetSelector()) != 1 || env.GetSelector()["region"] != "eu" || env.GetModifyIndex() != up.GetIndex() || env.GetCreateIndex() == 0 {
		t.Fatalf("updated environment %v", env)
	}
	if got := planned(t, ctl, "prod"); !slices.Equal(got, []string{"h0", "h1", "h3"}) {
		t.Fatalf("plan after the update: %v, want h0 h1 h3", got)
	}
	// The same request again (relctl retrying, here or at the leader):
	// the first answer, nothing applied again.
	for _, n := range []*testcluster.Node{fs[0], c.Leader()} {
		again, err := dial(t, n).UpdateEnvironment(withRequestID(t, "rq-env-up"), &relv1.UpdateEnvironmentRequest{Name: "prod", Selector: newSel, Description: strPtr("Europe")})
		if err != nil {
			t.Fatal(err)
		}
		if again.GetIndex() != up.GetIndex() || !slices.Equal(again.GetJoining(), up.GetJoining()) || !slices.Equal(again.GetLeaving(), up.GetLeaving()) ||
			again.GetEnvironment().GetModifyIndex() != up.GetIndex() {
			t.Fatalf("repeat: index %d joining %v leaving %v, want the first answer (index %d, %v, %v)",
				again.GetIndex(), again.GetJoining(), again.GetLeaving(), up.GetIndex(), up.GetJoining(), up.GetLeaving())
		}
	}
	// A description-only change: nobody joins or leaves.
	d, err := ctl.UpdateEnvironment(ctxT(t), &relv1.UpdateEnvironmentRequest{Name: "prod", Description: strPtr("")})
	if err != nil || len(d.GetJoining())+len(d.GetLeaving()) != 0 || d.GetEnvironment().GetDescription() != "" || d.GetEnvironment().GetSelector()["region"] != "eu" {
		t.Fatalf("description change: %v, %v", d, err)
	}
}

// TestEnvEditWhileRolloutActive: a selector change and a delete are
// refused, naming the rollout, while a rollout to the environment waits
// for approval; a description change is allowed; once the rollout ends,
// delete works (and the finished rollout stays), and the same delete sent
// again answers the first answer.
func TestEnvEditWhileRolloutActive(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{Configure: fastAgents})
	leader := c.WaitLeader()
	fs := c.Followers()
	ctl := dial(t, fs[0])
	setupApp(t, ctl, "1.0.0")
	prodAgents(t, c, fs, 2)

	start, err := ctl.StartRollout(ctxT(t), &relv1.StartRolloutRequest{App: "web", Version: "1.0.0", Environment: "prod",
		Spec: &relv1.RolloutSpec{Strategy: "rolling", Waves: []*relv1.Quantity{{Count: 1}, {Percent: 100}}, ApproveWaves: true}})
	if err != nil {
		t.Fatal(err)
	}
	id := start.GetRollout().GetId()
	waitState(t, ctl, id, "waiting_approval")

	for _, dryRun := range []bool{true, false} {
		_, err := ctl.UpdateEnvironment(ctxT(t), &relv1.UpdateEnvironmentRequest{Name: "prod", Selector: map[string]string{"env": "other"}, DryRun: dryRun})
		wantCode(t, fmt.Sprintf("selector change (dry run %v)", dryRun), err, codes.FailedPrecondition, "active rollout", id, "relctl rollout abort "+id)
	}
	_, err = ctl.DeleteEnvironment(ctxT(t), &relv1.DeleteEnvironmentRequest{Name: "prod"})
	wantCode(t, "delete", err, codes.FailedPrecondition, "active rollout", id)
	envs, _, _ := leader.Server().Store().Environments(nil)
	if len(envs) != 1 || envs[0].GetSelector()["env"] != "prod" {
		t.Fatalf("environments after the refusals: %v", envs)
	}
	if _, err := ctl.UpdateEnvironment(ctxT(t), &relv1.UpdateEnvironmentRequest{Name: "prod", Description: strPtr("still prod")}); err != nil {
		t.Fatalf("description change during a rollout: %v", err)
	}

	if _, err := ctl.ControlRollout(ctxT(t), &relv1.ControlRolloutRequest{Id: id, Action: "abort"}); err != nil {
		t.Fatal(err)
	}
	waitState(t, ctl, id, "aborted")
	del, err := ctl.DeleteEnvironment(withRequestID(t, "rq-env-del"), &relv1.DeleteEnvironmentRequest{Name: "prod"})
	if err != nil || del.GetIndex() == 0 {
		t.Fatalf("delete after the rollout: %v, %v", del, err)
	}
	again, err := ctl.DeleteEnvironment(withRequestID(t, "rq-env-del"), &relv1.DeleteEnvironmentRequest{Name: "prod"})
	if err != nil || again.GetIndex() != del.GetIndex() {
		t.Fatalf("delete sent again: %v, %v; want the first answer (index %d)", again, err, del.GetIndex())
	}
	_, err = ctl.DeleteEnvironment(ctxT(t), &relv1.DeleteEnvironmentRequest{Name: "prod"})
	wantCode(t, "delete again (a new request)", err, codes.NotFound, `environment "prod" not found`, "relctl env list")
	if resp, err := ctl.ListEnvironments(ctxT(t), &relv1.ListEnvironmentsRequest{}); err != nil || len(resp.GetEnvironments()) != 0 {
		t.Fatalf("environments after delete: %v, %v", resp, err)
	}
	if _, err := ctl.GetRollout(ctxT(t), &relv1.GetRolloutRequest{Id: id}); err != nil {
		t.Fatalf("the finished rollout after delete: %v", err)
	}
}

// TestEnvEditAuthorization: on the wire, through a follower, a viewer's
// certificate or token may not update or delete an environment; an
// operator's certificate may.
func TestEnvEditAuthorization(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{})
	c.WaitLeader()
	f := c.Followers()[0]
	addr := f.GRPCAddr()
	if _, err := dial(t, f).CreateEnvironment(ctxT(t), &relv1.CreateEnvironmentRequest{Name: "prod", Selector: map[string]string{"env": "prod"}}); err != nil {
		t.Fatal(err)
	}
	viewerSecret, _ := createToken(t, f.Admin(), "viewer", []string{"viewer"}, nil, 0)
	operator := relv1.NewControlServiceClient(idConn(t, c, addr, testcluster.ClientID("ops", auth.Operator)))
	for who, ctl := range map[string]relv1.ControlServiceClient{
		"viewer certificate": relv1.NewControlServiceClient(idConn(t, c, addr, testcluster.ClientID("eve", auth.Viewer))),
		"viewer token":       relv1.NewControlServiceClient(tokenConn(t, c, addr, viewerSecret)),
	} {
		_, err := ctl.UpdateEnvironment(ctxT(t), &relv1.UpdateEnvironmentRequest{Name: "prod", Selector: map[string]string{"env": "x"}})
		wantCode(t, who+" updating", err, codes.PermissionDenied, `needs a role with "manage-apps"`)
		_, err = ctl.DeleteEnvironment(ctxT(t), &relv1.DeleteEnvironmentRequest{Name: "prod"})
		wantCode(t, who+" deleting", err, codes.PermissionDenied, `needs a role with "manage-apps"`)
	}
	if _, err := operator.UpdateEnvironment(ctxT(t), &relv1.UpdateEnvironmentRequest{Name: "prod", Selector: map[string]string{"env": "x"}}); err != nil {
		t.Fatalf("operator updating: %v", err)
	}
	if _, err := operator.DeleteEnvironment(ctxT(t), &relv1.DeleteEnvironmentRequest{Name: "prod"}); err != nil {
		t.Fatalf("operator deleting: %v", err)
	}
}
