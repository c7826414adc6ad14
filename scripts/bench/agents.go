package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// agentsRun is what one cluster with N simulated agents measured.
type agentsRun struct {
	connect time.Duration
	times   []time.Duration
	rates   []float64
	// cpu is the CPU time (user+system) the servers and the simulator
	// used during each timed rollout.
	serverCPU, simCPU []time.Duration
	leaderRSS         int   // KiB
	followerRSS       []int // KiB
	simRSS            int   // KiB
}

// runAgents is the agents suite: all-at-once rollouts to N simulated
// agents. Without a baseline it is one cluster and -rollouts rollouts.
// With one, it is -runs clusters of each kind, started in turn (TLS,
// baseline, TLS, ...), each timing one rollout after an untimed warm-up.
func runAgents() error {
	if base == nil {
		_, err := agentsSession(tlsFlavor(), "", *rollouts, 0)
		return err
	}
	var runs [3][]*agentsRun
	flavors := []flavor{tlsFlavor(), *base}
	if basePerConn != nil {
		flavors = append(flavors, *basePerConn)
	}
	for i := 0; i < *runsFlag; i++ {
		for k, fl := range flavors {
			r, err := agentsSession(fl, fmt.Sprintf("[%s %d/%d] ", fl.name, i+1, *runsFlag), 1, 1)
			if err != nil {
				return fmt.Errorf("%s: %w", fl.name, err)
			}
			runs[k] = append(runs[k], r)
		}
	}
	var t, b []time.Duration
	var rates []float64
	for _, r := range runs[0] {
		t = append(t, r.times...)
		rates = append(rates, r.rates...)
	}
	for _, r := range runs[1] {
		b = append(b, r.times...)
	}
	fmt.Printf("all-at-once rollout to %d agents (TLS), median of %d clusters: %s (min %s, max %s); raft entries/s median %.0f\n",
		*agents, len(t), median(t).Round(time.Millisecond), minD(t).Round(time.Millisecond), maxD(t).Round(time.Millisecond), medianF(rates))
	n := commas(*agents)
	cost(fmt.Sprintf("rollout to %s simulated agents, all at once", n), median(t), t, median(b), b, true)
	if len(runs[2]) > 0 {
		var p []time.Duration
		for _, r := range runs[2] {
			p = append(p, r.times...)
		}
		cost(fmt.Sprintf("rollout to %s simulated agents, all at once, against the baseline with one connection per agent (as real agents have)", n), median(t), t, median(p), p, true)
	}
	connect := func(rs []*agentsRun) (ds []time.Duration) {
		for _, r := range rs {
			ds = append(ds, r.connect)
		}
		return ds
	}
	tc, bc := connect(runs[0]), connect(runs[1])
	cost(fmt.Sprintf("%s agents connected (TLS: each enrols, then its own connection)", n), median(tc), tc, median(bc), bc, false)
	cpu := func(rs []*agentsRun, sim bool) (ds []time.Duration) {
		for _, r := range rs {
			if sim {
				ds = append(ds, r.simCPU...)
			} else {
				ds = append(ds, r.serverCPU...)
			}
		}
		return ds
	}
	ts, bs := cpu(runs[0], false), cpu(runs[1], false)
	cost("  CPU time of the 3 servers during that rollout", median(ts), ts, median(bs), bs, false)
	ts, bs = cpu(runs[0], true), cpu(runs[1], true)
	cost("  CPU time of the simulator during that rollout", median(ts), ts, median(bs), bs, false)
	rss := func(rs []*agentsRun) (leader, followers, sim []int) {
		for _, r := range rs {
			leader = append(leader, r.leaderRSS)
			followers = append(followers, r.followerRSS...)
			sim = append(sim, r.simRSS)
		}
		return
	}
	tl, tf, tsim := rss(runs[0])
	bl, bf, bsim := rss(runs[1])
	costLine(fmt.Sprintf("servers' RSS with %s agents connected: TLS leader %d MiB, followers %s MiB, simulator %d MiB; baseline leader %d MiB, followers %s MiB, simulator %d MiB: leader x%.2f, followers x%.2f, simulator x%.2f",
		n, medianI(tl)/1024, rangeMiB(tf), medianI(tsim)/1024, medianI(bl)/1024, rangeMiB(bf), medianI(bsim)/1024,
		float64(medianI(tl))/float64(medianI(bl)), float64(medianI(tf))/float64(medianI(bf)), float64(medianI(tsim))/float64(medianI(bsim))))
	return nil
}

