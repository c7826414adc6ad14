package state

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/relhq/rel/internal/rollout"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// TestApprovalsInTheStore: a policy set on an environment; a rollout
// requested under another version refused; approvals applied and
// refused with the store's sentinels; expiry; and all of it kept by a
// snapshot.
func TestApprovalsInTheStore(t *testing.T) {
	s := New()
	mustApp(t, s, 1, "web")
	if err := s.CreateEnvironment(2, &relv1.Environment{Name: "prod", Selector: map[string]string{"env": "prod"}}); err != nil {
		t.Fatal(err)
	}
	rel := &relv1.Release{App: "web", Version: "1.0", Sha256: strings.Repeat("a", 64), ArtifactUrl: "https://a.example.com/w.tgz",
		CreatedBy: &relv1.Actor{Kind: "token", Id: "c0", Name: "carol"}}
	if err := s.CreateRelease(3, rel); err != nil {
		t.Fatal(err)
	}
	if err := s.SetApprovalPolicy(4, "qa", &relv1.ApprovalPolicy{Required: 1, Roles: []string{"approver"}}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("policy of an unknown environment: %v", err)
	}
	policy := &relv1.ApprovalPolicy{Required: 1, Roles: []string{"approver"}, ExpiryMs: 1000}
	if err := s.SetApprovalPolicy(4, "prod", policy); err != nil {
		t.Fatal(err)
	}
	newRollout := func(id string, version uint64, p *relv1.ApprovalPolicy) *relv1.Rollout {
		r := &relv1.Rollout{Id: id, App: "web", Version: "1.0", Environment: "prod", Kind: rollout.KindDeploy, CreatedUnixNano: 100,
			RequestedBy: &relv1.Actor{Kind: "token", Id: "d0", Name: "dave"},
			Hosts:       []*relv1.RolloutHost{{AgentId: "web-1", State: rollout.HostPending, TargetVersion: "1.0"}}}
		if p != nil {
			rollout.AwaitApproval(r, p, version, rel.GetSha256(), time.Unix(0, 100))
		}
		return r
	}
	// Decided without the policy (it was set meanwhile), or under an older version.
	if err := s.CreateRollout(5, newRollout("ro-0", 0, nil), nil, nil); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "policy changed") {
		t.Fatalf("rollout decided without the policy: %v", err)
	}
	if err := s.CreateRollout(5, newRollout("ro-0", 0, policy), nil, nil); !errors.Is(err, ErrConflict) {
		t.Fatalf("rollout under version 0: %v", err)
	}
	for i, id := range []string{"ro-1", "ro-2"} {
		if err := s.CreateRollout(uint64(6+i), newRollout(id, 1, policy), nil, nil); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
	}
	approve := func(idx uint64, id string, actor *relv1.Actor, roles ...string) error {
		return s.ApproveRollout(idx, &relv1.ApproveRollout{RolloutId: id, AtUnixNano: 200, Roles: roles}, actor)
	}
	alice := &relv1.Actor{Kind: "token", Id: "a1", Name: "alice"}
	if err := approve(8, "ro-1", &relv1.Actor{Kind: "token", Id: "c0", Name: "carol"}, "approver"); !errors.Is(err, ErrPermissionDenied) {
		t.Fatalf("creator: %v", err)
	}
	if err := approve(8, "ro-9", alice, "approver"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown rollout: %v", err)
	}
	if err := approve(8, "ro-1", alice, "approver"); err != nil {
		t.Fatal(err)
	}
	if r, _ := s.Rollout(nil, "ro-1"); r.GetState() != rollout.StateQueued || r.GetModifyIndex() != 8 {
		t.Fatalf("approved: %v", r)
	}
	if err := approve(9, "ro-1", alice, "approver"); !errors.Is(err, ErrConflict) {
		t.Fatalf("approving a queued rollout: %v", err)
	}
	if n, err := s.ExpireApprovals(10, []string{"ro-1", "ro-2"}, 100+int64(time.Second)); err != nil || n != 1 {
		t.Fatalf("expire: %d %v", n, err)
	}
	if r, _ := s.Rollout(nil, "ro-2"); r.GetState() != rollout.StateFailed || !strings.HasPrefix(r.GetReason(), "approval expired after 1s") {
		t.Fatalf("expired: %v", r)
	}

	var buf bytes.Buffer
	if err := s.Snapshot().Persist(&buf); err != nil {
		t.Fatal(err)
	}
	b := New()
	if err := b.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	if ok, why := Equal(s, b); !ok {
		t.Fatalf("restored store differs: %s", why)
	}
	r, _ := b.Rollout(nil, "ro-1")
	envs, _, _ := b.Environments(nil)
	if len(r.GetApprovals()) != 1 || r.GetApprovals()[0].GetActor().GetId() != "a1" || envs[0].GetApprovalPolicyVersion() != 1 {
		t.Fatalf("after restore: %v %v", r, envs)
	}
}
