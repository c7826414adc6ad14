package server_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
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

// rawAgent speaks the agent protocol by hand, so these tests check the
// server's side of the stream independently of internal/agent.
type rawAgent struct {
	sendMu  sync.Mutex // gRPC allows one sender at a time
	t       *testing.T
	id      string
	stream  relv1.AgentService_ConnectClient
	cancel  context.CancelFunc
	welcome *relv1.Welcome
	desired chan *relv1.DesiredState
	done    chan error
}

// connectAgent opens an agent stream to n with a certificate for agent id.
func connectAgent(t *testing.T, n *testcluster.Node, id string, labels map[string]string, lastGen uint64) *rawAgent {
	t.Helper()
	aid := testcluster.AgentID(id)
	conn := n.Cluster().PKI.Dial(t, n.GRPCAddr(), &aid)
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := relv1.NewAgentServiceClient(conn).Connect(ctx)
	if err != nil {
		t.Fatalf("connect %s: %v", id, err)
	}
	a := &rawAgent{t: t, id: id, stream: stream, cancel: cancel, desired: make(chan *relv1.DesiredState, 16), done: make(chan error, 1)}
	t.Cleanup(func() {
		cancel()
		<-a.done
		conn.Close()
	})
	if err := stream.Send(&relv1.AgentMessage{Kind: &relv1.AgentMessage_Hello{Hello: &relv1.Hello{
		NodeId: id, Labels: labels, AgentVersion: "test", LastGeneration: lastGen,
	}}}); err != nil {
		t.Fatal(err)
	}
	m, err := stream.Recv()
	if err != nil {
		t.Fatalf("%s: no welcome: %v", id, err)
	}
	if a.welcome = m.GetWelcome(); a.welcome == nil {
		t.Fatalf("%s: first message %v, want welcome", id, m)
	}
	go func() {
		defer close(a.desired)
		for {
			m, err := stream.Recv()
			if err != nil {
				a.done <- err
				return
			}
			if d := m.GetDesired(); d != nil {
				a.desired <- d
			}
		}
	}()
	return a
}

// httpClient is an HTTPS client of the cluster presenting a certificate for id.
func httpClient(t testing.TB, c *testcluster.Cluster, id pki.Identity) *http.Client {
	tr := &http.Transport{TLSClientConfig: c.PKI.TLSConfig(t, &id)}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

func (a *rawAgent) send(m *relv1.AgentMessage) error {
	a.sendMu.Lock()
	defer a.sendMu.Unlock()
	return a.stream.Send(m)
}

// heartbeat keeps the stream alive past the server's silence check.
func (a *rawAgent) heartbeat(every time.Duration) {
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for range t.C {
			if a.send(&relv1.AgentMessage{Kind: &relv1.AgentMessage_Heartbeat{Heartbeat: &relv1.Heartbeat{}}}) != nil {
				return
			}
		}
	}()
}

func (a *rawAgent) nextDesired(timeout time.Duration) *relv1.DesiredState {
	a.t.Helper()
	select {
	case d, ok := <-a.desired:
		if !ok {
			a.t.Fatalf("%s: stream ended", a.id)
		}
		return d
	case <-time.After(timeout):
		a.t.Fatalf("%s: no desired state within %s", a.id, timeout)
		return nil
	}
}

func (a *rawAgent) report(app, version, phase, rollout string) {
	a.t.Helper()
	a.reportReason(app, version, phase, rollout, "")
}

func (a *rawAgent) reportReason(app, version, phase, rollout, reason string) {
	a.t.Helper()
	err := a.send(&relv1.AgentMessage{Kind: &relv1.AgentMessage_Reports{Reports: &relv1.Reports{Reports: []*relv1.AppReport{{
		App: app, Version: version, Phase: phase, RolloutId: rollout, AtUnixNano: time.Now().UnixNano(), Reason: reason,
	}}}}})
	if err != nil {
		a.t.Fatalf("%s: report: %v", a.id, err)
	}
}

func fastAgents(i int, cfg *server.Config) {
	cfg.HeartbeatInterval = 200 * time.Millisecond
	cfg.AgentGrace = time.Second
}

