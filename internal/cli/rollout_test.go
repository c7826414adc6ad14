package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// fakeOps is a ControlService for the rollout, agent and history commands.
// GetRollout plays a rollout that is running at index 5 and, once asked to
// wait past index 5, ends in state final at index 9.
type fakeOps struct {
	relv1.UnimplementedControlServiceServer
	final, reason string
	// holdOnce makes the first wait past index 5 block until the client
	// gives up, as a server does while nothing changes.
	holdOnce bool
	// unchangedOnce makes the first wait past index 5 answer at once with
	// nothing new, as a server does whose own wait limit ran out.
	unchangedOnce bool
	held          atomic.Bool
	finished      atomic.Bool // GetRollout answered with the final state

	waits    chan uint64 // wait_index of every GetRollout
	started  chan *relv1.StartRolloutRequest
	requests chan string // the environment filter of List*/History calls
}

func newFakeOps(final, reason string) *fakeOps {
	return &fakeOps{final: final, reason: reason, waits: make(chan uint64, 10),
		started: make(chan *relv1.StartRolloutRequest, 1), requests: make(chan string, 10)}
}

// opsRollout is r-1 in state: running, with events 1 and 2, or finished,
// with events 1 to 4 (see opsEvents).
func opsRollout(state, reason string) *relv1.RolloutStatus {
	phase, seq := "installing", uint64(2)
	switch state {
	case "running":
	case "succeeded":
		phase, seq = "healthy", 4
	default:
		phase, seq = "failed", 4
	}
	return &relv1.RolloutStatus{
		Rollout: &relv1.Rollout{Id: "r-1", Kind: "deploy", App: "web", Version: "1.2.3", Environment: "prod",
			Spec: &relv1.RolloutSpec{Strategy: "all-at-once"}, State: state, Reason: reason,
			Hosts: []*relv1.RolloutHost{{AgentId: "web-1", PreviousVersion: "1.2.2", TargetVersion: "1.2.3",
				State: "dispatched", Phase: phase}},
			WaveCount: 1, EventSeq: seq, CreatedUnixNano: t0},
		Hosts:  []*relv1.RolloutHostStatus{{AgentId: "web-1", PreviousVersion: "1.2.2", Phase: phase, Connected: true}},
		Totals: map[string]uint32{phase: 1},
	}
}

// opsEvents are the events of r-1 when it ends in state final.
func opsEvents(final, reason string) []*relv1.RolloutEvent {
	third := &relv1.RolloutEvent{Seq: 3, AtUnixNano: t0 + 3*sec, Type: "host_healthy", Host: "web-1", Message: "healthy on 1.2.3"}
	if final != "succeeded" {
		third = &relv1.RolloutEvent{Seq: 3, AtUnixNano: t0 + 3*sec, Type: "host_failed", Host: "web-1", Message: "verify hook exited 1"}
	}
	return []*relv1.RolloutEvent{
		{Seq: 1, AtUnixNano: t0, Type: "started", Message: "1 host in 1 wave"},
		{Seq: 2, AtUnixNano: t0 + 1*sec, Type: "dispatched", Host: "web-1", Message: "to 1.2.3"},
		third,
		{Seq: 4, AtUnixNano: t0 + 4*sec, Type: final, Message: reason},
	}
}

func (f *fakeOps) GetRollout(ctx context.Context, req *relv1.GetRolloutRequest) (*relv1.GetRolloutResponse, error) {
	f.waits <- req.GetWaitIndex()
	if req.GetId() != "r-1" {
		return nil, status.Errorf(codes.NotFound, "rollout %q not found", req.GetId())
	}
	switch req.GetWaitIndex() {
	case 0:
		return &relv1.GetRolloutResponse{Status: opsRollout("running", ""), Index: 5}, nil
	case 5:
		if f.holdOnce && !f.held.Swap(true) {
			<-ctx.Done()
			return nil, status.FromContextError(ctx.Err()).Err()
		}
		if f.unchangedOnce && !f.held.Swap(true) {
			return &relv1.GetRolloutResponse{Status: opsRollout("running", ""), Index: 5}, nil
		}
		f.finished.Store(true)
		return &relv1.GetRolloutResponse{Status: opsRollout(f.final, f.reason), Index: 9}, nil
	}
	return nil, status.Errorf(codes.InvalidArgument, "unexpected wait_index %d", req.GetWaitIndex())
}

