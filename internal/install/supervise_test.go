package install

import (
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
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
