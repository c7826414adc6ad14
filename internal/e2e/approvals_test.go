package e2e

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestApprovalsThroughRelctl: change control's four eyes through relctl
// with the tokens of people: a release creator (who may also approve), a
// deployer and two approvers. The deployer's and the creator's approvals
// are refused, an approver counts once, two distinct approvers start the
// rollout, which succeeds; a rejection ends the next one.
func TestApprovalsThroughRelctl(t *testing.T) {
	s := newProc(t, "s1")
	s.start(t, "--bootstrap")
	waitLeader(t, []*proc{s}, "s1 to lead")
	addr := s.grpc
	a := &agentProc{id: "web-1", dataDir: t.TempDir(), root: t.TempDir(), labels: "env=prod"}
	a.start(t, addr)
	waitFor(t, 15*time.Second, "the agent", func() bool {
		r := relctl(t, addr, "agent", "list", "-o", "json")
		return r.code == 0 && strings.Count(r.stdout, `"connected": true`) == 1
	})
	mustRelctl(t, addr, "app", "create", "hello")
	mustRelctl(t, addr, "env", "create", "prod", "--selector", "env=prod")
	tokens := t.TempDir()
	as := func(who string, args ...string) result {
		return relctlEnv(t, []string{"REL_ADDR=" + addr, "REL_CA_FILE=" + caFile, "REL_TOKEN_FILE=" + filepath.Join(tokens, who)}, args...)
	}
	for who, roles := range map[string][]string{"carol": {"release-creator", "approver"}, "dave": {"deployer"}, "alice": {"approver"}, "bob": {"approver"}} {
		args := []string{"acl", "token", "create", "--name", who, "--out", filepath.Join(tokens, who)}
		for _, r := range roles {
			args = append(args, "--role", r)
		}
		mustRelctl(t, addr, args...)
	}
	if out := mustRelctl(t, addr, "env", "approval-policy", "set", "prod", "--approvals", "2", "--approver", "role:approver"); !strings.Contains(out, "2 approval(s) from role:approver") {
		t.Fatalf("policy: %s", out)
	}
	work := t.TempDir()
	for _, v := range []string{"1.0.0", "1.1.0"} {
		path, _ := bundle(t, work, v, 0)
		if r := as("carol", "release", "create", "hello", v, "--artifact", path); r.code != 0 {
			t.Fatalf("carol's release %s: %d %s", v, r.code, r.stderr)
		}
	}
	start := func(release string) string {
		r := as("dave", "rollout", "start", release, "--env", "prod", "-o", "json")
		var ro struct {
			ID    string `json:"id"`
			State string `json:"state"`
		}
		if r.code != 0 || json.Unmarshal([]byte(r.stdout), &ro) != nil || ro.State != "awaiting_approval" {
			t.Fatalf("dave starts %s: %d %s %s", release, r.code, r.stdout, r.stderr)
		}
		return ro.ID
	}
	id := start("hello@1.0.0")
	if r := as("dave", "approvals", "pending"); r.code != 0 || !strings.Contains(r.stdout, id) || !strings.Contains(r.stdout, "0/2") {
		t.Fatalf("pending: %d %s %s", r.code, r.stdout, r.stderr)
	}
	for _, tc := range []struct{ who, want string }{
		{"dave", "PermissionDenied"},
		{"carol", "carol created release hello@1.0.0 and may not approve"},
	} {
		if r := as(tc.who, "rollout", "approve", id); r.code != 1 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%s approves: %d %q, want exit 1 and %q", tc.who, r.code, r.stderr, tc.want)
		}
	}
	if r := as("alice", "rollout", "approve", id, "--comment", "lgtm"); r.code != 0 || r.stdout != "rollout "+id+": awaiting_approval; 1 of 2 approvals\n" {
		t.Fatalf("alice approves: %d %q %q", r.code, r.stdout, r.stderr)
	}
	if r := as("alice", "rollout", "approve", id); r.code != 1 || !strings.Contains(r.stderr, "alice already approved rollout "+id) {
		t.Fatalf("alice approves twice: %d %q", r.code, r.stderr)
	}
	if r := as("bob", "rollout", "approve", id); r.code != 0 || !strings.Contains(r.stdout, "2 of 2 approvals") {
		t.Fatalf("bob approves: %d %q %q", r.code, r.stdout, r.stderr)
	}
	if st := waitRolloutState(t, addr, id, 60*time.Second, "succeeded", "failed"); st.Rollout.State != "succeeded" {
		t.Fatalf("approved rollout: %+v", st)
	}

	id = start("hello@1.1.0")
	if r := as("alice", "rollout", "reject", id, "--comment", "not during the sale"); r.code != 0 || r.stdout != "rollout "+id+": aborted (rejected by alice: not during the sale)\n" {
		t.Fatalf("alice rejects: %d %q %q", r.code, r.stdout, r.stderr)
	}
	if r := as("dave", "rollout", "status", id, "-o", "json"); r.code != 0 || !strings.Contains(r.stdout, `"rejected_by": "alice"`) {
		t.Fatalf("status of the rejected rollout: %d %s %s", r.code, r.stdout, r.stderr)
	}
}
