package rollout

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

func hosts(n int, zones ...string) []Candidate {
	var out []Candidate
	for i := 0; i < n; i++ {
		c := Candidate{ID: fmt.Sprintf("h%02d", i), Labels: map[string]string{}}
		if len(zones) > 0 {
			c.Labels["zone"] = zones[i%len(zones)]
		}
		out = append(out, c)
	}
	return out
}

func pct(p uint32) *relv1.Quantity { return &relv1.Quantity{Percent: p} }
func cnt(c uint32) *relv1.Quantity { return &relv1.Quantity{Count: c} }

func sizes(ws []Wave) string {
	var parts []string
	for _, w := range ws {
		parts = append(parts, fmt.Sprintf("%s:%d", w.Kind, len(w.Hosts)))
	}
	return strings.Join(parts, " ")
}

func TestAssignWaves(t *testing.T) {
	tests := []struct {
		name  string
		spec  *relv1.RolloutSpec
		hosts []Candidate
		want  string
		err   string
	}{
		{"all at once", &relv1.RolloutSpec{}, hosts(5), "wave:5", ""},
		{"rolling default", &relv1.RolloutSpec{Strategy: Rolling}, hosts(5), "wave:5", ""},
		{"rolling waves", &relv1.RolloutSpec{Strategy: Rolling, Waves: []*relv1.Quantity{pct(20), pct(100)}}, hosts(10), "wave:2 wave:8", ""},
		{"canary default", &relv1.RolloutSpec{Strategy: Canary}, hosts(3), "canary:1 wave:2", ""},
		{"canary + waves", &relv1.RolloutSpec{Strategy: Canary, Canary: cnt(1), Waves: []*relv1.Quantity{pct(50), pct(100)}}, hosts(10), "canary:1 wave:4 wave:5", ""},
		{"canary percent rounds up", &relv1.RolloutSpec{Strategy: Canary, Canary: pct(10)}, hosts(5), "canary:1 wave:4", ""},
		{"empty waves dropped", &relv1.RolloutSpec{Strategy: Canary, Canary: cnt(2), Waves: []*relv1.Quantity{pct(10), pct(100)}}, hosts(10), "canary:2 wave:8", ""},
		{"counts", &relv1.RolloutSpec{Strategy: Rolling, Waves: []*relv1.Quantity{cnt(1), cnt(3), pct(100)}}, hosts(6), "wave:1 wave:2 wave:3", ""},
		{"wave by zone", &relv1.RolloutSpec{Strategy: Rolling, WaveBy: "zone"}, hosts(6, "b", "a", "c"), "wave:2 wave:2 wave:2", ""},
		{"canary then zones", &relv1.RolloutSpec{Strategy: Canary, WaveBy: "zone"}, hosts(6, "a", "b"), "canary:1 wave:2 wave:3", ""},
		{"one host canary", &relv1.RolloutSpec{Strategy: Canary}, hosts(1), "canary:1", ""},
		{"canary takes all", &relv1.RolloutSpec{Strategy: Canary, Canary: cnt(3)}, hosts(3), "", "takes all 3 hosts"},
		{"waves fall short", &relv1.RolloutSpec{Strategy: Rolling, Waves: []*relv1.Quantity{cnt(1), cnt(2)}}, hosts(5), "", "reach 2 of 5 hosts"},
		{"count above hosts", &relv1.RolloutSpec{Strategy: Rolling, Waves: []*relv1.Quantity{cnt(9)}}, hosts(5), "", "selects only 5"},
		{"wave-by label missing", &relv1.RolloutSpec{Strategy: Rolling, WaveBy: "rack"}, hosts(2, "a"), "", `no label "rack"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec, err := Normalize(tt.spec)
			if err != nil {
				t.Fatalf("normalize: %v", err)
			}
			ws, err := AssignWaves(spec, tt.hosts)
			if tt.err != "" {
				if !errors.Is(err, ErrInvalidSpec) || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err %v, want ErrInvalidSpec containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := sizes(ws); got != tt.want {
				t.Fatalf("waves %s, want %s", got, tt.want)
			}
		})
	}
}

func TestNormalizeErrors(t *testing.T) {
	tests := []struct {
		spec *relv1.RolloutSpec
		err  string
	}{
		{&relv1.RolloutSpec{Strategy: "blue-green"}, `strategy "blue-green"`},
		{&relv1.RolloutSpec{Canary: cnt(1)}, "all-at-once takes no --canary"},
		{&relv1.RolloutSpec{Strategy: Rolling, Canary: cnt(1)}, "--canary needs --strategy canary"},
		{&relv1.RolloutSpec{Strategy: Canary, Canary: pct(120)}, "at most 100%"},
		{&relv1.RolloutSpec{Strategy: Rolling, Waves: []*relv1.Quantity{pct(50), pct(10), pct(100)}}, "wave 2 (10%) is not above wave 1 (50%)"},
		{&relv1.RolloutSpec{Strategy: Rolling, Waves: []*relv1.Quantity{pct(10), pct(50)}}, "the last wave must reach 100%"},
		{&relv1.RolloutSpec{Strategy: Rolling, Waves: []*relv1.Quantity{pct(10), pct(150)}}, "at most 100%"},
		{&relv1.RolloutSpec{Strategy: Rolling, Waves: []*relv1.Quantity{{}}}, "is 0"},
		{&relv1.RolloutSpec{Strategy: Rolling, WaveBy: "zone", Waves: []*relv1.Quantity{pct(100)}}, "--wave-by and --waves together"},
		{&relv1.RolloutSpec{ApproveWaves: true}, "--approve-waves with all-at-once"},
		{&relv1.RolloutSpec{BakeMs: -1}, "--bake"},
	}
	for _, tt := range tests {
		_, err := Normalize(tt.spec)
		if !errors.Is(err, ErrInvalidSpec) || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("Normalize(%v) = %v, want ErrInvalidSpec containing %q", tt.spec, err, tt.err)
		}
	}
	s, err := Normalize(&relv1.RolloutSpec{Strategy: Rolling})
	if err != nil || s.MaxParallel != 1 || s.ProgressDeadlineMs != DefaultProgressDeadline.Milliseconds() || s.MaxFailures == nil {
		t.Fatalf("rolling defaults: %v %v", s, err)
	}
}

// sim drives Step the way the engine does, with the agents' outcomes drawn
// by a callback.
type sim struct {
	r       *relv1.Rollout
	obs     map[string]Obs
	now     time.Time
	events  []*relv1.RolloutEvent
	applied int
}

// fataler is what newSim needs of *testing.T and *rapid.T.
type fataler interface{ Fatal(args ...any) }

func newSim(t fataler, spec *relv1.RolloutSpec, n int) *sim {
	spec, err := Normalize(spec)
	if err != nil {
		t.Fatal(err)
	}
	cs := hosts(n, "a", "b", "c")
	ws, err := AssignWaves(spec, cs)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	r := NewRollout("ro-1", "web", "2.0.0", "prod", spec, ws, map[string]string{}, now)
	s := &sim{r: r, obs: map[string]Obs{}, now: now}
	for _, c := range cs {
		s.obs[c.ID] = Obs{Connected: true}
	}
	return s
}

// step runs Step once and applies its decision like the FSM would.
func (s *sim) step() Decision {
	d := Step(View{Rollout: s.r, Hosts: s.obs, Now: s.now})
	if d.Rollout != nil {
		d.Rollout.ModifyIndex = s.r.ModifyIndex + 1
		s.r = d.Rollout
		s.events = append(s.events, d.Events...)
		s.applied++
	}
	return d
}

// settle steps until Step changes nothing.
func (s *sim) settle() Decision {
	var d Decision
	for i := 0; i < 1000; i++ {
		d = s.step()
		if d.Rollout == nil {
			return d
		}
	}
	panic("Step never settles")
}

func (s *sim) host(id string) *relv1.RolloutHost {
	for _, h := range s.r.Hosts {
		if h.AgentId == id {
			return h
		}
	}
	return nil
}

func (s *sim) report(id, phase, reason string) {
	s.obs[id] = Obs{Connected: s.obs[id].Connected, Phase: phase, Reason: reason}
}

func dispatched(r *relv1.Rollout) []string {
	var out []string
	for _, h := range r.Hosts {
		if h.State == HostDispatched {
			out = append(out, h.AgentId)
		}
	}
	return out
}

func TestCanaryFailureRollsBackOnlyCanary(t *testing.T) {
	s := newSim(t, &relv1.RolloutSpec{Strategy: Canary, Waves: []*relv1.Quantity{pct(50), pct(100)}, AutoRollback: true}, 5)
	s.settle()
	if got := dispatched(s.r); len(got) != 1 || got[0] != "h00" {
		t.Fatalf("dispatched %v, want only the canary h00", got)
	}
	s.report("h00", "failed", "health check failed: connection refused")
	s.settle()
	if s.r.State != StateFailed || !strings.Contains(s.r.Reason, "h00: health check failed") {
		t.Fatalf("state %s reason %q", s.r.State, s.r.Reason)
	}
	for _, h := range s.r.Hosts[1:] {
		if h.State != HostPending {
			t.Fatalf("host %s is %s: only the canary may have been touched", h.AgentId, h.State)
		}
	}
	rb, err := PlanRollback(s.r, "ro-2", false, s.now)
	if err == nil {
		t.Fatalf("rollback of a canary with no previous release planned %v; want nothing to go back to", rb)
	}
	// With a previous version recorded, the rollback takes only the canary back.
	s.host("h00").PreviousVersion = "1.0.0"
	rb, err = PlanRollback(s.r, "ro-2", false, s.now)
	if err != nil {
		t.Fatal(err)
	}
	if len(rb.Hosts) != 1 || rb.Hosts[0].AgentId != "h00" || rb.Hosts[0].TargetVersion != "1.0.0" || rb.Version != "1.0.0" {
		t.Fatalf("rollback %v", rb)
	}
}

func TestAutoRollbackDecision(t *testing.T) {
	s := newSim(t, &relv1.RolloutSpec{Strategy: Canary, AutoRollback: true}, 3)
	s.settle()
	s.report("h00", "failed", "boom")
	d := s.step()
	if !d.Rollback || d.Rollout.State != StateFailed {
		t.Fatalf("decision %+v, want a failed rollout asking for rollback", d)
	}
}

func TestApprovalAndBakeGates(t *testing.T) {
	s := newSim(t, &relv1.RolloutSpec{Strategy: Canary, Waves: []*relv1.Quantity{pct(50), pct(100)}, BakeMs: 30_000, ApproveWaves: true}, 4)
	s.settle()
	s.report("h00", "healthy", "")
	d := s.settle()
	if s.r.State != StateRunning || d.Wake.IsZero() || !d.Wake.Equal(s.now.Add(30*time.Second)) {
		t.Fatalf("after canary: state %s wake %v, want baking until +30s", s.r.State, d.Wake)
	}
	s.now = s.now.Add(30 * time.Second)
	s.settle()
	if s.r.State != StateWaitingApproval {
		t.Fatalf("after bake: state %s, want waiting_approval", s.r.State)
	}
	if len(dispatched(s.r)) != 0 {
		t.Fatal("dispatched while waiting for approval")
	}
	// Approve (what the FSM does for ControlRollout approve).
	s.r.State, s.r.ApprovedWave = StateRunning, s.r.CurrentWave+1
	s.settle()
	if s.r.CurrentWave != 1 || len(dispatched(s.r)) != 1 {
		t.Fatalf("after approve: wave %d dispatched %v", s.r.CurrentWave, dispatched(s.r))
	}
}

func TestMaxParallelAndAgentLost(t *testing.T) {
	s := newSim(t, &relv1.RolloutSpec{Strategy: Rolling, MaxParallel: 2, MaxFailures: cnt(1)}, 5)
	s.settle()
	if got := dispatched(s.r); len(got) != 2 {
		t.Fatalf("dispatched %v, want 2", got)
	}
	s.obs["h00"] = Obs{Connected: false, DisconnectReason: "stream closed"}
	s.settle()
	h := s.host("h00")
	if h.State != HostFailed || !strings.HasPrefix(h.Reason, "agent lost") {
		t.Fatalf("lost host: %v", h)
	}
	if s.r.State != StateRunning || len(dispatched(s.r)) != 2 {
		t.Fatalf("within budget the rollout goes on: %s, %v", s.r.State, dispatched(s.r))
	}
}

func TestProgressDeadline(t *testing.T) {
	s := newSim(t, &relv1.RolloutSpec{Strategy: Rolling, ProgressDeadlineMs: 60_000}, 2)
	d := s.settle()
	if !d.Wake.Equal(s.now.Add(time.Minute)) {
		t.Fatalf("wake %v, want the deadline", d.Wake)
	}
	s.now = s.now.Add(time.Minute)
	s.settle()
	if s.r.State != StateFailed || !strings.Contains(s.r.Reason, "no progress for 1m0s") || !strings.Contains(s.r.Reason, "h00 (no report)") {
		t.Fatalf("state %s reason %q", s.r.State, s.r.Reason)
	}
}

func TestPausedDispatchesNothing(t *testing.T) {
	s := newSim(t, &relv1.RolloutSpec{Strategy: Rolling}, 3)
	s.settle()
	s.r.State, s.r.PausedFrom = StatePaused, StateRunning
	s.report("h00", "healthy", "")
	s.settle()
	if s.host("h00").State != HostHealthy || len(dispatched(s.r)) != 0 {
		t.Fatalf("paused: h00 %s, dispatched %v", s.host("h00").State, dispatched(s.r))
	}
}

func TestStagedRollbackOrder(t *testing.T) {
	s := newSim(t, &relv1.RolloutSpec{Strategy: Canary, Waves: []*relv1.Quantity{pct(50), pct(100)}}, 4)
	for {
		s.settle()
		if Terminal(s.r.State) {
			break
		}
		for _, id := range dispatched(s.r) {
			s.report(id, "healthy", "")
		}
	}
	for _, h := range s.r.Hosts {
		h.PreviousVersion = "1.0.0"
	}
	rb, err := PlanRollback(s.r, "ro-2", false, s.now)
	if err != nil {
		t.Fatal(err)
	}
	// Original waves: canary h00, wave1 h01, wave2 h02 h03. Reverse.
	got := map[string]uint32{}
	for _, h := range rb.Hosts {
		got[h.AgentId] = h.Wave
	}
	if !(got["h02"] == 0 && got["h03"] == 0 && got["h01"] == 1 && got["h00"] == 2) || rb.WaveCount != 3 {
		t.Fatalf("rollback waves %v (count %d), want the original waves reversed", got, rb.WaveCount)
	}
	all, _ := PlanRollback(s.r, "ro-3", true, s.now)
	if all.WaveCount != 1 {
		t.Fatalf("all-at-once rollback has %d waves", all.WaveCount)
	}
}

// TestPlannerProperties runs random rollouts with random failures and checks
// the planner's invariants at every step.
func TestPlannerProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(1, 25).Draw(t, "hosts")
		spec := &relv1.RolloutSpec{Strategy: rapid.SampledFrom([]string{AllAtOnce, Rolling, Canary}).Draw(t, "strategy")}
		if spec.Strategy != AllAtOnce {
			if rapid.Bool().Draw(t, "waves") {
				a := uint32(rapid.IntRange(1, 60).Draw(t, "w1"))
				spec.Waves = []*relv1.Quantity{pct(a), pct(100)}
			}
			spec.MaxParallel = uint32(rapid.IntRange(0, 4).Draw(t, "maxParallel"))
			spec.BakeMs = int64(rapid.IntRange(0, 2).Draw(t, "bake")) * 1000
			spec.ApproveWaves = rapid.Bool().Draw(t, "approve")
		}
		if spec.Strategy == Canary && n > 1 {
			spec.Canary = cnt(uint32(rapid.IntRange(1, n-1).Draw(t, "canary")))
		} else if spec.Strategy == Canary {
			spec.Strategy = Rolling
		}
		spec.MaxFailures = cnt(uint32(rapid.IntRange(0, 3).Draw(t, "maxFailures")))
		spec.AutoRollback = rapid.Bool().Draw(t, "autoRollback")
		failP := rapid.IntRange(0, 40).Draw(t, "failPercent")

		s := newSim(t, spec, n)
		waveOf := map[string]uint32{}
		for _, h := range s.r.Hosts {
			waveOf[h.AgentId] = h.Wave
		}
		// Every host in exactly one wave; waves numbered 0..count-1, in order.
		seen := map[string]bool{}
		prev := uint32(0)
		for _, h := range s.r.Hosts {
			if seen[h.AgentId] {
				t.Fatalf("host %s in two waves", h.AgentId)
			}
			seen[h.AgentId] = true
			if h.Wave < prev || h.Wave >= s.r.WaveCount {
				t.Fatalf("host %s in wave %d out of order (count %d)", h.AgentId, h.Wave, s.r.WaveCount)
			}
			prev = h.Wave
		}
		if len(seen) != n {
			t.Fatalf("%d of %d hosts placed", len(seen), n)
		}
		if spec.Strategy == Canary {
			canary := 0
			for _, h := range s.r.Hosts {
				if h.Wave == 0 {
					canary++
				}
			}
			if canary != int(spec.Canary.Count) {
				t.Fatalf("canary wave has %d hosts, want %d", canary, spec.Canary.Count)
			}
		}
		timesDispatched := map[string]int{}
		budget := Budget(s.r)
		for round := 0; round < 500; round++ {
			before := map[string]string{}
			for _, h := range s.r.Hosts {
				before[h.AgentId] = h.State
			}
			d := s.step()
			// Invariants after every decision.
			inflight := 0
			for _, h := range s.r.Hosts {
				if h.State == HostDispatched {
					inflight++
					if h.Wave > s.r.CurrentWave {
						t.Fatalf("host %s of wave %d dispatched during wave %d", h.AgentId, h.Wave, s.r.CurrentWave)
					}
				}
				if h.State == HostDispatched && before[h.AgentId] == HostPending {
					timesDispatched[h.AgentId]++
					for _, o := range s.r.Hosts {
						if o.Wave < h.Wave && (o.State == HostPending || o.State == HostDispatched) {
							t.Fatalf("host %s (wave %d) dispatched before %s of wave %d finished", h.AgentId, h.Wave, o.AgentId, o.Wave)
						}
					}
				}
			}
			if mp := int(s.r.Spec.MaxParallel); mp > 0 && inflight > mp {
				t.Fatalf("%d hosts in flight, max-parallel %d", inflight, mp)
			}
			nFailed, _ := failed(s.r)
			if nFailed > budget && s.r.State != StateFailed {
				t.Fatalf("%d failures over a budget of %d, state %s", nFailed, budget, s.r.State)
			}
			if d.Rollback && (!spec.AutoRollback || s.r.State != StateFailed) {
				t.Fatalf("rollback asked without auto-rollback or failure")
			}
			if Terminal(s.r.State) {
				break
			}
			if d.Rollout != nil {
				continue // settle before the world moves
			}
			// The world moves: approvals, time, agents' outcomes.
			if s.r.State == StateWaitingApproval {
				s.r.State, s.r.ApprovedWave = StateRunning, s.r.CurrentWave+1
				continue
			}
			if !d.Wake.IsZero() && len(dispatched(s.r)) == 0 {
				s.now = d.Wake
				continue
			}
			for _, id := range dispatched(s.r) {
				switch r := rapid.IntRange(0, 99).Draw(t, "outcome"); {
				case r < failP/2:
					s.report(id, "failed", "boom")
				case r < failP:
					s.obs[id] = Obs{Connected: false, DisconnectReason: "gone"}
				default:
					s.report(id, "healthy", "")
				}
			}
			s.now = s.now.Add(time.Second)
		}
		if !Terminal(s.r.State) {
			t.Fatalf("rollout not terminal after 500 rounds: %s", s.r.State)
		}
		for id, c := range timesDispatched {
			if c > 1 {
				t.Fatalf("host %s dispatched %d times", id, c)
			}
		}
		// Events are numbered 1..n without gaps (the start event is 1, made
		// by the server, so the planner's start at 2).
		for i, e := range s.events {
			if e.Seq != uint64(i+1) {
				t.Fatalf("event %d has seq %d", i, e.Seq)
			}
		}
	})
}

func TestRollbackOfNothing(t *testing.T) {
	s := newSim(t, &relv1.RolloutSpec{Strategy: Rolling}, 3)
	// Nothing dispatched yet: every host still pending.
	_, err := PlanRollback(s.r, "ro-2", false, s.now)
	if !errors.Is(err, ErrInvalidSpec) || !strings.Contains(err.Error(), "changed no host: there is nothing to roll back") {
		t.Fatalf("rollback of a rollout that changed nothing: %v", err)
	}
}

// TestHostEventsBatched: the hosts a step dispatches, and those it finds
// healthy, are one event each (listing them), in the order things
// happened; a single host keeps the event it always had.
func TestHostEventsBatched(t *testing.T) {
	s := newSim(t, &relv1.RolloutSpec{Strategy: AllAtOnce}, 3)
	for _, h := range s.r.Hosts {
		s.obs[h.AgentId] = Obs{Connected: true}
	}
	ids := []string{s.r.Hosts[0].AgentId, s.r.Hosts[1].AgentId, s.r.Hosts[2].AgentId}
	s.settle()
	typed := func(typ string) []*relv1.RolloutEvent {
		var out []*relv1.RolloutEvent
		for _, e := range s.events {
			if e.GetType() == typ {
				out = append(out, e)
			}
		}
		return out
	}
	d := typed(EventDispatched)
	if len(d) != 1 || !slices.Equal(d[0].GetHosts(), ids) || d[0].GetHost() != "" || d[0].GetMessage() != "taking 3 hosts to 2.0.0" {
		t.Fatalf("dispatched events %v, want one naming %v", d, ids)
	}
	// Two healthy in one step, then the third: two events.
	s.report(ids[0], "healthy", "")
	s.report(ids[1], "healthy", "")
	s.step()
	s.report(ids[2], "healthy", "")
	s.settle()
	h := typed(EventHostHealthy)
	if len(h) != 2 || !slices.Equal(h[0].GetHosts(), ids[:2]) || h[0].GetMessage() != "2 hosts healthy on 2.0.0" ||
		h[1].GetHost() != ids[2] || len(h[1].GetHosts()) != 0 || h[1].GetMessage() != "healthy on 2.0.0" {
		t.Fatalf("healthy events %v, want %v together, then %s alone", h, ids[:2], ids[2])
	}
	// Another event between two hosts' outcomes keeps them apart, in order.
	s2 := newSim(t, &relv1.RolloutSpec{Strategy: AllAtOnce, MaxFailures: cnt(3)}, 3)
	for _, h := range s2.r.Hosts {
		s2.obs[h.AgentId] = Obs{Connected: true}
	}
	s2.settle()
	s2.report(ids[0], "healthy", "")
	s2.report(ids[1], "failed", "exit 1")
	s2.report(ids[2], "healthy", "")
	s2.step()
	var got []string
	for _, e := range s2.events {
		if e.GetType() == EventHostHealthy || e.GetType() == EventHostFailed {
			got = append(got, e.GetType()+":"+strings.Join(EventHosts(e), ","))
		}
	}
	if want := []string{"host_healthy:" + ids[0], "host_failed:" + ids[1], "host_healthy:" + ids[2]}; !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
}