// TestAgentRollout: agents connect to different servers, a rollout sets
// their desired state, their reports finish it, and history records it.
func TestAgentRollout(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{Configure: fastAgents})
	ctl := dial(t, c.Nodes[0])
	ctx := ctxT(t)
	mustCreate(t, ctl, "web")
	if _, err := ctl.CreateEnvironment(ctx, &relv1.CreateEnvironmentRequest{Name: "prod", Selector: map[string]string{"env": "prod"}}); err != nil {
		t.Fatal(err)
	}
	var agents []*rawAgent
	for i := 0; i < 3; i++ {
		a := connectAgent(t, c.Nodes[i], fmt.Sprintf("host-%d", i), map[string]string{"env": "prod"}, 0)
		if d := a.nextDesired(5 * time.Second); d.GetGeneration() != 0 || len(d.GetApps()) != 0 {
			t.Fatalf("initial desired state %v, want empty generation 0", d)
		}
		agents = append(agents, a)
	}
	connectAgent(t, c.Nodes[0], "dev-host", map[string]string{"env": "dev"}, 0)
	testcluster.WaitFor(t, 5*time.Second, func() (bool, string) {
		resp, err := ctl.ListAgents(ctx, &relv1.ListAgentsRequest{Environment: "prod"})
		if err != nil {
			return false, err.Error()
		}
		return len(resp.GetAgents()) == 3, fmt.Sprintf("%d prod agents", len(resp.GetAgents()))
	})

	start, err := ctl.StartRollout(ctx, &relv1.StartRolloutRequest{App: "web", Version: "1.0.1", Environment: "prod"})
	if err != nil {
		t.Fatalf("start rollout: %v", err)
	}
	ro := start.GetRollout()
	if len(ro.GetHosts()) != 3 || ro.GetState() != "running" {
		t.Fatalf("rollout %v", ro)
	}
	_, err = ctl.StartRollout(ctx, &relv1.StartRolloutRequest{App: "web", Version: "1.0.1", Environment: "prod"})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), ro.GetId()) {
		t.Fatalf("second rollout: %v, want FailedPrecondition naming %s", err, ro.GetId())
	}
	for _, a := range agents {
		d := a.nextDesired(5 * time.Second)
		if len(d.GetApps()) != 1 || d.GetApps()[0].GetVersion() != "1.0.1" || d.GetApps()[0].GetRolloutId() != ro.GetId() || d.GetGeneration() < start.GetIndex() {
			t.Fatalf("%s desired %v", a.id, d)
		}
		for _, phase := range []string{"downloading", "installing", "starting", "verifying", "healthy"} {
			a.report("web", "1.0.1", phase, ro.GetId())
		}
	}
	testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
		resp, err := ctl.GetRollout(ctx, &relv1.GetRolloutRequest{Id: ro.GetId()})
		if err != nil {
			return false, err.Error()
		}
		st := resp.GetStatus()
		return st.GetRollout().GetState() == "succeeded", fmt.Sprintf("state %s totals %v", st.GetRollout().GetState(), st.GetTotals())
	})
	hist, err := ctl.History(ctx, &relv1.HistoryRequest{App: "web", Environment: "prod"})
	if err != nil || len(hist.GetEntries()) != 3 {
		t.Fatalf("history %v %v, want 3 entries", hist, err)
	}

	// A reconnect (same id, new stream, told the last generation) replaces
	// the old stream and gets the same desired state again.
	gen := start.GetIndex()
	again := connectAgent(t, c.Nodes[1], "host-0", map[string]string{"env": "prod"}, gen)
	if d := again.nextDesired(5 * time.Second); d.GetGeneration() < gen || d.GetApps()[0].GetVersion() != "1.0.1" {
		t.Fatalf("desired after reconnect %v", d)
	}
	select {
	case err := <-agents[0].done:
		t.Logf("old stream of host-0 ended: %v", err)
		agents[0].done <- err // for the cleanup, which waits for it
	case <-time.After(5 * time.Second):
		// The old stream was on another server, which keeps it until its
		// silence check: that's fine, the agent row names the new session.
	}
	testcluster.WaitFor(t, 5*time.Second, func() (bool, string) {
		resp, err := ctl.GetAgent(ctx, &relv1.GetAgentRequest{Id: "host-0"})
		if err != nil {
			return false, err.Error()
		}
		return resp.GetAgent().GetAgent().GetServerId() == c.Nodes[1].ID && resp.GetAgent().GetAgent().GetConnected(), fmt.Sprintf("%v", resp.GetAgent().GetAgent())
	})

	// An agent that goes away is marked down after the grace period.
	agents[2].cancel()
	testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
		resp, err := ctl.GetAgent(ctx, &relv1.GetAgentRequest{Id: "host-2"})
		if err != nil {
			return false, err.Error()
		}
		a := resp.GetAgent().GetAgent()
		return !a.GetConnected(), fmt.Sprintf("connected=%v", a.GetConnected())
	})
}

