package server_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/relhq/rel/internal/auth"
	"github.com/relhq/rel/internal/server"
	"github.com/relhq/rel/internal/testcluster"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// stormAgent is one simulated agent of a crowd: its own certificate and
// connection, opened in two steps (stream, then hello) so that a test can
// have a thousand hellos arrive at once.
type stormAgent struct {
	id     string
	conn   *grpc.ClientConn
	stream relv1.AgentService_ConnectClient
	cancel context.CancelFunc
	// said is set once hello ran: from then on done receives the
	// stream's end.
	said bool
	done chan error
}

func newStormAgents(t *testing.T, c *testcluster.Cluster, n *testcluster.Node, prefix string, count int) []*stormAgent {
	t.Helper()
	agents := make([]*stormAgent, count)
	for i := range agents {
		id := fmt.Sprintf("%s-%04d", prefix, i+1)
		aid := testcluster.AgentID(id)
		conn, err := grpc.NewClient(n.GRPCAddr(), c.PKI.DialOptions(t, &aid)...)
		if err != nil {
			t.Fatal(err)
		}
		agents[i] = &stormAgent{id: id, conn: conn, done: make(chan error, 1)}
	}
	t.Cleanup(func() {
		for _, a := range agents {
			if a.cancel != nil {
				a.cancel()
				if a.said {
					<-a.done
				}
			}
			a.conn.Close()
		}
	})
	return agents
}

// open opens the stream (the TLS handshake), sending nothing yet.
func (a *stormAgent) open() error {
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := relv1.NewAgentServiceClient(a.conn).Connect(ctx)
	if err != nil {
		cancel()
		return fmt.Errorf("%s: open: %w", a.id, err)
	}
	a.stream, a.cancel = stream, cancel
	return nil
}

// hello says hello and waits for the welcome; then a goroutine drains
// the stream until it ends.
func (a *stormAgent) hello() error {
	a.said = true
	err := a.stream.Send(&relv1.AgentMessage{Kind: &relv1.AgentMessage_Hello{Hello: &relv1.Hello{
		NodeId: a.id, Labels: map[string]string{"env": "prod"}, AgentVersion: "test",
	}}})
	if err == nil {
		var msg *relv1.ServerMessage
		if msg, err = a.stream.Recv(); err == nil && msg.GetWelcome() == nil {
			err = fmt.Errorf("first message %v, want welcome", msg)
		}
	}
	if err != nil {
		a.done <- err
		return fmt.Errorf("%s: %w", a.id, err)
	}
	go func() {
		for {
			if _, err := a.stream.Recv(); err != nil {
				a.done <- err
				return
			}
		}
	}()
	return nil
}

// all runs f for every agent at once and returns the errors.
func all(agents []*stormAgent, f func(*stormAgent) error) []error {
	return upTo(len(agents), agents, f)
}

// openAll opens the agents' streams a few at a time: the handshakes are
// not what is measured, and a thousand at once on a loaded machine time
// out.
func openAll(agents []*stormAgent) []error {
	return upTo(16, agents, (*stormAgent).open)
}

// upTo runs f for every agent, at most n at a time, and returns the errors.
func upTo(n int, agents []*stormAgent, f func(*stormAgent) error) []error {
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
		sem  = make(chan struct{}, n)
	)
	for _, a := range agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := f(a); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errs
}

// sessionCounters scrapes n's rel_agent_session_entries_total and
// rel_agent_sessions_batched_total.
func sessionCounters(t *testing.T, c *testcluster.Cluster, n *testcluster.Node) (entries, items int) {
	t.Helper()
	resp, err := httpClient(t, c, testcluster.ClientID("prom", auth.Viewer)).Get("https://" + n.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	entries, items = -1, -1
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		f, err := strconv.ParseFloat(v, 64)
		switch {
		case err != nil:
		case name == "rel_agent_session_entries_total":
			entries = int(f)
		case name == "rel_agent_sessions_batched_total":
			items = int(f)
		}
	}
	if entries < 0 || items < 0 {
		t.Fatalf("metrics of %s lack the agent session counters", n.ID)
	}
	return entries, items
}

