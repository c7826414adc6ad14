package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// bgRelctl is a relctl process left running (events --follow).
type bgRelctl struct {
	cmd        *exec.Cmd
	out, errbf *syncBuffer
	done       chan error
}

// startRelctl starts relctl against addr as the tests' admin and leaves it
// running; it is killed at the end of the test if still running.
func startRelctl(t *testing.T, addr string, args ...string) *bgRelctl {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "relctl"), args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "REL_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "REL_ADDR="+addr, "REL_CA_FILE="+caFile, "REL_CERT_FILE="+adminCert, "REL_KEY_FILE="+adminKey)
	b := &bgRelctl{cmd: cmd, out: &syncBuffer{}, errbf: &syncBuffer{}, done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = b.out, b.errbf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start relctl: %v", err)
	}
	go func() { b.done <- cmd.Wait() }()
	t.Cleanup(func() { b.kill() })
	return b
}

func (b *bgRelctl) kill() {
	if b.cmd.ProcessState == nil {
		_ = b.cmd.Process.Signal(syscall.SIGKILL)
		<-b.done
	}
}

// followedEvent is the part of an event line these tests compare.
type followedEvent struct {
	Seq  uint64 `json:"seq"`
	Type string `json:"type"`
}

// lines parses the complete JSON lines of out (a killed process may
// leave a partial last line, which is ignored).
func followedLines(t *testing.T, out string) []followedEvent {
	t.Helper()
	if i := strings.LastIndexByte(out, '\n'); i >= 0 {
		out = out[:i+1]
	} else {
		return nil
	}
	var evs []followedEvent
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var e followedEvent
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("events --follow printed a line that is not JSON: %q: %v", sc.Text(), err)
		}
		evs = append(evs, e)
	}
	return evs
}

func lastSeq(evs []followedEvent) uint64 {
	if len(evs) == 0 {
		return 0
	}
	return evs[len(evs)-1].Seq
}

