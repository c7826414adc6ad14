package rollout

import (
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// fstep runs Step once with a freeze verdict (zero until: not frozen) and
// applies its decision like the FSM would.
func (s *sim) fstep(until time.Time, needsApproval bool) Decision {
	v := View{Rollout: s.r, Hosts: s.obs, Now: s.now, NeedsApproval: needsApproval}
	if !until.IsZero() {
		v.FrozenUntil, v.FreezeWindow, v.FreezeHold = until, "weekend", "freeze weekend until "+until.UTC().Format(time.Kitchen)
	}
	d := Step(v)
	if d.Rollout != nil {
		d.Rollout.ModifyIndex = s.r.ModifyIndex + 1
		s.r = d.Rollout
		s.events = append(s.events, d.Events...)
	}
	return d
}

func TestFreezeTransitions(t *testing.T) {
	spec := &relv1.RolloutSpec{Strategy: Rolling, Waves: []*relv1.Quantity{cnt(1), pct(100)}}
	type tc struct {
		name string
		// setup makes the rollout's starting row; until is the freeze
		// (zero: none).
		setup         func(s *sim)
		frozen        bool
		needsApproval bool
		wantState     string
		wantReason    string
		wantWake      bool
	}
	freezeRow := func(s *sim) {
		s.r, _ = Hold(s.r, []*relv1.RolloutEvent{{Seq: 1, Type: EventStarted}}, "freeze weekend until later", s.now.Add(time.Hour).UnixNano(), s.now.UnixNano())
	}
	queued := func(s *sim) { s.r.State = StateQueued }
	waveDone := func(s *sim) {
		s.settle() // dispatches wave 0's one host
		s.report(s.r.Hosts[0].AgentId, "healthy", "")
	}
	cases := []tc{
		{"frozen stays frozen while held", freezeRow, true, false, StateFrozen, "freeze weekend until", true},
		{"frozen is released and starts", freezeRow, false, false, StateRunning, "", false},
		{"frozen is released to approvals", freezeRow, false, true, StateAwaitingApproval, "", false},
		{"queued inside a freeze becomes frozen", queued, true, false, StateFrozen, "freeze weekend until", true},
		{"running pauses when its wave is done", waveDone, true, false, StatePaused, "freeze weekend until", true},
		{"running goes on without a freeze", waveDone, false, false, StateRunning, "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newSim(t, spec, 4)
			c.setup(s)
			var until time.Time
			if c.frozen {
				until = s.now.Add(time.Hour)
			}
			d := s.fstep(until, c.needsApproval)
			if s.r.State != c.wantState || !strings.HasPrefix(s.r.Reason, c.wantReason) {
				t.Fatalf("state %s (%q), want %s (%q...)", s.r.State, s.r.Reason, c.wantState, c.wantReason)
			}
			if c.wantWake && !d.Wake.Equal(until) {
				t.Fatalf("wake %v, want the freeze's end %v", d.Wake, until)
			}
		})
	}

	t.Run("a freeze-paused rollout resumes when the freeze ends", func(t *testing.T) {
		s := newSim(t, spec, 4)
		waveDone(s)
		until := s.now.Add(time.Hour)
		s.fstep(until, false)
		if s.r.State != StatePaused || s.r.PausedByFreeze != "weekend" || s.r.CurrentWave != 0 {
			t.Fatalf("state %s paused_by_freeze %q wave %d", s.r.State, s.r.PausedByFreeze, s.r.CurrentWave)
		}
		if d := s.fstep(until, false); d.Rollout != nil || len(dispatched(s.r)) != 0 {
			t.Fatalf("a held pause moved: %v", d.Rollout)
		}
		s.now = until
		s.fstep(time.Time{}, false)
		if s.r.State != StateRunning || s.r.PausedByFreeze != "" || s.r.CurrentWave != 1 || len(dispatched(s.r)) == 0 {
			t.Fatalf("after the freeze: state %s wave %d dispatched %v", s.r.State, s.r.CurrentWave, dispatched(s.r))
		}
	})
	t.Run("a person's pause is not resumed by a freeze ending", func(t *testing.T) {
		s := newSim(t, spec, 4)
		s.settle()
		r, _, err := Control(s.r, ActionPause, "", 0, s.now.UnixNano())
		if err != nil {
			t.Fatal(err)
		}
		s.r = r
		s.fstep(time.Time{}, false)
		if s.r.State != StatePaused {
			t.Fatalf("state %s", s.r.State)
		}
	})
	t.Run("rollbacks, catch-ups and emergencies are never held", func(t *testing.T) {
		for _, set := range []func(r *relv1.Rollout){
			func(r *relv1.Rollout) { r.Kind = KindCatchUp },
			func(r *relv1.Rollout) { r.ChangeType = ChangeEmergency },
		} {
			s := newSim(t, spec, 4)
			set(s.r)
			waveDone(s)
			s.fstep(s.now.Add(time.Hour), false)
			s.fstep(s.now.Add(time.Hour), false)
			if s.r.State != StateRunning || s.r.CurrentWave != 1 {
				t.Fatalf("kind %s change %s: state %s wave %d", s.r.Kind, s.r.ChangeType, s.r.State, s.r.CurrentWave)
			}
		}
	})
	t.Run("the last wave finishes inside a freeze", func(t *testing.T) {
		s := newSim(t, &relv1.RolloutSpec{}, 2)
		s.settle()
		for _, id := range dispatched(s.r) {
			s.report(id, "healthy", "")
		}
		s.fstep(s.now.Add(time.Hour), false)
		if s.r.State != StateSucceeded {
			t.Fatalf("state %s", s.r.State)
		}
	})
}

