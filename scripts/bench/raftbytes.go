package main

import (
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/relhq/rel/internal/rollout"
	"github.com/relhq/rel/internal/rollout/rolloutsim"
)

var raftBytesHosts = flag.String("raftbytes-hosts", "1000,2000,5000", "raftbytes suite: the fleet sizes, comma-separated")

// raftBytesBudget is the acceptance figure: a rolling rollout over
// 2,000 hosts writes at most this much to the raft log.
const (
	raftBytesBudgetHosts = 2000
	raftBytesBudget      = 10 << 20
)

// runRaftBytes is the raftbytes suite: the bytes a rolling rollout with
// max-parallel 1 writes to the raft log, by fleet size. The figures are
// exact and the same on every machine (a deterministic simulation); only
// the time it takes depends on the machine.
func runRaftBytes() error {
	var sizes []int
	for _, f := range strings.Split(*raftBytesHosts, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return fmt.Errorf("-raftbytes-hosts %q: want positive numbers, comma-separated", *raftBytesHosts)
		}
		sizes = append(sizes, n)
	}
	fmt.Println("raft bytes written by a rolling rollout (max-parallel 1) of a new release, by fleet size.")
	fmt.Println("Counted: the data of every raft entry the rollout writes (the encoded rel.v1.Command, as the leader hands it to raft.Apply):")
	fmt.Println("its creation, every engine step, and the agents' report batches (each host reports downloading, installing, starting,")
	fmt.Println("verifying and healthy, one batch per phase). Not counted: the setup (agents, app, releases) and raft's own framing.")
	fmt.Println("In-process: the real planner (rollout.Step), engine commit, validation, encoding and FSM, simulated connected agents")
	fmt.Println("and a simulated clock, so the figures are exact and repeatable. \"whole rows\" is the same rollout with every step")
	fmt.Println("carrying the whole rollout row, as the engine wrote steps before deltas.")
	fmt.Printf("%7s %8s %7s | %12s %9s %14s %12s | %14s %14s %8s\n",
		"hosts", "entries", "steps", "written", "per host", "largest entry", "largest step", "whole rows", "largest entry", "x less")
	var prev *rolloutsim.Result
	var growth []string
	for _, n := range sizes {
		began := time.Now()
		r, err := rolloutsim.Rolling(rolloutsim.Config{Hosts: n, MaxParallel: 1})
		if err != nil {
			return fmt.Errorf("%d hosts: %w", n, err)
		}
		if r.FinalState != rollout.StateSucceeded {
			return fmt.Errorf("%d hosts: the rollout ended %s", n, r.FinalState)
		}
		fmt.Printf("%7s %8s %7s | %12s %9s %14s %12s | %14s %14s %7.0fx   (%s)\n",
			commas(n), commas(r.Entries), commas(r.Steps), size(r.Bytes), commas(int(r.Bytes/int64(n)))+" B", size(int64(r.Largest)), size(int64(r.LargestStep)),
			size(r.WholeBytes()), size(int64(r.WholeLargest())), float64(r.WholeBytes())/float64(r.Bytes), time.Since(began).Round(100*time.Millisecond))
		if prev != nil {
			growth = append(growth, fmt.Sprintf("%s→%s hosts (x%.1f): written x%.2f (whole rows x%.2f)", commas(prev.Hosts), commas(n),
				float64(n)/float64(prev.Hosts), float64(r.Bytes)/float64(prev.Bytes), float64(r.WholeBytes())/float64(prev.WholeBytes())))
		}
		if n == raftBytesBudgetHosts {
			verdict := "met"
			if r.Bytes > raftBytesBudget {
				verdict = "NOT MET"
			}
			defer fmt.Printf("acceptance (issue 8, finding 7): at most %s for %s hosts: %s written, %s\n",
				size(raftBytesBudget), commas(n), size(r.Bytes), verdict)
			addRow(row{name: fmt.Sprintf("raft bytes of a rolling rollout (max-parallel 1) over %s hosts", commas(n)),
				figure: fmt.Sprintf("%s (%s B per host; largest step %s); exact, in-process", size(r.Bytes), commas(int(r.Bytes/int64(n))), size(int64(r.LargestStep))),
				goal:   "≤ " + size(raftBytesBudget) + ", linear", verdict: atMost(float64(r.Bytes)/(1<<20), float64(raftBytesBudget)/(1<<20), "MiB")})
		}
		prev = &r
	}
	if len(growth) > 0 {
		fmt.Println("growth: " + strings.Join(growth, "; "))
	}
	return nil
}

// size prints a byte count in B, KiB, MiB or GiB.
func size(b int64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.2f MiB", float64(b)/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%d B", b)
}

func init() { register(suite{name: "raftbytes", run: runRaftBytes, inProcess: true}) }