// countAgents counts the agents with prefix the leader's replica records
// connected and down.
func countAgents(t *testing.T, leader *testcluster.Node, prefix string) (connected, down int) {
	t.Helper()
	agents, _, err := leader.Server().Store().Agents(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range agents {
		if !strings.HasPrefix(a.GetId(), prefix+"-") {
			continue
		}
		if a.GetConnected() {
			connected++
		} else {
			down++
		}
	}
	return connected, down
}

// TestAgentConnectStormBatched (issue 10): 1,000 agents say hello at once
// to one server (a follower: its entries are forwarded to the leader) and
// are all recorded connected in far fewer than 1,000 raft entries; then
// they all say goodbye and are all recorded down in few entries too.
func TestAgentConnectStormBatched(t *testing.T) {
	const count = 1000
	c := testcluster.New(t, 3, testcluster.Options{Configure: func(i int, cfg *server.Config) {
		cfg.HeartbeatInterval = time.Second
		cfg.AgentGrace = 2 * time.Minute // no heartbeats needed while the test runs
		// Opening 1,000 TLS streams before the first hello takes more
		// than the default 10 s on a loaded 2-core machine.
		cfg.HelloTimeout = 2 * time.Minute
	}})
	leader := c.WaitLeader()
	f := c.Followers()[0]
	agents := newStormAgents(t, c, f, "storm", count)
	if errs := openAll(agents); len(errs) > 0 {
		t.Fatalf("%d streams did not open, first: %v", len(errs), errs[0])
	}
	entries0, items0 := sessionCounters(t, c, f)
	index0 := leader.Server().Raft().LastIndex()
	start := time.Now()
	if errs := all(agents, (*stormAgent).hello); len(errs) > 0 {
		t.Fatalf("%d agents got no welcome, first: %v", len(errs), errs[0])
	}
	took := time.Since(start)
	// Every welcome follows its AgentUp's commit and the follower's own
	// replica applying it; the leader's replica has it too once applied.
	testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
		up, _ := countAgents(t, leader, "storm")
		return up == count, fmt.Sprintf("%d of %d agents recorded connected on the leader", up, count)
	})
	entries1, items1 := sessionCounters(t, c, f)
	raftEntries := leader.Server().Raft().LastIndex() - index0
	t.Logf("%d agents connected in %s: %d agent_sessions entries (%d raft entries in all) for %d connects",
		count, took.Round(time.Millisecond), entries1-entries0, raftEntries, items1-items0)
	if items1-items0 != count {
		t.Errorf("%d connects committed, want %d", items1-items0, count)
	}
	if e := entries1 - entries0; e < 1 || e > count/10 {
		t.Errorf("%d entries for %d connects: want at most %d (batched)", e, count, count/10)
	}
	if raftEntries > count/10+10 {
		t.Errorf("the log grew by %d entries for %d connects", raftEntries, count)
	}

	// All say goodbye at once: recorded down at once, in few entries.
	start = time.Now()
	errs := all(agents, func(a *stormAgent) error {
		if err := a.stream.Send(&relv1.AgentMessage{Kind: &relv1.AgentMessage_Goodbye{Goodbye: &relv1.Goodbye{Reason: "test over"}}}); err != nil {
			return fmt.Errorf("%s: goodbye: %w", a.id, err)
		}
		return nil
	})
	if len(errs) > 0 {
		t.Fatalf("%d goodbyes not sent, first: %v", len(errs), errs[0])
	}
	testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
		_, down := countAgents(t, leader, "storm")
		return down == count, fmt.Sprintf("%d of %d agents recorded down on the leader", down, count)
	})
	// The follower counts an entry once its forward is answered, which
	// waits for its own replica to apply it: after the leader's replica
	// may already show the agents down.
	var entries2, items2 int
	testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
		entries2, items2 = sessionCounters(t, c, f)
		return items2-items1 >= count, fmt.Sprintf("%d of %d disconnects counted by the follower", items2-items1, count)
	})
	t.Logf("%d agents recorded down in %s: %d agent_sessions entries for %d disconnects",
		count, time.Since(start).Round(time.Millisecond), entries2-entries1, items2-items1)
	if items2-items1 != count {
		t.Errorf("%d disconnects committed, want %d", items2-items1, count)
	}
	if e := entries2 - entries1; e < 1 || e > count/10 {
		t.Errorf("%d entries for %d disconnects: want at most %d (batched)", e, count, count/10)
	}
	agentsRows, _, _ := leader.Server().Store().Agents(nil)
	for _, a := range agentsRows {
		if a.GetDisconnectReason() != "agent stopped: test over" {
			t.Fatalf("%s recorded down with reason %q", a.GetId(), a.GetDisconnectReason())
		}
	}
}

