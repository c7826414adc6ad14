package dashboard

import (
	"net/http"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/relhq/rel/internal/auth"
	"github.com/relhq/rel/internal/rollout"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

func TestSafeNext(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"/ui/hosts", "/ui/hosts"},
		{"/ui/rollouts/ro-1?done=pause", "/ui/rollouts/ro-1?done=pause"},
		{"", "/ui/"},
		{"/v1/health", "/ui/"},
		{"https://evil.example/ui/", "/ui/"},
		{"//evil.example/ui/", "/ui/"},
		{"/\\evil.example/ui/", "/ui/"},
		{"/ui/\r\nSet-Cookie: x", "/ui/"},
		{"javascript:alert(1)", "/ui/"},
	} {
		if got := safeNext(tc.in); got != tc.want {
			t.Errorf("safeNext(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestSessionsExpire(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	st := newSessionStore(time.Hour, func() time.Time { return now })
	a := st.create("hash-a", "a")
	if a.ID == "" || a.CSRF == "" || a.ID == a.CSRF {
		t.Fatalf("session ids %q, csrf %q: want two random values", a.ID, a.CSRF)
	}
	if st.get(a.ID) != a {
		t.Fatal("a new session is not found")
	}
	now = now.Add(59 * time.Minute)
	if st.get(a.ID) == nil {
		t.Fatal("a session ended before its time")
	}
	now = now.Add(time.Minute)
	if st.get(a.ID) != nil {
		t.Fatal("an expired session is still good")
	}
	// Expired sessions are swept when the next one is made.
	b := st.create("hash-b", "b")
	now = now.Add(2 * time.Hour)
	st.create("hash-c", "c")
	if n := st.count(); n != 1 {
		t.Fatalf("%d sessions held after the sweep, want 1 (b %s expired)", n, b.ID)
	}
}

func TestHTTPCode(t *testing.T) {
	for c, want := range map[codes.Code]int{
		codes.PermissionDenied:   http.StatusForbidden,
		codes.Unauthenticated:    http.StatusUnauthorized,
		codes.NotFound:           http.StatusNotFound,
		codes.FailedPrecondition: http.StatusConflict,
		codes.InvalidArgument:    http.StatusBadRequest,
		codes.Unavailable:        http.StatusServiceUnavailable,
		codes.Internal:           http.StatusInternalServerError,
	} {
		if got := httpCode(c); got != want {
			t.Errorf("httpCode(%s) = %d, want %d", c, got, want)
		}
	}
}

func person(role auth.Role, apps ...string) auth.Principal {
	return auth.Principal{Kind: auth.KindToken, ID: "t", Grants: []auth.Grant{{Role: role, Apps: apps}}}
}

func actions(cs []control) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Action)
	}
	return out
}

// TestControls: which buttons a principal sees on a rollout in a state.
func TestControls(t *testing.T) {
	deploy := func(state string) *relv1.Rollout {
		return &relv1.Rollout{Id: "ro-1", App: "web", Environment: "prod", Kind: rollout.KindDeploy, State: state, WaveCount: 3,
			Spec: &relv1.RolloutSpec{Strategy: "rolling"}}
	}
	underPolicy := func(state string) *relv1.Rollout {
		r := deploy(state)
		r.ApprovalPolicy = &relv1.ApprovalPolicy{Required: 1}
		return r
	}
	rolledBack := deploy(rollout.StateSucceeded)
	rolledBack.RolledBackBy = "ro-2"
	for _, tc := range []struct {
		name string
		p    auth.Principal
		r    *relv1.Rollout
		want []string
	}{
		{"viewer sees none", person(auth.Viewer), deploy(rollout.StateRunning), nil},
		{"deployer, running", person(auth.Deployer), deploy(rollout.StateRunning), []string{"pause", "abort", "rollback"}},
		{"deployer, paused", person(auth.Deployer), deploy(rollout.StatePaused), []string{"resume", "abort", "rollback"}},
		{"deployer, wave gate", person(auth.Deployer), deploy(rollout.StateWaitingApproval), []string{"approve", "pause", "abort", "rollback"}},
		{"deployer, awaiting change approval", person(auth.Deployer), deploy(rollout.StateAwaitingApproval), []string{"abort"}},
		{"approver, awaiting change approval", person(auth.Approver), deploy(rollout.StateAwaitingApproval), []string{"approve"}},
		{"approver, wave gate", person(auth.Approver), deploy(rollout.StateWaitingApproval), nil},
		{"approver, wave gate under a policy", person(auth.Approver), underPolicy(rollout.StateWaitingApproval), []string{"approve"}},
		{"deployer, wave gate under a policy", person(auth.Deployer), underPolicy(rollout.StateWaitingApproval), []string{"pause", "abort", "rollback"}},
		{"deployer, succeeded", person(auth.Deployer), deploy(rollout.StateSucceeded), []string{"rollback"}},
		{"deployer, already rolled back", person(auth.Deployer), rolledBack, nil},
		{"deployer of another app", person(auth.Deployer, "api"), deploy(rollout.StateRunning), nil},
		{"deployer of this app", person(auth.Deployer, "we*"), deploy(rollout.StateRunning), []string{"pause", "abort", "rollback"}},
	} {
		got := actions(controls(tc.p, tc.r))
		if len(got) != len(tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
				break
			}
		}
	}
}

