// reconnect: N simulated agents all on one server (it starts alone; the
// others join once the agents are connected), made a follower by a SIGSTOP,
// then SIGKILLed: the time until ListAgents shows all N connected on the
// survivors, and their peak CPU in 100 ms samples. A fresh cluster per run.
// Each simulator dials at most agent.DefaultSimConnecting of its agents at
// once: 2,000 hosts in one process share its CPU, and all dialling at once
// they would spend the agents' 5 s connect timeout queueing for it, which
// 2,000 real hosts, each with its own CPU, do not.

package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/relhq/rel/internal/agent"
)

var (
	reconnectAgents = flag.Int("reconnect-agents", 10000, "reconnect suite: agents on the server that is killed")
	reconnectRuns   = flag.Int("reconnect-runs", 3, "reconnect suite: runs, each on a fresh cluster (the median is reported)")
	reconnectKill   = flag.String("reconnect-kill", "follower", "reconnect suite: the role of the server killed: follower (the storm alone) or leader (the storm and an election)")
)

// Issue 10's goals for the storm.
const (
	reconnectGoal      = 5 * time.Second
	reconnectCoresGoal = 1.5
	// reconnectProfile: with -pprof, how long the survivors' CPU is
	// profiled from the kill.
	reconnectProfile = 20 * time.Second
	// reconnectWait bounds one storm.
	reconnectWait = 2 * time.Minute
)

func runReconnect() error {
	if *reconnectRuns < 1 || *reconnectAgents < 1 {
		return fmt.Errorf("-reconnect-runs %d, -reconnect-agents %d: at least 1 each", *reconnectRuns, *reconnectAgents)
	}
	if *reconnectKill != "follower" && *reconnectKill != "leader" {
		return fmt.Errorf("-reconnect-kill %q: follower or leader", *reconnectKill)
	}
	n := *reconnectAgents
	var times []time.Duration
	var peaks []float64
	for run := 1; run <= *reconnectRuns; run++ {
		took, peak, err := reconnectRun(n, run)
		if err != nil {
			return fmt.Errorf("run %d: %w", run, err)
		}
		times, peaks = append(times, took), append(peaks, peak)
	}
	med, peak := median(times), medianF(peaks)
	addRow(row{
		name: fmt.Sprintf("reconnect storm: %s agents after their server (a %s) is killed, until all are connected on the others", commas(n), *reconnectKill),
		figure: fmt.Sprintf("%s (median of %d, %s-%s); survivors' peak CPU %.2f cores (median of the runs' peaks, %s; 100 ms samples); the simulators, on the same cores, dial at most %d agents at once each (rel-agent --simulate-connecting)",
			secs(med), len(times), secsBare(minD(times)), secsBare(maxD(times)), peak, rangeF("%.2f", peaks), agent.DefaultSimConnecting),
		goal:    fmt.Sprintf("≤ %g s; no server above %g cores", reconnectGoal.Seconds(), reconnectCoresGoal),
		verdict: both(atMost(med.Seconds(), reconnectGoal.Seconds(), "s"), atMost(peak, reconnectCoresGoal, "cores")),
	})
	return nil
}

