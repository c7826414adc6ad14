package state

import (
	"bytes"
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/relhq/rel/internal/rollout"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

func deltaTestRollout() *relv1.Rollout {
	return &relv1.Rollout{Id: "ro-1", App: "web", Version: "2.0.0", Environment: "prod", Kind: rollout.KindDeploy, State: rollout.StateRunning,
		Spec: &relv1.RolloutSpec{Strategy: "rolling", MaxParallel: 1}, CreatedUnixNano: 1, EventSeq: 1, WaveCount: 1,
		Hosts: []*relv1.RolloutHost{
			{AgentId: "a", State: "dispatched", TargetVersion: "2.0.0", PreviousVersion: "1.0.0", DispatchedUnixNano: 1},
			{AgentId: "b", State: "pending", TargetVersion: "2.0.0", PreviousVersion: "1.0.0"},
			{AgentId: "c", State: "pending", TargetVersion: "2.0.0", PreviousVersion: "1.0.0"},
		}}
}

func TestStepRowDeltaSharesUnchangedHosts(t *testing.T) {
	cur := deltaTestRollout()
	before := proto.Clone(cur).(*relv1.Rollout)
	delta := &relv1.Rollout{Id: "ro-1", App: "web", Version: "2.0.0", Environment: "prod", Kind: rollout.KindDeploy, State: rollout.StateRunning,
		Spec: &relv1.RolloutSpec{Strategy: "rolling", MaxParallel: 1}, CreatedUnixNano: 1, EventSeq: 3, WaveCount: 1, LastProgressUnixNano: 5,
		Hosts: []*relv1.RolloutHost{{AgentId: "b", State: "dispatched", TargetVersion: "2.0.0", PreviousVersion: "1.0.0", DispatchedUnixNano: 5}}}
	got, err := stepRow(cur, delta, true)
	if err != nil {
		t.Fatal(err)
	}
	want := proto.Clone(delta).(*relv1.Rollout)
	want.Hosts = []*relv1.RolloutHost{before.Hosts[0], delta.Hosts[0], before.Hosts[2]}
	if !proto.Equal(got, want) {
		t.Fatalf("merged row:\n got %v\nwant %v", got, want)
	}
	if !proto.Equal(cur, before) {
		t.Fatalf("merge changed the stored row: %v", cur)
	}
	if got.Hosts[0] != cur.Hosts[0] || got.Hosts[2] != cur.Hosts[2] {
		t.Error("unchanged hosts were copied, not shared with the stored row")
	}
	if got.Hosts[1] == delta.Hosts[0] || got.Spec == delta.Spec {
		t.Error("the merged row shares messages with the command it was decoded from")
	}
	// A delta without hosts changes only the header.
	delta.Hosts = nil
	got, err = stepRow(cur, delta, true)
	if err != nil || len(got.Hosts) != 3 || got.Hosts[1] != cur.Hosts[1] || got.GetEventSeq() != 3 {
		t.Fatalf("header-only delta: %v %v", got, err)
	}
}

func TestStepRowDeltaRefusesUnknownOrRepeatedHosts(t *testing.T) {
	for name, hosts := range map[string][]*relv1.RolloutHost{
		"unknown host": {{AgentId: "b", State: "healthy"}, {AgentId: "zz", State: "healthy"}},
		"host twice":   {{AgentId: "b", State: "healthy"}, {AgentId: "b", State: "failed"}},
	} {
		delta := deltaTestRollout()
		delta.Hosts = hosts
		got, err := stepRow(deltaTestRollout(), delta, true)
		if !errors.Is(err, ErrConflict) || got != nil {
			t.Errorf("%s: %v, %v; want ErrConflict and no row", name, got, err)
		}
	}
}

// deltaStore holds a running rollout of three hosts, created at index 3.
func deltaStore(t *testing.T) *Store {
	t.Helper()
	s := New()
	mustApp(t, s, 1, "web")
	if err := s.CreateRelease(2, &relv1.Release{App: "web", Version: "2.0.0"}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateRollout(3, deltaTestRollout(), nil, []*relv1.RolloutEvent{{RolloutId: "ro-1", Seq: 1, Type: "started"}}); err != nil {
		t.Fatal(err)
	}
	return s
}

func copyStore(t *testing.T, s *Store) *Store {
	t.Helper()
	var buf bytes.Buffer
	if err := s.Snapshot().Persist(&buf); err != nil {
		t.Fatal(err)
	}
	c := New()
	if err := c.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestStepRolloutDelta(t *testing.T) {
	s := deltaStore(t)
	next := deltaTestRollout()
	next.Hosts[0].State, next.Hosts[0].FinishedUnixNano = "healthy", 9
	next.Hosts[1].State, next.Hosts[1].DispatchedUnixNano = "dispatched", 9
	next.EventSeq, next.LastProgressUnixNano = 3, 9
	delta := proto.Clone(next).(*relv1.Rollout)
	delta.Hosts = delta.Hosts[:2]
	desired := []*relv1.Desired{{AgentId: "b", App: "web", Version: "2.0.0", RolloutId: "ro-1"}}
	events := []*relv1.RolloutEvent{{RolloutId: "ro-1", Seq: 2, Type: "host_healthy", Host: "a"}, {RolloutId: "ro-1", Seq: 3, Type: "dispatched", Host: "b"}}

	// A delta naming a host the rollout does not hold is refused whole:
	// no row, desired state or event of it is written.
	bad := proto.Clone(delta).(*relv1.Rollout)
	bad.Hosts[1].AgentId = "stranger"
	before := copyStore(t, s)
	if err := s.StepRollout(4, bad, true, 3, desired, events, nil); !errors.Is(err, ErrConflict) {
		t.Fatalf("delta with an unknown host: %v, want ErrConflict", err)
	}
	if ok, why := Equal(s, before); !ok {
		t.Fatalf("refused delta changed the store: %s", why)
	}

	if err := s.StepRollout(4, delta, true, 3, desired, events, nil); err != nil {
		t.Fatal(err)
	}
	got, err := s.Rollout(nil, "ro-1")
	if err != nil {
		t.Fatal(err)
	}
	next.CreateIndex, next.ModifyIndex = 3, 4
	if !proto.Equal(got, next) {
		t.Fatalf("row after the delta:\n got %v\nwant %v", got, next)
	}
	if d, gen, _ := s.DesiredFor(nil, "b"); len(d) != 1 || gen != 4 {
		t.Fatalf("desired of b: %v at %d", d, gen)
	}
	// Rows that share hosts snapshot and restore like any other.
	if ok, why := Equal(s, copyStore(t, s)); !ok {
		t.Fatalf("snapshot after a delta: %s", why)
	}

	// A whole row (a step written before deltas) still replaces the row,
	// hosts and all.
	whole := proto.Clone(next).(*relv1.Rollout)
	whole.Hosts = whole.Hosts[:1]
	if err := s.StepRollout(5, whole, false, 4, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Rollout(nil, "ro-1"); len(got.GetHosts()) != 1 {
		t.Fatalf("whole-row step: %d hosts, want the row's 1", len(got.GetHosts()))
	}
}
