package server_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/relhq/rel/internal/rollout"
	"github.com/relhq/rel/internal/testcluster"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// autoAgent answers every desired app with a scripted outcome: the phases
// up to healthy, or failed when outcome says so. It counts the installs
// (distinct (app, version, rollout) it acted on).
type autoAgent struct {
	*rawAgent
	mu       sync.Mutex
	installs map[string]int
	outcome  func(version string) (phase, reason string)
}

func startAutoAgent(t *testing.T, addr *testcluster.Node, id string, labels map[string]string, outcome func(string) (string, string)) *autoAgent {
	a := &autoAgent{rawAgent: connectAgent(t, addr, id, labels, 0), installs: map[string]int{}, outcome: outcome}
	a.heartbeat(100 * time.Millisecond)
	acted := map[string]bool{}
	go func() {
		for d := range a.desired {
			for _, app := range d.GetApps() {
				key := app.GetApp() + "@" + app.GetVersion() + "/" + app.GetRolloutId()
				if acted[key] {
					continue
				}
				acted[key] = true
				a.mu.Lock()
				a.installs[app.GetApp()+"@"+app.GetVersion()]++
				a.mu.Unlock()
				phase, reason := "healthy", ""
				if a.outcome != nil {
					phase, reason = a.outcome(app.GetVersion())
				}
				a.send(&relv1.AgentMessage{Kind: &relv1.AgentMessage_Reports{Reports: &relv1.Reports{Reports: []*relv1.AppReport{
					{App: app.GetApp(), Version: app.GetVersion(), Phase: "installing", RolloutId: app.GetRolloutId(), AtUnixNano: time.Now().UnixNano()},
				}}}})
				a.send(&relv1.AgentMessage{Kind: &relv1.AgentMessage_Reports{Reports: &relv1.Reports{Reports: []*relv1.AppReport{
					{App: app.GetApp(), Version: app.GetVersion(), Phase: phase, Reason: reason, RolloutId: app.GetRolloutId(), AtUnixNano: time.Now().UnixNano()},
				}}}})
			}
		}
	}()
	return a
}

func (a *autoAgent) count(release string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.installs[release]
}

func waitState(t *testing.T, ctl relv1.ControlServiceClient, id string, states ...string) *relv1.RolloutStatus {
	t.Helper()
	var st *relv1.RolloutStatus
	testcluster.WaitFor(t, 20*time.Second, func() (bool, string) {
		resp, err := ctl.GetRollout(ctxT(t), &relv1.GetRolloutRequest{Id: id})
		if err != nil {
			return false, err.Error()
		}
		st = resp.GetStatus()
		for _, s := range states {
			if st.GetRollout().GetState() == s {
				return true, ""
			}
		}
		return false, fmt.Sprintf("state %s (%s), want %v", st.GetRollout().GetState(), st.GetRollout().GetReason(), states)
	})
	return st
}

func events(t *testing.T, ctl relv1.ControlServiceClient, id string) []*relv1.RolloutEvent {
	t.Helper()
	resp, err := ctl.RolloutEvents(ctxT(t), &relv1.RolloutEventsRequest{Id: id})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetEvents()
}

