package server_test

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/relhq/rel/internal/server"
	"github.com/relhq/rel/internal/testcluster"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// TestWhatRunsWhere (issue 9, item 2): ShowEnvironment and Overview say
// each app's current release in an environment (its last succeeded
// rollout's) and which hosts are off it, and why.
func TestWhatRunsWhere(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{Configure: fastAgents})
	f := c.Followers()[0]
	ctl := dial(t, f)
	ctx := ctxT(t)
	mustCreate(t, ctl, "web")
	// Manual: no catch-up takes the drifted hosts back while the test looks.
	if _, err := ctl.CreateEnvironment(ctx, &relv1.CreateEnvironmentRequest{Name: "prod", Selector: map[string]string{"env": "prod"}, CatchUpManual: true}); err != nil {
		t.Fatal(err)
	}
	var agents []*rawAgent
	for i := 0; i < 3; i++ {
		a := connectAgent(t, c.Nodes[i], fmt.Sprintf("web-%d", i+1), map[string]string{"env": "prod"}, 0)
		a.heartbeat(100 * time.Millisecond)
		agents = append(agents, a)
	}
	testcluster.WaitFor(t, 5*time.Second, func() (bool, string) {
		resp, err := ctl.ListAgents(ctx, &relv1.ListAgentsRequest{Environment: "prod"})
		return err == nil && len(resp.GetAgents()) == 3, "three prod agents"
	})
	start, err := ctl.StartRollout(ctx, &relv1.StartRolloutRequest{App: "web", Version: "1.0.1", Environment: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	ro := start.GetRollout().GetId()
	for _, a := range agents {
		a.report("web", "1.0.1", "healthy", ro)
	}
	testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
		resp, err := ctl.GetRollout(ctx, &relv1.GetRolloutRequest{Id: ro})
		return err == nil && resp.GetStatus().GetRollout().GetState() == "succeeded", "rollout succeeded"
	})
	show := func() *relv1.EnvAppStatus {
		t.Helper()
		resp, err := ctl.ShowEnvironment(ctx, &relv1.ShowEnvironmentRequest{Name: "prod"})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetApps()) != 1 {
			t.Fatalf("apps in prod: %v", resp.GetApps())
		}
		return resp.GetApps()[0]
	}
	st := show()
	if st.GetCurrentVersion() != "1.0.1" || st.GetCurrentRolloutId() != ro || st.GetHosts() != 3 || st.GetOnCurrent() != 3 || len(st.GetOff()) != 0 {
		t.Fatalf("prod after the rollout: %v", st)
	}
	// web-2 is changed by hand (it reports another version, with no
	// rollout), web-3 fails, and a fourth host joins prod with nothing.
	agents[1].report("web", "0.9.0", "healthy", "")
	agents[2].reportReason("web", "1.0.1", "failed", "", "health check failed")
	connectAgent(t, c.Nodes[0], "web-4", map[string]string{"env": "prod"}, 0).heartbeat(100 * time.Millisecond)
	why := map[string]string{}
	testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
		st = show()
		why = map[string]string{}
		for _, o := range st.GetOff() {
			why[o.GetAgentId()] = o.GetWhy()
		}
		return len(why) == 3, fmt.Sprintf("hosts off the current release: %v", why)
	})
	if why["web-2"] != "out_of_band" || why["web-3"] != "failed" || why["web-4"] != "not_installed" || st.GetOnCurrent() != 1 || st.GetHosts() != 4 {
		t.Fatalf("prod with drift: %v (why %v)", st, why)
	}
	ov, err := ctl.Overview(ctx, &relv1.OverviewRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(ov.GetCells()) != 1 || ov.GetCells()[0].GetCurrentVersion() != "1.0.1" || ov.GetCells()[0].GetOnCurrent() != 1 || ov.GetCells()[0].GetHosts() != 4 {
		t.Fatalf("overview: %v", ov.GetCells())
	}
	if _, err := ctl.ShowEnvironment(ctx, &relv1.ShowEnvironmentRequest{Name: "nope"}); err == nil {
		t.Fatal("ShowEnvironment of an unknown environment answered")
	}
}

