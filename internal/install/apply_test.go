package install

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestApplyEndToEnd walks one app through its life: first install, a
// reconnect, upgrades with pruning, a switch back to a kept release, an
// agent restart.
func TestApplyEndToEnd(t *testing.T) {
	e := newTestEnv(t)
	lay := e.lay("web")
	v := map[string]Desired{}
	for _, ver := range []string{"1.0.0", "2.0.0", "3.0.0", "4.0.0"} {
		v[ver] = e.publish("web", ver, e.stdBundle(ver))
	}

	// First install: every phase, in order.
	start := time.Now()
	if err := e.apply(v["1.0.0"]); err != nil {
		t.Fatal(err)
	}
	t.Logf("first install took %s", time.Since(start))
	ev := e.rec.take()
	checkPhases(t, ev, PhaseDownloading, PhaseInstalling, PhaseStarting, PhaseVerifying, PhaseHealthy)
	for _, x := range ev {
		if x.App != "web" || x.Version != "1.0.0" || x.PreviousVersion != "" || x.At.IsZero() {
			t.Errorf("event %+v", x)
		}
	}
	rel1 := lay.releaseDir("1.0.0")
	if got := readFile(t, filepath.Join(rel1, "VERSION")); got != "1.0.0\n" {
		t.Errorf("VERSION = %q", got)
	}
	if fi, err := os.Stat(filepath.Join(rel1, "bin/server")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("bin/server: %v %v", fi, err)
	}
	if target, _ := os.Readlink(lay.currentLink()); target != "releases/1.0.0" {
		t.Errorf("current -> %q", target)
	}
	if got := strings.TrimSpace(readFile(t, lay.markerPath("1.0.0"))); got != v["1.0.0"].SHA256 {
		t.Errorf("marker %q", got)
	}
	var st stateFile
	if err := json.Unmarshal([]byte(readFile(t, filepath.Join(e.cfg.DataDir, "state.json"))), &st); err != nil {
		t.Fatal(err)
	}
	if r := st.Apps["web"]; r == nil || r.Version != "1.0.0" || r.Phase != PhaseHealthy || r.Current != "1.0.0" || r.SHA256 != v["1.0.0"].SHA256 {
		t.Errorf("state.json: %+v", r)
	}
	inst := e.host.Installed()
	if len(inst) != 1 || inst[0].App != "web" || inst[0].Version != "1.0.0" || inst[0].Phase != PhaseHealthy ||
		inst[0].Current != "1.0.0" || !slices.Equal(inst[0].Kept, []string{"1.0.0"}) {
		t.Errorf("Installed: %+v", inst)
	}
	// Hooks ran in order, where they should, with the environment.
	lines := e.hookLines()
	want := []string{"before_install of=1.0.0 v=1.0.0 prev= dir=" + lay.releasesDir() + "/.tmp-1.0.0-",
		"after_install of=1.0.0 v=1.0.0 dir=" + rel1, "start of=1.0.0 v=1.0.0 dir=" + rel1, "validate of=1.0.0"}
	if len(lines) != len(want) {
		t.Fatalf("hook log %q, want %d lines", lines, len(want))
	}
	for i := range want {
		if !strings.HasPrefix(lines[i], want[i]) {
			t.Errorf("hook line %d = %q, want prefix %q", i, lines[i], want[i])
		}
	}
	if !strings.HasSuffix(lines[0], "node=node-7") {
		t.Errorf("REL_NODE_ID missing: %q", lines[0])
	}
	runLog1 := filepath.Join(rel1, ".rel", "run.log")
	waitFor(t, "server 1.0.0 in run.log", 5*time.Second, func() bool {
		return strings.Contains(readFile(t, runLog1), "server 1.0.0 up greeting=hello world node=node-7")
	})
	if e.srv.total() != 1 {
		t.Errorf("%d requests, want 1", e.srv.total())
	}
	if entries, _ := os.ReadDir(filepath.Join(e.cfg.DataDir, "downloads")); len(entries) != 0 {
		t.Errorf("downloads left: %v", entries)
	}

	// A reconnect: same desired state. Nothing but "healthy", no request,
	// no hook, no restart.
	if err := e.apply(v["1.0.0"]); err != nil {
		t.Fatal(err)
	}
	checkPhases(t, e.rec.take(), PhaseHealthy)
	if e.srv.total() != 1 {
		t.Errorf("%d requests after a repeated Apply, want 1", e.srv.total())
	}
	if got := len(e.hookLines()); got != 4 {
		t.Errorf("%d hook lines after a repeated Apply, want 4", got)
	}
	if n := strings.Count(readFile(t, runLog1), "started web@1.0.0"); n != 1 {
		t.Errorf("run process started %d times, want 1", n)
	}

	// Upgrade: v1's own stop hook runs from v1's directory, v1's process
	// gets SIGTERM, then v2 starts.
	if err := e.apply(v["2.0.0"]); err != nil {
		t.Fatal(err)
	}
	ev = e.rec.take()
	checkPhases(t, ev, PhaseDownloading, PhaseInstalling, PhaseStarting, PhaseVerifying, PhaseHealthy)
	for _, x := range ev {
		if x.Version != "2.0.0" || x.PreviousVersion != "1.0.0" {
			t.Errorf("event %+v", x)
		}
	}
	lines = e.hookLines()[4:]
	rel2 := lay.releaseDir("2.0.0")
	want = []string{"before_install of=2.0.0 v=2.0.0 prev=1.0.0", "after_install of=2.0.0",
		"stop of=1.0.0 v=2.0.0 prev=1.0.0 dir=" + rel1, "start of=2.0.0 v=2.0.0 dir=" + rel2, "validate of=2.0.0"}
	if len(lines) != len(want) {
		t.Fatalf("hook log %q, want %d lines", lines, len(want))
	}
	for i := range want {
		if !strings.HasPrefix(lines[i], want[i]) {
			t.Errorf("hook line %d = %q, want prefix %q", i, lines[i], want[i])
		}
	}
	if !strings.Contains(readFile(t, runLog1), "server 1.0.0 got TERM") {
		t.Error("v1's process did not get SIGTERM")
	}
	if e.current("web") != "2.0.0" {
		t.Errorf("current = %s", e.current("web"))
	}

	// Two more upgrades: keep 3 prunes 1.0.0 (not current, not the
	// previous one, and the oldest).
	for _, ver := range []string{"3.0.0", "4.0.0"} {
		if err := e.apply(v[ver]); err != nil {
			t.Fatal(err)
		}
	}
	e.rec.take()
	if _, err := os.Stat(rel1); !os.IsNotExist(err) {
		t.Errorf("1.0.0 not pruned: %v", err)
	}
	if inst := e.host.Installed(); !slices.Equal(inst[0].Kept, []string{"4.0.0", "3.0.0", "2.0.0"}) {
		t.Errorf("Kept = %v", inst[0].Kept)
	}
	requests := e.srv.total()

	// Rollback to a kept release: a switch and a restart, no download, no
	// install hooks.
	hooksBefore := len(e.hookLines())
	if err := e.apply(v["2.0.0"]); err != nil {
		t.Fatal(err)
	}
	ev = e.rec.take()
	checkPhases(t, ev, PhaseStarting, PhaseVerifying, PhaseHealthy)
	if ev[0].PreviousVersion != "4.0.0" {
		t.Errorf("previous version %q, want 4.0.0", ev[0].PreviousVersion)
	}
	if e.srv.total() != requests {
		t.Errorf("switching back downloaded: %d requests, want %d", e.srv.total(), requests)
	}
	lines = e.hookLines()[hooksBefore:]
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "stop of=4.0.0") || !strings.HasPrefix(lines[1], "start of=2.0.0") {
		t.Errorf("hooks of the switch back: %q", lines)
	}
	if e.current("web") != "2.0.0" {
		t.Errorf("current = %s", e.current("web"))
	}
	inst = e.host.Installed()
	if inst[0].Version != "2.0.0" || inst[0].PreviousVersion != "4.0.0" || !slices.Equal(inst[0].Kept, []string{"2.0.0", "4.0.0", "3.0.0"}) {
		t.Errorf("Installed: %+v", inst[0])
	}

	// Agent restart: Close leaves the process running; a new Host knows
	// the app, and Resume adopts the process and re-verifies it.
	runLog2 := filepath.Join(rel2, ".rel", "run.log")
	logBefore := readFile(t, runLog2)
	pid := servicePid(t, e, "web")
	e.close()
	e.open()
	if inst := e.host.Installed(); inst[0].Current != "2.0.0" || inst[0].Phase != PhaseHealthy {
		t.Errorf("after restart: %+v", inst[0])
	}
	if err := e.host.Resume(context.Background(), e.rec.report); err != nil {
		t.Fatal(err)
	}
	ev = e.rec.take()
	checkPhases(t, ev, PhaseVerifying, PhaseHealthy)
	if ev[0].Version != "2.0.0" || ev[0].PreviousVersion != "4.0.0" {
		t.Errorf("resume event %+v", ev[0])
	}
	if got := servicePid(t, e, "web"); got != pid {
		t.Errorf("pid %d after the restart, was %d", got, pid)
	}
	if log := readFile(t, runLog2); log != logBefore {
		t.Errorf("the agent's restart restarted the service: run.log went on with %q", strings.TrimPrefix(log, logBefore))
	}
	// And after Resume, a reconnect is still a no-op.
	if err := e.apply(v["2.0.0"]); err != nil {
		t.Fatal(err)
	}
	checkPhases(t, e.rec.take(), PhaseHealthy)
	if e.srv.total() != requests {
		t.Errorf("%d requests, want %d", e.srv.total(), requests)
	}
}