// TestEventsFollowResumeAcrossLeaderKill: three real servers, two real
// agents, rollouts running. A first "relctl events --follow -o json" is
// SIGKILLed; a second resumes with --since the last seq the first
// printed, and keeps following (reconnecting by itself to the other
// servers of --addr) while the leader is SIGKILLed mid-rollout. The union
// of both outputs holds every seq exactly once, without gaps, and is the
// same as a final "relctl events -o json".
func TestEventsFollowResumeAcrossLeaderKill(t *testing.T) {
	ps := startCluster(t, "--heartbeat-interval", "300ms", "--agent-grace", "3s")
	all := addrs(ps)
	for i := 0; i < 2; i++ {
		a := &agentProc{id: fmt.Sprintf("ev-%d", i+1), dataDir: t.TempDir(), root: t.TempDir(), labels: "env=prod"}
		a.start(t, all)
	}
	waitFor(t, 15*time.Second, "two connected agents", func() bool {
		r := relctl(t, all, "agent", "list", "-o", "json")
		return r.code == 0 && strings.Count(r.stdout, `"connected": true`) == 2
	})
	mustRelctl(t, all, "app", "create", "hello")
	mustRelctl(t, all, "env", "create", "prod", "--selector", "env=prod")
	work := t.TempDir()
	deploy := func(v string) {
		t.Helper()
		path, _ := bundle(t, work, v, 0)
		mustRelctl(t, all, "release", "create", "hello", v, "--artifact", path)
		id := startRollout(t, all, "hello@"+v, "prod")
		if st := waitRollout(t, all, id, 90*time.Second); st.Rollout.State != "succeeded" {
			t.Fatalf("rollout of %s: %+v", v, st.Rollout)
		}
	}

	// The first follower sees the first rollout, and is killed.
	first := startRelctl(t, all, "events", "--follow", "-o", "json")
	deploy("1.0.0")
	waitFor(t, 20*time.Second, "the first follower to print the rollout's end", func() bool {
		for _, e := range followedLines(t, first.out.String()) {
			if e.Type == "rollout.succeeded" {
				return true
			}
		}
		return false
	})
	// A rollout is running when it dies.
	path, _ := bundle(t, work, "1.1.0", 0)
	mustRelctl(t, all, "release", "create", "hello", "1.1.0", "--artifact", path)
	// Two waves with a bake between them: it runs for a while.
	var ro struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal([]byte(mustRelctl(t, all, "rollout", "start", "hello@1.1.0", "--env", "prod", "--strategy", "rolling", "--waves", "1,100%", "--bake", "4s", "-o", "json")), &ro); err != nil || ro.ID == "" {
		t.Fatalf("rollout start: %v", err)
	}
	running := ro.ID
	first.kill()
	a := followedLines(t, first.out.String())
	if len(a) == 0 {
		t.Fatalf("the first follower printed nothing; stderr: %s", first.errbf)
	}

	// The second resumes after the first's last seq, starting on the
	// leader (s1 bootstrapped and leads), which is then SIGKILLed while
	// the rollout runs.
	leader := leaderOf(ps)
	if leader == nil {
		t.Fatal("no leader")
	}
	order := []string{leader.grpc}
	for _, p := range ps {
		if p != leader {
			order = append(order, p.grpc)
		}
	}
	second := startRelctl(t, strings.Join(order, ","), "events", "--follow", "-o", "json", "--since", fmt.Sprint(lastSeq(a)))
	waitFor(t, 30*time.Second, "the second follower to print the running rollout's progress", func() bool {
		return len(followedLines(t, second.out.String())) > 0
	})
	if err := leader.signal(t, syscall.SIGKILL); err == nil {
		t.Fatalf("%s exited cleanly after SIGKILL", leader.id)
	}
	var rest []*proc
	for _, p := range ps {
		if p != leader {
			rest = append(rest, p)
		}
	}
	waitLeader(t, rest, "a new leader")
	alive := addrs(rest)
	if st := waitRollout(t, alive, running, 90*time.Second); st.Rollout.State != "succeeded" {
		t.Fatalf("rollout across the leader kill: %+v", st.Rollout)
	}
	all = alive
	deploy("1.2.0")

	// Every event the cluster holds, from a live server.
	var list struct {
		Events []followedEvent `json:"events"`
	}
	out := mustRelctl(t, alive, "events", "-o", "json", "--consistent")
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("events -o json: %v\n%s", err, out)
	}
	want := list.Events
	waitFor(t, 30*time.Second, "the second follower to catch up with the list", func() bool {
		return lastSeq(followedLines(t, second.out.String())) >= lastSeq(want)
	})
	second.kill()
	b := followedLines(t, second.out.String())
	if !strings.Contains(second.errbf.String(), "reconnecting after seq") {
		t.Errorf("the second follower never reconnected (its server was killed); stderr: %s", second.errbf)
	}

	union := append(append([]followedEvent{}, a...), b...)
	if len(union) != len(want) {
		t.Errorf("the followers printed %d events, the list has %d", len(union), len(want))
	}
	seen := map[uint64]int{}
	for i, e := range union {
		seen[e.Seq]++
		if e.Seq != uint64(i+1) {
			t.Fatalf("event %d of the union has seq %d (first printed %d, up to seq %d; second %d): a gap or a repeat", i, e.Seq, len(a), lastSeq(a), len(b))
		}
		if i < len(want) && (want[i].Seq != e.Seq || want[i].Type != e.Type) {
			t.Fatalf("event %d: followed %+v, listed %+v", i, e, want[i])
		}
	}
	types := map[string]int{}
	for _, e := range want {
		types[e.Type]++
	}
	for _, typ := range []string{"release.created", "rollout.started", "rollout.succeeded", "release.promoted", "agent.joined"} {
		if types[typ] == 0 {
			t.Errorf("no %s event in %v", typ, types)
		}
	}
	t.Logf("%d events: first follower %d (to seq %d), second %d; types %v", len(want), len(a), lastSeq(a), len(b), types)
}
