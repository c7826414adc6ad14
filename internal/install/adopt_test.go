package install

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestResumeAdoptsOrStartsAgain: an agent dies (its Host is dropped
// without stopping anything) and a new one resumes. The run process it
// left is adopted, not restarted, only if it is the very process recorded:
// a record whose pid is gone, now held by another process (another start
// time) or of another boot gets the service started anew, and a stranger
// holding the pid is never touched. Either way the health is checked again.
func TestResumeAdoptsOrStartsAgain(t *testing.T) {
	tests := []struct {
		name string
		// prepare changes the world between the two agents; it may
		// return a stranger process that must survive.
		prepare func(t *testing.T, e *testEnv, rec serviceRecord) *exec.Cmd
		adopted bool
	}{
		{"still running: adopted", nil, true},
		{"gone: started anew", func(t *testing.T, e *testEnv, rec serviceRecord) *exec.Cmd {
			killGroup(t, rec.PID)
			return nil
		}, false},
		{"pid now another process's: started anew, the other left alone", func(t *testing.T, e *testEnv, rec serviceRecord) *exec.Cmd {
			killGroup(t, rec.PID)
			// The stranger leads its own session and group, as a run
			// process does: only its start time tells it apart.
			stranger := startStranger(t)
			editService(t, e, func(r *serviceRecord) { r.PID, r.PGID = stranger.Process.Pid, stranger.Process.Pid })
			return stranger
		}, false},
		{"another boot: started anew", func(t *testing.T, e *testEnv, rec serviceRecord) *exec.Cmd {
			editService(t, e, func(r *serviceRecord) { r.BootID = "00000000-0000-0000-0000-000000000000" })
			return nil
		}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t)
			if err := e.apply(e.publish("web", "1.0.0", e.stdBundle("1.0.0"))); err != nil {
				t.Fatal(err)
			}
			e.rec.take()
			rec := *e.host.state.get("web").Service
			checkRecord(t, rec, "1.0.0", e.lay("web").releaseDir("1.0.0"))
			runLog := filepath.Join(e.lay("web").releaseDir("1.0.0"), relDirName, runLogName)
			validates := strings.Count(strings.Join(e.hookLines(), "\n"), "validate of=1.0.0")

			e.close() // the agent dies
			var stranger *exec.Cmd
			if tc.prepare != nil {
				stranger = tc.prepare(t, e, rec)
			}
			e.open()
			if err := e.host.Resume(context.Background(), e.rec.report); err != nil {
				t.Fatal(err)
			}
			pid := servicePid(t, e, "web")
			if tc.adopted {
				checkPhases(t, e.rec.take(), PhaseVerifying, PhaseHealthy)
				if pid != rec.PID {
					t.Errorf("pid %d, want the adopted %d", pid, rec.PID)
				}
				if n := strings.Count(readFile(t, runLog), "started web@1.0.0"); n != 1 {
					t.Errorf("started %d times, want once:\n%s", n, readFile(t, runLog))
				}
			} else {
				checkPhases(t, e.rec.take(), PhaseStarting, PhaseVerifying, PhaseHealthy)
				if pid == rec.PID || (stranger != nil && pid == stranger.Process.Pid) {
					t.Errorf("pid %d: not a new process", pid)
				}
				if !processEnded(rec.PID) {
					t.Errorf("the process left by the first agent (%d) still runs next to the new one", rec.PID)
				}
			}
			if n := strings.Count(strings.Join(e.hookLines(), "\n"), "validate of=1.0.0"); n != validates+1 {
				t.Errorf("validate ran %d times after the restart, want once", n-validates)
			}
			if groups := groupsUnder(e.cfg.Root); len(groups) != 1 || !groups[pid] {
				t.Errorf("process groups under the root: %v, want %d's alone", groups, pid)
			}
			if stranger != nil {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				if err := e.host.StopServices(ctx); err != nil {
					t.Fatal(err)
				}
				if processEnded(stranger.Process.Pid) {
					t.Error("the process holding the recorded pid was killed")
				}
			}
		})
	}
}