func TestDigestMismatch(t *testing.T) {
	e := newTestEnv(t)
	good := e.publish("web", "1.0.0", e.stdBundle("1.0.0"))
	if err := e.apply(good); err != nil {
		t.Fatal(err)
	}
	e.rec.take()

	d := e.publish("web", "2.0.0", e.stdBundle("2.0.0"))
	actual := d.SHA256
	d.SHA256 = strings.Repeat("ab", 32)
	err := e.apply(d)
	// What was expected and from where, never the digest of what came: it
	// would tell whoever reads reports what a file the agent was pointed
	// at holds.
	wantReason := "digest mismatch: the artifact from " + d.URLs[0] + " does not have the expected sha256 " + d.SHA256
	if err == nil || !strings.Contains(err.Error(), wantReason) {
		t.Fatalf("Apply: %v, want %q", err, wantReason)
	}
	if strings.Contains(err.Error(), actual) {
		t.Errorf("error %q holds the digest of what was received", err)
	}
	ev := e.rec.take()
	checkPhases(t, ev, PhaseDownloading, PhaseFailed)
	if ev[1].Reason != wantReason {
		t.Errorf("reason %q, want %q", ev[1].Reason, wantReason)
	}
	// Nothing extracted, nothing kept, current untouched and still healthy.
	entries, _ := os.ReadDir(e.lay("web").releasesDir())
	if len(entries) != 1 || entries[0].Name() != "1.0.0" {
		t.Errorf("releases/ holds %v", entries)
	}
	if dl, _ := os.ReadDir(filepath.Join(e.cfg.DataDir, "downloads")); len(dl) != 0 {
		t.Errorf("downloads/ holds %v", dl)
	}
	if e.current("web") != "1.0.0" {
		t.Errorf("current = %s", e.current("web"))
	}
	inst := e.host.Installed()[0]
	if inst.Phase != PhaseFailed || inst.Version != "2.0.0" || inst.Current != "1.0.0" || inst.Reason != wantReason {
		t.Errorf("Installed: %+v", inst)
	}
	if err := e.apply(good); err != nil {
		t.Fatal(err)
	}
	checkPhases(t, e.rec.take(), PhaseHealthy)
}

