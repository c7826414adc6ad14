package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

var (
	idleWindow = flag.Duration("idle-window", 60*time.Second, "idle suite: how long each server's CPU time is read over")
	idleRuns   = flag.Int("idle-runs", 3, "idle suite: clusters to measure (the median is reported)")
)

// runIdle measures the CPU an idle cluster burns: three TLS servers on
// loopback, no agents, no rollouts, each server's user+system time from
// /proc/PID/stat over -idle-window, on -idle-runs fresh clusters. With
// -pprof DIR the servers run with --enable-debug and the last cluster's
// CPU profiles over the window are saved as idle-<role>-<server>.pprof.
func runIdle() error {
	var leaders, followers []float64
	for run := 1; run <= *idleRuns; run++ {
		l, f, err := idleOnce(run)
		if err != nil {
			return err
		}
		leaders = append(leaders, l)
		followers = append(followers, f...)
	}
	ml, mf := medianF(leaders), medianF(followers)
	worst := max(ml, mf)
	addRow(row{name: fmt.Sprintf("idle cluster: CPU of each of 3 servers over %s (no agents, no rollouts)", idleWindow.Round(time.Second)),
		figure: fmt.Sprintf("leader %.2f %% of a core (median of %d, %s), followers %.2f %% (median of %d, %s)",
			ml, len(leaders), rangePct(leaders), mf, len(followers), rangePct(followers)),
		goal:    "≤ 1 % of a core each",
		verdict: atMost(worst, 1, "%"),
	})
	return nil
}

// idleOnce starts a cluster, lets it settle, and returns the leader's and
// the followers' CPU over the window in percent of one core.
func idleOnce(run int) (float64, []float64, error) {
	work, err := os.MkdirTemp("", "rel-bench-idle-")
	if err != nil {
		return 0, nil, err
	}
	defer os.RemoveAll(work)
	var extra []string
	if *pprofDir != "" {
		extra = append(extra, "--enable-debug")
	}
	c, err := startCluster(work, tlsFlavor(), extra...)
	defer c.stop()
	if err != nil {
		return 0, nil, err
	}
	// Joins, promotions and the first registrations are writes; the
	// figure is for a cluster with nothing to do.
	time.Sleep(5 * time.Second)
	leader := c.leader()
	if leader == nil {
		return 0, nil, fmt.Errorf("no leader")
	}
	if *pprofDir != "" && run == *idleRuns {
		if err := os.MkdirAll(*pprofDir, 0o755); err != nil {
			return 0, nil, err
		}
		for _, s := range c.servers {
			role := "follower"
			if s == leader {
				role = "leader"
			}
			go func() {
				path := fmt.Sprintf("/debug/pprof/profile?seconds=%d", int(idleWindow.Seconds()))
				if err := c.fetch(s, path, filepath.Join(*pprofDir, "idle-"+role+"-"+s.id+".pprof"), *idleWindow+30*time.Second); err != nil {
					fmt.Fprintf(os.Stderr, "bench: profile of %s: %v\n", s.id, err)
				}
			}()
		}
	}
	before := make([]time.Duration, len(c.servers))
	for i, s := range c.servers {
		before[i] = cpuTime(s.cmd.Process.Pid)
	}
	start := time.Now()
	time.Sleep(*idleWindow)
	elapsed := time.Since(start)
	var l float64
	var f []float64
	var parts []string
	for i, s := range c.servers {
		pct := float64(cpuTime(s.cmd.Process.Pid)-before[i]) / float64(elapsed) * 100
		role := "follower"
		if s == leader {
			role = "leader"
			l = pct
		} else {
			f = append(f, pct)
		}
		parts = append(parts, fmt.Sprintf("%s (%s) %.2f %%", s.id, role, pct))
	}
	if c.leader() != leader {
		return 0, nil, fmt.Errorf("run %d: leadership moved during the idle window", run)
	}
	fmt.Printf("[idle %d/%d] CPU over %s: %s\n", run, *idleRuns, elapsed.Round(time.Second), strings.Join(parts, ", "))
	if *pprofDir != "" && run == *idleRuns {
		// The profiles end with the window; give the handlers time to answer.
		time.Sleep(3 * time.Second)
	}
	return l, f, nil
}

func rangePct(fs []float64) string {
	s := append([]float64(nil), fs...)
	sort.Float64s(s)
	return fmt.Sprintf("%.2f-%.2f", s[0], s[len(s)-1])
}

func init() { register(suite{name: "idle", run: runIdle}) }
