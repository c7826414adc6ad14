package state

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"

	"github.com/hashicorp/go-memdb"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"
	"pgregory.net/rapid"

	"github.com/relhq/rel/internal/rollout"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// histModel is the reference of TestHistoryBucketsProperty: history as
// one plain map entry per entry, keyed by (app, agent, create index), as
// the table was before buckets, and the rules of recordHistory, FoldHistory
// and RemoveAgents written over it as plainly as they read.
type histModel struct {
	entries map[histKey]*relv1.HistoryEntry
	reports map[[2]string]modelReport           // (agent, app): the agent_apps row
	sums    map[[2]string]*relv1.HistorySummary // (app, agent)
	agents  map[string]*modelAgent              // the agents the store has
	kinds   map[string]string                   // rollout id: kind
}

type histKey struct {
	app, agent string
	create     uint64
}

type modelReport struct {
	rep     *relv1.AppReport
	attempt int64
}

type modelAgent struct {
	connected bool
	downAt    int64
}

func newHistModel() *histModel {
	return &histModel{entries: map[histKey]*relv1.HistoryEntry{}, reports: map[[2]string]modelReport{},
		sums: map[[2]string]*relv1.HistorySummary{}, agents: map[string]*modelAgent{}, kinds: map[string]string{}}
}

func keyOf(h *relv1.HistoryEntry) histKey {
	return histKey{h.GetApp(), h.GetAgentId(), h.GetCreateIndex()}
}

// sorted lists app's entries ("": every app's) by app, agent, create index.
func (m *histModel) sorted(app string) []*relv1.HistoryEntry {
	var out []*relv1.HistoryEntry
	for _, h := range m.entries {
		if app == "" || h.GetApp() == app {
			out = append(out, h)
		}
	}
	slices.SortFunc(out, func(a, b *relv1.HistoryEntry) int {
		return cmp.Or(cmp.Compare(a.GetApp(), b.GetApp()), cmp.Compare(a.GetAgentId(), b.GetAgentId()),
			cmp.Compare(a.GetCreateIndex(), b.GetCreateIndex()))
	})
	return out
}

// open is (app, agent)'s open entry: the last by create index, or nil.
func (m *histModel) open(app, agent string) *relv1.HistoryEntry {
	var open *relv1.HistoryEntry
	for _, h := range m.entries {
		if h.GetApp() == app && h.GetAgentId() == agent && h.GetToUnixNano() == 0 &&
			(open == nil || h.GetCreateIndex() > open.GetCreateIndex()) {
			open = h
		}
	}
	return open
}

func (m *histModel) put(index uint64, h *relv1.HistoryEntry) {
	h.ModifyIndex = index
	if h.CreateIndex == 0 {
		h.CreateIndex = index
	}
	m.entries[keyOf(h)] = h
}

