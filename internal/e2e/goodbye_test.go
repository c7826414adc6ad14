package e2e

import (
	"encoding/json"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestAgentStopIsRecordedAtOnce (issue 9): a rel-agent stopped with SIGTERM
// is recorded disconnected at once, not after --agent-grace (30 s here).
func TestAgentStopIsRecordedAtOnce(t *testing.T) {
	ps := startCluster(t, "--heartbeat-interval", "300ms", "--agent-grace", "30s")
	all := addrs(ps)
	a := &agentProc{id: "web-1", dataDir: t.TempDir(), root: t.TempDir(), labels: "env=prod"}
	a.start(t, all)
	waitFor(t, 15*time.Second, "web-1 connected", func() bool {
		r := relctl(t, all, "agent", "list", "-o", "json")
		return r.code == 0 && strings.Count(r.stdout, `"connected": true`) == 1
	})
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-a.done:
	case <-time.After(10 * time.Second):
		t.Fatal("rel-agent did not stop within 10 s of SIGTERM")
	}
	var reason string
	waitFor(t, 5*time.Second, "web-1 recorded disconnected (grace 30 s)", func() bool {
		var ag struct {
			Connected        bool   `json:"connected"`
			DisconnectReason string `json:"disconnect_reason"`
		}
		if err := json.Unmarshal([]byte(mustRelctl(t, all, "agent", "show", "web-1", "-o", "json")), &ag); err != nil {
			t.Fatal(err)
		}
		reason = ag.DisconnectReason
		return !ag.Connected
	})
	if !strings.Contains(reason, "agent stopped") {
		t.Fatalf("disconnect reason %q, want it to say the agent stopped", reason)
	}
}
