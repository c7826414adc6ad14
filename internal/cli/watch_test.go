package cli

import (
	"context"
	"encoding/json"
	"io"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// watchStep is one state of a scripted rollout.
type watchStep struct {
	state, reason string
	wave          uint32
	hosts         []string      // engine state of web-1 (wave 0), web-2 and web-3 (wave 1)
	seq           uint64        // events that happened up to this state
	hold          time.Duration // how long the server holds the answer
}

// fakeWatch serves a scripted canary rollout r-5: GetRollout answers step
// i at index 10*(i+1), the first step past the wait index; RolloutEvents
// serves the events up to the last step served.
type fakeWatch struct {
	relv1.UnimplementedControlServiceServer
	steps  []watchStep
	events []*relv1.RolloutEvent

	mu     sync.Mutex
	served int // steps served so far
	waits  []uint64
	afters []uint64
}

var watchHosts = []struct {
	id   string
	wave uint32
}{{"web-1", 0}, {"web-2", 1}, {"web-3", 1}}

func (f *fakeWatch) status(i int) *relv1.RolloutStatus {
	st := f.steps[i]
	ro := &relv1.Rollout{Id: "r-5", Kind: "deploy", App: "web", Version: "1.3.0", Environment: "prod",
		Spec: &relv1.RolloutSpec{Strategy: "canary", Canary: &relv1.Quantity{Count: 1},
			Waves: []*relv1.Quantity{{Percent: 100}}, ApproveWaves: true, ProgressDeadlineMs: 600_000},
		State: st.state, Reason: st.reason, CurrentWave: st.wave, WaveCount: 2, EventSeq: st.seq,
		WaveStartedUnixNano: time.Now().UnixNano(), CreatedUnixNano: t0}
	out := &relv1.RolloutStatus{Rollout: ro}
	for j, h := range watchHosts {
		phase := map[string]string{"pending": "pending", "dispatched": "installing", "healthy": "healthy",
			"failed": "failed"}[st.hosts[j]]
		ro.Hosts = append(ro.Hosts, &relv1.RolloutHost{AgentId: h.id, Wave: h.wave, State: st.hosts[j],
			Phase: phase, TargetVersion: "1.3.0", PreviousVersion: "1.2.0"})
		out.Hosts = append(out.Hosts, &relv1.RolloutHostStatus{AgentId: h.id, Phase: phase, Connected: true})
	}
	return out
}

func (f *fakeWatch) GetRollout(ctx context.Context, req *relv1.GetRolloutRequest) (*relv1.GetRolloutResponse, error) {
	if req.GetId() != "r-5" {
		return nil, status.Errorf(codes.NotFound, "rollout %q not found", req.GetId())
	}
	f.mu.Lock()
	f.waits = append(f.waits, req.GetWaitIndex())
	i := min(int(req.GetWaitIndex()/10), len(f.steps)-1)
	f.served = max(f.served, i+1)
	hold := f.steps[i].hold
	f.mu.Unlock()
	select {
	case <-time.After(hold):
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	return &relv1.GetRolloutResponse{Status: f.status(i), Index: uint64(10 * (i + 1))}, nil
}

// RolloutEvents answers two events at a time.
func (f *fakeWatch) RolloutEvents(_ context.Context, req *relv1.RolloutEventsRequest) (*relv1.RolloutEventsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.afters = append(f.afters, req.GetAfterSeq())
	last := f.served - 1
	resp := &relv1.RolloutEventsResponse{Rollout: f.status(last).GetRollout()}
	for _, e := range f.events {
		if e.GetSeq() > req.GetAfterSeq() && e.GetSeq() <= f.steps[last].seq && len(resp.Events) < 2 {
			resp.Events = append(resp.Events, e)
		}
	}
	return resp, nil
}

// newFakeWatch scripts r-5: a canary that waits for approval, then its
// second wave, and the end given (succeeded, failed, aborted, rolled_back).
func newFakeWatch(final, reason string) *fakeWatch {
	at := func(s int64) int64 { return t0 + s*sec }
	f := &fakeWatch{events: []*relv1.RolloutEvent{
		{Seq: 1, AtUnixNano: at(0), Type: "started", Message: "3 hosts in 2 waves"},
		{Seq: 2, AtUnixNano: at(0), Type: "wave_started", Wave: 0, Message: "1 host"},
		{Seq: 3, AtUnixNano: at(1), Type: "dispatched", Wave: 0, Host: "web-1", Message: "to 1.3.0"},
		{Seq: 4, AtUnixNano: at(9), Type: "host_healthy", Wave: 0, Host: "web-1", Message: "healthy on 1.3.0"},
		{Seq: 5, AtUnixNano: at(9), Type: "wave_done", Wave: 0},
		{Seq: 6, AtUnixNano: at(9), Type: "waiting_approval", Wave: 0},
		{Seq: 7, AtUnixNano: at(60), Type: "approved", Wave: 0, Message: "by ops"},
		{Seq: 8, AtUnixNano: at(60), Type: "wave_started", Wave: 1, Message: "2 hosts"},
		{Seq: 9, AtUnixNano: at(61), Type: "dispatched", Wave: 1, Host: "web-2", Message: "to 1.3.0"},
		{Seq: 10, AtUnixNano: at(61), Type: "dispatched", Wave: 1, Host: "web-3", Message: "to 1.3.0"},
		{Seq: 11, AtUnixNano: at(70), Type: "host_healthy", Wave: 1, Host: "web-2", Message: "healthy on 1.3.0"},
	}}
	f.steps = []watchStep{
		{state: "running", hosts: []string{"dispatched", "pending", "pending"}, seq: 3},
		{state: "waiting_approval", hosts: []string{"healthy", "pending", "pending"}, seq: 6},
		{state: "running", wave: 1, hosts: []string{"healthy", "dispatched", "dispatched"}, seq: 10},
	}
	last := []string{"healthy", "healthy", "healthy"}
	third := &relv1.RolloutEvent{Seq: 12, AtUnixNano: at(71), Type: "host_healthy", Wave: 1, Host: "web-3", Message: "healthy on 1.3.0"}
	if final != "succeeded" {
		last[2] = "failed"
		third = &relv1.RolloutEvent{Seq: 12, AtUnixNano: at(71), Type: "host_failed", Wave: 1, Host: "web-3",
			Message: "verify hook exited 1"}
	}
	f.events = append(f.events, third)
	if final == "rolled_back" {
		f.events = append(f.events,
			&relv1.RolloutEvent{Seq: 13, AtUnixNano: at(72), Type: "failed", Wave: 1, Message: reason},
			&relv1.RolloutEvent{Seq: 14, AtUnixNano: at(72), Type: "rollback_started", Wave: 1, Message: "rollback r-6"})
		f.steps = append(f.steps, watchStep{state: "rolling_back", wave: 1, hosts: last, seq: 14, reason: reason})
	}
	f.events = append(f.events, &relv1.RolloutEvent{Seq: uint64(len(f.events) + 1), AtUnixNano: at(80), Type: final,
		Wave: 1, Message: reason})
	f.steps = append(f.steps, watchStep{state: final, wave: 1, hosts: last, seq: uint64(len(f.events)), reason: reason})
	return f
}

func (f *fakeWatch) calls() (waits, afters []uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.waits), slices.Clone(f.afters)
}

// setWatchTerminal makes the watch see stdout as a terminal (or not) for
// the test, and redraw every 10ms.
func setWatchTerminal(t *testing.T, tty bool) {
	t.Helper()
	isTTY, redraw, retry := watchIsTerminal, watchRedrawInterval, watchRetryDelay
	t.Cleanup(func() { watchIsTerminal, watchRedrawInterval, watchRetryDelay = isTTY, redraw, retry })
	watchIsTerminal = func(io.Writer) bool { return tty }
	watchRedrawInterval, watchRetryDelay = 10*time.Millisecond, 10*time.Millisecond
}

// TestWatchLines: on a non-terminal the watch prints one line per event,
// every event once and in order, and exits by how the rollout ended.
func TestWatchLines(t *testing.T) {
	tests := []struct {
		final, reason string
		wantCode      int
		wantErr       string // whole stderr
		wantWaits     []uint64
	}{
		{final: "succeeded", wantWaits: []uint64{0, 10, 20, 30}},
		{final: "failed", reason: "1 host failed, max-failures 0", wantCode: exitRefused,
			wantErr:   "relctl: rollout r-5 of web@1.3.0 to prod ended failed: 1 host failed, max-failures 0\n",
			wantWaits: []uint64{0, 10, 20, 30}},
		{final: "aborted", reason: "aborted by ops", wantCode: exitRefused,
			wantErr:   "relctl: rollout r-5 of web@1.3.0 to prod ended aborted: aborted by ops\n",
			wantWaits: []uint64{0, 10, 20, 30}},
		{final: "rolled_back", reason: "1 host failed", wantCode: exitRefused,
			wantErr:   "relctl: rollout r-5 of web@1.3.0 to prod ended rolled_back: 1 host failed\n",
			wantWaits: []uint64{0, 10, 20, 30, 40}},
	}
	for _, tt := range tests {
		t.Run(tt.final, func(t *testing.T) {
			setWatchTerminal(t, false)
			srv := newFakeWatch(tt.final, tt.reason)
			addr := serve(t, srv, nil)
			res := runCLI(t, map[string]string{envAddr: addr}, "", "rollout", "status", "r-5", "--watch")
			if res.code != tt.wantCode || res.stderr != tt.wantErr {
				t.Errorf("exit %d, stderr %q; want %d, %q", res.code, res.stderr, tt.wantCode, tt.wantErr)
			}
			var want strings.Builder
			for _, e := range srv.events {
				want.WriteString(eventLine(0, e) + "\n")
			}
			if res.stdout != want.String() {
				t.Errorf("stdout:\n%s\nwant:\n%s", res.stdout, want.String())
			}
			waits, afters := srv.calls()
			if !slices.Equal(waits, tt.wantWaits) {
				t.Errorf("wait_index sequence = %v, want %v", waits, tt.wantWaits)
			}
			// Each event is asked for once: after_seq never goes back.
			if !slices.IsSorted(afters) {
				t.Errorf("after_seq sequence %v goes back", afters)
			}
		})
	}
	// The format of a line, with and without host and message.
	lines := []string{
		eventLine(0, &relv1.RolloutEvent{AtUnixNano: t0, Type: "host_healthy", Wave: 1, Host: "web-2", Message: "healthy on 1.2.0"}),
		eventLine(1, &relv1.RolloutEvent{AtUnixNano: t0, Type: "wave_done"}),
		eventLine(1, &relv1.RolloutEvent{AtUnixNano: t0, Type: "dispatched", Host: "web-2"}),
		eventLine(1, &relv1.RolloutEvent{AtUnixNano: t0, Type: "paused", Message: "by ops\n\x1b[31m"}),
	}
	want := []string{
		"2025-03-04T04:06:07Z wave=1 host_healthy web-2: healthy on 1.2.0",
		"2025-03-04T04:06:07Z wave=1 wave_done",
		"2025-03-04T04:06:07Z wave=1 dispatched web-2",
		"2025-03-04T04:06:07Z wave=1 paused by ops  [31m",
	}
	if !slices.Equal(lines, want) {
		t.Errorf("event lines\n got %q\nwant %q", lines, want)
	}
}

// TestWatchJSONLines: with -o json the watch streams the events as JSON
// lines, terminal or not.
func TestWatchJSONLines(t *testing.T) {
	setWatchTerminal(t, true)
	srv := newFakeWatch("failed", "1 host failed")
	addr := serve(t, srv, nil)
	res := runCLI(t, map[string]string{envAddr: addr}, "", "-o", "json", "rollout", "status", "r-5", "-w")
	if res.code != exitRefused || res.stderr != "relctl: rollout r-5 of web@1.3.0 to prod ended failed: 1 host failed\n" {
		t.Errorf("exit %d, stderr %q", res.code, res.stderr)
	}
	var got []eventJSON
	for line := range strings.Lines(res.stdout) {
		var e eventJSON
		dec := json.NewDecoder(strings.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		got = append(got, e)
	}
	if len(got) != len(srv.events) {
		t.Fatalf("%d lines, want %d:\n%s", len(got), len(srv.events), res.stdout)
	}
	for i, e := range srv.events {
		if !reflect.DeepEqual(got[i], toEventJSON(e)) {
			t.Errorf("line %d = %+v, want %+v", i+1, got[i], toEventJSON(e))
		}
	}
	if !strings.Contains(res.stdout, `{"seq":9,"at":"2025-03-04T04:07:08.89Z","type":"dispatched","wave":1,"host":"web-2","message":"to 1.3.0"}`+"\n") {
		t.Errorf("stdout lacks the compact line of event 9:\n%s", res.stdout)
	}
}

// TestWatchLive drives the live view through a fake terminal check: every
// change is redrawn from the top, ticks redraw in between, and the last
// frame shows the finished rollout.
func TestWatchLive(t *testing.T) {
	setWatchTerminal(t, true)
	srv := newFakeWatch("succeeded", "")
	// The wait for approval lasts a while: the view is redrawn meanwhile.
	srv.steps[2].hold = 100 * time.Millisecond
	addr := serve(t, srv, nil)
	res := runCLI(t, map[string]string{envAddr: addr}, "", "rollout", "status", "r-5", "--watch")
	if res.code != exitOK || res.stderr != "" {
		t.Fatalf("exit %d, stderr %q", res.code, res.stderr)
	}
	if !strings.HasPrefix(res.stdout, ansiClear+ansiHome) || strings.Count(res.stdout, ansiClear) != 1 {
		t.Errorf("the screen is not cleared once, at the start: %q", res.stdout[:min(len(res.stdout), 40)])
	}
	frames := strings.Split(strings.TrimPrefix(res.stdout, ansiClear), ansiHome)[1:]
	if len(frames) < 6 {
		t.Errorf("%d frames, want one per change (4) and redraws while waiting", len(frames))
	}
	for i, f := range frames {
		if !strings.HasSuffix(f, ansiEraseDown) {
			t.Errorf("frame %d does not erase what is below it: %q", i, f)
		}
	}
	plain := func(f string) string {
		return strings.ReplaceAll(strings.ReplaceAll(f, ansiEraseLine, ""), ansiEraseDown, "")
	}
	first, last := plain(frames[0]), plain(frames[len(frames)-1])
	// The frame after the first change (ticks may have redrawn the first
	// before it).
	i := slices.IndexFunc(frames, func(f string) bool { return plain(f) != first })
	waiting := plain(frames[max(i, 0)])
	for _, want := range []string{
		"Rollout r-5: web@1.3.0 to prod, running\n",
		"wave 0 of 1 (canary)",
		"canary 1, waves 100%, approve-waves, max-failures 0, deadline 10m\n",
		"wave 0 [--------------------] 0/1 healthy\n",
		"wave 1 [--------------------] 0/2 healthy\n",
		"installing  1  web-1\n",
		"pending     2  web-2 web-3\n",
		"Latest events:\n2025-03-04T04:06:07Z wave=0 started 3 hosts in 2 waves\n",
	} {
		if !strings.Contains(first, want) {
			t.Errorf("first frame lacks %q:\n%s", want, first)
		}
	}
	if !strings.Contains(waiting, "wave 0 of 1 (canary), waiting for approval for ") ||
		!strings.Contains(waiting, "wave 0 [####################] 1/1 healthy\n") {
		t.Errorf("second frame:\n%s", waiting)
	}
	for _, want := range []string{
		"Rollout r-5: web@1.3.0 to prod, succeeded\nwave 1 of 1\n",
		"wave 0 [####################] 1/1 healthy\n",
		"wave 1 [####################] 2/2 healthy\n",
		"healthy  3  web-1 web-2 web-3\n",
		"2025-03-04T04:07:17Z wave=1 host_healthy web-2: healthy on 1.3.0\n" +
			"2025-03-04T04:07:18Z wave=1 host_healthy web-3: healthy on 1.3.0\n" +
			"2025-03-04T04:07:27Z wave=1 succeeded\n",
	} {
		if !strings.Contains(last, want) {
			t.Errorf("last frame lacks %q:\n%s", want, last)
		}
	}
	// Five events at most: the oldest are gone from the last frame.
	if _, events, _ := strings.Cut(last, "Latest events:\n"); strings.Count(events, "\n") != liveEvents {
		t.Errorf("last frame shows %d events, want %d:\n%s", strings.Count(events, "\n"), liveEvents, last)
	}
}

func TestLiveFrame(t *testing.T) {
	p := printer{now: nowOps}
	st := &relv1.RolloutStatus{Rollout: rolloutCanary, Hosts: statusCanary.GetHosts()}
	got := liveFrame(p, st, eventsCanary[4:], 0, 0)
	want := "" +
		"Rollout r-2: web@1.2.3 to prod, waiting_approval\n" +
		"wave 0 of 2 (canary), waiting for approval for 9m10s\n" +
		"canary 1, waves 50%,100%, max-parallel 1, bake 30s, approve-waves, max-failures 0, deadline 10m, auto-rollback\n" +
		"\n" +
		"wave 0 [####################] 1/1 healthy\n" +
		"wave 1 [--------------------] 0/2 healthy\n" +
		"wave 2 [--------------------] 0/1 healthy\n" +
		"\n" +
		"healthy  1  web-1\n" +
		"pending  3  web-4 web-3 web-2\n" +
		"\n" +
		"Latest events:\n" +
		"2025-03-04T04:06:27Z wave=0 wave_done\n" +
		"2025-03-04T04:06:27Z wave=0 baking 30s\n" +
		"2025-03-04T04:06:57Z wave=0 waiting_approval approve wave 1 with relctl rollout approve r-2\n"
	if got != want {
		t.Errorf("frame\n got:\n%s\nwant:\n%s", got, want)
	}

	// Cut to a small terminal: no line wraps, the frame never scrolls.
	got = liveFrame(p, st, eventsCanary, 30, 6)
	want = "" +
		"Rollout r-2: web@1.2.3 to pro\n" +
		"wave 0 of 2 (canary), waiting\n" +
		"canary 1, waves 50%,100%, max\n" +
		"\n" +
		"wave 0 [####################]\n"
	if got != want {
		t.Errorf("cut frame\n got:\n%s\nwant:\n%s", got, want)
	}

	rb := &relv1.RolloutStatus{Rollout: &relv1.Rollout{Id: "r-3", Kind: "rollback", RollbackOf: "r-2", App: "web",
		Version: "1.2.3", Environment: "prod", State: "running", Spec: &relv1.RolloutSpec{Strategy: "all-at-once"},
		Hosts: []*relv1.RolloutHost{{AgentId: "a", State: "healthy"}, {AgentId: "b", State: "failed"},
			{AgentId: "c", State: "skipped"}, {AgentId: "d", State: "dispatched"}}}}
	got = liveFrame(p, rb, nil, 0, 0)
	if !strings.HasPrefix(got, "Rollback r-3 of r-2: web@1.2.3 to prod, running\n") ||
		!strings.Contains(got, "wave 1 [#####xxxxxxxxxx-----] 1/4 healthy, 1 failed, 1 skipped\n") {
		t.Errorf("rollback frame:\n%s", got)
	}
}
