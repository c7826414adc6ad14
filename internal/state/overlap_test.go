package state

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"pgregory.net/rapid"

	"github.com/relhq/rel/internal/rollout"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

func rolloutOver(id, app, env string, hosts ...string) *relv1.Rollout {
	r := &relv1.Rollout{Id: id, App: app, Version: "1.0.0", Environment: env, Kind: rollout.KindDeploy, State: rollout.StateRunning}
	for _, h := range hosts {
		r.Hosts = append(r.Hosts, &relv1.RolloutHost{AgentId: h, State: "pending", TargetVersion: "1.0.0"})
	}
	return r
}

func overlapStore(t interface{ Fatal(...any) }) *Store {
	s := New()
	for i, app := range []string{"web", "api"} {
		if err := s.CreateApp(uint64(1+2*i), &relv1.App{Name: app}); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateRelease(uint64(2+2*i), &relv1.Release{App: app, Version: "1.0.0", Sha256: strings.Repeat("a", 64), ArtifactUrl: "https://example.com/a.tar.gz"}); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// Finding 3 of issue 8: prod (env=prod) and prod-eu (zone=eu) overlap. A
// rollout of the same app over hosts an active one holds is refused,
// naming it; one of another app, or over other hosts, is not.
func TestOverlappingRolloutRefused(t *testing.T) {
	s := overlapStore(t)
	if err := s.CreateRollout(10, rolloutOver("ro-prod", "web", "prod", "h1", "h2", "h3"), nil, nil); err != nil {
		t.Fatal(err)
	}
	err := s.CreateRollout(11, rolloutOver("ro-eu", "web", "prod-eu", "h3", "h4"), nil, nil)
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "rollout ro-prod of web@1.0.0 to prod is running and holds 1 of its hosts (h3)") ||
		!strings.Contains(err.Error(), "--queue") {
		t.Fatalf("overlapping rollout: %v", err)
	}
	if _, err := s.Rollout(nil, "ro-eu"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("refused rollout stored: %v", err)
	}
	for _, r := range []*relv1.Rollout{
		rolloutOver("ro-eu2", "web", "prod-eu", "h4", "h5"), // other hosts
		rolloutOver("ro-api", "api", "prod", "h1", "h2"),    // other app
	} {
		if err := s.CreateRollout(12, r, nil, nil); err != nil {
			t.Fatalf("%s: %v", r.Id, err)
		}
	}
	// Queued, it is stored; it leaves the queue only once nothing holds
	// its hosts, checked in the entry that starts it.
	q := rolloutOver("ro-q", "web", "prod-eu", "h3", "h4")
	q.State = rollout.StateQueued
	if err := s.CreateRollout(13, q, nil, nil); err != nil {
		t.Fatal(err)
	}
	start := proto.Clone(q).(*relv1.Rollout)
	start.State = rollout.StateRunning
	if err := s.StepRollout(14, start, false, 13, nil, nil, nil); !errors.Is(err, ErrConflict) {
		t.Fatalf("dequeued while ro-prod holds h3: %v", err)
	}
	end := rolloutOver("ro-prod", "web", "prod", "h1", "h2", "h3")
	end.State = rollout.StateSucceeded
	if err := s.StepRollout(15, end, false, 10, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.StepRollout(16, start, false, 13, nil, nil, nil); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "ro-eu2") {
		t.Fatalf("dequeued while ro-eu2 (same environment) is running: %v", err)
	}
}

// TestNoHostInTwoActiveRollouts: whatever sequence of starts (queued or
// not), dequeues, rollbacks and ends the store accepts, no host is in two
// active (not queued) rollouts of one app, but for a rollout and its own
// rollback.
func TestNoHostInTwoActiveRollouts(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		s := overlapStore(t)
		idx := uint64(10)
		var ids []string
		pickHosts := func(label string) []string {
			var hs []string
			for i := 0; i < 6; i++ {
				if rapid.Bool().Draw(t, fmt.Sprintf("%s-h%d", label, i)) {
					hs = append(hs, fmt.Sprintf("h%d", i))
				}
			}
			if len(hs) == 0 {
				hs = []string{"h0"}
			}
			return hs
		}
		for op := 0; op < 40; op++ {
			idx++
			switch rapid.IntRange(0, 3).Draw(t, "op") {
			case 0: // start, maybe queued
				r := rolloutOver(fmt.Sprintf("ro-%d", idx), rapid.SampledFrom([]string{"web", "api"}).Draw(t, "app"),
					rapid.SampledFrom([]string{"prod", "prod-eu", "qa"}).Draw(t, "env"), pickHosts("start")...)
				if rapid.Bool().Draw(t, "queue") {
					r.State = rollout.StateQueued
				}
				if err := s.CreateRollout(idx, r, nil, nil); err == nil {
					ids = append(ids, r.Id)
				} else if !errors.Is(err, ErrConflict) {
					t.Fatal(err)
				}
			case 1, 2: // dequeue, end, or roll back an existing one
				if len(ids) == 0 {
					continue
				}
				cur, err := s.Rollout(nil, rapid.SampledFrom(ids).Draw(t, "id"))
				if err != nil {
					t.Fatal(err)
				}
				next := proto.Clone(cur).(*relv1.Rollout)
				switch {
				case cur.GetState() == rollout.StateQueued:
					next.State = rollout.StateRunning
				case !rollout.Terminal(cur.GetState()) && cur.GetState() != rollout.StateRollingBack:
					next.State = rapid.SampledFrom([]string{rollout.StateSucceeded, rollout.StateFailed}).Draw(t, "end")
				case cur.GetKind() == rollout.KindDeploy && cur.GetRolledBackBy() == "":
					rb := rolloutOver(fmt.Sprintf("rb-%d", idx), cur.GetApp(), cur.GetEnvironment())
					rb.Kind, rb.RollbackOf, rb.Hosts = rollout.KindRollback, cur.GetId(), cur.GetHosts()
					if err := s.CreateRollout(idx, rb, nil, nil); err == nil {
						ids = append(ids, rb.Id)
					} else if !errors.Is(err, ErrConflict) {
						t.Fatal(err)
					}
					continue
				default:
					continue
				}
				if err := s.StepRollout(idx, next, false, cur.GetModifyIndex(), nil, nil, nil); err != nil && !errors.Is(err, ErrConflict) {
					t.Fatal(err)
				}
			case 3: // a rollout ending frees its hosts
				active, _ := s.ActiveRollouts(nil)
				for _, r := range active {
					if r.GetState() == rollout.StateRunning && r.GetKind() == rollout.KindRollback {
						next := proto.Clone(r).(*relv1.Rollout)
						next.State = rollout.StateSucceeded
						if err := s.StepRollout(idx, next, false, r.GetModifyIndex(), nil, nil, nil); err != nil {
							t.Fatal(err)
						}
						break
					}
				}
			}
			active, err := s.ActiveRollouts(nil)
			if err != nil {
				t.Fatal(err)
			}
			holder := map[string]*relv1.Rollout{}
			for _, r := range active {
				if r.GetState() == rollout.StateQueued {
					continue
				}
				for _, h := range r.GetHosts() {
					key := r.GetApp() + "/" + h.GetAgentId()
					if o := holder[key]; o != nil && o.GetRollbackOf() != r.GetId() && r.GetRollbackOf() != o.GetId() {
						t.Fatalf("host %s of %s in two active rollouts: %s (%s) and %s (%s)", h.GetAgentId(), r.GetApp(), o.GetId(), o.GetState(), r.GetId(), r.GetState())
					}
					holder[key] = r
				}
			}
		}
	})
}