func TestInvalidRelYAMLFailsInstall(t *testing.T) {
	e := newTestEnv(t)
	good := e.publish("web", "1.0.0", e.stdBundle("1.0.0"))
	if err := e.apply(good); err != nil {
		t.Fatal(err)
	}
	e.rec.take()
	bad := strings.Replace(relYAML(e.hooks, "2.0.0"), "interval: 20ms", "interval: fast", 1)
	d := e.publish("web", "2.0.0", bundle(t, "2.0.0", bad))
	if err := e.apply(d); err == nil {
		t.Fatal("Apply succeeded")
	}
	ev := e.rec.take()
	checkPhases(t, ev, PhaseDownloading, PhaseInstalling, PhaseFailed)
	if want := `rel.yaml: health.interval: invalid duration "fast"`; !strings.HasPrefix(ev[2].Reason, want) {
		t.Errorf("reason %q, want it to start with %q", ev[2].Reason, want)
	}
	entries, _ := os.ReadDir(e.lay("web").releasesDir())
	if len(entries) != 1 {
		t.Errorf("releases/ holds %v", entries)
	}
	if e.current("web") != "1.0.0" {
		t.Errorf("current = %s", e.current("web"))
	}
}

func TestHookFailures(t *testing.T) {
	e := newTestEnv(t)
	base := e.publish("web", "1.0.0", e.stdBundle("1.0.0"))
	if err := e.apply(base); err != nil {
		t.Fatal(err)
	}
	e.rec.take()
	std := relYAML(e.hooks, "2.0.0")

	tests := []struct {
		name        string
		spec        string
		wantPhases  []Phase
		wantReason  string
		wantOutput  string
		wantCurrent string
		wantKept    bool // releases/2.0.0 stays on disk
	}{
		{
			name:       "before_install",
			spec:       strings.Replace(std, `before_install: echo`, `before_install: echo "disk check failed" >&2; exit 3; echo`, 1),
			wantPhases: []Phase{PhaseDownloading, PhaseInstalling, PhaseFailed},
			wantReason: "hook before_install exited 3", wantOutput: "disk check failed\n", wantCurrent: "1.0.0",
		},
		{
			name:       "after_install",
			spec:       strings.Replace(std, `after_install: echo`, `after_install: exit 4; echo`, 1),
			wantPhases: []Phase{PhaseDownloading, PhaseInstalling, PhaseFailed},
			wantReason: "hook after_install exited 4", wantCurrent: "1.0.0",
		},
		{
			name:       "unknown hook",
			spec:       strings.Replace(std, "  start: echo", "  restart: echo x\n  start: echo", 1),
			wantPhases: []Phase{PhaseDownloading, PhaseInstalling, PhaseFailed},
			wantReason: "rel.yaml: hooks.restart: unknown hook", wantCurrent: "1.0.0",
		},
		{
			name:       "validate",
			spec:       strings.Replace(std, `validate: test -f VERSION`, `validate: echo "smoke test failed"; false`, 1),
			wantPhases: []Phase{PhaseDownloading, PhaseInstalling, PhaseStarting, PhaseVerifying, PhaseFailed},
			wantReason: "hook validate exited 1", wantOutput: "smoke test failed\n", wantCurrent: "2.0.0", wantKept: true,
		},
		{
			name:       "health check",
			spec:       strings.Replace(strings.Replace(std, "test -f ready", "test -f never", 1), "deadline: 10s", "deadline: 300ms", 1),
			wantPhases: []Phase{PhaseDownloading, PhaseInstalling, PhaseStarting, PhaseVerifying, PhaseFailed},
			wantReason: `health check failed: not healthy within 300ms: exec "test -f never": exit status 1`, wantCurrent: "2.0.0", wantKept: true,
		},
		{
			// No health block: healthy means "run is still up" after
			// validate, which here waits until run has exited.
			name: "run exits",
			spec: `run: exit 7
hooks:
  validate: until grep -q exited .rel/run.log; do sleep 0.01; done
`,
			wantPhases: []Phase{PhaseDownloading, PhaseInstalling, PhaseStarting, PhaseVerifying, PhaseFailed},
			wantReason: `run process is not running: exit status 7`, wantCurrent: "2.0.0", wantKept: true,
		},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Each case starts from 1.0.0 current and healthy.
			if err := e.apply(base); err != nil {
				t.Fatal(err)
			}
			e.rec.take()
			ver := "2.0." + string(rune('1'+i))
			spec := strings.ReplaceAll(tc.spec, "2.0.0", ver)
			d := e.publish("web", ver, bundle(t, ver, spec))
			err := e.apply(d)
			if err == nil {
				t.Fatal("Apply succeeded")
			}
			ev := e.rec.take()
			checkPhases(t, ev, tc.wantPhases...)
			last := ev[len(ev)-1]
			if !strings.HasPrefix(last.Reason, tc.wantReason) {
				t.Errorf("reason %q, want prefix %q", last.Reason, tc.wantReason)
			}
			if !strings.Contains(err.Error(), last.Reason) {
				t.Errorf("error %q does not carry the reason", err)
			}
			if tc.wantOutput != "" && last.Output != tc.wantOutput {
				t.Errorf("output %q, want %q", last.Output, tc.wantOutput)
			}
			wantCur := strings.ReplaceAll(tc.wantCurrent, "2.0.0", ver)
			if got := e.current("web"); got != wantCur {
				t.Errorf("current = %s, want %s", got, wantCur)
			}
			_, serr := os.Stat(e.lay("web").releaseDir(ver))
			if tc.wantKept != (serr == nil) {
				t.Errorf("releases/%s exists: %v, want %v", ver, serr == nil, tc.wantKept)
			}
			if entries, _ := os.ReadDir(e.lay("web").releasesDir()); slices.ContainsFunc(entries, func(d os.DirEntry) bool { return strings.HasPrefix(d.Name(), ".tmp-") }) {
				t.Errorf("temporary dir left: %v", entries)
			}
		})
	}
}

