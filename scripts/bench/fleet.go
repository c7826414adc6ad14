// Simulated fleets for the fanout, streams and reconnect suites: N agents
// over `rel-agent --simulate` processes of at most so many agents (each
// holds its own TLS connection: one file descriptor), started at once or
// in stages, and the paged ListAgents' count of connected agents per server.

package main

import (
	"context"
	"flag"
	"fmt"
	"os/exec"
	"strconv"
	"time"

	"google.golang.org/grpc"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

var simPerProcess = flag.Int("sim-per-process", 2000, "fanout, streams and reconnect suites: simulated agents per rel-agent --simulate process at most (each agent holds its own connection: one file descriptor), each process started once the agents of the one before are connected")

// allServers is an on for startFleet and waitOn: any server.
func allServers(string) bool { return true }

// fleetStall is how long a fleet may make no progress while connecting
// before the suite gives up (enrolment is a raft write per agent, so a
// healthy fleet connects hundreds of agents a second).
const fleetStall = 60 * time.Second

// callTimeout bounds one read the fleets' waits make: a server that stops
// answering fails the wait instead of hanging the bench.
const callTimeout = 30 * time.Second

// fleet is the simulator processes of one suite's agents.
type fleet struct {
	n    int
	sims []*exec.Cmd
	logs []string
	// acl reads the join token's uses: a simulator enrols all its agents
	// before any connects, so enrolments are the progress until then.
	acl relv1.ACLServiceClient
}

// startFleet starts n simulated agents labelled env=bench, enrolling with
// one join token, connecting to servers (a comma-separated list), in
// processes of at most -sim-per-process agents, each started once the
// agents of the one before are recorded connected on servers that on
// accepts; it returns the count per server once all are. Staged, because
// thousands of agents dialling loaded servers at once time out in their
// TLS handshakes (5 s) together, retry together, and hardly progress.
func startFleet(ctx context.Context, c *cluster, ctl relv1.ControlServiceClient, n int, servers string, on func(serverID string) bool) (*fleet, map[string]int, error) {
	if *simPerProcess < 1 {
		return nil, nil, fmt.Errorf("-sim-per-process %d: at least 1", *simPerProcess)
	}
	// An enrolment whose answer is lost (a timeout on a loaded machine)
	// spends a use and is tried again: 20,000 agents used up a token of
	// 20,000 uses with 2,000 of them unenrolled. Twice the uses, within
	// the servers' limit of 100,000.
	enrol, err := c.agentArgs(ctx, min(2*n, 100_000))
	if err != nil {
		return nil, nil, err
	}
	conn, err := c.dial(nil)
	if err != nil {
		return nil, nil, err
	}
	f := &fleet{n: n, acl: relv1.NewACLServiceClient(conn)}
	sizes := splitFleet(n, *simPerProcess)
	started := 0
	for i, count := range sizes {
		log := fmt.Sprintf("sim%d.log", i+1)
		cmd, err := c.startAgent(log, append([]string{"--simulate", strconv.Itoa(count), "--node-id", fmt.Sprintf("sim%d", i+1),
			"--servers", servers, "--labels", "env=bench", "--log-level", "warn"}, enrol...)...)
		if err != nil {
			return nil, nil, err
		}
		f.sims = append(f.sims, cmd)
		f.logs = append(f.logs, log)
		started += count
		if i < len(sizes)-1 {
			if _, err := f.waitOn(ctx, c, ctl, started, on); err != nil {
				return nil, nil, err
			}
		}
	}
	by, err := f.waitOn(ctx, c, ctl, n, on)
	return f, by, err
}

// splitFleet is the agents of each simulator process: as few processes as
// hold n agents at per each, as evenly filled as can be.
func splitFleet(n, per int) []int {
	procs := (n + per - 1) / per
	sizes := make([]int, procs)
	for i := range sizes {
		sizes[i] = n / procs
		if i < n%procs {
			sizes[i]++
		}
	}
	return sizes
}

// exited names a simulator that exited (its log kept out of work), or "".
func (f *fleet) exited(work string) string {
	for i, s := range f.sims {
		if s.ProcessState != nil || processExited(s.Process.Pid) {
			return fmt.Sprintf("simulator %d exited (log kept in %s)", i+1, keepLog(work, f.logs[i]))
		}
	}
	return ""
}

// enrolled is how many uses of the cluster's join tokens were spent (0 if
// they cannot be read): the agents enrolled, and enrolments tried again.
func (f *fleet) enrolled(ctx context.Context) int {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := f.acl.ListJoinTokens(ctx, &relv1.ListJoinTokensRequest{})
	if err != nil {
		return 0
	}
	n := 0
	for _, t := range resp.GetTokens() {
		n += int(t.GetUses() - t.GetUsesLeft())
	}
	return n
}

// waitOn waits until want of the fleet's agents are recorded connected
// with their stream on a server that on accepts, and returns the count of
// connected agents per server. It fails when a simulator exits or nothing
// progresses (enrolments, then connections) for fleetStall.
func (f *fleet) waitOn(ctx context.Context, c *cluster, ctl relv1.ControlServiceClient, want int, on func(serverID string) bool) (map[string]int, error) {
	best, since := -1, time.Now()
	for {
		by, err := agentsByServer(ctx, ctl)
		got := 0
		for id, k := range by {
			if on(id) {
				got += k
			}
		}
		if err == nil && got >= want {
			return by, nil
		}
		if p := got + f.enrolled(ctx); p > best {
			best, since = p, time.Now()
		}
		if why := f.exited(c.work); why != "" {
			return nil, fmt.Errorf("%d of %d agents connected: %s", got, want, why)
		}
		if time.Since(since) > fleetStall {
			return nil, fmt.Errorf("%d of %d agents connected (%d enrolments), no progress for %s (load average %s; last error: %v)", got, want, f.enrolled(ctx), fleetStall, loadAvg(), err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// agentsByServer counts the connected agents of environment bench by the
// server recorded as holding their stream, reading every page.
func agentsByServer(ctx context.Context, ctl relv1.ControlServiceClient) (map[string]int, error) {
	by := map[string]int{}
	for tok := ""; ; {
		pctx, cancel := context.WithTimeout(ctx, callTimeout)
		resp, err := ctl.ListAgents(pctx, &relv1.ListAgentsRequest{Environment: "bench", PageSize: 1000, PageToken: tok})
		cancel()
		if err != nil {
			return by, err
		}
		for _, a := range resp.GetAgents() {
			if a.GetAgent().GetConnected() {
				by[a.GetAgent().GetServerId()]++
			}
		}
		if tok = resp.GetNextPageToken(); tok == "" {
			return by, nil
		}
	}
}

// clientOf dials server s itself (c.client dials the first one), taking
// answers of up to 64 MiB: the status of a rollout over 25,000 hosts is
// larger than gRPC's default 4 MiB.
func (c *cluster) clientOf(s *server) (relv1.ControlServiceClient, error) {
	conn, err := grpc.NewClient(s.grpc, append(c.sec.dialOptions(), grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(64<<20)))...)
	if err != nil {
		return nil, err
	}
	c.conns = append(c.conns, conn)
	return relv1.NewControlServiceClient(conn), nil
}

// setupBench creates the app noop and the environment bench (env=bench)
// that the fleets' agents join.
func setupBench(ctx context.Context, ctl relv1.ControlServiceClient) error {
	if _, err := ctl.CreateApp(ctx, &relv1.CreateAppRequest{Name: "noop"}); err != nil {
		return fmt.Errorf("create app: %w", err)
	}
	if _, err := ctl.CreateEnvironment(ctx, &relv1.CreateEnvironmentRequest{Name: "bench", Selector: map[string]string{"env": "bench"}}); err != nil {
		return fmt.Errorf("create environment: %w", err)
	}
	return nil
}

// role is server s's raft role as its /v1/health says ("" if it does not
// answer).
func (c *cluster) role(s *server) string {
	resp, err := c.sec.health.Get(c.healthURL(s))
	if err != nil {
		return ""
	}
	var body struct {
		Role string `json:"role"`
	}
	decodeJSON(resp, &body)
	return body.Role
}

// rangeF is "min-max" of figures with format f, or one figure if they are
// all equal.
func rangeF(f string, xs []float64) string {
	lo, hi := xs[0], xs[0]
	for _, x := range xs {
		lo, hi = min(lo, x), max(hi, x)
	}
	a, b := fmt.Sprintf(f, lo), fmt.Sprintf(f, hi)
	if a == b {
		return a
	}
	return a + "-" + b
}
