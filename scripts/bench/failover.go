package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"syscall"
	"time"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// runFailover measures, over 10 tries, the time from SIGKILL of the leader
// in the middle of a rollout to the first rollout step decided by the new
// leader.
func runFailover() error {
	work, err := os.MkdirTemp("", "rel-bench-failover-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
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
	var gaps []time.Duration
	for try := 0; try < 10; try++ {
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
		for _, e := range evs.GetEvents() {
			if at := time.Unix(0, e.GetAtUnixNano()); at.After(killed) {
				first = at
				break
			}
		}
		if first.IsZero() {
			return fmt.Errorf("try %d: no event after the kill", try+1)
		}
		gap := first.Sub(killed)
		gaps = append(gaps, gap)
		fmt.Printf("try %d: leader %s killed; first rollout step by the new leader after %s\n", try+1, leader.id, gap.Round(time.Millisecond))
		// Bring the killed node back for the next try.
		if err := c.start(leader); err != nil {
			return err
		}
		if err := c.waitHealthy(leader, 30*time.Second); err != nil {
			return err
		}
		ctl = survivor
	}
	fmt.Printf("leader killed mid-rollout -> first step by the new leader: median %s over %d tries (min %s, max %s; target < 3s)\n",
		median(gaps).Round(time.Millisecond), len(gaps), minD(gaps).Round(time.Millisecond), maxD(gaps).Round(time.Millisecond))
	return nil
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