func TestHookTimeout(t *testing.T) {
	e := newTestEnv(t)
	// A hook with its own timeout that overruns it.
	spec := `hooks:
  before_install:
    command: echo slow; sleep 30
    timeout: 200ms
`
	d := e.publish("web", "1.0.0", bundle(t, "1.0.0", spec))
	start := time.Now()
	err := e.apply(d)
	if err == nil {
		t.Fatal("Apply succeeded")
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("took %s: the hook's timeout was not applied", took)
	}
	ev := e.rec.take()
	last := ev[len(ev)-1]
	if last.Reason != "hook before_install timed out after 200ms" || last.Output != "slow\n" {
		t.Errorf("reason %q output %q", last.Reason, last.Output)
	}
}

func TestStopHookFailureKeepsOldRunning(t *testing.T) {
	e := newTestEnv(t)
	spec1 := strings.Replace(relYAML(e.hooks, "1.0.0"), `command: echo "stop`, `command: exit 9; echo "stop`, 1)
	if err := e.apply(e.publish("web", "1.0.0", bundle(t, "1.0.0", spec1))); err != nil {
		t.Fatal(err)
	}
	e.rec.take()
	err := e.apply(e.publish("web", "2.0.0", e.stdBundle("2.0.0")))
	if err == nil || !strings.Contains(err.Error(), "hook stop exited 9") {
		t.Fatalf("Apply: %v", err)
	}
	checkPhases(t, e.rec.take(), PhaseDownloading, PhaseInstalling, PhaseStarting, PhaseFailed)
	if e.current("web") != "1.0.0" {
		t.Errorf("current = %s", e.current("web"))
	}
	// 1.0.0 is still running and healthy: a repeated Apply of it is a no-op.
	if err := e.apply(e.publish("web", "1.0.0", bundle(t, "1.0.0", spec1))); err != nil {
		t.Fatal(err)
	}
	checkPhases(t, e.rec.take(), PhaseHealthy)
}

