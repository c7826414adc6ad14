package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// partStatus is what the partition test reads of `relctl rollout status
// -o json`.
type partStatus struct {
	Rollout struct {
		ID           string `json:"id"`
		Kind         string `json:"kind"`
		State        string `json:"state"`
		Reason       string `json:"reason"`
		RollbackOf   string `json:"rollback_of"`
		RolledBackBy string `json:"rolled_back_by"`
	} `json:"rollout"`
	Hosts []partHost `json:"hosts"`
}

type partHost struct {
	AgentID       string `json:"agent_id"`
	State         string `json:"state"`
	Phase         string `json:"phase"`
	Version       string `json:"version"`
	TargetVersion string `json:"target_version"`
	Connected     bool   `json:"connected"`
	Reason        string `json:"reason"`
}

func (s partStatus) host(id string) (partHost, bool) {
	for _, h := range s.Hosts {
		if h.AgentID == id {
			return h, true
		}
	}
	return partHost{}, false
}

// partRollout reads a rollout's status; ok is false when relctl failed
// (a server that just lost its leader, say), and the caller polls again.
func partRollout(t *testing.T, addr, id string) (partStatus, bool) {
	t.Helper()
	var st partStatus
	r := relctl(t, addr, "rollout", "status", id, "-o", "json", "--timeout", "3s")
	if r.code != 0 {
		return st, false
	}
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatalf("rollout status json: %v\n%s", err, r.stdout)
	}
	return st, true
}

