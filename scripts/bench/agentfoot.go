// agentfoot: the footprint of one real rel-agent (not simulated) on a
// one-server TLS cluster, running the sample app. Idle: its VmRSS and CPU
// time (/proc/<pid>/stat) over -agentfoot-runs windows of -agentfoot-window.
// Installing: its peak RSS (VmHWM, reset through clear_refs before each
// install, beside VmRSS sampled every 50 ms) while it downloads, verifies
// and extracts generated .tar.zst bundles of each of -agentfoot-sizes, the
// agent restarted before each so no install inherits another's heap.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

var (
	footWindow = flag.Duration("agentfoot-window", 60*time.Second, "agentfoot suite: each idle window over which the agent's RSS and CPU are measured")
	footRuns   = flag.Int("agentfoot-runs", 3, "agentfoot suite: idle windows (the median is reported)")
	footSizes  = flag.String("agentfoot-sizes", "256,1024", "agentfoot suite: sizes in MiB of the .tar.zst bundles installed for the peak RSS, comma-separated, smallest first")
)

// The goals for the agent.
const (
	footIdleRSSGoalMiB = 20
	footIdleCPUGoalPct = 0.1
	footPeakGoalMiB    = 64
	// footFlat: the largest bundle's peak may be this much above the
	// smallest's and still count as flat in bundle size.
	footFlat = 1.10
)

// footCluster is a one-server cluster with one real agent running the
// sample app.
type footCluster struct {
	c     *cluster
	ctx   context.Context
	ctl   relv1.ControlServiceClient
	art   relv1.ArtifactServiceClient
	agent int // pid
	cmd   *exec.Cmd
	args  []string
	root  string
}