// RolloutEvents serves opsEvents, up to the event_seq of the state the
// last GetRollout answer was in, one event per answer so that relctl has to
// ask again.
func (f *fakeOps) RolloutEvents(_ context.Context, req *relv1.RolloutEventsRequest) (*relv1.RolloutEventsResponse, error) {
	if req.GetId() != "r-1" {
		return nil, status.Errorf(codes.NotFound, "rollout %q not found", req.GetId())
	}
	ro := opsRollout("running", "").GetRollout()
	if f.finished.Load() {
		ro = opsRollout(f.final, f.reason).GetRollout()
	}
	resp := &relv1.RolloutEventsResponse{Rollout: ro, Index: 5}
	for _, e := range opsEvents(f.final, f.reason) {
		if e.GetSeq() > req.GetAfterSeq() && e.GetSeq() <= ro.GetEventSeq() {
			resp.Events = append(resp.Events, e)
			break
		}
	}
	return resp, nil
}

func (f *fakeOps) ListRollouts(_ context.Context, req *relv1.ListRolloutsRequest) (*relv1.ListRolloutsResponse, error) {
	f.requests <- req.GetApp() + "/" + req.GetEnvironment()
	return &relv1.ListRolloutsResponse{Rollouts: []*relv1.RolloutStatus{opsRollout("running", "")}}, nil
}

func (f *fakeOps) StartRollout(_ context.Context, req *relv1.StartRolloutRequest) (*relv1.StartRolloutResponse, error) {
	f.started <- req
	ro := opsRollout("running", "").GetRollout()
	ro.App, ro.Version, ro.Environment = req.GetApp(), req.GetVersion(), req.GetEnvironment()
	return &relv1.StartRolloutResponse{Rollout: ro, Index: 40}, nil
}

func (f *fakeOps) ListAgents(_ context.Context, req *relv1.ListAgentsRequest) (*relv1.ListAgentsResponse, error) {
	f.requests <- req.GetEnvironment()
	return &relv1.ListAgentsResponse{Agents: []*relv1.AgentStatus{agentWeb1, agentDB1}}, nil
}

func (f *fakeOps) GetAgent(_ context.Context, req *relv1.GetAgentRequest) (*relv1.GetAgentResponse, error) {
	if req.GetId() != "web-1" {
		return nil, status.Errorf(codes.NotFound, "agent %q not found", req.GetId())
	}
	return &relv1.GetAgentResponse{Agent: agentWeb1}, nil
}

func (f *fakeOps) History(_ context.Context, req *relv1.HistoryRequest) (*relv1.HistoryResponse, error) {
	got := req.GetApp() + "/" + req.GetEnvironment()
	if req.GetHost() != "" {
		got += " host=" + req.GetHost()
	}
	if req.GetSinceUnixNano() != 0 {
		got += " since=" + time.Unix(0, req.GetSinceUnixNano()).UTC().Format(time.RFC3339)
	}
	f.requests <- got
	return &relv1.HistoryResponse{Entries: historyWeb}, nil
}

func (f *fakeOps) ListEnvironments(context.Context, *relv1.ListEnvironmentsRequest) (*relv1.ListEnvironmentsResponse, error) {
	return &relv1.ListEnvironmentsResponse{Environments: []*relv1.Environment{envProd}}, nil
}

func drainWaits(c chan uint64) []uint64 {
	var out []uint64
	for {
		select {
		case w := <-c:
			out = append(out, w)
		default:
			return out
		}
	}
}

