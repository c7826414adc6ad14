// steady: the steady state of a long-lived cluster. 3 rel-server processes
// with short retention, one rel-agent --simulate process with -steady-agents
// agents, and -steady-rollouts all-at-once rollouts of new no-op releases,
// -steady-apps apps in parallel (each app its own environment over the same
// hosts, its rollouts back to back). Every tenth of the way, with the
// rollouts paused: each server's RSS, its live heap right after a forced GC
// (what "flat" is judged on, with the snapshot), raft.db and newest
// snapshot sizes, and the real relctl's `rollout list` (p50 of 10) and `history APP` (must exit
// 0), timed as a user sees them.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
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
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/relhq/rel/internal/audit"
	"github.com/relhq/rel/internal/auth"
	"github.com/relhq/rel/internal/pki"
	"github.com/relhq/rel/internal/reqid"
	"github.com/relhq/rel/internal/retry"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

var (
	steadyRollouts = flag.Int("steady-rollouts", 5000, "steady suite: all-at-once rollouts in all")
	steadyAgents   = flag.Int("steady-agents", 200, "steady suite: simulated agents")
	steadyApps     = flag.Int("steady-apps", 10, "steady suite: apps whose rollouts run in parallel (each app's one after the other)")
	steadyMaxTime  = flag.Duration("steady-max-time", 20*time.Minute, "steady suite: stop starting rollouts after this long and report what was done")
	// Releases are the one record a cluster keeps until someone deletes
	// it: each app's pipeline here deletes the release steadyReleaseKeep
	// versions back once a new one succeeds, as a build pipeline with a
	// release retention policy does (Octopus keeps the last N).
	// A steady state needs a steady load: the retention windows are
	// times, so what they hold is the rate times the window, and a rate
	// that drifts with the machine's other work (9.3 rollouts/s on a quiet
	// machine, 5.5 beside a build) moves the heap more than any growth.
	steadyRate        = flag.Float64("steady-rate", 5, "steady suite: rollouts started per second across the apps (0: as fast as they go)")
	steadyReleaseKeep = flag.Int("steady-release-keep", 20, "steady suite: each app deletes its release this many versions back after a rollout succeeds (0: never)")
)

// The issue's goals for the steady state.
const (
	steadyRSSGoalMiB  = 300
	steadySnapGoalMiB = 20
	steadyListGoal    = 50 * time.Millisecond
	// steadyFlatGrowth: "flat" is the live heap (after a forced GC) and
	// the snapshot at the end within this of the figures halfway, each
	// the mean of steadyFlatWindow checkpoints (see steadyFlat).
	steadyFlatGrowth = 0.15
	steadyFlatWindow = 3
)

// steadyPoint is one checkpoint of the series.
type steadyPoint struct {
	rollouts                int
	at                      time.Duration
	index                   uint64  // raft's last index
	rssKiB, dbBytes, snapB  []int64 // per server (KiB for RSS)
	list, history           time.Duration
	listRows                int
	historyErr, listErr     error
	listMin, listMax        time.Duration
	maxRSSKiB, maxSnapBytes int64
	// The Go heap still allocated right after a forced GC: what the
	// replica holds, without the garbage a GC cycle lets pile up.
	liveKiB    []int64
	maxLiveKiB int64
}