// TestUnhealthyCurrentIsRestarted: a reconnect finds the current release
// failing its health check; Apply restarts it in place (no download).
func TestUnhealthyCurrentIsRestarted(t *testing.T) {
	e := newTestEnv(t)
	d := e.publish("web", "1.0.0", e.stdBundle("1.0.0"))
	if err := e.apply(d); err != nil {
		t.Fatal(err)
	}
	e.rec.take()
	if err := os.Remove(filepath.Join(e.lay("web").releaseDir("1.0.0"), "ready")); err != nil {
		t.Fatal(err)
	}
	if err := e.apply(d); err != nil {
		t.Fatal(err)
	}
	checkPhases(t, e.rec.take(), PhaseStarting, PhaseVerifying, PhaseHealthy)
	if e.srv.total() != 1 {
		t.Errorf("%d requests", e.srv.total())
	}
}

func TestRunProcessIsRestarted(t *testing.T) {
	e := newTestEnv(t)
	if err := e.apply(e.publish("web", "1.0.0", e.stdBundle("1.0.0"))); err != nil {
		t.Fatal(err)
	}
	e.host.mu.Lock()
	sup := e.host.apps["web"].proc
	e.host.mu.Unlock()
	pid := sup.Pid()
	if err := syscall.Kill(-pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	runLog := filepath.Join(e.lay("web").releaseDir("1.0.0"), ".rel", "run.log")
	waitFor(t, "a second start", 10*time.Second, func() bool {
		return strings.Count(readFile(t, runLog), "started web@1.0.0") == 2 && sup.Running()
	})
	if !strings.Contains(readFile(t, runLog), "exited (signal: killed), restarting in") {
		t.Errorf("run.log does not say why it restarted:\n%s", readFile(t, runLog))
	}
}

func TestNoRelYAMLAndPlainFile(t *testing.T) {
	e := newTestEnv(t)
	script := []byte("#!/bin/sh\necho tool\n")
	d := Desired{App: "tool", Version: "1", URLs: []string{e.srv.add("dl/mytool", script)}, SHA256: sha(script)}
	if err := e.apply(d); err != nil {
		t.Fatal(err)
	}
	checkPhases(t, e.rec.take(), PhaseDownloading, PhaseInstalling, PhaseStarting, PhaseVerifying, PhaseHealthy)
	fi, err := os.Stat(filepath.Join(e.lay("tool").releaseDir("1"), "mytool"))
	if err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("mytool: %v %v", fi, err)
	}
}

