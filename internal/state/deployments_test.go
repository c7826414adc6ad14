package state

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/relhq/rel/internal/rollout"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// TestDeploymentRecords: a rollout that ends leaves a record with what the
// report needs; a rollback's end turns the deploy it reverted into
// rolled_back (keeping when it succeeded); the records outlive rollout
// retention and a snapshot, and their own retention removes them oldest
// first, bounded, a repeat removing nothing more.
func TestDeploymentRecords(t *testing.T) {
	s := overlapStore(t)
	if err := s.CreateRelease(5, &relv1.Release{App: "web", Version: "2.0.0", Sha256: "b" + s64[1:], ArtifactUrl: "https://example.com/b.tar.gz",
		CreatedUnixNano: 50, CommitUnixNano: 40}); err != nil {
		t.Fatal(err)
	}
	ro := rolloutOver("ro-1", "web", "prod", "h1", "h2")
	ro.Version, ro.CreatedUnixNano, ro.ChangeType = "2.0.0", 60, rollout.ChangeNormal
	ro.Spec = &relv1.RolloutSpec{Strategy: "rolling"}
	// Its start gate waited from 100 to 400.
	evs := []*relv1.RolloutEvent{{RolloutId: "ro-1", Seq: 1, AtUnixNano: 100, Type: rollout.EventAwaitingApproval},
		{RolloutId: "ro-1", Seq: 2, AtUnixNano: 400, Type: rollout.EventApproved}}
	if err := s.CreateRollout(10, ro, nil, evs); err != nil {
		t.Fatal(err)
	}
	if ds, _, _ := s.Deployments(nil, "", "", 0, 1<<62); len(ds) != 0 {
		t.Fatalf("a running rollout has a record: %v", ds)
	}
	done := rolloutOver("ro-1", "web", "prod", "h1", "h2")
	done.Version, done.CreatedUnixNano, done.ChangeType, done.Spec = "2.0.0", 60, rollout.ChangeNormal, ro.Spec
	done.State, done.FinishedUnixNano = rollout.StateSucceeded, 900
	done.Hosts[0].State, done.Hosts[0].DispatchedUnixNano = rollout.HostHealthy, 500
	done.Hosts[1].State, done.Hosts[1].DispatchedUnixNano = rollout.HostHealthy, 450
	if err := s.StepRollout(11, done, false, 10, nil, []*relv1.RolloutEvent{{RolloutId: "ro-1", Seq: 3, AtUnixNano: 900, Type: "succeeded"}}, nil); err != nil {
		t.Fatal(err)
	}
	want := &relv1.Deployment{RolloutId: "ro-1", App: "web", Environment: "prod", Version: "2.0.0", Sha256: "b" + s64[1:], Kind: rollout.KindDeploy,
		Strategy: "rolling", Outcome: rollout.StateSucceeded, RequestedUnixNano: 60, StartedUnixNano: 450, FinishedUnixNano: 900, SucceededUnixNano: 900,
		ReleaseCreatedUnixNano: 50, CommitUnixNano: 40, ApprovalWaitNanos: 300, AwaitedApproval: true, ChangeType: rollout.ChangeNormal,
		Hosts: 2, HostsHealthy: 2, CreateIndex: 11, ModifyIndex: 11}
	checkDeployment(t, s, want)

	// The rollback: ro-1 rolls back, then is rolled back when it succeeds.
	rb := rolloutOver("ro-rb", "web", "prod", "h1", "h2")
	rb.Kind, rb.RollbackOf, rb.CreatedUnixNano = rollout.KindRollback, "ro-1", 1000
	if err := s.CreateRollout(12, rb, nil, nil); err != nil {
		t.Fatal(err)
	}
	rbDone := rolloutOver("ro-rb", "web", "prod", "h1", "h2")
	rbDone.Kind, rbDone.RollbackOf, rbDone.CreatedUnixNano = rollout.KindRollback, "ro-1", 1000
	rbDone.State, rbDone.FinishedUnixNano = rollout.StateSucceeded, 1500
	if err := s.StepRollout(13, rbDone, false, 12, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	if r, _ := s.Rollout(nil, "ro-1"); r.GetState() != rollout.StateRolledBack {
		t.Fatalf("ro-1 is %s after its rollback succeeded", r.GetState())
	}
	want.Outcome, want.ModifyIndex = rollout.StateRolledBack, 13
	if r, _ := s.Rollout(nil, "ro-1"); r.GetFinishedUnixNano() > want.FinishedUnixNano {
		want.FinishedUnixNano = r.GetFinishedUnixNano()
	}
	checkDeployment(t, s, want)

	// Rollout retention removes both rollouts; the records stay, and
	// survive a snapshot.
	if n, err := s.RemoveRollouts(14, []string{"ro-1", "ro-rb"}); err != nil || n != 2 {
		t.Fatalf("removed %d rollouts, %v", n, err)
	}
	var buf bytes.Buffer
	if err := s.Snapshot().Persist(&buf); err != nil {
		t.Fatal(err)
	}
	restored := New()
	if err := restored.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	if ok, why := Equal(s, restored); !ok {
		t.Fatalf("restored store differs: %s", why)
	}
	checkDeployment(t, restored, want)
	ds, _, err := restored.Deployments(nil, "web", "prod", 0, 1<<62)
	if err != nil || len(ds) != 2 || ds[1].GetRolloutId() != "ro-rb" || ds[1].GetKind() != rollout.KindRollback || ds[1].GetRollbackOf() != "ro-1" {
		t.Fatalf("records after retention and restore: %v, %v", ds, err)
	}
	if ds, _, _ := restored.Deployments(nil, "web", "qa", 0, 1<<62); len(ds) != 0 {
		t.Errorf("qa has records: %v", ds)
	}

	// Their own retention: cutoff 1500 takes both, one per pass here.
	if n, _ := restored.PrunableDeployments(1499, 10); n != 0 {
		t.Errorf("%d records finished at or before 1499, want none", n)
	}
	for i, wantLeft := range []int{1, 0, 0} {
		if _, err := restored.PruneDeployments(uint64(20+i), 1500, 1); err != nil {
			t.Fatal(err)
		}
		if ds, _, _ := restored.Deployments(nil, "", "", 0, 1<<62); len(ds) != wantLeft {
			t.Fatalf("pass %d left %d records, want %d", i, len(ds), wantLeft)
		}
	}
}

const s64 = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

func checkDeployment(t *testing.T, s *Store, want *relv1.Deployment) {
	t.Helper()
	ds, _, err := s.Deployments(nil, want.GetApp(), "", 0, 1<<62)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		if d.GetRolloutId() == want.GetRolloutId() {
			if !proto.Equal(d, want) {
				t.Fatalf("record\n got %v\nwant %v", d, want)
			}
			return
		}
	}
	t.Fatalf("no record of %s in %v", want.GetRolloutId(), ds)
}
