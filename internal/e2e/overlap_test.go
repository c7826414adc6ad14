package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestOverlappingEnvironments is finding 3 of issue 8 with real processes:
// prod (env=prod) and prod-eu (zone=eu) share web-1. While a rollout to
// prod is active, one to prod-eu is refused naming it; with --queue it
// waits, and starts when prod's ends, from what prod left on the hosts.
func TestOverlappingEnvironments(t *testing.T) {
	ps := startCluster(t, "--heartbeat-interval", "300ms", "--agent-grace", "2s")
	all := addrs(ps)
	agents := []*agentProc{
		{id: "web-1", labels: "env=prod,zone=eu"},
		{id: "web-2", labels: "env=prod,zone=us"},
		{id: "web-3", labels: "env=staging,zone=eu"},
	}
	for _, a := range agents {
		a.dataDir, a.root = t.TempDir(), t.TempDir()
		a.start(t, all)
	}
	waitFor(t, 15*time.Second, "three connected agents", func() bool {
		r := relctl(t, all, "agent", "list", "-o", "json")
		return r.code == 0 && strings.Count(r.stdout, `"connected": true`) == 3
	})
	work := t.TempDir()
	mustRelctl(t, all, "app", "create", "hello")
	mustRelctl(t, all, "env", "create", "prod", "--selector", "env=prod")
	mustRelctl(t, all, "env", "create", "prod-eu", "--selector", "zone=eu")
	for _, v := range []string{"1.0.0", "2.0.0", "3.0.0"} {
		path, _ := bundleWith(t, work, v, 0, "./hello check", "20s")
		mustRelctl(t, all, "release", "create", "hello", v, "--artifact", path, "--upload-timeout", "2m")
	}
	for _, env := range []string{"prod", "prod-eu"} {
		if st := waitRolloutState(t, all, startRollout(t, all, "hello@1.0.0", env), 60*time.Second, "succeeded", "failed"); st.Rollout.State != "succeeded" {
			t.Fatalf("1.0.0 to %s: %+v", env, st)
		}
	}

	// 2.0.0 to prod stops at an approval gate after its first wave.
	prod := mustRelctl(t, all, "rollout", "start", "hello@2.0.0", "--env", "prod", "--strategy", "rolling", "--waves", "50%,100%", "--approve-waves", "-o", "json")
	var ro struct {
		ID    string `json:"id"`
		State string `json:"state"`
	}
	if err := json.Unmarshal([]byte(prod), &ro); err != nil || ro.ID == "" {
		t.Fatalf("start: %v\n%s", err, prod)
	}
	prodID := ro.ID
	waitRolloutState(t, all, prodID, 60*time.Second, "waiting_approval")

	// 3.0.0 to prod-eu holds web-1 too: refused, naming the prod rollout.
	r := relctl(t, all, "rollout", "start", "hello@3.0.0", "--env", "prod-eu")
	if r.code == 0 || !strings.Contains(r.stderr, "rollout "+prodID+" of hello@2.0.0 to prod is waiting_approval and holds 1 of its hosts (web-1)") ||
		!strings.Contains(r.stderr, "--queue") {
		t.Fatalf("overlapping start: exit %d\nstdout %s\nstderr %s", r.code, r.stdout, r.stderr)
	}
	// The plan says the same before anything is tried.
	if p := relctl(t, all, "rollout", "plan", "hello@3.0.0", "--env", "prod-eu"); p.code == 0 || !strings.Contains(p.stderr, prodID) {
		t.Fatalf("plan of the overlapping rollout: exit %d\n%s%s", p.code, p.stdout, p.stderr)
	}

	// With --queue it waits.
	out := mustRelctl(t, all, "rollout", "start", "hello@3.0.0", "--env", "prod-eu", "--queue", "-o", "json")
	if err := json.Unmarshal([]byte(out), &ro); err != nil || ro.State != "queued" {
		t.Fatalf("queued start: %v\n%s", err, out)
	}
	euID := ro.ID
	if st := rolloutStatus(t, all, euID); st.Rollout.State != "queued" || !strings.Contains(st.Rollout.Reason, prodID) {
		t.Fatalf("queued rollout: %+v", st.Rollout)
	}
	mustRelctl(t, all, "rollout", "approve", prodID)
	if st := waitRolloutState(t, all, prodID, 60*time.Second, "succeeded", "failed"); st.Rollout.State != "succeeded" {
		t.Fatalf("prod rollout: %+v", st)
	}
	st := waitRolloutState(t, all, euID, 60*time.Second, "succeeded", "failed")
	if st.Rollout.State != "succeeded" {
		t.Fatalf("queued prod-eu rollout: %+v", st)
	}
	for _, h := range st.Hosts {
		want := map[string]string{"web-1": "2.0.0", "web-3": "1.0.0"}[h.AgentID]
		if h.PreviousVersion != want {
			t.Errorf("prod-eu host %s previous %q, want %q (what it ran when the queued rollout started)", h.AgentID, h.PreviousVersion, want)
		}
	}
	for _, a := range agents {
		want := map[string]string{"web-1": "3.0.0", "web-2": "2.0.0", "web-3": "3.0.0"}[a.id]
		if v := currentVersion(t, a.root); v != want {
			t.Errorf("%s runs %s, want %s", a.id, v, want)
		}
	}
}
