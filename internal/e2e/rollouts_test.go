package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

type eventJSON struct {
	Seq  uint64 `json:"seq"`
	Type string `json:"type"`
	Wave uint32 `json:"wave"`
	Host string `json:"host"`
	// Hosts: an event about several hosts at once (Host is then "").
	Hosts   []string `json:"hosts"`
	Message string   `json:"message"`
}

func rolloutEvents(t *testing.T, addr, id string) []eventJSON {
	t.Helper()
	var out struct {
		Events []eventJSON `json:"events"`
	}
	raw := mustRelctl(t, addr, "rollout", "events", id, "-o", "json")
	if err := json.Unmarshal([]byte(raw), &out); err != nil {
		t.Fatalf("events json: %v\n%s", err, raw)
	}
	return out.Events
}

func waitRolloutState(t *testing.T, addr, id string, timeout time.Duration, states ...string) rolloutJSON {
	t.Helper()
	var st rolloutJSON
	last := ""
	waitFor(t, timeout, "rollout "+id+" to be "+strings.Join(states, " or "), func() bool {
		// The server answering may not have applied the rollout yet (a
		// follower a moment behind the one that started it), or may be
		// going away: ask again until the deadline, keeping what it said.
		res := relctl(t, addr, "rollout", "status", id, "-o", "json")
		if res.code != 0 {
			if last != res.stderr {
				last = res.stderr
				t.Logf("rollout status %s: %s", id, strings.TrimSpace(res.stderr))
			}
			return false
		}
		st = rolloutJSON{}
		if err := json.Unmarshal([]byte(res.stdout), &st); err != nil {
			t.Fatalf("rollout status json: %v\n%s", err, res.stdout)
		}
		for _, s := range states {
			if st.Rollout.State == s {
				return true
			}
		}
		return false
	})
	return st
}

func currentVersion(t *testing.T, root string) string {
	t.Helper()
	target, err := os.Readlink(filepath.Join(root, "hello", "current"))
	if err != nil {
		return ""
	}
	return filepath.Base(target)
}

func listenAddr(root string) string {
	b, _ := os.ReadFile(filepath.Join(root, "hello", "current", "listen.addr"))
	return strings.TrimSpace(string(b))
}

// hosts are the hosts an event is about.
func (e eventJSON) hosts() []string {
	if len(e.Hosts) > 0 {
		return e.Hosts
	}
	if e.Host != "" {
		return []string{e.Host}
	}
	return nil
}

// maxInFlight replays a rollout's events and returns the most hosts that
// were dispatched and not yet finished at once.
func maxInFlight(evs []eventJSON) int {
	in, most := map[string]bool{}, 0
	for _, e := range evs {
		switch e.Type {
		case "dispatched":
			for _, h := range e.hosts() {
				in[h] = true
			}
		case "host_healthy", "host_failed":
			for _, h := range e.hosts() {
				delete(in, h)
			}
		}
		most = max(most, len(in))
	}
	return most
}