// report is applyReport and recordHistory.
func (m *histModel) report(index uint64, agent string, rep *relv1.AppReport) {
	if m.agents[agent] == nil {
		return
	}
	app, at := rep.GetApp(), rep.GetAtUnixNano()
	k := [2]string{agent, app}
	old, had := m.reports[k]
	attempt := at
	var prev *relv1.AppReport
	if had {
		prev = old.rep
		if prev.GetVersion() == rep.GetVersion() && prev.GetRolloutId() == rep.GetRolloutId() && old.attempt != 0 {
			attempt = old.attempt
		}
	}
	m.reports[k] = modelReport{rep: rep, attempt: attempt}
	phase := rep.GetPhase()
	if phase != "starting" && phase != "verifying" && phase != "healthy" && phase != "failed" {
		return
	}
	if phase == "failed" && prev != nil && prev.GetPhase() == "failed" && prev.GetVersion() == rep.GetVersion() && prev.GetRolloutId() == rep.GetRolloutId() {
		return
	}
	open := m.open(app, agent)
	kind := m.kinds[rep.GetRolloutId()]
	if phase == "failed" {
		if open != nil && open.GetVersion() == rep.GetVersion() {
			if open.GetOutcome() != OutcomeFailed {
				failed := proto.Clone(open).(*relv1.HistoryEntry)
				failed.Outcome, failed.Reason, failed.FailedUnixNano = OutcomeFailed, rep.GetReason(), at
				m.put(index, failed)
			}
			return
		}
		from := attempt
		if from == 0 || from > at {
			from = at
		}
		m.put(index, &relv1.HistoryEntry{App: app, AgentId: agent, Version: rep.GetVersion(), FromUnixNano: from, ToUnixNano: at,
			RolloutId: rep.GetRolloutId(), RolloutKind: kind, Outcome: OutcomeFailed, Reason: rep.GetReason(), FailedUnixNano: at, CreateIndex: index})
		return
	}
	outcome := OutcomeStarting
	if phase == "healthy" {
		outcome = OutcomeRunning
	}
	if open != nil && open.GetVersion() == rep.GetVersion() {
		if !(open.GetOutcome() == OutcomeFailed && phase == "healthy") {
			if phase == "healthy" && open.GetOutcome() != OutcomeRunning {
				running := proto.Clone(open).(*relv1.HistoryEntry)
				running.Outcome = OutcomeRunning
				m.put(index, running)
			}
			return
		}
	}
	if open != nil {
		closed := proto.Clone(open).(*relv1.HistoryEntry)
		closed.ToUnixNano, closed.ReplacedByRolloutId, closed.ReplacedByKind = at, rep.GetRolloutId(), kind
		switch {
		case open.GetOutcome() == OutcomeFailed:
		case kind == rollout.KindRollback:
			closed.Outcome = OutcomeRolledBack
		default:
			closed.Outcome = OutcomeReplaced
		}
		m.put(index, closed) // replaced below when it was opened at index
	}
	m.put(index, &relv1.HistoryEntry{App: app, AgentId: agent, Version: rep.GetVersion(), FromUnixNano: at,
		RolloutId: rep.GetRolloutId(), RolloutKind: kind, Outcome: outcome, CreateIndex: index})
}

// foldable is what a fold at cutoff takes, in order.
func (m *histModel) foldable(cutoff int64, limit int) []*relv1.HistoryEntry {
	var out []*relv1.HistoryEntry
	for _, h := range m.sorted("") {
		if h.GetToUnixNano() >= 1 && h.GetToUnixNano() <= cutoff {
			out = append(out, h)
		}
	}
	slices.SortStableFunc(out, func(a, b *relv1.HistoryEntry) int { return cmp.Compare(a.GetToUnixNano(), b.GetToUnixNano()) })
	return out[:min(len(out), limit)]
}

func (m *histModel) fold(index uint64, cutoff int64, limit int) int {
	hs := m.foldable(cutoff, limit)
	for _, h := range hs {
		k := [2]string{h.GetApp(), h.GetAgentId()}
		sum := m.sums[k]
		if sum == nil {
			sum = &relv1.HistorySummary{App: h.GetApp(), AgentId: h.GetAgentId(), CreateIndex: index}
		} else {
			sum = proto.Clone(sum).(*relv1.HistorySummary)
		}
		foldInto(sum, h)
		sum.ModifyIndex = index
		m.sums[k] = sum
		delete(m.entries, keyOf(h))
	}
	return len(hs)
}

func (m *histModel) removeAgents(index uint64, ids []string, cutoff, at int64) int {
	removed := map[string]bool{}
	for _, id := range ids {
		a := m.agents[id]
		if a == nil || removed[id] || a.connected || a.downAt == 0 || a.downAt > cutoff {
			continue
		}
		delete(m.agents, id)
		for k := range m.reports {
			if k[0] == id {
				delete(m.reports, k)
			}
		}
		removed[id] = true
	}
	for _, h := range m.sorted("") {
		if removed[h.GetAgentId()] && h.GetToUnixNano() == 0 {
			closed := proto.Clone(h).(*relv1.HistoryEntry)
			closed.ToUnixNano, closed.ReplacedByKind = at, ReasonAgentRemoved
			m.put(index, closed)
		}
	}
	return len(removed)
}

