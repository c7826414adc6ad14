package server_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/relhq/rel/internal/auth"
	"github.com/relhq/rel/internal/pki"
	"github.com/relhq/rel/internal/server"
	"github.com/relhq/rel/internal/testcluster"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// TestBadInput sends each kind of bad request through a follower and checks
// the status code, the message, and that nothing was written.
func TestBadInput(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{})
	leader := c.WaitLeader()
	fc := dial(t, c.Followers()[0])
	ctx := ctxT(t)
	if _, err := fc.CreateApp(ctx, &relv1.CreateAppRequest{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	if _, err := fc.CreateRelease(ctx, releaseReq("web", 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := fc.CreateEnvironment(ctx, &relv1.CreateEnvironmentRequest{Name: "prod", Selector: map[string]string{"env": "prod"}}); err != nil {
		t.Fatal(err)
	}
	good := releaseReq("web", 2)
	with := func(f func(r *relv1.CreateReleaseRequest)) *relv1.CreateReleaseRequest {
		r := proto.Clone(good).(*relv1.CreateReleaseRequest)
		r.Labels = nil
		f(r)
		return r
	}
	before := leader.Server().Store().LatestIndex()

	tests := []struct {
		name string
		call func() error
		code codes.Code
		msg  string
	}{
		{"app name empty", func() error { _, err := fc.CreateApp(ctx, &relv1.CreateAppRequest{}); return err },
			codes.InvalidArgument, "app name is empty: use 1-63 characters a-z, 0-9 and '-'"},
		{"app name charset", func() error { _, err := fc.CreateApp(ctx, &relv1.CreateAppRequest{Name: "Web_1"}); return err },
			codes.InvalidArgument, `app name "Web_1": use lower-case letters a-z, digits 0-9 and '-', starting and ending with a letter or digit`},
		{"app name too long", func() error {
			_, err := fc.CreateApp(ctx, &relv1.CreateAppRequest{Name: strings.Repeat("a", 64)})
			return err
		}, codes.InvalidArgument, "is 64 characters long: the limit is 63"},
		{"duplicate app", func() error { _, err := fc.CreateApp(ctx, &relv1.CreateAppRequest{Name: "web"}); return err },
			codes.AlreadyExists, `app "web" already exists`},
		{"duplicate environment", func() error {
			_, err := fc.CreateEnvironment(ctx, &relv1.CreateEnvironmentRequest{Name: "prod", Selector: map[string]string{"a": "b"}})
			return err
		}, codes.AlreadyExists, `environment "prod" already exists`},
		{"environment without selector", func() error {
			_, err := fc.CreateEnvironment(ctx, &relv1.CreateEnvironmentRequest{Name: "qa"})
			return err
		}, codes.InvalidArgument, "selector is empty: give at least one KEY=VALUE"},
		{"selector bad key", func() error {
			_, err := fc.CreateEnvironment(ctx, &relv1.CreateEnvironmentRequest{Name: "qa", Selector: map[string]string{"bad key": "x"}})
			return err
		}, codes.InvalidArgument, `selector key "bad key"`},
		{"release of unknown app", func() error {
			_, err := fc.CreateRelease(ctx, with(func(r *relv1.CreateReleaseRequest) { r.App = "nope" }))
			return err
		}, codes.NotFound, `app "nope" not found: create it first with 'relctl app create nope'`},
		{"duplicate release", func() error { _, err := fc.CreateRelease(ctx, releaseReq("web", 1)); return err },
			codes.AlreadyExists, "release web@1.0.1 already exists: releases are immutable, create a new version"},
		{"malformed sha256", func() error {
			_, err := fc.CreateRelease(ctx, with(func(r *relv1.CreateReleaseRequest) { r.Sha256 = "abc123" }))
			return err
		}, codes.InvalidArgument, `sha256 "abc123" is not 64 hex digits`},
		{"missing sha256", func() error {
			_, err := fc.CreateRelease(ctx, with(func(r *relv1.CreateReleaseRequest) { r.Sha256 = "" }))
			return err
		}, codes.InvalidArgument, "sha256 is empty"},
		{"URL scheme", func() error {
			_, err := fc.CreateRelease(ctx, with(func(r *relv1.CreateReleaseRequest) { r.ArtifactUrl = "ftp://h/a.tgz" }))
			return err
		}, codes.InvalidArgument, `scheme "ftp" is not supported; use https, http or file`},
		{"URL without scheme", func() error {
			_, err := fc.CreateRelease(ctx, with(func(r *relv1.CreateReleaseRequest) { r.ArtifactUrl = "h/a.tgz" }))
			return err
		}, codes.InvalidArgument, "has no scheme"},
		{"bad version", func() error {
			_, err := fc.CreateRelease(ctx, with(func(r *relv1.CreateReleaseRequest) { r.Version = "1.0 beta" }))
			return err
		}, codes.InvalidArgument, `version "1.0 beta"`},
		{"notes too long", func() error {
			_, err := fc.CreateRelease(ctx, with(func(r *relv1.CreateReleaseRequest) { r.Notes = strings.Repeat("n", 65537) }))
			return err
		}, codes.InvalidArgument, "notes are 65537 bytes long: the limit is 65536"},
		// Issue 10's per-field limits, on the wire.
		{"app description too long", func() error {
			_, err := fc.CreateApp(ctx, &relv1.CreateAppRequest{Name: "api", Description: strings.Repeat("d", 1025)})
			return err
		}, codes.InvalidArgument, "description is 1025 bytes long: the limit is 1024"},
		{"environment description too long", func() error {
			_, err := fc.CreateEnvironment(ctx, &relv1.CreateEnvironmentRequest{Name: "qa", Selector: map[string]string{"env": "qa"}, Description: strings.Repeat("d", 1025)})
			return err
		}, codes.InvalidArgument, "description is 1025 bytes long: the limit is 1024"},
		{"65 release labels", func() error {
			_, err := fc.CreateRelease(ctx, with(func(r *relv1.CreateReleaseRequest) {
				r.Labels = map[string]string{}
				for i := 0; i < 65; i++ {
					r.Labels[fmt.Sprintf("k%d", i)] = "v"
				}
			}))
			return err
		}, codes.InvalidArgument, "pairs: the limit is 64"},
		{"release label value too long", func() error {
			_, err := fc.CreateRelease(ctx, with(func(r *relv1.CreateReleaseRequest) { r.Labels = map[string]string{"build": strings.Repeat("v", 256)} }))
			return err
		}, codes.InvalidArgument, "value is 256 characters long: the limit is 255"},
		{"65 selector pairs", func() error {
			sel := map[string]string{}
			for i := 0; i < 65; i++ {
				sel[fmt.Sprintf("k%d", i)] = "v"
			}
			_, err := fc.CreateEnvironment(ctx, &relv1.CreateEnvironmentRequest{Name: "qa", Selector: sel})
			return err
		}, codes.InvalidArgument, "pairs: the limit is 64"},
		{"show unknown release", func() error {
			_, err := fc.GetRelease(ctx, &relv1.GetReleaseRequest{App: "web", Version: "9.9.9"})
			return err
		}, codes.NotFound, "release web@9.9.9 not found"},
		{"list releases of unknown app", func() error {
			_, err := fc.ListReleases(ctx, &relv1.ListReleasesRequest{App: "nope"})
			return err
		}, codes.NotFound, `app "nope" not found`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			st, _ := status.FromError(err)
			if st.Code() != tt.code {
				t.Fatalf("code %v (%v), want %v", st.Code(), err, tt.code)
			}
			if !strings.Contains(st.Message(), tt.msg) {
				t.Fatalf("message %q, want it to contain %q", st.Message(), tt.msg)
			}
		})
	}
	// Nothing was written: validation failures never reached raft, and the
	// refused duplicates and the unknown app (judged by the FSM) changed no
	// table.
	if after := leader.Server().Store().LatestIndex(); after != before {
		t.Errorf("bad input wrote to the state (latest write index %d -> %d)", before, after)
	}
	c.WaitConverged()
	resp, err := fc.ListReleases(ctx, &relv1.ListReleasesRequest{Read: &relv1.ReadOptions{Consistent: true}})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetReleases()) != 1 || resp.GetReleases()[0].GetSha256() != releaseReq("web", 1).GetSha256() {
		t.Fatalf("releases after bad input: %v", resp.GetReleases())
	}
}

// TestNoLeader: with a majority down, writes and consistent reads fail with
// Unavailable and a message that says why, within LeaderWait; local reads
// still answer.
func TestNoLeader(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{Configure: func(i int, cfg *server.Config) {
		cfg.LeaderWait = 1500 * time.Millisecond
	}})
	leader := c.WaitLeader()
	lc := dial(t, leader)
	if _, err := lc.CreateApp(ctxT(t), &relv1.CreateAppRequest{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	c.WaitConverged()
	for _, f := range c.Followers() {
		c.Kill(f)
	}
	testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
		return !leader.Server().IsLeader(), "the lone node still leads"
	})
	_, err := lc.CreateApp(ctxT(t), &relv1.CreateAppRequest{Name: "api"})
	if status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), "the cluster has no leader yet") {
		t.Fatalf("write without leader: %v, want Unavailable 'the cluster has no leader yet'", err)
	}
	_, err = lc.ListApps(ctxT(t), &relv1.ListAppsRequest{Read: &relv1.ReadOptions{Consistent: true}})
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("consistent read without leader: %v, want Unavailable", err)
	}
	resp, err := lc.ListApps(ctxT(t), &relv1.ListAppsRequest{})
	if err != nil || len(resp.GetApps()) != 1 {
		t.Fatalf("local read without leader: %v %v, want the one app", resp, err)
	}
	// Load balancers see it too: /v1/health answers 503.
	hr, err := httpsClient(t, c, nil).Get("https://" + leader.HTTPAddr() + "/v1/health")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(hr.Body)
	hr.Body.Close()
	if hr.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), `"has_leader": false`) {
		t.Fatalf("health without a leader: %d %s", hr.StatusCode, body)
	}
}

