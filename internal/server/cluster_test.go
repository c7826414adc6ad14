package server_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/relhq/rel/internal/server"
	"github.com/relhq/rel/internal/state"
	"github.com/relhq/rel/internal/testcluster"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// dial connects to a node as an admin (a client certificate of role admin).
func dial(t testing.TB, n *testcluster.Node) relv1.ControlServiceClient {
	t.Helper()
	return relv1.NewControlServiceClient(n.Admin())
}

func dialCluster(t testing.TB, n *testcluster.Node) relv1.ClusterServiceClient {
	t.Helper()
	return relv1.NewClusterServiceClient(n.Admin())
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func digest(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func releaseReq(app string, i int) *relv1.CreateReleaseRequest {
	v := fmt.Sprintf("1.0.%d", i)
	return &relv1.CreateReleaseRequest{
		App: app, Version: v,
		ArtifactUrl: "https://artifacts.example.com/" + app + "-" + v + ".tar.gz",
		Sha256:      digest(app + v),
		Labels:      map[string]string{"build": fmt.Sprint(i)},
	}
}

// createReleases creates releases [from, to) with a few concurrent clients.
func createReleases(t *testing.T, c relv1.ControlServiceClient, app string, from, to int) {
	t.Helper()
	ctx := ctxT(t)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	next := make(chan int)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if _, err := c.CreateRelease(ctx, releaseReq(app, i)); err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("release %d: %w", i, err))
					mu.Unlock()
				}
			}
		}()
	}
	for i := from; i < to; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d creates failed, first: %v", len(errs), errs[0])
	}
}

func listVersions(t *testing.T, c relv1.ControlServiceClient, app string) []string {
	t.Helper()
	var (
		out []string
		tok string
	)
	for {
		resp, err := c.ListReleases(ctxT(t), &relv1.ListReleasesRequest{App: app, PageToken: tok})
		if err != nil {
			t.Fatalf("list releases: %v", err)
		}
		for _, r := range resp.GetReleases() {
			out = append(out, r.GetVersion())
		}
		if tok = resp.GetNextPageToken(); tok == "" {
			return out
		}
	}
}

// TestFailover is the control plane's acceptance test: 200 releases written
// through a follower, the leader killed, a new leader within 5 s, writes
// through the survivors, the old leader restarted and caught up, and all
// three nodes answering with the same releases.
func TestFailover(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{ProductionTimeouts: true})
	leader := c.WaitLeader()
	follower := c.Followers()[0]
	fc := dial(t, follower)
	ctx := ctxT(t)

	if _, err := fc.CreateApp(ctx, &relv1.CreateAppRequest{Name: "web", Description: "the web tier"}); err != nil {
		t.Fatalf("create app via follower: %v", err)
	}
	if _, err := fc.CreateEnvironment(ctx, &relv1.CreateEnvironmentRequest{Name: "prod", Selector: map[string]string{"env": "prod"}}); err != nil {
		t.Fatalf("create env via follower: %v", err)
	}
	createReleases(t, fc, "web", 0, 200)
	c.WaitConverged()
	for _, n := range c.Running() {
		if got := len(listVersions(t, dial(t, n), "web")); got != 200 {
			t.Fatalf("%s lists %d releases before failover, want 200", n.ID, got)
		}
	}

	killedAt := time.Now()
	c.Kill(leader)
	newLeader := c.WaitNewLeader(leader)
	elected := time.Since(killedAt)
	t.Logf("new leader %s elected %s after the leader was killed", newLeader.ID, elected.Round(time.Millisecond))
	if elected > 5*time.Second {
		t.Errorf("new leader after %s, want within 5s", elected)
	}

	survivor := c.Followers()[0]
	createReleases(t, dial(t, survivor), "web", 200, 210)

	c.Restart(leader)
	c.WaitConverged()
	var want []string
	for _, n := range c.Nodes {
		got := listVersions(t, dial(t, n), "web")
		if len(got) != 210 {
			t.Fatalf("%s lists %d releases after catching up, want 210", n.ID, len(got))
		}
		if want == nil {
			want = got
			continue
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("%s release %d is %s, %s has %s", n.ID, i, got[i], c.Nodes[0].ID, want[i])
			}
		}
		if ok, why := state.Equal(c.Nodes[0].Server().Store(), n.Server().Store()); !ok {
			t.Fatalf("state of %s differs from %s: %s", n.ID, c.Nodes[0].ID, why)
		}
	}
	// Semantic order: 1.0.2 before 1.0.10.
	if want[2] != "1.0.2" || want[10] != "1.0.10" || want[209] != "1.0.209" {
		t.Errorf("releases not in semantic order: %v ... %v", want[:12], want[205:])
	}
}