// TestStagedRolloutsWithRealAgents runs the staged-rollout acceptance with
// real servers and real agents installing the sample app.
func TestStagedRolloutsWithRealAgents(t *testing.T) {
	ps := startCluster(t, "--heartbeat-interval", "300ms", "--agent-grace", "2s")
	all := addrs(ps)
	var agents []*agentProc
	for i := 0; i < 4; i++ {
		a := &agentProc{id: fmt.Sprintf("web-%d", i+1), dataDir: t.TempDir(), root: t.TempDir(), labels: fmt.Sprintf("env=prod,zone=z%d", i%2)}
		a.start(t, all)
		agents = append(agents, a)
	}
	waitFor(t, 15*time.Second, "four connected agents", func() bool {
		r := relctl(t, all, "agent", "list", "-o", "json")
		return r.code == 0 && strings.Count(r.stdout, `"connected": true`) == 4
	})
	work := t.TempDir()
	mustRelctl(t, all, "app", "create", "hello")
	mustRelctl(t, all, "env", "create", "prod", "--selector", "env=prod")
	release := func(version, check, deadline string, padding int) {
		path, _ := bundleWith(t, work, version, padding, check, deadline)
		mustRelctl(t, all, "release", "create", "hello", version, "--artifact", path, "--upload-timeout", "2m")
	}
	start := func(args ...string) string {
		out := mustRelctl(t, all, append([]string{"rollout", "start", "-o", "json"}, args...)...)
		var ro struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal([]byte(out), &ro); err != nil || ro.ID == "" {
			t.Fatalf("rollout start: %v\n%s", err, out)
		}
		return ro.ID
	}

	release("1.0.0", "./hello check", "20s", 0)
	first := start("hello@1.0.0", "--env", "prod")
	if st := waitRolloutState(t, all, first, 60*time.Second, "succeeded", "failed"); st.Rollout.State != "succeeded" {
		t.Fatalf("first rollout: %+v", st)
	}
	addrsBefore := map[string]string{}
	for _, a := range agents {
		addrsBefore[a.id] = listenAddr(a.root)
	}

	// 1. A release whose health check fails, canary 1 + waves, auto-rollback.
	release("2.0.0", "false", "2s", 0)
	bad := start("hello@2.0.0", "--env", "prod", "--strategy", "canary", "--canary", "1", "--waves", "50%,100%", "--auto-rollback")
	st := waitRolloutState(t, all, bad, 60*time.Second, "rolled_back", "failed")
	if st.Rollout.State != "rolled_back" {
		t.Fatalf("failing canary ended %s: %s", st.Rollout.State, st.Rollout.Reason)
	}
	canary := ""
	for _, h := range st.Hosts {
		if h.Phase != "pending" {
			if canary != "" {
				t.Fatalf("more than the canary got 2.0.0: %+v", st.Hosts)
			}
			canary = h.AgentID
		}
	}
	for _, a := range agents {
		if v := currentVersion(t, a.root); v != "1.0.0" {
			t.Errorf("%s runs %s after the rollback, want 1.0.0", a.id, v)
		}
		_, err := os.Stat(filepath.Join(a.root, "hello", "releases", "2.0.0"))
		if a.id == canary {
			continue
		}
		if !os.IsNotExist(err) {
			t.Errorf("%s (not the canary) has 2.0.0 on disk", a.id)
		}
		if got := listenAddr(a.root); got != addrsBefore[a.id] {
			t.Errorf("%s was restarted (listening on %s, was %s)", a.id, got, addrsBefore[a.id])
		}
	}
	waitFor(t, 10*time.Second, "the canary answering on 1.0.0", func() bool {
		for _, a := range agents {
			if a.id == canary {
				return strings.HasSuffix(answer(t, a.root), "version 1.0.0")
			}
		}
		return false
	})
	// History tells the failure: on the canary 1.0.0 until the switch,
	// 2.0.0 from the switch to the rollback, failed with its reason, then
	// 1.0.0 again by the rollback; the other hosts ran 1.0.0 throughout.
	var hist struct {
		Entries []struct {
			AgentID        string `json:"agent_id"`
			Version        string `json:"version"`
			From           string `json:"from"`
			To             string `json:"to"`
			Outcome        string `json:"outcome"`
			Reason         string `json:"reason"`
			RolloutID      string `json:"rollout_id"`
			RolloutKind    string `json:"rollout_kind"`
			ReplacedByKind string `json:"replaced_by_kind"`
		} `json:"entries"`
	}
	raw := mustRelctl(t, all, "history", "hello", "-o", "json", "--consistent")
	if err := json.Unmarshal([]byte(raw), &hist); err != nil {
		t.Fatalf("history json: %v\n%s", err, raw)
	}
	var onCanary []string
	for _, e := range hist.Entries {
		if e.AgentID != canary {
			if e.Version != "1.0.0" || e.To != "" || e.Outcome != "running" {
				t.Errorf("%s history row %+v, want 1.0.0 running throughout", e.AgentID, e)
			}
			continue
		}
		onCanary = append(onCanary, e.Version+" "+e.Outcome+" "+e.RolloutKind)
		if e.Version != "2.0.0" {
			continue
		}
		from, errFrom := time.Parse(time.RFC3339Nano, e.From)
		to, errTo := time.Parse(time.RFC3339Nano, e.To)
		if errFrom != nil || errTo != nil || !to.After(from) || e.RolloutID != bad || e.Reason == "" || e.ReplacedByKind != "rollback" {
			t.Errorf("canary's 2.0.0 row %+v: want from < to, rollout %s, a reason, replaced by the rollback", e, bad)
		}
	}
	if want := []string{"1.0.0 replaced deploy", "2.0.0 failed deploy", "1.0.0 running rollback"}; strings.Join(onCanary, ", ") != strings.Join(want, ", ") {
		t.Errorf("canary %s history %q, want %q\n%s", canary, onCanary, want, raw)
	}
	// The failed rollout's status: every host now runs 1.0.0, the hosts it
	// never reached and the canary that came back on the rollback.
	for _, h := range rolloutStatus(t, all, bad).Hosts {
		if h.CurrentVersion != "1.0.0" || h.TargetVersion != "2.0.0" || h.PreviousVersion != "1.0.0" {
			t.Errorf("rollout %s host %s: previous %q target %q now %q, want 1.0.0 2.0.0 1.0.0", bad, h.AgentID, h.PreviousVersion, h.TargetVersion, h.CurrentVersion)
		}
	}

	// 2. A good release through canary + 2 waves with bake and approvals,
	// one host at a time.
	release("3.0.0", "./hello check", "20s", 0)
	good := start("hello@3.0.0", "--env", "prod", "--strategy", "canary", "--waves", "50%,100%", "--bake", "1s", "--approve-waves", "--max-parallel", "1")
	for gate := 1; gate <= 2; gate++ {
		st := waitRolloutState(t, all, good, 60*time.Second, "waiting_approval", "failed")
		if st.Rollout.State != "waiting_approval" {
			t.Fatalf("gate %d: %+v", gate, st)
		}
		healthy := 0
		for _, h := range st.Hosts {
			if h.Phase == "healthy" {
				healthy++
			}
		}
		if want := []int{0, 1, 2}[gate]; healthy != want {
			t.Fatalf("gate %d: %d healthy hosts, want %d", gate, healthy, want)
		}
		mustRelctl(t, all, "rollout", "approve", good)
	}
	if st := waitRolloutState(t, all, good, 60*time.Second, "succeeded", "failed"); st.Rollout.State != "succeeded" {
		t.Fatalf("approved rollout: %+v", st)
	}
	if m := maxInFlight(rolloutEvents(t, all, good)); m != 1 {
		t.Fatalf("max-parallel 1 but %d hosts in flight at once", m)
	}

	// 3. Staged rollback of the completed rollout: waves in reverse, each
	// healthy before the next.
	out := mustRelctl(t, all, "rollout", "rollback", good, "-o", "json")
	var rb struct {
		ID string `json:"id"`
	}
	json.Unmarshal([]byte(out), &rb)
	if rb.ID == "" {
		t.Fatalf("rollback output: %s", out)
	}
	if st := waitRolloutState(t, all, rb.ID, 60*time.Second, "succeeded", "failed"); st.Rollout.State != "succeeded" {
		t.Fatalf("rollback: %+v", st)
	}
	evs := rolloutEvents(t, all, rb.ID)
	healthyByWave := map[uint32]int{}
	for _, e := range evs {
		switch e.Type {
		case "host_healthy":
			healthyByWave[e.Wave]++
		case "dispatched":
			for w := uint32(0); w < e.Wave; w++ {
				if healthyByWave[w] == 0 {
					t.Fatalf("rollback wave %d dispatched before wave %d was healthy: %+v", e.Wave, w, evs)
				}
			}
		}
	}
	for _, a := range agents {
		if v := currentVersion(t, a.root); v != "1.0.0" {
			t.Errorf("%s on %s after rolling back 3.0.0, want 1.0.0", a.id, v)
		}
	}
	if st := rolloutStatus(t, all, good); st.Rollout.State != "rolled_back" {
		t.Errorf("rolled-back rollout is %s", st.Rollout.State)
	}

	// 4. The leader killed mid-wave: the new leader completes the rollout
	// and no host installs the release twice.
	release("4.0.0", "./hello check", "20s", 0)
	mid := start("hello@4.0.0", "--env", "prod", "--strategy", "rolling", "--bake", "700ms")
	waitFor(t, 30*time.Second, "the second host", func() bool {
		n := 0
		for _, e := range rolloutEvents(t, all, mid) {
			if e.Type == "dispatched" {
				n += len(e.hosts())
			}
		}
		return n >= 2
	})
	leader := leaderOf(ps)
	leader.signal(t, syscall.SIGKILL)
	var rest []*proc
	for _, p := range ps {
		if p != leader {
			rest = append(rest, p)
		}
	}
	survivors := addrs(rest)
	if st := waitRolloutState(t, survivors, mid, 90*time.Second, "succeeded", "failed"); st.Rollout.State != "succeeded" {
		t.Fatalf("rollout across a leader kill: %+v", st)
	}
	dispatches := map[string]int{}
	for _, e := range rolloutEvents(t, survivors, mid) {
		if e.Type == "dispatched" {
			for _, h := range e.hosts() {
				dispatches[h]++
			}
		}
	}
	for _, a := range agents {
		if dispatches[a.id] != 1 {
			t.Errorf("%s dispatched %d times", a.id, dispatches[a.id])
		}
		if c := strings.Count(a.log.String(), "msg=converging app=hello version=4.0.0"); c != 1 {
			t.Errorf("%s converged to 4.0.0 %d times, want 1", a.id, c)
		}
	}
	leader.start(t)

	// 5. An agent killed during its install: "agent lost" after the grace
	// period, within the failure budget, and the rollout still ends.
	release("5.0.0", "./hello check", "20s", 64<<20)
	lost := start("hello@5.0.0", "--env", "prod", "--strategy", "rolling", "--max-failures", "1", "--progress-deadline", "1m")
	victim := agents[0]
	waitFor(t, 60*time.Second, victim.id+" downloading or installing 5.0.0", func() bool {
		parts, _ := filepath.Glob(filepath.Join(victim.dataDir, "downloads", "*.part"))
		tmps, _ := filepath.Glob(filepath.Join(victim.root, "hello", "releases", ".tmp-*"))
		return len(parts) > 0 || len(tmps) > 0
	})
	victim.kill(t)
	st = waitRolloutState(t, all, lost, 60*time.Second, "succeeded", "failed")
	var victimHost struct{ phase, reason string }
	for _, h := range st.Hosts {
		if h.AgentID == victim.id {
			victimHost.phase, victimHost.reason = h.Phase, h.Reason
		}
	}
	if st.Rollout.State != "succeeded" || victimHost.phase != "failed" || !strings.Contains(victimHost.reason, "agent lost") {
		t.Fatalf("rollout with a lost agent: %+v (victim %+v)", st, victimHost)
	}
}