// TestResumeStopsAnotherRelease: the recorded process belongs to a release
// that is no longer current (an agent died around a switch): Resume stops
// it (SIGTERM) before it starts the current release's.
func TestResumeStopsAnotherRelease(t *testing.T) {
	e := newTestEnv(t)
	for _, v := range []string{"2.0.0", "1.0.0"} {
		if err := e.apply(e.publish("web", v, e.stdBundle(v))); err != nil {
			t.Fatal(err)
		}
	}
	e.rec.take()
	old := servicePid(t, e, "web")
	e.close()
	must(t, e.lay("web").switchCurrent("2.0.0"))
	e.open()
	if err := e.host.Resume(context.Background(), e.rec.report); err != nil {
		t.Fatal(err)
	}
	checkPhases(t, e.rec.take(), PhaseStarting, PhaseVerifying, PhaseHealthy)
	if log := readFile(t, filepath.Join(e.lay("web").releaseDir("1.0.0"), relDirName, runLogName)); !strings.Contains(log, "server 1.0.0 got TERM") {
		t.Errorf("1.0.0 was not stopped with SIGTERM:\n%s", log)
	}
	if !processEnded(old) {
		t.Errorf("1.0.0's process %d still runs", old)
	}
	if rec := e.host.state.get("web").Service; rec == nil || rec.Release != "2.0.0" {
		t.Errorf("record %+v, want 2.0.0's", rec)
	}
}

// TestAdoptedProcessRestarted: an adopted process is not the agent's
// child, but its exit is seen (pidfd) and it is started again with the
// usual backoff, and recorded anew.
func TestAdoptedProcessRestarted(t *testing.T) {
	e := newTestEnv(t)
	if err := e.apply(e.publish("web", "1.0.0", e.stdBundle("1.0.0"))); err != nil {
		t.Fatal(err)
	}
	e.rec.take()
	old := servicePid(t, e, "web")
	e.close()
	e.open()
	if err := e.host.Resume(context.Background(), e.rec.report); err != nil {
		t.Fatal(err)
	}
	checkPhases(t, e.rec.take(), PhaseVerifying, PhaseHealthy)
	killGroup(t, old)
	runLog := filepath.Join(e.lay("web").releaseDir("1.0.0"), relDirName, runLogName)
	waitFor(t, "a new process", 10*time.Second, func() bool {
		e.host.mu.Lock()
		sup := e.host.apps["web"].proc
		e.host.mu.Unlock()
		rec := e.host.state.get("web").Service
		return sup.Running() && sup.Pid() != old && rec != nil && rec.PID == sup.Pid() && rec.id().alive()
	})
	log := readFile(t, runLog)
	if !strings.Contains(log, "web@1.0.0 exited (no exit status: not a child of this agent), restarting in") ||
		strings.Count(log, "started web@1.0.0") != 2 {
		t.Errorf("run.log:\n%s", log)
	}
	// Its restart is supervised as the agent's own child.
	if err := e.apply(e.publish("web", "1.0.0", e.stdBundle("1.0.0"))); err != nil {
		t.Fatal(err)
	}
	checkPhases(t, e.rec.take(), PhaseHealthy)
}

// TestReleaseChangeStopsAdopted: a new release stops the process an
// earlier agent started (its stop hook, then SIGTERM to its group), whether
// Resume adopted it or the Apply came first; an Apply of the same release
// that comes before Resume adopts it instead.
func TestReleaseChangeStopsAdopted(t *testing.T) {
	tests := []struct {
		name    string
		resume  bool
		version string
		adopted bool
	}{
		{"new release after Resume", true, "2.0.0", false},
		{"new release before Resume", false, "2.0.0", false},
		{"same release before Resume", false, "1.0.0", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t)
			if err := e.apply(e.publish("web", "1.0.0", e.stdBundle("1.0.0"))); err != nil {
				t.Fatal(err)
			}
			old := servicePid(t, e, "web")
			e.close()
			e.open()
			if tc.resume {
				if err := e.host.Resume(context.Background(), e.rec.report); err != nil {
					t.Fatal(err)
				}
			}
			e.rec.take()
			if err := e.apply(e.publish("web", tc.version, e.stdBundle(tc.version))); err != nil {
				t.Fatal(err)
			}
			ev := e.rec.take()
			pid := servicePid(t, e, "web")
			if tc.adopted {
				checkPhases(t, ev, PhaseVerifying, PhaseHealthy)
				if pid != old {
					t.Errorf("pid %d, want the adopted %d", pid, old)
				}
				return
			}
			checkPhases(t, ev, PhaseDownloading, PhaseInstalling, PhaseStarting, PhaseVerifying, PhaseHealthy)
			log := readFile(t, filepath.Join(e.lay("web").releaseDir("1.0.0"), relDirName, runLogName))
			if !strings.Contains(log, "server 1.0.0 got TERM") {
				t.Errorf("1.0.0 not stopped with SIGTERM:\n%s", log)
			}
			if !slicesContainsPrefix(e.hookLines(), "stop of=1.0.0 v=2.0.0") {
				t.Errorf("1.0.0's stop hook did not run: %q", e.hookLines())
			}
			if !processEnded(old) || pid == old {
				t.Errorf("old pid %d ended: %v; now %d", old, processEnded(old), pid)
			}
			if groups := groupsUnder(e.cfg.Root); len(groups) != 1 || !groups[pid] {
				t.Errorf("process groups under the root: %v, want %d's alone", groups, pid)
			}
		})
	}
}