// TestControlRequest: what each action calls; approve names the gate the
// rollout waits at, numbered as people number waves.
func TestControlRequest(t *testing.T) {
	ro := func(state, strategy string, wave uint32) *relv1.Rollout {
		return &relv1.Rollout{Id: "ro-1", Kind: rollout.KindDeploy, State: state, CurrentWave: wave, WaveCount: 3, Spec: &relv1.RolloutSpec{Strategy: strategy}}
	}
	policy := func(r *relv1.Rollout) *relv1.Rollout {
		r.ApprovalPolicy = &relv1.ApprovalPolicy{Required: 1}
		return r
	}
	for _, tc := range []struct {
		name       string
		r          *relv1.Rollout
		action     string
		wantMethod string
		wantWave   uint32
	}{
		{"pause", ro(rollout.StateRunning, "rolling", 0), "pause", relv1.ControlService_ControlRollout_FullMethodName, 0},
		{"rollback", ro(rollout.StateRunning, "rolling", 0), "rollback", relv1.ControlService_RollbackRollout_FullMethodName, 0},
		{"start approval", ro(rollout.StateAwaitingApproval, "rolling", 0), "approve", relv1.ApprovalService_Approve_FullMethodName, 0},
		{"gate after wave 1 of rolling", ro(rollout.StateWaitingApproval, "rolling", 0), "approve", relv1.ControlService_ControlRollout_FullMethodName, 2},
		{"gate after the canary", ro(rollout.StateWaitingApproval, "canary", 0), "approve", relv1.ControlService_ControlRollout_FullMethodName, 1},
		{"gate after wave 2 under a policy", policy(ro(rollout.StateWaitingApproval, "rolling", 1)), "approve", relv1.ApprovalService_Approve_FullMethodName, 3},
		{"start under a policy", policy(ro(rollout.StateAwaitingApproval, "rolling", 0)), "approve", relv1.ApprovalService_Approve_FullMethodName, 0},
	} {
		method, req := controlRequest(tc.r, tc.action, "why")
		if method != tc.wantMethod {
			t.Errorf("%s: calls %s, want %s", tc.name, method, tc.wantMethod)
			continue
		}
		switch r := req.(type) {
		case *relv1.ControlRolloutRequest:
			if r.GetWave() != tc.wantWave || r.GetAction() != tc.action || r.GetReason() != "why" {
				t.Errorf("%s: request %v, want wave %d", tc.name, r, tc.wantWave)
			}
		case *relv1.ApproveRolloutRequest:
			if r.GetWave() != tc.wantWave || r.GetComment() != "why" {
				t.Errorf("%s: request %v, want wave %d", tc.name, r, tc.wantWave)
			}
		}
	}
}

func TestWaveBars(t *testing.T) {
	r := &relv1.Rollout{State: rollout.StateRunning, WaveCount: 2, CurrentWave: 1, Spec: &relv1.RolloutSpec{Strategy: "rolling"}, Hosts: []*relv1.RolloutHost{
		{AgentId: "a", Wave: 0, State: rollout.HostHealthy},
		{AgentId: "b", Wave: 1, State: rollout.HostHealthy},
		{AgentId: "c", Wave: 1, State: rollout.HostDispatched},
		{AgentId: "d", Wave: 1, State: rollout.HostPending},
		{AgentId: "e", Wave: 1, State: rollout.HostFailed},
	}}
	bars := waveBars(r)
	if len(bars) != 2 || bars[0].Total != 1 || !bars[0].Finished || bars[0].Current || bars[1].Total != 4 || bars[1].Finished || !bars[1].Current {
		t.Fatalf("bars %+v", bars)
	}
	var sum float64
	got := map[string]int{}
	for _, c := range bars[1].Counts {
		got[c.State] = c.N
		sum += c.Percent
	}
	if got["healthy"] != 1 || got["dispatched"] != 1 || got["pending"] != 1 || got["failed"] != 1 || sum < 99.99 || sum > 100.01 {
		t.Fatalf("wave 2 counts %+v", bars[1].Counts)
	}
	if bars[1].Label != "wave 2 of 2" {
		t.Fatalf("label %q", bars[1].Label)
	}
}
