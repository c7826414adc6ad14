// streams: a fresh 3-server cluster, each server's RSS before any agent
// connects, then N idle simulated agents (no rollout), and each server's
// RSS again once they are connected and settled: (RSS with − RSS before) ÷
// the streams it holds, per server; the median of the servers (and runs).

package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

var (
	streamsAgents = flag.Int("streams-agents", 20000, "streams suite: idle agents across the 3 servers")
	streamsRuns   = flag.Int("streams-runs", 1, "streams suite: clusters measured (each server of each is one figure; the median is reported)")
)

// streamsGoal is issue 10's bound on a server's RSS per idle stream, KiB.
const streamsGoal = 40

// rssSamples is how many RSS readings (interval apart) make one figure: the
// median, so a GC in the middle of one reading moves nothing.
const rssSamples = 3

func runStreams() error {
	if *streamsAgents < 1 || *streamsRuns < 1 {
		return fmt.Errorf("-streams-agents %d, -streams-runs %d: at least 1 each", *streamsAgents, *streamsRuns)
	}
	n := *streamsAgents
	var perStream []float64
	var detail []string
	for run := 1; run <= *streamsRuns; run++ {
		ps, d, err := streamsRun(n)
		if err != nil {
			return fmt.Errorf("run %d: %w", run, err)
		}
		perStream = append(perStream, ps...)
		detail = append(detail, d)
	}
	med := medianF(perStream)
	addRow(row{
		name: fmt.Sprintf("streams: %s idle agent streams across 3 servers, RSS per stream", commas(n)),
		figure: fmt.Sprintf("%.1f KiB (median of %d servers × %d cluster(s), %s KiB; a server's RSS with its streams − before any agent, ÷ its streams, which includes every agent's replicated rows: %s)",
			med, len(perStream), *streamsRuns, rangeF("%.1f", perStream), strings.Join(detail, "; ")),
		goal:    fmt.Sprintf("≤ %d KiB per stream", streamsGoal),
		verdict: atMost(med, streamsGoal, "KiB"),
	})
	return nil
}

// streamsRun measures one fresh cluster: KiB per stream of each server, and
// the line saying how each was found.
func streamsRun(n int) ([]float64, string, error) {
	work, err := os.MkdirTemp("", "rel-bench-streams-")
	if err != nil {
		return nil, "", err
	}
	defer os.RemoveAll(work)
	var debug []string
	if *pprofDir != "" {
		debug = []string{"--enable-debug"}
	}
	c, err := startCluster(work, tlsFlavor(), debug...)
	defer c.stop()
	if err != nil {
		return nil, "", err
	}
	ctx := context.Background()
	ctl, err := c.clientOf(c.servers[0])
	if err != nil {
		return nil, "", err
	}
	if err := setupBench(ctx, ctl); err != nil {
		return nil, "", err
	}
	before := c.medianRSS(time.Second)
	began := time.Now()
	f, _, err := startFleet(ctx, c, ctl, n, c.addrs(), allServers)
	if err != nil {
		return nil, "", err
	}
	fmt.Printf("streams: %s agents connected in %s\n", commas(n), time.Since(began).Round(time.Millisecond))
	// Let the connect's garbage be collected and the heartbeats settle
	// into their steady state.
	time.Sleep(5 * time.Second)
	with := c.medianRSS(5 * time.Second)
	by, err := f.waitOn(ctx, c, ctl, n, allServers)
	if err != nil {
		return nil, "", err
	}
	var ps []float64
	var parts []string
	for i, s := range c.servers {
		if by[s.id] == 0 {
			parts = append(parts, s.id+" held no stream")
			continue
		}
		k := float64(with[i]-before[i]) / float64(by[s.id])
		ps = append(ps, k)
		parts = append(parts, fmt.Sprintf("%s %d→%d MiB ÷ %s = %.1f", s.id, before[i]/1024, with[i]/1024, commas(by[s.id]), k))
	}
	line := strings.Join(parts, ", ")
	fmt.Println("streams: " + line)
	if *pprofDir != "" {
		c.heapProfiles("streams")
		for _, s := range c.servers {
			if err := c.fetch(s, "/debug/pprof/goroutine?debug=1", filepath.Join(*pprofDir, "streams-"+s.id+".goroutines.txt"), 30*time.Second); err != nil {
				fmt.Fprintf(os.Stderr, "bench: goroutines of %s: %v\n", s.id, err)
			}
		}
	}
	// Where the RSS goes: the Go runtime's own account of each server.
	for _, s := range c.servers {
		m := c.metrics(s, "go_goroutines", "go_memstats_stack_inuse_bytes", "go_memstats_heap_inuse_bytes", "go_memstats_heap_idle_bytes", "go_memstats_heap_released_bytes", "go_memstats_sys_bytes")
		fmt.Printf("streams: %s runtime: %.0f goroutines, stacks %.0f MiB, heap in use %.0f MiB, heap idle %.0f MiB (released %.0f MiB), sys %.0f MiB\n", s.id,
			m["go_goroutines"], m["go_memstats_stack_inuse_bytes"]/(1<<20), m["go_memstats_heap_inuse_bytes"]/(1<<20),
			m["go_memstats_heap_idle_bytes"]/(1<<20), m["go_memstats_heap_released_bytes"]/(1<<20), m["go_memstats_sys_bytes"]/(1<<20))
	}
	if len(ps) == 0 {
		return nil, "", fmt.Errorf("no server held a stream: %s", line)
	}
	return ps, line, nil
}

// medianRSS is each server's median RSS (KiB) over rssSamples readings,
// interval apart.
func (c *cluster) medianRSS(interval time.Duration) []int {
	samples := make([][]int, len(c.servers))
	for k := range rssSamples {
		if k > 0 {
			time.Sleep(interval)
		}
		for i, s := range c.servers {
			samples[i] = append(samples[i], rssKiB(s.cmd.Process.Pid))
		}
	}
	out := make([]int, len(c.servers))
	for i := range samples {
		out[i] = medianI(samples[i])
	}
	return out
}

func init() { register(suite{name: "streams", run: runStreams}) }
