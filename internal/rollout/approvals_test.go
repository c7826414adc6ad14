package rollout

import (
	"errors"
	"strings"
	"testing"
	"time"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

var (
	creator   = &relv1.Actor{Kind: "token", Id: "c0", Name: "carol"}
	requester = &relv1.Actor{Kind: "token", Id: "d0", Name: "dave"}
	alice     = &relv1.Actor{Kind: "token", Id: "a1", Name: "alice"}
	bob       = &relv1.Actor{Kind: "client", Id: "bob"}
	eve       = &relv1.Actor{Kind: "token", Id: "e1", Name: "eve"}
)

func awaitingRollout(p *relv1.ApprovalPolicy) (*relv1.Rollout, *relv1.Release) {
	r := &relv1.Rollout{Id: "ro-1", App: "web", Version: "1.0", Environment: "prod", Kind: KindDeploy, RequestedBy: requester, CreatedUnixNano: 100}
	AwaitApproval(r, p, 3, "abc", time.Unix(0, 100))
	return r, &relv1.Release{App: "web", Version: "1.0", Sha256: "abc", CreatedBy: creator}
}

func TestApprove(t *testing.T) {
	policy := &relv1.ApprovalPolicy{Required: 2, Roles: []string{"approver"}, Names: []string{"bob"}, ExpiryMs: 1000}
	type step struct {
		actor   *relv1.Actor
		roles   []string
		at      int64
		wantErr string
		notElig bool
		state   string
	}
	tests := []struct {
		name   string
		policy *relv1.ApprovalPolicy
		envVer uint64
		steps  []step
	}{
		{"two distinct approvers queue it", policy, 3, []step{
			{actor: alice, roles: []string{"approver"}, at: 200, state: StateAwaitingApproval},
			{actor: bob, at: 300, state: StateQueued},
		}},
		{"twice by the same person", policy, 3, []step{
			{actor: alice, roles: []string{"approver"}, at: 200, state: StateAwaitingApproval},
			{actor: alice, roles: []string{"approver"}, at: 300, wantErr: "alice already approved rollout ro-1"},
		}},
		{"not eligible", policy, 3, []step{{actor: eve, roles: []string{"deployer"}, at: 200, wantErr: "eve may not approve rollout ro-1: its approval policy names role:approver, bob", notElig: true}}},
		{"requester forbidden", policy, 3, []step{{actor: requester, roles: []string{"approver"}, at: 200, wantErr: "dave requested rollout ro-1 and may not approve it", notElig: true}}},
		{"creator forbidden", policy, 3, []step{{actor: creator, roles: []string{"approver"}, at: 200, wantErr: "carol created release web@1.0", notElig: true}}},
		{"self allowed", &relv1.ApprovalPolicy{Required: 1, Roles: []string{"approver"}, AllowSelf: true}, 3, []step{{actor: requester, roles: []string{"approver"}, at: 200, state: StateQueued}}},
		{"expired", policy, 3, []step{{actor: alice, roles: []string{"approver"}, at: 100 + int64(time.Second), wantErr: "approval expired"}}},
		{"policy changed", policy, 4, []step{{actor: alice, roles: []string{"approver"}, at: 200, wantErr: "policy changed: environment prod's approval policy is at version 4"}}},
		{"the servers", policy, 3, []step{{actor: nil, at: 200, wantErr: "needs a person", notElig: true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, rel := awaitingRollout(tt.policy)
			for i, s := range tt.steps {
				nr, evs, err := Approve(ApprovalInput{Rollout: r, Release: rel, EnvPolicyVersion: tt.envVer, Actor: s.actor, Roles: s.roles, Comment: "ok", At: s.at})
				if s.wantErr != "" {
					if err == nil || !strings.Contains(err.Error(), s.wantErr) {
						t.Fatalf("step %d: %v, want %q", i, err, s.wantErr)
					}
					if errors.Is(err, ErrNotEligible) != s.notElig {
						t.Fatalf("step %d: %v: not eligible %v, want %v", i, err, errors.Is(err, ErrNotEligible), s.notElig)
					}
					continue
				}
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				if nr.GetState() != s.state {
					t.Fatalf("step %d: state %s, want %s", i, nr.GetState(), s.state)
				}
				if len(evs) == 0 || evs[len(evs)-1].GetSeq() != nr.GetEventSeq() {
					t.Fatalf("step %d: events %v", i, evs)
				}
				if cur := r; len(cur.GetApprovals()) != 0 && len(nr.GetApprovals()) == len(cur.GetApprovals()) {
					t.Fatalf("step %d: approval not recorded", i)
				}
				r = nr
			}
		})
	}
}

func TestApproveBindsDigest(t *testing.T) {
	r, rel := awaitingRollout(&relv1.ApprovalPolicy{Required: 1, Roles: []string{"approver"}})
	rel.Sha256 = "def"
	_, _, err := Approve(ApprovalInput{Rollout: r, Release: rel, EnvPolicyVersion: 3, Actor: alice, Roles: []string{"approver"}, At: 200})
	if err == nil || !strings.Contains(err.Error(), "not the sha256:abc rollout ro-1 was requested with") {
		t.Fatal(err)
	}
}

func TestRejectExpireReview(t *testing.T) {
	r, rel := awaitingRollout(&relv1.ApprovalPolicy{Required: 2, Roles: []string{"approver"}, ExpiryMs: 1000})
	if _, _, err := Reject(ApprovalInput{Rollout: r, Release: rel, Actor: eve, At: 200, Comment: "no"}); !errors.Is(err, ErrNotEligible) {
		t.Fatalf("reject by eve: %v", err)
	}
	nr, ev, err := Reject(ApprovalInput{Rollout: r, Release: rel, Actor: alice, Roles: []string{"approver"}, At: 200, Comment: "not during the sale"})
	if err != nil || nr.GetState() != StateAborted || nr.GetReason() != "rejected by alice: not during the sale" || nr.GetRejectedBy().GetId() != "a1" || ev.GetType() != EventRejected {
		t.Fatalf("reject: %v %v %v", nr, ev, err)
	}
	if _, _, err := Reject(ApprovalInput{Rollout: nr, Actor: alice, Roles: []string{"approver"}, At: 300}); err == nil || !strings.Contains(err.Error(), "not awaiting approval") {
		t.Fatalf("reject twice: %v", err)
	}

	if _, _, ok := ExpireApproval(r, 100+int64(time.Second)-1); ok {
		t.Fatal("expired early")
	}
	er, _, ok := ExpireApproval(r, 100+int64(time.Second))
	if !ok || er.GetState() != StateFailed || er.GetReason() != "approval expired after 1s (0 of 2 approvals)" {
		t.Fatalf("expire: %v %v", er, ok)
	}

	em := &relv1.Rollout{Id: "ro-2", ChangeType: ChangeEmergency, RequestedBy: requester}
	if !ReviewOpen(em) {
		t.Fatal("emergency change not open for review")
	}
	if _, _, err := Review(em, requester, "", 5); !errors.Is(err, ErrNotEligible) {
		t.Fatalf("self review: %v", err)
	}
	rv, _, err := Review(em, alice, "was needed", 5)
	if err != nil || ReviewOpen(rv) || rv.GetReview().GetReviewedBy().GetId() != "a1" {
		t.Fatalf("review: %v %v", rv, err)
	}
	if _, _, err := Review(rv, bob, "", 6); err == nil || !strings.Contains(err.Error(), "reviewed already by alice") {
		t.Fatalf("review twice: %v", err)
	}
	if _, _, err := Review(&relv1.Rollout{Id: "ro-3"}, alice, "", 6); err == nil || !strings.Contains(err.Error(), "normal change, not an emergency one") {
		t.Fatalf("review of a normal change: %v", err)
	}
}

func TestWaveGateUnderPolicy(t *testing.T) {
	r := &relv1.Rollout{Id: "ro-1", State: StateWaitingApproval, WaveCount: 3, CurrentWave: 0, RequestedBy: requester,
		Spec: &relv1.RolloutSpec{Strategy: "rolling", ApproveWaves: true}, ApprovalPolicy: &relv1.ApprovalPolicy{Required: 2, Roles: []string{"approver"}}}
	want := WaveNumber(r, 1)
	if _, _, err := Control(r, ActionApprove, "", want, 10); err == nil || !strings.Contains(err.Error(), "approval policy") {
		t.Fatalf("control approve under a policy: %v", err)
	}
	if _, _, err := Approve(ApprovalInput{Rollout: r, Actor: alice, Roles: []string{"approver"}, Wave: want + 1, At: 10}); err == nil || !strings.Contains(err.Error(), "it waits for approval of") {
		t.Fatalf("wrong wave: %v", err)
	}
	r1, _, err := Approve(ApprovalInput{Rollout: r, Actor: alice, Roles: []string{"approver"}, Wave: want, At: 10})
	if err != nil || r1.GetState() != StateWaitingApproval {
		t.Fatalf("first: %v %v", r1, err)
	}
	if _, _, err := Approve(ApprovalInput{Rollout: r1, Actor: requester, Roles: []string{"approver"}, Wave: want, At: 11}); !errors.Is(err, ErrNotEligible) {
		t.Fatalf("requester: %v", err)
	}
	r2, _, err := Approve(ApprovalInput{Rollout: r1, Actor: bob, Roles: []string{"approver"}, Wave: want, At: 12})
	if err != nil || r2.GetState() != StateRunning || r2.GetApprovedWave() != 1 {
		t.Fatalf("second: %v %v", r2, err)
	}
}