// A rollback is never held back by a rollout queued behind the one it
// reverts: an automatic rollback is decided in the entry that fails the
// rollout, and refusing it refused that whole step, again and again (found
// by TestReplayedCommandChangesNothing).
func TestRollbackNotBlockedByQueued(t *testing.T) {
	s := overlapStore(t)
	if err := s.CreateRollout(10, rolloutOver("ro-x", "web", "prod", "h1"), nil, nil); err != nil {
		t.Fatal(err)
	}
	q := rolloutOver("ro-q", "web", "prod", "h1")
	q.State = rollout.StateQueued
	if err := s.CreateRollout(11, q, nil, nil); err != nil {
		t.Fatal(err)
	}
	failed := rolloutOver("ro-x", "web", "prod", "h1")
	failed.State = rollout.StateFailed
	rb := rolloutOver("ro-rb", "web", "prod", "h1")
	rb.Kind, rb.RollbackOf = rollout.KindRollback, "ro-x"
	if err := s.StepRollout(12, failed, false, 10, nil, nil, &relv1.CreateRollout{Rollout: rb}); err != nil {
		t.Fatalf("a failing step with its automatic rollback, a rollout queued behind: %v", err)
	}
	if r, err := s.Rollout(nil, "ro-x"); err != nil || r.GetState() != rollout.StateRollingBack {
		t.Fatalf("ro-x: %v %v", r.GetState(), err)
	}
}