// TestSnapshotCompactionRestart restarts a node after snapshots compacted
// the log, and adds a new node that can only catch up by installing a
// snapshot: both end with state identical to the leader's.
func TestSnapshotCompactionRestart(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{Configure: func(i int, cfg *server.Config) {
		cfg.SnapshotThreshold = 64
		cfg.TrailingLogs = 16
	}})
	leader := c.WaitLeader()
	lc := dial(t, leader)
	if _, err := lc.CreateApp(ctxT(t), &relv1.CreateAppRequest{Name: "api"}); err != nil {
		t.Fatal(err)
	}
	createReleases(t, lc, "api", 0, 150)
	c.WaitConverged()
	for _, n := range c.Running() {
		if err := n.Server().Raft().Snapshot().Error(); err != nil {
			t.Fatalf("snapshot on %s: %v", n.ID, err)
		}
	}

	victim := c.Followers()[0]
	c.Kill(victim)
	createReleases(t, lc, "api", 150, 200) // more than TrailingLogs: needs a snapshot to catch up
	if err := leader.Server().Raft().Snapshot().Error(); err != nil {
		t.Fatalf("snapshot on leader: %v", err)
	}
	c.Restart(victim)
	c.WaitConverged()
	if ok, why := state.Equal(leader.Server().Store(), victim.Server().Store()); !ok {
		t.Fatalf("restarted node differs from leader: %s", why)
	}
	if got := len(listVersions(t, dial(t, victim), "api")); got != 200 {
		t.Fatalf("restarted node lists %d releases, want 200", got)
	}

	// Stop the whole cluster and start it again from disk alone.
	c.Stop()
	for _, n := range c.Nodes {
		c.Restart(n)
	}
	leader = c.WaitLeader()
	c.WaitConverged()
	for _, n := range c.Nodes {
		if ok, why := state.Equal(leader.Server().Store(), n.Server().Store()); !ok {
			t.Fatalf("after full restart %s differs from leader: %s", n.ID, why)
		}
		if got := len(listVersions(t, dial(t, n), "api")); got != 200 {
			t.Fatalf("after full restart %s lists %d releases, want 200", n.ID, got)
		}
	}
}

// TestConsistentReadFromFollower reads through a follower with consistent
// set: the answer includes a write made through another node just before.
func TestConsistentReadFromFollower(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{})
	c.WaitLeader()
	fs := c.Followers()
	a, b := dial(t, fs[0]), dial(t, fs[1])
	for i := 0; i < 20; i++ {
		name := fmt.Sprintf("app-%d", i)
		if _, err := a.CreateApp(ctxT(t), &relv1.CreateAppRequest{Name: name}); err != nil {
			t.Fatal(err)
		}
		// Read-your-writes: the follower that took the write answers with it.
		own, err := a.ListApps(ctxT(t), &relv1.ListAppsRequest{})
		if err != nil || len(own.GetApps()) != i+1 {
			t.Fatalf("local read on the writing follower after write %d: %d apps, %v", i, len(own.GetApps()), err)
		}
		resp, err := b.ListApps(ctxT(t), &relv1.ListAppsRequest{Read: &relv1.ReadOptions{Consistent: true}})
		if err != nil {
			t.Fatalf("consistent list: %v", err)
		}
		if len(resp.GetApps()) != i+1 {
			t.Fatalf("consistent read after write %d saw %d apps", i, len(resp.GetApps()))
		}
	}
}

// TestMembership lists members from a follower and removes one.
func TestMembership(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{})
	leader := c.WaitLeader()
	follower := c.Followers()[0]
	cc := dialCluster(t, follower)
	resp, err := cc.Members(ctxT(t), &relv1.MembersRequest{})
	if err != nil {
		t.Fatalf("members: %v", err)
	}
	if len(resp.GetMembers()) != 3 {
		t.Fatalf("got %d members, want 3", len(resp.GetMembers()))
	}
	leaders := 0
	for _, m := range resp.GetMembers() {
		if m.GetLeader() {
			leaders++
			if m.GetId() != leader.ID || m.GetRole() != "leader" {
				t.Errorf("leader row %+v, want %s as leader", m, leader.ID)
			}
		} else if m.GetRole() != "follower" {
			t.Errorf("member %s role %q, want follower", m.GetId(), m.GetRole())
		}
		if m.GetGrpcAddr() == "" || m.GetHttpAddr() == "" || m.GetAppliedIndex() == 0 {
			t.Errorf("member %s incomplete: %+v", m.GetId(), m)
		}
	}
	if leaders != 1 {
		t.Fatalf("%d leaders listed", leaders)
	}

	victim := c.Followers()[1]
	if _, err := cc.Remove(ctxT(t), &relv1.RemoveRequest{Id: victim.ID}); err != nil {
		t.Fatalf("remove %s: %v", victim.ID, err)
	}
	c.Kill(victim)
	testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
		resp, err := cc.Members(ctxT(t), &relv1.MembersRequest{})
		if err != nil {
			return false, err.Error()
		}
		return len(resp.GetMembers()) == 2, fmt.Sprintf("%d members", len(resp.GetMembers()))
	})
	// The two left still commit writes.
	if _, err := dial(t, follower).CreateApp(ctxT(t), &relv1.CreateAppRequest{Name: "after-remove"}); err != nil {
		t.Fatalf("write after remove: %v", err)
	}
}
