package dashboard_test

import (
	"bufio"
	"context"
	"encoding/json"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/relhq/rel/internal/auth"
	"github.com/relhq/rel/internal/dashboard/dashboardtest"
	"github.com/relhq/rel/internal/testcluster"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// slowSpec keeps a rollout running for a while: one host, then the rest,
// with a long bake between waves.
func slowSpec(bake time.Duration) *relv1.RolloutSpec {
	return &relv1.RolloutSpec{Strategy: "rolling", Waves: []*relv1.Quantity{{Count: 1}, {Percent: 100}}, BakeMs: bake.Milliseconds()}
}

// TestPagesNeedASession: every page sends a browser without a session to
// the login page (remembering where it was going); the live stream and
// controls, which a browser cannot follow to a form, answer 401.
func TestPagesNeedASession(t *testing.T) {
	e := dashboardtest.Start(t)
	c := e.Client(t)
	for _, path := range []string{"/ui/", "/ui/rollouts", "/ui/rollouts/x", "/ui/releases", "/ui/hosts", "/ui/approvals", "/ui/audit", "/ui/report", "/ui/events"} {
		resp, _ := e.Get(t, c, path)
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/login?next="+url.QueryEscape(path) {
			t.Errorf("GET %s: %s to %q, want 303 to the login page", path, resp.Status, resp.Header.Get("Location"))
		}
	}
	if resp, _ := e.Get(t, c, "/ui/rollouts/x/live"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("live stream without a session: %s, want 401", resp.Status)
	}
	if resp, _ := e.Post(t, c, "/ui/rollouts/x/pause", url.Values{"confirmed": {"yes"}}); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("control without a session: %s, want 401", resp.Status)
	}
}

// TestLogin: the token exchange and its refusals, and the cookie it sets.
func TestLogin(t *testing.T) {
	e := dashboardtest.Start(t)
	viewer := e.Token(t, "view", auth.Viewer)
	cases := []struct {
		name     string
		token    string
		csrf     bool
		wantCode int
		wantText string
	}{
		{"unknown token", "relt_nosuchtoken", true, http.StatusUnauthorized, "token not known to this cluster"},
		{"empty token", "  ", true, http.StatusBadRequest, "Paste an ACL token"},
		{"no csrf", viewer.Secret, false, http.StatusForbidden, "expired or came from another site"},
		{"viewer", viewer.Secret, true, http.StatusSeeOther, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := e.Client(t)
			_, body := e.Get(t, c, "/ui/login")
			form := url.Values{"token": {tc.token}, "next": {"/ui/hosts"}}
			if tc.csrf {
				form.Set("csrf", dashboardtest.CSRF(t, body))
			}
			resp, body := e.Post(t, c, "/ui/login", form)
			if resp.StatusCode != tc.wantCode || !strings.Contains(body, tc.wantText) {
				t.Fatalf("%s: %s, want %d with %q:\n%s", tc.name, resp.Status, tc.wantCode, tc.wantText, body)
			}
			var session *http.Cookie
			for _, ck := range resp.Cookies() {
				if ck.Name == "rel_session" && ck.Value != "" {
					session = ck
				}
			}
			if tc.wantCode != http.StatusSeeOther {
				if session != nil {
					t.Fatal("a refused sign-in set a session cookie")
				}
				return
			}
			if session == nil || !session.HttpOnly || !session.Secure || session.SameSite != http.SameSiteStrictMode || session.Path != "/ui/" {
				t.Fatalf("session cookie %+v: want HttpOnly, Secure, SameSite=Strict, Path=/ui/", session)
			}
			if resp.Header.Get("Location") != "/ui/hosts" {
				t.Fatalf("after login: to %q, want /ui/hosts", resp.Header.Get("Location"))
			}
		})
	}
}