// TestAdoptRunAsUser: a run process running as another user is adopted
// after an agent restart and stopped by the next release.
func TestAdoptRunAsUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("switching users needs root")
	}
	e := newTestEnvWith(t, func(c *Config) { c.RunAs = "nobody" })
	openToOthers(t, e)
	if err := e.apply(e.publish("web", "1.0.0", nobodyBundle(t, "1.0.0", asNobodySpec("")))); err != nil {
		t.Fatal(err)
	}
	old := servicePid(t, e, "web")
	if rec := e.host.state.get("web").Service; rec.User != "nobody" || rec.UID != nobodyUID {
		t.Errorf("record %+v, want user nobody", rec)
	}
	e.close()
	e.open()
	e.rec.take()
	if err := e.host.Resume(context.Background(), e.rec.report); err != nil {
		t.Fatal(err)
	}
	checkPhases(t, e.rec.take(), PhaseVerifying, PhaseHealthy)
	if pid := servicePid(t, e, "web"); pid != old {
		t.Fatalf("pid %d, want the adopted %d", pid, old)
	}
	if status := readFile(t, "/proc/"+strconv.Itoa(old)+"/status"); !strings.Contains(status, "\nUid:\t65534\t65534\t65534\t65534\n") {
		t.Errorf("adopted process status:\n%s", status)
	}
	if err := e.apply(e.publish("web", "2.0.0", nobodyBundle(t, "2.0.0", asNobodySpec("")))); err != nil {
		t.Fatal(err)
	}
	if !processEnded(old) {
		t.Errorf("nobody's adopted process %d still runs after the release changed", old)
	}
}

// TestUserChangeNotAdopted: a process running as a user the release no
// longer runs as (the agent's --run-as changed) is not adopted: it is
// stopped and started again as the release's user now.
func TestUserChangeNotAdopted(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("switching users needs root")
	}
	e := newTestEnvWith(t, func(c *Config) { c.RunAs = "nobody" })
	openToOthers(t, e)
	d := e.publish("web", "1.0.0", bundle(t, "1.0.0", "run: exec sleep 300\nstop_timeout: 2s\n"))
	if err := e.apply(d); err != nil {
		t.Fatal(err)
	}
	old := servicePid(t, e, "web")
	e.close()
	e.cfg.RunAs = ""
	e.open()
	e.rec.take()
	if err := e.host.Resume(context.Background(), e.rec.report); err != nil {
		t.Fatal(err)
	}
	checkPhases(t, e.rec.take(), PhaseStarting, PhaseVerifying, PhaseHealthy)
	rec := e.host.state.get("web").Service
	if rec.PID == old || !processEnded(old) || rec.UID != os.Geteuid() {
		t.Errorf("record %+v; the process of the old user (%d) ended: %v", rec, old, processEnded(old))
	}
}