// reconnectRun is one run on a fresh cluster: the time from the kill until
// every agent is recorded connected on a surviving server, and the highest
// CPU (cores) any survivor used in a 100 ms sample meanwhile.
func reconnectRun(n, run int) (time.Duration, float64, error) {
	work, err := os.MkdirTemp("", "rel-bench-reconnect-")
	if err != nil {
		return 0, 0, err
	}
	defer os.RemoveAll(work)
	c := &cluster{work: work, fl: tlsFlavor()}
	defer c.stop()
	if c.sec, err = newClusterSec(c.fl, work); err != nil {
		return 0, 0, err
	}
	for i := range 3 {
		c.servers = append(c.servers, &server{id: fmt.Sprintf("s%d", i+1), grpc: freePort(), raft: freePort(), http: freePort(), dir: filepath.Join(work, fmt.Sprintf("s%d", i+1))})
	}
	target, others := c.servers[0], c.servers[1:]
	// The agents' list names all three servers, but only the target
	// listens while they connect: each agent's shuffled list leads it to
	// the target after at most two refused dials.
	// With -pprof the survivors' CPU profiles over the storm's first
	// reconnectProfile are saved.
	var debug []string
	if *pprofDir != "" {
		debug = []string{"--enable-debug"}
	}
	if err := c.start(target, append([]string{"--bootstrap"}, debug...)...); err != nil {
		return 0, 0, err
	}
	if err := c.waitHealthy(target, 20*time.Second); err != nil {
		return 0, 0, err
	}
	ctx := context.Background()
	ctl, err := c.clientOf(target)
	if err != nil {
		return 0, 0, err
	}
	if err := setupBench(ctx, ctl); err != nil {
		return 0, 0, err
	}
	began := time.Now()
	onTarget := func(id string) bool { return id == target.id }
	f, _, err := startFleet(ctx, c, ctl, n, c.addrs(), onTarget)
	if err != nil {
		return 0, 0, err
	}
	fmt.Printf("reconnect run %d: %s agents connected to %s in %s\n", run, commas(n), target.id, time.Since(began).Round(time.Millisecond))
	for _, s := range others {
		if err := c.start(s, append([]string{"--join", target.grpc}, debug...)...); err != nil {
			return 0, 0, err
		}
		if err := c.waitHealthy(s, 60*time.Second); err != nil {
			return 0, 0, err
		}
	}
	if err := c.waitVoters(3, 2*time.Minute); err != nil {
		return 0, 0, fmt.Errorf("%s and %s joined %s holding the agents: %w (load average %s)", others[0].id, others[1].id, target.id, err, loadAvg())
	}
	if *reconnectKill == "follower" {
		if err := stepDown(c, target); err != nil {
			return 0, 0, err
		}
	}
	// Ask a survivor from here on; before the kill, check that the
	// agents are all still on the target.
	sctl, err := c.clientOf(others[0])
	if err != nil {
		return 0, 0, err
	}
	if _, err := f.waitOn(ctx, c, sctl, n, onTarget); err != nil {
		return 0, 0, fmt.Errorf("before the kill: %w", err)
	}
	role := c.role(target)

	sampler := sampleCores(others)
	var profiles *sync.WaitGroup
	if *pprofDir != "" {
		profiles = c.profileOf(others, fmt.Sprintf("reconnect-%d", run), reconnectProfile)
		defer profiles.Wait()
	}
	killed := time.Now()
	if err := target.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return 0, 0, err
	}
	target.cmd.Wait()
	// Two phases, so that watching does not load the servers watched:
	// the survivors' rel_agent_streams gauges (a read of /metrics each,
	// every 100 ms) until they hold n streams, then ListAgents (which
	// asks every server for its streams, page by page: 15 % of a
	// survivor's CPU when it ran every 50 ms from the kill) every 250 ms
	// until all n are recorded connected. A line a second says how the
	// storm goes: streams held, and the CPU of the survivors and of the
	// simulators since the last line.
	simPids := make([]int, 0, len(f.sims))
	for _, p := range f.sims {
		simPids = append(simPids, p.Process.Pid)
	}
	var srvPids []int
	for _, s := range others {
		srvPids = append(srvPids, s.cmd.Process.Pid)
	}
	lastLine, srvCPU, simCPU := killed, cpuTime(srvPids...), cpuTime(simPids...)
	// keepLogs copies the survivors' and simulators' logs out of the work
	// dir (removed when the run ends) and names the copies.
	keepLogs := func() []string {
		var kept []string
		for _, s := range others {
			kept = append(kept, keepLog(work, s.id+".log"))
		}
		for _, l := range f.logs {
			kept = append(kept, keepLog(work, l))
		}
		return kept
	}
	var streamsBack time.Duration
	var took time.Duration
	for {
		since := time.Since(killed)
		streams := 0
		for _, s := range others {
			streams += int(c.metrics(s, "rel_agent_streams")["rel_agent_streams"])
		}
		if now := time.Now(); now.Sub(lastLine) >= time.Second {
			srv, sim := cpuTime(srvPids...), cpuTime(simPids...)
			w := now.Sub(lastLine).Seconds()
			fmt.Printf("reconnect run %d: +%s %s streams on the survivors; CPU survivors %.2f cores, simulators %.2f cores\n",
				run, since.Round(100*time.Millisecond), commas(streams), (srv-srvCPU).Seconds()/w, (sim-simCPU).Seconds()/w)
			lastLine, srvCPU, simCPU = now, srv, sim
		}
		if streams >= n && streamsBack == 0 {
			streamsBack = since
		}
		var err error
		back := 0
		var by map[string]int
		if streamsBack > 0 {
			by, err = agentsByServer(ctx, sctl)
			for _, s := range others {
				back += by[s.id]
			}
			if err == nil && back == n {
				took = time.Since(killed)
				break
			}
		}
		if since > reconnectWait {
			sampler.stop()
			return 0, 0, fmt.Errorf("%d of %d agent streams on the survivors, %d recorded connected, %s after the kill (last error: %v; by server %v; logs kept: %s)", streams, n, back, reconnectWait, err, by, strings.Join(keepLogs(), " "))
		}
		if why := f.exited(work); why != "" {
			sampler.stop()
			return 0, 0, fmt.Errorf("%d of %d agent streams back: %s", streams, n, why)
		}
		if streamsBack > 0 {
			time.Sleep(250 * time.Millisecond)
		} else {
			time.Sleep(100 * time.Millisecond)
		}
	}
	fmt.Printf("reconnect run %d: all %s streams held by the survivors after %s\n", run, commas(n), streamsBack.Round(time.Millisecond))
	if *pprofDir != "" {
		// With -pprof the servers' and simulators' logs are kept too.
		for _, k := range keepLogs() {
			fmt.Printf("reconnect run %d: kept %s\n", run, k)
		}
	}
	peak, per := sampler.stop()
	fmt.Printf("reconnect run %d: %s (%s) killed; all %s agents connected on %s and %s after %s; peak CPU %s\n",
		run, target.id, role, commas(n), others[0].id, others[1].id, took.Round(time.Millisecond), per)
	return took, peak, nil
}

