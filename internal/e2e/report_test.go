package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestReleaseNotesAndReportWithRealAgents: the real binaries, three
// servers and two real agents installing the sample app. The notes of a
// candidate against what prod runs carry its changelog; a failing canary
// is rolled back; with the leader killed, the report from the other
// servers still counts both deploys (the records are replicated state),
// with the failure restored by the rollback.
func TestReleaseNotesAndReportWithRealAgents(t *testing.T) {
	ps := startCluster(t, "--heartbeat-interval", "300ms", "--agent-grace", "2s")
	all := addrs(ps)
	for _, id := range []string{"web-1", "web-2"} {
		a := &agentProc{id: id, dataDir: t.TempDir(), root: t.TempDir(), labels: "env=prod"}
		a.start(t, all)
	}
	waitFor(t, 15*time.Second, "two connected agents", func() bool {
		r := relctl(t, all, "agent", "list", "-o", "json")
		return r.code == 0 && strings.Count(r.stdout, `"connected": true`) == 2
	})
	work := t.TempDir()
	changes := filepath.Join(work, "CHANGES.md")
	if err := os.WriteFile(changes, []byte("- greeting: says hello twice\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mustRelctl(t, all, "app", "create", "hello")
	mustRelctl(t, all, "env", "create", "prod", "--selector", "env=prod")
	good, _ := bundleWith(t, work, "1.0.0", 0, "./hello check", "20s")
	mustRelctl(t, all, "release", "create", "hello", "1.0.0", "--artifact", good, "--upload-timeout", "2m",
		"--commit-time", time.Now().Add(-2*time.Hour).UTC().Format(time.RFC3339))
	first := startRollout(t, all, "hello@1.0.0", "prod")
	if st := waitRolloutState(t, all, first, 60*time.Second, "succeeded", "failed"); st.Rollout.State != "succeeded" {
		t.Fatalf("first rollout: %+v", st)
	}
	bad, _ := bundleWith(t, work, "2.0.0", 0, "false", "2s")
	mustRelctl(t, all, "release", "create", "hello", "2.0.0", "--artifact", bad, "--upload-timeout", "2m",
		"--changelog-file", changes, "--build-url", "https://ci.example.com/builds/2")

	var notes string
	waitFor(t, 10*time.Second, "prod's hosts to report 1.0.0 healthy", func() bool {
		r := relctl(t, all, "release", "notes", "hello@2.0.0", "--env", "prod")
		notes = r.stdout + r.stderr
		return r.code == 0 && strings.Contains(notes, "compared with 1.0.0, which prod runs (2 healthy hosts)")
	})
	for _, want := range []string{"1 release: 2.0.0", "- greeting: says hello twice", "build  https://ci.example.com/builds/2"} {
		if !strings.Contains(notes, want) {
			t.Errorf("notes lack %q:\n%s", want, notes)
		}
	}

	out := mustRelctl(t, all, "rollout", "start", "hello@2.0.0", "--env", "prod", "--strategy", "canary", "--canary", "1", "--waves", "100%", "--auto-rollback", "-o", "json")
	var ro struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(out), &ro); err != nil || ro.ID == "" {
		t.Fatalf("rollout start: %v\n%s", err, out)
	}
	if st := waitRolloutState(t, all, ro.ID, 60*time.Second, "rolled_back", "failed"); st.Rollout.State != "rolled_back" {
		t.Fatalf("failing canary ended %s: %s", st.Rollout.State, st.Rollout.Reason)
	}

	leader := waitLeader(t, ps, "a leader")
	leader.signal(t, syscall.SIGKILL)
	var others []*proc
	for _, p := range ps {
		if p != leader {
			others = append(others, p)
		}
	}
	rest := addrs(others)
	type metric struct {
		Known bool    `json:"known"`
		Value float64 `json:"value"`
		Band  string  `json:"band"`
	}
	var rep struct {
		Rows []struct {
			App               string `json:"app"`
			Environment       string `json:"environment"`
			Deploys           int    `json:"deploys"`
			Failures          int    `json:"failures"`
			ChangeFailureRate metric `json:"change_failure_rate"`
			TimeToRestore     metric `json:"time_to_restore"`
			LeadTime          metric `json:"lead_time"`
		} `json:"rows"`
		Outcomes []struct {
			Kind, Outcome string
			Count         int
		} `json:"outcomes"`
	}
	// --consistent: a survivor may not have applied the rollback's end
	// yet when it is first asked (CI: "deploy failed" and no restore,
	// read from a follower a moment behind the killed leader).
	waitFor(t, 30*time.Second, "the report from the servers left", func() bool {
		r := relctl(t, rest, "report", "--since", "1d", "-o", "json", "--consistent")
		if r.code != 0 {
			return false
		}
		rep.Rows = nil
		return json.Unmarshal([]byte(r.stdout), &rep) == nil && len(rep.Rows) == 1
	})
	row := rep.Rows[0]
	if row.App != "hello" || row.Environment != "prod" || row.Deploys != 1 || row.Failures != 1 || row.ChangeFailureRate.Value != 0.5 ||
		row.ChangeFailureRate.Band != "low" || !row.TimeToRestore.Known || !row.LeadTime.Known || row.LeadTime.Value < 2*3600 {
		t.Errorf("report row %+v", row)
	}
	outcomes := map[string]int{}
	for _, o := range rep.Outcomes {
		outcomes[o.Kind+" "+o.Outcome] = o.Count
	}
	if outcomes["deploy succeeded"] != 1 || outcomes["deploy rolled_back"] != 1 || outcomes["rollback succeeded"] != 1 {
		t.Errorf("outcomes %v", outcomes)
	}
	page := mustRelctl(t, rest, "report", "--since", "1d", "-o", "html")
	if !strings.Contains(page, "<svg") || strings.Contains(page, "<script") || !strings.Contains(page, "hello in prod") {
		t.Errorf("html report:\n%s", page)
	}
}
