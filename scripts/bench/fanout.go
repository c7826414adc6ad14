// fanout: per fleet size, a fresh 3-server cluster and that many simulated
// agents; a warm-up, then timed all-at-once rollouts of a no-op release,
// from StartRollout until a blocking GetRollout sees them succeeded; then
// each server's RSS over the agents whose stream it holds.

package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

var (
	fanoutAgents   = flag.String("fanout-agents", "10000,25000", "fanout suite: the fleet sizes, comma-separated (a fresh cluster each)")
	fanoutRollouts = flag.Int("fanout-rollouts", 3, "fanout suite: timed rollouts per size, after one warm-up (the median is reported)")
)

// fanoutRSSGoal is issue 10's bound on a server's RSS per agent, in KiB.
const fanoutRSSGoal = 20

// fanoutRolloutWait bounds one rollout.
const fanoutRolloutWait = 3 * time.Minute

// fanoutGoal is issue 10's bound on the rollout's time for n agents: 1 s
// up to 10,000 agents, 3 s up to 25,000, none beyond.
func fanoutGoal(n int) (time.Duration, bool) {
	switch {
	case n <= 10000:
		return time.Second, true
	case n <= 25000:
		return 3 * time.Second, true
	}
	return 0, false
}

func runFanout() error {
	var sizes []int
	for _, f := range strings.Split(*fanoutAgents, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return fmt.Errorf("-fanout-agents %q: want positive numbers, comma-separated", *fanoutAgents)
		}
		sizes = append(sizes, n)
	}
	if *fanoutRollouts < 1 {
		return fmt.Errorf("-fanout-rollouts %d: at least 1", *fanoutRollouts)
	}
	for _, n := range sizes {
		name := fmt.Sprintf("fan-out: %s simulated agents on 3 servers, all-at-once rollout of a no-op release to 100 %% healthy", commas(n))
		goal, hasGoal := fanoutGoal(n)
		goalText := fmt.Sprintf("≤ %g s; server RSS ≤ %d KiB per agent", goal.Seconds(), fanoutRSSGoal)
		if !hasGoal {
			goalText = fmt.Sprintf("none for this size; server RSS ≤ %d KiB per agent", fanoutRSSGoal)
		}
		r, err := fanoutSize(n)
		if err != nil {
			// One size failing (this machine's limits) is a row, not the
			// end of the bench: the next size and suites still run.
			fmt.Printf("fanout %s: %v\n", commas(n), err)
			addRow(row{name: name, figure: "not measured: " + err.Error(), goal: goalText, verdict: "not measured"})
			continue
		}
		med := median(r.times)
		fig := fmt.Sprintf("%s (median of %d, %s-%s, after a warm-up); servers %s MiB RSS, at most %.1f KiB per agent (a server's RSS ÷ the agents whose stream it holds: %s; ÷ all %s agents: at most %.1f KiB); %s agents connected (in stages) in %s",
			secs(med), len(r.times), secsBare(minD(r.times)), secsBare(maxD(r.times)), rangeMiB(r.rss), r.maxKiBPerAgent, r.spread,
			commas(n), float64(slices.Max(r.rss))/float64(n), commas(n), r.connect.Round(time.Second))
		verdicts := []string{atMost(r.maxKiBPerAgent, fanoutRSSGoal, "KiB per agent")}
		if hasGoal {
			verdicts = append([]string{atMost(med.Seconds(), goal.Seconds(), "s")}, verdicts...)
		}
		addRow(row{name: name, figure: fig, goal: goalText, verdict: both(verdicts...)})
	}
	return nil
}

type fanoutRun struct {
	connect        time.Duration
	times          []time.Duration
	rss            []int // KiB, per server
	maxKiBPerAgent float64
	spread         string // "s1 3,301, s2 3,350, s3 3,349"
}

