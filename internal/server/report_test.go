package server_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/relhq/rel/internal/report"
	"github.com/relhq/rel/internal/server"
	"github.com/relhq/rel/internal/testcluster"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// TestReleaseNotesAndReport runs real rollouts to real agents' protocol
// and asks the ReportService: release notes against what prod runs, in
// creation order, with the new release fields; bad requests refused with
// what to do; the report's records of a succeeded deploy, a canary rolled
// back and its rollback, and what runs where.
func TestReleaseNotesAndReport(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{Configure: fastAgents})
	ctl := dial(t, c.Nodes[0])
	rep := relv1.NewReportServiceClient(c.Nodes[0].Admin())
	ctx := ctxT(t)
	// Created out of semantic order: notes follow creation.
	setupApp(t, ctl, "1.0.0", "1.2.0")
	committed := time.Now().Add(-3 * time.Hour).UnixNano()
	if _, err := ctl.CreateRelease(ctx, &relv1.CreateReleaseRequest{App: "web", Version: "1.1.0", ArtifactUrl: "https://a.example.com/web-1.1.0.tgz", Sha256: digest("1.1.0"),
		Notes: "fix the login loop", Commit: "4f2a9c1", Labels: map[string]string{"team": "web"}, Changelog: "- login: no loop on expired sessions\n",
		BuildUrl: "https://ci.example.com/builds/812", CommitUnixNano: committed}); err != nil {
		t.Fatal(err)
	}
	if _, err := ctl.CreateRelease(ctx, &relv1.CreateReleaseRequest{App: "web", Version: "2.0.0", ArtifactUrl: "https://a.example.com/web-2.0.0.tgz", Sha256: digest("2.0.0")}); err != nil {
		t.Fatal(err)
	}

	// Bad new release fields are refused before anything is written.
	for _, tc := range []struct {
		name string
		req  *relv1.CreateReleaseRequest
		want string
	}{
		{"ftp build URL", &relv1.CreateReleaseRequest{BuildUrl: "ftp://ci/1"}, "absolute http:// or https:// URL"},
		{"changelog too long", &relv1.CreateReleaseRequest{Changelog: strings.Repeat("x", 64<<10+1)}, "changelog is 65537 bytes long: the limit is 65536"},
		{"commit in the future", &relv1.CreateReleaseRequest{CommitUnixNano: time.Now().Add(time.Hour).UnixNano()}, "commit time is after the release's creation"},
	} {
		tc.req.App, tc.req.Version, tc.req.ArtifactUrl, tc.req.Sha256 = "web", "9.9.9", "https://a.example.com/x.tgz", digest("x")
		_, err := ctl.CreateRelease(ctx, tc.req)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want InvalidArgument %q", tc.name, err, tc.want)
		}
	}
	if _, err := ctl.GetRelease(ctx, &relv1.GetReleaseRequest{App: "web", Version: "9.9.9"}); status.Code(err) != codes.NotFound {
		t.Errorf("a refused release was written: %v", err)
	}

	bad := func(v string) (string, string) {
		if v == "2.0.0" {
			return "failed", "health check failed: connection refused"
		}
		return "healthy", ""
	}
	for i := range 3 {
		startAutoAgent(t, c.Nodes[0], fmt.Sprintf("h%d", i), map[string]string{"env": "prod"}, bad)
	}
	first, err := ctl.StartRollout(ctx, &relv1.StartRolloutRequest{App: "web", Version: "1.0.0", Environment: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	waitState(t, ctl, first.GetRollout().GetId(), "succeeded")

	versions := func(rs []*relv1.Release) string {
		var vs []string
		for _, r := range rs {
			vs = append(vs, r.GetVersion())
		}
		return strings.Join(vs, " ")
	}
	// Against what prod runs (1.0.0 on its three hosts).
	var notes *relv1.ReleaseNotesResponse
	testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
		notes, err = rep.ReleaseNotes(ctx, &relv1.ReleaseNotesRequest{App: "web", Version: "2.0.0", Environment: "prod"})
		if err != nil {
			return false, err.Error()
		}
		return len(notes.GetRunning()) == 1 && notes.GetRunning()[0].GetHosts() == 3, fmt.Sprintf("prod runs %v", notes.GetRunning())
	})
	if notes.GetBaseVersion() != "1.0.0" || versions(notes.GetReleases()) != "1.2.0 1.1.0 2.0.0" || notes.GetNothingNew() {
		t.Fatalf("notes of 2.0.0 in prod: base %q, releases %q, nothing new %v", notes.GetBaseVersion(), versions(notes.GetReleases()), notes.GetNothingNew())
	}
	if r := notes.GetReleases()[1]; r.GetChangelog() != "- login: no loop on expired sessions\n" || r.GetBuildUrl() != "https://ci.example.com/builds/812" ||
		r.GetCommitUnixNano() != committed || r.GetNotes() != "fix the login loop" || r.GetLabels()["team"] != "web" {
		t.Errorf("1.1.0 in the notes: %v", r)
	}
	for _, tc := range []struct {
		name, version, since, env string
		want                      string
		nothingNew                bool
	}{
		{"since, exclusive", "1.1.0", "1.0.0", "", "1.2.0 1.1.0", false},
		{"no base", "1.2.0", "", "", "1.0.0 1.2.0", false},
		{"candidate is the base", "1.0.0", "", "prod", "", true},
		{"candidate older than since", "1.2.0", "2.0.0", "", "", true},
	} {
		resp, err := rep.ReleaseNotes(ctx, &relv1.ReleaseNotesRequest{App: "web", Version: tc.version, Since: tc.since, Environment: tc.env})
		if err != nil || versions(resp.GetReleases()) != tc.want || resp.GetNothingNew() != tc.nothingNew {
			t.Errorf("%s: %v %q nothing new %v, want %q %v", tc.name, err, versions(resp.GetReleases()), resp.GetNothingNew(), tc.want, tc.nothingNew)
		}
	}
	for _, tc := range []struct {
		name string
		req  *relv1.ReleaseNotesRequest
		code codes.Code
		want string
	}{
		{"unknown app", &relv1.ReleaseNotesRequest{App: "nope", Version: "1.0.0"}, codes.NotFound, `app "nope" not found`},
		{"unknown version", &relv1.ReleaseNotesRequest{App: "web", Version: "3.0.0"}, codes.NotFound, "release web@3.0.0 not found: 'relctl release list web'"},
		{"unknown since", &relv1.ReleaseNotesRequest{App: "web", Version: "2.0.0", Since: "0.9.0"}, codes.NotFound, "--since 0.9.0: release web@0.9.0 not found"},
		{"unknown env", &relv1.ReleaseNotesRequest{App: "web", Version: "2.0.0", Environment: "qa"}, codes.NotFound, `environment "qa" not found`},
		{"since and env", &relv1.ReleaseNotesRequest{App: "web", Version: "2.0.0", Since: "1.0.0", Environment: "prod"}, codes.InvalidArgument, "give --since VERSION or --env ENV, not both"},
		{"bad version", &relv1.ReleaseNotesRequest{App: "web", Version: "-x"}, codes.InvalidArgument, "version"},
	} {
		_, err := rep.ReleaseNotes(ctx, tc.req)
		if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %s %q", tc.name, err, tc.code, tc.want)
		}
	}

	// A canary of 2.0.0 fails and is rolled back automatically.
	resp, err := ctl.StartRollout(ctx, &relv1.StartRolloutRequest{App: "web", Version: "2.0.0", Environment: "prod",
		Spec: &relv1.RolloutSpec{Strategy: "canary", Canary: &relv1.Quantity{Count: 1}, Waves: []*relv1.Quantity{{Percent: 100}}, AutoRollback: true}})
	if err != nil {
		t.Fatal(err)
	}
	st := waitState(t, ctl, resp.GetRollout().GetId(), "rolled_back")
	waitState(t, ctl, st.GetRollout().GetRolledBackBy(), "succeeded")

	var out *relv1.ReportResponse
	testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
		out, err = rep.Report(ctx, &relv1.ReportRequest{App: "web", PeriodNanos: int64(24 * time.Hour)})
		if err != nil {
			return false, err.Error()
		}
		return len(out.GetDeployments()) == 3, fmt.Sprintf("%d records", len(out.GetDeployments()))
	})
	byID := map[string]*relv1.Deployment{}
	for _, d := range out.GetDeployments() {
		byID[d.GetRolloutId()] = d
	}
	if d := byID[first.GetRollout().GetId()]; d.GetOutcome() != "succeeded" || d.GetHosts() != 3 || d.GetHostsHealthy() != 3 || d.GetStartedUnixNano() == 0 || d.GetSha256() != digest("1.0.0") {
		t.Errorf("1.0.0's record: %v", d)
	}
	if d := byID[resp.GetRollout().GetId()]; d.GetOutcome() != "rolled_back" || d.GetSucceededUnixNano() != 0 || d.GetStrategy() != "canary" {
		t.Errorf("2.0.0's record: %v", d)
	}
	if d := byID[st.GetRollout().GetRolledBackBy()]; d.GetKind() != "rollback" || d.GetOutcome() != "succeeded" || d.GetRollbackOf() != resp.GetRollout().GetId() {
		t.Errorf("the rollback's record: %v", d)
	}
	r := report.FromResponse(out)
	if len(r.Rows) != 1 || r.Rows[0].Deploys != 1 || r.Rows[0].Failures != 1 || r.Rows[0].ChangeFailureRate.Value != 0.5 || !r.Rows[0].TimeToRestore.Known {
		t.Errorf("report rows %+v", r.Rows)
	}
	if len(r.Running) != 1 || r.Running[0].Text() != "1.0.0 3/3" {
		t.Errorf("what runs where: %+v", r.Running)
	}
	for _, tc := range []struct {
		name string
		req  *relv1.ReportRequest
		code codes.Code
		want string
	}{
		{"period too short", &relv1.ReportRequest{PeriodNanos: int64(time.Minute)}, codes.InvalidArgument, "give 1h to 200d"},
		{"period too long", &relv1.ReportRequest{PeriodNanos: int64(365 * 24 * time.Hour)}, codes.InvalidArgument, "give 1h to 200d"},
		{"unknown app", &relv1.ReportRequest{App: "nope"}, codes.NotFound, `app "nope" not found`},
		{"unknown env", &relv1.ReportRequest{Environment: "qa"}, codes.NotFound, `environment "qa" not found`},
	} {
		_, err := rep.Report(ctx, tc.req)
		if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %s %q", tc.name, err, tc.code, tc.want)
		}
	}
}

