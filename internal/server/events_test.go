package server_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/relhq/rel/internal/server"
	"github.com/relhq/rel/internal/testcluster"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// follow opens FollowEvents on conn and returns a channel of what it
// receives (closed when the stream ends) and a cancel that ends it and
// waits for the receiving goroutine.
func follow(t *testing.T, conn *grpc.ClientConn, req *relv1.FollowEventsRequest) (<-chan *relv1.FollowEventsResponse, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := relv1.NewEventServiceClient(conn).FollowEvents(ctx, req)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	ch := make(chan *relv1.FollowEventsResponse, 100)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(ch)
		for {
			msg, err := stream.Recv()
			if err != nil {
				return
			}
			ch <- msg
		}
	}()
	return ch, func() {
		cancel()
		for range ch { // drain so the goroutine ends
		}
		<-done
	}
}

// collect reads events from ch until it holds n in all, failing after a
// deadline.
func collect(t *testing.T, ch <-chan *relv1.FollowEventsResponse, got []*relv1.Event, n int) []*relv1.Event {
	t.Helper()
	deadline := time.After(20 * time.Second)
	for len(got) < n {
		select {
		case msg, ok := <-ch:
			if !ok {
				t.Fatalf("stream ended after %d events, want %d", len(got), n)
			}
			got = append(got, msg.GetEvents()...)
		case <-deadline:
			t.Fatalf("timed out with %d events, want %d", len(got), n)
		}
	}
	return got
}

