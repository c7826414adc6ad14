package state

import (
	"fmt"
	"testing"
	"time"

	"github.com/hashicorp/go-memdb"

	"github.com/relhq/rel/internal/rollout"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// pagingStore holds n rollouts of web to prod and dev, created in that
// order at indexes 10.., one a second from t0; every tenth is queued (to
// an environment of its own), the others succeeded or failed.
func pagingStore(t testing.TB, n int, t0 time.Time) *Store {
	t.Helper()
	s := overlapStore(t)
	for i := 0; i < n; i++ {
		r := &relv1.Rollout{Id: fmt.Sprintf("ro-%05d", i), App: "web", Version: "1.0.0", Environment: []string{"prod", "dev"}[i%2],
			Kind: rollout.KindDeploy, State: []string{rollout.StateSucceeded, rollout.StateFailed}[i%2],
			CreatedUnixNano: t0.Add(time.Duration(i) * time.Second).UnixNano()}
		if i%10 == 0 {
			r.State, r.Environment = rollout.StateQueued, fmt.Sprintf("q%d", i)
		}
		if err := s.CreateRollout(uint64(10+i), r, nil, nil); err != nil {
			t.Fatalf("rollout %d: %v", i, err)
		}
	}
	return s
}

// TestQueryRolloutsPages: 2,500 rollouts read 100 at a time, each page
// starting after the last of the one before, come out every one once,
// newest first; filters apply before the limit.
func TestQueryRolloutsPages(t *testing.T) {
	const n = 2500
	t0 := time.Unix(1_700_000_000, 0)
	s := pagingStore(t, n, t0)
	var (
		got   []*relv1.Rollout
		after *relv1.Rollout
		pages int
	)
	for {
		page, more, _, err := s.QueryRollouts(memdb.NewWatchSet(), RolloutQuery{After: after, Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		got = append(got, page...)
		if !more {
			break
		}
		last := page[len(page)-1]
		after = &relv1.Rollout{CreateIndex: last.GetCreateIndex(), Id: last.GetId()}
	}
	if len(got) != n || pages != n/100 {
		t.Fatalf("%d rollouts in %d pages, want %d in %d", len(got), pages, n, n/100)
	}
	for i, r := range got {
		if want := fmt.Sprintf("ro-%05d", n-1-i); r.GetId() != want {
			t.Fatalf("item %d is %s, want %s", i, r.GetId(), want)
		}
	}

	// Filters.
	count := func(q RolloutQuery) int {
		t.Helper()
		out, _, _, err := s.QueryRollouts(memdb.NewWatchSet(), q)
		if err != nil {
			t.Fatal(err)
		}
		for i := 1; i < len(out); i++ {
			if !RolloutNewer(out[i-1], out[i]) {
				t.Fatalf("%+v: not newest first at %d", q, i)
			}
		}
		return len(out)
	}
	for _, c := range []struct {
		q    RolloutQuery
		want int
	}{
		{RolloutQuery{State: "active"}, n / 10},
		{RolloutQuery{State: rollout.StateQueued}, n / 10},
		{RolloutQuery{State: rollout.StateSucceeded}, n/2 - n/10},
		{RolloutQuery{State: rollout.StateFailed, Environment: "dev"}, n / 2},
		{RolloutQuery{Environment: "prod"}, n/2 - n/10},
		{RolloutQuery{SinceUnixNano: t0.Add((n - 30) * time.Second).UnixNano()}, 30},
		{RolloutQuery{SinceUnixNano: t0.Add((n - 30) * time.Second).UnixNano(), State: "active"}, 3},
		{RolloutQuery{App: "api"}, 0},
		{RolloutQuery{State: rollout.StateFailed, Limit: 7}, 7},
	} {
		if got := count(c.q); got != c.want {
			t.Errorf("%+v: %d rollouts, want %d", c.q, got, c.want)
		}
	}
}

// BenchmarkRolloutsList: the list of 2,000 rollouts (an insertion sort made
// this take 1.7 s).
func BenchmarkRolloutsList(b *testing.B) {
	s := pagingStore(b, 2000, time.Unix(0, 0))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, _, err := s.Rollouts(memdb.NewWatchSet(), ""); err != nil {
			b.Fatal(err)
		}
	}
}
