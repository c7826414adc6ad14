// Command bench measures Rel on this machine and prints figures (it is not a
// pass/fail test: machines here are shared and noisy). Run it with
// `make bench`, which builds bin/ first, and the baseline binaries into
// bin/baseline (scripts/bench-baseline.sh). Suites (-suite, default all):
//
// raftbytes: the bytes a rolling rollout (max-parallel 1) writes to the
// raft log over 1,000, 2,000 and 5,000 simulated hosts, in-process with the
// real planner, engine commit, encoding and FSM (internal/rollout/rolloutsim),
// beside what the same rollout wrote when every step carried the whole
// rollout row. Needs no binaries: `go run ./scripts/bench -suite raftbytes`
// (or `make bench-raftbytes`) runs only this, in about a minute.
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
//
// Every cluster runs with mutual TLS, as rel-server must: the bench makes a
// CA and the servers' certificates in-process (internal/pki), talks to the
// servers with an admin client certificate, and its agents enrol with a
// join token and the CA file.
//
// The cost of security: with -baseline-bin DIR (binaries of the last commit
// before security, which are plaintext and take no TLS flags), the agents
// and latency suites also run the same measurements on baseline clusters,
// interleaved with the TLS ones (TLS, baseline, TLS, baseline, ...: -runs
// clusters of each, each started afresh and timed after a warm-up), so
// that the machine's noise and drift hit both alike, and print the medians
// side by side with the ratio TLS/baseline. The failover suite runs with
// TLS only.
package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/relhq/rel/internal/testport"
)

var (
	suiteFlag   = flag.String("suite", "table", "table (every row of the table), security (agents and latency, beside -baseline-bin), or a comma-separated list of suite names")
	binDir      = flag.String("bin", "bin", "directory holding rel-server and rel-agent")
	agents      = flag.Int("agents", 2000, "simulated agents")
	rollouts    = flag.Int("rollouts", 5, "rollouts to time (the median is reported) when there is no baseline")
	baselineBin = flag.String("baseline-bin", "", "directory holding the baseline (plaintext) rel-server and rel-agent to compare with; empty: no comparison")
	runsFlag    = flag.Int("runs", 5, "with -baseline-bin: clusters of each kind per figure, interleaved (the median is reported)")
	tableFile   = flag.String("write-table", "", "after a run with rows, put the table, the date, the commit and the machine between the bench markers of these files, comma-separated (make bench: docs/PERFORMANCE.md and README.md)")
	pprofDir    = flag.String("pprof", "", "agents suite: save the servers' CPU profiles over each timed rollout in this directory; idle suite: their CPU profiles over the first window; reconnect suite: the survivors' over the first 20 s of each storm; streams suite: their heap profiles with the agents connected; steady suite: their heap profiles at every checkpoint (TLS servers run with --enable-debug)")
)

// base is the baseline flavor, nil without -baseline-bin; basePerConn the
// baseline with one connection per simulated agent (as real agents, and
// TLS's simulated agents, have), nil when the baseline has no
// rel-agent-perconn.
var base, basePerConn *flavor

// tlsBin holds the copies of -bin's binaries the bench runs.
var tlsBin string

func tlsFlavor() flavor { return flavor{name: "tls", bin: tlsBin, tls: true} }

// copyBinaries copies rel-server and rel-agent from dir to a new
// directory to.
func copyBinaries(dir, to string) error {
	if err := os.MkdirAll(to, 0o755); err != nil {
		return err
	}
	for _, name := range []string{"rel-server", "rel-agent"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(to, name), b, 0o755); err != nil {
			return err
		}
	}
	return nil
}

