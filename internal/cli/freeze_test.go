package cli

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// fakeFreeze records the requests relctl sends and answers with fixed
// windows.
type fakeFreeze struct {
	relv1.UnimplementedFreezeServiceServer
	mu      sync.Mutex
	created *relv1.FreezeWindow
	status  *relv1.FreezeStatusRequest
	start   *relv1.StartRolloutRequest
}

func (f *fakeFreeze) CreateFreeze(_ context.Context, req *relv1.CreateFreezeRequest) (*relv1.CreateFreezeResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.created = req.GetWindow()
	return &relv1.CreateFreezeResponse{Window: req.GetWindow(), Index: 7}, nil
}

func (f *fakeFreeze) ListFreezes(context.Context, *relv1.ListFreezesRequest) (*relv1.ListFreezesResponse, error) {
	return &relv1.ListFreezesResponse{Windows: []*relv1.FreezeWindow{
		{Name: "weekend", Apps: []string{"*"}, Environments: []string{"prod"}, CronStart: "0 18 * * FRI", CronEnd: "0 8 * * MON", TimeZone: "Europe/Berlin", Reason: "weekend freeze",
			CreatedBy: &relv1.Actor{Kind: "token", Id: "4f1c2a9be07d3e61", Name: "alice"}},
		{Name: "black-friday", Apps: []string{"web*"}, Environments: []string{"prod"}, TimeZone: "Europe/Berlin",
			StartUnixNano: time.Date(2026, 11, 26, 23, 0, 0, 0, time.UTC).UnixNano(), EndUnixNano: time.Date(2026, 11, 30, 7, 0, 0, 0, time.UTC).UnixNano()},
	}}, nil
}

func (f *fakeFreeze) FreezeStatus(_ context.Context, req *relv1.FreezeStatusRequest) (*relv1.FreezeStatusResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.status = req
	return &relv1.FreezeStatusResponse{Frozen: true, Message: "prod is frozen until Mon 30 Nov 08:00 Europe/Berlin: release freeze for Black Friday (window black-friday)",
		UntilUnixNano: time.Date(2026, 11, 30, 7, 0, 0, 0, time.UTC).UnixNano()}, nil
}

type fakeStart struct {
	relv1.UnimplementedControlServiceServer
	f *fakeFreeze
}

func (s fakeStart) StartRollout(_ context.Context, req *relv1.StartRolloutRequest) (*relv1.StartRolloutResponse, error) {
	s.f.mu.Lock()
	defer s.f.mu.Unlock()
	s.f.start = req
	return &relv1.StartRolloutResponse{Rollout: &relv1.Rollout{Id: "ro-1", App: "web", Version: "1.0.0", Environment: "prod", State: "frozen",
		Reason: "freeze black-friday until Mon 30 Nov 08:00 Europe/Berlin", Hosts: []*relv1.RolloutHost{{AgentId: "h1"}}, WaveCount: 1}, Index: 9}, nil
}

func TestFreezeCommands(t *testing.T) {
	f := &fakeFreeze{}
	env := map[string]string{envAddr: serveWith(t, func(s *grpc.Server) {
		relv1.RegisterFreezeServiceServer(s, f)
		relv1.RegisterControlServiceServer(s, fakeStart{f: f})
	})}

	res := runCLI(t, env, "", "freeze", "create", "black-friday", "--apps", "web*,api", "--env", "prod", "--start", "2026-11-27T00:00:00+01:00",
		"--end", "2026-11-30T08:00:00+01:00", "--tz", "Europe/Berlin", "--reason", "release freeze for Black Friday")
	if res.code != 0 || res.stdout != "created freeze window black-friday (index 7)\n" {
		t.Fatalf("create: %d %q %q", res.code, res.stdout, res.stderr)
	}
	if w := f.created; strings.Join(w.GetApps(), " ") != "web* api" || w.GetStartUnixNano() != time.Date(2026, 11, 26, 23, 0, 0, 0, time.UTC).UnixNano() || w.GetTimeZone() != "Europe/Berlin" {
		t.Fatalf("sent %v", w)
	}

	res = runCLI(t, env, "", "freeze", "list")
	for _, want := range []string{"NAME", "weekend", `from "0 18 * * FRI" to "0 8 * * MON" Europe/Berlin`, "alice",
		"Fri 27 Nov 00:00 Europe/Berlin to Mon 30 Nov 08:00 Europe/Berlin"} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("list lacks %q:\n%s", want, res.stdout)
		}
	}

	res = runCLI(t, env, "", "freeze", "status", "--env", "prod", "--app", "web", "--at", "2026-11-28T10:00:00Z")
	if res.code != 0 || !strings.HasPrefix(res.stdout, "prod is frozen until Mon 30 Nov 08:00 Europe/Berlin") {
		t.Fatalf("status: %d %q %q", res.code, res.stdout, res.stderr)
	}
	if r := f.status; r.GetEnvironment() != "prod" || r.GetApp() != "web" || r.GetAtUnixNano() != time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC).UnixNano() {
		t.Fatalf("status sent %v", r)
	}
	res = runCLI(t, env, "", "freeze", "status", "--env", "prod", "-o", "json")
	if !strings.Contains(res.stdout, `"frozen": true`) || !strings.Contains(res.stdout, `"until": "2026-11-30T07:00:00Z"`) {
		t.Fatalf("status json: %s", res.stdout)
	}

	res = runCLI(t, env, "", "rollout", "start", "web@1.0.0", "--env", "prod", "--emergency", "--reason", "hotfix")
	if res.code != 0 || !strings.HasPrefix(res.stdout, "frozen rollout ro-1: ") {
		t.Fatalf("start: %d %q %q", res.code, res.stdout, res.stderr)
	}
	if r := f.start; r.GetChangeType() != "emergency" || r.GetChangeReason() != "hotfix" {
		t.Fatalf("start sent %v", r)
	}
}

func TestFreezeUsageErrors(t *testing.T) {
	env := map[string]string{envAddr: "127.0.0.1:1"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"freeze", "status"}, "--env is required"},
		{[]string{"freeze", "status", "--env", "prod", "--at", "tomorrow"}, `invalid --at "tomorrow": want an RFC 3339 time`},
		{[]string{"freeze", "create", "x", "--apps", "*", "--env", "prod", "--start", "friday", "--end", "2026-11-30T08:00:00Z"}, `invalid --start "friday"`},
		{[]string{"freeze", "delete"}, "takes 1 argument"},
	} {
		res := runCLI(t, env, "", tc.args...)
		if res.code != 2 || !strings.Contains(res.stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q", tc.args, res.code, res.stderr, tc.want)
		}
		checkOneErrorLine(t, res)
	}
}