func runAgentFoot() error {
	sizes, err := parseSizes(*footSizes)
	if err != nil {
		return fmt.Errorf("-agentfoot-sizes: %w", err)
	}
	if *footRuns < 1 || *footWindow <= 0 {
		return fmt.Errorf("-agentfoot-runs %d, -agentfoot-window %s: want at least 1 and a positive duration", *footRuns, *footWindow)
	}
	work, err := os.MkdirTemp("", "rel-bench-agentfoot-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	hello, err := buildHello(work)
	if err != nil {
		return err
	}
	f := &footCluster{ctx: context.Background(), root: filepath.Join(work, "agent", "root")}
	f.c, err = startSingle(work)
	defer f.stop()
	if err != nil {
		return err
	}
	if err := f.startAgent(work); err != nil {
		return err
	}
	bin, err := os.ReadFile(hello)
	if err != nil {
		return err
	}
	spec := []byte(helloSpec("./hello check", 30*time.Second))

	// The service the idle agent looks after.
	data, err := helloBundle(hello, "1.0.0", "./hello check", 30*time.Second)
	if err != nil {
		return err
	}
	url, err := upload(f.ctx, f.art, data)
	if err != nil {
		return err
	}
	if _, err := f.deploy("1.0.0", url); err != nil {
		return err
	}

	// Idle: the agent holds its stream, heartbeats and watches for drift.
	// A short settle first, so the install just done is not counted.
	time.Sleep(5 * time.Second)
	var rss []int
	var cpu []float64
	for i := 0; i < *footRuns; i++ {
		r, c, err := f.idleWindow(*footWindow)
		if err != nil {
			return err
		}
		fmt.Printf("[idle %d/%d] agent RSS %.1f MiB (highest in the window; now anon %.1f MiB, file %.1f MiB), CPU %.3f %% of a core over %s\n",
			i+1, *footRuns, float64(r)/1024, float64(statusKiB(f.agent, "RssAnon:"))/1024, float64(statusKiB(f.agent, "RssFile:"))/1024, c, *footWindow)
		rss, cpu = append(rss, r), append(cpu, c)
	}
	rssMiB, cpuPct := float64(medianI(rss))/1024, medianF(cpu)
	addRow(row{name: fmt.Sprintf("agent footprint, idle with one service installed (%s windows)", *footWindow),
		figure: fmt.Sprintf("RSS %.1f MiB, CPU %.3f %% of a core (medians of %d windows; RSS %s MiB, CPU %s %%)",
			rssMiB, cpuPct, len(rss), rangeMiB(rss), rangePct(cpu)),
		goal:    fmt.Sprintf("RSS ≤ %d MiB; CPU ≤ %.1f %% of a core", footIdleRSSGoalMiB, footIdleCPUGoalPct),
		verdict: both(atMost(rssMiB, footIdleRSSGoalMiB, "MiB"), atMost(cpuPct, footIdleCPUGoalPct, "% of a core"))})

	// Installing: the peak while it downloads, verifies and extracts.
	var peaks []string
	var peakKiB []int
	for i, size := range sizes {
		dir, err := os.MkdirTemp("", "rel-bench-bundle-")
		if err != nil {
			return err
		}
		version := fmt.Sprintf("2.0.%d", i)
		began := time.Now()
		b, err := writeBigBundle(filepath.Join(dir, "big.tar.zst"), "tar.zst", size<<20, uint64(i+1),
			[]bundleFile{{"hello", 0o755, bin}, {"rel.yaml", 0o644, spec}, {"VERSION", 0o644, []byte(version + "\n")}})
		if err == nil {
			url, err = uploadFile(f.ctx, f.art, b.path)
		}
		os.RemoveAll(dir)
		if err != nil {
			return err
		}
		fmt.Printf("bundle %s: %s artifact, %s of files; generated and uploaded in %s\n", version, mib(b.size), mib(b.expanded), time.Since(began).Round(100*time.Millisecond))
		if err := f.restartAgent(i); err != nil {
			return err
		}
		hwm, sampled, anon, file, took, err := f.peakInstall(version, url)
		if err != nil {
			return err
		}
		fmt.Printf("[install %s] peak RSS %.1f MiB (VmHWM; sampled every 50 ms: %.1f MiB, of which anon %.1f MiB, file %.1f MiB); rollout took %s\n",
			mib(b.size), float64(hwm)/1024, float64(sampled)/1024, float64(anon)/1024, float64(file)/1024, secs(took))
		peakKiB = append(peakKiB, hwm)
		peaks = append(peaks, fmt.Sprintf("%s bundle: %.1f MiB", mib(b.size), float64(hwm)/1024))
	}
	if len(peakKiB) == 0 {
		return nil
	}
	largest := float64(slices.Max(peakKiB)) / 1024
	growth := float64(peakKiB[len(peakKiB)-1]) / float64(peakKiB[0])
	flat := "met"
	if growth > footFlat {
		flat = fmt.Sprintf("missed: not flat, x%.2f from the smallest bundle to the largest (flat: at most x%.2f)", growth, footFlat)
	}
	addRow(row{name: "agent peak RSS installing a .tar.zst bundle (download + verify + extract)",
		figure:  fmt.Sprintf("%s (VmHWM, one install each; x%.2f from smallest to largest)", strings.Join(peaks, "; "), growth),
		goal:    fmt.Sprintf("≤ %d MiB and flat in bundle size (within x%.2f)", footPeakGoalMiB, footFlat),
		verdict: both(atMost(largest, footPeakGoalMiB, "MiB"), flat)})
	return nil
}

// startAgent starts the real agent and makes the app and the environment.
func (f *footCluster) startAgent(work string) error {
	ctx := f.ctx
	enrol, err := f.c.agentArgs(ctx, 1)
	if err != nil {
		return err
	}
	// --stop-services-on-exit: the bench must leave no service behind.
	args := append([]string{"--node-id", "foot-1", "--servers", f.c.addrs(), "--labels", "env=bench",
		"--data-dir", filepath.Join(work, "agent", "data"), "--install-root", f.root, "--log-level", "warn",
		"--stop-services-on-exit"}, enrol...)
	f.args = args
	if f.cmd, err = f.c.startAgent("agent.log", args...); err != nil {
		return err
	}
	f.agent = f.cmd.Process.Pid
	if f.ctl, err = f.c.client(nil); err != nil {
		return err
	}
	conn, err := f.c.dial(nil)
	if err != nil {
		return err
	}
	f.art = relv1.NewArtifactServiceClient(conn)
	if _, err := f.ctl.CreateApp(ctx, &relv1.CreateAppRequest{Name: "hello"}); err != nil {
		return err
	}
	if _, err := f.ctl.CreateEnvironment(ctx, &relv1.CreateEnvironmentRequest{Name: "bench", Selector: map[string]string{"env": "bench"}}); err != nil {
		return err
	}
	return waitConnected(ctx, f.ctl, "bench", 1, 30*time.Second)
}

// restartAgent stops the agent (SIGTERM: it stops its service) and starts
// it again on the same data dir, so that an install's peak is measured
// from a fresh process, not on top of the memory an earlier install left
// to the Go runtime. It returns once the agent is connected and has had
// time to resume its service.
func (f *footCluster) restartAgent(n int) error {
	stopped := time.Now()
	f.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- f.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		f.cmd.Process.Kill()
		<-done
	}
	var err error
	if f.cmd, err = f.c.startAgent(fmt.Sprintf("agent-%d.log", n), f.args...); err != nil {
		return err
	}
	f.agent = f.cmd.Process.Pid
	// Connected again (a connection stamped after the old process was
	// stopped), then resumed: the service restarted and its health check
	// passed.
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := f.ctl.ListAgents(f.ctx, &relv1.ListAgentsRequest{Environment: "bench"})
		if err == nil {
			for _, a := range resp.GetAgents() {
				if a.GetAgent().GetConnected() && a.GetAgent().GetConnectedUnixNano() > stopped.UnixNano() {
					time.Sleep(3 * time.Second) // Resume: start the service, healthy_after 1s
					return nil
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the restarted agent did not connect in 30s (log %s)", filepath.Join(f.c.work, fmt.Sprintf("agent-%d.log", n)))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// deploy creates a release of url and rolls it out, until it succeeded.
func (f *footCluster) deploy(version, url string) (time.Duration, error) {
	if _, err := f.ctl.CreateRelease(f.ctx, &relv1.CreateReleaseRequest{App: "hello", Version: version, ArtifactUrl: url}); err != nil {
		return 0, err
	}
	start := time.Now()
	resp, err := f.ctl.StartRollout(f.ctx, &relv1.StartRolloutRequest{App: "hello", Version: version, Environment: "bench", Spec: &relv1.RolloutSpec{}})
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(f.ctx, 5*time.Minute)
	defer cancel()
	st, err := waitRollout(ctx, f.ctl, resp.GetRollout().GetId())
	if err != nil {
		return 0, err
	}
	if st.GetRollout().GetState() != "succeeded" {
		return 0, fmt.Errorf("rollout of %s ended %s: %s (agent log in %s)", version, st.GetRollout().GetState(), st.GetRollout().GetReason(), f.c.work)
	}
	return time.Since(start), nil
}

// idleWindow measures the agent over d: the highest VmRSS sampled every
// second (KiB) and its CPU time as a percentage of one core.
func (f *footCluster) idleWindow(d time.Duration) (int, float64, error) {
	start, cpu0 := time.Now(), cpuTime(f.agent)
	peak := rssKiB(f.agent)
	for time.Since(start) < d {
		time.Sleep(min(time.Second, d-time.Since(start)))
		if processExited(f.agent) {
			return 0, 0, fmt.Errorf("the agent exited (log %s)", filepath.Join(f.c.work, "agent.log"))
		}
		peak = max(peak, rssKiB(f.agent))
	}
	used := cpuTime(f.agent) - cpu0
	return peak, 100 * used.Seconds() / time.Since(start).Seconds(), nil
}

// peakInstall deploys version and returns the agent's peak RSS over it
// (VmHWM, reset first) and the highest VmRSS sampled every 50 ms, in KiB.
func (f *footCluster) peakInstall(version, url string) (hwm, sampled, anon, file int, took time.Duration, err error) {
	// Writing 5 to clear_refs resets VmHWM to the current RSS (Linux 4.0+,
	// the process's own user): the peak is then this install's.
	if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", f.agent), []byte("5"), 0); err != nil {
		return 0, 0, 0, 0, 0, fmt.Errorf("reset the agent's VmHWM: %w", err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			if r := rssKiB(f.agent); r > sampled {
				// What the peak is made of: the heap and stacks (anon) or
				// the binary's mapped pages (file).
				sampled, anon, file = r, statusKiB(f.agent, "RssAnon:"), statusKiB(f.agent, "RssFile:")
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	})
	took, err = f.deploy(version, url)
	close(stop)
	wg.Wait()
	return statusKiB(f.agent, "VmHWM:"), sampled, anon, file, took, err
}

// stop stops the cluster and the agent (which stops its service), then
// kills the service's process group if it is somehow still there.
func (f *footCluster) stop() {
	if f.c == nil {
		return
	}
	f.c.stop()
	killService(filepath.Join(f.root, "hello", "current"), "hello")
}

// killService kills the process group recorded in a release's
// .rel/run.pgid if its leader still runs the command named.
func killService(release, command string) {
	b, err := os.ReadFile(filepath.Join(release, ".rel", "run.pgid"))
	if err != nil {
		return
	}
	fields := strings.Fields(string(b))
	if len(fields) == 0 {
		return
	}
	pgid, err := strconv.Atoi(fields[0])
	if err != nil || pgid <= 1 {
		return
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pgid))
	if err != nil || !strings.Contains(string(cmdline), command) {
		return
	}
	if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		fmt.Fprintf(os.Stderr, "bench: kill the service's process group %d: %v\n", pgid, err)
	}
}

// parseSizes parses comma-separated positive sizes in MiB.
func parseSizes(s string) ([]int64, error) {
	var out []int64
	for _, p := range strings.Split(s, ",") {
		n, err := strconv.ParseInt(strings.TrimSpace(p), 10, 64)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q: want positive sizes in MiB, comma-separated", s)
		}
		out = append(out, n)
	}
	return out, nil
}

// rangePct is "min-max" of percentages.
func rangePct(ps []float64) string {
	lo, hi := ps[0], ps[0]
	for _, p := range ps {
		lo, hi = min(lo, p), max(hi, p)
	}
	return fmt.Sprintf("%.3f-%.3f", lo, hi)
}

func init() { register(suite{name: "agentfoot", run: runAgentFoot}) }