// TestDeploymentRecordRetention: rollout retention removes a finished
// rollout, its deployment record stays on every replica (the report still
// counts it), and the records' own retention removes them later.
func TestDeploymentRecordRetention(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{Configure: func(i int, cfg *server.Config) {
		fastAgents(i, cfg)
		cfg.RolloutRetention = time.Millisecond
		cfg.RolloutKeep = -1
		cfg.DeploymentRetention = 10 * time.Second
		cfg.RetentionInterval = 100 * time.Millisecond
	}})
	leader := c.WaitLeader()
	ctl := dial(t, leader)
	ctx := ctxT(t)
	setupApp(t, ctl, "1.0.0", "2.0.0")
	startAutoAgent(t, leader, "h1", map[string]string{"env": "prod"}, nil)
	var ids []string
	for _, v := range []string{"1.0.0", "2.0.0"} {
		resp, err := ctl.StartRollout(ctx, &relv1.StartRolloutRequest{App: "web", Version: v, Environment: "prod"})
		if err != nil {
			t.Fatal(err)
		}
		waitState(t, ctl, resp.GetRollout().GetId(), "succeeded")
		ids = append(ids, resp.GetRollout().GetId())
	}
	finished := time.Now()
	// 1.0.0's rollout goes (2.0.0's is prod's current release: kept).
	for _, n := range c.Nodes {
		st := n.Server().Store()
		testcluster.WaitFor(t, 5*time.Second, func() (bool, string) {
			_, err := st.Rollout(nil, ids[0])
			return err != nil, "rollout " + ids[0] + " still there"
		})
		ds, _, err := st.Deployments(nil, "web", "prod", 0, time.Now().UnixNano())
		if len(ds) < 2 && time.Since(finished) > 8*time.Second {
			t.Skip("machine too slow to tell the two retentions apart")
		}
		if err != nil || len(ds) != 2 || ds[0].GetRolloutId() != ids[0] {
			t.Fatalf("node %s: records %v, %v", n.GRPCAddr(), ds, err)
		}
	}
	rep := relv1.NewReportServiceClient(leader.Admin())
	out, err := rep.Report(ctx, &relv1.ReportRequest{App: "web"})
	if err == nil && len(out.GetDeployments()) < 2 && time.Since(finished) > 8*time.Second {
		t.Skip("machine too slow to tell the two retentions apart")
	}
	if err != nil || len(out.GetDeployments()) != 2 {
		t.Fatalf("report after rollout retention: %v, %v", out.GetDeployments(), err)
	}
	// Past --deployment-retention they go too, from every replica.
	for _, n := range c.Nodes {
		st := n.Server().Store()
		testcluster.WaitFor(t, 20*time.Second, func() (bool, string) {
			ds, _, _ := st.Deployments(nil, "", "", 0, time.Now().UnixNano())
			return len(ds) == 0, fmt.Sprintf("node %s still has %d records", n.GRPCAddr(), len(ds))
		})
	}
}
