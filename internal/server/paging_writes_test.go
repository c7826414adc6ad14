package server_test

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/relhq/rel/internal/rollout"
	"github.com/relhq/rel/internal/testcluster"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// TestPagingWhileWriting: a client reads each list a few items at a time
// while rollouts, releases and agents are created and rollouts removed
// between its pages. No item comes twice, and every item that was there
// when the listing began and is still there at its end comes once: the
// page token is the sort key of the last item, not an offset, so writes
// before or after it move nothing.
func TestPagingWhileWriting(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{})
	leader := c.WaitLeader()
	ctl := dial(t, leader)
	ctx := ctxT(t)
	st := leader.Server().Store()
	if _, err := ctl.CreateApp(ctx, &relv1.CreateAppRequest{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(7, 11))
	// Writes straight into the leader's store at indexes of their own, far
	// above the log's; the listing reads the same store.
	index := uint64(1_000_000)
	t0 := time.Unix(1_700_000_000, 0)
	rollouts, agents, releases := 0, 0, 0
	addRollout := func() {
		index++
		r := &relv1.Rollout{Id: fmt.Sprintf("ro-%05d", rollouts), App: "web", Version: "1.0.0", Environment: "prod",
			Kind: rollout.KindDeploy, State: rollout.StateSucceeded, CreatedUnixNano: t0.Add(time.Duration(rollouts) * time.Second).UnixNano()}
		if err := st.CreateRollout(index, r, nil, nil); err != nil {
			t.Fatal(err)
		}
		rollouts++
	}
	addAgent := func() {
		index++
		// Random ids: new agents land before and after the page token.
		id := fmt.Sprintf("host-%08x", rng.Uint32())
		if err := st.AgentUp(index, &relv1.Agent{Id: id, Labels: map[string]string{"env": "prod"}}, nil); err != nil {
			t.Fatal(err)
		}
		agents++
	}
	addRelease := func() {
		// Random versions: new releases sort before and after the token.
		r := releaseReq("web", int(rng.Uint32()%1_000_000))
		if _, err := ctl.CreateRelease(ctx, r); err != nil && status.Code(err) != codes.AlreadyExists {
			t.Fatal(err)
		}
		releases++
	}
	if _, err := ctl.CreateRelease(ctx, releaseReq("web", 0)); err != nil { // 1.0.0, which the rollouts name
		t.Fatal(err)
	}
	for i := 0; i < 200; i++ {
		addRollout()
		addAgent()
		addRelease()
	}
	removeRollout := func() {
		index++
		id := fmt.Sprintf("ro-%05d", rng.IntN(rollouts))
		if _, err := st.RemoveRollouts(index, []string{id}); err != nil {
			t.Fatal(err)
		}
	}
	write := func() {
		for i := 0; i < 3; i++ {
			addRollout()
			addAgent()
			addRelease()
			removeRollout()
		}
	}

	type lister struct {
		name string
		// page fetches one page after token and returns its ids.
		page func(token string) ([]string, string)
	}
	listers := []lister{
		{"rollouts", func(tok string) ([]string, string) {
			resp, err := ctl.ListRollouts(ctx, &relv1.ListRolloutsRequest{PageSize: 9, PageToken: tok})
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, r := range resp.GetRollouts() {
				ids = append(ids, r.GetRollout().GetId())
			}
			return ids, resp.GetNextPageToken()
		}},
		{"agents", func(tok string) ([]string, string) {
			resp, err := ctl.ListAgents(ctx, &relv1.ListAgentsRequest{PageSize: 9, PageToken: tok})
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, a := range resp.GetAgents() {
				ids = append(ids, a.GetAgent().GetId())
			}
			return ids, resp.GetNextPageToken()
		}},
		{"releases", func(tok string) ([]string, string) {
			resp, err := ctl.ListReleases(ctx, &relv1.ListReleasesRequest{App: "web", PageSize: 9, PageToken: tok})
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, r := range resp.GetReleases() {
				ids = append(ids, r.GetVersion())
			}
			return ids, resp.GetNextPageToken()
		}},
	}
	all := func(l lister) map[string]bool {
		out := map[string]bool{}
		for tok := ""; ; {
			ids, next := l.page(tok)
			for _, id := range ids {
				out[id] = true
			}
			if tok = next; tok == "" {
				return out
			}
		}
	}
	for _, l := range listers {
		t.Run(l.name, func(t *testing.T) {
			before := all(l)
			seen := map[string]int{}
			pages := 0
			for tok := ""; ; {
				write()
				ids, next := l.page(tok)
				pages++
				for _, id := range ids {
					seen[id]++
					if seen[id] > 1 {
						t.Fatalf("%s %s came twice (page %d)", l.name, id, pages)
					}
				}
				if tok = next; tok == "" {
					break
				}
			}
			after := all(l)
			missing := 0
			for id := range before {
				if after[id] && seen[id] == 0 {
					missing++
					t.Errorf("%s %s was there all along and never came", l.name, id)
				}
			}
			if pages < 15 || len(seen) < 150 {
				t.Fatalf("%d %s in %d pages: the listing was too short to interleave writes", len(seen), l.name, pages)
			}
			t.Logf("%s: %d items in %d pages with writes between pages; %d there all along, %d missing", l.name, len(seen), pages, len(before), missing)
		})
	}
}
