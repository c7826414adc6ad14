package install

import (
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSupervisorStop: a process that ignores SIGTERM is killed after the
// stop timeout, with the children of its group.
func TestSupervisorStop(t *testing.T) {
	dir := t.TempDir()
	logPath := filepath.Join(dir, "run.log")
	sup, err := startSupervised(superviseConfig{
		name: "test", dir: dir, logPath: logPath, stopTimeout: 300 * time.Millisecond, logger: testLoggerOrDiscard(),
		command: `trap '' TERM; sleep 60 & echo "child $!"; while :; do sleep 0.05; done`,
	})
	if err != nil {
		t.Fatal(err)
	}
	var child int
	waitFor(t, "the child's pid", 5*time.Second, func() bool {
		for _, l := range strings.Split(readFile(t, logPath), "\n") {
			if rest, ok := strings.CutPrefix(l, "child "); ok {
				child, _ = strconv.Atoi(rest)
			}
		}
		return child > 0
	})
	start := time.Now()
	sup.Stop()
	took := time.Since(start)
	if took < 300*time.Millisecond || took > 3*time.Second {
		t.Errorf("Stop took %s, want about the 300ms stop timeout", took)
	}
	if !strings.Contains(readFile(t, logPath), "did not stop within 300ms of SIGTERM: SIGKILL") {
		t.Errorf("run.log:\n%s", readFile(t, logPath))
	}
	// The background child was in the group: it is gone too (a zombie at
	// worst, until init reaps it).
	waitFor(t, "the child to die", 5*time.Second, func() bool {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(child) + "/stat")
		return err != nil || strings.Contains(string(b), ") Z ")
	})
	if sup.Running() {
		t.Error("still running after Stop")
	}
	sup.Stop() // twice is fine
}

func TestSupervisorStartFailure(t *testing.T) {
	_, err := startSupervised(superviseConfig{name: "x", dir: "/nonexistent-dir", logPath: filepath.Join(t.TempDir(), "run.log"), command: "true", logger: testLoggerOrDiscard()})
	if err == nil {
		t.Fatal("started in a missing directory")
	}
}

func testLoggerOrDiscard() *slog.Logger {
	if l := testLogger(); l != nil {
		return l
	}
	return slog.New(slog.DiscardHandler)
}
func TestShellCommand(t *testing.T) {
	for in, want := range map[string]string{
		"./server --port 8080":    "exec ./server --port 8080",
		"./server --port=8080":    "exec ./server --port=8080",
		"FOO=1 ./server":          "FOO=1 ./server",
		"cd sub && ./server":      "cd sub && ./server",
		"./a | ./b":               "./a | ./b",
		"./server \"quoted arg\"": "./server \"quoted arg\"",
		"./server $PORT":          "./server $PORT",
	} {
		if got := shellCommand(in); got != want {
			t.Errorf("shellCommand(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestKillLeftovers: a process group recorded next to a release is ended
// before the release's run command starts again. With the leader's start
// time (this agent's record) a group whose leader still runs is ended
// whole, and one whose id now belongs to another process (another start
// time, another boot) is left alone; with the pgid alone (an older agent's
// record) only processes working inside the release dir are killed.
func TestKillLeftovers(t *testing.T) {
	tests := []struct {
		name string
		// record is run.pgid's content for the group's leader.
		record         func(leader int, start uint64) string
		leaderKilled   bool
		outsiderKilled bool
	}{
		{"pgid alone", func(l int, _ uint64) string { return strconv.Itoa(l) + "\n" }, true, false},
		{"leader running", func(l int, s uint64) string { return fmt.Sprintf("%d %d %s\n", l, s, bootID()) }, true, true},
		{"pid now another process's", func(l int, s uint64) string { return fmt.Sprintf("%d %d %s\n", l, s+1, bootID()) }, false, false},
		{"another boot", func(l int, s uint64) string { return fmt.Sprintf("%d %d other-boot\n", l, s) }, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rel := t.TempDir()
			other := t.TempDir()
			os.MkdirAll(filepath.Join(rel, ".rel"), 0o755)
			start := func(dir string, pgid int) (*exec.Cmd, chan struct{}) {
				cmd := exec.Command("sleep", "300")
				cmd.Dir = dir
				cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pgid: pgid}
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				done := make(chan struct{})
				go func() {
					cmd.Wait()
					close(done)
				}()
				t.Cleanup(func() {
					cmd.Process.Kill()
					<-done
				})
				return cmd, done
			}
			leader, leaderDone := start(rel, 0)
			_, outsiderDone := start(other, leader.Process.Pid) // same group, elsewhere
			st, err := readProcStat(leader.Process.Pid)
			if err != nil {
				t.Fatal(err)
			}
			file := filepath.Join(rel, ".rel", "run.pgid")
			os.WriteFile(file, []byte(tc.record(leader.Process.Pid, st.start)), 0o644)
			killLeftovers(rel, file, nil)
			for _, p := range []struct {
				what   string
				done   chan struct{}
				killed bool
			}{{"the leader in the release dir", leaderDone, tc.leaderKilled}, {"the member outside it", outsiderDone, tc.outsiderKilled}} {
				if p.killed {
					select {
					case <-p.done:
					case <-time.After(10 * time.Second):
						t.Errorf("%s was not killed", p.what)
					}
					continue
				}
				select {
				case <-p.done:
					t.Errorf("%s was killed", p.what)
				case <-time.After(50 * time.Millisecond):
				}
			}
		})
	}
}
