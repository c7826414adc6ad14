package rollout

import (
	"slices"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// rollbackSim makes the rollback of a finished sim's rollout a sim of its own.
func rollbackSim(t fataler, s *sim, allAtOnce bool) *sim {
	rb, err := PlanRollback(s.r, "ro-rb", allAtOnce, s.now)
	if err != nil {
		t.Fatal(err)
	}
	out := &sim{r: rb, obs: map[string]Obs{}, now: s.now}
	for id, o := range s.obs {
		out.obs[id] = Obs{Connected: o.Connected, DisconnectReason: o.DisconnectReason}
	}
	return out
}

// Finding 1 of issue 8: 10 hosts, 5 of them cut off with their server. The
// rollout fails; its rollback must cover the cut-off hosts it dispatched
// (desired state back at once), not call them "lost before their turn",
// and succeed only once they are back.
func TestRollbackWaitsForAwayHosts(t *testing.T) {
	s := newSim(t, &relv1.RolloutSpec{Strategy: AllAtOnce, AutoRollback: true, MaxFailures: cnt(0), ProgressDeadlineMs: 60_000}, 10)
	for _, h := range s.r.Hosts {
		h.PreviousVersion = "1.0.0"
	}
	s.settle()
	if len(dispatched(s.r)) != 10 {
		t.Fatalf("dispatched %v, want all 10", dispatched(s.r))
	}
	// h05..h09 are behind the cut-off server: recorded down by the sweep.
	for _, h := range s.r.Hosts[5:] {
		s.obs[h.AgentId] = Obs{Connected: false, DisconnectReason: "server unreachable"}
	}
	s.report("h00", "failed", "health check failed")
	s.settle()
	if s.r.State != StateFailed {
		t.Fatalf("original %s, want failed", s.r.State)
	}
	rb := rollbackSim(t, s, false)
	if len(rb.r.Hosts) != 10 {
		t.Fatalf("rollback covers %d hosts, want every host the rollout dispatched (10)", len(rb.r.Hosts))
	}
	d := rb.step()
	// Away hosts get their desired state at once, whatever their wave.
	for _, id := range []string{"h05", "h06", "h07", "h08", "h09"} {
		h := rb.host(id)
		if h.State != HostDispatched || h.Reason != ReasonAway {
			t.Fatalf("away host %s: %s %q, want dispatched and away", id, h.State, h.Reason)
		}
		if !slices.ContainsFunc(d.Dispatch, func(x *relv1.RolloutHost) bool { return x.AgentId == id }) {
			t.Fatalf("away host %s not in the first dispatch %v", id, d.Dispatch)
		}
	}
	// The connected hosts go back, wave by wave.
	for i := 0; i < 20 && !Terminal(rb.r.State); i++ {
		rb.settle()
		for _, id := range dispatched(rb.r) {
			if rb.obs[id].Connected {
				rb.report(id, "healthy", "")
			}
		}
		rb.now = rb.now.Add(time.Second)
	}
	if rb.r.State != StateRunning || !strings.Contains(rb.r.Reason, "waiting for 5 host(s) to come back: h05, h06, h07, h08, h09") {
		t.Fatalf("rollback with hosts away: %s %q, want running and waiting for them", rb.r.State, rb.r.Reason)
	}
	// Long past the progress deadline, it still waits: being away is not
	// a lack of progress.
	rb.now = rb.now.Add(time.Hour)
	rb.settle()
	if rb.r.State != StateRunning {
		t.Fatalf("rollback after an hour away: %s %q", rb.r.State, rb.r.Reason)
	}
	// The partition heals: hosts come back (their deadline starts now) and
	// report the old release healthy.
	for _, id := range []string{"h05", "h06", "h07", "h08", "h09"} {
		rb.obs[id] = Obs{Connected: true}
	}
	rb.settle()
	if h := rb.host("h05"); h.State != HostDispatched || h.Reason != "" {
		t.Fatalf("h05 back: %s %q", h.State, h.Reason)
	}
	for _, id := range []string{"h05", "h06", "h07", "h08"} {
		rb.report(id, "healthy", "")
	}
	rb.settle()
	if rb.r.State != StateRunning {
		t.Fatalf("rollback with h09 not yet back: %s", rb.r.State)
	}
	rb.report("h09", "healthy", "")
	rb.settle()
	if rb.r.State != StateSucceeded || !strings.Contains(rb.r.Reason, "10 of 10 hosts healthy") {
		t.Fatalf("rollback: %s %q, want succeeded with every host back", rb.r.State, rb.r.Reason)
	}
}

// A rollback whose host cannot go back ends failed, not "succeeded".
func TestRollbackWithHostThatFailsIsFailed(t *testing.T) {
	s := newSim(t, &relv1.RolloutSpec{Strategy: AllAtOnce}, 3)
	for _, h := range s.r.Hosts {
		h.PreviousVersion = "1.0.0"
	}
	s.settle()
	for _, id := range dispatched(s.r) {
		s.report(id, "healthy", "")
	}
	s.settle()
	rb := rollbackSim(t, s, true)
	rb.settle()
	rb.report("h00", "healthy", "")
	rb.report("h01", "healthy", "")
	rb.report("h02", "failed", "start hook exited 1")
	rb.settle()
	if rb.r.State != StateFailed || !strings.Contains(rb.r.Reason, "1 host(s) did not go back (h02: start hook exited 1)") {
		t.Fatalf("rollback: %s %q", rb.r.State, rb.r.Reason)
	}
}

// Hosts the rollout never dispatched ("agent lost before its turn") are
// not in its rollback; hosts it dispatched and lost are.
func TestRollbackCoversTouchedHostsOnly(t *testing.T) {
	s := newSim(t, &relv1.RolloutSpec{Strategy: Rolling, MaxParallel: 1, MaxFailures: cnt(1)}, 4)
	for _, h := range s.r.Hosts {
		h.PreviousVersion = "1.0.0"
	}
	s.settle() // h00 dispatched
	s.obs["h00"] = Obs{Connected: false}
	s.obs["h01"] = Obs{Connected: false}
	s.settle() // h00 lost after dispatch, h01 lost before its turn: over budget
	if s.r.State != StateFailed {
		t.Fatalf("state %s", s.r.State)
	}
	rb, err := PlanRollback(s.r, "ro-rb", false, s.now)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, h := range rb.Hosts {
		ids = append(ids, h.AgentId)
	}
	if !slices.Equal(ids, []string{"h00"}) {
		t.Fatalf("rollback hosts %v, want [h00]: the one the rollout dispatched", ids)
	}
}

func TestQueuedRolloutStartsWhenUnblocked(t *testing.T) {
	s := newSim(t, &relv1.RolloutSpec{Strategy: AllAtOnce}, 2)
	s.r.State = StateQueued
	d := Step(View{Rollout: s.r, Hosts: s.obs, Now: s.now, Blocker: "ro-0"})
	if d.Rollout == nil || d.Rollout.State != StateQueued || d.Rollout.Reason != "queued behind ro-0" || len(d.Dispatch) != 0 {
		t.Fatalf("blocked: %+v", d)
	}
	s.r = d.Rollout
	if d := Step(View{Rollout: s.r, Hosts: s.obs, Now: s.now, Blocker: "ro-0"}); d.Rollout != nil {
		t.Fatalf("still blocked: a step with nothing new %+v", d.Rollout)
	}
	// The blocker ended; the hosts now run 1.5.0, which it left them.
	s.obs["h00"] = Obs{Connected: true, Running: "1.5.0"}
	s.obs["h01"] = Obs{Connected: true, Running: "1.5.0"}
	d = Step(View{Rollout: s.r, Hosts: s.obs, Now: s.now})
	if d.Rollout == nil || d.Rollout.State != StateRunning || len(d.Dispatch) != 2 {
		t.Fatalf("unblocked: %+v", d)
	}
	for _, h := range d.Rollout.Hosts {
		if h.PreviousVersion != "1.5.0" {
			t.Fatalf("host %s previous %q, want 1.5.0 (what it runs when the rollout starts)", h.AgentId, h.PreviousVersion)
		}
	}
}

// TestRollbackProperties: for random rollouts with random failures and
// agents that go away (and come back), a rollback's hosts are exactly the
// hosts the rollout touched, it never gives up on an away host, and it
// succeeds only when every host it covers is back.
func TestRollbackProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(1, 15).Draw(t, "hosts")
		spec := &relv1.RolloutSpec{
			Strategy:    rapid.SampledFrom([]string{AllAtOnce, Rolling}).Draw(t, "strategy"),
			MaxFailures: cnt(uint32(rapid.IntRange(0, 3).Draw(t, "maxFailures"))),
		}
		if spec.Strategy == Rolling {
			spec.MaxParallel = uint32(rapid.IntRange(0, 3).Draw(t, "maxParallel"))
		}
		s := newSim(t, spec, n)
		for _, h := range s.r.Hosts {
			if rapid.IntRange(0, 9).Draw(t, "hasPrevious") > 0 {
				h.PreviousVersion = "1.0.0"
			}
		}
		for round := 0; round < 200 && !Terminal(s.r.State); round++ {
			if s.settle(); Terminal(s.r.State) {
				break
			}
			for _, id := range dispatched(s.r) {
				switch rapid.IntRange(0, 9).Draw(t, "outcome") {
				case 0:
					s.report(id, "failed", "boom")
				case 1:
					s.obs[id] = Obs{Connected: false}
				default:
					s.report(id, "healthy", "")
				}
			}
			// Some agents of later waves go away before their turn.
			if id := rapid.IntRange(0, n-1).Draw(t, "leaver"); rapid.IntRange(0, 9).Draw(t, "leaves") == 0 {
				s.obs[s.r.Hosts[id].AgentId] = Obs{Connected: false}
			}
			s.now = s.now.Add(time.Second)
		}
		var touched []string
		for _, h := range Touched(s.r) {
			touched = append(touched, h.AgentId)
		}
		rb, err := PlanRollback(s.r, "ro-rb", rapid.Bool().Draw(t, "allAtOnce"), s.now)
		if err != nil {
			return // nothing to go back to
		}
		var covered []string
		for _, h := range rb.Hosts {
			covered = append(covered, h.AgentId)
		}
		slices.Sort(touched)
		slices.Sort(covered)
		if !slices.Equal(touched, covered) {
			t.Fatalf("rollback covers %v, the rollout touched %v", covered, touched)
		}
		r := &sim{r: rb, obs: s.obs, now: s.now}
		awayNow := map[string]bool{}
		for id, o := range r.obs {
			awayNow[id] = !o.Connected
		}
		for round := 0; round < 300 && !Terminal(r.r.State); round++ {
			r.settle()
			for _, h := range r.r.Hosts {
				if h.State == HostFailed && strings.HasPrefix(h.Reason, "agent lost") {
					t.Fatalf("rollback gave up on away host %s: %q", h.AgentId, h.Reason)
				}
			}
			for _, id := range dispatched(r.r) {
				o := r.obs[id]
				switch {
				case !o.Connected && rapid.IntRange(0, 4).Draw(t, "returns") == 0:
					r.obs[id] = Obs{Connected: true}
				case o.Connected && rapid.IntRange(0, 19).Draw(t, "rbOutcome") == 0:
					r.report(id, "failed", "hook")
				case o.Connected:
					r.report(id, "healthy", "")
				}
			}
			r.now = r.now.Add(time.Second)
		}
		if !Terminal(r.r.State) {
			t.Fatalf("rollback not terminal: %s %q", r.r.State, r.r.Reason)
		}
		allBack := true
		for _, h := range r.r.Hosts {
			if h.State != HostHealthy && h.State != HostSkipped {
				allBack = false
			}
		}
		if (r.r.State == StateSucceeded) != allBack {
			for _, h := range r.r.Hosts {
				t.Logf("%s %s %q", h.AgentId, h.State, h.Reason)
			}
			t.Logf("%s", r.r.Reason)
			t.Fatalf("rollback %s with every host back = %v", r.r.State, allBack)
		}
	})
}
