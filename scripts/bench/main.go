// Command bench measures Rel on this machine and prints figures (it is not a
// pass/fail test: machines here are shared and noisy). Run it with
// `make bench`, which builds bin/ first. Suites (-suite, default all):
//
// agents: a 3-node cluster of real rel-server processes on loopback and one
// rel-agent --simulate process with N agents (no-op installer, real
// stream, real reports); all-at-once rollouts of a no-op release, timed
// from StartRollout to succeeded, with the servers' RSS and the raft entries
// per second during the rollout.
//
// failover: a rolling rollout over simulated agents; the leader is killed
// with SIGKILL mid-rollout; the time from the kill to the first rollout
// step decided by the new leader (the first event stamped after the kill).
//
// latency: 3 real rel-agent processes installing the sample app (exec
// health check, healthy_after 1s); rollout start to succeeded one host at
// a time and all at once; and a release whose health check fails, canary 1
// with auto-rollback, until the canary answers on the old release again.
package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

var (
	suite    = flag.String("suite", "all", "agents, failover, latency or all")
	binDir   = flag.String("bin", "bin", "directory holding rel-server and rel-agent")
	agents   = flag.Int("agents", 2000, "simulated agents")
	rollouts = flag.Int("rollouts", 5, "rollouts to time (the median is reported)")
)

func main() {
	flag.Parse()
	suites := map[string]func() error{"agents": run, "failover": runFailover, "latency": runLatency}
	order := []string{"agents", "failover", "latency"}
	if *suite != "all" {
		if _, ok := suites[*suite]; !ok {
			fmt.Fprintf(os.Stderr, "bench: -suite %q: use agents, failover, latency or all\n", *suite)
			os.Exit(2)
		}
		order = []string{*suite}
	}
	for _, name := range order {
		fmt.Printf("== %s\n", name)
		if err := suites[name](); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", name+":", err)
			os.Exit(1)
		}
	}
}

type server struct {
	id, grpc, raft, http, dir string
	cmd                       *exec.Cmd
}