// TestSafeNext: the login page only ever sends people on to a page of the
// dashboard.
func TestLoginRedirectStaysHere(t *testing.T) {
	e := dashboardtest.Start(t)
	viewer := e.Token(t, "view", auth.Viewer)
	for _, next := range []string{"https://evil.example/", "//evil.example/ui/", "/\\evil.example", "/v1/health", ""} {
		c := e.Client(t)
		_, body := e.Get(t, c, "/ui/login")
		resp, _ := e.Post(t, c, "/ui/login", url.Values{"csrf": {dashboardtest.CSRF(t, body)}, "token": {viewer.Secret}, "next": {next}})
		if resp.Header.Get("Location") != "/ui/" {
			t.Errorf("next %q: sent to %q, want /ui/", next, resp.Header.Get("Location"))
		}
	}
}

// TestPagesRender: each page renders for a viewer with what it is about.
func TestPagesRender(t *testing.T) {
	e := dashboardtest.Start(t)
	e.Setup(t, "1.0.0", "1.1.0")
	e.StartAgents(t, "web", 3)
	id := e.Roll(t, "1.0.0", nil)
	e.WaitState(t, id, "succeeded")
	c := e.Client(t)
	e.Login(t, c, e.Token(t, "view", auth.Viewer))
	for _, tc := range []struct {
		path string
		want []string
	}{
		{"/ui/", []string{"What runs where", "1.0.0", "3/3 hosts healthy", id}},
		{"/ui/rollouts", []string{id, "succeeded"}},
		{"/ui/rollouts/" + id, []string{"web@1.0.0", "web-1", "wave 1 of 1", "3 healthy", "succeeded", `data-live="/ui/rollouts/` + id + `/live?index=`,
			"taking 3 hosts to 1.0.0", "web-1,web-2,web-3"}},
		{"/ui/releases", []string{"1.1.0", "faster checkout", "team=shop"}},
		{"/ui/hosts", []string{"web-1", "connected", "env=prod", "web@1.0.0"}},
		{"/ui/approvals", []string{"Nothing waits for approval"}},
		{"/ui/audit", []string{"create_rollout"}},
		{"/ui/report", []string{"Delivery performance by app and environment", "web in prod", "Deploys", "1 deploys succeeded", "1.0.0 3/3", `class="rel-report"`}},
		{"/ui/events", []string{"rollout.succeeded", "release.created", id, "web"}},
		{"/ui/events?type=release.*", []string{"release.created"}},
		{"/ui/report?days=7&env=prod", []string{"the 7 days from", "web in prod"}},
	} {
		resp, body := e.Get(t, c, tc.path)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %s\n%s", tc.path, resp.Status, body)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(body, w) {
				t.Errorf("GET %s: no %q in the page", tc.path, w)
			}
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
			t.Errorf("GET %s: Content-Security-Policy %q", tc.path, csp)
		}
	}
	if resp, body := e.Get(t, c, "/ui/rollouts/nosuch"); resp.StatusCode != http.StatusNotFound || !strings.Contains(body, "nosuch") {
		t.Errorf("unknown rollout: %s\n%s", resp.Status, body)
	}
	// A report of an unknown app says so, as relctl report does.
	if resp, body := e.Get(t, c, "/ui/report?app=nope"); resp.StatusCode != http.StatusNotFound || !strings.Contains(body, "app &#34;nope&#34; not found") {
		t.Errorf("report of an unknown app: %s\n%s", resp.Status, body)
	}
}

