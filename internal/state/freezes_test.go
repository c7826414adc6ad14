package state

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/relhq/rel/internal/rollout"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// TestFreezeAtCreate: the FSM decides the freeze again at the command's
// time: a deploy inside one is stored frozen with nothing dispatched, an
// emergency records the window it overrode, a rollback is not held, and
// a rollout outside the window's scope or time starts as planned.
func TestFreezeAtCreate(t *testing.T) {
	at := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	win := &relv1.FreezeWindow{Name: "black-friday", Apps: []string{"web*"}, Environments: []string{"prod"},
		StartUnixNano: at.Add(-time.Hour).UnixNano(), EndUnixNano: at.Add(time.Hour).UnixNano(), Reason: "Black Friday"}
	running := func(id, app, env string, at time.Time) *relv1.Rollout {
		r := rolloutOver(id, app, env, "h1", "h2")
		r.CreatedUnixNano = at.UnixNano()
		r.Hosts[0].State, r.Hosts[0].DispatchedUnixNano = rollout.HostDispatched, at.UnixNano()
		r.EventSeq = 2
		return r
	}
	events := func(id string) []*relv1.RolloutEvent {
		return []*relv1.RolloutEvent{{RolloutId: id, Seq: 1, Type: rollout.EventStarted}, {RolloutId: id, Seq: 2, Type: rollout.EventDispatched, Host: "h1"}}
	}
	desired := func(id string) []*relv1.Desired {
		return []*relv1.Desired{{AgentId: "h1", App: "web", Version: "1.0.0", RolloutId: id}}
	}
	emergency := running("ro-e", "web", "prod", at)
	emergency.ChangeType = rollout.ChangeEmergency
	cases := []struct {
		name       string
		r          *relv1.Rollout
		wantState  string
		overridden string
		dispatched bool
	}{
		{"deploy inside the freeze", running("ro-1", "web", "prod", at), rollout.StateFrozen, "", false},
		{"emergency inside the freeze", emergency, rollout.StateRunning, "black-friday", true},
		{"other app", running("ro-2", "api", "prod", at), rollout.StateRunning, "", true},
		{"other environment", running("ro-3", "web", "staging", at), rollout.StateRunning, "", true},
		{"after the freeze", running("ro-4", "web", "prod", at.Add(time.Hour)), rollout.StateRunning, "", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := overlapStore(t)
			if err := s.CreateFreeze(10, win); err != nil {
				t.Fatal(err)
			}
			if err := s.CreateRollout(11, c.r, desired(c.r.GetId()), events(c.r.GetId())); err != nil {
				t.Fatal(err)
			}
			got, err := s.Rollout(nil, c.r.GetId())
			if err != nil {
				t.Fatal(err)
			}
			if got.GetState() != c.wantState || got.GetFreezeOverridden() != c.overridden {
				t.Fatalf("state %s overridden %q, want %s %q", got.GetState(), got.GetFreezeOverridden(), c.wantState, c.overridden)
			}
			ds, _, _ := s.DesiredFor(nil, "h1")
			if (len(ds) > 0) != c.dispatched || (got.GetHosts()[0].GetState() == rollout.HostDispatched) != c.dispatched {
				t.Fatalf("desired %v host %s, want dispatched %v", ds, got.GetHosts()[0].GetState(), c.dispatched)
			}
			evs, _, _ := s.RolloutEvents(nil, c.r.GetId(), 0)
			if c.wantState == rollout.StateFrozen {
				if !strings.Contains(got.GetReason(), "freeze black-friday until") || got.GetFrozenUntilUnixNano() != win.GetEndUnixNano() {
					t.Fatalf("reason %q until %d", got.GetReason(), got.GetFrozenUntilUnixNano())
				}
				if len(evs) != 2 || evs[1].GetType() != rollout.EventFrozen || got.GetEventSeq() != 2 {
					t.Fatalf("events %v (seq %d)", evs, got.GetEventSeq())
				}
			}
		})
	}
}

// TestFreezeNeverBlocksRollbacksOrEmergencies: a frozen rollout holds no
// host (like one awaiting approval, it is queued when released, and the
// queue orders them then): it blocks no other deploy, rollback or
// emergency change.
func TestFreezeNeverBlocksRollbacksOrEmergencies(t *testing.T) {
	s := overlapStore(t)
	frozen := rolloutOver("ro-frozen", "web", "prod", "h1")
	frozen.State = rollout.StateFrozen
	if err := s.CreateRollout(10, frozen, nil, nil); err != nil {
		t.Fatal(err)
	}
	if b, _, _ := s.Blocker(rolloutOver("", "web", "prod", "h1")); b != nil {
		t.Fatalf("a deploy is blocked by the frozen one: %v", b)
	}
	em := rolloutOver("", "web", "prod", "h1")
	em.ChangeType = rollout.ChangeEmergency
	rb := rolloutOver("", "web", "prod", "h1")
	rb.Kind = rollout.KindRollback
	for _, r := range []*relv1.Rollout{em, rb} {
		if b, _, _ := s.Blocker(r); b != nil {
			t.Fatalf("%s %s blocked by %s", r.GetKind(), r.GetChangeType(), b.GetId())
		}
	}
}

func TestFreezeCreateDelete(t *testing.T) {
	s := New()
	w := &relv1.FreezeWindow{Name: "weekend", Apps: []string{"*"}, Environments: []string{"prod"}, CronStart: "0 18 * * FRI", CronEnd: "0 8 * * MON"}
	if err := s.CreateFreeze(1, w); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateFreeze(2, w); !errors.Is(err, ErrAlreadyExists) || !strings.Contains(err.Error(), `freeze window "weekend" already exists`) {
		t.Fatalf("duplicate: %v", err)
	}
	if err := s.DeleteFreeze(3, "nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete unknown: %v", err)
	}
	if err := s.DeleteFreeze(4, "weekend"); err != nil {
		t.Fatal(err)
	}
	if ws, idx, _ := s.Freezes(nil); len(ws) != 0 || idx != 4 {
		t.Fatalf("after delete: %v at %d", ws, idx)
	}
}