func setupApp(t *testing.T, ctl relv1.ControlServiceClient, versions ...string) {
	t.Helper()
	ctx := ctxT(t)
	if _, err := ctl.CreateApp(ctx, &relv1.CreateAppRequest{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	for _, v := range versions {
		if _, err := ctl.CreateRelease(ctx, &relv1.CreateReleaseRequest{App: "web", Version: v, ArtifactUrl: "https://a.example.com/web-" + v + ".tgz", Sha256: digest(v)}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ctl.CreateEnvironment(ctx, &relv1.CreateEnvironmentRequest{Name: "prod", Selector: map[string]string{"env": "prod"}}); err != nil {
		t.Fatal(err)
	}
}

// TestStagedRolloutLeaderKilled: a rolling rollout, one host at a time; the
// leader is killed mid-wave; the new leader finishes it and no host is
// dispatched (installs) twice.
func TestStagedRolloutLeaderKilled(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{Configure: fastAgents})
	leader := c.WaitLeader()
	fs := c.Followers()
	ctl := dial(t, fs[0])
	setupApp(t, ctl, "1.0.0")
	var agents []*autoAgent
	for i := 0; i < 4; i++ {
		agents = append(agents, startAutoAgent(t, fs[i%2], fmt.Sprintf("h%d", i), map[string]string{"env": "prod"}, nil))
	}
	// Slow the rollout down so the kill lands mid-way: bake between waves.
	start, err := ctl.StartRollout(ctxT(t), &relv1.StartRolloutRequest{App: "web", Version: "1.0.0", Environment: "prod",
		Spec: &relv1.RolloutSpec{Strategy: "rolling", Waves: []*relv1.Quantity{{Count: 1}, {Count: 2}, {Percent: 100}}, BakeMs: 700}})
	if err != nil {
		t.Fatal(err)
	}
	id := start.GetRollout().GetId()
	testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
		resp, _ := ctl.GetRollout(ctxT(t), &relv1.GetRolloutRequest{Id: id})
		return resp.GetStatus().GetRollout().GetCurrentWave() >= 1, "still in wave 0"
	})
	c.Kill(leader)
	c.WaitNewLeader(leader)
	st := waitState(t, ctl, id, "succeeded")
	if st.GetTotals()["healthy"] != 4 {
		t.Fatalf("totals %v", st.GetTotals())
	}
	dispatches := map[string]int{}
	for _, e := range events(t, ctl, id) {
		if e.GetType() == "dispatched" {
			for _, h := range rollout.EventHosts(e) {
				dispatches[h]++
			}
		}
	}
	for _, a := range agents {
		if dispatches[a.id] != 1 || a.count("web@1.0.0") != 1 {
			t.Errorf("%s dispatched %d times, installed %d times; want once", a.id, dispatches[a.id], a.count("web@1.0.0"))
		}
	}
}

// TestCanaryAutoRollback: a release that fails its health check, canary 1
// with auto-rollback: only the canary ever gets it, it goes back, the
// rollout ends rolled_back and the other hosts are never touched.
func TestCanaryAutoRollback(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{Configure: fastAgents})
	ctl := dial(t, c.Nodes[0])
	setupApp(t, ctl, "1.0.0", "2.0.0")
	bad := func(v string) (string, string) {
		if v == "2.0.0" {
			return "failed", "health check failed: connection refused"
		}
		return "healthy", ""
	}
	var agents []*autoAgent
	for i := 0; i < 3; i++ {
		agents = append(agents, startAutoAgent(t, c.Nodes[0], fmt.Sprintf("h%d", i), map[string]string{"env": "prod"}, bad))
	}
	first, err := ctl.StartRollout(ctxT(t), &relv1.StartRolloutRequest{App: "web", Version: "1.0.0", Environment: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	waitState(t, ctl, first.GetRollout().GetId(), "succeeded")

	resp, err := ctl.StartRollout(ctxT(t), &relv1.StartRolloutRequest{App: "web", Version: "2.0.0", Environment: "prod",
		Spec: &relv1.RolloutSpec{Strategy: "canary", Canary: &relv1.Quantity{Count: 1}, Waves: []*relv1.Quantity{{Percent: 50}, {Percent: 100}}, AutoRollback: true}})
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetRollout().GetId()
	st := waitState(t, ctl, id, "rolled_back", "failed")
	if st.GetRollout().GetState() != "rolled_back" {
		t.Fatalf("rollout ended %s: %s", st.GetRollout().GetState(), st.GetRollout().GetReason())
	}
	rbID := st.GetRollout().GetRolledBackBy()
	rb := waitState(t, ctl, rbID, "succeeded")
	if len(rb.GetHosts()) != 1 || rb.GetHosts()[0].GetAgentId() != "h0" || rb.GetRollout().GetVersion() != "1.0.0" {
		t.Fatalf("rollback %v", rb)
	}
	for _, a := range agents {
		want := 0
		if a.id == "h0" {
			want = 1
		}
		if got := a.count("web@2.0.0"); got != want {
			t.Errorf("%s got 2.0.0 %d times, want %d", a.id, got, want)
		}
	}
	// The canary is back on 1.0.0 (its report for the rollback).
	ag, err := ctl.GetAgent(ctxT(t), &relv1.GetAgentRequest{Id: "h0"})
	if err != nil || ag.GetAgent().GetApps()[0].GetVersion() != "1.0.0" || ag.GetAgent().GetApps()[0].GetRolloutId() != rbID {
		t.Fatalf("canary after rollback: %v %v", ag, err)
	}
}

// TestControls: approve gates, pause/resume, abort, and their bad uses.
func TestControls(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{Configure: fastAgents})
	ctl := dial(t, c.Nodes[0])
	setupApp(t, ctl, "1.0.0", "2.0.0")
	for i := 0; i < 3; i++ {
		startAutoAgent(t, c.Nodes[0], fmt.Sprintf("h%d", i), map[string]string{"env": "prod"}, nil)
	}
	ctx := ctxT(t)
	control := func(id, action string) error {
		req := &relv1.ControlRolloutRequest{Id: id, Action: action}
		if action == "approve" {
			req.Wave = 1 // the wave after the canary
		}
		_, err := ctl.ControlRollout(ctx, req)
		return err
	}
	resp, err := ctl.StartRollout(ctx, &relv1.StartRolloutRequest{App: "web", Version: "1.0.0", Environment: "prod",
		Spec: &relv1.RolloutSpec{Strategy: "canary", ApproveWaves: true}})
	if err != nil {
		t.Fatal(err)
	}
	id := resp.GetRollout().GetId()
	_, err = ctl.StartRollout(ctx, &relv1.StartRolloutRequest{App: "web", Version: "2.0.0", Environment: "prod"})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), id) {
		t.Fatalf("second active rollout: %v", err)
	}
	st := waitState(t, ctl, id, "waiting_approval")
	if st.GetTotals()["healthy"] != 1 || st.GetTotals()["pending"] != 2 {
		t.Fatalf("at the gate: %v", st.GetTotals())
	}
	if err := control(id, "resume"); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("resume of a non-paused rollout: %v", err)
	}
	if err := control(id, "pause"); err != nil {
		t.Fatal(err)
	}
	if err := control(id, "approve"); status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), "not waiting for approval") {
		t.Fatalf("approve while paused: %v", err)
	}
	if err := control(id, "resume"); err != nil {
		t.Fatal(err)
	}
	waitState(t, ctl, id, "waiting_approval")
	if err := control(id, "approve"); err != nil {
		t.Fatal(err)
	}
	waitState(t, ctl, id, "succeeded")
	if err := control(id, "abort"); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("abort of a finished rollout: %v", err)
	}
	if err := control(id, "explode"); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("unknown action: %v", err)
	}
	if err := control("ro-nope", "pause"); status.Code(err) != codes.NotFound {
		t.Fatalf("unknown rollout: %v", err)
	}

	// Staged rollback of the completed rollout: waves in reverse.
	// Nothing ran before 1.0.0, so there is nothing to go back to.
	_, err = ctl.RollbackRollout(ctx, &relv1.RollbackRolloutRequest{Id: id})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), "nothing to go back to") {
		t.Fatalf("rollback with no earlier release: %v", err)
	}
	second, err := ctl.StartRollout(ctx, &relv1.StartRolloutRequest{App: "web", Version: "2.0.0", Environment: "prod",
		Spec: &relv1.RolloutSpec{Strategy: "rolling", Waves: []*relv1.Quantity{{Count: 1}, {Count: 2}, {Percent: 100}}}})
	if err != nil {
		t.Fatal(err)
	}
	waitState(t, ctl, second.GetRollout().GetId(), "succeeded")
	rb, err := ctl.RollbackRollout(ctx, &relv1.RollbackRolloutRequest{Id: second.GetRollout().GetId()})
	if err != nil {
		t.Fatal(err)
	}
	rbst := waitState(t, ctl, rb.GetRollback().GetId(), "succeeded")
	order := map[string]uint32{}
	for _, h := range rbst.GetRollout().GetHosts() {
		order[h.GetAgentId()] = h.GetWave()
	}
	if !(order["h2"] < order["h1"] && order["h1"] < order["h0"]) {
		t.Fatalf("rollback waves %v, want the rollout's waves reversed (h2, then h1, then h0)", order)
	}
	// Each rollback wave healthy before the next: check from the events.
	var lastHealthyWave, dispatchedWave []uint32
	for _, e := range events(t, ctl, rb.GetRollback().GetId()) {
		switch e.GetType() {
		case "host_healthy":
			lastHealthyWave = append(lastHealthyWave, e.GetWave())
		case "dispatched":
			dispatchedWave = append(dispatchedWave, e.GetWave())
			if len(dispatchedWave) > 1 && len(lastHealthyWave) < len(dispatchedWave)-1 {
				t.Fatalf("wave %d dispatched before the previous wave was healthy", e.GetWave())
			}
		}
	}
	orig := waitState(t, ctl, second.GetRollout().GetId(), "rolled_back")
	if orig.GetRollout().GetRolledBackBy() != rb.GetRollback().GetId() {
		t.Fatalf("original %v", orig.GetRollout())
	}
	if _, err := ctl.RollbackRollout(ctx, &relv1.RollbackRolloutRequest{Id: second.GetRollout().GetId()}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("second rollback: %v", err)
	}
}