// TestControlsFollowRoles: a viewer sees no controls and gets 403 when it
// posts one anyway (the server's own rule for ControlRollout), and the
// rollout does not change; a deployer is asked to confirm, then pauses it,
// and the audit trail names the deployer's token, as for relctl.
func TestControlsFollowRoles(t *testing.T) {
	e := dashboardtest.Start(t)
	e.Setup(t, "1.0.0")
	e.StartAgents(t, "web", 2)
	id := e.Roll(t, "1.0.0", slowSpec(time.Minute))
	page := "/ui/rollouts/" + id
	testcluster.WaitFor(t, 20*time.Second, func() (bool, string) {
		resp, _ := e.Ctl.GetRollout(dashboardtest.Ctx(t), &relv1.GetRolloutRequest{Id: id})
		r := resp.GetStatus().GetRollout()
		return r.GetWaveDoneUnixNano() != 0 && r.GetState() == "running", "first wave not done: " + r.GetState()
	})

	viewer := e.Client(t)
	e.Login(t, viewer, e.Token(t, "view", auth.Viewer))
	_, body := e.Get(t, viewer, page)
	if strings.Contains(body, `id="control-`) {
		t.Fatalf("a viewer's page shows controls:\n%s", body)
	}
	csrf := dashboardtest.CSRF(t, body) // the sign-out form's
	for _, tc := range []struct {
		name string
		form url.Values
		code int
	}{
		{"no csrf", url.Values{"confirmed": {"yes"}}, http.StatusForbidden},
		{"wrong csrf", url.Values{"csrf": {"x" + csrf}, "confirmed": {"yes"}}, http.StatusForbidden},
		{"viewer may not pause", url.Values{"csrf": {csrf}, "confirmed": {"yes"}}, http.StatusForbidden},
	} {
		resp, body := e.Post(t, viewer, page+"/pause", tc.form)
		if resp.StatusCode != tc.code {
			t.Errorf("%s: %s, want %d\n%s", tc.name, resp.Status, tc.code, body)
		}
	}
	e.WaitState(t, id, "running")

	deployer := e.Client(t)
	tok := e.Token(t, "deploy", auth.Deployer)
	e.Login(t, deployer, tok)
	_, body = e.Get(t, deployer, page)
	for _, b := range []string{`id="control-pause"`, `id="control-abort"`, `id="control-rollback"`} {
		if !strings.Contains(body, b) {
			t.Errorf("deployer's page has no %s", b)
		}
	}
	csrf = dashboardtest.CSRF(t, body)
	resp, body := e.Post(t, deployer, page+"/pause", url.Values{"csrf": {csrf}})
	if resp.StatusCode != http.StatusOK || !strings.Contains(body, `name="confirmed" value="yes"`) {
		t.Fatalf("pause without confirming: %s, want a confirmation page\n%s", resp.Status, body)
	}
	if st := e.WaitState(t, id, "running"); st.GetRollout().GetState() != "running" {
		t.Fatal("an unconfirmed pause changed the rollout")
	}
	resp, body = e.Post(t, deployer, page+"/pause", url.Values{"csrf": {csrf}, "confirmed": {"yes"}, "reason": {"checking dashboards"}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("confirmed pause: %s\n%s", resp.Status, body)
	}
	e.WaitState(t, id, "paused")

	audit, err := relv1.NewAuditServiceClient(e.Node.Admin()).ListAudit(dashboardtest.Ctx(t), &relv1.ListAuditRequest{Actor: tok.Accessor})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range audit.GetRecords() {
		if r.GetResult() == "applied" && strings.Contains(r.GetObject()+r.GetMessage()+r.GetReason(), id) {
			found = true
		}
	}
	if !found {
		t.Errorf("no applied audit record of the deployer's pause: %v", audit.GetRecords())
	}
}

// TestRevokedTokenEndsSession: revoking the token ends its session on the
// next request.
func TestRevokedTokenEndsSession(t *testing.T) {
	e := dashboardtest.Start(t)
	c := e.Client(t)
	tok := e.Token(t, "view", auth.Viewer)
	e.Login(t, c, tok)
	if resp, _ := e.Get(t, c, "/ui/hosts"); resp.StatusCode != http.StatusOK {
		t.Fatalf("signed in: %s", resp.Status)
	}
	e.Revoke(t, tok)
	testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
		resp, _ := e.Get(t, c, "/ui/hosts")
		return resp.StatusCode == http.StatusSeeOther && strings.Contains(resp.Header.Get("Location"), "ended=1"), resp.Status
	})
}

// sseEvent is one Server-Sent Event.
type sseEvent struct{ name, data string }

// readEvents reads a stream's events into a channel until it ends.
func readEvents(resp *http.Response) <-chan sseEvent {
	out := make(chan sseEvent, 64)
	go func() {
		defer close(out)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.name != "" {
					out <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, "event: "):
				ev.name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				ev.data += strings.TrimPrefix(line, "data: ")
			}
		}
	}()
	return out
}