// TestCatchUp (issue 9, item 1): with catch-up on (the default), a host
// that joins an environment after its rollout, and one changed by hand,
// converge to the environment's current release through a catch_up
// rollout the leader starts; a host on what a rollout to another
// environment put there is left alone.
func TestCatchUp(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{Configure: fastAgents})
	ctl := dial(t, c.Followers()[0])
	ctx := ctxT(t)
	mustCreate(t, ctl, "web")
	if _, err := ctl.CreateEnvironment(ctx, &relv1.CreateEnvironmentRequest{Name: "prod", Selector: map[string]string{"env": "prod"}, CatchUpParallel: 2}); err != nil {
		t.Fatal(err)
	}
	a1 := connectAgent(t, c.Nodes[1], "web-1", map[string]string{"env": "prod"}, 0)
	a1.heartbeat(100 * time.Millisecond)
	testcluster.WaitFor(t, 5*time.Second, func() (bool, string) {
		resp, err := ctl.ListAgents(ctx, &relv1.ListAgentsRequest{Environment: "prod"})
		return err == nil && len(resp.GetAgents()) == 1, "web-1 in prod"
	})
	start, err := ctl.StartRollout(ctx, &relv1.StartRolloutRequest{App: "web", Version: "1.0.1", Environment: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	a1.report("web", "1.0.1", "healthy", start.GetRollout().GetId())
	testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
		resp, err := ctl.GetRollout(ctx, &relv1.GetRolloutRequest{Id: start.GetRollout().GetId()})
		return err == nil && resp.GetStatus().GetRollout().GetState() == "succeeded", "rollout succeeded"
	})
	// web-2 joins prod afterwards; web-1 is changed by hand.
	a2 := connectAgent(t, c.Nodes[2], "web-2", map[string]string{"env": "prod"}, 0)
	a2.heartbeat(100 * time.Millisecond)
	a1.report("web", "0.9.0", "healthy", "")
	// One catch-up takes both when the two changes land within the
	// leader's settle time; under load they may come as two, the second
	// once the first is done (a host is in one active rollout at a time).
	// Each host is told to run 1.0.1 for the catch-up that holds it, and
	// reports it healthy.
	agentsByID := map[string]*rawAgent{"web-1": a1, "web-2": a2}
	done := map[string]bool{}
	testcluster.WaitFor(t, 20*time.Second, func() (bool, string) {
		resp, err := ctl.ListRollouts(ctx, &relv1.ListRolloutsRequest{App: "web", Hosts: true})
		if err != nil {
			return false, err.Error()
		}
		for _, r := range resp.GetRollouts() {
			catchUp := r.GetRollout()
			if catchUp.GetKind() != "catch_up" {
				continue
			}
			if catchUp.GetVersion() != "1.0.1" || catchUp.GetEnvironment() != "prod" {
				t.Fatalf("catch-up %v", catchUp)
			}
			for _, h := range catchUp.GetHosts() {
				a := agentsByID[h.GetAgentId()]
				if a == nil || done[a.id] {
					continue
				}
				testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
					d := a.nextDesired(5 * time.Second)
					return len(d.GetApps()) == 1 && d.GetApps()[0].GetVersion() == "1.0.1" && d.GetApps()[0].GetRolloutId() == catchUp.GetId(), fmt.Sprintf("%s told to run 1.0.1 for %s: %v", a.id, catchUp.GetId(), d)
				})
				a.report("web", "1.0.1", "healthy", catchUp.GetId())
				done[a.id] = true
			}
		}
		return done["web-1"] && done["web-2"], fmt.Sprintf("web-1 and web-2 caught up (%d rollouts; done %v)", len(resp.GetRollouts()), done)
	})
	testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
		resp, err := ctl.ShowEnvironment(ctx, &relv1.ShowEnvironmentRequest{Name: "prod"})
		if err != nil || len(resp.GetApps()) != 1 {
			return false, fmt.Sprintf("%v %v", resp, err)
		}
		st := resp.GetApps()[0]
		return st.GetOnCurrent() == 2 && st.GetHosts() == 2 && st.GetActiveRolloutId() == "", fmt.Sprintf("prod converged: %v", st)
	})
	// The current release stays that of the last deploy: a catch-up
	// converges hosts to it, it does not change it.
	resp, err := ctl.ShowEnvironment(ctx, &relv1.ShowEnvironmentRequest{Name: "prod"})
	if err != nil || resp.GetApps()[0].GetCurrentRolloutId() != start.GetRollout().GetId() {
		t.Fatalf("current rollout after the catch-up: %v %v", resp, err)
	}

	// Manual, a host that joins stays as it is; back to auto, it is
	// caught up.
	manual, auto := "manual", "auto"
	up, err := ctl.UpdateEnvironment(ctx, &relv1.UpdateEnvironmentRequest{Name: "prod", CatchUp: &manual})
	if err != nil || !up.GetEnvironment().GetCatchUpManual() || up.GetEnvironment().GetCatchUpParallel() != 2 {
		t.Fatalf("update to manual: %v %v", up, err)
	}
	if _, err := ctl.UpdateEnvironment(ctx, &relv1.UpdateEnvironmentRequest{Name: "prod", CatchUp: &manual}); err != nil {
		t.Fatalf("the same setting again: %v", err)
	}
	bad := "sometimes"
	if _, err := ctl.UpdateEnvironment(ctx, &relv1.UpdateEnvironmentRequest{Name: "prod", CatchUp: &bad}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("--catch-up sometimes: %v, want InvalidArgument", err)
	}
	a3 := connectAgent(t, c.Nodes[0], "web-3", map[string]string{"env": "prod"}, 0)
	a3.heartbeat(100 * time.Millisecond)
	testcluster.WaitFor(t, 5*time.Second, func() (bool, string) {
		resp, err := ctl.ShowEnvironment(ctx, &relv1.ShowEnvironmentRequest{Name: "prod"})
		if err != nil || len(resp.GetApps()) != 1 {
			return false, fmt.Sprint(err)
		}
		for _, o := range resp.GetApps()[0].GetOff() {
			if o.GetAgentId() == "web-3" && o.GetWhy() == "not_installed" {
				return true, ""
			}
		}
		return false, fmt.Sprintf("web-3 not_installed in %v", resp.GetApps()[0])
	})
	if _, err := ctl.UpdateEnvironment(ctx, &relv1.UpdateEnvironmentRequest{Name: "prod", CatchUp: &auto}); err != nil {
		t.Fatal(err)
	}
	testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
		d := a3.nextDesired(5 * time.Second)
		return len(d.GetApps()) == 1 && d.GetApps()[0].GetVersion() == "1.0.1", fmt.Sprintf("web-3 caught up once catch-up is auto again: %v", d)
	})
}