// httpsClient is an HTTPS client of the cluster presenting a certificate
// for id (nil: none).
func httpsClient(t testing.TB, c *testcluster.Cluster, id *pki.Identity) *http.Client {
	tr := &http.Transport{TLSClientConfig: c.PKI.TLSConfig(t, id)}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

// TestHealthAndMetrics: /v1/health answers 200 with the node's role and
// indexes, to anyone (load balancers); /metrics has raft state and gRPC
// requests by method and code, for a client certificate; without
// --enable-debug there is no /debug/pprof/.
func TestHealthAndMetrics(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{})
	n := c.Nodes[0]
	ctl := dial(t, n)
	ctl.CreateApp(ctxT(t), &relv1.CreateAppRequest{Name: "web"})
	ctl.CreateApp(ctxT(t), &relv1.CreateAppRequest{Name: "web"}) // AlreadyExists
	viewer := testcluster.ClientID("prometheus", auth.Viewer)
	get := func(id *pki.Identity, path string) (int, string) {
		resp, err := httpsClient(t, c, id).Get("https://" + n.HTTPAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get(nil, "/v1/health")
	if code != 200 || !strings.Contains(body, `"role": "leader"`) || !strings.Contains(body, `"node_id": "s1"`) {
		t.Fatalf("health: %d %s", code, body)
	}
	code, body = get(&viewer, "/metrics")
	for _, want := range []string{
		"rel_raft_state 2",
		"rel_raft_is_leader 1",
		"rel_raft_applied_index ",
		"rel_raft_apply_duration_seconds_bucket",
		`rel_grpc_requests_total{code="OK",method="/rel.v1.ControlService/CreateApp"} 1`,
		`rel_grpc_requests_total{code="AlreadyExists",method="/rel.v1.ControlService/CreateApp"} 1`,
	} {
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if code, _ := get(nil, "/metrics"); code != http.StatusUnauthorized {
		t.Errorf("metrics without a certificate or token: %d, want 401", code)
	}
	admin := testcluster.AdminID()
	if code, _ := get(&admin, "/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("pprof without --enable-debug: %d, want 404", code)
	}
}