// stepDown moves leadership off s without closing its agents' streams:
// s is stopped (SIGSTOP) until another server leads, then continued; it
// finds a newer term and follows. Its streams only wait, well within the
// agents' keepalive (10 s) and the servers' grace (15 s).
func stepDown(c *cluster, s *server) error {
	if c.role(s) != "leader" {
		return nil
	}
	if err := s.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		return err
	}
	defer s.cmd.Process.Signal(syscall.SIGCONT)
	deadline := time.Now().Add(20 * time.Second)
	for !otherLeads(c, s) {
		if time.Now().After(deadline) {
			return fmt.Errorf("no other server took the lead within 20 s of stopping %s", s.id)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := s.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		return err
	}
	for c.role(s) != "follower" {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s is not a follower within 20 s of stopping it", s.id)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// otherLeads reports whether a server other than s says it leads.
func otherLeads(c *cluster, s *server) bool {
	for _, o := range c.servers {
		if o != s && c.role(o) == "leader" {
			return true
		}
	}
	return false
}

// coreSampler samples servers' CPU every 100 ms until stopped.
type coreSampler struct {
	servers []*server
	done    chan struct{}
	wg      sync.WaitGroup
	peak    map[*server]float64
}

func sampleCores(servers []*server) *coreSampler {
	cs := &coreSampler{servers: servers, done: make(chan struct{}), peak: map[*server]float64{}}
	cs.wg.Go(func() {
		last, at := map[*server]time.Duration{}, time.Now()
		for _, s := range servers {
			last[s] = cpuTime(s.cmd.Process.Pid)
		}
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-cs.done:
				return
			case <-t.C:
			}
			now := time.Now()
			for _, s := range servers {
				cpu := cpuTime(s.cmd.Process.Pid)
				cs.peak[s] = max(cs.peak[s], (cpu-last[s]).Seconds()/now.Sub(at).Seconds())
				last[s] = cpu
			}
			at = now
		}
	})
	return cs
}

// stop ends the sampling and returns the highest sample of any server and
// each server's peak.
func (cs *coreSampler) stop() (float64, string) {
	close(cs.done)
	cs.wg.Wait()
	var peak float64
	var per string
	for _, s := range cs.servers {
		p := cs.peak[s]
		peak = max(peak, p)
		if per != "" {
			per += ", "
		}
		per += fmt.Sprintf("%s %.2f cores", s.id, p)
	}
	return peak, per
}

func init() { register(suite{name: "reconnect", run: runReconnect}) }