// connectedAgents lists the agents addr records as connected; ok is false
// when relctl failed.
func connectedAgents(t *testing.T, addr string) (map[string]bool, bool) {
	t.Helper()
	r := relctl(t, addr, "agent", "list", "-o", "json", "--timeout", "3s")
	if r.code != 0 {
		return nil, false
	}
	var out struct {
		Agents []struct {
			ID        string `json:"id"`
			Connected bool   `json:"connected"`
		} `json:"agents"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("agent list json: %v\n%s", err, r.stdout)
	}
	up := map[string]bool{}
	for _, a := range out.Agents {
		up[a.ID] = a.Connected
	}
	return up, true
}

// releaseWatch polls agents' disks every 5 ms from its start until stop,
// and keeps whatever check finds.
type releaseWatch struct {
	stopc chan struct{}
	done  chan struct{}
	mu    sync.Mutex
	seen  []string
	polls int
}

func watchAgents(agents []*agentProc, check func(a *agentProc) []string) *releaseWatch {
	w := &releaseWatch{stopc: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			for _, a := range agents {
				if found := check(a); len(found) > 0 {
					w.mu.Lock()
					w.seen = append(w.seen, fmt.Sprintf("%s at %s: %s", a.id, time.Now().Format("15:04:05.000"), strings.Join(found, ", ")))
					w.mu.Unlock()
				}
			}
			w.mu.Lock()
			w.polls++
			w.mu.Unlock()
			select {
			case <-w.stopc:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	return w
}

// traceOf finds any trace of a release on an agent's disk: its directory
// (complete or being extracted), its artifact being downloaded, or current
// pointing at it.
func traceOf(version, digest string) func(a *agentProc) []string {
	return func(a *agentProc) []string {
		var found []string
		if _, err := os.Lstat(filepath.Join(a.root, "hello", "releases", version)); err == nil {
			found = append(found, "releases/"+version)
		}
		tmps, _ := filepath.Glob(filepath.Join(a.root, "hello", "releases", ".tmp-"+version+"-*"))
		found = append(found, tmps...)
		parts, _ := filepath.Glob(filepath.Join(a.dataDir, "downloads", digest+"*"))
		found = append(found, parts...)
		return append(found, runs(version)(a)...)
	}
}

// runs finds current pointing at a release.
func runs(version string) func(a *agentProc) []string {
	return func(a *agentProc) []string {
		if target, err := os.Readlink(filepath.Join(a.root, "hello", "current")); err == nil && filepath.Base(target) == version {
			return []string{"current -> " + target}
		}
		return nil
	}
}

// stop ends the watch and returns what it saw and how often it looked.
func (w *releaseWatch) stop() ([]string, int) {
	select {
	case <-w.stopc:
	default:
		close(w.stopc)
	}
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.seen, w.polls
}

// churn creates n apps through addr, workers at a time (each a raft entry).
func churn(addr string, n, workers int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	jobs := make(chan int)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				cmd := exec.CommandContext(ctx, filepath.Join(binDir, "relctl"), "app", "create", fmt.Sprintf("churn-%03d", i))
				cmd.Env = []string{"REL_ADDR=" + addr, "REL_CA_FILE=" + caFile, "REL_CERT_FILE=" + adminCert, "REL_KEY_FILE=" + adminKey}
				if out, err := cmd.CombinedOutput(); err != nil {
					errs <- fmt.Errorf("relctl app create churn-%03d: %v: %s", i, err, out)
				}
			}
		}()
	}
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	close(errs)
	return <-errs // nil when none failed
}

// TestPartitionRollback is issue 8 (findings 1 and 2) with real processes
// in network namespaces. Three servers, one namespace each, with two
// agents beside each (each agent knows only its own server). A follower is
// cut off from its peers while its agents stay connected to it. A release whose health check
// fails is rolled out to every host with --auto-rollback right after the
// cut:
//
//   - the majority's hosts fail, the rollout fails and rolls back by
//     itself; the rollback covers every host the rollout dispatched, the
//     cut-off ones too, whose desired state goes back at once;
//   - the rollback stays running while the cut-off hosts are away, and its
//     status shows them not back;
//   - once the partition heals, every agent is recorded connected again
//     within a few heartbeat intervals (finding 2), the rollback succeeds
//     and the rollout is rolled_back;
//   - no cut-off host ever downloaded, unpacked, ran or reported the
//     rolled-back release: their disks are polled from the rollout's start
//     until the cut-off server has applied everything.
func TestPartitionRollback(t *testing.T) {
	lab := newNetLab(t, 3)
	start := time.Now()
	const heartbeat, grace = 300 * time.Millisecond, 2 * time.Second
	flags := []string{"--heartbeat-interval", heartbeat.String(), "--agent-grace", grace.String()}
	ps := make([]*proc, len(lab.nodes))
	for i, nd := range lab.nodes {
		id := fmt.Sprintf("s%d", i+1)
		ps[i] = &proc{id: id, grpc: nd.ip + ":7400", raft: nd.ip + ":7401", http: nd.ip + ":7480", dir: t.TempDir(), node: nd}
		ps[i].cert, ps[i].key = serverCert(t, t.TempDir(), id)
	}
	var agents []*agentProc
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, p := range ps {
			if p.log != nil {
				t.Logf("--- log of server %s (%s):\n%s", p.id, p.node.ns, tail(p.log.String(), 6000))
			}
		}
		for _, a := range agents {
			t.Logf("--- log of agent %s:\n%s", a.id, tail(a.log.String(), 3000))
		}
	})

	ps[0].start(t, append([]string{"--bootstrap"}, flags...)...)
	waitLeader(t, ps[:1], "s1 to lead")
	ps[1].start(t, append([]string{"--join", ps[0].grpc}, flags...)...)
	ps[2].start(t, append([]string{"--join", ps[0].grpc}, flags...)...)
	waitFor(t, 20*time.Second, "three voters", func() bool {
		r := relctl(t, ps[0].grpc, "cluster", "members", "-o", "json")
		return r.code == 0 && strings.Count(r.stdout, `"follower"`) == 2 && strings.Count(r.stdout, `"Voter"`) == 3
	})
	all := addrs(ps)

	// Two agents beside each server, each knowing only its server's
	// address: whichever server is cut off, two hosts go with it.
	var byServer = map[*proc][]*agentProc{}
	for _, srv := range ps {
		for _, x := range []string{"a", "b"} {
			a := &agentProc{id: srv.id + "-" + x, dataDir: t.TempDir(), root: t.TempDir(), labels: "env=prod", node: srv.node}
			a.start(t, srv.grpc)
			agents = append(agents, a)
			byServer[srv] = append(byServer[srv], a)
		}
	}
	allConnected := func(addr string) bool {
		up, ok := connectedAgents(t, addr)
		if !ok {
			return false
		}
		for _, a := range agents {
			if !up[a.id] {
				return false
			}
		}
		return true
	}
	waitFor(t, 20*time.Second, "six connected agents", func() bool { return allConnected(all) })

	// 1.0.0 everywhere.
	work := t.TempDir()
	mustRelctl(t, all, "app", "create", "hello")
	mustRelctl(t, all, "env", "create", "prod", "--selector", "env=prod")
	good, _ := bundleWith(t, work, "1.0.0", 0, "./hello check", "20s")
	mustRelctl(t, all, "release", "create", "hello", "1.0.0", "--artifact", good)
	first := startRollout(t, all, "hello@1.0.0", "prod")
	if st := waitRollout(t, all, first, 60*time.Second); st.Rollout.State != "succeeded" {
		t.Fatalf("rollout of 1.0.0: %+v", st)
	}
	for _, a := range agents {
		if v := currentVersion(t, a.root); v != "1.0.0" {
			t.Fatalf("%s runs %q after the rollout of 1.0.0", a.id, v)
		}
	}
	// 2.0.0's health check always fails. The cut-off server has the
	// release before the cut: only the rollout's and the rollback's
	// entries reach it after the heal.
	bad, badDigest := bundleWith(t, work, "2.0.0", 0, "false", "4s")
	mustRelctl(t, all, "release", "create", "hello", "2.0.0", "--artifact", bad)

	// The server to cut off is a follower, chosen now (a busy machine may
	// have moved the leadership since the cluster formed); the other two
	// keep a majority.
	leader := leaderOf(ps)
	if leader == nil {
		t.Fatal("no leader before the cut")
	}
	var cutSrv *proc
	var majority []*proc
	for _, p := range slices.Backward(ps) {
		if p != leader && cutSrv == nil {
			cutSrv = p
		} else {
			majority = append(majority, p)
		}
	}
	maj := addrs(majority)
	cutAgents := byServer[cutSrv]
	var majAgents []*agentProc
	for _, p := range majority {
		majAgents = append(majAgents, byServer[p]...)
	}
	lh, _ := leader.health()
	waitFor(t, 10*time.Second, cutSrv.id+" to apply everything before the cut", func() bool {
		h, code := cutSrv.health()
		return code == 200 && h.AppliedIndex >= lh.AppliedIndex
	})
	t.Logf("leader %s; cutting off follower %s (%s) with %s and %s", leader.id, cutSrv.id, cutSrv.node.ip, cutAgents[0].id, cutAgents[1].id)

	sessions := map[string]string{}
	for _, a := range cutAgents {
		sessions[a.id] = showAgent(t, maj, a.id).SessionID
	}
	// Every cut-off agent's disk is watched from before the cut to the end.
	cutWatch := watchAgents(cutAgents, traceOf("2.0.0", badDigest))
	defer cutWatch.stop()

	lab.cut(cutSrv.node)
	cutAt := time.Now()
	t.Logf("%s cut off at %s", cutSrv.id, time.Since(start).Round(time.Millisecond))

	out := mustRelctl(t, maj, "rollout", "start", "hello@2.0.0", "--env", "prod", "--strategy", "all-at-once",
		"--auto-rollback", "--max-failures", "0", "-o", "json")
	var started struct {
		ID    string `json:"id"`
		Hosts []struct {
			AgentID string `json:"agent_id"`
			State   string `json:"state"`
		} `json:"hosts"`
	}
	if err := json.Unmarshal([]byte(out), &started); err != nil || started.ID == "" {
		t.Fatalf("rollout start output: %v\n%s", err, out)
	}
	targeted := map[string]string{}
	for _, h := range started.Hosts {
		targeted[h.AgentID] = h.State
	}
	for _, a := range agents {
		if targeted[a.id] != "dispatched" {
			t.Fatalf("the rollout of 2.0.0, started %s after the cut, did not dispatch %s (hosts: %+v): the test needs the cut-off agents still recorded connected when it starts",
				time.Since(cutAt).Round(time.Millisecond), a.id, started.Hosts)
		}
	}
	orig := started.ID

	// Entries between the rollout's dispatch and its rollback, more than
	// raft sends in one AppendEntries (64): the cut-off server, catching
	// up after the heal, applies the dispatch well before the rollback. A
	// server that streamed each state as it applied it would hand its
	// agents 2.0.0 in between.
	churnStart := time.Now()
	if err := churn(maj, 100, 8); err != nil {
		t.Fatal(err)
	}
	if st, ok := partRollout(t, maj, orig); ok && st.Rollout.State != "running" {
		t.Logf("note: rollout %s was already %s when the 100 writes were done (%s): they are not all between its dispatch and its rollback",
			orig, st.Rollout.State, time.Since(churnStart).Round(time.Millisecond))
	} else {
		t.Logf("100 writes between the dispatch and the rollback, in %s", time.Since(churnStart).Round(time.Millisecond))
	}

	// The majority's hosts fail their health check: the rollout fails and
	// rolls back by itself.
	var st partStatus
	waitFor(t, 30*time.Second, "rollout "+orig+" to fail and roll back", func() bool {
		var ok bool
		st, ok = partRollout(t, maj, orig)
		return ok && st.Rollout.State != "running"
	})
	if st.Rollout.State != "rolling_back" || st.Rollout.RolledBackBy == "" {
		t.Fatalf("rollout %s ended %s (%s), rolled back by %q; want rolling_back while the cut-off hosts are away", orig, st.Rollout.State, st.Rollout.Reason, st.Rollout.RolledBackBy)
	}
	rb := st.Rollout.RolledBackBy
	t.Logf("rollout %s failed (%s); rollback %s", orig, st.Rollout.Reason, rb)

	// The rollback covers every host the rollout dispatched, the cut-off
	// ones included, each going back to 1.0.0 at once.
	rbSt, ok := partRollout(t, maj, rb)
	if !ok {
		t.Fatalf("rollout status %s failed", rb)
	}
	for _, a := range agents {
		h, found := rbSt.host(a.id)
		if !found {
			t.Fatalf("rollback %s does not cover %s: hosts %+v", rb, a.id, rbSt.Hosts)
		}
		if h.TargetVersion != "1.0.0" {
			t.Fatalf("rollback %s takes %s to %q, want 1.0.0", rb, a.id, h.TargetVersion)
		}
	}
	for _, a := range cutAgents {
		if h, _ := rbSt.host(a.id); h.State != "dispatched" {
			t.Fatalf("rollback %s: cut-off host %s is %s, want dispatched (its desired state back to 1.0.0 at once): %+v", rb, a.id, h.State, rbSt.Hosts)
		}
	}

	// The majority's hosts are back; the cut-off ones are recorded down
	// (their server has not answered the leader for three grace
	// periods) and the rollback waits for them.
	waitFor(t, 30*time.Second, "the majority's hosts back on 1.0.0 in the rollback", func() bool {
		s, ok := partRollout(t, maj, rb)
		if !ok {
			return false
		}
		for _, a := range majAgents {
			if h, _ := s.host(a.id); h.State != "healthy" {
				return false
			}
		}
		rbSt = s
		return true
	})
	waitFor(t, 5*grace, "the cut-off agents to be recorded down", func() bool {
		up, ok := connectedAgents(t, maj)
		return ok && !up[cutAgents[0].id] && !up[cutAgents[1].id]
	})
	t.Logf("cut-off agents recorded down %s after the cut", time.Since(cutAt).Round(time.Millisecond))
	rbSt, ok = partRollout(t, maj, rb)
	if !ok {
		t.Fatalf("rollout status %s failed", rb)
	}
	if rbSt.Rollout.State != "running" {
		t.Fatalf("rollback %s is %s (%s) while two of its hosts are away: it must wait for them", rb, rbSt.Rollout.State, rbSt.Rollout.Reason)
	}
	for _, a := range cutAgents {
		h, _ := rbSt.host(a.id)
		if h.State == "healthy" || h.Connected {
			t.Fatalf("rollback %s shows the cut-off host %s as %s (connected %v) while it is away", rb, a.id, h.State, h.Connected)
		}
	}
	if o, ok := partRollout(t, maj, orig); !ok || o.Rollout.State != "rolling_back" {
		t.Fatalf("rollout %s is %q while its rollback runs", orig, o.Rollout.State)
	}
	for _, a := range majAgents {
		if v := currentVersion(t, a.root); v != "1.0.0" {
			t.Fatalf("%s runs %q after the rollback, want 1.0.0", a.id, v)
		}
	}
	// The rollback says which hosts it waits for, and a plan names them
	// as what blocks a new rollout.
	waitFor(t, 10*time.Second, "the rollback to say which hosts it waits for", func() bool {
		st, ok := partRollout(t, maj, rb)
		return ok && strings.Contains(st.Rollout.Reason, "waiting for 2 host(s) to come back")
	})
	if p := relctl(t, maj, "rollout", "plan", "hello@1.0.0", "--env", "prod"); p.code == 0 ||
		!strings.Contains(p.stderr, rb) || !strings.Contains(p.stderr, "waiting for 2 host(s) to come back") {
		t.Fatalf("plan while the rollback waits: exit %d\n%s%s", p.code, p.stdout, p.stderr)
	}
	// From here on no host at all may run 2.0.0.
	healWatch := watchAgents(agents, runs("2.0.0"))
	defer healWatch.stop()

	// Heal. The cut-off server hears from the leader again, and then,
	// within a heartbeat or so, records its live streams connected
	// again: the same sessions, not new connections.
	lab.heal(cutSrv.node)
	healAt := time.Now()
	// Health checks with a short timeout: while the link comes back, a
	// check may hang until it expires, and this one times the rejoin.
	quick := healthClient()
	quick.Timeout = 250 * time.Millisecond
	waitFor(t, 15*time.Second, cutSrv.id+" to hear from a leader again", func() bool {
		resp, err := quick.Get("https://" + cutSrv.http + "/v1/health")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var h health
		return resp.StatusCode == 200 && json.NewDecoder(resp.Body).Decode(&h) == nil && h.LeaderID != ""
	})
	rejoined := time.Since(healAt)
	// Timed with the rollback's status, which shows whether each host's
	// agent is recorded connected and costs a few milliseconds (agent
	// list asks every server for its live streams, up to a second).
	var lastPoll time.Duration
	waitFor(t, 15*time.Second, "the cluster to record the cut-off agents connected", func() bool {
		p0 := time.Now()
		s, ok := partRollout(t, maj, rb)
		lastPoll = time.Since(p0)
		if !ok {
			return false
		}
		for _, a := range cutAgents {
			if h, _ := s.host(a.id); !h.Connected {
				return false
			}
		}
		return true
	})
	recorded := time.Since(healAt)
	waitFor(t, 10*time.Second, "every server to record every agent connected", func() bool {
		for _, p := range ps {
			if !allConnected(p.grpc) {
				return false
			}
		}
		return true
	})
	t.Logf("heal: %s heard from the leader after %s; its agents recorded connected %s after the heal (%s after the rejoin, last poll took %s); on every server after %s",
		cutSrv.id, rejoined.Round(time.Millisecond), recorded.Round(time.Millisecond), (recorded - rejoined).Round(time.Millisecond), lastPoll.Round(time.Millisecond), time.Since(healAt).Round(time.Millisecond))
	for _, line := range strings.Split(cutSrv.log.String(), "\n") {
		if strings.Contains(line, "recording it connected again") || strings.Contains(line, "could not record a live agent") {
			t.Logf("%s (healed at %s): %s", cutSrv.id, healAt.UTC().Format("15:04:05.000"), line)
		}
	}
	// Finding 2: within a heartbeat interval (up to 1.5 with jitter) of
	// the server being back, plus the commit; the poll that saw it adds
	// its own duration.
	if limit := 4*heartbeat + lastPoll; recorded-rejoined > limit {
		t.Errorf("agents streaming to %s were recorded connected %s after it rejoined, want within %s", cutSrv.id, (recorded - rejoined).Round(time.Millisecond), limit)
	}
	for _, a := range cutAgents {
		if got := showAgent(t, maj, a.id); got.SessionID != sessions[a.id] || got.ServerID != cutSrv.id {
			t.Errorf("%s is on session %s of %s after the heal, was %s of %s: its live stream should have been recorded again, not replaced",
				a.id, got.SessionID, got.ServerID, sessions[a.id], cutSrv.id)
		}
	}

	// The rollback ends only now, and it succeeds.
	waitFor(t, 30*time.Second, "rollback "+rb+" to end", func() bool {
		var ok bool
		rbSt, ok = partRollout(t, maj, rb)
		return ok && rbSt.Rollout.State != "running"
	})
	if rbSt.Rollout.State != "succeeded" {
		t.Fatalf("rollback %s ended %s (%s): %+v", rb, rbSt.Rollout.State, rbSt.Rollout.Reason, rbSt.Hosts)
	}
	t.Logf("rollback %s succeeded %s after the heal", rb, time.Since(healAt).Round(time.Millisecond))
	if o, ok := partRollout(t, maj, orig); !ok || o.Rollout.State != "rolled_back" {
		t.Fatalf("rollout %s is %q after its rollback succeeded, want rolled_back", orig, o.Rollout.State)
	}

	// Until the cut-off server has applied everything the leader had,
	// whatever it would stream to its agents is streamed: keep watching
	// until then.
	lh, _ = leaderOf(ps).health()
	waitFor(t, 15*time.Second, cutSrv.id+" to catch up", func() bool {
		h, code := cutSrv.health()
		return code == 200 && h.AppliedIndex >= lh.AppliedIndex
	})
	seen, polls := cutWatch.stop()
	if len(seen) > 0 {
		t.Errorf("a cut-off host had 2.0.0 on disk (%d polls):\n%s", polls, strings.Join(seen, "\n"))
	}
	seen, polls = healWatch.stop()
	if len(seen) > 0 {
		t.Errorf("a host ran 2.0.0 after the partition healed (%d polls):\n%s", polls, strings.Join(seen, "\n"))
	}
	named := regexp.MustCompile(`=2\.0\.0([^0-9.]|$)`)
	for _, a := range cutAgents {
		for _, line := range strings.Split(a.log.String(), "\n") {
			if named.MatchString(line) {
				t.Errorf("cut-off agent %s acted on or reported 2.0.0: %s", a.id, line)
			}
		}
		for _, app := range showAgent(t, maj, a.id).Apps {
			if app.Version != "1.0.0" {
				t.Errorf("cut-off agent %s reports %s %s (%s)", a.id, app.App, app.Version, app.Phase)
			}
		}
	}
	for _, a := range agents {
		if v := currentVersion(t, a.root); v != "1.0.0" {
			t.Errorf("%s runs %q at the end, want 1.0.0", a.id, v)
		}
	}
	t.Logf("partition scenario done in %s", time.Since(start).Round(time.Millisecond))
}
