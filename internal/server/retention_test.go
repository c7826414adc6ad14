package server_test

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"github.com/relhq/rel/internal/auth"
	"github.com/relhq/rel/internal/reqid"
	"github.com/relhq/rel/internal/server"
	"github.com/relhq/rel/internal/state"
	"github.com/relhq/rel/internal/testcluster"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// metricSum adds up a counter over every node's /metrics.
func metricSum(t *testing.T, c *testcluster.Cluster, name string) float64 {
	t.Helper()
	var sum float64
	for _, n := range c.Running() {
		resp, err := httpsClient(t, c, ptr(testcluster.ClientID("prom", auth.Viewer))).Get("https://" + n.HTTPAddr() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, name+" "); ok {
				f, err := strconv.ParseFloat(v, 64)
				if err != nil {
					t.Fatalf("%s: %v", line, err)
				}
				sum += f
			}
		}
	}
	return sum
}

// TestHistoryAndAgentRetention (issue 10): with short retentions, the
// leader's passes fold closed history into per-host summaries and remove
// an agent gone past --agent-retention, on every replica, and count both;
// the open entry and a connected agent stay; the removed agent's next
// hello registers it again.
func TestHistoryAndAgentRetention(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{Configure: func(i int, cfg *server.Config) {
		fastAgents(i, cfg)
		cfg.HistoryRetention = time.Millisecond
		cfg.AgentRetention = time.Millisecond
		cfg.RetentionInterval = 100 * time.Millisecond
	}})
	ctl := dial(t, c.Followers()[0])
	ctx := ctxT(t)
	mustCreate(t, ctl, "web")
	web1 := connectAgent(t, c.Nodes[1], "web-1", map[string]string{"env": "prod"}, 0)
	web1.heartbeat(100 * time.Millisecond)
	web2 := connectAgent(t, c.Nodes[2], "web-2", map[string]string{"env": "prod"}, 0)
	web2.heartbeat(100 * time.Millisecond)
	// web-1 runs 1.0.0, then 2.0.0: 1.0.0's entry closes (replaced).
	web1.report("web", "1.0.0", "healthy", "")
	web2.report("web", "1.0.0", "healthy", "")
	testcluster.WaitFor(t, 5*time.Second, func() (bool, string) {
		v, _ := c.Nodes[1].Server().Store().CurrentVersion(nil, "web-1", "web")
		return v == "1.0.0", "web-1 on 1.0.0"
	})
	web1.report("web", "2.0.0", "healthy", "")

	// Every replica folds 1.0.0's entry into web-1's summary; the open
	// entries (web-1 on 2.0.0, web-2 on 1.0.0) stay.
	for _, n := range c.Nodes {
		st := n.Server().Store()
		testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
			sums, _, _ := st.HistorySummaries(nil, "web")
			hist, _, _ := st.History(nil, "web")
			return len(sums) == 1 && sums[0].GetAgentId() == "web-1" && sums[0].GetEntries() == 1 && sums[0].GetReplaced() == 1 &&
					sums[0].GetLastVersion() == "1.0.0" && len(hist) == 2,
				fmt.Sprintf("node %s: summaries %v, history %v", n.GRPCAddr(), sums, hist)
		})
	}
	resp, err := ctl.History(ctx, &relv1.HistoryRequest{App: "web", Host: "web-1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetSummaries()) != 1 || len(resp.GetEntries()) != 1 || resp.GetEntries()[0].GetVersion() != "2.0.0" {
		t.Fatalf("History of web-1: summaries %v, entries %v", resp.GetSummaries(), resp.GetEntries())
	}
	if got := metricSum(t, c, "rel_retention_history_folded_total"); got != 1 {
		t.Fatalf("rel_retention_history_folded_total %v over the cluster, want 1", got)
	}

	// web-1 goes away: removed on every replica, with its rows; web-2,
	// connected, stays. web-1's history is kept (closed, then folded).
	web1.cancel()
	for _, n := range c.Nodes {
		st := n.Server().Store()
		testcluster.WaitFor(t, 15*time.Second, func() (bool, string) {
			_, err := st.Agent(nil, "web-1")
			apps, _ := st.AgentApps(nil, "web-1")
			return err != nil && len(apps) == 0, fmt.Sprintf("web-1 removed with its rows: %v", err)
		})
		if a, err := st.Agent(nil, "web-2"); err != nil || !a.GetConnected() {
			t.Fatalf("web-2: %v, %v", a, err)
		}
		testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
			sums, _, _ := st.HistorySummaries(nil, "web")
			for _, m := range sums {
				if m.GetAgentId() == "web-1" {
					return m.GetEntries() == 2 && m.GetOther() == 1 && m.GetLastVersion() == "2.0.0", fmt.Sprintf("web-1's summary keeps its last run: %v", m)
				}
			}
			return false, "web-1's summary"
		})
	}
	if got := metricSum(t, c, "rel_retention_agents_removed_total"); got != 1 {
		t.Fatalf("rel_retention_agents_removed_total %v over the cluster, want 1", got)
	}

	// It comes back: its hello registers it again.
	back := connectAgent(t, c.Nodes[0], "web-1", map[string]string{"env": "prod"}, 0)
	back.heartbeat(100 * time.Millisecond)
	back.report("web", "2.0.0", "healthy", "")
	testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
		a, err := ctl.GetAgent(ctx, &relv1.GetAgentRequest{Id: "web-1"})
		return err == nil && a.GetAgent().GetAgent().GetConnected(), fmt.Sprintf("web-1 registered again: %v", err)
	})
}

