package state

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/hashicorp/go-memdb"

	"github.com/relhq/rel/internal/rollout"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// histStep is one write of a history scenario: a rollout row, or a report.
type histStep struct {
	rollout *relv1.Rollout
	agent   string
	rep     *relv1.AppReport
}

func roRow(id, kind, version string) histStep {
	return histStep{rollout: &relv1.Rollout{Id: id, App: "web", Version: version, Environment: "prod", Kind: kind,
		State: rollout.StateSucceeded, Hosts: []*relv1.RolloutHost{{AgentId: "none", TargetVersion: version}}}}
}

func rollbackRow(id, of, version string) histStep {
	st := roRow(id, rollout.KindRollback, version)
	st.rollout.RollbackOf = of
	return st
}

func rep(agent, version, phase, ro string, at int64, reason ...string) histStep {
	return histStep{agent: agent, rep: &relv1.AppReport{App: "web", Version: version, Phase: phase, RolloutId: ro,
		AtUnixNano: at, Reason: strings.Join(reason, "")}}
}

// applyHistSteps applies steps from index start+1 on, the agents being up.
func applyHistSteps(t *testing.T, s *Store, start uint64, steps []histStep) {
	t.Helper()
	for i, st := range steps {
		idx := start + uint64(i) + 1
		var err error
		if st.rollout != nil {
			err = s.CreateRollout(idx, st.rollout, nil, nil)
		} else {
			err = s.ApplyReports(idx, []*relv1.AgentReport{{AgentId: st.agent, SessionId: "s-" + st.agent, Report: st.rep}})
		}
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
}

func newHistStore(t *testing.T) *Store {
	t.Helper()
	s := New()
	for i, id := range []string{"host-1", "host-2"} {
		if err := s.AgentUp(uint64(i+1), &relv1.Agent{Id: id, SessionId: "s-" + id, ServerId: "s1"}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CreateApp(3, &relv1.App{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	for i, v := range []string{"1.0.0", "2.0.0"} {
		if err := s.CreateRelease(uint64(4+i), &relv1.Release{App: "web", Version: v}); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// histBase is the last index newHistStore writes.
const histBase = 5

// histString renders an app's history one row per line:
// host version from-to outcome rollout/kind [reason] [failed@] [by rollout/kind].
func histString(t *testing.T, s *Store) string {
	t.Helper()
	hist, _, err := s.History(memdb.NewWatchSet(), "web")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, h := range hist {
		to := "now"
		if h.GetToUnixNano() != 0 {
			to = fmt.Sprint(h.GetToUnixNano())
		}
		fmt.Fprintf(&b, "%s %s %d-%s %s %s/%s", h.GetAgentId(), h.GetVersion(), h.GetFromUnixNano(), to, h.GetOutcome(), h.GetRolloutId(), h.GetRolloutKind())
		if h.GetReason() != "" {
			fmt.Fprintf(&b, " %q@%d", h.GetReason(), h.GetFailedUnixNano())
		}
		if h.GetReplacedByRolloutId() != "" {
			fmt.Fprintf(&b, " by %s/%s", h.GetReplacedByRolloutId(), h.GetReplacedByKind())
		}
		b.WriteString("\n")
	}
	return b.String()
}

var historyScenarios = []struct {
	name  string
	steps []histStep
	want  string
}{
	{
		name: "failed canary with auto-rollback",
		steps: []histStep{
			roRow("ro-1", rollout.KindDeploy, "1.0.0"),
			rep("host-1", "1.0.0", "starting", "ro-1", 10), rep("host-2", "1.0.0", "starting", "ro-1", 10),
			rep("host-1", "1.0.0", "healthy", "ro-1", 12), rep("host-2", "1.0.0", "healthy", "ro-1", 12),
			roRow("ro-2", rollout.KindDeploy, "2.0.0"),
			rep("host-1", "2.0.0", "downloading", "ro-2", 20),
			rep("host-1", "2.0.0", "installing", "ro-2", 21),
			rep("host-1", "2.0.0", "starting", "ro-2", 22),
			rep("host-1", "2.0.0", "verifying", "ro-2", 23),
			rep("host-1", "2.0.0", "failed", "ro-2", 25, "health check failed"),
			rollbackRow("ro-3", "ro-2", "1.0.0"),
			rep("host-1", "1.0.0", "starting", "ro-3", 30),
			rep("host-1", "1.0.0", "healthy", "ro-3", 31),
		},
		want: `host-1 1.0.0 10-22 replaced ro-1/deploy by ro-2/deploy
host-1 2.0.0 22-30 failed ro-2/deploy "health check failed"@25 by ro-3/rollback
host-1 1.0.0 30-now running ro-3/rollback
host-2 1.0.0 10-now running ro-1/deploy
`,
	},
	{
		name: "healthy release rolled back",
		steps: []histStep{
			roRow("ro-1", rollout.KindDeploy, "1.0.0"),
			rep("host-1", "1.0.0", "healthy", "ro-1", 10),
			roRow("ro-2", rollout.KindDeploy, "2.0.0"),
			rep("host-1", "2.0.0", "starting", "ro-2", 20),
			rep("host-1", "2.0.0", "healthy", "ro-2", 21),
			rollbackRow("ro-3", "ro-2", "1.0.0"),
			rep("host-1", "1.0.0", "verifying", "ro-3", 33),
			rep("host-1", "1.0.0", "healthy", "ro-3", 34),
		},
		want: `host-1 1.0.0 10-20 replaced ro-1/deploy by ro-2/deploy
host-1 2.0.0 20-33 rolled_back ro-2/deploy by ro-3/rollback
host-1 1.0.0 33-now running ro-3/rollback
`,
	},
	{
		name: "failure before the switch, reported twice",
		steps: []histStep{
			rep("host-1", "1.0.0", "healthy", "", 10),
			roRow("ro-2", rollout.KindDeploy, "2.0.0"),
			rep("host-1", "2.0.0", "downloading", "ro-2", 20),
			rep("host-1", "2.0.0", "installing", "ro-2", 22),
			rep("host-1", "2.0.0", "failed", "ro-2", 24, "before_install: exit 1"),
			rep("host-1", "2.0.0", "failed", "ro-2", 27, "before_install: exit 1"),
		},
		want: `host-1 1.0.0 10-now running /
host-1 2.0.0 20-24 failed ro-2/deploy "before_install: exit 1"@24
`,
	},
	{
		name: "failed version comes back healthy",
		steps: []histStep{
			rep("host-1", "1.0.0", "healthy", "", 10),
			roRow("ro-2", rollout.KindDeploy, "2.0.0"),
			rep("host-1", "2.0.0", "starting", "ro-2", 20),
			rep("host-1", "2.0.0", "failed", "ro-2", 21, "exited"),
			rep("host-1", "2.0.0", "verifying", "ro-2", 40),
			rep("host-1", "2.0.0", "healthy", "ro-2", 41),
		},
		want: `host-1 1.0.0 10-20 replaced / by ro-2/deploy
host-1 2.0.0 20-41 failed ro-2/deploy "exited"@21 by ro-2/deploy
host-1 2.0.0 41-now running ro-2/deploy
`,
	},
}

// TestHistoryRecordsFailuresAndRollbacks: report sequences give the rows
// of every version a host ran or tried, with outcomes.
func TestHistoryRecordsFailuresAndRollbacks(t *testing.T) {
	for _, sc := range historyScenarios {
		t.Run(sc.name, func(t *testing.T) {
			s := newHistStore(t)
			applyHistSteps(t, s, histBase, sc.steps)
			if got := histString(t, s); got != sc.want {
				t.Errorf("history:\n%s\nwant:\n%s", got, sc.want)
			}
		})
	}
}

// TestHistoryDeterministicAcrossSnapshot: a snapshot taken after any step
// and restored, then the remaining steps, gives the same store.
func TestHistoryDeterministicAcrossSnapshot(t *testing.T) {
	for _, sc := range historyScenarios {
		t.Run(sc.name, func(t *testing.T) {
			whole := newHistStore(t)
			applyHistSteps(t, whole, histBase, sc.steps)
			for cut := 0; cut <= len(sc.steps); cut++ {
				a := newHistStore(t)
				applyHistSteps(t, a, histBase, sc.steps[:cut])
				var buf bytes.Buffer
				if err := a.Snapshot().Persist(&buf); err != nil {
					t.Fatal(err)
				}
				b := New()
				if err := b.Restore(&buf); err != nil {
					t.Fatal(err)
				}
				applyHistSteps(t, b, histBase+uint64(cut), sc.steps[cut:])
				if ok, why := Equal(whole, b); !ok {
					t.Fatalf("cut at %d: restored store differs: %s", cut, why)
				}
			}
		})
	}
}

// TestCurrentVersion: what a host runs now, before, during and after a
// failed switch and its rollback.
func TestCurrentVersion(t *testing.T) {
	s := newHistStore(t)
	steps := historyScenarios[0].steps
	want := map[int]string{0: "", 5: "1.0.0", 7: "1.0.0", 8: "1.0.0", 9: "2.0.0", 11: "2.0.0", 13: "1.0.0", 14: "1.0.0"}
	for i := 0; i <= len(steps); i++ {
		if i > 0 {
			applyHistSteps(t, s, histBase+uint64(i-1), steps[i-1:i])
		}
		w, ok := want[i]
		if !ok {
			continue
		}
		got, err := s.CurrentVersion(memdb.NewWatchSet(), "host-1", "web")
		if err != nil || got != w {
			t.Errorf("after %d steps: current %q %v, want %q", i, got, err, w)
		}
	}
}