// snapshotHistory is the history records of a snapshot, as the bytes
// Persist wrote them (each with its length prefix).
func snapshotHistory(t interface{ Fatal(...any) }, s *Store) []byte {
	var buf bytes.Buffer
	if err := s.Snapshot().Persist(&buf); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(&buf)
	var out []byte
	for {
		n, err := binary.ReadUvarint(br)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		msg := make([]byte, n)
		if _, err := io.ReadFull(br, msg); err != nil {
			t.Fatal(err)
		}
		rec := &relv1.SnapshotRecord{}
		if err := proto.Unmarshal(msg, rec); err != nil {
			t.Fatal(err)
		}
		if rec.GetHistory() != nil {
			out = binary.AppendUvarint(out, n)
			out = append(out, msg...)
		}
	}
}

var (
	propApps   = []string{"web", "web2"}
	propAgents = []string{"h1", "h10", "h2"} // h1 is a prefix of h10
)

// checkHistory compares the store with the model: History of each app,
// the open entry of each (app, agent), the summaries, a fold's choice at
// cutoff, and the snapshot's history records byte for byte.
func checkHistory(t *rapid.T, s *Store, m *histModel, cutoff int64, limit int) {
	historyRows(t, s, 32)
	equal := func(what string, got, want []*relv1.HistoryEntry) {
		if len(got) != len(want) {
			t.Fatalf("%s: %d entries, want %d:\n got %v\nwant %v", what, len(got), len(want), got, want)
		}
		for i := range got {
			if !proto.Equal(got[i], want[i]) {
				t.Fatalf("%s: entry %d is %v, want %v", what, i, got[i], want[i])
			}
		}
	}
	for _, app := range propApps {
		got, _, err := s.History(memdb.NewWatchSet(), app)
		if err != nil {
			t.Fatal(err)
		}
		equal("History("+app+")", got, m.sorted(app))
		sums, _, err := s.HistorySummaries(nil, app)
		if err != nil {
			t.Fatal(err)
		}
		var want []*relv1.HistorySummary
		for _, agent := range []string{"h1", "h10", "h2"} {
			if sum := m.sums[[2]string{app, agent}]; sum != nil {
				want = append(want, sum)
			}
		}
		if len(sums) != len(want) {
			t.Fatalf("summaries of %s: %v, want %v", app, sums, want)
		}
		for i := range sums {
			if !proto.Equal(sums[i], want[i]) {
				t.Fatalf("summary %d of %s: %v, want %v", i, app, sums[i], want[i])
			}
		}
		for _, agent := range propAgents {
			open, err := openHistory(s.readTxn(), app, agent)
			if err != nil {
				t.Fatal(err)
			}
			if want := m.open(app, agent); !proto.Equal(open, want) {
				t.Fatalf("open entry of (%s, %s): %v, want %v", app, agent, open, want)
			}
		}
	}
	got, err := foldable(s.readTxn(), cutoff, limit)
	if err != nil {
		t.Fatal(err)
	}
	equal(fmt.Sprintf("foldable(%d, %d)", cutoff, limit), got, m.foldable(cutoff, limit))
	if n, err := s.FoldableHistory(cutoff, limit); err != nil || n != len(got) {
		t.Fatalf("FoldableHistory: %d %v, want %d", n, err, len(got))
	}
	var want []byte
	for _, h := range m.sorted("") {
		if _, err := protodelim.MarshalTo(bytesWriter{&want}, &relv1.SnapshotRecord{Kind: &relv1.SnapshotRecord_History{History: h}}); err != nil {
			t.Fatal(err)
		}
	}
	if snap := snapshotHistory(t, s); !bytes.Equal(snap, want) {
		t.Fatalf("the snapshot's history records differ from one record per entry by (app, agent, create index):\n got %x\nwant %x", snap, want)
	}
}

type bytesWriter struct{ b *[]byte }

