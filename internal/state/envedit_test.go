package state

import (
	"errors"
	"strings"
	"testing"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// TestUpdateEnvironmentRace: of two updates decided on the same row, the
// first committed wins and the second is refused (Conflict), so the hosts
// it said join and leave are never those of another selector.
func TestUpdateEnvironmentRace(t *testing.T) {
	s := New()
	if err := s.CreateEnvironment(1, &relv1.Environment{Name: "prod", Selector: map[string]string{"env": "prod"}, CreatedUnixNano: 5}); err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateEnvironment(2, &relv1.Environment{Name: "prod", Selector: map[string]string{"region": "eu"}}, 1); err != nil {
		t.Fatal(err)
	}
	err := s.UpdateEnvironment(3, &relv1.Environment{Name: "prod", Selector: map[string]string{"region": "us"}}, 1)
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "changed (at index 2)") {
		t.Fatalf("second update on the old row: %v, want a conflict", err)
	}
	envs, _, _ := s.Environments(nil)
	if e := envs[0]; e.GetSelector()["region"] != "eu" || e.GetCreateIndex() != 1 || e.GetModifyIndex() != 2 || e.GetCreatedUnixNano() != 5 {
		t.Fatalf("row %v", e)
	}
	if err := s.UpdateEnvironment(4, &relv1.Environment{Name: "dev", Selector: map[string]string{"a": "b"}}, 1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown env: %v", err)
	}
	if err := s.DeleteEnvironment(5, "prod"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteEnvironment(6, "prod"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete twice: %v", err)
	}
}

// TestEnvironmentEditActiveRollout: a selector change and a delete are
// refused while a rollout to the environment is active, naming it; a
// description change is not; a rollout to another environment does not
// count.
func TestEnvironmentEditActiveRollout(t *testing.T) {
	s := New()
	mustApp(t, s, 1, "web")
	for i, name := range []string{"prod", "dev"} {
		if err := s.CreateEnvironment(uint64(2+i), &relv1.Environment{Name: name, Selector: map[string]string{"env": name}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CreateRelease(4, &relv1.Release{App: "web", Version: "1.0.0"}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateRollout(5, &relv1.Rollout{Id: "ro-1", App: "web", Version: "1.0.0", Environment: "prod", State: "running",
		Hosts: []*relv1.RolloutHost{{AgentId: "h1"}}}, nil, nil); err != nil {
		t.Fatal(err)
	}
	err := s.UpdateEnvironment(6, &relv1.Environment{Name: "prod", Selector: map[string]string{"env": "x"}}, 2)
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "ro-1 (web@1.0.0, running)") {
		t.Fatalf("selector change: %v", err)
	}
	if err := s.DeleteEnvironment(6, "prod"); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "ro-1") {
		t.Fatalf("delete: %v", err)
	}
	if err := s.UpdateEnvironment(6, &relv1.Environment{Name: "prod", Description: "p", Selector: map[string]string{"env": "prod"}}, 2); err != nil {
		t.Fatalf("description change: %v", err)
	}
	if err := s.UpdateEnvironment(7, &relv1.Environment{Name: "dev", Selector: map[string]string{"env": "y"}}, 3); err != nil {
		t.Fatalf("another env's selector: %v", err)
	}
	if err := s.DeleteEnvironment(8, "dev"); err != nil {
		t.Fatalf("delete another env: %v", err)
	}
}
