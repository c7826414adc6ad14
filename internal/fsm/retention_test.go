package fsm

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/relhq/rel/internal/state"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// retentionLog is a history that gives each retention command something
// to do: web-1 goes 0.9.0 → 1.0.0 (closing a history entry), then goes
// away; the passes fold its closed entry and remove it; a release delete
// is refused while web-1 runs it, then applied once it is gone; the same
// request id again answers the first answer.
func retentionLog() []*relv1.Command {
	cmd := func(at int64, k any) *relv1.Command {
		return stamped(at, k)
	}
	return append(baseHistory(),
		cmd(10, &relv1.Command_ReportBatch{ReportBatch: &relv1.ReportBatch{Reports: []*relv1.AgentReport{
			{AgentId: "web-1", SessionId: "sess-1", Report: &relv1.AppReport{App: "web", Version: "1.0.0", Phase: "healthy", RolloutId: "ro-1", AtUnixNano: 10}}}}}),
		cmd(11, &relv1.Command_RolloutControl{RolloutControl: &relv1.RolloutControl{RolloutId: "ro-1", Action: "abort", AtUnixNano: 11, Reason: "test"}}),
		cmd(12, &relv1.Command_AgentDown{AgentDown: &relv1.AgentDown{AgentId: "web-1", SessionId: "sess-1", AtUnixNano: 12, Reason: "gone"}}),
		withRequestID("rq-del-1", cmd(13, &relv1.Command_DeleteRelease{DeleteRelease: &relv1.DeleteRelease{App: "web", Version: "1.0.0"}})),
		cmd(14, &relv1.Command_FoldHistory{FoldHistory: &relv1.FoldHistory{CutoffUnixNano: 13, MaxEntries: 10}}),
		cmd(15, &relv1.Command_RemoveAgents{RemoveAgents: &relv1.RemoveAgents{AgentIds: []string{"web-1"}, CutoffUnixNano: 13, AtUnixNano: 15}}),
		withRequestID("rq-del-2", cmd(16, &relv1.Command_DeleteRelease{DeleteRelease: &relv1.DeleteRelease{App: "web", Version: "0.9.0"}})),
		withRequestID("rq-del-3", cmd(17, &relv1.Command_CreateRelease{CreateRelease: &relv1.CreateRelease{Release: &relv1.Release{App: "web", Version: "2.0.0", Sha256: fuzzSHA}}})),
		withRequestID("rq-del-4", cmd(18, &relv1.Command_DeleteRelease{DeleteRelease: &relv1.DeleteRelease{App: "web", Version: "2.0.0"}})),
		withRequestID("rq-del-4", cmd(19, &relv1.Command_DeleteRelease{DeleteRelease: &relv1.DeleteRelease{App: "web", Version: "2.0.0"}})),
	)
}

// TestRetentionReplay: the retention commands decide the same on every
// replica, one of them restored from a snapshot half-way, and act as the
// policy says.
func TestRetentionReplay(t *testing.T) {
	log := retentionLog()
	a, b := New(state.New()), New(state.New())
	results := make([]*Result, len(log))
	half := len(log) - 6
	for i, c := range log {
		results[i] = a.Apply(entry(t, uint64(i+1), c)).(*Result)
		if i == half-1 {
			snap, err := a.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			sink := &memSink{}
			if err := snap.Persist(sink); err != nil {
				t.Fatal(err)
			}
			if err := b.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
				t.Fatal(err)
			}
		}
		if i >= half {
			b.Apply(entry(t, uint64(i+1), c))
		}
	}
	if ok, why := state.Equal(a.Store(), b.Store()); !ok {
		t.Fatalf("replicas differ: %s", why)
	}
	n := len(baseHistory())
	// The delete while web-1 runs 1.0.0 is refused, and stores nothing.
	if r := results[n+3]; !errors.Is(r.Err, state.ErrConflict) {
		t.Fatalf("delete of a running release: %v", r.Err)
	}
	if _, _, err := a.Store().Release(nil, "web", "1.0.0"); err != nil {
		t.Fatalf("refused delete removed the release: %v", err)
	}
	// 0.9.0 was never a release: NotFound.
	if r := results[n+6]; !errors.Is(r.Err, state.ErrNotFound) {
		t.Fatalf("delete of an unknown release: %v", r.Err)
	}
	// The repeat answers the first answer and applies nothing.
	if r := results[n+9]; !r.Duplicate || r.Err != nil || r.Index != results[n+8].Index {
		t.Fatalf("repeat of the delete: %+v", r)
	}
	if _, err := a.Store().Agent(nil, "web-1"); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("web-1 not removed: %v", err)
	}
	sums, _, _ := a.Store().HistorySummaries(nil, "web")
	if len(sums) != 1 || sums[0].GetEntries() != 1 || sums[0].GetLastVersion() != "0.9.0" {
		t.Fatalf("summaries: %v", sums)
	}
	hist, _, _ := a.Store().History(nil, "web")
	if len(hist) != 1 || hist[0].GetVersion() != "1.0.0" || hist[0].GetReplacedByKind() != state.ReasonAgentRemoved {
		t.Fatalf("history kept: %v", hist)
	}
}