func TestRolloutWatch(t *testing.T) {
	tests := []struct {
		name      string
		final     string
		reason    string
		holdOnce  bool
		unchanged bool
		args      []string
		wantCode  int
		wantErr   string // whole stderr
		wantWaits []uint64
	}{
		{name: "succeeded", final: "succeeded", wantWaits: []uint64{0, 5}},
		{name: "failed", final: "failed", reason: "web-1: verify hook exited 1", wantCode: exitRefused,
			wantErr:   "relctl: rollout r-1 of web@1.2.3 to prod ended failed: web-1: verify hook exited 1\n",
			wantWaits: []uint64{0, 5}},
		{name: "rolled back", final: "rolled_back", wantCode: exitRefused,
			wantErr: "relctl: rollout r-1 of web@1.2.3 to prod ended rolled_back\n", wantWaits: []uint64{0, 5}},
		{
			// The server holds the wait past --timeout: relctl asks again
			// with the same index instead of failing.
			name: "wait outlives --timeout", final: "succeeded", holdOnce: true,
			args: []string{"--timeout", "300ms"}, wantWaits: []uint64{0, 5, 5},
		},
		{
			// An answer without change is not printed again.
			name: "answer without change", final: "succeeded", unchanged: true, wantWaits: []uint64{0, 5, 5},
		},
	}
	defer func(d time.Duration) { watchRetryDelay = d }(watchRetryDelay)
	watchRetryDelay = 10 * time.Millisecond
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newFakeOps(tt.final, tt.reason)
			srv.holdOnce, srv.unchangedOnce = tt.holdOnce, tt.unchanged
			addr := serve(t, srv, nil)
			args := append(append([]string{}, tt.args...), "rollout", "status", "r-1", "--watch")
			res := runCLI(t, map[string]string{envAddr: addr}, "", args...)
			if res.code != tt.wantCode {
				t.Errorf("exit code = %d, want %d (stderr %q)", res.code, tt.wantCode, res.stderr)
			}
			if res.stderr != tt.wantErr {
				t.Errorf("stderr = %q, want %q", res.stderr, tt.wantErr)
			}
			if got := drainWaits(srv.waits); !slices.Equal(got, tt.wantWaits) {
				t.Errorf("wait_index sequence = %v, want %v", got, tt.wantWaits)
			}
			// stdout is no terminal: one line per event, each once.
			var want strings.Builder
			for _, e := range opsEvents(tt.final, tt.reason) {
				want.WriteString(eventLine(1, e) + "\n")
			}
			if res.stdout != want.String() {
				t.Errorf("stdout:\n%s\nwant:\n%s", res.stdout, want.String())
			}
		})
	}
}

func TestRolloutWatchJSON(t *testing.T) {
	srv := newFakeOps("succeeded", "")
	addr := serve(t, srv, nil)
	res := runCLI(t, map[string]string{envAddr: addr}, "", "-o", "json", "rollout", "status", "r-1", "-w")
	if res.code != exitOK {
		t.Fatalf("exit code = %d, stderr %q", res.code, res.stderr)
	}
	// One event per line, each a whole JSON object.
	var types []string
	for line := range strings.Lines(res.stdout) {
		var e eventJSON
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("line %q is not a JSON object: %v", line, err)
		}
		types = append(types, fmt.Sprintf("%d:%s", e.Seq, e.Type))
	}
	if got := strings.Join(types, ","); got != "1:started,2:dispatched,3:host_healthy,4:succeeded" {
		t.Errorf("events %s, want 1 to 4 in order\n%s", got, res.stdout)
	}
	first, _, _ := strings.Cut(res.stdout, "\n")
	if want := `{"seq":1,"at":"2025-03-04T04:06:07.89Z","type":"started","wave":0,"host":"","message":"1 host in 1 wave"}`; first != want {
		t.Errorf("first line = %s, want %s", first, want)
	}
}

// TestRolloutStatusNoWatch: without --watch the exit code says whether the
// status was read, whatever the rollout's state.
func TestRolloutStatusNoWatch(t *testing.T) {
	addr := serve(t, newFakeOps("failed", ""), nil)
	res := runCLI(t, map[string]string{envAddr: addr}, "", "rollout", "status", "r-1")
	if res.code != exitOK || !strings.Contains(res.stdout, "1 host: 1 installing\n") {
		t.Errorf("exit %d, stdout:\n%s", res.code, res.stdout)
	}
	res = runCLI(t, map[string]string{envAddr: addr}, "", "rollout", "status", "r-404", "--watch")
	if res.code != exitRefused || res.stderr != "relctl: rollout \"r-404\" not found (NotFound)\n" {
		t.Errorf("exit %d, stderr %q", res.code, res.stderr)
	}
}

func TestRolloutStart(t *testing.T) {
	srv := newFakeOps("succeeded", "")
	addr := serve(t, srv, nil)
	res := runCLI(t, map[string]string{envAddr: addr}, "", "rollout", "start", "web@1.2.3", "--env", "prod")
	if res.code != exitOK {
		t.Fatalf("exit code = %d, stderr %q", res.code, res.stderr)
	}
	want := "started rollout r-1: web@1.2.3 to prod, 1 host (index 40)\n" +
		"HOST   WAVE  PREVIOUS\n" +
		"web-1  1     1.2.2\n"
	if res.stdout != want {
		t.Errorf("stdout = %q, want %q", res.stdout, want)
	}
	req := <-srv.started
	wantReq := &relv1.StartRolloutRequest{App: "web", Version: "1.2.3", Environment: "prod",
		Spec: &relv1.RolloutSpec{Strategy: "all-at-once", ProgressDeadlineMs: 600_000}}
	if req.String() != wantReq.String() {
		t.Errorf("request:\n got %v\nwant %v", req, wantReq)
	}
}