// TestRevokedAgentRefusedInItsBatch (issue 10): an agent revoked between
// its stream's handshake and its connect's commit is refused by the FSM
// on its own, while the other agents of the same agent_sessions entry
// connect. The first entry is held (a test hook) until every other hello
// is queued, so that the revoked agent is in the middle of the next one.
func TestRevokedAgentRefusedInItsBatch(t *testing.T) {
	const count = 50
	const victim = "rv-0025"
	c := testcluster.New(t, 3, testcluster.Options{Configure: func(i int, cfg *server.Config) {
		cfg.HeartbeatInterval = time.Second
		cfg.AgentGrace = 2 * time.Minute
	}})
	leader := c.WaitLeader()
	f := c.Followers()[0]
	agents := newStormAgents(t, c, f, "rv", count)
	if errs := openAll(agents); len(errs) > 0 {
		t.Fatalf("%d streams did not open, first: %v", len(errs), errs[0])
	}
	var (
		mu       sync.Mutex
		calls    int
		firstIn  = make(chan struct{})
		hookErr  error
		batchLen int
	)
	f.Server().SetAgentSessionsHook(func(ups []string) {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		if n == 1 {
			// Hold the first entry until every other hello is queued.
			close(firstIn)
			deadline := time.Now().Add(30 * time.Second)
			for f.Server().QueuedAgentSessions() < count-len(ups) {
				if time.Now().After(deadline) {
					mu.Lock()
					hookErr = fmt.Errorf("only %d hellos queued behind the first entry", f.Server().QueuedAgentSessions())
					mu.Unlock()
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
			return
		}
		if !slices.Contains(ups, victim) {
			return
		}
		// The revocation commits before this entry is proposed.
		cmd := &relv1.Command{StampedUnixNano: time.Now().UnixNano(), Kind: &relv1.Command_RevokeAgent{RevokeAgent: &relv1.RevokeAgent{
			Revocation: &relv1.AgentRevocation{AgentId: victim, RevokedUnixNano: time.Now().UnixNano(), RevokedBy: "test", Reason: "stolen"}}}}
		b, _ := proto.Marshal(cmd)
		err := leader.Server().Raft().Apply(b, 5*time.Second).Error()
		mu.Lock()
		hookErr, batchLen = err, len(ups)
		mu.Unlock()
	})
	defer f.Server().SetAgentSessionsHook(nil)

	var others []*stormAgent
	var target *stormAgent
	for _, a := range agents {
		if a.id == victim {
			target = a
		} else {
			others = append(others, a)
		}
	}
	victimErr := make(chan error, 1)
	go func() {
		<-firstIn
		victimErr <- target.hello()
	}()
	if errs := all(others, (*stormAgent).hello); len(errs) > 0 {
		t.Fatalf("%d agents got no welcome, first: %v", len(errs), errs[0])
	}
	err := <-victimErr
	mu.Lock()
	defer mu.Unlock()
	if hookErr != nil {
		t.Fatal(hookErr)
	}
	if batchLen < 2 {
		t.Fatalf("the revoked agent's entry held %d connects, want it among others", batchLen)
	}
	// The FSM's refusal (not the revocation watcher's): it says what to do.
	if status.Code(errors.Unwrap(err)) != codes.Unauthenticated || !strings.Contains(err.Error(), "enrol it again with a new join token") {
		t.Fatalf("revoked agent: %v, want Unauthenticated from the FSM", err)
	}
	t.Logf("revoked agent refused in an entry of %d connects: %v", batchLen, err)
	testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
		up, _ := countAgents(t, leader, "rv")
		return up == count-1, fmt.Sprintf("%d of %d other agents recorded connected", up, count-1)
	})
	if _, err := leader.Server().Store().Agent(nil, victim); err == nil {
		t.Fatalf("the revoked agent was recorded")
	}
}

// TestQueuedConnectWithdrawnWhenStreamCloses: a stream that closes while
// its connect still waits in the queue (behind an entry in flight) takes
// it back: nothing is written for an agent that is gone, so no session
// is recorded that no server holds.
func TestQueuedConnectWithdrawnWhenStreamCloses(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{Configure: func(i int, cfg *server.Config) {
		cfg.HeartbeatInterval = time.Second
		cfg.AgentGrace = 2 * time.Minute
	}})
	n := c.Nodes[0]
	agents := newStormAgents(t, c, n, "wd", 2)
	for _, a := range agents {
		if err := a.open(); err != nil {
			t.Fatal(err)
		}
	}
	firstIn, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	n.Server().SetAgentSessionsHook(func([]string) {
		once.Do(func() {
			close(firstIn)
			<-release
		})
	})
	defer n.Server().SetAgentSessionsHook(nil)
	entries0, items0 := sessionCounters(t, c, n)
	first := make(chan error, 1)
	go func() { first <- agents[0].hello() }()
	<-firstIn // wd-0001's entry is in flight, held
	gone := agents[1]
	if err := gone.stream.Send(&relv1.AgentMessage{Kind: &relv1.AgentMessage_Hello{Hello: &relv1.Hello{NodeId: gone.id, AgentVersion: "test"}}}); err != nil {
		t.Fatal(err)
	}
	testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
		q := n.Server().QueuedAgentSessions()
		return q == 1, fmt.Sprintf("%d connects queued, want wd-0002's", q)
	})
	gone.cancel()
	testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
		q := n.Server().QueuedAgentSessions()
		return q == 0, fmt.Sprintf("%d connects still queued after the stream closed", q)
	})
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	gone.said = true
	go func() {
		_, err := gone.stream.Recv()
		gone.done <- err
	}()
	entries1, items1 := sessionCounters(t, c, n)
	if entries1-entries0 != 1 || items1-items0 != 1 {
		t.Fatalf("%d entries with %d connects, want wd-0001's alone", entries1-entries0, items1-items0)
	}
	if _, err := n.Server().Store().Agent(nil, gone.id); err == nil {
		t.Fatal("the agent whose stream closed while queued was recorded")
	}
	if a, err := n.Server().Store().Agent(nil, agents[0].id); err != nil || !a.GetConnected() {
		t.Fatalf("wd-0001: %v %v", a, err)
	}
}