// TestDeleteRelease (issue 10): relctl release delete on the wire. Each
// reason to keep a release refuses with FailedPrecondition, a message
// saying why and what to do, and nothing stored; an unknown release is
// NotFound; an unneeded one goes, once, also when the request is sent
// again; an app-scoped grant does not reach another app.
func TestDeleteRelease(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{Configure: fastAgents})
	asked := c.Followers()[0]
	ctl := dial(t, asked)
	ctx := ctxT(t)
	setupApp(t, ctl, "1.0.0", "2.0.0", "3.0.0", "4.0.0")
	a := connectAgent(t, c.Nodes[1], "web-1", map[string]string{"env": "prod"}, 0)
	a.heartbeat(100 * time.Millisecond)
	a.report("web", "1.0.0", "healthy", "")
	// onEvery waits until every replica sees cond, so the server's own
	// check (on its replica) is the one that refuses: nothing proposed.
	onEvery := func(what string, cond func(st *state.Store) bool) {
		t.Helper()
		for _, n := range c.Nodes {
			st := n.Server().Store()
			testcluster.WaitFor(t, 5*time.Second, func() (bool, string) { return cond(st), what })
		}
	}
	onEvery("web-1 on 1.0.0", func(st *state.Store) bool {
		v, _ := st.CurrentVersion(nil, "web-1", "web")
		return v == "1.0.0"
	})
	// The server asked checks on its own replica: a refusal there proposes
	// nothing, so no replica's releases move and none records the request.
	refused := func(what, version string, code codes.Code, words ...string) {
		t.Helper()
		id := "rq-" + strings.ReplaceAll(what, " ", "-")
		before, bidx, _ := asked.Server().Store().Releases(nil, "web")
		_, err := ctl.DeleteRelease(metadata.AppendToOutgoingContext(ctx, reqid.MetadataKey, id), &relv1.DeleteReleaseRequest{App: "web", Version: version})
		wantCode(t, what, err, code, words...)
		after, aidx, _ := asked.Server().Store().Releases(nil, "web")
		if aidx != bidx || len(after) != len(before) {
			t.Errorf("%s: releases changed: %d at %d, then %d at %d", what, len(before), bidx, len(after), aidx)
		}
		for _, n := range c.Nodes {
			if rec := n.Server().Store().Request(id); rec != nil {
				t.Errorf("%s: a refused request was recorded: %v", what, rec)
			}
		}
	}
	refused("bad version", "1.0 0", codes.InvalidArgument, "version")
	refused("unknown", "9.9.9", codes.NotFound, "release web@9.9.9 not found", "relctl release list web")
	refused("a host runs it", "1.0.0", codes.FailedPrecondition, "release web@1.0.0 is still needed", "host web-1 has it (healthy)", "roll out another release")

	// A rollout to 2.0.0: refused while it runs.
	start, err := ctl.StartRollout(ctx, &relv1.StartRolloutRequest{App: "web", Version: "2.0.0", Environment: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	id := start.GetRollout().GetId()
	onEvery(id+" on every replica", func(st *state.Store) bool { _, err := st.Rollout(nil, id); return err == nil })
	refused("an active rollout goes to it", "2.0.0", codes.FailedPrecondition, "rollout "+id, "goes to or from it", "relctl rollout abort "+id)
	refused("an active rollout comes from it", "1.0.0", codes.FailedPrecondition, "rollout "+id, "goes to or from it")
	a.report("web", "2.0.0", "healthy", id)
	waitState(t, ctl, id, "succeeded")
	onEvery(id+" succeeded", func(st *state.Store) bool {
		ro, err := st.Rollout(nil, id)
		return err == nil && ro.GetState() == "succeeded"
	})
	refused("prod's current release", "2.0.0", codes.FailedPrecondition, "environment prod's current release (rollout "+id+")", "roll out another release to prod first")
	refused("a rollback goes back to it", "1.0.0", codes.FailedPrecondition, "'relctl rollout rollback "+id+"'", "would take hosts back to it")
	// Out of band, web-1 installs 3.0.0 (it is not there yet).
	a.report("web", "3.0.0", "installing", "")
	onEvery("web-1 installing 3.0.0", func(st *state.Store) bool {
		aa, _ := st.AgentApp(nil, "web-1", "web")
		return aa.GetReport().GetVersion() == "3.0.0"
	})
	refused("a host installs it", "3.0.0", codes.FailedPrecondition, "host web-1 has it (installing)")

	// A grant of manage-apps on another app does not reach web.
	apiOps, _ := createToken(t, c.Nodes[0].Admin(), "api-ops", []string{string(auth.Operator)}, []string{"api"}, 0)
	scoped := relv1.NewControlServiceClient(tokenConn(t, c, c.Nodes[0].GRPCAddr(), apiOps))
	_, err = scoped.DeleteRelease(ctx, &relv1.DeleteReleaseRequest{App: "web", Version: "4.0.0"})
	wantCode(t, "manage-apps on api only", err, codes.PermissionDenied)

	// 4.0.0 is needed by nothing: it goes, once.
	rctx := metadata.AppendToOutgoingContext(ctx, reqid.MetadataKey, "rq-delete-4")
	first, err := ctl.DeleteRelease(rctx, &relv1.DeleteReleaseRequest{App: "web", Version: "4.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	again, err := ctl.DeleteRelease(rctx, &relv1.DeleteReleaseRequest{App: "web", Version: "4.0.0"})
	if err != nil || again.GetIndex() != first.GetIndex() {
		t.Fatalf("the same request again: %v at %d, want the first answer (index %d)", err, again.GetIndex(), first.GetIndex())
	}
	// The server that answered has applied it (read-your-writes).
	_, err = ctl.GetRelease(ctx, &relv1.GetReleaseRequest{App: "web", Version: "4.0.0"})
	wantCode(t, "deleted release", err, codes.NotFound)
	for _, n := range c.Nodes {
		st := n.Server().Store()
		testcluster.WaitFor(t, 5*time.Second, func() (bool, string) {
			rels, _, _ := st.Releases(nil, "web")
			return len(rels) == 3, fmt.Sprintf("releases on every replica: %d", len(rels))
		})
	}
}

// TestRetentionConfig: a negative retention is a configuration error
// naming the flag; 0 in a Config takes the default.
func TestRetentionConfig(t *testing.T) {
	base := func() server.Config {
		return server.Config{NodeID: "s1", DataDir: t.TempDir(), CAFile: "ca.pem", CertFile: "s1.pem", KeyFile: "s1-key.pem"}
	}
	cases := []struct {
		name string
		edit func(*server.Config)
		want string // "" for valid
	}{
		{"defaults", func(*server.Config) {}, ""},
		{"negative history", func(c *server.Config) { c.HistoryRetention = -time.Hour }, "--history-retention -1h0m0s is negative"},
		{"negative agents", func(c *server.Config) { c.AgentRetention = -time.Second }, "--agent-retention -1s is negative"},
		{"short ones", func(c *server.Config) { c.HistoryRetention, c.AgentRetention = time.Millisecond, time.Millisecond }, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base()
			tc.edit(&cfg)
			err := cfg.Validate()
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, server.ErrConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%v, want ErrConfig saying %q", err, tc.want)
			}
		})
	}
}

// TestHistorySummaryPaging: the summaries of folded history come first,
// by host, then the entries; page_size counts both, a page may end the
// one and start the other, and every item comes once; --host filters
// both.
func TestHistorySummaryPaging(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{})
	leader := c.WaitLeader()
	ctl := dial(t, leader)
	ctx := ctxT(t)
	mustCreate(t, ctl, "web")
	// Written straight into the store: 25 hosts went 1.0.0 → 2.0.0, and
	// the 1.0.0 entries are folded.
	st := leader.Server().Store()
	idx := uint64(1_000_000)
	at := time.Now().UnixNano()
	for i := range 25 {
		id := fmt.Sprintf("h-%02d", i)
		idx++
		if err := st.AgentUp(idx, &relv1.Agent{Id: id, SessionId: "s-" + id, ServerId: "s1"}, []*relv1.AppReport{{App: "web", Version: "1.0.0", Phase: "healthy", AtUnixNano: at}}); err != nil {
			t.Fatal(err)
		}
		idx++
		if err := st.ApplyReports(idx, []*relv1.AgentReport{{AgentId: id, SessionId: "s-" + id, Report: &relv1.AppReport{App: "web", Version: "2.0.0", Phase: "healthy", AtUnixNano: at + 1}}}); err != nil {
			t.Fatal(err)
		}
	}
	idx++
	if n, err := st.FoldHistory(idx, at+1, 5000); err != nil || n != 25 {
		t.Fatalf("folded %d, %v", n, err)
	}
	var (
		sums    []string
		entries []string
		shapes  []string
		tok     string
	)
	for {
		resp, err := ctl.History(ctx, &relv1.HistoryRequest{App: "web", PageSize: 10, PageToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		shapes = append(shapes, fmt.Sprintf("%d+%d", len(resp.GetSummaries()), len(resp.GetEntries())))
		for _, m := range resp.GetSummaries() {
			sums = append(sums, m.GetAgentId())
		}
		for _, e := range resp.GetEntries() {
			entries = append(entries, e.GetAgentId()+"@"+e.GetVersion())
		}
		if tok = resp.GetNextPageToken(); tok == "" {
			break
		}
	}
	if got := strings.Join(shapes, " "); got != "10+0 10+0 5+5 0+10 0+10" {
		t.Errorf("pages (summaries+entries): %s", got)
	}
	if len(sums) != 25 || sums[0] != "h-00" || sums[24] != "h-24" || len(entries) != 25 || entries[0] != "h-00@2.0.0" {
		t.Errorf("summaries %v, entries %v: want each of the 25 hosts once in each", sums, entries)
	}
	resp, err := ctl.History(ctx, &relv1.HistoryRequest{App: "web", Host: "h-07"})
	if err != nil || len(resp.GetSummaries()) != 1 || len(resp.GetEntries()) != 1 || resp.GetSummaries()[0].GetLastVersion() != "1.0.0" {
		t.Fatalf("h-07: %v, %v", resp, err)
	}
	_, err = ctl.History(ctx, &relv1.HistoryRequest{App: "web", PageToken: "historysum.!!"})
	wantCode(t, "bad summary token", err, codes.InvalidArgument, "not a page token")
}

// TestRetentionWorksOffABacklog: history closing faster than one bounded
// fold entry per interval is folded by one wake of the retention loop in
// as many entries as it takes, not one entry per interval (a backlog that
// only grew made make bench's steady state climb).
func TestRetentionWorksOffABacklog(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{Configure: func(i int, cfg *server.Config) {
		cfg.HistoryRetention = time.Millisecond
		cfg.RetentionInterval = time.Hour // the test runs the wake itself
	}})
	leader := c.WaitLeader()
	ctl := dial(t, leader)
	mustCreate(t, ctl, "web")
	// Written straight into the store: 600 hosts each through 21 versions
	// close 12,000 entries, more than two full fold entries.
	st := leader.Server().Store()
	const hosts, versions = 600, 21
	idx := uint64(1_000_000)
	at := time.Now().Add(-time.Hour).UnixNano()
	for i := range hosts {
		id := fmt.Sprintf("h-%03d", i)
		idx++
		if err := st.AgentUp(idx, &relv1.Agent{Id: id, SessionId: "s-" + id, ServerId: "s1"}, []*relv1.AppReport{{App: "web", Version: "1.0.0", Phase: "healthy", AtUnixNano: at}}); err != nil {
			t.Fatal(err)
		}
	}
	for v := 1; v <= versions; v++ {
		var reps []*relv1.AgentReport
		for i := range hosts {
			id := fmt.Sprintf("h-%03d", i)
			reps = append(reps, &relv1.AgentReport{AgentId: id, SessionId: "s-" + id, Report: &relv1.AppReport{App: "web", Version: fmt.Sprintf("1.0.%d", v), Phase: "healthy", AtUnixNano: at + int64(v)}})
		}
		idx++
		if err := st.ApplyReports(idx, reps); err != nil {
			t.Fatal(err)
		}
	}
	cutoff := time.Now().UnixNano()
	if n, err := st.FoldableHistory(cutoff, 1<<30); err != nil || n != hosts*versions {
		t.Fatalf("%d foldable entries (%v), want %d", n, err, hosts*versions)
	}
	leader.Server().RetentionWake(ctxT(t))
	if n, err := st.FoldableHistory(cutoff, 1<<30); err != nil || n != 0 {
		t.Fatalf("after one wake, %d entries still to fold (%v)", n, err)
	}
	if got := metricSum(t, c, "rel_retention_history_folded_total"); got != hosts*versions {
		t.Fatalf("rel_retention_history_folded_total %v, want %d", got, hosts*versions)
	}
}