func mustCreate(t *testing.T, ctl relv1.ControlServiceClient, app string) {
	t.Helper()
	ctx := ctxT(t)
	if _, err := ctl.CreateApp(ctx, &relv1.CreateAppRequest{Name: app}); err != nil {
		t.Fatal(err)
	}
	if _, err := ctl.CreateRelease(ctx, releaseReq(app, 1)); err != nil {
		t.Fatal(err)
	}
}

// TestRolloutFailsOnHostFailure: one failed host fails an all-at-once rollout.
func TestRolloutFailsOnHostFailure(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{Configure: fastAgents})
	ctl := dial(t, c.Nodes[0])
	ctx := ctxT(t)
	mustCreate(t, ctl, "web")
	ctl.CreateEnvironment(ctx, &relv1.CreateEnvironmentRequest{Name: "prod", Selector: map[string]string{"env": "prod"}})
	_, err := ctl.StartRollout(ctx, &relv1.StartRolloutRequest{App: "web", Version: "1.0.1", Environment: "prod"})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(status.Convert(err).Message(), "selects no connected agent") {
		t.Fatalf("rollout with no agents: %v", err)
	}
	_, err = ctl.StartRollout(ctx, &relv1.StartRolloutRequest{App: "web", Version: "9.9.9", Environment: "prod"})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("rollout of unknown release: %v", err)
	}
	_, err = ctl.StartRollout(ctx, &relv1.StartRolloutRequest{App: "web", Version: "1.0.1", Environment: "nope"})
	if status.Code(err) != codes.NotFound || !strings.Contains(status.Convert(err).Message(), `environment "nope" not found`) {
		t.Fatalf("rollout to unknown env: %v", err)
	}
	a := connectAgent(t, c.Nodes[0], "h1", map[string]string{"env": "prod"}, 0)
	b := connectAgent(t, c.Nodes[0], "h2", map[string]string{"env": "prod"}, 0)
	a.nextDesired(5 * time.Second)
	b.nextDesired(5 * time.Second)
	start, err := ctl.StartRollout(ctx, &relv1.StartRolloutRequest{App: "web", Version: "1.0.1", Environment: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	id := start.GetRollout().GetId()
	a.nextDesired(5 * time.Second)
	b.nextDesired(5 * time.Second)
	b.report("web", "1.0.1", "healthy", id)
	a.reportReason("web", "1.0.1", "failed", id, "hook before_install exited 3")
	var st *relv1.RolloutStatus
	testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
		resp, err := ctl.GetRollout(ctx, &relv1.GetRolloutRequest{Id: id})
		if err != nil {
			return false, err.Error()
		}
		st = resp.GetStatus()
		ro := st.GetRollout()
		return ro.GetState() == "failed" && strings.Contains(ro.GetReason(), "h1: hook before_install exited 3"), ro.GetState() + ": " + ro.GetReason()
	})
	// What each host runs now: h2 the release, h1 nothing (it failed
	// before switching to anything).
	now := map[string]string{}
	for _, h := range st.GetHosts() {
		now[h.GetAgentId()] = h.GetCurrentVersion() + "/" + h.GetVersion()
	}
	if now["h1"] != "/1.0.1" || now["h2"] != "1.0.1/1.0.1" {
		t.Errorf("current/target per host %v, want h1 /1.0.1, h2 1.0.1/1.0.1", now)
	}

	// History has the failed attempt, filtered by host and time on the
	// server.
	hist, err := ctl.History(ctx, &relv1.HistoryRequest{App: "web", Host: "h1"})
	if err != nil || len(hist.GetEntries()) != 1 {
		t.Fatalf("h1 history %v %v, want the failed attempt", hist, err)
	}
	if e := hist.GetEntries()[0]; e.GetOutcome() != "failed" || e.GetReason() != "hook before_install exited 3" ||
		e.GetToUnixNano() == 0 || e.GetRolloutId() != id || e.GetRolloutKind() != "deploy" {
		t.Errorf("h1 history entry %v", e)
	}
	if hist, err := ctl.History(ctx, &relv1.HistoryRequest{App: "web", Host: "h2"}); err != nil || len(hist.GetEntries()) != 1 ||
		hist.GetEntries()[0].GetOutcome() != "running" {
		t.Errorf("h2 history %v %v, want 1.0.1 running", hist, err)
	}
	later := time.Now().Add(time.Hour).UnixNano()
	if hist, err := ctl.History(ctx, &relv1.HistoryRequest{App: "web", SinceUnixNano: later}); err != nil || len(hist.GetEntries()) != 1 ||
		hist.GetEntries()[0].GetAgentId() != "h2" {
		t.Errorf("history since an hour from now %v %v, want h2's running entry only", hist, err)
	}
}

