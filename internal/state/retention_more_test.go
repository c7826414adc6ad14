package state

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"

	"github.com/hashicorp/go-memdb"

	"github.com/relhq/rel/internal/rollout"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// putRows writes history rows as the FSM would at index.
func putRows(t *testing.T, s *Store, index uint64, rows ...*relv1.HistoryEntry) {
	t.Helper()
	txn := s.writeTxn()
	defer txn.Abort()
	for _, h := range rows {
		if err := putHistory(txn, index, h); err != nil {
			t.Fatal(err)
		}
	}
	txn.Commit()
}

func hrow(agent, version string, from, to int64, outcome string, idx uint64) *relv1.HistoryEntry {
	return &relv1.HistoryEntry{App: "web", AgentId: agent, Version: version, FromUnixNano: from, ToUnixNano: to, Outcome: outcome, CreateIndex: idx}
}

func historyKeys(t *testing.T, s *Store) []string {
	t.Helper()
	hs, _, err := s.History(memdb.NewWatchSet(), "web")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, h := range hs {
		out = append(out, fmt.Sprintf("%s %s", h.GetAgentId(), h.GetVersion()))
	}
	sort.Strings(out)
	return out
}

// TestFoldHistory: exactly the closed entries that ended at or before the
// cutoff are folded, oldest first up to the bound, into one summary per
// (app, host); the open entry is never folded, however old.
func TestFoldHistory(t *testing.T) {
	rows := func() []*relv1.HistoryEntry {
		return []*relv1.HistoryEntry{
			hrow("host-1", "1.0", 10, 20, OutcomeReplaced, 1),
			hrow("host-1", "1.1", 20, 30, OutcomeFailed, 2),
			hrow("host-1", "1.2", 30, 100, OutcomeRolledBack, 3), // ends at the cutoff
			hrow("host-1", "1.3", 100, 101, OutcomeReplaced, 4),  // one after it
			hrow("host-1", "1.4", 5, 0, OutcomeRunning, 5),       // open: runs now
			hrow("host-10", "1.0", 15, 25, OutcomeReplaced, 6),   // a host whose id has host-1 as a prefix
		}
	}
	cases := []struct {
		name     string
		limit    int
		folded   int
		kept     []string
		summary1 string // host-1's summary
	}{
		{"every expired entry", 5000, 4, []string{"host-1 1.3", "host-1 1.4"},
			"entries=3 replaced=1 failed=1 rolled_back=1 other=0 first=10 last=100 version=1.2"},
		{"bounded, oldest first", 2, 2, []string{"host-1 1.1", "host-1 1.2", "host-1 1.3", "host-1 1.4"},
			"entries=1 replaced=1 failed=0 rolled_back=0 other=0 first=10 last=20 version=1.0"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newHistStore(t)
			putRows(t, s, 10, rows()...)
			if n, err := s.FoldableHistory(100, tc.limit); err != nil || n != tc.folded {
				t.Fatalf("foldable: %d, %v; want %d", n, err, tc.folded)
			}
			n, err := s.FoldHistory(11, 100, tc.limit)
			if err != nil || n != tc.folded {
				t.Fatalf("folded %d, %v; want %d", n, err, tc.folded)
			}
			if got := historyKeys(t, s); strings.Join(got, ",") != strings.Join(tc.kept, ",") {
				t.Fatalf("kept %v, want %v", got, tc.kept)
			}
			sums, idx, err := s.HistorySummaries(nil, "web")
			if err != nil || idx != 11 {
				t.Fatalf("summaries at %d: %v", idx, err)
			}
			got := map[string]string{}
			for _, m := range sums {
				got[m.GetAgentId()] = fmt.Sprintf("entries=%d replaced=%d failed=%d rolled_back=%d other=%d first=%d last=%d version=%s",
					m.GetEntries(), m.GetReplaced(), m.GetFailed(), m.GetRolledBack(), m.GetOther(), m.GetFirstUnixNano(), m.GetLastUnixNano(), m.GetLastVersion())
			}
			if got["host-1"] != tc.summary1 {
				t.Fatalf("host-1 summary %q, want %q", got["host-1"], tc.summary1)
			}
			// A repeat of the same entry folds what is left, never twice.
			if _, err := s.FoldHistory(12, 100, 5000); err != nil {
				t.Fatal(err)
			}
			if n, _ := s.FoldableHistory(100, 5000); n != 0 {
				t.Fatalf("%d entries still foldable", n)
			}
			sums, _, _ = s.HistorySummaries(nil, "web")
			var total uint64
			for _, m := range sums {
				total += m.GetEntries()
			}
			if total != 4 {
				t.Fatalf("summaries count %d entries, want 4", total)
			}
		})
	}
	t.Run("nothing to fold changes nothing", func(t *testing.T) {
		s := newHistStore(t)
		putRows(t, s, 10, rows()...)
		if n, err := s.FoldHistory(11, 9, 5000); err != nil || n != 0 {
			t.Fatalf("folded %d, %v", n, err)
		}
		if s.LatestIndex() != 10 {
			t.Fatalf("latest index %d: an empty pass wrote", s.LatestIndex())
		}
	})
}

