package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type envShowJSON struct {
	Hosts []string `json:"hosts"`
	Apps  []struct {
		App              string `json:"app"`
		CurrentVersion   string `json:"current_version"`
		Hosts            int    `json:"hosts"`
		OnCurrent        int    `json:"on_current"`
		ActiveRolloutID  string `json:"active_rollout_id"`
		CurrentRolloutID string `json:"current_rollout_id"`
	} `json:"apps"`
}

func envShow(t *testing.T, addr, env string) envShowJSON {
	t.Helper()
	var out envShowJSON
	raw := mustRelctl(t, addr, "env", "show", env, "-o", "json")
	if err := json.Unmarshal([]byte(raw), &out); err != nil {
		t.Fatalf("env show json: %v\n%s", err, raw)
	}
	return out
}

// TestHostJoiningCatchesUp (issue 9): a fourth host started with prod's
// labels after a prod rollout converges to prod's current release by
// itself and shows in env show; after env update moves it out of prod, a
// new prod release leaves it on what it runs.
func TestHostJoiningCatchesUp(t *testing.T) {
	ps := startCluster(t, "--heartbeat-interval", "300ms", "--agent-grace", "2s")
	all := addrs(ps)
	var agents []*agentProc
	for i, zone := range []string{"a", "a", "a", "b"} {
		agents = append(agents, &agentProc{id: "web-" + string(rune('1'+i)), dataDir: t.TempDir(), root: t.TempDir(), labels: "env=prod,zone=" + zone})
	}
	for _, a := range agents[:3] {
		a.start(t, all)
	}
	waitFor(t, 15*time.Second, "three connected agents", func() bool {
		r := relctl(t, all, "agent", "list", "-o", "json")
		return r.code == 0 && strings.Count(r.stdout, `"connected": true`) == 3
	})
	work := t.TempDir()
	mustRelctl(t, all, "app", "create", "hello")
	mustRelctl(t, all, "env", "create", "prod", "--selector", "env=prod", "--catch-up-parallel", "2")
	for _, v := range []string{"1.0.0", "2.0.0"} {
		path, _ := bundleWith(t, work, v, 0, "./hello check", "20s")
		mustRelctl(t, all, "release", "create", "hello", v, "--artifact", path, "--upload-timeout", "2m")
	}
	first := startRollout(t, all, "hello@1.0.0", "prod")
	if st := waitRolloutState(t, all, first, 60*time.Second, "succeeded", "failed"); st.Rollout.State != "succeeded" {
		t.Fatalf("1.0.0 to prod: %+v", st)
	}

	joined := time.Now()
	agents[3].start(t, all)
	waitFor(t, 30*time.Second, "web-4 on prod's current release", func() bool {
		s := envShow(t, all, "prod")
		return len(s.Apps) == 1 && s.Apps[0].CurrentVersion == "1.0.0" && s.Apps[0].OnCurrent == 4 && s.Apps[0].Hosts == 4 &&
			currentVersion(t, agents[3].root) == "1.0.0"
	})
	t.Logf("web-4 converged %s after it started", time.Since(joined).Round(time.Millisecond))
	if s := envShow(t, all, "prod"); s.Apps[0].CurrentRolloutID != first {
		t.Fatalf("prod's current rollout is %s after the catch-up, want %s: a catch-up does not change it", s.Apps[0].CurrentRolloutID, first)
	}
	out := mustRelctl(t, all, "rollout", "list", "--app", "hello")
	if !strings.Contains(out, "catch_up") {
		t.Fatalf("rollout list shows no catch_up:\n%s", out)
	}

	// web-4 leaves prod; a new prod release does not touch it.
	mustRelctl(t, all, "env", "update", "prod", "--selector", "env=prod,zone=a")
	second := startRollout(t, all, "hello@2.0.0", "prod")
	if st := waitRolloutState(t, all, second, 60*time.Second, "succeeded", "failed"); st.Rollout.State != "succeeded" || len(st.Hosts) != 3 {
		t.Fatalf("2.0.0 to prod: %+v", st)
	}
	for _, a := range agents {
		want := map[bool]string{true: "1.0.0", false: "2.0.0"}[a.id == "web-4"]
		if v := currentVersion(t, a.root); v != want {
			t.Errorf("%s runs %s, want %s", a.id, v, want)
		}
	}
}

// TestHandChangedHostIsBroughtBack (issue 9): a host whose `current` link is
// switched by hand shows in env show as drifted and, once catch-up is on,
// is taken back to the environment's release.
func TestHandChangedHostIsBroughtBack(t *testing.T) {
	ps := startCluster(t, "--heartbeat-interval", "300ms", "--agent-grace", "2s")
	all := addrs(ps)
	var agents []*agentProc
	for i := 0; i < 2; i++ {
		a := &agentProc{id: "web-" + string(rune('1'+i)), dataDir: t.TempDir(), root: t.TempDir(), labels: "env=prod"}
		a.start(t, all)
		agents = append(agents, a)
	}
	waitFor(t, 15*time.Second, "two connected agents", func() bool {
		r := relctl(t, all, "agent", "list", "-o", "json")
		return r.code == 0 && strings.Count(r.stdout, `"connected": true`) == 2
	})
	work := t.TempDir()
	mustRelctl(t, all, "app", "create", "hello")
	mustRelctl(t, all, "env", "create", "prod", "--selector", "env=prod", "--catch-up", "manual")
	for _, v := range []string{"1.0.0", "2.0.0"} {
		path, _ := bundleWith(t, work, v, 0, "./hello check", "20s")
		mustRelctl(t, all, "release", "create", "hello", v, "--artifact", path, "--upload-timeout", "2m")
		id := startRollout(t, all, "hello@"+v, "prod")
		if st := waitRolloutState(t, all, id, 60*time.Second, "succeeded", "failed"); st.Rollout.State != "succeeded" {
			t.Fatalf("%s to prod: %+v", v, st)
		}
	}
	// Someone switches web-1 back to 1.0.0 by hand.
	link := filepath.Join(agents[0].root, "hello", "current")
	tmp := link + ".by-hand"
	if err := os.Symlink(filepath.Join("releases", "1.0.0"), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, link); err != nil {
		t.Fatal(err)
	}
	var off string
	waitFor(t, 15*time.Second, "web-1 shown as drifted", func() bool {
		raw := mustRelctl(t, all, "env", "show", "prod", "-o", "json")
		off = raw
		return strings.Contains(raw, `"why": "drifted"`) && strings.Contains(raw, `"agent_id": "web-1"`)
	})
	if !strings.Contains(off, "current points at 1.0.0, not at 2.0.0") {
		t.Fatalf("drift detail:\n%s", off)
	}
	mustRelctl(t, all, "env", "update", "prod", "--catch-up", "auto")
	waitFor(t, 30*time.Second, "web-1 back on 2.0.0", func() bool {
		s := envShow(t, all, "prod")
		return currentVersion(t, agents[0].root) == "2.0.0" && len(s.Apps) == 1 && s.Apps[0].OnCurrent == 2
	})
	waitFor(t, 10*time.Second, "web-1 answering on 2.0.0", func() bool {
		return strings.HasSuffix(answer(t, agents[0].root), "version 2.0.0")
	})
}