// agentsSession starts a cluster of flavor fl with N simulated agents,
// runs warmup untimed rollouts and then timed ones, and prints each line
// with prefix.
func agentsSession(fl flavor, prefix string, timed, warmup int) (*agentsRun, error) {
	work, err := os.MkdirTemp("", "rel-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	var extra []string
	if *pprofDir != "" && fl.tls {
		extra = append(extra, "--enable-debug")
	}
	c, err := startCluster(work, fl, extra...)
	defer c.stop()
	if err != nil {
		return nil, err
	}
	ctl, err := c.client(nil)
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	enrol, err := c.agentArgs(ctx, *agents)
	if err != nil {
		return nil, err
	}
	connectStart := time.Now()
	sim, err := c.startAgent("agents.log", append([]string{"--simulate", strconv.Itoa(*agents), "--node-id", "sim",
		"--servers", c.addrs(), "--labels", "env=bench", "--log-level", "warn"}, enrol...)...)
	if err != nil {
		return nil, err
	}
	if _, err := ctl.CreateApp(ctx, &relv1.CreateAppRequest{Name: "noop"}); err != nil {
		return nil, err
	}
	if _, err := ctl.CreateEnvironment(ctx, &relv1.CreateEnvironmentRequest{Name: "bench", Selector: map[string]string{"env": "bench"}}); err != nil {
		return nil, err
	}
	// Enrolment (TLS) is one raft write per agent before it connects.
	wait := 2 * time.Minute
	if fl.tls {
		wait = 5 * time.Minute
	}
	deadline := time.Now().Add(wait)
	for {
		n := 0
		for tok := ""; ; {
			resp, err := ctl.ListAgents(ctx, &relv1.ListAgentsRequest{Environment: "bench", PageSize: 1000, PageToken: tok})
			if err != nil {
				break
			}
			for _, a := range resp.GetAgents() {
				if a.GetAgent().GetConnected() {
					n++
				}
			}
			if tok = resp.GetNextPageToken(); tok == "" {
				break
			}
		}
		if n == *agents {
			break
		}
		if sim.ProcessState != nil || processExited(sim.Process.Pid) {
			return nil, fmt.Errorf("the simulator exited with %d of %d agents connected: see its log (kept in %s)", n, *agents, keepLog(work, "agents.log"))
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("only %d of %d agents connected after %s (simulator log kept in %s)", n, *agents, wait, keepLog(work, "agents.log"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	r := &agentsRun{connect: time.Since(connectStart)}
	fmt.Printf("%sagents: %d simulated agents connected to 3 servers in %s\n", prefix, *agents, r.connect.Round(time.Millisecond))

	var pids []int
	for _, s := range c.servers {
		pids = append(pids, s.cmd.Process.Pid)
	}
	for i := 0; i < warmup+timed; i++ {
		version := fmt.Sprintf("1.0.%d", i)
		sum := sha256.Sum256([]byte(version))
		if _, err := ctl.CreateRelease(ctx, &relv1.CreateReleaseRequest{App: "noop", Version: version,
			ArtifactUrl: "https://artifacts.invalid/noop-" + version + ".tar.gz", Sha256: hex.EncodeToString(sum[:])}); err != nil {
			return nil, err
		}
		before := c.lastIndex()
		profiles := new(sync.WaitGroup)
		if *pprofDir != "" && i >= warmup {
			profiles = c.profile(fmt.Sprintf("%s-%d-%d", fl.name, session(prefix), i+1), 3*time.Second)
			time.Sleep(100 * time.Millisecond) // let the profiles start
		}
		cpuServers, cpuSim := cpuTime(pids...), cpuTime(sim.Process.Pid)
		start := time.Now()
		resp, err := ctl.StartRollout(ctx, &relv1.StartRolloutRequest{App: "noop", Version: version, Environment: "bench"})
		if err != nil {
			return nil, err
		}
		id, idx := resp.GetRollout().GetId(), uint64(0)
		var st *relv1.RolloutStatus
		for {
			wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
			g, err := ctl.GetRollout(wctx, &relv1.GetRolloutRequest{Id: id, WaitIndex: idx})
			cancel()
			if err != nil {
				return nil, err
			}
			st, idx = g.GetStatus(), g.GetIndex()
			if st.GetRollout().GetState() != "running" {
				break
			}
		}
		took := time.Since(start)
		cpuServers, cpuSim = cpuTime(pids...)-cpuServers, cpuTime(sim.Process.Pid)-cpuSim
		entries := c.lastIndex() - before
		profiles.Wait()
		if st.GetRollout().GetState() != "succeeded" {
			return nil, fmt.Errorf("rollout %s ended %s: %s", id, st.GetRollout().GetState(), st.GetRollout().GetReason())
		}
		rate := float64(entries) / took.Seconds()
		if i < warmup {
			fmt.Printf("%srollout %d (warm-up, not counted): %d hosts 100%% healthy in %s, %d raft entries (%.0f/s)\n", prefix, i+1, len(st.GetHosts()), took.Round(time.Millisecond), entries, rate)
			continue
		}
		r.times = append(r.times, took)
		r.rates = append(r.rates, rate)
		r.serverCPU = append(r.serverCPU, cpuServers)
		r.simCPU = append(r.simCPU, cpuSim)
		fmt.Printf("%srollout %d: %d hosts 100%% healthy in %s, %d raft entries (%.0f/s)\n", prefix, i+1, len(st.GetHosts()), took.Round(time.Millisecond), entries, rate)
	}
	if prefix == "" {
		fmt.Printf("all-at-once rollout to %d agents, median of %d: %s (min %s, max %s); raft entries/s median %.0f\n",
			*agents, len(r.times), median(r.times).Round(time.Millisecond), minD(r.times).Round(time.Millisecond), maxD(r.times).Round(time.Millisecond), medianF(r.rates))
	}
	if *pprofDir != "" {
		c.heapProfiles(fmt.Sprintf("%s-%d", fl.name, session(prefix)))
	}
	leader := c.leader()
	for _, s := range c.servers {
		kib := rssKiB(s.cmd.Process.Pid)
		role := ""
		if s == leader {
			role = " (leader)"
			r.leaderRSS = kib
		} else {
			r.followerRSS = append(r.followerRSS, kib)
		}
		fmt.Printf("%s  %s RSS %d MiB%s\n", prefix, s.id, kib/1024, role)
	}
	r.simRSS = rssKiB(sim.Process.Pid)
	fmt.Printf("%s  simulator RSS %d MiB (%d agents)\n", prefix, r.simRSS/1024, *agents)
	return r, nil
}

// session is the run number in a prefix such as "[tls 2/5] " (0 if none).
func session(prefix string) int {
	var name string
	var n, of int
	fmt.Sscanf(prefix, "[%s %d/%d]", &name, &n, &of)
	return n
}

// heapProfiles saves every server's heap profile (in use after a GC) as
// -pprof/<name>-<server>.heap.pprof.
func (c *cluster) heapProfiles(name string) {
	for _, s := range c.servers {
		if err := c.fetch(s, "/debug/pprof/heap?gc=1", filepath.Join(*pprofDir, name+"-"+s.id+".heap.pprof"), 30*time.Second); err != nil {
			fmt.Fprintf(os.Stderr, "bench: heap profile of %s: %v\n", s.id, err)
		}
	}
}

// fetch saves what a GET of path on server s's HTTP port answers in file.
func (c *cluster) fetch(s *server, path, file string, timeout time.Duration) error {
	cl := *c.sec.admin
	cl.Timeout = timeout
	resp, err := cl.Get(c.sec.scheme + "://" + s.http + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("HTTP %s", resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	return os.WriteFile(file, b, 0o644)
}

// profile saves CPU profiles of every server over d, in the background, as
// -pprof/<name>-<server>.pprof.
func (c *cluster) profile(name string, d time.Duration) *sync.WaitGroup {
	return c.profileOf(c.servers, name, d)
}

// profileOf is profile for some of the servers.
func (c *cluster) profileOf(servers []*server, name string, d time.Duration) *sync.WaitGroup {
	wg := new(sync.WaitGroup)
	for _, s := range servers {
		wg.Go(func() {
			path := fmt.Sprintf("/debug/pprof/profile?seconds=%d", int(d.Seconds()))
			if err := c.fetch(s, path, filepath.Join(*pprofDir, name+"-"+s.id+".pprof"), d+30*time.Second); err != nil {
				fmt.Fprintf(os.Stderr, "bench: profile of %s: %v\n", s.id, err)
			}
		})
	}
	return wg
}

// keepLog copies a log out of a work dir that is about to be removed.
func keepLog(work, name string) string {
	b, err := os.ReadFile(work + "/" + name)
	if err != nil {
		return "(none: " + err.Error() + ")"
	}
	f, err := os.CreateTemp("", "rel-bench-"+name+"-")
	if err != nil {
		return "(none: " + err.Error() + ")"
	}
	defer f.Close()
	f.Write(b)
	return f.Name()
}

func init() { register(suite{name: "agents", run: runAgents}) }