func (w bytesWriter) Write(p []byte) (int, error) { *w.b = append(*w.b, p...); return len(p), nil }

// TestHistoryBucketsProperty: random report batches (several reports of a
// host in one entry too), folds, agents going down, removed and back, and
// raw writes at any create index, with buckets of random sizes that
// change as it runs, leave the bucketed store answering what the plain
// model (one map entry per history entry) answers: History, the open
// entry, the summaries, what a fold takes and in which order, and the
// snapshot's bytes.
func TestHistoryBucketsProperty(t *testing.T) {
	defer func(n int) { historyBucketSize = n }(historyBucketSize)
	sizes := []int{1, 2, 3, 5, 32}
	rapid.Check(t, func(t *rapid.T) {
		historyBucketSize = rapid.SampledFrom(sizes).Draw(t, "bucket")
		s, m := New(), newHistModel()
		index := uint64(0)
		next := func() (uint64, int64) { index++; return index, int64(index) * 10 }
		idx, _ := next()
		if err := s.CreateApp(idx, &relv1.App{Name: "web"}); err != nil {
			t.Fatal(err)
		}
		idx, _ = next()
		if err := s.CreateRelease(idx, &relv1.Release{App: "web", Version: "1"}); err != nil {
			t.Fatal(err)
		}
		for _, r := range []struct{ id, kind, of string }{{"ro-d", rollout.KindDeploy, ""}, {"ro-r", rollout.KindRollback, "ro-d"}} {
			idx, _ := next()
			if err := s.CreateRollout(idx, &relv1.Rollout{Id: r.id, App: "web", Version: "1", Environment: "prod", Kind: r.kind, RollbackOf: r.of,
				State: rollout.StateSucceeded, Hosts: []*relv1.RolloutHost{{AgentId: "none", TargetVersion: "1"}}}, nil, nil); err != nil {
				t.Fatal(err)
			}
			m.kinds[r.id] = r.kind
		}
		up := func(agent string) {
			idx, _ := next()
			if err := s.AgentUp(idx, &relv1.Agent{Id: agent, SessionId: "s-" + agent, ServerId: "s1"}, nil); err != nil {
				t.Fatal(err)
			}
			m.agents[agent] = &modelAgent{connected: true}
		}
		for _, a := range propAgents {
			up(a)
		}
		steps := rapid.IntRange(1, 120).Draw(t, "steps")
		for range steps {
			agent := rapid.SampledFrom(propAgents).Draw(t, "agent")
			switch op := rapid.IntRange(0, 12).Draw(t, "op"); {
			case op <= 5: // a batch of reports
				idx, now := next()
				var batch []*relv1.AgentReport
				for range rapid.IntRange(1, 3).Draw(t, "reports") {
					a := rapid.SampledFrom(propAgents).Draw(t, "agent")
					rep := &relv1.AppReport{App: rapid.SampledFrom(propApps).Draw(t, "app"),
						Version:   rapid.SampledFrom([]string{"1", "2", "3"}).Draw(t, "version"),
						Phase:     rapid.SampledFrom([]string{"starting", "verifying", "healthy", "failed", "installing"}).Draw(t, "phase"),
						RolloutId: rapid.SampledFrom([]string{"ro-d", "ro-r", "ro-gone", ""}).Draw(t, "rollout"),
						Reason:    rapid.SampledFrom([]string{"", "exit 1"}).Draw(t, "reason"),
						// Server-stamped, but not always in order.
						AtUnixNano: now - int64(rapid.IntRange(0, 25).Draw(t, "early"))}
					batch = append(batch, &relv1.AgentReport{AgentId: a, SessionId: "s-" + a, Report: rep})
				}
				if err := s.ApplyReports(idx, batch); err != nil {
					t.Fatal(err)
				}
				for _, r := range batch {
					m.report(idx, r.GetAgentId(), proto.Clone(r.GetReport()).(*relv1.AppReport))
				}
			case op == 6: // a retention pass
				idx, now := next()
				cutoff := now - int64(rapid.IntRange(0, 300).Draw(t, "age"))
				limit := rapid.IntRange(1, 6).Draw(t, "limit")
				n, err := s.FoldHistory(idx, cutoff, limit)
				if want := m.fold(idx, cutoff, limit); err != nil || n != want {
					t.Fatalf("FoldHistory folded %d (%v), want %d", n, err, want)
				}
			case op == 7: // an agent goes down
				idx, now := next()
				err := s.AgentDown(idx, agent, "s-"+agent, now, "gone")
				if a := m.agents[agent]; a != nil && a.connected {
					a.connected, a.downAt = false, now
				} else if a == nil && err == nil {
					t.Fatalf("AgentDown of removed %s: no error", agent)
				}
			case op == 8: // agent retention
				idx, now := next()
				ids := []string{agent}
				if rapid.Bool().Draw(t, "two") {
					ids = append(ids, rapid.SampledFrom(propAgents).Draw(t, "agent"))
				}
				cutoff := now - int64(rapid.IntRange(0, 100).Draw(t, "age"))
				n, err := s.RemoveAgents(idx, ids, cutoff, now)
				if want := m.removeAgents(idx, ids, cutoff, now); err != nil || n != want {
					t.Fatalf("RemoveAgents removed %d (%v), want %d", n, err, want)
				}
			case op == 9: // an agent comes (back)
				up(agent)
			case op == 10: // raw writes: puts at any create index, deletes
				idx, now := next()
				txn := s.writeTxn()
				if rapid.Bool().Draw(t, "put") {
					h := &relv1.HistoryEntry{App: rapid.SampledFrom(propApps).Draw(t, "app"), AgentId: agent,
						Version: rapid.SampledFrom([]string{"1", "2", "3"}).Draw(t, "version"), FromUnixNano: now - 50,
						ToUnixNano: rapid.SampledFrom([]int64{0, now - 20}).Draw(t, "to"), Outcome: OutcomeReplaced,
						CreateIndex: rapid.Uint64Range(1, idx).Draw(t, "create")}
					if err := putHistory(txn, idx, proto.Clone(h).(*relv1.HistoryEntry)); err != nil {
						t.Fatal(err)
					}
					m.put(idx, h)
					txn.Commit()
					break
				}
				all := m.sorted("")
				var del []*relv1.HistoryEntry
				for i := range rapid.IntRange(0, 4).Draw(t, "deletes") {
					if len(all) == 0 || rapid.IntRange(0, 9).Draw(t, "any") == 0 {
						// Any key: between or after the entries, often none.
						del = append(del, &relv1.HistoryEntry{App: rapid.SampledFrom(propApps).Draw(t, "app"), AgentId: agent,
							CreateIndex: rapid.Uint64Range(1, idx+uint64(i)).Draw(t, "create")})
						continue
					}
					del = append(del, all[rapid.IntRange(0, len(all)-1).Draw(t, "entry")])
				}
				del = slices.CompactFunc(slices.SortedFunc(slices.Values(del), historyOrder), func(a, b *relv1.HistoryEntry) bool { return keyOf(a) == keyOf(b) })
				err := deleteHistory(txn, del...)
				missing := slices.ContainsFunc(del, func(h *relv1.HistoryEntry) bool { return m.entries[keyOf(h)] == nil })
				if missing != errors.Is(err, memdb.ErrNotFound) || err != nil && !missing {
					t.Fatalf("deleteHistory(%v): %v (missing %v)", del, err, missing)
				}
				if err == nil {
					txn.Commit()
					for _, h := range del {
						delete(m.entries, keyOf(h))
					}
				}
				txn.Abort()
			case op == 11: // the next writes see buckets of another size
				historyBucketSize = rapid.SampledFrom(sizes).Draw(t, "bucket")
			default: // a replica restored from a snapshot carries on
				var buf bytes.Buffer
				if err := s.Snapshot().Persist(&buf); err != nil {
					t.Fatal(err)
				}
				historyBucketSize = rapid.SampledFrom(sizes).Draw(t, "bucket")
				s = New()
				if err := s.Restore(&buf); err != nil {
					t.Fatal(err)
				}
			}
			checkHistory(t, s, m, int64(index)*10-int64(rapid.IntRange(0, 300).Draw(t, "cutoff age")), rapid.IntRange(1, 8).Draw(t, "limit"))
		}
	})
}

