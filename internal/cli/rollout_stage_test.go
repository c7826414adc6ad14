package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

var (
	// canarySpec is a canary rollout's spec as the server stores it.
	canarySpec = &relv1.RolloutSpec{Strategy: "canary", Canary: &relv1.Quantity{Count: 1},
		Waves: []*relv1.Quantity{{Percent: 50}, {Percent: 100}}, MaxParallel: 1, BakeMs: 30_000, ApproveWaves: true,
		MaxFailures: &relv1.Quantity{}, ProgressDeadlineMs: 600_000, AutoRollback: true}

	planCanary = &relv1.PlanRolloutResponse{
		Spec: canarySpec,
		Waves: []*relv1.PlannedWave{
			{Index: 0, Kind: "canary", Hosts: []*relv1.PlannedHost{
				{AgentId: "web-1", CurrentVersion: "1.2.2", CurrentPhase: "healthy", Connected: true,
					Labels: map[string]string{"zone": "a"}},
			}},
			{Index: 1, Kind: "wave", Hosts: []*relv1.PlannedHost{
				{AgentId: "web-2", CurrentVersion: "1.2.2", CurrentPhase: "healthy", Connected: true,
					Labels: map[string]string{"zone": "a"}},
				{AgentId: "web-3", CurrentVersion: "1.2.1", CurrentPhase: "failed", Connected: true},
			}},
			{Index: 2, Kind: "wave", Hosts: []*relv1.PlannedHost{
				{AgentId: "web-4", Connected: true},
			}},
		},
		Offline:  []*relv1.PlannedHost{{AgentId: "web-9", CurrentVersion: "1.2.2", CurrentPhase: "healthy"}},
		UpToDate: 2,
	}

	planBlocked = &relv1.PlanRolloutResponse{
		Spec: &relv1.RolloutSpec{Strategy: "rolling", WaveBy: "zone", MaxParallel: 1, ProgressDeadlineMs: 600_000},
		Waves: []*relv1.PlannedWave{
			{Index: 0, Kind: "wave", Hosts: []*relv1.PlannedHost{
				{AgentId: "web-1", CurrentVersion: "1.2.2", CurrentPhase: "healthy", Connected: true,
					Labels: map[string]string{"zone": "eu-1"}},
			}},
			{Index: 1, Kind: "wave", Hosts: []*relv1.PlannedHost{
				{AgentId: "web-2", CurrentVersion: "1.2.2", CurrentPhase: "healthy", Connected: true,
					Labels: map[string]string{"zone": "eu-2"}},
			}},
		},
		Blockers: []string{"rollout r-7 of web to prod is running", "release web@1.2.3 has no artifact"},
	}

	// rolloutCanary is canarySpec's rollout waiting for approval of wave 1
	// after the canary.
	rolloutCanary = &relv1.Rollout{Id: "r-2", Kind: "deploy", App: "web", Version: "1.2.3", Environment: "prod",
		Spec: canarySpec, State: "waiting_approval", RolledBackBy: "",
		Hosts: []*relv1.RolloutHost{
			{AgentId: "web-1", PreviousVersion: "1.2.2", TargetVersion: "1.2.3", Wave: 0, State: "healthy", Phase: "healthy"},
			{AgentId: "web-2", PreviousVersion: "1.2.2", TargetVersion: "1.2.3", Wave: 1, State: "pending"},
			{AgentId: "web-3", PreviousVersion: "1.2.1", TargetVersion: "1.2.3", Wave: 1, State: "pending"},
			{AgentId: "web-4", TargetVersion: "1.2.3", Wave: 2, State: "pending"},
		},
		CurrentWave: 0, WaveCount: 3, WaveStartedUnixNano: t0, WaveDoneUnixNano: t0 + 20*sec, EventSeq: 7,
		CreatedUnixNano: t0, CreateIndex: 60, ModifyIndex: 66}

	statusCanary = &relv1.RolloutStatus{
		Rollout: rolloutCanary,
		Hosts: []*relv1.RolloutHostStatus{
			{AgentId: "web-4", Phase: "pending", Connected: true},
			{AgentId: "web-3", PreviousVersion: "1.2.1", Phase: "pending", Version: "1.2.3", CurrentVersion: "1.2.1", Connected: true},
			{AgentId: "web-2", PreviousVersion: "1.2.2", Phase: "pending", Version: "1.2.3", CurrentVersion: "1.2.2", Connected: true},
			{AgentId: "web-1", PreviousVersion: "1.2.2", Phase: "healthy", Version: "1.2.3", CurrentVersion: "1.2.3", Connected: true,
				UpdatedUnixNano: t0 + 20*sec},
		},
	}

	eventsCanary = []*relv1.RolloutEvent{
		{Seq: 1, AtUnixNano: t0, Type: "started", Message: "4 hosts in 3 waves"},
		{Seq: 2, AtUnixNano: t0, Type: "wave_started", Message: "1 host"},
		{Seq: 3, AtUnixNano: t0 + 1*sec, Type: "dispatched", Host: "web-1"},
		{Seq: 4, AtUnixNano: t0 + 20*sec, Type: "host_healthy", Host: "web-1", Message: "healthy on 1.2.3"},
		{Seq: 5, AtUnixNano: t0 + 20*sec, Type: "wave_done"},
		{Seq: 6, AtUnixNano: t0 + 20*sec, Type: "baking", Message: "30s"},
		{Seq: 7, AtUnixNano: t0 + 50*sec, Type: "waiting_approval", Message: "approve wave 1 with relctl rollout approve r-2"},
	}

	// rollbackCanary is the rollback of r-2.
	rollbackCanary = &relv1.Rollout{Id: "r-3", Kind: "rollback", RollbackOf: "r-2", App: "web", Version: "1.2.3",
		Environment: "prod", Spec: &relv1.RolloutSpec{Strategy: "all-at-once"}, State: "running",
		Hosts: []*relv1.RolloutHost{
			{AgentId: "web-1", PreviousVersion: "1.2.3", TargetVersion: "1.2.2", State: "dispatched"},
		},
		WaveCount: 1, CreatedUnixNano: t0 + 60*sec, CreateIndex: 70, ModifyIndex: 70}
)