// TestStopServices stops what the Host supervises and what an earlier
// agent left running, and forgets both: the next Apply starts anew.
func TestStopServices(t *testing.T) {
	for _, reopen := range []bool{false, true} {
		t.Run("reopened="+strconv.FormatBool(reopen), func(t *testing.T) {
			e := newTestEnv(t)
			d := e.publish("web", "1.0.0", e.stdBundle("1.0.0"))
			if err := e.apply(d); err != nil {
				t.Fatal(err)
			}
			old := servicePid(t, e, "web")
			if reopen {
				e.close()
				e.open()
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := e.host.StopServices(ctx); err != nil {
				t.Fatal(err)
			}
			if !processEnded(old) {
				t.Fatalf("%d still runs", old)
			}
			if rec := e.host.state.get("web").Service; rec != nil {
				t.Errorf("record kept: %+v", rec)
			}
			if log := readFile(t, filepath.Join(e.lay("web").releaseDir("1.0.0"), relDirName, runLogName)); !strings.Contains(log, "got TERM") {
				t.Errorf("not stopped with SIGTERM:\n%s", log)
			}
			e.rec.take()
			if err := e.apply(d); err != nil {
				t.Fatal(err)
			}
			checkPhases(t, e.rec.take(), PhaseStarting, PhaseVerifying, PhaseHealthy)
		})
	}
}

// TestGate: a run process waits for the agent's "go" (sent once it is
// recorded); without it (the agent died before recording it) it ends
// without running its command.
func TestGate(t *testing.T) {
	for _, tc := range []struct {
		name string
		go_  bool
	}{{"recorded", true}, {"agent died first", false}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			r, w, err := os.Pipe()
			must(t, err)
			cmd := exec.Command("/bin/sh", "-c", gateScript+shellCommand("/bin/sh -c 'ls -l /proc/self/fd/ > fds; echo ran > ran'"))
			cmd.Dir = dir
			cmd.ExtraFiles = []*os.File{r}
			must(t, cmd.Start())
			r.Close()
			if tc.go_ {
				_, err = w.Write([]byte("go\n"))
				must(t, err)
			}
			w.Close()
			err = cmd.Wait()
			_, statErr := os.Stat(filepath.Join(dir, "ran"))
			if tc.go_ {
				if err != nil || statErr != nil {
					t.Fatalf("exit %v, ran: %v", err, statErr)
				}
				if fds := readFile(t, filepath.Join(dir, "fds")); strings.Contains(fds, " 3 -> pipe:") {
					t.Errorf("the gate's descriptor reached the command:\n%s", fds)
				}
				return
			}
			if statErr == nil {
				t.Error("the command ran without the agent's go")
			}
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 111 {
				t.Errorf("exit %v, want 111", err)
			}
		})
	}
}

// TestExitWatch: the exit of a child and of a process that is not one
// (orphaned: its parent is init, which may never reap it) is seen through
// a pidfd and by polling /proc; a cancelled wait returns at once; a
// process is not watched under another's start time.
func TestExitWatch(t *testing.T) {
	for _, polling := range []bool{false, true} {
		for _, child := range []bool{true, false} {
			t.Run("polling="+strconv.FormatBool(polling)+"/child="+strconv.FormatBool(child), func(t *testing.T) {
				var (
					pid int
					end func() // makes it exit
				)
				if child {
					cmd := exec.Command("/bin/sh", "-c", "read -r _ <&3")
					cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
					r, w, err := os.Pipe()
					must(t, err)
					cmd.ExtraFiles = []*os.File{r}
					must(t, cmd.Start())
					r.Close()
					t.Cleanup(func() {
						w.Close()
						cmd.Wait()
					})
					pid, end = cmd.Process.Pid, func() { w.Close() }
				} else {
					// A session leader whose parent exits at once; it
					// waits for the file release to appear.
					release := filepath.Join(t.TempDir(), "release")
					out, err := exec.Command("/bin/sh", "-c", `setsid /bin/sh -c 'while [ ! -e "$0" ]; do sleep 0.01; done' "$1" </dev/null >/dev/null 2>&1 & echo $!`, "sh", release).Output()
					must(t, err)
					pid, _ = strconv.Atoi(strings.TrimSpace(string(out)))
					end = func() { must(t, os.WriteFile(release, []byte("x"), 0o600)) }
					t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) })
					waitFor(t, "the orphan to lead its session", 5*time.Second, func() bool {
						st, err := readProcStat(pid)
						return err == nil && st.session == pid
					})
				}
				st, err := readProcStat(pid)
				must(t, err)
				id := processID{pid: pid, start: st.start, boot: bootID()}
				if _, err := watchExit(processID{pid: pid, start: st.start + 1, boot: bootID()}); err == nil {
					t.Error("watched under another start time")
				}
				w, err := watchExit(id)
				must(t, err)
				defer w.close()
				if polling {
					w.f.Close()
					w.f = nil
				}
				cancel := make(chan struct{})
				close(cancel)
				if w.wait(cancel) {
					t.Fatal("a running process was seen ended")
				}
				ended := make(chan bool, 1)
				go func() { ended <- w.wait(nil) }()
				end()
				select {
				case ok := <-ended:
					if !ok {
						t.Fatal("wait returned without the exit")
					}
				case <-time.After(10 * time.Second):
					syscall.Kill(pid, syscall.SIGKILL)
					<-ended
					t.Fatal("the exit was not seen")
				}
				if id.alive() {
					t.Error("alive after its exit")
				}
			})
		}
	}
}

