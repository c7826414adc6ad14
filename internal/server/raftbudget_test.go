package server_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relhq/rel/internal/server"
	"github.com/relhq/rel/internal/testcluster"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

func TestLogBudgetCounts(t *testing.T) {
	for _, tc := range []struct {
		name                  string
		budget                int64
		avg                   float64
		maxTrail, maxThresh   uint64
		wantTrail, wantThresh uint64
	}{
		{"small entries keep the flags", 64 << 20, 200, 10240, 8192, 10240, 8192},
		{"20 KiB entries: half the budget each", 64 << 20, 20 << 10, 10240, 8192, 1638, 1638},
		{"huge entries stop at the floor", 64 << 20, 4 << 20, 10240, 8192, 64, 64},
		{"a floor above the flag is the flag", 64 << 20, 4 << 20, 10, 20, 10, 20},
		{"no size yet counts as 1 byte", 1 << 20, 0, 10240, 8192, 10240, 8192},
	} {
		t.Run(tc.name, func(t *testing.T) {
			trail, thresh := server.LogBudgetCountsFor(tc.budget, tc.avg, tc.maxTrail, tc.maxThresh)
			if trail != tc.wantTrail || thresh != tc.wantThresh {
				t.Fatalf("got trailing %d, threshold %d; want %d, %d", trail, thresh, tc.wantTrail, tc.wantThresh)
			}
		})
	}
}

// TestRaftLogBudget: with large entries the log on every node stays near
// its byte budget (the entry counts alone would keep all of it), and a
// follower restarted afterwards still catches up.
func TestRaftLogBudget(t *testing.T) {
	const budget = 2 << 20
	c := testcluster.New(t, 3, testcluster.Options{Configure: func(_ int, cfg *server.Config) {
		cfg.RaftLogBudget = budget
		cfg.LogBudgetInterval = 100 * time.Millisecond
		cfg.SnapshotInterval = time.Hour // only the budget snapshots
	}})
	leader := c.WaitLeader()
	ctl := dial(t, leader)
	if _, err := ctl.CreateApp(ctxT(t), &relv1.CreateAppRequest{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	notes := strings.Repeat("n", 8<<10)
	const releases = 800 // 6.6 MiB of entries: over three budgets
	var wg sync.WaitGroup
	errs := make(chan error, releases)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < releases; i += 8 {
				v := fmt.Sprintf("1.0.%d", i)
				if _, err := ctl.CreateRelease(ctxT(t), &relv1.CreateReleaseRequest{App: "web", Version: v,
					ArtifactUrl: "https://example.com/web.tgz", Sha256: digest(v), Notes: notes}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// Each entry is about 8.3 KiB: the budget holds about 250 of them.
	const most = budget * 3 / 2 / (8 << 10)
	for _, n := range c.Nodes {
		testcluster.WaitFor(t, 20*time.Second, func() (bool, string) {
			first, last, err := n.Server().RaftLogSpan()
			if err != nil {
				return false, err.Error()
			}
			trail, thresh := n.Server().LogBudgetCounts()
			return last-first+1 <= most && trail < 400 && thresh < 400,
				fmt.Sprintf("%s holds log entries %d-%d (%d; at most %d wanted), trailing %d, threshold %d", n.ID, first, last, last-first+1, most, trail, thresh)
		})
	}
	f := c.Followers()[0]
	c.Kill(f)
	if _, err := ctl.CreateRelease(ctxT(t), &relv1.CreateReleaseRequest{App: "web", Version: "2.0.0",
		ArtifactUrl: "https://example.com/web.tgz", Sha256: digest("2.0.0")}); err != nil {
		t.Fatal(err)
	}
	c.Restart(f)
	testcluster.WaitFor(t, 20*time.Second, func() (bool, string) {
		_, _, err := f.Server().Store().Release(nil, "web", "2.0.0")
		return err == nil, "the restarted follower has the release written while it was down"
	})
}