func freePort() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func run() error {
	work, err := os.MkdirTemp("", "rel-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	var servers []*server
	var procs []*exec.Cmd
	defer func() {
		for _, c := range procs {
			c.Process.Signal(syscall.SIGTERM)
		}
		for _, c := range procs {
			done := make(chan struct{})
			go func() { c.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(15 * time.Second):
				c.Process.Kill()
			}
		}
	}()
	for i := 0; i < 3; i++ {
		s := &server{id: fmt.Sprintf("s%d", i+1), grpc: freePort(), raft: freePort(), http: freePort(), dir: filepath.Join(work, fmt.Sprintf("s%d", i+1))}
		args := []string{"--node-id", s.id, "--data-dir", s.dir, "--grpc-addr", s.grpc, "--raft-addr", s.raft, "--http-addr", s.http, "--log-level", "warn"}
		if i == 0 {
			args = append(args, "--bootstrap")
		} else {
			args = append(args, "--join", servers[0].grpc)
		}
		s.cmd = exec.Command(filepath.Join(*binDir, "rel-server"), args...)
		logf, _ := os.Create(filepath.Join(work, s.id+".log"))
		s.cmd.Stdout, s.cmd.Stderr = logf, logf
		if err := s.cmd.Start(); err != nil {
			return err
		}
		procs = append(procs, s.cmd)
		servers = append(servers, s)
		if i == 0 {
			if err := waitHealthy(s, 15*time.Second); err != nil {
				return err
			}
		}
	}
	var addrs []string
	for _, s := range servers {
		if err := waitHealthy(s, 20*time.Second); err != nil {
			return err
		}
		addrs = append(addrs, s.grpc)
	}
	conn, err := grpc.NewClient(servers[0].grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctl := relv1.NewControlServiceClient(conn)
	ctx := context.Background()

	sim := exec.Command(filepath.Join(*binDir, "rel-agent"), "--simulate", strconv.Itoa(*agents), "--node-id", "sim",
		"--servers", strings.Join(addrs, ","), "--labels", "env=bench", "--log-level", "warn")
	simLog, _ := os.Create(filepath.Join(work, "agents.log"))
	sim.Stdout, sim.Stderr = simLog, simLog
	connectStart := time.Now()
	if err := sim.Start(); err != nil {
		return err
	}
	procs = append(procs, sim)
	if _, err := ctl.CreateApp(ctx, &relv1.CreateAppRequest{Name: "noop"}); err != nil {
		return err
	}
	if _, err := ctl.CreateEnvironment(ctx, &relv1.CreateEnvironmentRequest{Name: "bench", Selector: map[string]string{"env": "bench"}}); err != nil {
		return err
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp, err := ctl.ListAgents(ctx, &relv1.ListAgentsRequest{Environment: "bench"})
		n := 0
		if err == nil {
			for _, a := range resp.GetAgents() {
				if a.GetAgent().GetConnected() {
					n++
				}
			}
		}
		if n == *agents {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d agents connected after 2 minutes", n, *agents)
		}
		time.Sleep(200 * time.Millisecond)
	}
	fmt.Printf("agents: %d simulated agents connected to 3 servers in %s\n", *agents, time.Since(connectStart).Round(time.Millisecond))

	var times []time.Duration
	var rates []float64
	for i := 0; i < *rollouts; i++ {
		version := fmt.Sprintf("1.0.%d", i)
		sum := sha256.Sum256([]byte(version))
		if _, err := ctl.CreateRelease(ctx, &relv1.CreateReleaseRequest{App: "noop", Version: version,
			ArtifactUrl: "https://artifacts.invalid/noop-" + version + ".tar.gz", Sha256: hex.EncodeToString(sum[:])}); err != nil {
			return err
		}
		before := lastIndex(servers)
		start := time.Now()
		resp, err := ctl.StartRollout(ctx, &relv1.StartRolloutRequest{App: "noop", Version: version, Environment: "bench"})
		if err != nil {
			return err
		}
		id, idx := resp.GetRollout().GetId(), uint64(0)
		var st *relv1.RolloutStatus
		for {
			wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
			g, err := ctl.GetRollout(wctx, &relv1.GetRolloutRequest{Id: id, WaitIndex: idx})
			cancel()
			if err != nil {
				return err
			}
			st, idx = g.GetStatus(), g.GetIndex()
			if st.GetRollout().GetState() != "running" {
				break
			}
		}
		took := time.Since(start)
		entries := lastIndex(servers) - before
		if st.GetRollout().GetState() != "succeeded" {
			return fmt.Errorf("rollout %s ended %s: %s", id, st.GetRollout().GetState(), st.GetRollout().GetReason())
		}
		rate := float64(entries) / took.Seconds()
		times = append(times, took)
		rates = append(rates, rate)
		fmt.Printf("rollout %d: %d hosts 100%% healthy in %s, %d raft entries (%.0f/s)\n", i+1, len(st.GetHosts()), took.Round(time.Millisecond), entries, rate)
	}
	fmt.Printf("all-at-once rollout to %d agents, median of %d: %s (min %s, max %s); raft entries/s median %.0f\n",
		*agents, len(times), median(times).Round(time.Millisecond), minD(times).Round(time.Millisecond), maxD(times).Round(time.Millisecond), medianF(rates))
	for _, s := range servers {
		fmt.Printf("  %s RSS %d MiB\n", s.id, rssKiB(s.cmd.Process.Pid)/1024)
	}
	fmt.Printf("  simulator RSS %d MiB (%d agents)\n", rssKiB(sim.Process.Pid)/1024, *agents)
	return nil
}

func waitHealthy(s *server, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		resp, err := http.Get("http://" + s.http + "/v1/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s not healthy after %s", s.id, timeout)
}

// lastIndex is the highest raft last_index among the servers.
func lastIndex(servers []*server) uint64 {
	var max uint64
	for _, s := range servers {
		resp, err := http.Get("http://" + s.http + "/metrics")
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "rel_raft_last_index "); ok {
				f, _ := strconv.ParseFloat(v, 64)
				if uint64(f) > max {
					max = uint64(f)
				}
			}
		}
		resp.Body.Close()
	}
	return max
}

func rssKiB(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.Fields(v)[0])
			return n
		}
	}
	return 0
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func minD(ds []time.Duration) time.Duration {
	m := ds[0]
	for _, d := range ds {
		m = min(m, d)
	}
	return m
}

func maxD(ds []time.Duration) time.Duration {
	m := ds[0]
	for _, d := range ds {
		m = max(m, d)
	}
	return m
}

func medianF(fs []float64) float64 {
	s := append([]float64(nil), fs...)
	sort.Float64s(s)
	return s[len(s)/2]
}