// TestOpsCommands runs the list commands end to end: filters reach the
// server and the answer is printed.
func TestOpsCommands(t *testing.T) {
	srv := newFakeOps("succeeded", "")
	addr := serve(t, srv, nil)
	tests := []struct {
		args        []string
		wantRequest string // what the fake recorded of the filters
		wantStdout  string // substring
	}{
		{args: []string{"rollout", "list", "--app", "web", "--env", "prod"}, wantRequest: "web/prod",
			wantStdout: "r-1  deploy  web  1.2.3    prod  running  1 (1 installing)"},
		{args: []string{"rollout", "ls"}, wantRequest: "/", wantStdout: "r-1"},
		{args: []string{"agent", "list", "--env", "prod"}, wantRequest: "prod", wantStdout: "web-1  yes"},
		{args: []string{"agent", "show", "web-1"}, wantStdout: "Hostname:          web-1.example.com\n"},
		{args: []string{"history", "web", "--env", "prod"}, wantRequest: "web/prod", wantStdout: "web-1  1.2.3"},
		{args: []string{"history", "web", "--host", "web-3", "--since", "2025-03-04T10:00:00+01:00"},
			wantRequest: "web/ host=web-3 since=2025-03-04T09:00:00Z", wantStdout: "failed, rolled back  r-0              verify hook exited 1"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			res := runCLI(t, map[string]string{envAddr: addr}, "", tt.args...)
			if res.code != exitOK || res.stderr != "" {
				t.Fatalf("exit code = %d, stderr %q", res.code, res.stderr)
			}
			if !strings.Contains(res.stdout, tt.wantStdout) {
				t.Errorf("stdout lacks %q:\n%s", tt.wantStdout, res.stdout)
			}
			if tt.wantRequest != "" {
				if got := <-srv.requests; got != tt.wantRequest {
					t.Errorf("server saw filters %q, want %q", got, tt.wantRequest)
				}
			}
		})
	}
	res := runCLI(t, map[string]string{envAddr: addr}, "", "agent", "show", "nope")
	if res.code != exitRefused || res.stderr != "relctl: agent \"nope\" not found (NotFound)\n" {
		t.Errorf("agent show nope: exit %d, stderr %q", res.code, res.stderr)
	}
}

// TestOpsCompletion checks that rollout ids, agent ids and environment
// names are completed from the server.
func TestOpsCompletion(t *testing.T) {
	addr := serve(t, newFakeOps("succeeded", ""), nil)
	tests := []struct {
		args []string
		want string
	}{
		{args: []string{"rollout", "status", ""}, want: "r-1\n"},
		{args: []string{"rollout", "status", "x"}, want: ""},
		{args: []string{"agent", "show", "w"}, want: "web-1\n"},
		{args: []string{"agent", "show", ""}, want: "web-1\ndb-1\n"},
		{args: []string{"rollout", "start", "web@1.2.3", "--env", ""}, want: "prod\n"},
		{args: []string{"agent", "list", "--env", "p"}, want: "prod\n"},
		{args: []string{"rollout", "start", "web@1.2.3", "--env", "prod", "--strategy", ""}, want: "all-at-once\nrolling\ncanary\n"},
		{args: []string{"rollout", "plan", "web@1.2.3", "--env", "prod", "--strategy", "c"}, want: "all-at-once\nrolling\ncanary\n"},
		{args: []string{"rollout", "plan", "web@1.2.3", "--env", ""}, want: "prod\n"},
		{args: []string{"rollout", "events", ""}, want: "r-1\n"},
		{args: []string{"rollout", "rollback", ""}, want: "r-1\n"},
		{args: []string{"rollout", "pause", ""}, want: "r-1\n"},
		{args: []string{"rollout", "abort", "r"}, want: "r-1\n"},
		// r-1 is running: nothing to resume or approve.
		{args: []string{"rollout", "resume", ""}, want: ""},
		{args: []string{"rollout", "approve", ""}, want: ""},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			res := runCLI(t, map[string]string{envAddr: addr}, "", append([]string{"__complete"}, tt.args...)...)
			if res.code != exitOK {
				t.Fatalf("exit code = %d, stderr %q", res.code, res.stderr)
			}
			got, _, _ := strings.Cut(res.stdout, ":")
			if got != tt.want {
				t.Errorf("suggestions = %q, want %q", got, tt.want)
			}
		})
	}
}