// TestLiveEvents: the events page's stream sends each new event that
// matches its filters, rendered as a row, without being asked; one that
// does not match is not sent.
func TestLiveEvents(t *testing.T) {
	e := dashboardtest.Start(t)
	e.Setup(t, "1.0.0")
	c := e.Client(t)
	e.Login(t, c, e.Token(t, "view", auth.Viewer))
	resp0, body := e.Get(t, c, "/ui/events?type=release.*")
	if resp0.StatusCode != http.StatusOK {
		t.Fatalf("events page: %s", resp0.Status)
	}
	m := regexp.MustCompile(`data-live="([^"]+)"`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("the events page names no live stream:\n%s", body)
	}
	live := html.UnescapeString(m[1])
	if !strings.Contains(live, "type=release.%2a") && !strings.Contains(live, "type=release.*") {
		t.Fatalf("live stream %q lost the page's filter", live)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.URL+live, nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != "text/event-stream" {
		t.Fatalf("live: %s %s", resp.Status, ct)
	}
	events := readEvents(resp)
	// An environment (not a release event), then a release.
	e.Environment(t, "staging")
	if _, err := e.Ctl.CreateRelease(dashboardtest.Ctx(t), &relv1.CreateReleaseRequest{App: "web", Version: "2.0.0",
		ArtifactUrl: "https://example.com/web-2.0.0.tgz", Sha256: strings.Repeat("b", 64)}); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(20 * time.Second)
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatal("the stream ended before the release showed")
			}
			if ev.name != "prepend" {
				continue
			}
			var fragments map[string]string
			if err := json.Unmarshal([]byte(ev.data), &fragments); err != nil {
				t.Fatalf("prepend %q: %v", ev.data, err)
			}
			rows := fragments["events-body"]
			if strings.Contains(rows, "environment.") {
				t.Fatalf("an event outside the filter was sent: %s", rows)
			}
			if strings.Contains(rows, "release.created") && strings.Contains(rows, "2.0.0") {
				cancel()
				for range events {
				}
				return
			}
		case <-deadline:
			t.Fatal("no row of the new release within 20 s")
		}
	}
}

// TestLiveStream: the live stream sends the rollout's change (a pause by
// someone else) without being asked, and ends when the server shuts down.
func TestLiveStream(t *testing.T) {
	e := dashboardtest.Start(t)
	e.Setup(t, "1.0.0")
	e.StartAgents(t, "web", 2)
	id := e.Roll(t, "1.0.0", slowSpec(time.Minute))
	st := e.WaitState(t, id, "running")
	c := e.Client(t)
	e.Login(t, c, e.Token(t, "view", auth.Viewer))

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.URL+"/ui/rollouts/"+id+"/live?index="+strconv.FormatUint(st.GetRollout().GetModifyIndex(), 10), nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != http.StatusOK || ct != "text/event-stream" {
		t.Fatalf("live: %s %s", resp.Status, ct)
	}
	events := readEvents(resp)
	if _, err := e.Ctl.ControlRollout(dashboardtest.Ctx(t), &relv1.ControlRolloutRequest{Id: id, Action: "pause"}); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(20 * time.Second)
	for paused := false; !paused; {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatal("the stream ended before the pause showed")
			}
			if ev.name != "update" {
				continue
			}
			var fragments map[string]string
			if err := json.Unmarshal([]byte(ev.data), &fragments); err != nil {
				t.Fatalf("update %q: %v", ev.data, err)
			}
			paused = strings.Contains(fragments["rollout-head"], ">paused<")
		case <-deadline:
			t.Fatal("no update showing the pause within 20 s")
		}
	}
	// Shutdown ends the stream (and goleak, in TestMain, checks that its
	// goroutines are gone).
	if err := e.Node.Server().Shutdown(); err != nil {
		t.Fatal(err)
	}
	select {
	case _, ok := <-events:
		for ok {
			_, ok = <-events
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the stream outlived the server by 10 s")
	}
}

