package state

import (
	"testing"

	"github.com/relhq/rel/internal/rollout"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

func TestRemoveRollouts(t *testing.T) {
	s := overlapStore(t)
	for i, id := range []string{"ro-1", "ro-10"} {
		r := rolloutOver(id, "web", []string{"prod", "qa"}[i], []string{"h1", "h2"}[i])
		ev := []*relv1.RolloutEvent{{RolloutId: id, Seq: 1, Type: "started"}}
		if err := s.CreateRollout(uint64(10+i), r, nil, ev); err != nil {
			t.Fatal(err)
		}
	}
	done := rolloutOver("ro-1", "web", "prod", "h1")
	done.State = rollout.StateSucceeded
	if err := s.StepRollout(12, done, false, 10, nil, []*relv1.RolloutEvent{{RolloutId: "ro-1", Seq: 2, Type: "succeeded"}}, nil); err != nil {
		t.Fatal(err)
	}
	// ro-10 is running: skipped; ro-1 goes with its events, not ro-10's
	// (a prefix of its id); an unknown id is skipped.
	n, err := s.RemoveRollouts(13, []string{"ro-1", "ro-10", "ro-404"})
	if err != nil || n != 1 {
		t.Fatalf("removed %d, %v; want 1", n, err)
	}
	if _, err := s.Rollout(nil, "ro-1"); err == nil {
		t.Fatal("ro-1 still there")
	}
	if evs, _, _ := s.RolloutEvents(nil, "ro-1", 0); len(evs) != 0 {
		t.Fatalf("ro-1's events left: %v", evs)
	}
	if evs, _, _ := s.RolloutEvents(nil, "ro-10", 0); len(evs) != 1 {
		t.Fatalf("ro-10's events: %v, want its one", evs)
	}
	if n, err := s.RemoveRollouts(14, []string{"ro-1"}); err != nil || n != 0 {
		t.Fatalf("a repeat removed %d, %v", n, err)
	}
}