func main() {
	flag.Parse()
	order, err := selectSuites(*suiteFlag)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	inProcess := true
	for _, name := range order {
		inProcess = inProcess && suites[name].inProcess
	}
	if inProcess {
		// No binaries to copy, no cluster, no baseline.
		for _, name := range order {
			fmt.Println("== " + name)
			if err := suites[name].run(); err != nil {
				fmt.Fprintln(os.Stderr, "bench:", name+":", err)
				os.Exit(1)
			}
		}
		printTable(os.Stdout)
		return
	}
	if *runsFlag < 1 {
		fmt.Fprintf(os.Stderr, "bench: -runs %d: at least 1\n", *runsFlag)
		os.Exit(2)
	}
	// Run copies of the binaries: a `make build` elsewhere while the bench
	// runs must not swap them between runs.
	binCopies, err := os.MkdirTemp("", "rel-bench-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	defer os.RemoveAll(binCopies)
	tlsBin = filepath.Join(binCopies, "tls")
	if err := copyBinaries(*binDir, tlsBin); err != nil {
		fmt.Fprintf(os.Stderr, "bench: -bin %s: %v (make build)\n", *binDir, err)
		os.RemoveAll(binCopies)
		os.Exit(2)
	}
	if *baselineBin != "" {
		dir := filepath.Join(binCopies, "baseline")
		if err := copyBinaries(*baselineBin, dir); err != nil {
			fmt.Fprintf(os.Stderr, "bench: -baseline-bin %s: %v (scripts/bench-baseline.sh builds it)\n", *baselineBin, err)
			os.RemoveAll(binCopies)
			os.Exit(2)
		}
		base = &flavor{name: "plaintext", bin: dir}
		if perconn := filepath.Join(*baselineBin, "rel-agent-perconn"); fileExists(perconn) {
			pdir := filepath.Join(binCopies, "baseline-perconn")
			if err := copyBinaries(*baselineBin, pdir); err == nil {
				if b, err := os.ReadFile(perconn); err == nil && os.WriteFile(filepath.Join(pdir, "rel-agent"), b, 0o755) == nil {
					basePerConn = &flavor{name: "plaintext-perconn", bin: pdir}
				}
			}
		}
		fmt.Printf("comparing with the baseline in %s (%s): plaintext, %d clusters of each kind per figure, interleaved\n", *baselineBin, baselineName(), *runsFlag)
	} else {
		fmt.Println("no -baseline-bin: TLS figures only, without the comparison")
	}
	fmt.Printf("machine: %d CPUs, load average %s at the start (other work on the machine is noise for every figure)\n", runtime.NumCPU(), loadAvg())
	began, measured := time.Now(), commit()
	for _, name := range order {
		fmt.Printf("== %s\n", name)
		currentSuite = name
		if err := suites[name].run(); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", name+":", err)
			os.RemoveAll(binCopies)
			os.Exit(1)
		}
	}
	if len(costLines) > 0 {
		fmt.Printf("== cost of security: TLS (this tree) vs baseline %s (plaintext), same machine, interleaved, medians of %d; min-max in brackets\n", baselineName(), *runsFlag)
		for _, name := range []string{"latency", "agents"} {
			for _, l := range costLines[name] {
				fmt.Println(l)
			}
		}
	}
	fmt.Printf("bench took %s; load average %s at the end\n", time.Since(began).Round(time.Second), loadAvg())
	if len(table) > 0 {
		fmt.Printf("== table (%d CPUs; each figure a median of the runs it names)\n", runtime.NumCPU())
		printTable(os.Stdout)
		if *tableFile != "" {
			for _, f := range strings.Split(*tableFile, ",") {
				if err := writeTable(f, began.UTC().Format("2006-01-02 15:04 MST"), time.Since(began).Round(time.Second).String(), measured); err != nil {
					fmt.Fprintln(os.Stderr, "bench: -write-table:", err)
					os.Exit(1)
				}
				fmt.Println("table written to", f)
			}
		}
	}
}