// agentStore has agents that disconnected at the given times (0:
// connected), each with an app row, a desired row and an open history
// entry, and a rollout "ro-held" running over "held".
func agentStore(t *testing.T, down map[string]int64) *Store {
	t.Helper()
	s := New()
	idx := uint64(1)
	if err := s.CreateApp(idx, &relv1.App{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	idx++
	if err := s.CreateRelease(idx, &relv1.Release{App: "web", Version: "1.0.0"}); err != nil {
		t.Fatal(err)
	}
	ids := make([]string, 0, len(down))
	for id := range down {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		idx++
		if err := s.AgentUp(idx, &relv1.Agent{Id: id, SessionId: "s-" + id, ServerId: "s1"},
			[]*relv1.AppReport{{App: "web", Version: "1.0.0", Phase: "healthy", AtUnixNano: 1}}); err != nil {
			t.Fatal(err)
		}
	}
	idx++
	ro := rolloutOver("ro-held", "web", "prod", "held")
	var desired []*relv1.Desired
	for _, id := range ids {
		desired = append(desired, &relv1.Desired{AgentId: id, App: "web", Version: "1.0.0", RolloutId: "ro-held"})
	}
	if err := s.CreateRollout(idx, ro, desired, nil); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		if down[id] == 0 {
			continue
		}
		idx++
		if err := s.AgentDown(idx, id, "s-"+id, down[id], "stream closed"); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// TestRemoveAgents: exactly the agents disconnected since at or before
// the cutoff and held by no active rollout go, with their app and
// desired rows; their history stays, closed; the FSM re-checks what the
// leader picked; a removed agent that comes back registers again.
func TestRemoveAgents(t *testing.T) {
	down := map[string]int64{
		"connected": 0,
		"old":       50,  // before the cutoff
		"boundary":  100, // at it
		"recent":    101, // after it
		"held":      10,  // long gone, but ro-held runs over it
		"old-1":     10,
		"old-10":    0, // connected, and its id has old-1 as a prefix
	}
	s := agentStore(t, down)
	picked, err := s.ExpiredAgents(100, 1000)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"boundary", "old", "old-1"}
	if strings.Join(picked, ",") != strings.Join(want, ",") {
		t.Fatalf("picked %v, want %v", picked, want)
	}
	if got, _ := s.ExpiredAgents(100, 2); len(got) != 2 {
		t.Fatalf("limit 2 picked %v", got)
	}
	// The leader decided; then "old" came back before the entry applied.
	if err := s.AgentUp(100, &relv1.Agent{Id: "old", SessionId: "s-old-2", ServerId: "s1"}, nil); err != nil {
		t.Fatal(err)
	}
	n, err := s.RemoveAgents(101, append(picked, "connected", "recent", "held", "unknown"), 100, 200)
	if err != nil || n != 2 {
		t.Fatalf("removed %d, %v; want 2 (boundary, old-1)", n, err)
	}
	agents, _, _ := s.Agents(nil)
	var left []string
	for _, a := range agents {
		left = append(left, a.GetId())
	}
	if got := strings.Join(left, ","); got != "connected,held,old,old-10,recent" {
		t.Fatalf("agents left: %s", got)
	}
	for id, wantRows := range map[string]int{"old-1": 0, "boundary": 0, "old-10": 1, "old": 1} {
		apps, _ := s.AgentApps(nil, id)
		desired, _, _ := s.DesiredFor(nil, id)
		if len(apps) != wantRows || len(desired) != wantRows {
			t.Errorf("%s: %d app rows and %d desired rows, want %d", id, len(apps), len(desired), wantRows)
		}
	}
	hs, _, _ := s.History(nil, "web")
	for _, h := range hs {
		removed := h.GetAgentId() == "old-1" || h.GetAgentId() == "boundary"
		if removed != (h.GetToUnixNano() != 0) {
			t.Errorf("history of %s: to %d", h.GetAgentId(), h.GetToUnixNano())
		}
		if removed && (h.GetToUnixNano() != 200 || h.GetReplacedByKind() != ReasonAgentRemoved) {
			t.Errorf("history of removed %s: %v", h.GetAgentId(), h)
		}
	}
	// A repeat removes nothing.
	if n, err := s.RemoveAgents(102, picked, 100, 200); err != nil || n != 0 {
		t.Fatalf("repeat removed %d, %v", n, err)
	}
	// old-1 comes back: its hello registers it anew and its report opens
	// a new history entry.
	if err := s.AgentUp(103, &relv1.Agent{Id: "old-1", SessionId: "s-back", ServerId: "s1"},
		[]*relv1.AppReport{{App: "web", Version: "1.0.0", Phase: "healthy", AtUnixNano: 300}}); err != nil {
		t.Fatal(err)
	}
	a, err := s.Agent(nil, "old-1")
	if err != nil || !a.GetConnected() || a.GetCreateIndex() != 103 {
		t.Fatalf("old-1 back: %v, %v", a, err)
	}
	if v, _ := s.CurrentVersion(nil, "old-1", "web"); v != "1.0.0" {
		t.Fatalf("old-1 runs %q", v)
	}
}

// TestDeleteRelease: a release is deleted only when nothing needs it, and
// each refusal says why and what to do, and stores nothing.
func TestDeleteRelease(t *testing.T) {
	const v1, v2 = "1.0.0", "2.0.0"
	base := func(t *testing.T) *Store {
		s := New()
		if err := s.CreateApp(1, &relv1.App{Name: "web"}); err != nil {
			t.Fatal(err)
		}
		for i, v := range []string{v1, v2, "3.0.0"} {
			if err := s.CreateRelease(uint64(2+i), &relv1.Release{App: "web", Version: v, Sha256: strings.Repeat(fmt.Sprint(i+1), 64)}); err != nil {
				t.Fatal(err)
			}
		}
		return s
	}
	// ro makes a rollout row from v1 to v2 on host h in env.
	ro := func(id, env, state, kind string) *relv1.Rollout {
		return &relv1.Rollout{Id: id, App: "web", Version: v2, Environment: env, State: state, Kind: kind,
			Hosts: []*relv1.RolloutHost{{AgentId: "h", PreviousVersion: v1, TargetVersion: v2, State: "healthy", DispatchedUnixNano: 1}}}
	}
	cases := []struct {
		name    string
		setup   func(t *testing.T, s *Store)
		version string
		wantErr error
		want    string
	}{
		{"unknown", nil, "9.9.9", ErrNotFound, "release web@9.9.9 not found"},
		{"unused", nil, "3.0.0", nil, ""},
		{"a host runs it", func(t *testing.T, s *Store) {
			if err := s.AgentUp(10, &relv1.Agent{Id: "h", SessionId: "s"}, []*relv1.AppReport{{App: "web", Version: v1, Phase: "healthy"}}); err != nil {
				t.Fatal(err)
			}
		}, v1, ErrConflict, "host h has it (healthy): roll out another release"},
		{"a host installs it, falling back", func(t *testing.T, s *Store) {
			if err := s.AgentUp(10, &relv1.Agent{Id: "h", SessionId: "s"}, []*relv1.AppReport{{App: "web", Version: "3.0.0", PreviousVersion: v1, Phase: "downloading"}}); err != nil {
				t.Fatal(err)
			}
		}, v1, ErrConflict, "host h ran it before its current release"},
		{"a desired row names it", func(t *testing.T, s *Store) {
			r := ro("ro-1", "prod", rollout.StateFailed, rollout.KindDeploy)
			r.Version, r.Hosts = "3.0.0", nil
			if err := s.CreateRollout(10, r, []*relv1.Desired{{AgentId: "h", App: "web", Version: v1, RolloutId: "ro-1"}}, nil); err != nil {
				t.Fatal(err)
			}
		}, v1, ErrConflict, "host h is told to run it (rollout ro-1)"},
		{"an active rollout goes to it", func(t *testing.T, s *Store) {
			if err := s.CreateRollout(10, ro("ro-1", "prod", rollout.StateRunning, rollout.KindDeploy), nil, nil); err != nil {
				t.Fatal(err)
			}
		}, v2, ErrConflict, "rollout ro-1 (web@2.0.0, running) goes to or from it: wait until it finishes or abort it"},
		{"an active rollout comes from it", func(t *testing.T, s *Store) {
			if err := s.CreateRollout(10, ro("ro-1", "prod", rollout.StatePaused, rollout.KindDeploy), nil, nil); err != nil {
				t.Fatal(err)
			}
		}, v1, ErrConflict, "goes to or from it"},
		{"an environment's current release", func(t *testing.T, s *Store) {
			r := ro("ro-1", "prod", rollout.StateSucceeded, rollout.KindDeploy)
			r.RolledBackBy = "x" // so the rollback rule is not what refuses
			if err := s.CreateRollout(10, r, nil, nil); err != nil {
				t.Fatal(err)
			}
		}, v2, ErrConflict, "it is environment prod's current release (rollout ro-1): roll out another release to prod first"},
		{"a rollback could go back to it", func(t *testing.T, s *Store) {
			if err := s.CreateRollout(10, ro("ro-1", "prod", rollout.StateFailed, rollout.KindDeploy), nil, nil); err != nil {
				t.Fatal(err)
			}
		}, v1, ErrConflict, "'relctl rollout rollback ro-1' (the newest rollout to prod) would take hosts back to it"},
		{"an older rollout's previous release is free", func(t *testing.T, s *Store) {
			old := ro("ro-1", "prod", rollout.StateFailed, rollout.KindDeploy)
			newer := ro("ro-2", "prod", rollout.StateFailed, rollout.KindDeploy)
			newer.Version, newer.Hosts[0].PreviousVersion, newer.Hosts[0].TargetVersion = "3.0.0", v2, "3.0.0"
			for i, r := range []*relv1.Rollout{old, newer} {
				if err := s.CreateRollout(uint64(10+i), r, nil, nil); err != nil {
					t.Fatal(err)
				}
			}
		}, v1, nil, ""},
		{"an already rolled back rollout's previous release is free", func(t *testing.T, s *Store) {
			r := ro("ro-1", "prod", rollout.StateRolledBack, rollout.KindDeploy)
			r.RolledBackBy = "ro-2"
			if err := s.CreateRollout(10, r, nil, nil); err != nil {
				t.Fatal(err)
			}
		}, v1, nil, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := base(t)
			if tc.setup != nil {
				tc.setup(t, s)
			}
			before := s.LatestIndex()
			checkErr := s.CheckReleaseDeletable("web", tc.version)
			err := s.DeleteRelease(100, "web", tc.version)
			if !errors.Is(err, tc.wantErr) || !errors.Is(checkErr, tc.wantErr) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("delete: %v (check: %v); want %v containing %q", err, checkErr, tc.wantErr, tc.want)
			}
			_, _, getErr := s.Release(nil, "web", tc.version)
			if tc.wantErr != nil {
				if s.LatestIndex() != before {
					t.Fatal("a refused delete wrote")
				}
				if tc.wantErr == ErrConflict && getErr != nil {
					t.Fatalf("refused, yet the release is gone: %v", getErr)
				}
				return
			}
			if !errors.Is(getErr, ErrNotFound) {
				t.Fatalf("deleted release still there: %v", getErr)
			}
			rels, _, err := s.Releases(nil, "web")
			if err != nil || len(rels) != 2 {
				t.Fatalf("releases after the delete: %v, %v", rels, err)
			}
		})
	}
}

// TestSnapshotKeepsHistorySummaries: a snapshot carries the summaries.
func TestSnapshotKeepsHistorySummaries(t *testing.T) {
	s := newHistStore(t)
	putRows(t, s, 10, hrow("host-1", "1.0", 10, 20, OutcomeFailed, 1), hrow("host-2", "1.0", 10, 20, OutcomeReplaced, 2))
	if n, err := s.FoldHistory(11, 100, 5000); err != nil || n != 2 {
		t.Fatalf("folded %d, %v", n, err)
	}
	var buf bytes.Buffer
	if err := s.Snapshot().Persist(&buf); err != nil {
		t.Fatal(err)
	}
	r := New()
	if err := r.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	if ok, diff := Equal(s, r); !ok {
		t.Fatal(diff)
	}
	if sums, _, _ := r.HistorySummaries(nil, "web"); len(sums) != 2 || sums[0].GetFailed() != 1 {
		t.Fatalf("restored summaries: %v", sums)
	}
}
