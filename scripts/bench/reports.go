// reports: agent reports committed through raft per second, at capacity.
// 3 rel-server processes and -reports-agents simulated agents (real
// sessions); -reports-senders report batchers, each holding a share of the
// agents, send ReportBatch commands back to back to the leader's
// ClusterService.Apply with a server certificate, the path a follower's
// batcher takes (decode, validate, raft on disk, FSM on every replica).
package main

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/relhq/rel/internal/pki"
	"github.com/relhq/rel/internal/transport"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

var (
	reportsAgents  = flag.Int("reports-agents", 2000, "reports suite: simulated agents (a batch holds at most one report per agent and app, as the server's batcher keeps the latest)")
	reportsSenders = flag.Int("reports-senders", 3, "reports suite: batchers sending at once, each with its share of the agents (a real cluster has one per server)")
	reportsWindow  = flag.Duration("reports-window", 5*time.Second, "reports suite: length of each timed run (3 runs)")
)

// reportsGoal is the issue's goal: reports committed per second.
const reportsGoal = 100_000

// reportsRun is one timed window.
type reportsRun struct {
	rate             float64 // reports committed per second
	entries, reports int
	bytes            int64
}

func runReports() error {
	if *reportsAgents < 1 || *reportsSenders < 1 || *reportsWindow < time.Second {
		return fmt.Errorf("-reports-agents %d, -reports-senders %d, -reports-window %s: want at least 1 agent and 1 sender, and 1s", *reportsAgents, *reportsSenders, *reportsWindow)
	}
	work, err := os.MkdirTemp("", "rel-bench-reports-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	c, err := startCluster(work, tlsFlavor(), "--enable-debug")
	defer c.stop()
	if err != nil {
		return err
	}
	ctl, err := c.client(nil)
	if err != nil {
		return err
	}
	ctx := context.Background()
	n := *reportsAgents
	enrol, err := c.agentArgs(ctx, n)
	if err != nil {
		return err
	}
	if _, err := c.startAgent("agents.log", append([]string{"--simulate", strconv.Itoa(n), "--node-id", "sim",
		"--servers", c.addrs(), "--labels", "env=bench", "--log-level", "warn"}, enrol...)...); err != nil {
		return err
	}
	if _, err := ctl.CreateApp(ctx, &relv1.CreateAppRequest{Name: "noop"}); err != nil {
		return err
	}
	if _, err := ctl.CreateEnvironment(ctx, &relv1.CreateEnvironmentRequest{Name: "bench", Selector: map[string]string{"env": "bench"}}); err != nil {
		return err
	}
	if err := waitConnected(ctx, ctl, "bench", n, 4*time.Minute); err != nil {
		return err
	}
	// One real rollout: the reports name it, as agents' reports do, and
	// every host has an app row and history before the timed runs.
	sum := sha256.Sum256([]byte("reports"))
	if _, err := ctl.CreateRelease(ctx, &relv1.CreateReleaseRequest{App: "noop", Version: "1.0.0",
		ArtifactUrl: "https://artifacts.invalid/noop-1.0.0.tar.gz", Sha256: hex.EncodeToString(sum[:])}); err != nil {
		return err
	}
	start, err := ctl.StartRollout(ctx, &relv1.StartRolloutRequest{App: "noop", Version: "1.0.0", Environment: "bench"})
	if err != nil {
		return err
	}
	rolloutID := start.GetRollout().GetId()
	if st, err := waitRollout(ctx, ctl, rolloutID); err != nil {
		return err
	} else if st.GetRollout().GetState() != "succeeded" {
		return fmt.Errorf("rollout %s ended %s", rolloutID, st.GetRollout().GetState())
	}
	// The agents' sessions: a report of another session is dropped by
	// the FSM, which would make the figure cheap and false.
	var sessions [][2]string
	for tok := ""; ; {
		resp, err := ctl.ListAgents(ctx, &relv1.ListAgentsRequest{Environment: "bench", PageSize: 1000, PageToken: tok})
		if err != nil {
			return err
		}
		for _, a := range resp.GetAgents() {
			sessions = append(sessions, [2]string{a.GetAgent().GetId(), a.GetAgent().GetSessionId()})
		}
		if tok = resp.GetNextPageToken(); tok == "" {
			break
		}
	}
	// connect dials the leader as a follower: the leader answers members
	// only, and this is what a follower's batcher presents when it
	// forwards its batch.
	var (
		leader, follower *server
		cl               relv1.ClusterServiceClient
	)
	connect := func() error {
		deadline := time.Now().Add(30 * time.Second)
		for leader = c.leader(); leader == nil; leader = c.leader() {
			if time.Now().After(deadline) {
				return fmt.Errorf("no leader after 30s")
			}
			time.Sleep(100 * time.Millisecond)
		}
		for _, s := range c.servers {
			if s != leader {
				follower = s
			}
		}
		conn, err := dialAsServer(c, leader, follower.id)
		if err != nil {
			return err
		}
		c.conns = append(c.conns, conn) // closed by c.stop
		cl = relv1.NewClusterServiceClient(conn)
		return nil
	}
	if err := connect(); err != nil {
		return err
	}
	fmt.Printf("%d senders (batchers) of %d agents' reports each, to the leader %s's ClusterService.Apply as %s, back to back; %d runs of %s\n",
		*reportsSenders, (len(sessions)+*reportsSenders-1) / *reportsSenders, leader.id, follower.id, 3, *reportsWindow)
	var runs []reportsRun
	for i, disturbed := 0, 0; i < 3; {
		var prof sync.WaitGroup
		profFile := filepath.Join(work, "leader.cpu.pprof")
		if i == 1 {
			// Where the leader's time goes, over the middle run.
			prof.Go(func() {
				if err := c.fetch(leader, fmt.Sprintf("/debug/pprof/profile?seconds=%d", int(reportsWindow.Seconds())), profFile, *reportsWindow+30*time.Second); err != nil {
					fmt.Fprintf(os.Stderr, "bench: profile of %s: %v\n", leader.id, err)
				}
			})
		}
		r, err := reportsWindowRun(ctx, cl, sessions, rolloutID, i+3*disturbed)
		prof.Wait()
		if status.Code(err) == codes.Unavailable && disturbed < 2 {
			// Leadership moved (an overloaded machine): that run
			// measured an election; run it again on the new leader.
			disturbed++
			fmt.Printf("run %d disturbed (%v); again on the new leader\n", i+1, err)
			if err := connect(); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("run %d: apply a report batch: %w", i+1, err)
		}
		runs = append(runs, r)
		fmt.Printf("run %d: %s reports in %s entries (%s reports, %s per entry) in %s: %s reports/s\n", i+1, commas(r.reports), commas(r.entries),
			commas(r.reports/max(r.entries, 1)), size(r.bytes/int64(max(r.entries, 1))), *reportsWindow, commas(int(r.rate)))
		if i == 1 {
			fmt.Println("leader CPU profile over this run (go tool pprof -top), top 5 by own time, then top 15 by cumulative time:")
			fmt.Println(pprofTop(profFile, 5))
			fmt.Println(pprofTop(profFile, 15, "-cum"))
		}
		i++
	}
	var rates []float64
	var entries, reports int
	var bytes int64
	for _, r := range runs {
		rates = append(rates, r.rate)
		entries, reports, bytes = entries+r.entries, reports+r.reports, bytes+r.bytes
	}
	lo, hi := rates[0], rates[0]
	for _, r := range rates {
		lo, hi = min(lo, r), max(hi, r)
	}
	m := medianF(rates)
	addRow(row{name: "reports: agent reports committed through raft per second",
		figure: fmt.Sprintf("%s/s (median of 3 runs of %s, %s-%s); %d agents, %d batchers sending ReportBatch back to back to the leader (a follower's batcher's path), %s reports and %s per entry",
			commas(int(m)), *reportsWindow, commas(int(lo)), commas(int(hi)), len(sessions), *reportsSenders, commas(reports/max(entries, 1)), size(bytes/int64(max(entries, 1)))),
		goal:    fmt.Sprintf("≥ %s/s", commas(reportsGoal)),
		verdict: atLeast(m, reportsGoal, "reports/s")})
	return nil
}

// reportsWindowRun runs the senders for -reports-window and counts the
// reports committed. Each sender's batch holds one report per agent of
// its share; the reports move every agent through a deploy's phases,
// downloading to healthy, a new version each time round, so the FSM
// updates app rows and opens and closes history rows as in rollouts.
func reportsWindowRun(ctx context.Context, cl relv1.ClusterServiceClient, sessions [][2]string, rolloutID string, run int) (reportsRun, error) {
	phases := []string{"downloading", "installing", "starting", "verifying", "healthy"}
	var (
		entries, reports atomic.Int64
		bytes            atomic.Int64
		failed           atomic.Value
		wg               sync.WaitGroup
	)
	end := time.Now().Add(*reportsWindow)
	began := time.Now()
	for s := range *reportsSenders {
		var share [][2]string
		for i := s; i < len(sessions); i += *reportsSenders {
			share = append(share, sessions[i])
		}
		wg.Go(func() {
			for step := 0; time.Now().Before(end); step++ {
				phase, k := phases[step%len(phases)], step/len(phases)
				version, prev := fmt.Sprintf("1.%d.%d", run+1, k+1), fmt.Sprintf("1.%d.%d", run+1, k)
				now := time.Now().UnixNano()
				batch := make([]*relv1.AgentReport, 0, len(share))
				for _, a := range share {
					batch = append(batch, &relv1.AgentReport{AgentId: a[0], SessionId: a[1], Report: &relv1.AppReport{
						App: "noop", Version: version, PreviousVersion: prev, Phase: phase, AtUnixNano: now, RolloutId: rolloutID, Generation: uint64(k + 2)}})
				}
				b, err := proto.Marshal(&relv1.Command{StampedUnixNano: now, Kind: &relv1.Command_ReportBatch{ReportBatch: &relv1.ReportBatch{Reports: batch}}})
				if err != nil {
					failed.CompareAndSwap(nil, err)
					return
				}
				actx, cancel := context.WithTimeout(ctx, 30*time.Second)
				_, err = cl.Apply(actx, &relv1.ApplyRequest{Command: b})
				cancel()
				if err != nil {
					failed.CompareAndSwap(nil, err)
					return
				}
				if time.Now().After(end) {
					return // committed after the window: not counted
				}
				entries.Add(1)
				reports.Add(int64(len(batch)))
				bytes.Add(int64(len(b)))
			}
		})
	}
	wg.Wait()
	if e, _ := failed.Load().(error); e != nil {
		return reportsRun{}, e
	}
	took := min(time.Since(began), *reportsWindow)
	return reportsRun{rate: float64(reports.Load()) / took.Seconds(), entries: int(entries.Load()), reports: int(reports.Load()), bytes: bytes.Load()}, nil
}

// dialAsServer connects to server s with a new certificate of member id:
// ClusterService answers only the cluster's servers.
func dialAsServer(c *cluster, s *server, id string) (*grpc.ClientConn, error) {
	p := c.sec.pki
	certPEM, keyPEM, err := p.ca.Issue(pki.Leaf{Identity: pki.Identity{Kind: pki.KindServer, ID: id}}, time.Now())
	if err != nil {
		return nil, err
	}
	certs, err := pki.ParseCerts(certPEM)
	if err != nil {
		return nil, err
	}
	key, err := pki.ParseKey(keyPEM)
	if err != nil {
		return nil, err
	}
	b, err := transport.NewBundle([]*x509.Certificate{p.ca.Cert}, certs, key)
	if err != nil {
		return nil, err
	}
	return grpc.NewClient(s.grpc, transport.Security{M: transport.StaticMaterial(b)}.GRPCDialOptions()...)
}

// pprofTop is the top n functions of a CPU profile by own time (or by
// cumulative time, with "-cum"), as go tool pprof prints them.
func pprofTop(file string, n int, flags ...string) string {
	args := append([]string{"tool", "pprof", "-top", "-nodecount", strconv.Itoa(n)}, flags...)
	out, err := exec.Command("go", append(args, file)...).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("(no profile: %v: %s)", err, strings.TrimSpace(string(out)))
	}
	return strings.TrimSpace(string(out))
}

func init() { register(suite{name: "reports", run: runReports}) }