// TestHistorySnapshotRestore: a store whose buckets folds and agent
// removals have thinned, snapshotted and restored (into full buckets),
// gives the same History and the same next snapshot, byte for byte; and
// the two stay the same under the same further writes.
func TestHistorySnapshotRestore(t *testing.T) {
	a := New()
	idx := uint64(0)
	next := func() uint64 { idx++; return idx }
	hosts := make([]string, 20)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("host-%d", i+1) // host-1 is a prefix of host-10..19
		if err := a.AgentUp(next(), &relv1.Agent{Id: hosts[i], SessionId: "s-" + hosts[i], ServerId: "s1"}, nil); err != nil {
			t.Fatal(err)
		}
	}
	// Reports of version v on every host, in one entry.
	report := func(stores []*Store, v int) {
		t.Helper()
		i := next()
		var batch []*relv1.AgentReport
		for h, id := range hosts {
			phase := "healthy"
			if (v+h)%7 == 0 {
				phase = "failed"
			}
			batch = append(batch, &relv1.AgentReport{AgentId: id, SessionId: "s-" + id, Report: &relv1.AppReport{
				App: "web", Version: fmt.Sprintf("1.%d.0", v), Phase: phase, Reason: "exit 1", AtUnixNano: int64(i) * 10}})
		}
		for _, s := range stores {
			if err := s.ApplyReports(i, batch); err != nil {
				t.Fatal(err)
			}
		}
	}
	for v := range 100 {
		report([]*Store{a}, v)
		if v%10 == 9 {
			// Folds take the oldest ends of every host: the buckets of
			// the log-applied store keep their tails.
			if _, err := a.FoldHistory(next(), int64(idx)*10-300, 37); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := a.AgentDown(next(), "host-3", "s-host-3", int64(idx)*10, "gone"); err != nil {
		t.Fatal(err)
	}
	if n, err := a.RemoveAgents(next(), []string{"host-3"}, int64(idx)*10, int64(idx)*10); err != nil || n != 1 {
		t.Fatalf("RemoveAgents: %d %v", n, err)
	}
	snap := func(s *Store) []byte {
		var buf bytes.Buffer
		if err := s.Snapshot().Persist(&buf); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	first := snap(a)
	b := New()
	if err := b.Restore(bytes.NewReader(first)); err != nil {
		t.Fatal(err)
	}
	ha, _, err := a.History(nil, "web")
	if err != nil {
		t.Fatal(err)
	}
	hb, _, err := b.History(nil, "web")
	if err != nil {
		t.Fatal(err)
	}
	if len(ha) < 1000 || len(ha) != len(hb) {
		t.Fatalf("History: %d entries before the restore, %d after (want the same, over 1,000)", len(ha), len(hb))
	}
	for i := range ha {
		if !proto.Equal(ha[i], hb[i]) {
			t.Fatalf("History entry %d: %v before the restore, %v after", i, ha[i], hb[i])
		}
	}
	if ra, rb := historyRows(t, a, historyBucketSize), historyRows(t, b, historyBucketSize); ra == rb {
		t.Fatalf("both stores have %d buckets: the restore was to change the layout", ra)
	}
	if again := snap(b); !bytes.Equal(first, again) {
		t.Fatalf("the restored store's snapshot differs (%d bytes, was %d)", len(again), len(first))
	}
	for v := 100; v < 140; v++ {
		report([]*Store{a, b}, v)
	}
	i := next()
	for _, s := range []*Store{a, b} {
		if _, err := s.FoldHistory(i, int64(idx)*10-100, 500); err != nil {
			t.Fatal(err)
		}
	}
	if ok, why := Equal(a, b); !ok {
		t.Fatalf("after the same writes: %s", why)
	}
	if !bytes.Equal(snap(a), snap(b)) {
		t.Fatal("after the same writes, the snapshots differ")
	}
}

// TestHistoryRestoreAnyOrder: a snapshot whose history records are out
// of order or repeat a key (no build writes one, but inserting rows one by
// one took it: the later record of a key won) restores to the entries by
// (app, agent, create index), the later of a key kept.
func TestHistoryRestoreAnyOrder(t *testing.T) {
	defer func(n int) { historyBucketSize = n }(historyBucketSize)
	historyBucketSize = 2
	var buf bytes.Buffer
	write := func(rec *relv1.SnapshotRecord) {
		if _, err := protodelim.MarshalTo(&buf, rec); err != nil {
			t.Fatal(err)
		}
	}
	entry := func(agent, version string, create uint64) *relv1.SnapshotRecord {
		return &relv1.SnapshotRecord{Kind: &relv1.SnapshotRecord_History{History: &relv1.HistoryEntry{
			App: "web", AgentId: agent, Version: version, FromUnixNano: int64(create), CreateIndex: create, ModifyIndex: create}}}
	}
	write(&relv1.SnapshotRecord{Kind: &relv1.SnapshotRecord_Header{Header: &relv1.SnapshotHeader{Format: snapshotFormat}}})
	for _, rec := range []*relv1.SnapshotRecord{entry("h2", "a", 5), entry("h1", "b", 9), entry("h1", "c", 3), entry("h10", "d", 1),
		entry("h1", "e", 9), entry("h1", "f", 4), entry("h1", "g", 7)} {
		write(rec)
	}
	s := New()
	if err := s.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	hs, _, err := s.History(nil, "web")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, h := range hs {
		got = append(got, fmt.Sprintf("%s/%d/%s", h.GetAgentId(), h.GetCreateIndex(), h.GetVersion()))
	}
	if want := []string{"h1/3/c", "h1/4/f", "h1/7/g", "h1/9/e", "h10/1/d", "h2/5/a"}; !slices.Equal(got, want) {
		t.Fatalf("restored history %v, want %v", got, want)
	}
}

// historyRows checks the buckets of the history table hold what
// historyBucket says (non-empty, at most maxLen entries of their (app,
// agent), by create index from First on, before the next bucket's First;
// open counted) and counts them.
func historyRows(t interface{ Fatalf(string, ...any) }, s *Store, maxLen int) int {
	it, err := s.readTxn().Get(TableHistory, "id")
	if err != nil {
		t.Fatalf("%v", err)
	}
	n := 0
	var prev *historyBucket
	for raw := it.Next(); raw != nil; raw = it.Next() {
		n++
		b := raw.(*historyBucket)
		if len(b.Entries) == 0 || len(b.Entries) > maxLen {
			t.Fatalf("bucket (%s, %s, %d) holds %d entries, want 1 to %d", b.App, b.AgentId, b.First, len(b.Entries), maxLen)
		}
		open := 0
		for i, h := range b.Entries {
			if h.GetApp() != b.App || h.GetAgentId() != b.AgentId || h.GetCreateIndex() < b.First ||
				i > 0 && h.GetCreateIndex() <= b.Entries[i-1].GetCreateIndex() {
				t.Fatalf("bucket (%s, %s, %d) holds %v at %d", b.App, b.AgentId, b.First, h, i)
			}
			if h.GetToUnixNano() == 0 {
				open++
			}
		}
		if open != b.open {
			t.Fatalf("bucket (%s, %s, %d) counts %d open entries, holds %d", b.App, b.AgentId, b.First, b.open, open)
		}
		if prev != nil && prev.App == b.App && prev.AgentId == b.AgentId && prev.Entries[len(prev.Entries)-1].GetCreateIndex() >= b.First {
			t.Fatalf("bucket (%s, %s, %d) overlaps the one before", b.App, b.AgentId, b.First)
		}
		prev = b
	}
	return n
}