// TestRolloutRetention (issue 10): the leader removes finished rollouts
// past --rollout-retention beyond --rollout-keep, with their events, but
// never the one whose release the environment holds.
func TestRolloutRetention(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{Configure: func(i int, cfg *server.Config) {
		fastAgents(i, cfg)
		cfg.RolloutRetention = time.Millisecond
		cfg.RolloutKeep = 1
		cfg.RetentionInterval = 100 * time.Millisecond
	}})
	ctl := dial(t, c.Followers()[0])
	ctx := ctxT(t)
	mustCreate(t, ctl, "web")
	if _, err := ctl.CreateEnvironment(ctx, &relv1.CreateEnvironmentRequest{Name: "prod", Selector: map[string]string{"env": "prod"}, CatchUpManual: true}); err != nil {
		t.Fatal(err)
	}
	a := connectAgent(t, c.Nodes[1], "web-1", map[string]string{"env": "prod"}, 0)
	a.heartbeat(100 * time.Millisecond)
	testcluster.WaitFor(t, 5*time.Second, func() (bool, string) {
		resp, err := ctl.ListAgents(ctx, &relv1.ListAgentsRequest{Environment: "prod"})
		return err == nil && len(resp.GetAgents()) == 1, "web-1 in prod"
	})
	var ids []string
	for i, outcome := range []string{"healthy", "healthy", "failed"} {
		start, err := ctl.StartRollout(ctx, &relv1.StartRolloutRequest{App: "web", Version: "1.0.1", Environment: "prod"})
		if err != nil {
			t.Fatalf("rollout %d: %v", i, err)
		}
		id := start.GetRollout().GetId()
		ids = append(ids, id)
		a.reportReason("web", "1.0.1", outcome, id, "")
		testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
			resp, err := ctl.GetRollout(ctx, &relv1.GetRolloutRequest{Id: id})
			st := resp.GetStatus().GetRollout().GetState()
			return err == nil && (st == "succeeded" || st == "failed"), "rollout " + id + " over"
		})
	}
	// ids[2] (failed) is the newest: kept (keep 1); ids[1] holds prod's
	// release: kept; ids[0] goes, with its events.
	testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
		_, err := ctl.GetRollout(ctx, &relv1.GetRolloutRequest{Id: ids[0]})
		return status.Code(err) == codes.NotFound, fmt.Sprintf("%s removed: %v", ids[0], err)
	})
	for _, id := range ids[1:] {
		if _, err := ctl.GetRollout(ctx, &relv1.GetRolloutRequest{Id: id}); err != nil {
			t.Fatalf("%s: %v, want it kept", id, err)
		}
	}
	if _, err := ctl.RolloutEvents(ctx, &relv1.RolloutEventsRequest{Id: ids[0]}); status.Code(err) != codes.NotFound {
		t.Fatalf("events of the removed rollout: %v", err)
	}
}
