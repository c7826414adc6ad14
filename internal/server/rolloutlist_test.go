package server_test

import (
	"maps"
	"testing"
	"time"

	"github.com/relhq/rel/internal/rollout"
	"github.com/relhq/rel/internal/testcluster"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// TestRolloutListTotalsWithoutHosts: a rollout list carries each rollout's
// header and its hosts per phase, the same totals rollout status counts,
// and no hosts unless asked, so its size does not grow with the fleet.
func TestRolloutListTotalsWithoutHosts(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{Configure: fastAgents})
	n := c.WaitLeader()
	ctl := dial(t, n)
	setupApp(t, ctl, "1.0.0", "2.0.0")
	startAutoAgent(t, n, "h1", map[string]string{"env": "prod"}, nil)
	startAutoAgent(t, n, "h2", map[string]string{"env": "prod"}, func(v string) (string, string) {
		if v == "2.0.0" {
			return "failed", "boom"
		}
		return "healthy", ""
	})
	// A third host never answers: it stays dispatched, installing.
	third := connectAgent(t, n, "h3", map[string]string{"env": "prod"}, 0)
	third.heartbeat(100 * time.Millisecond)
	first, err := ctl.StartRollout(ctxT(t), &relv1.StartRolloutRequest{App: "web", Version: "1.0.0", Environment: "prod",
		Spec: &relv1.RolloutSpec{MaxFailures: &relv1.Quantity{Count: 3}, ProgressDeadlineMs: 60000}})
	if err != nil {
		t.Fatal(err)
	}
	id := first.GetRollout().GetId()
	testcluster.WaitFor(t, 20*time.Second, func() (bool, string) {
		st := waitState(t, ctl, id, rollout.StateRunning, rollout.StateSucceeded)
		return st.GetTotals()["healthy"] == 2, "two hosts healthy"
	})
	want := waitState(t, ctl, id, rollout.StateRunning).GetTotals()

	for _, withHosts := range []bool{false, true} {
		resp, err := ctl.ListRollouts(ctxT(t), &relv1.ListRolloutsRequest{Hosts: withHosts})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetRollouts()) != 1 {
			t.Fatalf("hosts=%v: %d rollouts, want 1", withHosts, len(resp.GetRollouts()))
		}
		got := resp.GetRollouts()[0]
		if !maps.Equal(got.GetTotals(), want) {
			t.Errorf("hosts=%v: totals %v, rollout status says %v", withHosts, got.GetTotals(), want)
		}
		if got.GetRollout().GetId() != id || got.GetRollout().GetVersion() != "1.0.0" || got.GetRollout().GetState() != rollout.StateRunning {
			t.Errorf("hosts=%v: header %v", withHosts, got.GetRollout())
		}
		if nh, ns := len(got.GetRollout().GetHosts()), len(got.GetHosts()); withHosts != (nh == 3 && ns == 3) || !withHosts && (nh != 0 || ns != 0) {
			t.Errorf("hosts=%v: %d rollout hosts, %d host statuses", withHosts, nh, ns)
		}
	}
	// The stored row still holds its hosts: the list shares, never cuts.
	ro, err := n.Server().Store().Rollout(nil, id)
	if err != nil || len(ro.GetHosts()) != 3 {
		t.Fatalf("stored rollout: %d hosts, %v", len(ro.GetHosts()), err)
	}
}
