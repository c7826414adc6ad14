package rollout

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

func TestControl(t *testing.T) {
	waiting := &relv1.Rollout{Id: "ro-1", State: StateWaitingApproval, WaveCount: 3, CurrentWave: 0, Spec: &relv1.RolloutSpec{Strategy: Rolling}, EventSeq: 4}
	tests := []struct {
		name      string
		cur       *relv1.Rollout
		action    string
		wave      uint32
		wantState string
		wantEvent string
		refused   string
	}{
		{"pause running", &relv1.Rollout{Id: "ro-1", State: StateRunning}, ActionPause, 0, StatePaused, EventPaused, ""},
		{"pause paused", &relv1.Rollout{Id: "ro-1", State: StatePaused}, ActionPause, 0, "", "", "cannot pause rollout ro-1: it is paused"},
		{"resume to waiting", &relv1.Rollout{Id: "ro-1", State: StatePaused, PausedFrom: StateWaitingApproval}, ActionResume, 0, StateWaitingApproval, EventResumed, ""},
		{"resume running", &relv1.Rollout{Id: "ro-1", State: StateRunning}, ActionResume, 0, "", "", "not paused"},
		{"approve the waiting wave", waiting, ActionApprove, 2, StateRunning, EventApproved, ""},
		{"approve without a wave (old entries)", waiting, ActionApprove, 0, StateRunning, EventApproved, ""},
		{"approve another wave", waiting, ActionApprove, 3, "", "", "cannot approve wave 3 of rollout ro-1: it waits for approval of wave 2 of 3 (--wave 2)"},
		{"approve a running rollout", &relv1.Rollout{Id: "ro-1", State: StateRunning, WaveCount: 3, CurrentWave: 1, ApprovedWave: 1}, ActionApprove, 2, "", "", "not waiting for approval: wave 2 of 3 was approved already"},
		{"abort queued", &relv1.Rollout{Id: "ro-1", State: StateQueued}, ActionAbort, 0, StateAborted, EventAborted, ""},
		{"abort rolling back", &relv1.Rollout{Id: "ro-1", State: StateRollingBack}, ActionAbort, 0, "", "", "it is rolling_back"},
		{"abort succeeded", &relv1.Rollout{Id: "ro-1", State: StateSucceeded}, ActionAbort, 0, "", "", "it is succeeded"},
		{"unknown", &relv1.Rollout{Id: "ro-1", State: StateRunning}, "restart", 0, "", "", `unknown action "restart"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			seq := tt.cur.GetEventSeq()
			r, ev, err := Control(tt.cur, tt.action, "", tt.wave, 42)
			if tt.refused != "" {
				if !errors.Is(err, ErrRefused) || !strings.Contains(Reason(err), tt.refused) || r != nil {
					t.Fatalf("got %v, %v; want refused with %q", r, err, tt.refused)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.GetState() != tt.wantState || ev.GetType() != tt.wantEvent || ev.GetSeq() != seq+1 || r.GetEventSeq() != seq+1 || ev.GetAtUnixNano() != 42 {
				t.Fatalf("state %s event %+v, want %s %s numbered %d", r.GetState(), ev, tt.wantState, tt.wantEvent, seq+1)
			}
			if tt.cur.GetEventSeq() != seq {
				t.Fatal("Control changed the row it was given")
			}
		})
	}
}

func TestStartQueuesOrSteps(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	mk := func() *relv1.Rollout {
		return NewRollout("ro-2", "web", "2.0.0", "prod", &relv1.RolloutSpec{Strategy: AllAtOnce}, []Wave{{Hosts: []string{"h1", "h2"}}}, nil, now)
	}
	obs := map[string]Obs{"h1": {Connected: true}, "h2": {Connected: true}}
	d := Start(mk(), "web@2.0.0 to prod", "ro-1", obs, now)
	if d.Rollout.GetState() != StateQueued || len(d.Dispatch) != 0 || len(d.Events) != 2 || d.Events[1].GetType() != EventQueued {
		t.Fatalf("blocked start: %+v", d)
	}
	d = Start(mk(), "web@2.0.0 to prod", "", obs, now)
	if d.Rollout.GetState() != StateRunning || len(d.Dispatch) != 2 || d.Events[0].GetType() != EventStarted || d.Events[0].GetSeq() != 1 {
		t.Fatalf("free start: %+v", d)
	}
	for i, e := range d.Events {
		if e.GetSeq() != uint64(i+1) {
			t.Fatalf("event %d numbered %d", i, e.GetSeq())
		}
	}
}

// --bake with each strategy (issue 9): all-at-once refuses it, rolling
// bakes between batches of max-parallel hosts (with or without --waves),
// canary after the canary and between its waves.
func TestBakeEveryStrategy(t *testing.T) {
	const bake = 30_000
	tests := []struct {
		name    string
		spec    *relv1.RolloutSpec
		refused string
		batches []int // hosts per wave
	}{
		{"all-at-once", &relv1.RolloutSpec{Strategy: AllAtOnce, BakeMs: bake}, "--bake 30s with all-at-once", nil},
		{"rolling, max-parallel 2", &relv1.RolloutSpec{Strategy: Rolling, MaxParallel: 2, BakeMs: bake}, "", []int{2, 2, 1}},
		{"rolling, default max-parallel", &relv1.RolloutSpec{Strategy: Rolling, BakeMs: bake}, "", []int{1, 1, 1, 1, 1}},
		{"rolling with waves", &relv1.RolloutSpec{Strategy: Rolling, MaxParallel: 2, BakeMs: bake, Waves: []*relv1.Quantity{{Percent: 60}, {Percent: 100}}}, "", []int{3, 2}},
		{"rolling without bake", &relv1.RolloutSpec{Strategy: Rolling, MaxParallel: 2}, "", []int{5}},
		{"canary", &relv1.RolloutSpec{Strategy: Canary, BakeMs: bake}, "", []int{1, 4}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec, err := Normalize(tt.spec)
			if tt.refused != "" {
				if !errors.Is(err, ErrInvalidSpec) || !strings.Contains(err.Error(), tt.refused) {
					t.Fatalf("got %v, want refused with %q", err, tt.refused)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			s := newSim(t, spec, 5)
			var sizes []int
			for w := uint32(0); w < s.r.WaveCount; w++ {
				n := 0
				for _, h := range s.r.Hosts {
					if h.Wave == w {
						n++
					}
				}
				sizes = append(sizes, n)
			}
			if fmt.Sprint(sizes) != fmt.Sprint(tt.batches) {
				t.Fatalf("waves %v, want %v", sizes, tt.batches)
			}
			// Between waves the planner waits the bake before dispatching.
			start := s.now
			for !Terminal(s.r.State) {
				d := s.settle()
				for _, id := range dispatched(s.r) {
					s.report(id, "healthy", "")
				}
				if len(dispatched(s.r)) == 0 && !d.Wake.IsZero() {
					s.now = d.Wake
				}
			}
			want := time.Duration(0)
			if spec.GetBakeMs() > 0 {
				want = time.Duration(len(tt.batches)-1) * bake * time.Millisecond
			}
			if got := s.now.Sub(start); got != want {
				t.Fatalf("rollout took %s of simulated time, want %s of bakes", got, want)
			}
		})
	}
}

func TestExpired(t *testing.T) {
	now := time.Unix(1_900_000_000, 0)
	old := now.Add(-30 * 24 * time.Hour).UnixNano()
	r := func(id string, idx uint64, env, state, kind string, finished int64) *relv1.Rollout {
		return &relv1.Rollout{Id: id, App: "web", Environment: env, State: state, Kind: kind, CreateIndex: idx, FinishedUnixNano: finished}
	}
	rs := []*relv1.Rollout{
		r("ro-1", 1, "prod", StateSucceeded, KindDeploy, old),  // old, beyond keep
		r("ro-2", 2, "prod", StateSucceeded, KindDeploy, old),  // holds prod's release (newest succeeded deploy)
		r("ro-3", 3, "prod", StateFailed, KindDeploy, old),     // within keep 2
		r("ro-4", 4, "prod", StateSucceeded, KindCatchUp, old), // within keep 2
		r("ro-5", 5, "qa", StateFailed, KindDeploy, now.UnixNano()),
		r("ro-6", 6, "qa", StateRunning, KindDeploy, 0),
		r("ro-7", 7, "qa", StateAborted, KindDeploy, old),
		r("ro-0", 0, "qa", StateFailed, KindDeploy, old),
	}
	got := Expired(rs, now, 7*24*time.Hour, 2, 1000)
	// prod: newest first ro-4, ro-3 kept (keep 2), ro-2 holds, ro-1 goes.
	// qa: ro-7, ro-6 kept (keep 2); ro-5 is recent; ro-0 goes.
	if fmt.Sprint(got) != "[ro-0 ro-1]" {
		t.Fatalf("expired %v, want [ro-0 ro-1]", got)
	}
	if got := Expired(rs, now, 7*24*time.Hour, 0, 1); fmt.Sprint(got) != "[ro-0]" {
		t.Fatalf("limit 1, keep 0: %v", got)
	}
	if got := Expired(rs, now, 365*24*time.Hour, 0, 1000); len(got) != 0 {
		t.Fatalf("a year's retention removes %v", got)
	}
}