// TestArtifactUpload: a blob uploaded through a follower is stored on a
// majority before the upload returns, is served with Range by every server,
// and a bad upload leaves nothing behind.
func TestArtifactUpload(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{Configure: func(i int, cfg *server.Config) {
		cfg.MaxArtifactBytes = 1 << 20
	}})
	c.WaitLeader()
	f := c.Followers()[0]
	conn := f.Admin()
	ac := relv1.NewArtifactServiceClient(conn)
	data := make([]byte, 300_000)
	rand.Read(data)
	sum := sha256.Sum256(data)
	digest := hex.EncodeToString(sum[:])

	upload := func(digest string, size int64, body []byte) (*relv1.UploadResponse, error) {
		st, err := ac.Upload(ctxT(t))
		if err != nil {
			return nil, err
		}
		if err := st.Send(&relv1.UploadRequest{Kind: &relv1.UploadRequest_Header{Header: &relv1.UploadHeader{Sha256: digest, Size: size, Name: "blob"}}}); err != nil {
			return nil, err
		}
		for off := 0; off < len(body); off += 64 << 10 {
			end := min(off+64<<10, len(body))
			if err := st.Send(&relv1.UploadRequest{Kind: &relv1.UploadRequest_Chunk{Chunk: body[off:end]}}); err != nil {
				break // the server refused early; CloseAndRecv says why
			}
		}
		return st.CloseAndRecv()
	}

	resp, err := upload(digest, int64(len(data)), data)
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	if resp.GetArtifactUrl() != "rel://sha256/"+digest || len(resp.GetHolders()) < 2 {
		t.Fatalf("upload response %v", resp)
	}
	// Every server serves it to agents (the minority fetches on demand),
	// with Range.
	agentHTTP := httpClient(t, c, testcluster.AgentID("h1"))
	for _, n := range c.Nodes {
		req, _ := http.NewRequest("GET", "https://"+n.HTTPAddr()+"/v1/artifacts/sha256/"+digest, nil)
		req.Header.Set("Range", "bytes=1000-")
		hr, err := agentHTTP.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(hr.Body)
		hr.Body.Close()
		if hr.StatusCode != http.StatusPartialContent || !bytes.Equal(body, data[1000:]) {
			t.Fatalf("%s: range GET status %d, %d bytes", n.ID, hr.StatusCode, len(body))
		}
	}

	// A release can use it; the server fills in the size.
	ctl := dial(t, f)
	ctl.CreateApp(ctxT(t), &relv1.CreateAppRequest{Name: "web"})
	rel, err := ctl.CreateRelease(ctxT(t), &relv1.CreateReleaseRequest{App: "web", Version: "1.0.0", ArtifactUrl: resp.GetArtifactUrl()})
	if err != nil || rel.GetRelease().GetSize() != int64(len(data)) || rel.GetRelease().GetSha256() != digest {
		t.Fatalf("release from upload: %v %v", rel, err)
	}

	bad := make([]byte, 1000)
	rand.Read(bad)
	other := sha256.Sum256([]byte("something else"))
	tests := []struct {
		name   string
		digest string
		size   int64
		body   []byte
		msg    string
	}{
		{"digest mismatch", hex.EncodeToString(other[:]), 1000, bad, "hash to"},
		{"size mismatch", hex.EncodeToString(other[:]), 2000, bad, "1000 bytes received, 2000 announced"},
		{"too large", hex.EncodeToString(other[:]), 2 << 20, nil, "the limit is 1048576"},
		{"bad digest", "xyz", 10, nil, `sha256 "xyz"`},
	}
	for _, tt := range tests {
		_, err := upload(tt.digest, tt.size, tt.body)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tt.msg) {
			t.Errorf("%s: %v, want InvalidArgument containing %q", tt.name, err, tt.msg)
		}
	}
	_, err = ctl.CreateRelease(ctxT(t), &relv1.CreateReleaseRequest{App: "web", Version: "2.0.0", ArtifactUrl: "rel://sha256/" + hex.EncodeToString(other[:])})
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("release of a blob never uploaded: %v, want FailedPrecondition", err)
	}
	// Nothing of the refused uploads is left on any server.
	for _, n := range c.Nodes {
		entries, _ := os.ReadDir(filepath.Join(n.DataDir(), "artifacts", "sha256"))
		for _, e := range entries {
			if e.Name() != digest {
				t.Errorf("%s holds %s after refused uploads", n.ID, e.Name())
			}
		}
		tmps, _ := os.ReadDir(filepath.Join(n.DataDir(), "artifacts", "tmp"))
		if len(tmps) != 0 {
			t.Errorf("%s has %d partial uploads left", n.ID, len(tmps))
		}
	}
}

