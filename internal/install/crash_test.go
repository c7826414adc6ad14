package install

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestCrashRecovery simulates an agent killed (kill -9) in the middle of
// installing 2.0.0 over a healthy 1.0.0: a half-extracted .tmp dir, a
// renamed release without its marker, a half-made current.tmp symlink, a
// .part download and a state.json saying "installing". A new Host cleans
// up, Resume brings 1.0.0 back, and Apply finishes 2.0.0 resuming the
// download.
func TestCrashRecovery(t *testing.T) {
	e := newTestEnv(t)
	lay := e.lay("web")
	if err := e.apply(e.publish("web", "1.0.0", e.stdBundle("1.0.0"))); err != nil {
		t.Fatal(err)
	}
	e.rec.take()
	data2 := bigBundle(t, e, "2.0.0")
	d2 := e.publish("web", "2.0.0", data2)
	e.close() // the agent dies; 1.0.0's process keeps running

	// What the killed agent left behind.
	tmp := filepath.Join(lay.releasesDir(), ".tmp-2.0.0-0123abcd")
	must(t, os.MkdirAll(filepath.Join(tmp, "bin"), 0o755))
	must(t, os.WriteFile(filepath.Join(tmp, "bin", "server"), []byte("#!/bin/sh\n# half"), 0o755))
	incomplete := lay.releaseDir("1.5.0") // renamed, marker never written
	must(t, os.MkdirAll(incomplete, 0o755))
	must(t, os.Symlink("releases/2.0.0", filepath.Join(lay.appDir(), "current.tmp-99aa")))
	half := len(data2) / 2
	part := filepath.Join(e.cfg.DataDir, "downloads", d2.SHA256+".part")
	must(t, os.WriteFile(part, data2[:half], 0o600))
	stray := filepath.Join(e.cfg.DataDir, "downloads", strings.Repeat("0", 64)+".part")
	must(t, os.WriteFile(stray, []byte("nobody wants this"), 0o600))
	statePath := filepath.Join(e.cfg.DataDir, "state.json")
	var st stateFile
	must(t, json.Unmarshal([]byte(readFile(t, statePath)), &st))
	st.Apps["web"].Version, st.Apps["web"].Phase, st.Apps["web"].SHA256 = "2.0.0", PhaseInstalling, d2.SHA256
	st.Apps["web"].PreviousVersion = "1.0.0"
	b, _ := json.Marshal(st)
	must(t, os.WriteFile(statePath, b, 0o600))

	e.open()
	for _, p := range []string{tmp, incomplete, filepath.Join(lay.appDir(), "current.tmp-99aa"), stray} {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s survived the restart", p)
		}
	}
	if _, err := os.Stat(part); err != nil {
		t.Errorf("the .part to resume was removed: %v", err)
	}
	inst := e.host.Installed()[0]
	if inst.Phase != PhaseFailed || inst.Version != "2.0.0" || inst.Current != "1.0.0" || !strings.Contains(inst.Reason, "interrupted while installing") {
		t.Errorf("after restart: %+v", inst)
	}
	if e.current("web") != "1.0.0" || !lay.complete("1.0.0", lay.markerOf("1.0.0")) {
		t.Fatal("current does not point at the complete 1.0.0")
	}

	if err := e.host.Resume(context.Background(), e.rec.report); err != nil {
		t.Fatal(err)
	}
	checkPhases(t, e.rec.take(), PhaseVerifying, PhaseHealthy) // adopted
	if inst := e.host.Installed()[0]; inst.Phase != PhaseHealthy || inst.Version != "1.0.0" {
		t.Errorf("after Resume: %+v", inst)
	}

	if err := e.apply(d2); err != nil {
		t.Fatal(err)
	}
	checkPhases(t, e.rec.take(), PhaseDownloading, PhaseInstalling, PhaseStarting, PhaseVerifying, PhaseHealthy)
	reqs := e.srv.requestsFor("web-2.0.0.tar.gz")
	if len(reqs) != 1 || reqs[0].rangeHeader != "bytes="+strconv.Itoa(half)+"-" {
		t.Errorf("requests %+v, want one Range request from byte %d", reqs, half)
	}
	if e.current("web") != "2.0.0" {
		t.Errorf("current = %s", e.current("web"))
	}
}

// TestRecoverWithoutState: state.json lost, the releases on disk are
// found again.
func TestRecoverWithoutState(t *testing.T) {
	e := newTestEnv(t)
	if err := e.apply(e.publish("web", "1.0.0", e.stdBundle("1.0.0"))); err != nil {
		t.Fatal(err)
	}
	e.rec.take()
	old := servicePid(t, e, "web")
	e.close()
	must(t, os.Remove(filepath.Join(e.cfg.DataDir, "state.json")))
	e.open()
	inst := e.host.Installed()
	if len(inst) != 1 || inst[0].Current != "1.0.0" || inst[0].Kept[0] != "1.0.0" {
		t.Fatalf("Installed: %+v", inst)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.host.Resume(ctx, e.rec.report); err != nil {
		t.Fatal(err)
	}
	checkPhases(t, e.rec.take(), PhaseStarting, PhaseVerifying, PhaseHealthy)
	// Without its record the old process cannot be adopted: the one
	// recorded next to the release (.rel/run.pgid) was ended before the
	// new one started, so two never run side by side.
	if pid := servicePid(t, e, "web"); pid == old || !processEnded(old) {
		t.Errorf("the process left running (%d) was not replaced: now %d, old ended: %v", old, pid, processEnded(old))
	}
	if groups := groupsUnder(e.cfg.Root); len(groups) != 1 || !groups[servicePid(t, e, "web")] {
		t.Errorf("process groups under the root: %v, want the new service's alone", groups)
	}
}

func TestStateFileIsAtomic(t *testing.T) {
	e := newTestEnv(t)
	if err := e.apply(e.publish("web", "1.0.0", e.stdBundle("1.0.0"))); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(e.cfg.DataDir)
	for _, en := range entries {
		if strings.Contains(en.Name(), ".tmp-") {
			t.Errorf("temporary state file left: %s", en.Name())
		}
	}
	fi, err := os.Stat(filepath.Join(e.cfg.DataDir, "state.json"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("state.json: %v %v", fi, err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