func TestParseProcStat(t *testing.T) {
	// The command name may hold spaces and parentheses.
	line := "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 200 18446744073709551615\n"
	st, err := parseProcStat(line)
	if err != nil || st.state != 'S' || st.pgrp != 4242 || st.session != 4242 || st.start != 987654 {
		t.Fatalf("%+v %v", st, err)
	}
	for _, bad := range []string{"", "1 (x", "1 (x) S 1 2", "1 (x) S 1 a b 0 -1 0 0 0 0 0 0 0 0 0 0 0 1 0 5 1 1"} {
		if _, err := parseProcStat(bad); err == nil {
			t.Errorf("parsed %q", bad)
		}
	}
}

// checkRecord checks a fresh service record against /proc.
func checkRecord(t *testing.T, rec serviceRecord, version, dir string) {
	t.Helper()
	st, err := readProcStat(rec.PID)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Release != version || rec.Dir != dir || rec.PGID != rec.PID || rec.StartTicks != st.start ||
		rec.BootID != bootID() || rec.BootID == "" || rec.User != ownUserName() || rec.UID != os.Geteuid() || rec.Started.IsZero() {
		t.Errorf("record %+v (process: %+v)", rec, st)
	}
	if st.pgrp != rec.PID || st.session != rec.PID {
		t.Errorf("the run process does not lead its group and session: %+v", st)
	}
}

// servicePid is the recorded run process of app.
func servicePid(t *testing.T, e *testEnv, app string) int {
	t.Helper()
	rec := e.host.state.get(app).Service
	if rec == nil {
		t.Fatalf("no run process recorded for %s", app)
	}
	return rec.PID
}

// editService changes the service record of web in state.json while no
// Host has it open.
func editService(t *testing.T, e *testEnv, f func(*serviceRecord)) {
	t.Helper()
	p := filepath.Join(e.cfg.DataDir, "state.json")
	var st stateFile
	must(t, json.Unmarshal([]byte(readFile(t, p)), &st))
	f(st.Apps["web"].Service)
	b, err := json.Marshal(st)
	must(t, err)
	must(t, os.WriteFile(p, b, 0o600))
}

// startStranger starts a process that is none of the agent's business.
func startStranger(t *testing.T) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sleep", "300")
	cmd.Dir = t.TempDir()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	must(t, cmd.Start())
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd
}

// killGroup kills a process group and waits for its leader to end.
func killGroup(t *testing.T, pgid int) {
	t.Helper()
	must(t, syscall.Kill(-pgid, syscall.SIGKILL))
	waitFor(t, "the group to die", 10*time.Second, func() bool { return processEnded(pgid) })
}

// processEnded reports whether pid is gone or a zombie.
func processEnded(pid int) bool {
	st, err := readProcStat(pid)
	return err != nil || st.ended()
}

// groupsUnder is the set of process groups of the live processes working
// inside dir.
func groupsUnder(dir string) map[int]bool {
	out := map[int]bool{}
	for _, pid := range processesUnder(dir) {
		if st, err := readProcStat(pid); err == nil {
			out[st.pgrp] = true
		}
	}
	return out
}

func slicesContainsPrefix(lines []string, prefix string) bool {
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}