// fanoutSize runs one size on a fresh cluster.
func fanoutSize(n int) (*fanoutRun, error) {
	work, err := os.MkdirTemp("", "rel-bench-fanout-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	c, err := startCluster(work, tlsFlavor())
	defer c.stop()
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	ctl, err := c.clientOf(c.servers[0])
	if err != nil {
		return nil, err
	}
	if err := setupBench(ctx, ctl); err != nil {
		return nil, err
	}
	began := time.Now()
	f, _, err := startFleet(ctx, c, ctl, n, c.addrs(), allServers)
	if err != nil {
		return nil, err
	}
	r := &fanoutRun{connect: time.Since(began)}
	fmt.Printf("fanout: %s agents connected in %s (%d simulator processes, started in turn)\n", commas(n), r.connect.Round(time.Millisecond), len(f.sims))
	for i := range 1 + *fanoutRollouts {
		took, err := noopRollout(ctx, ctl, fmt.Sprintf("1.0.%d", i), n)
		if err != nil {
			return nil, fmt.Errorf("rollout %d: %w", i+1, err)
		}
		if i == 0 {
			fmt.Printf("fanout %s: warm-up rollout in %s (not counted)\n", commas(n), took.Round(time.Millisecond))
			continue
		}
		r.times = append(r.times, took)
		fmt.Printf("fanout %s: rollout %d: 100 %% healthy in %s\n", commas(n), i, took.Round(time.Millisecond))
	}
	// Streams per server after the rollouts: the RSS is read now too.
	by, err := f.waitOn(ctx, c, ctl, n, allServers)
	if err != nil {
		return nil, err
	}
	var spread []string
	for _, s := range c.servers {
		kib := rssKiB(s.cmd.Process.Pid)
		r.rss = append(r.rss, kib)
		streams := by[s.id]
		spread = append(spread, fmt.Sprintf("%s %d MiB ÷ %s", s.id, kib/1024, commas(streams)))
		if streams > 0 {
			r.maxKiBPerAgent = max(r.maxKiBPerAgent, float64(kib)/float64(streams))
		}
	}
	r.spread = strings.Join(spread, ", ")
	fmt.Printf("fanout %s: %s\n", commas(n), r.spread)
	return r, nil
}

// noopRollout creates release version of app noop and times an all-at-once
// rollout of it to environment bench, from StartRollout until it has
// succeeded on its n hosts.
func noopRollout(ctx context.Context, ctl relv1.ControlServiceClient, version string, n int) (time.Duration, error) {
	sum := sha256.Sum256([]byte(version))
	if _, err := ctl.CreateRelease(ctx, &relv1.CreateReleaseRequest{App: "noop", Version: version,
		ArtifactUrl: "https://artifacts.invalid/noop-" + version + ".tar.gz", Sha256: hex.EncodeToString(sum[:])}); err != nil {
		return 0, err
	}
	wctx, cancel := context.WithTimeout(ctx, fanoutRolloutWait)
	defer cancel()
	start := time.Now()
	resp, err := ctl.StartRollout(wctx, &relv1.StartRolloutRequest{App: "noop", Version: version, Environment: "bench"})
	if err != nil {
		return 0, err
	}
	id := resp.GetRollout().GetId()
	st, err := waitRollout(wctx, ctl, id)
	took := time.Since(start)
	if err != nil {
		// Say how far it got: on a loaded machine this is the figure.
		gctx, cancel := context.WithTimeout(ctx, callTimeout)
		defer cancel()
		if g, gerr := ctl.GetRollout(gctx, &relv1.GetRolloutRequest{Id: id}); gerr == nil {
			return 0, fmt.Errorf("not ended after %s (hosts by phase: %v; load average %s): %w", took.Round(time.Second), g.GetStatus().GetTotals(), loadAvg(), err)
		}
		return 0, fmt.Errorf("not ended after %s (load average %s): %w", took.Round(time.Second), loadAvg(), err)
	}
	if st.GetRollout().GetState() != "succeeded" {
		return 0, fmt.Errorf("rollout ended %s: %s", st.GetRollout().GetState(), st.GetRollout().GetReason())
	}
	if h := len(st.GetHosts()); h != n {
		return 0, fmt.Errorf("rollout covered %d hosts, want %d", h, n)
	}
	return took, nil
}

func init() { register(suite{name: "fanout", run: runFanout}) }