// fakeStage is a ControlService for plan, start, the controls, rollback,
// events and status of rollout r-2 (rolloutCanary).
type fakeStage struct {
	relv1.UnimplementedControlServiceServer
	plan     *relv1.PlanRolloutResponse
	planned  chan *relv1.PlanRolloutRequest
	started  chan *relv1.StartRolloutRequest
	controls chan *relv1.ControlRolloutRequest
	rollback chan *relv1.RollbackRolloutRequest
	afters   chan uint64 // after_seq of every RolloutEvents
	// noEvents makes RolloutEvents unimplemented, as on an older server.
	noEvents bool
}

func newFakeStage() *fakeStage {
	return &fakeStage{plan: planCanary, planned: make(chan *relv1.PlanRolloutRequest, 1),
		started: make(chan *relv1.StartRolloutRequest, 1), controls: make(chan *relv1.ControlRolloutRequest, 1),
		rollback: make(chan *relv1.RollbackRolloutRequest, 1), afters: make(chan uint64, 20)}
}

func (f *fakeStage) PlanRollout(_ context.Context, req *relv1.PlanRolloutRequest) (*relv1.PlanRolloutResponse, error) {
	f.planned <- req
	return f.plan, nil
}

func (f *fakeStage) StartRollout(_ context.Context, req *relv1.StartRolloutRequest) (*relv1.StartRolloutResponse, error) {
	f.started <- req
	return &relv1.StartRolloutResponse{Rollout: rolloutCanary, Index: 60}, nil
}

func (f *fakeStage) ControlRollout(_ context.Context, req *relv1.ControlRolloutRequest) (*relv1.ControlRolloutResponse, error) {
	f.controls <- req
	if req.GetId() != "r-2" {
		return nil, status.Errorf(codes.NotFound, "rollout %q not found", req.GetId())
	}
	states := map[string]string{"pause": "paused", "resume": "running", "approve": "running", "abort": "aborted"}
	ro := &relv1.Rollout{Id: "r-2", Kind: "deploy", App: "web", Version: "1.2.3", Environment: "prod",
		Spec: canarySpec, State: states[req.GetAction()], Reason: req.GetReason(), WaveCount: 3}
	return &relv1.ControlRolloutResponse{Rollout: ro, Index: 67}, nil
}

