package server_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/relhq/rel/internal/rollout"
	"github.com/relhq/rel/internal/testcluster"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// TestListPaging: lists come in pages that each fit in a gRPC message and
// together hold every item once, in the list's order; filters run on the
// server; a token the server did not give is refused.
func TestListPaging(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{})
	leader := c.WaitLeader()
	ctl := dial(t, leader)
	ctx := ctxT(t)
	if _, err := ctl.CreateApp(ctx, &relv1.CreateAppRequest{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	// 100 releases with 64 KiB notes: 6.5 MB, more than a message holds.
	notes := strings.Repeat("n", 64<<10)
	for i := 0; i < 100; i++ {
		r := releaseReq("web", i)
		r.Notes = notes
		if _, err := ctl.CreateRelease(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
	var (
		rels  []*relv1.Release
		tok   string
		pages int
	)
	for {
		resp, err := ctl.ListReleases(ctx, &relv1.ListReleasesRequest{App: "web", PageSize: 1000, PageToken: tok})
		if err != nil {
			t.Fatalf("page %d: %v", pages, err)
		}
		if sz := proto.Size(resp); sz > 3<<20+64<<10 {
			t.Fatalf("page %d is %d bytes", pages, sz)
		}
		pages++
		rels = append(rels, resp.GetReleases()...)
		if tok = resp.GetNextPageToken(); tok == "" {
			break
		}
	}
	if len(rels) != 100 || pages < 3 {
		t.Fatalf("%d releases in %d pages, want 100 in 3 or more", len(rels), pages)
	}
	for i, r := range rels {
		if want := fmt.Sprintf("1.0.%d", i); r.GetVersion() != want || r.GetNotes() != notes {
			t.Fatalf("release %d is %s, want %s with its notes", i, r.GetVersion(), want)
		}
	}

	// 300 finished rollouts, written straight into the store (starting
	// them needs hosts), one a second.
	t0 := time.Unix(1_700_000_000, 0)
	st := leader.Server().Store()
	for i := 0; i < 300; i++ {
		r := &relv1.Rollout{Id: fmt.Sprintf("ro-%03d", i), App: "web", Version: "1.0.0", Environment: []string{"prod", "dev"}[i%2],
			Kind: rollout.KindDeploy, State: []string{rollout.StateSucceeded, rollout.StateFailed}[i%2],
			CreatedUnixNano: t0.Add(time.Duration(i) * time.Second).UnixNano()}
		if err := st.CreateRollout(uint64(1_000_000+i), r, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	list := func(req *relv1.ListRolloutsRequest) []string {
		t.Helper()
		var ids []string
		for {
			resp, err := ctl.ListRollouts(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			if n := len(resp.GetRollouts()); n > int(max(req.GetPageSize(), 1)) && req.GetPageSize() != 0 {
				t.Fatalf("page of %d rollouts, asked for %d", n, req.GetPageSize())
			}
			for _, r := range resp.GetRollouts() {
				ids = append(ids, r.GetRollout().GetId())
			}
			if resp.GetNextPageToken() == "" {
				return ids
			}
			req.PageToken = resp.GetNextPageToken()
		}
	}
	ids := list(&relv1.ListRolloutsRequest{PageSize: 7})
	if len(ids) != 300 {
		t.Fatalf("%d rollouts, want 300", len(ids))
	}
	for i, id := range ids {
		if want := fmt.Sprintf("ro-%03d", 299-i); id != want {
			t.Fatalf("rollout %d is %s, want %s (newest first)", i, id, want)
		}
	}
	if ids := list(&relv1.ListRolloutsRequest{State: "failed", Environment: "dev", PageSize: 40}); len(ids) != 150 || ids[0] != "ro-299" {
		t.Fatalf("failed in dev: %d, first %v", len(ids), ids[:1])
	}
	if ids := list(&relv1.ListRolloutsRequest{State: "active"}); len(ids) != 0 {
		t.Fatalf("active: %v", ids)
	}
	since := t0.Add(290 * time.Second).UnixNano()
	if ids := list(&relv1.ListRolloutsRequest{SinceUnixNano: since, State: "succeeded"}); strings.Join(ids, ",") != "ro-298,ro-296,ro-294,ro-292,ro-290" {
		t.Fatalf("since: %v", ids)
	}
	if ids := list(&relv1.ListRolloutsRequest{}); len(ids) != 300 {
		t.Fatalf("default page size: %d", len(ids))
	}

	// Bad tokens and filters.
	for name, call := range map[string]func() error{
		"garbage": func() error {
			_, err := ctl.ListRollouts(ctx, &relv1.ListRolloutsRequest{PageToken: "not a token"})
			return err
		},
		"another list's": func() error {
			resp, err := ctl.ListReleases(ctx, &relv1.ListReleasesRequest{PageSize: 1})
			if err != nil {
				return err
			}
			_, err = ctl.ListRollouts(ctx, &relv1.ListRolloutsRequest{PageToken: resp.GetNextPageToken()})
			return err
		},
		"bad base64": func() error {
			_, err := ctl.History(ctx, &relv1.HistoryRequest{App: "web", PageToken: "history.!!"})
			return err
		},
		"agents": func() error {
			_, err := ctl.ListAgents(ctx, &relv1.ListAgentsRequest{PageToken: "agents."})
			return err
		},
	} {
		if err := call(); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "not a page token of this list") {
			t.Errorf("%s token: %v", name, err)
		}
	}
	if _, err := ctl.ListRollouts(ctx, &relv1.ListRolloutsRequest{State: "done"}); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), `state "done" is not a rollout state`) {
		t.Errorf("bad state: %v", err)
	}
}