// TestFollowEventsOnFollowers: a follower's FollowEvents sends what it
// holds, then each new event as its replica applies it; a client that
// resumes on another follower after the last seq it saw gets the rest
// with no gap and no repeat. A filter that matches nothing still answers
// at once (caught up, with the newest seq), and a bad glob is refused.
func TestFollowEventsOnFollowers(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{})
	leader := c.WaitLeader()
	c.WaitMembers(3)
	ctx := ctxT(t)
	ctl := relv1.NewControlServiceClient(leader.Admin())
	if _, err := ctl.CreateApp(ctx, &relv1.CreateAppRequest{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	fs := c.Followers()
	ch, stop := follow(t, fs[0].Admin(), &relv1.FollowEventsRequest{Filter: &relv1.EventFilter{App: "web"}})
	for i := 1; i <= 5; i++ {
		if _, err := ctl.CreateRelease(ctx, releaseReq("web", i)); err != nil {
			t.Fatal(err)
		}
	}
	got := collect(t, ch, nil, 5)
	stop()
	for i := 6; i <= 10; i++ {
		if _, err := ctl.CreateRelease(ctx, releaseReq("web", i)); err != nil {
			t.Fatal(err)
		}
	}
	ch, stop = follow(t, fs[1].Admin(), &relv1.FollowEventsRequest{SinceSeq: got[len(got)-1].GetSeq(), Filter: &relv1.EventFilter{Types: "release.*"}})
	defer stop()
	got = collect(t, ch, got, 10)
	for i, e := range got {
		if e.GetSeq() != uint64(i+1) || e.GetType() != "release.created" || !strings.HasSuffix(e.GetVersion(), "."+strconv.Itoa(i+1)) {
			t.Fatalf("event %d: seq %d %s %s, want seq %d release.created 1.0.%d", i, e.GetSeq(), e.GetType(), e.GetVersion(), i+1, i+1)
		}
	}
	select {
	case msg := <-ch:
		t.Fatalf("unexpected message after the last event: %v", msg)
	case <-time.After(200 * time.Millisecond):
	}

	quiet, stopQuiet := follow(t, fs[1].Admin(), &relv1.FollowEventsRequest{Filter: &relv1.EventFilter{Types: "rollout.*"}})
	defer stopQuiet()
	select {
	case msg := <-quiet:
		if len(msg.GetEvents()) != 0 || !msg.GetCaughtUp() || msg.GetLastSeq() != 10 {
			t.Fatalf("first answer %v: want no events, caught up at seq 10", msg)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no first answer for a filter that matches nothing")
	}

	_, err := relv1.NewEventServiceClient(fs[0].Admin()).ListEvents(ctx, &relv1.ListEventsRequest{Filter: &relv1.EventFilter{Types: "rollouts.*"}})
	wantCode(t, "bad glob", err, codes.InvalidArgument)
	st, err := relv1.NewEventServiceClient(fs[0].Admin()).FollowEvents(ctx, &relv1.FollowEventsRequest{Filter: &relv1.EventFilter{Types: "rollout.["}})
	if err == nil {
		_, err = st.Recv()
	}
	wantCode(t, "bad glob on follow", err, codes.InvalidArgument)
}

// TestEventsRetention: the retention pass trims events older than
// --rollout-retention, never the newest; a resume point older than what
// is kept is refused with OutOfRange naming the oldest seq kept, on List
// and Follow, and one at the edge is answered.
func TestEventsRetention(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{Configure: func(_ int, cfg *server.Config) {
		cfg.RolloutRetention = time.Millisecond
		cfg.RetentionInterval = 50 * time.Millisecond
	}})
	n := c.WaitLeader()
	ctx := ctxT(t)
	ctl := relv1.NewControlServiceClient(n.Admin())
	if _, err := ctl.CreateApp(ctx, &relv1.CreateAppRequest{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 5; i++ {
		if _, err := ctl.CreateRelease(ctx, releaseReq("web", i)); err != nil {
			t.Fatal(err)
		}
	}
	ev := relv1.NewEventServiceClient(n.Admin())
	testcluster.WaitFor(t, 20*time.Second, func() (bool, string) {
		resp, err := ev.ListEvents(ctx, &relv1.ListEventsRequest{})
		return err == nil && resp.GetFirstSeq() == 5 && resp.GetLastSeq() == 5, "events trimmed to the newest"
	})
	for _, tc := range []struct {
		since uint64
		code  codes.Code
	}{{1, codes.OutOfRange}, {3, codes.OutOfRange}, {4, codes.OK}, {5, codes.OK}} {
		_, err := ev.ListEvents(ctx, &relv1.ListEventsRequest{SinceSeq: tc.since})
		wantCode(t, "list since "+strconv.Itoa(int(tc.since)), err, tc.code)
		if tc.code == codes.OutOfRange && !strings.Contains(status.Convert(err).Message(), "oldest kept is seq 5") {
			t.Errorf("since %d: %v: want the oldest seq kept named", tc.since, err)
		}
		st, err := ev.FollowEvents(ctx, &relv1.FollowEventsRequest{SinceSeq: tc.since})
		if err == nil {
			_, err = st.Recv()
		}
		wantCode(t, "follow since "+strconv.Itoa(int(tc.since)), err, tc.code)
	}
}

// TestListEventsWait: with wait_ms, a ListEvents that finds nothing after
// since_seq waits for the next matching event and answers it; with
// nothing to wait for it answers empty when the wait is over; without
// wait_ms it answers at once.
func TestListEventsWait(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{})
	n := c.Nodes[0]
	ctl := dial(t, n)
	ev := relv1.NewEventServiceClient(n.Admin())
	if _, err := ctl.CreateApp(ctxT(t), &relv1.CreateAppRequest{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	head, err := ev.ListEvents(ctxT(t), &relv1.ListEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	last := head.GetLastSeq()
	// Nothing new: an answer at once without wait_ms, after the wait with it.
	if resp, err := ev.ListEvents(ctxT(t), &relv1.ListEventsRequest{SinceSeq: last}); err != nil || len(resp.GetEvents()) != 0 {
		t.Fatalf("no wait: %v, %v", resp, err)
	}
	began := time.Now()
	if resp, err := ev.ListEvents(ctxT(t), &relv1.ListEventsRequest{SinceSeq: last, WaitMs: 300}); err != nil || len(resp.GetEvents()) != 0 {
		t.Fatalf("wait with nothing new: %v, %v", resp, err)
	}
	if took := time.Since(began); took < 300*time.Millisecond {
		t.Fatalf("answered after %s, before its 300ms wait", took)
	}
	// A release created while it waits: answered with it.
	type answer struct {
		resp *relv1.ListEventsResponse
		err  error
	}
	got := make(chan answer, 1)
	go func() {
		resp, err := ev.ListEvents(context.Background(), &relv1.ListEventsRequest{SinceSeq: last, WaitMs: 20000,
			Filter: &relv1.EventFilter{Types: "release.*"}})
		got <- answer{resp, err}
	}()
	if _, err := ctl.CreateRelease(ctxT(t), &relv1.CreateReleaseRequest{App: "web", Version: "1.0.0",
		ArtifactUrl: "https://example.com/web.tgz", Sha256: digest("1.0.0")}); err != nil {
		t.Fatal(err)
	}
	select {
	case a := <-got:
		if a.err != nil || len(a.resp.GetEvents()) != 1 || a.resp.GetEvents()[0].GetType() != "release.created" {
			t.Fatalf("waiting list: %v, %v", a.resp, a.err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the waiting ListEvents did not answer the new release")
	}
}