func TestFileURL(t *testing.T) {
	e := newTestEnv(t)
	data := e.stdBundle("1.0.0")
	p := filepath.Join(t.TempDir(), "web.tar.gz")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	d := Desired{App: "web", Version: "1.0.0", URLs: []string{"file:///nonexistent/web.tar.gz", "file://" + p}, SHA256: sha(data)}
	if err := e.apply(d); err != nil {
		t.Fatal(err)
	}
	if e.current("web") != "1.0.0" {
		t.Fatal("not installed")
	}
}

func TestConcurrentApply(t *testing.T) {
	e := newTestEnv(t)
	apps := []string{"alpha", "beta", "gamma"}
	var wg sync.WaitGroup
	errs := make(chan error, 2*len(apps))
	for _, app := range apps {
		d := e.publish(app, "1.0.0", bundle(t, "1.0.0", relYAML(e.hooks, app), file("APP", app)))
		// Twice per app at once: serialised, the second finds it healthy.
		for range 2 {
			wg.Go(func() { errs <- e.apply(d) })
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	byApp := map[string][]Event{}
	for _, ev := range e.rec.take() {
		byApp[ev.App] = append(byApp[ev.App], ev)
	}
	for _, app := range apps {
		checkPhases(t, byApp[app], PhaseDownloading, PhaseInstalling, PhaseStarting, PhaseVerifying, PhaseHealthy, PhaseHealthy)
		if n := len(e.srv.requestsFor(app + "-1.0.0.tar.gz")); n != 1 {
			t.Errorf("%s downloaded %d times", app, n)
		}
	}
	inst := e.host.Installed()
	if len(inst) != 3 || inst[0].App != "alpha" || inst[2].App != "gamma" {
		t.Errorf("Installed: %+v", inst)
	}
}

func TestApplyRefusesBadDesired(t *testing.T) {
	e := newTestEnv(t)
	good := Desired{App: "web", Version: "1.0.0", URLs: []string{"http://127.0.0.1:1/x"}, SHA256: strings.Repeat("a", 64)}
	tests := []struct {
		name string
		mod  func(*Desired)
		want string
	}{
		{"app with slash", func(d *Desired) { d.App = "../etc" }, "app name"},
		{"version with slash", func(d *Desired) { d.Version = "1/../../x" }, "version"},
		{"no digest", func(d *Desired) { d.SHA256 = "" }, "sha256 is empty"},
		{"no url", func(d *Desired) { d.URLs = nil }, "no artifact URL"},
		{"ftp url", func(d *Desired) { d.URLs = []string{"ftp://x/y"} }, "ftp"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := good
			tc.mod(&d)
			err := e.apply(d)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Apply: %v, want %q", err, tc.want)
			}
			checkPhases(t, e.rec.take(), PhaseFailed)
		})
	}
	if entries, _ := os.ReadDir(e.cfg.Root); len(entries) != 0 {
		t.Errorf("root holds %v", entries)
	}
}