// TestForeignGenerationIgnored: an agent that last served another cluster
// (a rebuilt one) with a generation far ahead of this cluster's indexes is
// sent this cluster's desired state instead of being made to wait forever.
func TestForeignGenerationIgnored(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{Configure: fastAgents})
	testcluster.WaitFor(t, 5*time.Second, func() (bool, string) {
		return c.Nodes[0].Server().Store().ClusterID() != "", "the cluster has no id yet"
	})
	cid := c.Nodes[0].Server().Store().ClusterID()
	aid := testcluster.AgentID("h1")
	conn := c.Nodes[0].Dial(&aid)
	for _, tc := range []struct {
		cluster  string
		wantSent bool
	}{{"cl-someone-else", true}, {cid, false}} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		stream, err := relv1.NewAgentServiceClient(conn).Connect(ctx)
		if err != nil {
			t.Fatal(err)
		}
		stream.Send(&relv1.AgentMessage{Kind: &relv1.AgentMessage_Hello{Hello: &relv1.Hello{NodeId: "h1", LastGeneration: 1_000_000, ClusterId: tc.cluster}}})
		w, err := stream.Recv()
		if err != nil || w.GetWelcome().GetClusterId() != cid {
			t.Fatalf("welcome %v %v, want cluster %s", w, err, cid)
		}
		_, err = stream.Recv()
		cancel()
		if sent := err == nil; sent != tc.wantSent {
			t.Errorf("agent of cluster %q: desired state sent = %v (%v), want %v", tc.cluster, sent, err, tc.wantSent)
		}
	}
}