// TestPlanChangesNothing: plan shows waves and blockers and writes nothing.
func TestPlanChangesNothing(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{Configure: fastAgents})
	ctl := dial(t, c.Nodes[0])
	setupApp(t, ctl, "1.0.0")
	for i := 0; i < 4; i++ {
		startAutoAgent(t, c.Nodes[0], fmt.Sprintf("h%d", i), map[string]string{"env": "prod", "zone": fmt.Sprintf("z%d", i%2)}, nil)
	}
	testcluster.WaitFor(t, 5*time.Second, func() (bool, string) {
		r, _ := ctl.ListAgents(ctxT(t), &relv1.ListAgentsRequest{})
		return len(r.GetAgents()) == 4, "agents"
	})
	before := c.Nodes[0].Server().Store().LatestIndex()
	plan, err := ctl.PlanRollout(ctxT(t), &relv1.PlanRolloutRequest{App: "web", Version: "1.0.0", Environment: "prod",
		Spec: &relv1.RolloutSpec{Strategy: "canary", WaveBy: "zone"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.GetWaves()) != 3 || plan.GetWaves()[0].GetKind() != "canary" || len(plan.GetBlockers()) != 0 {
		t.Fatalf("plan %v", plan)
	}
	if after := c.Nodes[0].Server().Store().LatestIndex(); after != before {
		t.Fatalf("plan wrote to the state (index %d -> %d)", before, after)
	}
	bad := []struct {
		spec *relv1.RolloutSpec
		msg  string
	}{
		{&relv1.RolloutSpec{Strategy: "rolling", Waves: []*relv1.Quantity{{Percent: 50}, {Percent: 20}, {Percent: 100}}}, "is not above"},
		{&relv1.RolloutSpec{Strategy: "rolling", Waves: []*relv1.Quantity{{Percent: 150}}}, "at most 100%"},
		{&relv1.RolloutSpec{Strategy: "rolling", Waves: []*relv1.Quantity{{Percent: 50}}}, "must reach 100%"},
	}
	for _, b := range bad {
		_, err := ctl.StartRollout(ctxT(t), &relv1.StartRolloutRequest{App: "web", Version: "1.0.0", Environment: "prod", Spec: b.spec})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), b.msg) {
			t.Errorf("spec %v: %v, want InvalidArgument containing %q", b.spec, err, b.msg)
		}
	}
	ctl.CreateEnvironment(ctxT(t), &relv1.CreateEnvironmentRequest{Name: "empty", Selector: map[string]string{"env": "nowhere"}})
	_, err = ctl.StartRollout(ctxT(t), &relv1.StartRolloutRequest{App: "web", Version: "1.0.0", Environment: "empty"})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), "selects no connected agent") {
		t.Fatalf("empty environment: %v", err)
	}
	p2, _ := ctl.PlanRollout(ctxT(t), &relv1.PlanRolloutRequest{App: "web", Version: "1.0.0", Environment: "empty"})
	if len(p2.GetBlockers()) != 1 {
		t.Fatalf("plan of an empty environment: %v", p2)
	}
	rs, _, _ := c.Nodes[0].Server().Store().Rollouts(nil, "")
	if len(rs) != 0 {
		t.Fatalf("refused rollouts were stored: %v", rs)
	}
}
