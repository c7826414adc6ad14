package server_test

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/relhq/rel/internal/testcluster"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// TestRolloutMetrics: every node's /metrics counts a rollout's outcome,
// its hosts and waves once, with its strategy; the gauges show what is
// connected and active; and a restarted node does not count again what it
// applied before.
func TestRolloutMetrics(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{Configure: fastAgents})
	leader := c.WaitLeader()
	ctl := dial(t, leader)
	setupApp(t, ctl, "1.0.0", "2.0.0")
	for i := 0; i < 3; i++ {
		startAutoAgent(t, leader, fmt.Sprintf("h%d", i), map[string]string{"env": "prod"}, func(v string) (string, string) {
			if v == "2.0.0" {
				return "failed", "health check failed"
			}
			return "healthy", ""
		})
	}
	waitAgents := func(n *testcluster.Node) {
		testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
			m := scrapeMetrics(t, c, n)
			return strings.Contains(m, `rel_agents{connected="true"} 3`), "3 connected agents in the gauge of " + n.ID
		})
	}
	waitAgents(leader)
	start, err := ctl.StartRollout(ctxT(t), &relv1.StartRolloutRequest{App: "web", Version: "1.0.0", Environment: "prod",
		Spec: &relv1.RolloutSpec{Strategy: "rolling", Waves: []*relv1.Quantity{{Count: 1}, {Percent: 100}}}})
	if err != nil {
		t.Fatal(err)
	}
	waitState(t, ctl, start.GetRollout().GetId(), "succeeded")
	bad, err := ctl.StartRollout(ctxT(t), &relv1.StartRolloutRequest{App: "web", Version: "2.0.0", Environment: "prod",
		Spec: &relv1.RolloutSpec{Strategy: "all-at-once"}})
	if err != nil {
		t.Fatal(err)
	}
	waitState(t, ctl, bad.GetRollout().GetId(), "failed")

	want := []string{
		`rel_rollouts_finished_total{kind="deploy",outcome="succeeded",strategy="rolling"} 1`,
		`rel_rollouts_finished_total{kind="deploy",outcome="failed",strategy="all-at-once"} 1`,
		`rel_rollout_hosts_finished_total{outcome="healthy"} 3`,
		// The rollout fails at its first failed host: the others'
		// reports may come before or after, so at least one failed.
		`rel_rollout_hosts_finished_total{outcome="failed"} `,
		`rel_rollout_wave_duration_seconds_count{strategy="rolling"} 2`,
		`rel_rollout_duration_seconds_count{outcome="succeeded",strategy="rolling"} 1`,
		`rel_rollouts_active{state="running"} 0`,
	}
	for _, n := range c.Nodes {
		testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
			m := scrapeMetrics(t, c, n)
			for _, w := range want {
				if !strings.Contains(m, w+"\n") && !(strings.HasSuffix(w, " ") && strings.Contains(m, w)) {
					return false, n.ID + " has no line " + w + "\n" + grepLines(m, "rel_rollout")
				}
			}
			return true, ""
		})
	}

	// A restart replays the log: nothing applied before is counted again.
	f := c.Followers()[0]
	c.Kill(f)
	c.Restart(f)
	testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
		m := scrapeMetrics(t, c, f)
		return strings.Contains(m, "rel_raft_applied_index") && strings.Contains(m, `rel_agents{connected="true"} 3`), "restarted node caught up"
	})
	if m := scrapeMetrics(t, c, f); strings.Contains(m, `rel_rollouts_finished_total{`) {
		t.Fatalf("restarted node counted rollouts it had applied before:\n%s", grepLines(m, "rel_rollouts_finished_total"))
	}
}

func grepLines(s, prefix string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestGrafanaDashboardNamesMetrics: every rel_ metric the example Grafana
// dashboard queries is one a server exports (histograms by their family
// name), so the dashboard cannot drift from the code unnoticed.
func TestGrafanaDashboardNamesMetrics(t *testing.T) {
	raw, err := os.ReadFile("../../docs/grafana/rel-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("docs/grafana/rel-dashboard.json: %v", err)
	}
	c := testcluster.New(t, 1, testcluster.Options{})
	exported := map[string]bool{}
	for _, n := range c.Nodes[0].Server().MetricNames() {
		exported[n] = true
	}
	name := regexp.MustCompile(`rel_[a-z_]+`)
	n := 0
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			for _, m := range name.FindAllString(tg.Expr, -1) {
				n++
				family := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m, "_bucket"), "_count"), "_sum")
				if !exported[family] && !exported[m] {
					t.Errorf("panel %q queries %s, which no server exports", p.Title, m)
				}
			}
		}
	}
	if n < 10 {
		t.Fatalf("only %d metric names found in the dashboard", n)
	}
}