// TestReportOutput: a hook's output reaches raft cut to its last 1 KiB,
// and only roles that may read it (deployer, operator, admin) see it:
// it holds whatever a hook printed.
func TestReportOutput(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{Configure: fastAgents})
	n := c.Nodes[0]
	a := connectAgent(t, n, "web-1", map[string]string{"env": "prod"}, 0)
	out := strings.Repeat("x", 3000) + "ends with a secret"
	if err := a.send(&relv1.AgentMessage{Kind: &relv1.AgentMessage_Reports{Reports: &relv1.Reports{Reports: []*relv1.AppReport{{
		App: "web", Version: "1.0.0", Phase: "failed", Reason: "hook before_install exited 1", Output: out, AtUnixNano: time.Now().UnixNano(),
	}}}}}); err != nil {
		t.Fatal(err)
	}
	admin := dial(t, n)
	testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
		resp, err := admin.GetAgent(ctxT(t), &relv1.GetAgentRequest{Id: "web-1"})
		if err != nil {
			return false, err.Error()
		}
		return len(resp.GetAgent().GetApps()) == 1, "no report yet"
	})
	for _, tc := range []struct {
		role auth.Role
		want bool
	}{{auth.Admin, true}, {auth.Deployer, true}, {auth.Operator, true}, {auth.Viewer, false}, {auth.ReleaseCreator, false}} {
		id := testcluster.ClientID("someone", tc.role)
		ctl := relv1.NewControlServiceClient(n.Dial(&id))
		got, err := ctl.GetAgent(ctxT(t), &relv1.GetAgentRequest{Id: "web-1"})
		if err != nil {
			t.Fatalf("%s: %v", tc.role, err)
		}
		list, err := ctl.ListAgents(ctxT(t), &relv1.ListAgentsRequest{})
		if err != nil || len(list.GetAgents()) != 1 {
			t.Fatalf("%s: list %v %v", tc.role, list, err)
		}
		for what, r := range map[string]*relv1.AppReport{"GetAgent": got.GetAgent().GetApps()[0], "ListAgents": list.GetAgents()[0].GetApps()[0]} {
			o := r.GetOutput()
			switch {
			case !tc.want && o != "":
				t.Errorf("%s: %s shows %d bytes of hook output to a %s", tc.role, what, len(o), tc.role)
			case tc.want && (len(o) > 1024 || !strings.HasSuffix(o, "ends with a secret")):
				t.Errorf("%s: %s output is %d bytes ending %q, want the last 1 KiB", tc.role, what, len(o), o[max(0, len(o)-20):])
			}
			if r.GetReason() == "" {
				t.Errorf("%s: %s hides the reason too", tc.role, what)
			}
		}
	}
}

// TestAgentClockIgnored: an agent's clock decides nothing. Reports of an
// agent an hour behind, then an hour ahead, are stamped with the server's
// time and kept in the order they came; a report of a replaced stream
// that commits late does not win over the new stream's.
func TestAgentClockIgnored(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{Configure: fastAgents})
	n := c.Nodes[0]
	a := connectAgent(t, n, "web-1", map[string]string{"env": "prod"}, 0)
	a.heartbeat(100 * time.Millisecond)
	send := func(a *rawAgent, phase string, skew time.Duration) {
		t.Helper()
		if err := a.send(&relv1.AgentMessage{Kind: &relv1.AgentMessage_Reports{Reports: &relv1.Reports{Reports: []*relv1.AppReport{{
			App: "web", Version: "1.0.0", Phase: phase, AtUnixNano: time.Now().Add(skew).UnixNano(),
		}}}}}); err != nil {
			t.Fatal(err)
		}
	}
	row := func() *relv1.AppReport {
		aa, _ := n.Server().Store().AgentApp(nil, "web-1", "web")
		return aa.GetReport()
	}
	start := time.Now()
	send(a, "downloading", time.Hour) // an hour ahead
	testcluster.WaitFor(t, 5*time.Second, func() (bool, string) { return row().GetPhase() == "downloading", "no report yet" })
	send(a, "healthy", -time.Hour) // then an hour behind: still the newest
	testcluster.WaitFor(t, 5*time.Second, func() (bool, string) {
		return row().GetPhase() == "healthy", fmt.Sprintf("phase %q: the later report lost to the agent's clock", row().GetPhase())
	})
	if at := time.Unix(0, row().GetAtUnixNano()); at.Before(start) || at.After(time.Now()) {
		t.Errorf("report time %s is not the server's (between %s and now)", at, start)
	}
	// A batch of an older session, committed after the agent reconnected,
	// is ignored.
	agent, err := n.Server().Store().Agent(nil, "web-1")
	if err != nil {
		t.Fatal(err)
	}
	oldSession := agent.GetSessionId()
	b := connectAgent(t, n, "web-1", map[string]string{"env": "prod"}, 0)
	b.heartbeat(100 * time.Millisecond)
	testcluster.WaitFor(t, 5*time.Second, func() (bool, string) {
		ag, _ := n.Server().Store().Agent(nil, "web-1")
		return ag.GetSessionId() != oldSession, "no new session"
	})
	stale := &relv1.Command{StampedUnixNano: time.Now().UnixNano(), Kind: &relv1.Command_ReportBatch{ReportBatch: &relv1.ReportBatch{Reports: []*relv1.AgentReport{{
		AgentId: "web-1", SessionId: oldSession, Report: &relv1.AppReport{App: "web", Version: "0.9.0", Phase: "failed", AtUnixNano: time.Now().UnixNano()},
	}}}}}
	raw, err := proto.Marshal(stale)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Server().Raft().Apply(raw, 5*time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	if r := row(); r.GetVersion() != "1.0.0" || r.GetPhase() != "healthy" {
		t.Errorf("a report of the replaced session won: %v", r)
	}
}