func TestClosedHost(t *testing.T) {
	e := newTestEnv(t)
	e.close()
	err := e.host.Apply(context.Background(), e.publish("web", "1", e.stdBundle("1")), nil)
	if !errors.Is(err, ErrClosed) {
		t.Fatalf("Apply after Close: %v", err)
	}
	// The data dir is free again for the next agent; two at once are not.
	e.open()
	if _, err := New(e.cfg); err == nil || !strings.Contains(err.Error(), "in use by another agent") {
		t.Fatalf("second New on the same data dir: %v", err)
	}
}

// TestDriftedAndBroughtBack (issue 9): a `current` link switched by hand is
// reported by Drifted, and applying the release again switches it back.
func TestDriftedAndBroughtBack(t *testing.T) {
	e := newTestEnv(t)
	d1 := e.publish("web", "1.0.0", e.stdBundle("1.0.0"))
	d2 := e.publish("web", "2.0.0", e.stdBundle("2.0.0"))
	for _, d := range []Desired{d1, d2} {
		if err := e.apply(d); err != nil {
			t.Fatal(err)
		}
	}
	if got := e.host.Drifted(); len(got) != 0 {
		t.Fatalf("drift right after installing: %v", got)
	}
	link := e.lay("web").currentLink()
	if err := os.Remove(link); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(releasesDirName, "1.0.0"), link); err != nil {
		t.Fatal(err)
	}
	if got := e.host.Drifted(); got["web"] != "1.0.0" || len(got) != 1 {
		t.Fatalf("drift after switching by hand: %v, want web -> 1.0.0", got)
	}
	if err := e.apply(d2); err != nil {
		t.Fatal(err)
	}
	if cur, _ := e.lay("web").current(); cur != "2.0.0" {
		t.Fatalf("current after applying 2.0.0 again: %s", cur)
	}
	if got := e.host.Drifted(); len(got) != 0 {
		t.Fatalf("drift after bringing it back: %v", got)
	}
	if err := os.Remove(link); err != nil {
		t.Fatal(err)
	}
	if got := e.host.Drifted(); got["web"] != "" || len(got) != 1 {
		t.Fatalf("drift after removing current: %v, want web -> nothing", got)
	}
}
