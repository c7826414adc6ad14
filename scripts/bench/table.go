package main

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
)

// row is one line of the table `make bench` prints at the end: what was
// measured, the figure (a median of several runs, with its range and run
// count), the goal issue 10 sets, and whether it was met or by how much
// it was missed.
type row struct {
	name    string // "fan-out: 10,000 agents, all at once"
	figure  string // "0.82 s (median of 5, 0.78-0.95); servers 310-340 MiB RSS (31 KiB/agent)"
	goal    string // "≤ 1 s; RSS ≤ 20 KiB per agent"
	verdict string // "met", or "missed: ..." (see atMost)
}

var (
	tableMu sync.Mutex
	table   []row
)

// addRow records a row for the final table and prints it at once, so a
// long bench shows its progress.
func addRow(r row) {
	tableMu.Lock()
	table = append(table, r)
	tableMu.Unlock()
	fmt.Printf("ROW | %s | %s | %s | %s\n", r.name, r.figure, r.goal, r.verdict)
}

// printTable writes the rows as one Markdown table (docs/PERFORMANCE.md
// keeps the latest).
func printTable(w io.Writer) {
	tableMu.Lock()
	defer tableMu.Unlock()
	fmt.Fprintln(w, "| measurement | figure | goal | verdict |")
	fmt.Fprintln(w, "|---|---|---|---|")
	for _, r := range table {
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", cell(r.name), cell(r.figure), cell(r.goal), cell(r.verdict))
	}
}

func cell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

// atMost is the verdict for a figure whose goal is an upper bound: "met",
// or "missed by X (Y %)" with X in the figure's unit.
func atMost(value, goal float64, unit string) string {
	if value <= goal {
		return "met"
	}
	return fmt.Sprintf("missed by %s %s (%.0f %% over)", trim(value-goal), unit, (value-goal)/goal*100)
}

// atLeast is the verdict for a figure whose goal is a lower bound.
func atLeast(value, goal float64, unit string) string {
	if value >= goal {
		return "met"
	}
	return fmt.Sprintf("missed by %s %s (%.0f %% under)", trim(goal-value), unit, (goal-value)/goal*100)
}

// both joins the verdicts of a row with two goals.
func both(vs ...string) string {
	var missed []string
	for _, v := range vs {
		if v != "met" {
			missed = append(missed, v)
		}
	}
	if len(missed) == 0 {
		return "met"
	}
	return strings.Join(missed, "; ")
}

func trim(f float64) string {
	switch {
	case f >= 100:
		return fmt.Sprintf("%.0f", f)
	case f >= 10:
		return fmt.Sprintf("%.1f", f)
	default:
		return fmt.Sprintf("%.2f", f)
	}
}

// suite is one measurement of the bench. Suites register themselves (see
// register) and run in the order of tableOrder.
type suite struct {
	name string
	run  func() error
	// inProcess: needs no binaries and no cluster.
	inProcess bool
}

var suites = map[string]suite{}

func register(s suite) { suites[s.name] = s }

// tableOrder is the order of `make bench` (-suite table): the rows of
// issue 10's table, then the raft bytes and the deploy latency that the
// earlier issues measured. "agents" (with -baseline-bin, the cost of TLS)
// runs only when asked for by name (make bench-security).
var tableOrder = []string{"fanout", "streams", "reconnect", "failover", "idle", "reports", "steady", "agentfoot", "install", "raftbytes", "latency"}

// writeTable replaces what lies between the bench markers of file (docs/
// PERFORMANCE.md) with the table, the date, the commit and the machine it
// ran on, keeping the prose around it (why a goal is missed) as written.
func writeTable(file, began, took, measured string) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	const open, close = "<!-- bench:begin -->", "<!-- bench:end -->"
	s := string(b)
	i, j := strings.Index(s, open), strings.Index(s, close)
	if i < 0 || j < i {
		return fmt.Errorf("%s: no %s ... %s markers to put the table between", file, open, close)
	}
	var t strings.Builder
	fmt.Fprintf(&t, "%s\nMeasured %s on %s (commit %s); the bench took %s.\n\n", open, began, machine(), measured, took)
	printTable(&t)
	t.WriteString("\n")
	return os.WriteFile(file, []byte(s[:i]+t.String()+s[j:]), 0o644)
}

// machine names the CPU, its cores and the memory.
func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kib int
		if _, err := fmt.Sscanf(string(b), "MemTotal: %d kB", &kib); err == nil {
			mem = fmt.Sprintf(", %.0f GiB", float64(kib)/(1<<20))
		}
	}
	return fmt.Sprintf("%s, %d CPUs%s, %s", model, runtime.NumCPU(), mem, runtime.Version())
}

// commit names the tree the bench measures; read at its start, since
// commits made while it runs are not in the binaries it copied.
func commit() string {
	out, err := exec.Command("git", "describe", "--always", "--dirty").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}
