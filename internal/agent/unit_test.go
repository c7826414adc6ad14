package agent

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/relhq/rel/internal/install"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

func TestBackoffFullJitter(t *testing.T) {
	b := backoff{min: BackoffMin, max: BackoffMax}
	for attempt := range 12 {
		ceil := min(BackoffMin<<attempt, BackoffMax)
		var maxSeen time.Duration
		for range 200 {
			bb := b // the same attempt, many draws
			d := bb.next()
			if d < 0 || d >= ceil {
				t.Fatalf("attempt %d: wait %s outside [0, %s)", attempt, d, ceil)
			}
			maxSeen = max(maxSeen, d)
		}
		if maxSeen < ceil/2 {
			t.Errorf("attempt %d: largest of 200 draws %s, want close to %s (full jitter)", attempt, maxSeen, ceil)
		}
		b.next()
	}
	b.attempt = 1000
	if d := b.next(); d >= BackoffMax {
		t.Errorf("after many attempts: %s", d)
	}
	b.reset()
	if d := b.next(); d >= BackoffMin {
		t.Errorf("after reset: %s, want < %s", d, BackoffMin)
	}
}

func TestReportQueueCoalesces(t *testing.T) {
	q := newReportQueue()
	q.put(&relv1.AppReport{App: "web", Phase: "downloading"})
	q.put(&relv1.AppReport{App: "api", Phase: "downloading"})
	q.put(&relv1.AppReport{App: "web", Phase: "installing"})
	select {
	case <-q.ready:
	default:
		t.Fatal("no ready token")
	}
	got := q.take()
	if len(got) != 2 || got[0].GetApp() != "api" || got[1].GetPhase() != "installing" {
		t.Fatalf("take = %v", got)
	}
	if q.take() != nil {
		t.Fatal("queue not empty after take")
	}
	// A failed send puts reports back unless a newer one arrived.
	q.put(&relv1.AppReport{App: "web", Phase: "healthy"})
	q.putBack(got)
	got = q.take()
	if len(got) != 2 || got[0].GetPhase() != "downloading" || got[1].GetPhase() != "healthy" {
		t.Fatalf("after putBack: %v", got)
	}
}

func TestStateFileRoundTrip(t *testing.T) {
	dir := t.TempDir()
	st, err := loadState(dir)
	if err != nil || st.LastGeneration != 0 {
		t.Fatalf("empty dir: %+v, %v", st, err)
	}
	want := localState{NodeID: "n1", LastGeneration: 99, Apps: map[string]attempt{"web": {Version: "1", SHA256: "ab", RolloutID: "r", Generation: 98}}}
	for range 2 { // the second write replaces the first
		if err := saveState(dir, want); err != nil {
			t.Fatal(err)
		}
	}
	got, err := loadState(dir)
	if err != nil || got.LastGeneration != 99 || got.Apps["web"] != want.Apps["web"] || got.NodeID != "n1" {
		t.Fatalf("got %+v, %v", got, err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temp files left behind: %v", entries)
	}
	if err := os.WriteFile(filepath.Join(dir, stateFile), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadState(dir); err == nil {
		t.Error("corrupt file loaded")
	}
}

func TestNoopInstaller(t *testing.T) {
	var n NoopInstaller
	var mu sync.Mutex
	var phases []install.Phase
	report := func(ev install.Event) { mu.Lock(); phases = append(phases, ev.Phase); mu.Unlock() }
	if err := n.Apply(context.Background(), install.Desired{App: "web", Version: "1"}, report); err != nil {
		t.Fatal(err)
	}
	if len(phases) != 5 || phases[0] != install.PhaseDownloading || phases[4] != install.PhaseHealthy {
		t.Fatalf("phases = %v", phases)
	}
	// Idempotent when already there: reported healthy again, like the real one.
	if err := n.Apply(context.Background(), install.Desired{App: "web", Version: "1"}, report); err != nil || len(phases) != 6 || phases[5] != install.PhaseHealthy {
		t.Fatalf("second apply: %v, phases %v", err, phases)
	}
	if err := n.Apply(context.Background(), install.Desired{App: "web", Version: "2"}, report); err != nil {
		t.Fatal(err)
	}
	in := n.Installed()
	if len(in) != 1 || in[0].Version != "2" || in[0].PreviousVersion != "1" || in[0].Phase != install.PhaseHealthy || len(in[0].Kept) != 2 {
		t.Fatalf("installed = %+v", in)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := n.Apply(ctx, install.Desired{App: "api", Version: "1"}, report); err == nil {
		t.Error("Apply with a cancelled context succeeded")
	}
	// Concurrent use.
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			_ = n.Apply(context.Background(), install.Desired{App: string(rune('a' + i)), Version: "1"}, nil)
			_ = n.Installed()
		})
	}
	wg.Wait()
	if len(n.Installed()) != 9 {
		t.Errorf("installed %d apps", len(n.Installed()))
	}
}