func runSteady() error {
	total, nAgents, nApps := *steadyRollouts, *steadyAgents, *steadyApps
	if total < 2 || nAgents < 1 || nApps < 1 || nApps > total {
		return fmt.Errorf("-steady-rollouts %d, -steady-agents %d, -steady-apps %d: want at least 2 rollouts, 1 agent and 1-%d apps", total, nAgents, nApps, total)
	}
	relctl, err := filepath.Abs(filepath.Join(*binDir, "relctl"))
	if err != nil || !fileExists(relctl) {
		return fmt.Errorf("no relctl in -bin %s (make build)", *binDir)
	}
	work, err := os.MkdirTemp("", "rel-bench-steady-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	// Retention must start within the run. The history and agent
	// retention flags come with the retention work; pass them when this
	// rel-server has them.
	extra := []string{"--rollout-retention", "1m", "--rollout-keep", "20", "--retention-interval", "10s", "--snapshot-interval", "10s"}
	help, _ := exec.Command(filepath.Join(tlsBin, "rel-server"), "--help").CombinedOutput()
	var missing []string
	for _, f := range []struct{ flag, value string }{{"history-retention", "2m"}, {"agent-retention", "1h"}, {"deployment-retention", "2m"}, {"audit-retention", "2m"}} {
		if strings.Contains(string(help), "-"+f.flag+" ") {
			extra = append(extra, "--"+f.flag, f.value)
		} else {
			missing = append(missing, "--"+f.flag)
		}
	}
	if !strings.Contains(string(help), "-retention-interval ") {
		return fmt.Errorf("this rel-server has no --retention-interval: rebuild bin/ (make build)")
	}
	// The audit archive is checked against a checkpoint the servers sign.
	if strings.Contains(string(help), "-audit-key-file ") {
		keyFile, _, err := audit.WriteKeyPair(work)
		if err != nil {
			return err
		}
		extra = append(extra, "--audit-key-file", keyFile)
	}
	// Debug endpoints: a checkpoint forces a GC (GET /debug/pprof/heap?gc=1)
	// to read the live heap, and saves the profile with -pprof.
	extra = append(extra, "--enable-debug")
	fmt.Printf("servers run with %s\n", strings.Join(extra, " "))
	if len(missing) > 0 {
		fmt.Printf("this rel-server has no %s: that retention is not part of this run\n", strings.Join(missing, " or "))
	}
	c, err := startCluster(work, tlsFlavor(), extra...)
	defer c.stop()
	if err != nil {
		return err
	}
	ctl, err := c.client(nil)
	if err != nil {
		return err
	}
	ctx := context.Background()
	enrol, err := c.agentArgs(ctx, nAgents)
	if err != nil {
		return err
	}
	if _, err := c.startAgent("agents.log", append([]string{"--simulate", strconv.Itoa(nAgents), "--node-id", "sim",
		"--servers", c.addrs(), "--labels", "env=bench", "--log-level", "warn"}, enrol...)...); err != nil {
		return err
	}
	apps := make([]string, nApps)
	for i := range apps {
		apps[i] = fmt.Sprintf("app%02d", i)
		if _, err := ctl.CreateApp(ctx, &relv1.CreateAppRequest{Name: apps[i]}); err != nil {
			return err
		}
		if _, err := ctl.CreateEnvironment(ctx, &relv1.CreateEnvironmentRequest{Name: "env-" + apps[i], Selector: map[string]string{"env": "bench"}}); err != nil {
			return err
		}
	}
	if err := waitConnected(ctx, ctl, "env-"+apps[0], nAgents, 3*time.Minute); err != nil {
		return err
	}
	certFile, keyFile, err := adminFiles(c.sec.pki)
	if err != nil {
		return err
	}
	run := func(args ...string) (time.Duration, string, error) {
		args = append(args, "--addr", c.addrs(), "--ca-file", c.sec.pki.caFile, "--cert-file", certFile, "--key-file", keyFile, "--timeout", "30s")
		cmd := exec.Command(relctl, args...)
		start := time.Now()
		out, err := cmd.CombinedOutput()
		took := time.Since(start)
		if err != nil {
			return took, "", fmt.Errorf("relctl %s: %v: %s", strings.Join(args[:2], " "), err, strings.TrimSpace(string(out)))
		}
		return took, string(out), nil
	}

	every := max(total/10, 1)
	fmt.Printf("%s all-at-once rollouts of new no-op releases to %d simulated agents, %d apps in parallel (each its own environment over the same hosts, its rollouts back to back); a checkpoint every %s rollouts\n",
		commas(total), nAgents, nApps, commas(every))
	fmt.Printf("%9s %8s %10s | %-20s %-18s %-18s | %-22s %s\n", "rollouts", "time", "raft index", "RSS MiB s1/s2/s3", "raft.db MiB", "snapshot MiB", "rollout list p50 (rows)", "history")

	var (
		started, done atomic.Int64
		failed        atomic.Value // error
		durMu         sync.Mutex
		durs          []time.Duration
		// The gate: a worker starts rollout n once n <= limit, so every
		// checkpoint is measured on a quiet cluster at an exact count.
		gateMu  sync.Mutex
		gate    = sync.NewCond(&gateMu)
		limit   = every
		stopped bool
	)
	open := func(to int, stop bool) {
		gateMu.Lock()
		limit, stopped = to, stopped || stop
		gate.Broadcast()
		gateMu.Unlock()
	}
	// pace hands out one start per 1/rate; a time.Ticker drops the ticks
	// nobody takes, so the pauses at checkpoints do not bank starts.
	pace := func() {}
	if *steadyRate > 0 {
		t := time.NewTicker(time.Duration(float64(time.Second) / *steadyRate))
		defer t.Stop()
		pace = func() { <-t.C }
	}
	began := time.Now()
	deadline := began.Add(*steadyMaxTime)
	var workers sync.WaitGroup
	for a, app := range apps {
		workers.Go(func() {
			for k := 0; ; k++ {
				n := int(started.Add(1))
				if n > total {
					return
				}
				gateMu.Lock()
				for n > limit && !stopped {
					gate.Wait()
				}
				gateMu.Unlock()
				if stopped || time.Now().After(deadline) {
					return
				}
				pace()
				took, err := steadyRollout(ctx, ctl, app, "env-"+app, fmt.Sprintf("1.%d.%d", a, k))
				if err != nil {
					failed.CompareAndSwap(nil, fmt.Errorf("%s rollout %d: %w", app, k+1, err))
					return
				}
				if keep := *steadyReleaseKeep; keep > 0 && k >= keep {
					if err := steadyDeleteRelease(ctx, ctl, app, fmt.Sprintf("1.%d.%d", a, k-keep)); err != nil {
						failed.CompareAndSwap(nil, err)
						return
					}
				}
				durMu.Lock()
				durs = append(durs, took)
				durMu.Unlock()
				done.Add(1)
			}
		})
	}
	finished := make(chan struct{})
	go func() { workers.Wait(); close(finished) }()
	defer func() { open(0, true); <-finished }()

	// The audit trail is removed only once archived: an operator's job
	// (cron) runs relctl audit archive; here, at every checkpoint.
	archive := func(int) error { return nil }
	if ctlHelp, _ := exec.Command(relctl, "audit", "--help").CombinedOutput(); strings.Contains(string(ctlHelp), "archive") && !slices.Contains(missing, "--audit-retention") {
		archive = func(n int) error {
			_, _, err := run("audit", "archive", "--out", filepath.Join(work, fmt.Sprintf("audit-%05d.archive", n)))
			return err
		}
	} else {
		missing = append(missing, "relctl audit archive")
	}
	var points []steadyPoint
	for next := every; ; next += every {
		// Wait for every rollout up to the checkpoint (or for the workers
		// to stop: the deadline, or the last rollout).
		last := false
		for int(done.Load()) < min(next, total) && !last {
			select {
			case <-finished:
				last = true
			case <-time.After(50 * time.Millisecond):
			}
			if e, _ := failed.Load().(error); e != nil {
				return e
			}
		}
		if err := archive(int(done.Load())); err != nil {
			return err
		}
		p := steadyPoint{rollouts: int(done.Load()), at: time.Since(began), index: c.lastIndex()}
		for _, s := range c.servers {
			p.rssKiB = append(p.rssKiB, int64(rssKiB(s.cmd.Process.Pid)))
			db, snap := raftFiles(s.dir)
			p.dbBytes, p.snapB = append(p.dbBytes, db), append(p.snapB, snap)
			p.maxRSSKiB, p.maxSnapBytes = max(p.maxRSSKiB, p.rssKiB[len(p.rssKiB)-1]), max(p.maxSnapBytes, snap)
		}
		var lists []time.Duration
		for range 10 {
			took, out, err := run("rollout", "list")
			if err != nil {
				// A failure is a finding, not the end of the run.
				p.listErr = err
				took = 30 * time.Second
			}
			lists = append(lists, took)
			p.listRows = strings.Count(out, "\n") - 1
		}
		p.list, p.listMin, p.listMax = median(lists), minD(lists), maxD(lists)
		p.history, _, p.historyErr = run("history", apps[0])
		hist := fmt.Sprintf("%d ms", p.history.Milliseconds())
		if p.historyErr != nil {
			hist = "FAILED: " + p.historyErr.Error()
		}
		if p.listErr != nil {
			hist += "; rollout list FAILED: " + p.listErr.Error()
		}
		fmt.Printf("%9s %7.0fs %10s | %-20s %-18s %-18s | %-22s %s\n", commas(p.rollouts), p.at.Seconds(), commas(int(p.index)), joinMiB(p.rssKiB, 1<<10), joinMiB(p.dbBytes, 1<<20),
			joinMiB(p.snapB, 1<<20), fmt.Sprintf("%d ms (%d-%d) (%d)", p.list.Milliseconds(), p.listMin.Milliseconds(), p.listMax.Milliseconds(), p.listRows), hist)
		// Where the RSS is: anonymous memory (the Go heap and stacks) or
		// file pages (the binary, and raft.db, which bolt maps).
		var split []string
		for _, s := range c.servers {
			pid := s.cmd.Process.Pid
			m := c.metrics(s, "go_memstats_heap_inuse_bytes", "go_memstats_stack_inuse_bytes")
			split = append(split, fmt.Sprintf("%s anon %d file %d (heap %.0f, stacks %.0f)", s.id, statusKiB(pid, "RssAnon:")/1024, statusKiB(pid, "RssFile:")/1024,
				m["go_memstats_heap_inuse_bytes"]/(1<<20), m["go_memstats_stack_inuse_bytes"]/(1<<20)))
		}
		fmt.Printf("%9s RSS MiB: %s\n", "", strings.Join(split, "; "))
		// Live heap: GET heap?gc=1 runs a GC before it answers, then the
		// heap still allocated is read from /metrics.
		var lives []string
		for _, s := range c.servers {
			prof := filepath.Join(work, "heap.pprof")
			if *pprofDir != "" {
				prof = filepath.Join(*pprofDir, fmt.Sprintf("steady-%05d-%s.heap.pprof", p.rollouts, s.id))
			}
			if err := c.fetch(s, "/debug/pprof/heap?gc=1", prof, 60*time.Second); err != nil {
				fmt.Fprintf(os.Stderr, "bench: heap of %s: %v\n", s.id, err)
			}
			live := int64(c.metrics(s, "go_memstats_heap_alloc_bytes")["go_memstats_heap_alloc_bytes"] / 1024)
			p.liveKiB = append(p.liveKiB, live)
			p.maxLiveKiB = max(p.maxLiveKiB, live)
			lives = append(lives, fmt.Sprintf("%.0f", float64(live)/1024))
		}
		fmt.Printf("%9s live heap after a GC MiB: %s\n", "", strings.Join(lives, "/"))
		points = append(points, p)
		if last || p.rollouts >= total || time.Now().After(deadline) {
			break
		}
		open(next+every, false)
	}
	durMu.Lock()
	var rolloutMedian time.Duration
	if len(durs) > 0 {
		rolloutMedian = median(durs)
	}
	durMu.Unlock()
	fmt.Printf("%s rollouts in %s (checkpoints included): %.1f rollouts/s; one rollout (StartRollout to succeeded, %d in parallel) median %s\n",
		commas(int(done.Load())), time.Since(began).Round(time.Second), float64(done.Load())/time.Since(began).Seconds(), nApps, rolloutMedian.Round(time.Millisecond))
	addRow(steadyRow(points, total, nAgents, nApps, missing))
	return nil
}

// steadyStaleStarts counts rollout starts refused NotFound for a release
// whose creation had just succeeded.
var steadyStaleStarts atomic.Int64

// steadyRollout creates a release of app and rolls it out to env all at
// once, until it succeeds. A leader change on the way is waited out.
func steadyRollout(ctx context.Context, ctl relv1.ControlServiceClient, app, env, version string) (time.Duration, error) {
	sum := sha256.Sum256([]byte(app + version))
	if err := retryUnavailable(ctx, func(ctx context.Context) error {
		_, err := ctl.CreateRelease(ctx, &relv1.CreateReleaseRequest{App: app, Version: version,
			ArtifactUrl: "https://artifacts.invalid/" + app + "-" + version + ".tar.gz", Sha256: hex.EncodeToString(sum[:])})
		return err
	}); err != nil {
		return 0, err
	}
	start := time.Now()
	var resp *relv1.StartRolloutResponse
	for {
		err := retryUnavailable(ctx, func(ctx context.Context) (err error) {
			resp, err = ctl.StartRollout(ctx, &relv1.StartRolloutRequest{App: app, Version: version, Environment: env})
			return err
		})
		if err == nil {
			break
		}
		// The release was just created (its CreateRelease answered): a
		// NotFound means the replica that planned the rollout was still
		// behind (seen under heavy load; the leader plans without a
		// barrier, and a new leader may not have applied its log yet).
		// Counted and shown, then asked again (a new request id: the
		// refusal was an answer).
		if status.Code(err) != codes.NotFound || time.Since(start) > time.Minute {
			return 0, err
		}
		if steadyStaleStarts.Add(1) == 1 {
			fmt.Printf("note: %s@%s: StartRollout answered NotFound right after its CreateRelease succeeded (a replica behind): %v; retrying, counted in the row\n", app, version, err)
		}
		if !retry.Sleep(ctx, retry.Jitter(200*time.Millisecond)) {
			return 0, err
		}
	}
	st, err := waitRolloutOn(ctx, ctl, resp.GetRollout().GetId())
	if err != nil {
		return 0, err
	}
	if s := st.GetRollout().GetState(); s != "succeeded" {
		return 0, fmt.Errorf("rollout %s ended %s: %s", resp.GetRollout().GetId(), s, st.GetRollout().GetReason())
	}
	return time.Since(start), nil
}

// steadyReleasesKept counts old releases the cluster refused to delete
// (FailedPrecondition: a host or a rollback may still need it).
var steadyReleasesKept atomic.Int64

// steadyDeleteRelease deletes app@version as a pipeline's release
// retention does. A refusal because something may still need it is
// counted, not an error: the release stays, as it should.
func steadyDeleteRelease(ctx context.Context, ctl relv1.ControlServiceClient, app, version string) error {
	err := retryUnavailable(ctx, func(ctx context.Context) error {
		_, err := ctl.DeleteRelease(ctx, &relv1.DeleteReleaseRequest{App: app, Version: version})
		return err
	})
	switch status.Code(err) {
	case codes.OK:
		return nil
	case codes.FailedPrecondition:
		if steadyReleasesKept.Add(1) == 1 {
			fmt.Printf("note: release delete %s@%s refused (kept): %v; counted in the row\n", app, version, err)
		}
		return nil
	}
	return fmt.Errorf("release delete %s@%s: %w", app, version, err)
}

// retryUnavailable calls f until it answers anything but Unavailable (no
// leader yet, leadership moved), for at most a minute, with jittered
// backoff. Every attempt carries the same request id, as relctl's do, so
// a write applied before its answer was lost is not applied twice.
func retryUnavailable(ctx context.Context, f func(context.Context) error) error {
	ctx = metadata.AppendToOutgoingContext(ctx, reqid.MetadataKey, reqid.New())
	deadline := time.Now().Add(time.Minute)
	backoff := 100 * time.Millisecond
	for {
		err := f(ctx)
		if status.Code(err) != codes.Unavailable || time.Now().After(deadline) {
			return err
		}
		if !retry.Sleep(ctx, retry.Jitter(backoff)) {
			return err
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// steadyFlat compares the end of the run with its middle: the growth of
// RSS, snapshot and live heap (each checkpoint's highest server) from the
// mean of the steadyFlatWindow checkpoints nearest halfway to the mean of
// the last steadyFlatWindow, and the two windows' names. Means, not one
// checkpoint each: where a checkpoint falls between two retention passes
// moves what the replicas hold by the rollouts of up to one pass interval
// (at 5,000 rollouts one run's three replicas held snapshots of 22.4, 24.8
// and 25.1 MiB of the same state, snapshotted at different moments), and
// one checkpoint against another compared those moments as much as growth.
func steadyFlat(points []steadyPoint) (half, end string, rssG, snapG, liveG float64) {
	w := min(steadyFlatWindow, len(points))
	final := points[len(points)-1]
	// The window nearest halfway: centred on the checkpoint nearest half
	// of the rollouts done, kept within the series.
	mid := 0
	for i, p := range points {
		if abs(p.rollouts-final.rollouts/2) < abs(points[mid].rollouts-final.rollouts/2) {
			mid = i
		}
	}
	lo := min(max(mid-w/2, 0), len(points)-w)
	hw, ew := points[lo:lo+w], points[len(points)-w:]
	mean := func(ps []steadyPoint, f func(steadyPoint) int64) float64 {
		var sum float64
		for _, p := range ps {
			sum += float64(f(p))
		}
		return sum / float64(len(ps))
	}
	growth := func(f func(steadyPoint) int64) float64 {
		a, b := mean(hw, f), mean(ew, f)
		if a == 0 {
			return 0
		}
		return (b - a) / a
	}
	name := func(ps []steadyPoint) string {
		if len(ps) == 1 {
			return commas(ps[0].rollouts)
		}
		return commas(ps[0].rollouts) + "-" + commas(ps[len(ps)-1].rollouts)
	}
	return name(hw), name(ew),
		growth(func(p steadyPoint) int64 { return p.maxRSSKiB }),
		growth(func(p steadyPoint) int64 { return p.maxSnapBytes }),
		growth(func(p steadyPoint) int64 { return p.maxLiveKiB })
}

// steadyRow turns the series into the table's row: the highest figures of
// the run against the goals, and whether the end is flat against halfway.
func steadyRow(points []steadyPoint, total, nAgents, nApps int, missing []string) row {
	final := points[len(points)-1]
	var maxRSS, maxSnap, maxDB int64
	var maxList time.Duration
	var histFail, listFail []string
	for _, p := range points {
		maxRSS, maxSnap, maxList = max(maxRSS, p.maxRSSKiB), max(maxSnap, p.maxSnapBytes), max(maxList, p.list)
		for _, b := range p.dbBytes {
			maxDB = max(maxDB, b)
		}
		if p.historyErr != nil {
			histFail = append(histFail, commas(p.rollouts))
		}
		if p.listErr != nil {
			listFail = append(listFail, commas(p.rollouts))
		}
	}
	half, end, rssG, snapG, liveG := steadyFlat(points)
	var maxLive int64
	for _, p := range points {
		maxLive = max(maxLive, p.maxLiveKiB)
	}
	// Flat is judged on what the replicas hold (the live heap after a GC)
	// and the snapshot; RSS is shown beside it, but where a checkpoint
	// falls in a GC cycle moves it by up to the GC's headroom (GOGC=100:
	// as much again as the live heap), which is noise, not growth.
	flat := "flat"
	if liveG > steadyFlatGrowth || snapG > steadyFlatGrowth {
		flat = "NOT flat"
	}
	name := fmt.Sprintf("steady state: %d agents, %s rollouts", nAgents, commas(total))
	figure := fmt.Sprintf("one run, %s all-at-once rollouts (%d apps in parallel, each its own environment over the same hosts, back to back, %s; rollouts kept 1m (newest 20), history, deployment records and archived audit records 2m (archived at every checkpoint), each app deleting its release %d versions back; a retention pass every 10s; checkpoints every tenth, rollouts paused) in %s; "+
		"max RSS %d MiB (live heap after a GC at most %d MiB), snapshot %.1f MiB, raft.db %.1f MiB, rollout list p50 %d ms (worst checkpoint; each p50 of 10 relctl runs); "+
		"from the checkpoints at %s to those at %s rollouts (means of each checkpoint's highest server): live heap %+.0f %%, snapshot %+.0f %% (%s), RSS %+.0f %%",
		commas(final.rollouts), nApps, paceText(), *steadyReleaseKeep, final.at.Round(time.Second), maxRSS/1024, maxLive/1024, float64(maxSnap)/(1<<20), float64(maxDB)/(1<<20), maxList.Milliseconds(),
		half, end, liveG*100, snapG*100, flat, rssG*100)
	if n := steadyStaleStarts.Load(); n > 0 {
		figure += fmt.Sprintf("; %d starts refused NotFound for the release whose creation had just succeeded (a replica behind), retried", n)
	}
	if n := steadyReleasesKept.Load(); n > 0 {
		figure += fmt.Sprintf("; %d old releases refused deletion (still needed), kept", n)
	}
	if len(missing) > 0 {
		figure += "; without " + strings.Join(missing, ", ") + " (not in this rel-server)"
	}
	verdicts := []string{
		atMost(float64(maxRSS)/1024, steadyRSSGoalMiB, "MiB RSS"),
		atMost(float64(maxSnap)/(1<<20), steadySnapGoalMiB, "MiB snapshot"),
		atMost(float64(maxList.Milliseconds()), float64(steadyListGoal.Milliseconds()), "ms list p50"),
	}
	if flat != "flat" {
		verdicts = append(verdicts, fmt.Sprintf("missed: not flat (live heap %+.0f %%, snapshot %+.0f %% from the checkpoints at %s to those at %s rollouts; want within %+.0f %%)",
			liveG*100, snapG*100, half, end, steadyFlatGrowth*100))
	}
	if len(listFail) > 0 {
		verdicts = append(verdicts, "missed: relctl rollout list failed at "+strings.Join(listFail, ", ")+" rollouts")
	}
	if len(histFail) > 0 {
		verdicts = append(verdicts, "missed: relctl history failed at "+strings.Join(histFail, ", ")+" rollouts")
	}
	if final.rollouts < total {
		verdicts = append(verdicts, fmt.Sprintf("missed: only %s of %s rollouts within -steady-max-time", commas(final.rollouts), commas(total)))
	}
	return row{name: name, figure: figure,
		goal:    fmt.Sprintf("flat after retention starts: RSS ≤ %d MiB, snapshot ≤ %d MiB, list p50 ≤ %d ms; relctl rollout list and history work throughout", steadyRSSGoalMiB, steadySnapGoalMiB, steadyListGoal.Milliseconds()),
		verdict: both(verdicts...)}
}

func abs(n int) int { return max(n, -n) }

// paceText says how the starts were paced.
func paceText() string {
	if *steadyRate <= 0 {
		return "unpaced"
	}
	return fmt.Sprintf("started at %g a second", *steadyRate)
}

// raftFiles is the size of a server's raft.db and of its newest snapshot
// (0 while it has none), found under its data dir.
func raftFiles(dir string) (db, snap int64) {
	var newest time.Time
	filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		switch {
		case d.Name() == "raft.db":
			db = info.Size()
		case d.Name() == "state.bin" && filepath.Base(filepath.Dir(filepath.Dir(path))) == "snapshots":
			// raft's file snapshot store writes state.bin then
			// meta.json: the newest complete one is the figure.
			if fileExists(filepath.Join(filepath.Dir(path), "meta.json")) && info.ModTime().After(newest) {
				newest, snap = info.ModTime(), info.Size()
			}
		}
		return nil
	})
	return db, snap
}

// joinMiB prints figures as MiB, "a/b/c"; perMiB is how many of their
// units make a MiB.
func joinMiB(xs []int64, perMiB int64) string {
	var out []string
	for _, x := range xs {
		out = append(out, fmt.Sprintf("%.1f", float64(x)/float64(perMiB)))
	}
	return strings.Join(out, "/")
}

// adminFiles writes an admin client certificate and its key for relctl,
// which reads them from files.
func adminFiles(p *benchPKI) (certFile, keyFile string, err error) {
	if p == nil {
		return "", "", errors.New("the steady suite needs TLS")
	}
	certPEM, keyPEM, err := p.ca.Issue(pki.Leaf{Identity: pki.Identity{Kind: pki.KindClient, ID: "bench-relctl", Role: string(auth.Admin)}}, time.Now())
	if err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(p.dir, "relctl.pem"), filepath.Join(p.dir, "relctl-key.pem")
	if err := pki.WriteFile(certFile, certPEM, 0o644, false); err != nil {
		return "", "", err
	}
	return certFile, keyFile, pki.WriteFile(keyFile, keyPEM, 0o600, false)
}

func init() { register(suite{name: "steady", run: runSteady}) }