// TestLiveStreamReasserted: a live stream recorded down (as the leader's
// sweep does when it cannot reach the server holding it, during a
// partition) is recorded connected again, with the same session, within a
// heartbeat interval or two; a stream whose agent has a newer session is
// closed.
func TestLiveStreamReasserted(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{Configure: fastAgents})
	f := c.Followers()[0]
	a := connectAgent(t, f, "web-1", map[string]string{"env": "prod"}, 0)
	a.heartbeat(100 * time.Millisecond)
	leader := c.WaitLeader()
	row := func() *relv1.Agent {
		ag, err := leader.Server().Store().Agent(nil, "web-1")
		if err != nil {
			t.Fatal(err)
		}
		return ag
	}
	testcluster.WaitFor(t, 5*time.Second, func() (bool, string) { return row().GetConnected(), "not connected yet" })
	session := row().GetSessionId()
	apply := func(cmd *relv1.Command) {
		t.Helper()
		b, err := proto.Marshal(cmd)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.WaitLeader().Server().Raft().Apply(b, 5*time.Second).Error(); err != nil {
			t.Fatal(err)
		}
	}
	apply(&relv1.Command{StampedUnixNano: time.Now().UnixNano(), Kind: &relv1.Command_AgentDown{AgentDown: &relv1.AgentDown{
		AgentId: "web-1", SessionId: session, AtUnixNano: time.Now().UnixNano(), Reason: "agent lost: its server has not answered",
	}}})
	if row().GetConnected() {
		t.Fatal("the agent is still recorded connected after AgentDown")
	}
	downAt := time.Now()
	testcluster.WaitFor(t, 5*time.Second, func() (bool, string) {
		r := row()
		return r.GetConnected() && r.GetSessionId() == session, fmt.Sprintf("connected %v session %s", r.GetConnected(), r.GetSessionId())
	})
	t.Logf("recorded connected again %s after being marked down (heartbeat interval 200ms)", time.Since(downAt).Round(time.Millisecond))

	// A newer session elsewhere: this server closes its stale stream.
	newer := proto.Clone(row()).(*relv1.Agent)
	newer.SessionId, newer.ServerId, newer.ConnectedUnixNano = "sess-newer", leader.ID, time.Now().Add(time.Second).UnixNano()
	apply(&relv1.Command{StampedUnixNano: time.Now().UnixNano(), Kind: &relv1.Command_AgentUp{AgentUp: &relv1.AgentUp{Agent: newer}}})
	select {
	case err := <-a.done:
		t.Logf("stale stream closed: %v", err)
		a.done <- err // for the cleanup, which waits for it
	case <-time.After(5 * time.Second):
		t.Fatal("the stale stream was not closed")
	}
	if r := row(); r.GetSessionId() != "sess-newer" {
		t.Errorf("the stale stream was recorded over the newer session: %v", r)
	}
}