func (f *fakeStage) RollbackRollout(_ context.Context, req *relv1.RollbackRolloutRequest) (*relv1.RollbackRolloutResponse, error) {
	f.rollback <- req
	return &relv1.RollbackRolloutResponse{Rollback: rollbackCanary, Index: 70}, nil
}

func (f *fakeStage) GetRollout(_ context.Context, req *relv1.GetRolloutRequest) (*relv1.GetRolloutResponse, error) {
	if req.GetId() == "r-3" {
		return &relv1.GetRolloutResponse{Status: &relv1.RolloutStatus{Rollout: rollbackCanary}, Index: 70}, nil
	}
	if req.GetId() != "r-2" {
		return nil, status.Errorf(codes.NotFound, "rollout %q not found", req.GetId())
	}
	return &relv1.GetRolloutResponse{Status: statusCanary, Index: 66}, nil
}

// RolloutEvents answers with at most three events at a time.
func (f *fakeStage) RolloutEvents(_ context.Context, req *relv1.RolloutEventsRequest) (*relv1.RolloutEventsResponse, error) {
	f.afters <- req.GetAfterSeq()
	if f.noEvents {
		return nil, status.Error(codes.Unimplemented, "unknown method RolloutEvents")
	}
	if req.GetId() != "r-2" {
		return nil, status.Errorf(codes.NotFound, "rollout %q not found", req.GetId())
	}
	resp := &relv1.RolloutEventsResponse{Rollout: rolloutCanary, Index: 66}
	for _, e := range eventsCanary {
		if e.GetSeq() > req.GetAfterSeq() && len(resp.Events) < 3 {
			resp.Events = append(resp.Events, e)
		}
	}
	return resp, nil
}

func drainUint64(c chan uint64) []uint64 {
	var out []uint64
	for {
		select {
		case v := <-c:
			out = append(out, v)
		default:
			return out
		}
	}
}