// selectSuites turns -suite into the suites to run, in order: "table"
// (the default: tableOrder, skipping any not built into this bench),
// "security" (agents and latency; with -baseline-bin, beside the
// plaintext baseline), or a comma-separated list of names.
func selectSuites(arg string) ([]string, error) {
	var names []string
	switch arg {
	case "table", "all":
		for _, n := range tableOrder {
			if _, ok := suites[n]; ok {
				names = append(names, n)
			}
		}
		return names, nil
	case "security":
		return []string{"agents", "latency"}, nil
	}
	for _, n := range strings.Split(arg, ",") {
		n = strings.TrimSpace(n)
		if _, ok := suites[n]; !ok {
			known := make([]string, 0, len(suites))
			for k := range suites {
				known = append(known, k)
			}
			sort.Strings(known)
			return nil, fmt.Errorf("-suite %q: no suite %q; use table, security or some of %s", arg, n, strings.Join(known, ", "))
		}
		names = append(names, n)
	}
	return names, nil
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// loadAvg is the 1, 5 and 15 minute load averages.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// baselineName is the commit the baseline binaries were built from.
func baselineName() string {
	b, err := os.ReadFile(filepath.Join(*baselineBin, ".commit"))
	if err != nil {
		return "(commit unknown)"
	}
	c := strings.TrimSpace(string(b))
	if len(c) > 7 {
		c = c[:7]
	}
	return c
}

// costLines are the comparison lines of each suite, printed again
// together at the end.
var (
	costLines    = map[string][]string{}
	currentSuite string
)

func costLine(l string) {
	fmt.Println("cost of security: " + l)
	costLines[currentSuite] = append(costLines[currentSuite], l)
}

// cost prints the median and range of a figure with TLS beside the
// baseline's, and the ratio. budget marks the figures the security issue
// allows 10 % on.
func cost(what string, tm time.Duration, t []time.Duration, bm time.Duration, b []time.Duration, budget bool) {
	ratio := float64(tm) / float64(bm)
	l := fmt.Sprintf("%s: TLS median %s (%s-%s), baseline %s (%s-%s): x%.2f",
		what, secs(tm), secsBare(minD(t)), secsBare(maxD(t)), secs(bm), secsBare(minD(b)), secsBare(maxD(b)), ratio)
	if budget {
		if ratio <= 1.10 {
			l += " (within 10 %)"
		} else {
			l += " (ABOVE 10 %)"
		}
	}
	costLine(l)
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

func secsBare(d time.Duration) string { return fmt.Sprintf("%.2f", d.Seconds()) }

func commas(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

type server struct {
	id, grpc, raft, http, dir string
	certFile, keyFile         string
	cmd                       *exec.Cmd
}

func freePort() string {
	addr, err := testport.Addr()
	if err != nil {
		panic(err)
	}
	return addr
}

// lastIndex is the highest raft last_index among the servers.
func (c *cluster) lastIndex() uint64 {
	var max uint64
	for _, s := range c.servers {
		if s.cmd == nil || s.cmd.ProcessState != nil {
			continue
		}
		if v := uint64(c.metrics(s, "rel_raft_last_index")["rel_raft_last_index"]); v > max {
			max = v
		}
	}
	return max
}

// metrics reads the named gauges from server s's /metrics (0 for those it
// does not find).
func (c *cluster) metrics(s *server, names ...string) map[string]float64 {
	out := map[string]float64{}
	resp, err := c.sec.admin.Get(c.sec.scheme + "://" + s.http + "/metrics")
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		for _, n := range names {
			if v, ok := strings.CutPrefix(sc.Text(), n+" "); ok {
				out[n], _ = strconv.ParseFloat(v, 64)
			}
		}
	}
	return out
}

func rssKiB(pid int) int { return statusKiB(pid, "VmRSS:") }

// statusKiB is a field of /proc/<pid>/status counted in kB (VmRSS:,
// VmHWM:), 0 when it cannot be read.
func statusKiB(pid int, field string) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field); ok {
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

func medianI(xs []int) int {
	if len(xs) == 0 {
		return 0
	}
	s := append([]int(nil), xs...)
	sort.Ints(s)
	return s[len(s)/2]
}

// rangeMiB is "min-max" of KiB figures, in MiB.
func rangeMiB(kib []int) string {
	if len(kib) == 0 {
		return "?"
	}
	s := append([]int(nil), kib...)
	sort.Ints(s)
	if s[0]/1024 == s[len(s)-1]/1024 {
		return strconv.Itoa(s[0] / 1024)
	}
	return fmt.Sprintf("%d-%d", s[0]/1024, s[len(s)-1]/1024)
}

// cpuTime is the CPU time (user+system) the processes used so far.
func cpuTime(pids ...int) time.Duration {
	var ticks int64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		// The fields after the command name, which is in parentheses.
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 13 {
			continue
		}
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		ticks += u + s
	}
	return time.Duration(ticks) * time.Second / 100 // USER_HZ
}

// processExited reports whether pid is gone or a zombie (exited, not yet
// waited for).
func processExited(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || b[i+2] == 'Z'
}