// TestFreezeProperties: under freezes that come and go at random, no wave
// starts while a freeze holds the rollout, a held rollout is never
// dispatched to, events stay numbered without gaps, and every rollout
// ends once the freezes are over.
func TestFreezeProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(1, 12).Draw(t, "hosts")
		spec := &relv1.RolloutSpec{Strategy: Rolling, Waves: []*relv1.Quantity{pct(uint32(rapid.IntRange(1, 60).Draw(t, "w1"))), pct(100)},
			MaxParallel: uint32(rapid.IntRange(0, 3).Draw(t, "maxParallel"))}
		s := newSim(t, spec, n)
		start := s.now
		if rapid.Bool().Draw(t, "createdFrozen") {
			s.r, s.events = Hold(s.r, []*relv1.RolloutEvent{{Seq: 1, Type: EventStarted}}, "freeze", s.now.Add(time.Minute).UnixNano(), s.now.UnixNano())
		} else {
			s.events = []*relv1.RolloutEvent{{Seq: 1, Type: EventStarted}}
			s.r.EventSeq = 1
		}
		// Freezes: a few [from, to) spans in the first ten minutes.
		type span struct{ from, to time.Time }
		var spans []span
		for i := rapid.IntRange(0, 3).Draw(t, "freezes"); i > 0; i-- {
			from := start.Add(time.Duration(rapid.IntRange(0, 600).Draw(t, "from")) * time.Second)
			spans = append(spans, span{from, from.Add(time.Duration(rapid.IntRange(1, 120).Draw(t, "len")) * time.Second)})
		}
		until := func(at time.Time) time.Time {
			var u time.Time
			for moved := true; moved; {
				moved = false
				for _, sp := range spans {
					probe := at
					if !u.IsZero() {
						probe = u
					}
					if !probe.Before(sp.from) && probe.Before(sp.to) && sp.to.After(u) {
						u, moved = sp.to, true
					}
				}
			}
			return u
		}
		for round := 0; round < 2000 && !Terminal(s.r.State); round++ {
			u := until(s.now)
			beforeWave, beforeState := s.r.CurrentWave, s.r.State
			beforeDispatched := map[string]bool{}
			for _, id := range dispatched(s.r) {
				beforeDispatched[id] = true
			}
			d := s.fstep(u, false)
			if !u.IsZero() {
				if s.r.CurrentWave > beforeWave && beforeState != StateFrozen {
					t.Fatalf("wave %d started inside a freeze", s.r.CurrentWave)
				}
				if s.r.State == StateFrozen {
					if len(dispatched(s.r)) > 0 {
						t.Fatalf("a frozen rollout has dispatched hosts")
					}
				}
				if beforeState == StateFrozen && s.r.State != StateFrozen {
					t.Fatalf("left frozen (%s) inside a freeze", s.r.State)
				}
			}
			if d.Rollout != nil {
				continue
			}
			progressed := false
			for _, id := range dispatched(s.r) {
				s.report(id, "healthy", "")
				progressed = true
			}
			if !progressed {
				s.now = s.now.Add(time.Second)
			}
		}
		if !Terminal(s.r.State) {
			t.Fatalf("not terminal: %s (%s)", s.r.State, s.r.Reason)
		}
		for i, e := range s.events {
			if e.Seq != uint64(i+1) {
				t.Fatalf("event %d has seq %d (%s)", i, e.Seq, e.Type)
			}
		}
	})
}

// TestReleaseFrozenStartsTheApprovalClock: a frozen rollout that carries
// an approval policy goes to awaiting_approval when released, and its
// approvals expire from then, not from its request (nobody could approve
// while it was frozen); without approvals it is queued.
func TestReleaseFrozenStartsTheApprovalClock(t *testing.T) {
	at := time.Unix(1_000_000, 0)
	p := &relv1.ApprovalPolicy{Required: 2, Roles: []string{"approver"}, ExpiryMs: 3_600_000}
	r := &relv1.Rollout{Id: "ro-1", Kind: KindDeploy, State: StateFrozen, Reason: "freeze sale", FrozenUntilUnixNano: at.UnixNano(),
		ApprovalPolicy: p, ApprovalExpiresUnixNano: 1}
	ev := ReleaseFrozen(r, true, at)
	if r.GetState() != StateAwaitingApproval || r.GetApprovalExpiresUnixNano() != at.Add(time.Hour).UnixNano() ||
		r.GetReason() != awaitingReason(p) || r.GetFrozenUntilUnixNano() != 0 || ev.GetType() != EventUnfrozen {
		t.Fatalf("released with approvals: %v, event %v", r, ev)
	}
	q := &relv1.Rollout{Id: "ro-2", Kind: KindDeploy, State: StateFrozen, Reason: "freeze sale"}
	if ReleaseFrozen(q, false, at); q.GetState() != StateQueued || q.GetReason() != "" {
		t.Fatalf("released without approvals: %v", q)
	}
}