func TestStageOutput(t *testing.T) {
	tests := []struct {
		name   string
		format string
		print  func(p printer) error
		want   string
	}{
		{
			name: "plan table", format: formatTable,
			print: func(p printer) error { return p.plan("web", "1.2.3", "prod", planCanary) },
			want: "" +
				"Plan for web@1.2.3 to prod (nothing changes until \"relctl rollout start\")\n" +
				"Strategy: canary 1, waves 50%,100%, max-parallel 1, bake 30s, approve-waves, max-failures 0, deadline 10m, auto-rollback\n" +
				"\n" +
				"WAVE 0 (canary): 1 host\n" +
				"HOST   NOW RUNNING  PHASE    CONNECTED\n" +
				"web-1  1.2.2        healthy  yes\n" +
				"\n" +
				"WAVE 1: 2 hosts\n" +
				"HOST   NOW RUNNING  PHASE    CONNECTED\n" +
				"web-2  1.2.2        healthy  yes\n" +
				"web-3  1.2.1        failed   yes\n" +
				"\n" +
				"WAVE 2: 1 host\n" +
				"HOST   NOW RUNNING  PHASE  CONNECTED\n" +
				"web-4                      yes\n" +
				"\n" +
				"Offline, would be skipped: 1 host\n" +
				"HOST   NOW RUNNING  PHASE\n" +
				"web-9  1.2.2        healthy\n" +
				"\n" +
				"Already on 1.2.3: 2 hosts\n",
		},
		{
			name: "plan table with blockers, waves by label", format: formatTable,
			print: func(p printer) error { return p.plan("web", "1.2.3", "prod", planBlocked) },
			want: "" +
				"Plan for web@1.2.3 to prod (nothing changes until \"relctl rollout start\")\n" +
				"Strategy: rolling, wave-by zone, max-parallel 1, max-failures 0, deadline 10m\n" +
				"\n" +
				"WAVE 1 (zone=eu-1): 1 host\n" +
				"HOST   NOW RUNNING  PHASE    CONNECTED\n" +
				"web-1  1.2.2        healthy  yes\n" +
				"\n" +
				"WAVE 2 (zone=eu-2): 1 host\n" +
				"HOST   NOW RUNNING  PHASE    CONNECTED\n" +
				"web-2  1.2.2        healthy  yes\n" +
				"\n" +
				"Already on 1.2.3: 0 hosts\n" +
				"\n" +
				"Blockers (the rollout would not start):\n" +
				"  rollout r-7 of web to prod is running\n" +
				"  release web@1.2.3 has no artifact\n",
		},
		{
			name: "plan table without hosts", format: formatTable,
			print: func(p printer) error {
				return p.plan("web", "1.2.3", "prod", &relv1.PlanRolloutResponse{Spec: canarySpec, UpToDate: 1})
			},
			want: "" +
				"Plan for web@1.2.3 to prod (nothing changes until \"relctl rollout start\")\n" +
				"Strategy: canary 1, waves 50%,100%, max-parallel 1, bake 30s, approve-waves, max-failures 0, deadline 10m, auto-rollback\n" +
				"\n" +
				"No host to change.\n" +
				"\n" +
				"Already on 1.2.3: 1 host\n",
		},
		{
			name: "plan json", format: formatJSON,
			print: func(p printer) error { return p.plan("web", "1.2.3", "prod", planBlocked) },
			want: `{
  "spec": {
    "strategy": "rolling",
    "canary": "",
    "waves": [],
    "wave_by": "zone",
    "max_parallel": 1,
    "bake_ms": 0,
    "approve_waves": false,
    "max_failures": "0",
    "progress_deadline_ms": 600000,
    "auto_rollback": false
  },
  "waves": [
    {
      "index": 0,
      "kind": "wave",
      "hosts": [
        {
          "agent_id": "web-1",
          "current_version": "1.2.2",
          "current_phase": "healthy",
          "connected": true,
          "labels": {
            "zone": "eu-1"
          }
        }
      ]
    },
    {
      "index": 1,
      "kind": "wave",
      "hosts": [
        {
          "agent_id": "web-2",
          "current_version": "1.2.2",
          "current_phase": "healthy",
          "connected": true,
          "labels": {
            "zone": "eu-2"
          }
        }
      ]
    }
  ],
  "offline": [],
  "blockers": [
    "rollout r-7 of web to prod is running",
    "release web@1.2.3 has no artifact"
  ],
  "up_to_date": 0
}
`,
		},
		{
			name: "plan json empty", format: formatJSON,
			print: func(p printer) error { return p.plan("web", "1.2.3", "prod", &relv1.PlanRolloutResponse{}) },
			want: `{
  "spec": {
    "strategy": "",
    "canary": "",
    "waves": [],
    "wave_by": "",
    "max_parallel": 0,
    "bake_ms": 0,
    "approve_waves": false,
    "max_failures": "0",
    "progress_deadline_ms": 0,
    "auto_rollback": false
  },
  "waves": [],
  "offline": [],
  "blockers": [],
  "up_to_date": 0
}
`,
		},
		{
			name: "rollout status with waves and events", format: formatTable,
			print: func(p printer) error { return p.rolloutStatusWithEvents(statusCanary, eventsCanary[2:]) },
			want: `Rollout:     r-2
Kind:        deploy
Release:     web@1.2.3
Environment: prod
Strategy:    canary 1, waves 50%,100%, max-parallel 1, bake 30s, approve-waves, max-failures 0, deadline 10m, auto-rollback
State:       waiting_approval
Wave:        0 of 2 (canary), waiting for approval for 9m10s
Started:     2025-03-04T04:06:07Z
Finished:
Reason:

HOST   WAVE  STATE    PHASE    PREVIOUS  TARGET  NOW    CONNECTED  UPDATED               REASON
web-1  0     healthy  healthy  1.2.2     1.2.3   1.2.3  yes        2025-03-04T04:06:27Z
web-3  1     pending  pending  1.2.1     1.2.3   1.2.1  yes
web-2  1     pending  pending  1.2.2     1.2.3   1.2.2  yes
web-4  2     pending  pending            1.2.3          yes
4 hosts: 1 healthy, 3 pending

Latest 5 of 7 events:
TIME                  WAVE  TYPE              HOST   MESSAGE
2025-03-04T04:06:08Z  0     dispatched        web-1
2025-03-04T04:06:27Z  0     host_healthy      web-1  healthy on 1.2.3
2025-03-04T04:06:27Z  0     wave_done
2025-03-04T04:06:27Z  0     baking                   30s
2025-03-04T04:06:57Z  0     waiting_approval         approve wave 1 with relctl rollout approve r-2
`,
		},
		{
			name: "rollback status names the target", format: formatTable,
			print: func(p printer) error {
				return p.rolloutStatus(&relv1.RolloutStatus{Rollout: rollbackCanary, Hosts: []*relv1.RolloutHostStatus{
					{AgentId: "web-1", PreviousVersion: "1.2.3", Version: "1.2.2", CurrentVersion: "1.2.3", Phase: "installing", Connected: true}}})
			},
			want: `Rollout:     r-3
Kind:        rollback of r-2
Release:     web@1.2.3
Environment: prod
Strategy:    all-at-once, max-failures 0
State:       running
Wave:        1 of 1
Started:     2025-03-04T04:07:07Z
Finished:
Reason:

HOST   WAVE  STATE       PHASE       PREVIOUS  TARGET  NOW    CONNECTED  UPDATED  REASON
web-1  1     dispatched  installing  1.2.3     1.2.2   1.2.3  yes
1 host: 1 installing
`,
		},
		{
			name: "rollout started in waves", format: formatTable,
			print: func(p printer) error { return p.rolloutStarted(rolloutCanary, 60) },
			want: "" +
				"started rollout r-2: web@1.2.3 to prod, 4 hosts in 3 waves (index 60)\n" +
				"HOST   WAVE  PREVIOUS\n" +
				"web-1  0     1.2.2\n" +
				"web-2  1     1.2.2\n" +
				"web-3  1     1.2.1\n" +
				"web-4  2\n",
		},
		{
			name: "rollback started", format: formatTable,
			print: func(p printer) error { return p.rollbackStarted(rollbackCanary, 70) },
			want: "" +
				"started rollback r-3 of rollout r-2: web in prod, 1 host (index 70)\n" +
				"HOST   WAVE  FROM   TO\n" +
				"web-1  1     1.2.3  1.2.2\n",
		},
		{
			name: "events table", format: formatTable,
			print: func(p printer) error { return p.events(rolloutCanary, eventsCanary[:3]) },
			want: "" +
				"TIME                  WAVE  TYPE          HOST   MESSAGE\n" +
				"2025-03-04T04:06:07Z  0     started              4 hosts in 3 waves\n" +
				"2025-03-04T04:06:07Z  0     wave_started         1 host\n" +
				"2025-03-04T04:06:08Z  0     dispatched    web-1\n",
		},
		{
			name: "events json", format: formatJSON,
			print: func(p printer) error { return p.events(rolloutCanary, eventsCanary[3:4]) },
			want: `{
  "events": [
    {
      "seq": 4,
      "at": "2025-03-04T04:06:27.89Z",
      "type": "host_healthy",
      "wave": 0,
      "host": "web-1",
      "message": "healthy on 1.2.3"
    }
  ]
}
`,
		},
		{
			name: "events json empty", format: formatJSON,
			print: func(p printer) error { return p.events(rolloutCanary, nil) },
			want:  "{\n  \"events\": []\n}\n",
		},
		{
			name: "controlled table", format: formatTable,
			print: func(p printer) error { return p.rolloutControlled(&relv1.Rollout{Id: "r-2", State: "paused"}, 0) },
			want:  "rollout r-2: paused\n",
		},
		{
			name: "approved table", format: formatTable,
			print: func(p printer) error {
				return p.rolloutControlled(&relv1.Rollout{Id: "r-2", State: "running", Spec: canarySpec, WaveCount: 3}, 1)
			},
			want: "rollout r-2: running; approved wave 1 of 2\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := tt.print(printer{w: &b, format: tt.format, now: nowOps}); err != nil {
				t.Fatal(err)
			}
			if got := b.String(); got != tt.want {
				t.Errorf("output mismatch\n got:\n%s\nwant:\n%s\n got %q\nwant %q", got, tt.want, got, tt.want)
			}
		})
	}
}

