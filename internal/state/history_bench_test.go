package state

import (
	"fmt"
	"runtime"
	"strings"
	"testing"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// BenchmarkHistoryMemory: the live heap the history of 200 hosts x 500
// versions keeps, per entry (heap-B/entry), as the FSM records it: one
// batch of healthy reports per version, each closing the host's previous
// entry and opening one. Every report carries its own copies of the
// strings, as reports unmarshalled from the raft log do. Run it with
// -benchtime=1x; each op records the whole history into a fresh store.
func BenchmarkHistoryMemory(b *testing.B) {
	const hosts, versions = 200, 500
	var perEntry float64
	for b.Loop() {
		perEntry = historyHeapPerEntry(b, hosts, versions)
	}
	b.ReportMetric(perEntry, "heap-B/entry")
}

// historyHeapPerEntry records hosts x versions history entries into a new
// store and returns the heap they keep alive, per entry.
func historyHeapPerEntry(b *testing.B, hosts, versions int) float64 {
	b.Helper()
	s := New()
	idx := uint64(0)
	for h := range hosts {
		idx++
		id := fmt.Sprintf("host-%03d", h)
		if err := s.AgentUp(idx, &relv1.Agent{Id: id, SessionId: "s-" + id, ServerId: "s1"}, nil); err != nil {
			b.Fatal(err)
		}
	}
	// A first report per host, so the agent_apps rows exist before the
	// heap is read: only history grows from here on.
	report := func(v int) {
		reps := make([]*relv1.AgentReport, 0, hosts)
		for h := range hosts {
			id := fmt.Sprintf("host-%03d", h)
			reps = append(reps, &relv1.AgentReport{AgentId: id, SessionId: "s-" + id, Report: &relv1.AppReport{
				App: strings.Clone("web"), Version: fmt.Sprintf("1.%d.0", v), Phase: "healthy",
				RolloutId: fmt.Sprintf("ro-01J9ZQ8W3X5V7T%012d", v), AtUnixNano: int64(v)*1e9 + int64(h)}})
		}
		idx++
		if err := s.ApplyReports(idx, reps); err != nil {
			b.Fatal(err)
		}
	}
	report(0)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for v := 1; v < versions; v++ {
		report(v)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	hs, _, err := s.History(nil, "web")
	if err != nil || len(hs) != hosts*versions {
		b.Fatalf("history has %d entries (%v), want %d", len(hs), err, hosts*versions)
	}
	runtime.KeepAlive(s)
	return float64(after.HeapAlloc-before.HeapAlloc) / float64(hosts*(versions-1))
}