// TestGoodbyeRecordsAgentDownAtOnce (issue 9): an agent that stops says
// goodbye on its stream and is recorded down at once, not after the grace
// period (30 s here), so no rollout plans it meanwhile.
func TestGoodbyeRecordsAgentDownAtOnce(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{Configure: func(i int, cfg *server.Config) {
		cfg.HeartbeatInterval = 200 * time.Millisecond
		cfg.AgentGrace = 30 * time.Second
	}})
	leader := c.WaitLeader()
	a := connectAgent(t, c.Followers()[0], "web-1", map[string]string{"env": "prod"}, 0)
	row := func() *relv1.Agent {
		ag, err := leader.Server().Store().Agent(nil, "web-1")
		if err != nil {
			return nil
		}
		return ag
	}
	testcluster.WaitFor(t, 5*time.Second, func() (bool, string) {
		r := row()
		return r != nil && r.GetConnected(), "web-1 recorded connected"
	})
	if err := a.send(&relv1.AgentMessage{Kind: &relv1.AgentMessage_Goodbye{Goodbye: &relv1.Goodbye{Reason: "upgrade"}}}); err != nil {
		t.Fatal(err)
	}
	testcluster.WaitFor(t, 5*time.Second, func() (bool, string) {
		r := row()
		return r != nil && !r.GetConnected() && r.GetDisconnectReason() == "agent stopped: upgrade",
			fmt.Sprintf("web-1 recorded down with its reason within 5 s (grace 30 s): %v", r)
	})
	admin := relv1.NewControlServiceClient(leader.Admin())
	ctx := context.Background()
	if _, err := admin.CreateApp(ctx, &relv1.CreateAppRequest{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CreateEnvironment(ctx, &relv1.CreateEnvironmentRequest{Name: "prod", Selector: map[string]string{"env": "prod"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.CreateRelease(ctx, &relv1.CreateReleaseRequest{App: "web", Version: "1.0.0", Sha256: strings.Repeat("a", 64), ArtifactUrl: "https://example.com/web.tar.gz"}); err != nil {
		t.Fatal(err)
	}
	plan, err := admin.PlanRollout(ctx, &relv1.PlanRolloutRequest{App: "web", Version: "1.0.0", Environment: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.GetWaves()) != 0 || len(plan.GetOffline()) != 1 || plan.GetOffline()[0].GetAgentId() != "web-1" {
		t.Fatalf("plan after the goodbye: waves %v, offline %v; want web-1 offline and nothing to dispatch", plan.GetWaves(), plan.GetOffline())
	}
}

// TestMaxAgentStreams (issue 10): past --max-agent-streams a server refuses
// a new agent with ResourceExhausted (the agent tries another server), but
// never an agent replacing its own stream.
func TestMaxAgentStreams(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{Configure: func(i int, cfg *server.Config) {
		fastAgents(i, cfg)
		cfg.MaxAgentStreams = 2
	}})
	n := c.Nodes[0]
	connectAgent(t, n, "web-1", map[string]string{"env": "prod"}, 0).heartbeat(100 * time.Millisecond)
	connectAgent(t, n, "web-2", map[string]string{"env": "prod"}, 0).heartbeat(100 * time.Millisecond)
	aid := testcluster.AgentID("web-3")
	conn := c.PKI.Dial(t, n.GRPCAddr(), &aid)
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := relv1.NewAgentServiceClient(conn).Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&relv1.AgentMessage{Kind: &relv1.AgentMessage_Hello{Hello: &relv1.Hello{NodeId: "web-3", AgentVersion: "test"}}}); err != nil {
		t.Fatal(err)
	}
	_, err = stream.Recv()
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(status.Convert(err).Message(), "maximum of 2 agent streams (--max-agent-streams): connect to another server") {
		t.Fatalf("third agent: %v, want ResourceExhausted", err)
	}
	// web-1 reconnecting replaces its own stream: accepted.
	connectAgent(t, n, "web-1", map[string]string{"env": "prod"}, 0)
}

// TestSilentAgentStreamClosed: a stream whose agent says nothing for the
// grace period is closed with DeadlineExceeded saying so, while one that
// heartbeats stays open.
func TestSilentAgentStreamClosed(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{Configure: fastAgents})
	leader := c.WaitLeader()
	quiet := connectAgent(t, leader, "quiet-1", map[string]string{"env": "prod"}, 0)
	talker := connectAgent(t, leader, "talker-1", map[string]string{"env": "prod"}, 0)
	talker.heartbeat(100 * time.Millisecond)
	began := time.Now()
	var err error
	select {
	case err = <-quiet.done:
		quiet.done <- err // for connectAgent's cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("a silent agent's stream is still open after 10 s (grace 1 s)")
	}
	if status.Code(err) != codes.DeadlineExceeded || !strings.Contains(err.Error(), "agent silent for more than 1s") {
		t.Fatalf("silent stream ended with %v", err)
	}
	if waited := time.Since(began); waited < 900*time.Millisecond {
		t.Fatalf("closed after %s, before the 1 s grace", waited)
	}
	select {
	case err := <-talker.done:
		t.Fatalf("a heartbeating agent's stream ended: %v", err)
	default:
	}
}