func TestStep(t *testing.T) {
	base := &relv1.Rollout{Spec: &relv1.RolloutSpec{Strategy: "rolling", BakeMs: 30_000}, WaveCount: 3, CurrentWave: 1,
		WaveStartedUnixNano: nowOps.Add(-time.Minute).UnixNano()}
	with := func(f func(r *relv1.Rollout)) *relv1.Rollout {
		r := proto.CloneOf(base)
		f(r)
		return r
	}
	tests := []struct {
		name   string
		r      *relv1.Rollout
		events []*relv1.RolloutEvent
		want   string
	}{
		{name: "running", r: with(func(r *relv1.Rollout) { r.State = "running" }), want: "2 of 3, running for 1m0s"},
		{name: "baking", r: with(func(r *relv1.Rollout) {
			r.State, r.WaveDoneUnixNano = "running", nowOps.Add(-12*time.Second).UnixNano()
		}), want: "2 of 3, baking 12s/30s"},
		{name: "baked longer than the bake", r: with(func(r *relv1.Rollout) {
			r.State, r.WaveDoneUnixNano = "running", nowOps.Add(-50*time.Second).UnixNano()
		}), want: "2 of 3, baking 30s/30s"},
		{name: "waiting for approval, dated by its event", r: with(func(r *relv1.Rollout) {
			r.State, r.WaveDoneUnixNano = "waiting_approval", nowOps.Add(-5*time.Minute).UnixNano()
		}), events: []*relv1.RolloutEvent{{Type: "waiting_approval", AtUnixNano: nowOps.Add(-63 * time.Second).UnixNano()}},
			want: "2 of 3, waiting for approval for 1m3s"},
		{name: "paused", r: with(func(r *relv1.Rollout) {
			r.State, r.LastProgressUnixNano = "paused", nowOps.Add(-5*time.Second).UnixNano()
		}), want: "2 of 3, paused for 5s"},
		{name: "over", r: with(func(r *relv1.Rollout) { r.State = "succeeded" }), want: "2 of 3"},
		{name: "canary", r: &relv1.Rollout{State: "running", Spec: &relv1.RolloutSpec{Strategy: "canary"}, WaveCount: 3},
			want: "0 of 2 (canary)"},
		{name: "no waves known", r: &relv1.Rollout{State: "running"}, want: ""},
	}
	p := printer{now: nowOps}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wave, activity := p.step(tt.r, tt.events)
			if got := joinNonEmpty(", ", wave, activity); got != tt.want {
				t.Errorf("step = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestPlanCommand: the plan is printed whole, and blockers make the
// command fail afterwards with one line naming them.
func TestPlanCommand(t *testing.T) {
	srv := newFakeStage()
	addr := serve(t, srv, nil)
	env := map[string]string{envAddr: addr}

	res := runCLI(t, env, "", "rollout", "plan", "web@1.2.3", "--env", "prod", "--strategy", "canary")
	if res.code != exitOK || res.stderr != "" || !strings.Contains(res.stdout, "WAVE 0 (canary): 1 host\n") {
		t.Errorf("plan: exit %d, stderr %q, stdout:\n%s", res.code, res.stderr, res.stdout)
	}
	if req := <-srv.planned; req.GetApp() != "web" || req.GetVersion() != "1.2.3" || req.GetEnvironment() != "prod" {
		t.Errorf("plan request %v", req)
	}

	srv.plan = planBlocked
	for _, format := range []string{formatTable, formatJSON} {
		res = runCLI(t, env, "", "-o", format, "rollout", "plan", "web@1.2.3", "--env", "prod", "--wave-by", "zone")
		<-srv.planned
		if res.code != exitRefused {
			t.Errorf("%s: exit code = %d, want %d", format, res.code, exitRefused)
		}
		checkOneErrorLine(t, res)
		want := "relctl: the rollout would not start: rollout r-7 of web to prod is running; release web@1.2.3 has no artifact\n"
		if res.stderr != want {
			t.Errorf("%s: stderr = %q, want %q", format, res.stderr, want)
		}
		if format == formatJSON {
			var plan planJSON
			if err := json.Unmarshal([]byte(res.stdout), &plan); err != nil || len(plan.Blockers) != 2 || len(plan.Waves) != 2 {
				t.Errorf("json plan %+v (%v):\n%s", plan, err, res.stdout)
			}
		} else if !strings.Contains(res.stdout, "Blockers (the rollout would not start):\n") {
			t.Errorf("table plan lacks the blockers:\n%s", res.stdout)
		}
	}
}

func TestRolloutControls(t *testing.T) {
	srv := newFakeStage()
	addr := serve(t, srv, nil)
	env := map[string]string{envAddr: addr}
	for _, tt := range []struct{ action, state string }{
		{"pause", "paused"}, {"resume", "running"}, {"approve", "running"}, {"abort", "aborted"},
	} {
		t.Run(tt.action, func(t *testing.T) {
			res := runCLI(t, env, "", "rollout", tt.action, "r-2", "--reason", "because")
			if res.code != exitOK || res.stderr != "" {
				t.Fatalf("exit %d, stderr %q", res.code, res.stderr)
			}
			// approve finds the wave r-2 waits for: the first after the
			// canary, wave 1 (of 2).
			want, wave := "rollout r-2: "+tt.state+"\n", uint32(0)
			if tt.action == "approve" {
				want, wave = "rollout r-2: running; approved wave 1 of 2\n", 1
			}
			if res.stdout != want {
				t.Errorf("stdout = %q, want %q", res.stdout, want)
			}
			req := <-srv.controls
			if req.GetId() != "r-2" || req.GetAction() != tt.action || req.GetReason() != "because" || req.GetWave() != wave {
				t.Errorf("request %v, want id r-2, action %s, reason because, wave %d", req, tt.action, wave)
			}

			res = runCLI(t, env, "", "-o", "json", "rollout", tt.action, "r-2")
			<-srv.controls
			var ro rolloutJSON
			if err := json.Unmarshal([]byte(res.stdout), &ro); err != nil || ro.ID != "r-2" || ro.State != tt.state {
				t.Errorf("json: %+v (%v)", ro, err)
			}
		})
	}

	res := runCLI(t, env, "", "rollout", "pause", "r-404")
	<-srv.controls
	if res.code != exitRefused || res.stderr != "relctl: rollout \"r-404\" not found (NotFound)\n" {
		t.Errorf("pause r-404: exit %d, stderr %q", res.code, res.stderr)
	}
	res = runCLI(t, env, "", "rollout", "approve")
	if res.code != exitUsage {
		t.Errorf("approve without id: exit %d", res.code)
	}
	// --wave is sent as given: the server decides.
	res = runCLI(t, env, "", "rollout", "approve", "r-2", "--wave", "2")
	if req := <-srv.controls; res.code != exitOK || req.GetWave() != 2 || res.stdout != "rollout r-2: running; approved wave 2 of 2\n" {
		t.Errorf("approve --wave 2: exit %d, stdout %q, stderr %q, request %v", res.code, res.stdout, res.stderr, req)
	}
	// Nothing waits: nothing is sent.
	res = runCLI(t, env, "", "rollout", "approve", "r-3")
	if res.code != exitRefused || res.stderr != "relctl: rollout r-3 is running, not waiting for approval: no wave to approve ('relctl rollout status r-3' shows where it is) (FailedPrecondition)\n" {
		t.Errorf("approve of a running rollout: exit %d, stderr %q", res.code, res.stderr)
	}
	if n := len(srv.controls); n != 0 {
		t.Errorf("approve of a running rollout sent %d controls", n)
	}
	res = runCLI(t, env, "", "rollout", "pause", "r-2", "--wave", "2")
	if res.code != exitUsage {
		t.Errorf("pause --wave: exit %d, stderr %q", res.code, res.stderr)
	}

	res = runCLI(t, env, "", "rollout", "rollback", "r-2", "--all-at-once")
	if res.code != exitOK || !strings.HasPrefix(res.stdout, "started rollback r-3 of rollout r-2: web in prod, 1 host (index 70)\n") {
		t.Errorf("rollback: exit %d, stderr %q, stdout:\n%s", res.code, res.stderr, res.stdout)
	}
	if req := <-srv.rollback; req.GetId() != "r-2" || !req.GetAllAtOnce() {
		t.Errorf("rollback request %v", req)
	}
	res = runCLI(t, env, "", "-o", "json", "rollout", "rollback", "r-2")
	if req := <-srv.rollback; req.GetAllAtOnce() {
		t.Errorf("rollback without --all-at-once sent %v", req)
	}
	var ro rolloutJSON
	if err := json.Unmarshal([]byte(res.stdout), &ro); err != nil || ro.ID != "r-3" || ro.Kind != "rollback" || ro.RollbackOf != "r-2" {
		t.Errorf("rollback json: %+v (%v)", ro, err)
	}
}

func TestRolloutEventsCommand(t *testing.T) {
	srv := newFakeStage()
	addr := serve(t, srv, nil)
	env := map[string]string{envAddr: addr}

	res := runCLI(t, env, "", "-o", "json", "rollout", "events", "r-2")
	if res.code != exitOK {
		t.Fatalf("exit %d, stderr %q", res.code, res.stderr)
	}
	// The server answers three events at a time: relctl asks until it has
	// them all.
	if got := drainUint64(srv.afters); len(got) != 3 || got[0] != 0 || got[1] != 3 || got[2] != 6 {
		t.Errorf("after_seq sequence = %v, want [0 3 6]", got)
	}
	var out struct {
		Events []eventJSON `json:"events"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &out); err != nil || len(out.Events) != 7 || out.Events[6].Seq != 7 {
		t.Errorf("events %+v (%v)", out, err)
	}

	res = runCLI(t, env, "", "rollout", "events", "r-2")
	drainUint64(srv.afters)
	if res.code != exitOK || strings.Count(res.stdout, "\n") != 8 ||
		!strings.HasPrefix(res.stdout, "TIME                  WAVE  TYPE              HOST   MESSAGE\n") {
		t.Errorf("exit %d, stdout:\n%s", res.code, res.stdout)
	}

	res = runCLI(t, env, "", "rollout", "events", "r-404")
	drainUint64(srv.afters)
	if res.code != exitRefused || res.stderr != "relctl: rollout \"r-404\" not found (NotFound)\n" {
		t.Errorf("events r-404: exit %d, stderr %q", res.code, res.stderr)
	}
}

// TestRolloutStatusEvents: the status table ends with the last five
// events, asked for after event_seq-5; JSON asks for none; a server
// without RolloutEvents still gives the status.
func TestRolloutStatusEvents(t *testing.T) {
	srv := newFakeStage()
	addr := serve(t, srv, nil)
	env := map[string]string{envAddr: addr}

	res := runCLI(t, env, "", "rollout", "status", "r-2")
	if res.code != exitOK {
		t.Fatalf("exit %d, stderr %q", res.code, res.stderr)
	}
	if got := drainUint64(srv.afters); len(got) != 2 || got[0] != 2 || got[1] != 5 {
		t.Errorf("after_seq sequence = %v, want [2 5]", got)
	}
	_, events, _ := strings.Cut(res.stdout, "Latest 5 of 7 events:\n")
	if strings.Count(events, "\n") != 6 || !strings.Contains(events, "waiting_approval") {
		t.Errorf("stdout does not end with the last 5 events:\n%s", res.stdout)
	}

	res = runCLI(t, env, "", "-o", "json", "rollout", "status", "r-2")
	if got := drainUint64(srv.afters); res.code != exitOK || len(got) != 0 {
		t.Errorf("json: exit %d, RolloutEvents calls %v", res.code, got)
	}

	srv.noEvents = true
	res = runCLI(t, env, "", "rollout", "status", "r-2")
	drainUint64(srv.afters)
	if res.code != exitOK || strings.Contains(res.stdout, "events") || !strings.Contains(res.stdout, "4 hosts: 1 healthy, 3 pending\n") {
		t.Errorf("without RolloutEvents: exit %d, stderr %q, stdout:\n%s", res.code, res.stderr, res.stdout)
	}
}
