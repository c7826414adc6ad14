package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"sort"
	"syscall"
	"time"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

var failoverKills = flag.Int("kills", 20, "failover suite: leader kills to time (p50 and p99 are reported)")

// runFailover measures, over -kills tries, the time from SIGKILL of the
// leader in the middle of a rollout to the first rollout step decided by
// the new leader, and splits it: the election (until a survivor's health
// endpoint says it leads) and the rest (the new leader's barrier, its
// rollout engine, the agents that were on the killed server coming back).
func runFailover() (err error) {
	work, err := os.MkdirTemp("", "rel-bench-failover-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	defer func() {
		if err != nil {
			// The servers' and agents' logs say what went wrong.
			err = fmt.Errorf("%w (logs kept: s1 %s, s2 %s, s3 %s, agents %s)", err,
				keepLog(work, "s1.log"), keepLog(work, "s2.log"), keepLog(work, "s3.log"), keepLog(work, "agents.log"))
		}
	}()
	c, err := startCluster(work, tlsFlavor())
	defer c.stop()
	if err != nil {
		return err
	}
	const hosts = 40
	ctx := context.Background()
	ctl, err := c.client(nil)
	if err != nil {
		return err
	}
	enrol, err := c.agentArgs(ctx, hosts)
	if err != nil {
		return err
	}
	if _, err := c.startAgent("agents.log", append([]string{"--simulate", fmt.Sprint(hosts), "--node-id", "sim",
		"--servers", c.addrs(), "--labels", "env=bench", "--log-level", "warn"}, enrol...)...); err != nil {
		return err
	}
	if _, err := ctl.CreateApp(ctx, &relv1.CreateAppRequest{Name: "noop"}); err != nil {
		return err
	}
	if _, err := ctl.CreateEnvironment(ctx, &relv1.CreateEnvironmentRequest{Name: "bench", Selector: map[string]string{"env": "bench"}}); err != nil {
		return err
	}
	if err := waitConnected(ctx, ctl, "bench", hosts, time.Minute); err != nil {
		return err
	}
	var gaps, elections []time.Duration
	for try := 0; try < *failoverKills; try++ {
		version := fmt.Sprintf("2.0.%d", try)
		sum := sha256.Sum256([]byte(version))
		if _, err := ctl.CreateRelease(ctx, &relv1.CreateReleaseRequest{App: "noop", Version: version,
			ArtifactUrl: "https://artifacts.invalid/" + version, Sha256: hex.EncodeToString(sum[:])}); err != nil {
			return err
		}
		// One host at a time with a short bake: steps keep coming, so the
		// new leader has work the moment it takes over.
		start, err := ctl.StartRollout(ctx, &relv1.StartRolloutRequest{App: "noop", Version: version, Environment: "bench",
			Spec: &relv1.RolloutSpec{Strategy: "rolling", BakeMs: 50}})
		if err != nil {
			return err
		}
		id := start.GetRollout().GetId()
		// Let it get going, then kill the leader.
		for {
			g, err := ctl.GetRollout(ctx, &relv1.GetRolloutRequest{Id: id})
			if err != nil {
				return err
			}
			if g.GetStatus().GetTotals()["healthy"] >= 5 {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		leader := c.leader()
		if leader == nil {
			return fmt.Errorf("no leader")
		}
		killed := time.Now()
		leader.cmd.Process.Signal(syscall.SIGKILL)
		leader.cmd.Wait()
		elected, newLeader := c.waitNewLeader(leader, killed.Add(30*time.Second))
		survivor, err := c.client(leader)
		if err != nil {
			return err
		}
		if _, err := waitRolloutOn(ctx, survivor, id); err != nil {
			return err
		}
		evs, err := survivor.RolloutEvents(ctx, &relv1.RolloutEventsRequest{Id: id})
		if err != nil {
			return err
		}
		var first time.Time
		var step string
		for _, e := range evs.GetEvents() {
			if at := time.Unix(0, e.GetAtUnixNano()); at.After(killed) {
				first, step = at, e.GetType()+" "+e.GetHost()
				break
			}
		}
		if first.IsZero() {
			return fmt.Errorf("try %d: no event after the kill", try+1)
		}
		gap := first.Sub(killed)
		gaps = append(gaps, gap)
		election := elected.Sub(killed)
		elections = append(elections, election)
		fmt.Printf("try %d: leader %s killed; %s leads after %s; first rollout step by the new leader (%s) after %s (%s after the election)\n",
			try+1, leader.id, newLeader, election.Round(time.Millisecond), step, gap.Round(time.Millisecond), (gap - election).Round(time.Millisecond))
		// Bring the killed node back for the next try.
		if err := c.start(leader); err != nil {
			return err
		}
		if err := c.waitHealthy(leader, 30*time.Second); err != nil {
			return err
		}
		ctl = survivor
	}
	fmt.Printf("leader killed mid-rollout -> first step by the new leader: p50 %s, p99 %s over %d tries (min %s, max %s; goal p50 <= 1.5s, p99 <= 3s)\n",
		median(gaps).Round(time.Millisecond), p99(gaps).Round(time.Millisecond), len(gaps), minD(gaps).Round(time.Millisecond), maxD(gaps).Round(time.Millisecond))
	fmt.Printf("of which the election (kill -> a survivor says it leads): p50 %s, max %s\n",
		median(elections).Round(time.Millisecond), maxD(elections).Round(time.Millisecond))
	p50, p := median(gaps), p99(gaps)
	addRow(row{name: "failover: leader SIGKILL mid-rollout → first rollout step by the new leader",
		figure:  fmt.Sprintf("p50 %s, p99 %s over %d kills (min %s); the election alone p50 %s", secs(p50), secs(p), len(gaps), secs(minD(gaps)), secs(median(elections))),
		goal:    "p50 ≤ 1.5 s, p99 ≤ 3 s",
		verdict: both(atMost(p50.Seconds(), 1.5, "s"), atMost(p.Seconds(), 3, "s"))})
	return nil
}

// waitNewLeader polls the survivors' health until one says it leads and
// returns when it first did (within the 5 ms poll) and which one; the
// deadline's time and "" if none did.
func (c *cluster) waitNewLeader(killed *server, deadline time.Time) (time.Time, string) {
	for time.Now().Before(deadline) {
		if l := c.leader(); l != nil && l != killed {
			return time.Now(), l.id
		}
		time.Sleep(5 * time.Millisecond)
	}
	return deadline, ""
}

// p99 is the nearest-rank 99th percentile (the maximum below 100 samples).
func p99(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := (len(s)*99+99)/100 - 1
	return s[max(i, 0)]
}

// waitRolloutOn waits for a rollout to end, retrying while the cluster
// elects a new leader.
func waitRolloutOn(ctx context.Context, ctl relv1.ControlServiceClient, id string) (*relv1.RolloutStatus, error) {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		st, err := waitRollout(ctx, ctl, id)
		if err == nil {
			return st, nil
		}
		if time.Now().After(deadline) {
			return nil, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func init() { register(suite{name: "failover", run: runFailover}) }