// TestLiveStreamEndsWithToken: revoking the token ends a live stream: the
// next change is not sent, an "ended" event is, and the stream closes.
func TestLiveStreamEndsWithToken(t *testing.T) {
	e := dashboardtest.Start(t)
	e.Setup(t, "1.0.0")
	e.StartAgents(t, "web", 2)
	id := e.Roll(t, "1.0.0", slowSpec(time.Minute))
	st := e.WaitState(t, id, "running")
	c := e.Client(t)
	tok := e.Token(t, "view", auth.Viewer)
	e.Login(t, c, tok)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.URL+"/ui/rollouts/"+id+"/live?index="+strconv.FormatUint(st.GetRollout().GetModifyIndex(), 10), nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	events := readEvents(resp)
	e.Revoke(t, tok)
	if _, err := e.Ctl.ControlRollout(dashboardtest.Ctx(t), &relv1.ControlRolloutRequest{Id: id, Action: "pause"}); err != nil {
		t.Fatal(err)
	}
	var got []string
	timeout := time.After(20 * time.Second)
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				// An update of what was read before the revocation may come
				// first (the stream starts at an older index); one showing
				// the pause may not, and the last event is "ended".
				if len(got) == 0 || got[len(got)-1] != "ended" {
					t.Fatalf("stream closed after %v, want it to end with an ended event", got)
				}
				return
			}
			got = append(got, ev.name)
			if ev.name == "update" && strings.Contains(ev.data, "paused") {
				t.Fatalf("an update made after the revocation was sent: %s", ev.data)
			}
		case <-timeout:
			t.Fatalf("the stream did not end within 20 s of the revocation; events %v", got)
		}
	}
}

// TestApproveUnderPolicy: under an approval policy, an approver's page
// has the Approve button for a rollout awaiting approval and approving
// through it starts the rollout; a deployer (no approve permission) gets
// 403 for the same POST, from the server's own rule.
func TestApproveUnderPolicy(t *testing.T) {
	e := dashboardtest.Start(t)
	e.Setup(t, "1.0.0")
	e.StartAgents(t, "web", 2)
	approvals := relv1.NewApprovalServiceClient(e.Node.Admin())
	if _, err := approvals.SetPolicy(dashboardtest.Ctx(t), &relv1.SetApprovalPolicyRequest{Environment: "prod",
		Policy: &relv1.ApprovalPolicy{Required: 1, Roles: []string{string(auth.Approver)}}}); err != nil {
		t.Fatal(err)
	}
	id := e.Roll(t, "1.0.0", nil)
	e.WaitState(t, id, "awaiting_approval")
	page := "/ui/rollouts/" + id

	deployer := e.Client(t)
	e.Login(t, deployer, e.Token(t, "deploy", auth.Deployer))
	_, body := e.Get(t, deployer, page)
	if strings.Contains(body, `id="control-approve"`) {
		t.Fatal("a deployer sees Approve on a rollout awaiting a policy's approval")
	}
	resp, body := e.Post(t, deployer, page+"/approve", url.Values{"csrf": {dashboardtest.CSRF(t, body)}, "confirmed": {"yes"}})
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("deployer's approve: %s, want 403\n%s", resp.Status, body)
	}

	approver := e.Client(t)
	e.Login(t, approver, e.Token(t, "approve", auth.Approver))
	_, body = e.Get(t, approver, page)
	if !strings.Contains(body, `id="control-approve"`) || strings.Contains(body, `id="control-pause"`) {
		t.Fatalf("an approver's page: want Approve and no Pause\n%s", body)
	}
	resp, body = e.Post(t, approver, page+"/approve", url.Values{"csrf": {dashboardtest.CSRF(t, body)}, "confirmed": {"yes"}, "reason": {"looks good"}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("approver's approve: %s\n%s", resp.Status, body)
	}
	st := e.WaitState(t, id, "running", "succeeded")
	if a := st.GetRollout().GetApprovals(); len(a) != 1 || a[0].GetComment() != "looks good" {
		t.Fatalf("approvals %v, want the approver's with its comment", a)
	}
}
