package e2e

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestChangeControlThroughRelctl is issue 11's acceptance, through the
// relctl binary on a 3-server cluster with the tokens of people: carol
// creates releases, dave deploys, alice and bob approve, erin may make
// emergency changes. A lifecycle dev → prod holds a promotion back until
// dev has the same digest; prod needs two approvals from people other
// than the release's creator and the rollout's requester; a rejection
// ends a rollout, an unanswered request expires; a freeze queues a
// rollout and lets it go when the window ends (with the approvals asked
// again); an emergency goes past a freeze and is listed for review; the
// leader is killed while a rollout is awaiting approval and again while
// one is frozen, and nothing is lost; the audit trail names who did what
// and its chain verifies.
func TestChangeControlThroughRelctl(t *testing.T) {
	ps := startCluster(t, "--heartbeat-interval", "300ms", "--agent-grace", "2s")
	all := addrs(ps)
	for _, a := range []*agentProc{
		{id: "dev-1", dataDir: t.TempDir(), root: t.TempDir(), labels: "env=dev"},
		{id: "prod-1", dataDir: t.TempDir(), root: t.TempDir(), labels: "env=prod"},
	} {
		a.start(t, all)
	}
	waitFor(t, 20*time.Second, "two connected agents", func() bool {
		r := relctl(t, all, "agent", "list", "-o", "json")
		return r.code == 0 && strings.Count(r.stdout, `"connected": true`) == 2
	})
	mustRelctl(t, all, "env", "create", "dev", "--selector", "env=dev")
	mustRelctl(t, all, "env", "create", "prod", "--selector", "env=prod")
	mustRelctl(t, all, "lifecycle", "create", "std", "--phase", "dev=dev", "--phase", "prod=prod")
	mustRelctl(t, all, "app", "create", "hello", "--lifecycle", "std")
	mustRelctl(t, all, "env", "approval-policy", "set", "prod", "--approvals", "2", "--approver", "role:approver")

	tokens := t.TempDir()
	for who, roles := range map[string][]string{
		"carol": {"release-creator", "approver"}, "dave": {"deployer"}, "alice": {"approver"}, "bob": {"approver"},
		"erin": {"deployer", "operator"},
	} {
		args := []string{"acl", "token", "create", "--name", who, "--out", filepath.Join(tokens, who)}
		for _, r := range roles {
			args = append(args, "--role", r)
		}
		mustRelctl(t, all, args...)
	}
	// Every call goes to every server relctl knows, skipping dead ones.
	as := func(who string, args ...string) result {
		return relctlEnv(t, []string{"REL_ADDR=" + all, "REL_CA_FILE=" + caFile, "REL_TOKEN_FILE=" + filepath.Join(tokens, who)}, args...)
	}
	must := func(who string, args ...string) string {
		t.Helper()
		r := as(who, args...)
		if r.code != 0 {
			t.Fatalf("%s: relctl %s: exit %d: %s", who, strings.Join(args, " "), r.code, r.stderr)
		}
		return r.stdout
	}
	refused := func(who, want string, args ...string) {
		t.Helper()
		r := as(who, args...)
		if r.code == 0 || !strings.Contains(r.stderr, want) {
			t.Fatalf("%s: relctl %s: exit %d %q, want a refusal saying %q", who, strings.Join(args, " "), r.code, r.stderr, want)
		}
	}
	startAs := func(who string, args ...string) (id, state string) {
		t.Helper()
		out := must(who, append(args, "-o", "json")...)
		var ro struct {
			ID    string `json:"id"`
			State string `json:"state"`
		}
		if err := json.Unmarshal([]byte(out), &ro); err != nil || ro.ID == "" {
			t.Fatalf("%s %v: %v\n%s", who, args, err, out)
		}
		return ro.ID, ro.State
	}
	work := t.TempDir()
	// release makes carol's release of v and takes it through dev.
	release := func(v string) {
		t.Helper()
		path, _ := bundle(t, work, v, 0)
		must("carol", "release", "create", "hello", v, "--artifact", path)
		id, _ := startAs("dave", "rollout", "start", "hello@"+v, "--env", "dev")
		if st := waitRolloutState(t, all, id, 90*time.Second, "succeeded", "failed", "aborted"); st.Rollout.State != "succeeded" {
			t.Fatalf("hello@%s to dev: %+v", v, st)
		}
	}
	// killLeader kills the leader with SIGKILL, waits for a new one among
	// the other two, then starts the killed one again on its data dir so
	// that the next kill still leaves a quorum.
	killLeader := func() {
		t.Helper()
		l := leaderOf(ps)
		if l == nil {
			t.Fatal("no leader to kill")
		}
		l.signal(t, syscall.SIGKILL)
		var rest []*proc
		for _, p := range ps {
			if p != l {
				rest = append(rest, p)
			}
		}
		waitFor(t, 20*time.Second, "a new leader", func() bool { return leaderOf(rest) != nil })
		l.start(t, "--heartbeat-interval", "300ms", "--agent-grace", "2s")
		waitFor(t, 30*time.Second, l.id+" back as a follower", func() bool {
			r := relctl(t, all, "cluster", "members", "-o", "json")
			return r.code == 0 && strings.Count(r.stdout, `"follower"`) == 2 && strings.Count(r.stdout, `"Voter"`) == 3
		})
	}

	// Lifecycle: prod before dev is refused, naming what is missing.
	path, _ := bundle(t, work, "1.0.0", 0)
	must("carol", "release", "create", "hello", "1.0.0", "--artifact", path)
	refused("dave", "phase dev is not done", "release", "promote", "hello@1.0.0", "--to", "prod")
	id, _ := startAs("dave", "rollout", "start", "hello@1.0.0", "--env", "dev")
	waitRolloutState(t, all, id, 90*time.Second, "succeeded")

	// Four eyes, and a leader kill while the rollout awaits approval.
	id, state := startAs("dave", "release", "promote", "hello@1.0.0", "--to", "prod")
	if state != "awaiting_approval" {
		t.Fatalf("promotion to prod: state %s, want awaiting_approval", state)
	}
	refused("dave", "PermissionDenied", "rollout", "approve", id)
	refused("carol", "carol created release hello@1.0.0 and may not approve", "rollout", "approve", id)
	must("alice", "rollout", "approve", id, "--comment", "lgtm")
	refused("alice", "alice already approved", "rollout", "approve", id)
	killLeader()
	if out := must("dave", "--consistent", "approvals", "pending"); !strings.Contains(out, id) || !strings.Contains(out, "1/2") {
		t.Fatalf("pending after the leader kill:\n%s", out)
	}
	must("bob", "rollout", "approve", id, "--comment", "ship it")
	if st := waitRolloutState(t, all, id, 90*time.Second, "succeeded", "failed", "aborted"); st.Rollout.State != "succeeded" {
		t.Fatalf("approved promotion: %+v", st)
	}

	// Rejection ends it.
	release("1.1.0")
	id, _ = startAs("dave", "release", "promote", "hello@1.1.0", "--to", "prod")
	must("alice", "rollout", "reject", id, "--comment", "not during the sale")
	if st := waitRolloutState(t, all, id, 10*time.Second, "aborted"); !strings.Contains(st.Rollout.Reason, "rejected by alice") {
		t.Fatalf("rejected rollout: %+v", st)
	}

	// Expiry: a request nobody approves within the policy's expiry ends.
	mustRelctl(t, all, "env", "approval-policy", "set", "prod", "--approvals", "2", "--approver", "role:approver", "--approval-expiry", "3s")
	id, _ = startAs("dave", "release", "promote", "hello@1.1.0", "--to", "prod")
	if st := waitRolloutState(t, all, id, 30*time.Second, "failed"); !strings.Contains(st.Rollout.Reason, "approval expired") {
		t.Fatalf("expired request: %+v", st)
	}
	refused("alice", "", "rollout", "approve", id)
	mustRelctl(t, all, "env", "approval-policy", "set", "prod", "--approvals", "2", "--approver", "role:approver")

	// A freeze queues the rollout; the leader dies while it is frozen; when
	// the window ends it asks for its approvals, then runs.
	release("1.2.0")
	end := time.Now().Add(8 * time.Second).Truncate(time.Second) // RFC 3339 on the command line: whole seconds
	mustRelctl(t, all, "freeze", "create", "sale", "--apps", "hello", "--env", "prod",
		"--start", time.Now().Add(-time.Second).UTC().Format(time.RFC3339), "--end", end.UTC().Format(time.RFC3339), "--reason", "black friday")
	if out := mustRelctl(t, all, "freeze", "status", "--env", "prod", "--app", "hello"); !strings.Contains(out, "prod is frozen until") || !strings.Contains(out, "black friday") {
		t.Fatalf("freeze status:\n%s", out)
	}
	id, state = startAs("dave", "release", "promote", "hello@1.2.0", "--to", "prod")
	if state != "frozen" {
		t.Fatalf("promotion inside the freeze: state %s, want frozen", state)
	}
	killLeader()
	waitRolloutState(t, all, id, 30*time.Second, "awaiting_approval")
	if time.Now().Before(end) {
		t.Fatalf("rollout %s left the freeze before it ended (%s); its events:\n%s", id, end, mustRelctl(t, all, "rollout", "events", id))
	}
	must("alice", "rollout", "approve", id)
	must("bob", "rollout", "approve", id)
	if st := waitRolloutState(t, all, id, 90*time.Second, "succeeded", "failed", "aborted"); st.Rollout.State != "succeeded" {
		t.Fatalf("rollout after the freeze: %+v", st)
	}

	// An emergency goes past a freeze, with one approval, and stays open
	// for review; dave may not make one.
	release("1.3.0")
	mustRelctl(t, all, "freeze", "create", "night", "--apps", "*", "--env", "prod",
		"--start", time.Now().Add(-time.Second).UTC().Format(time.RFC3339), "--end", time.Now().Add(time.Hour).UTC().Format(time.RFC3339), "--reason", "change freeze")
	refused("dave", "needs the emergency permission", "rollout", "start", "hello@1.3.0", "--env", "prod", "--emergency", "--reason", "CVE-2026-1234")
	id, state = startAs("erin", "rollout", "start", "hello@1.3.0", "--env", "prod", "--emergency", "--reason", "CVE-2026-1234")
	if state == "frozen" {
		t.Fatalf("emergency change frozen")
	}
	must("alice", "rollout", "approve", id)
	if st := waitRolloutState(t, all, id, 90*time.Second, "succeeded", "failed", "aborted"); st.Rollout.State != "succeeded" {
		t.Fatalf("emergency rollout: %+v", st)
	}
	if out := must("dave", "reviews", "--open"); !strings.Contains(out, id) {
		t.Fatalf("open reviews do not list the emergency %s:\n%s", id, out)
	}
	must("bob", "rollout", "review", id, "--comment", "patched CVE, fine")
	if out := must("dave", "reviews", "--open"); strings.Contains(out, id) {
		t.Fatalf("reviewed emergency still open:\n%s", out)
	}

	// The audit trail names the people, the refusals included, and its
	// chain verifies.
	out := mustRelctl(t, all, "audit", "--app", "hello", "-o", "json")
	for _, want := range []string{`"alice"`, `"bob"`, `"carol"`, `"dave"`, `"erin"`, `"refused"`} {
		if !strings.Contains(out, want) {
			t.Errorf("audit of hello has no %s", want)
		}
	}
	if out := mustRelctl(t, all, "audit", "verify"); !strings.Contains(out, "chain intact") {
		t.Fatalf("audit verify:\n%s", out)
	}
}
