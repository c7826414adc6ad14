// idle: a fresh 3-server cluster with no agents and no requests, left to
// settle, then the CPU time (user+system, /proc) each server uses over
// -idle-windows windows of -idle-window, as a percentage of one core; the
// leader's and the followers' medians over the windows.

package main

import (
	"flag"
	"fmt"
	"os"
	"time"
)

var (
	idleWindow  = flag.Duration("idle-window", 60*time.Second, "idle suite: length of one measurement window")
	idleWindows = flag.Int("idle-windows", 3, "idle suite: windows measured (the median is reported)")
	idleSettle  = flag.Duration("idle-settle", 5*time.Second, "idle suite: wait after the cluster is up before the first window")
)

// idleGoal is issue 10's bound on each idle server, in % of a core.
const idleGoal = 1.0

func runIdle() error {
	if *idleWindows < 1 || *idleWindow <= 0 {
		return fmt.Errorf("-idle-windows %d, -idle-window %s: want at least one window of some length", *idleWindows, *idleWindow)
	}
	work, err := os.MkdirTemp("", "rel-bench-idle-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	// With -pprof the servers serve /debug/pprof, and the first window's
	// CPU profiles are saved (the profiler's own cost is in that window's
	// figure; the others are measured without it).
	var extra []string
	if *pprofDir != "" {
		extra = append(extra, "--enable-debug")
	}
	c, err := startCluster(work, tlsFlavor(), extra...)
	defer c.stop()
	if err != nil {
		return err
	}
	// The joins, promotions and registrations of a new cluster are not
	// idleness; a fixed wait, since nothing signals that they are over.
	time.Sleep(*idleSettle)
	leader := c.leader()
	if leader == nil {
		return fmt.Errorf("no leader after the cluster settled")
	}
	// pct[s] holds server s's % of a core in each window.
	pct := map[*server][]float64{}
	for w := range *idleWindows {
		before := map[*server]time.Duration{}
		for _, s := range c.servers {
			before[s] = cpuTime(s.cmd.Process.Pid)
		}
		start := time.Now()
		if w == 0 && *pprofDir != "" {
			c.profile("idle", *idleWindow).Wait()
		} else {
			time.Sleep(*idleWindow)
		}
		took := time.Since(start)
		for _, s := range c.servers {
			p := 100 * (cpuTime(s.cmd.Process.Pid) - before[s]).Seconds() / took.Seconds()
			pct[s] = append(pct[s], p)
		}
		if l := c.leader(); l != leader {
			return fmt.Errorf("window %d: the leader changed from %s to %v in an idle cluster (see the logs in %s)", w+1, leader.id, l, work)
		}
		fmt.Printf("idle window %d (%s): leader %s %.2f %%", w+1, took.Round(time.Second), leader.id, pct[leader][w])
		for _, s := range c.servers {
			if s != leader {
				fmt.Printf(", %s %.2f %%", s.id, pct[s][w])
			}
		}
		fmt.Println(" of a core")
	}
	lm := medianF(pct[leader])
	fig := fmt.Sprintf("leader %.2f %% of a core (%s)", lm, rangeF("%.2f", pct[leader]))
	verdicts := []string{atMost(lm, idleGoal, "% of a core (leader)")}
	for _, s := range c.servers {
		if s == leader {
			continue
		}
		fm := medianF(pct[s])
		fig += fmt.Sprintf(", follower %s %.2f %% (%s)", s.id, fm, rangeF("%.2f", pct[s]))
		verdicts = append(verdicts, atMost(fm, idleGoal, "% of a core ("+s.id+")"))
	}
	fig += fmt.Sprintf("; median of %d windows of %s, after %s to settle; no agents", *idleWindows, *idleWindow, *idleSettle)
	addRow(row{name: "idle cluster: CPU of each of 3 idle servers", figure: fig, goal: fmt.Sprintf("≤ %g %% of a core each", idleGoal), verdict: both(verdicts...)})
	return nil
}

func init() { register(suite{name: "idle", run: runIdle}) }
