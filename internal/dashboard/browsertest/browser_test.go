//go:build browser

package browsertest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"go.uber.org/goleak"

	"github.com/relhq/rel/internal/auth"
	"github.com/relhq/rel/internal/dashboard/dashboardtest"
	"github.com/relhq/rel/internal/testcluster"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// findChromium is the browser to drive: REL_CHROMIUM, one on PATH, or
// the one scripts/install-chromium.sh installs. "" when there is none and
// none could be installed.
func findChromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("REL_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome-stable", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	_, file, _, _ := runtime.Caller(0)
	script := filepath.Join(filepath.Dir(file), "..", "..", "..", "scripts", "install-chromium.sh")
	out, err := exec.Command(script).Output()
	if err != nil {
		t.Logf("%s: %v", script, err)
		return ""
	}
	return strings.TrimSpace(string(out))
}

// browser is one Chromium tab with its console watched.
type browser struct {
	ctx context.Context
	t   *testing.T

	mu       sync.Mutex
	messages []chromedp.ConsoleMessage
	errors   []string
	marks    int
}

// newBrowser starts a headless Chromium for the test. It trusts any
// certificate: the cluster's CA is the test's own, not the browser's.
func newBrowser(t *testing.T) *browser {
	t.Helper()
	path := findChromium(t)
	if path == "" {
		t.Skip("no Chromium found and scripts/install-chromium.sh could not install Debian's chromium: skipping the browser tests (set REL_CHROMIUM to a Chromium binary)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.IgnoreCertErrors,
		chromedp.NoSandbox, // root in CI containers
		chromedp.DisableGPU,
		chromedp.WindowSize(1360, 900),
		chromedp.UserDataDir(t.TempDir()),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(alloc)
	b := &browser{ctx: ctx, t: t}
	console := chromedp.Console(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for m, err := range console {
			if err != nil {
				return
			}
			b.mu.Lock()
			b.messages = append(b.messages, m)
			if m.Type == "error" || m.IsException() {
				b.errors = append(b.errors, m.String())
			}
			b.mu.Unlock()
		}
	}()
	// Every JavaScript dialog (the controls' confirm) is accepted; the
	// page and the Click that opened it wait until then.
	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for _, err := range dialogs {
			if err != nil {
				return
			}
			_, _ = chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
		}
	}()
	t.Cleanup(func() {
		cancelCtx()
		cancelAlloc()
		wg.Wait()
	})
	// Start the browser now, so a broken one fails here.
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start %s: %v", path, err)
	}
	return b
}

func (b *browser) do(steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 45*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatal(err)
	}
}

func run[T any](b *browser, a chromedp.Action[T]) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 45*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		b.t.Fatal(err)
	}
	return v
}

// noConsoleErrors fails the test on any console error, uncaught
// exception or browser log error (a refused script, a failed request, a
// CSP violation) so far. The console is read on another goroutine: a
// marker written now and seen by the reader means everything before it
// was read too.
//
// allowed are substrings of errors the test expects.
func (b *browser) noConsoleErrors(where string, allowed ...string) {
	b.t.Helper()
	b.mu.Lock()
	b.marks++
	mark := fmt.Sprintf("rel-console-mark-%d", b.marks)
	b.mu.Unlock()
	b.do(chromedp.Evaluate[chromedp.Void](fmt.Sprintf("console.debug(%q)", mark)))
	deadline := time.Now().Add(10 * time.Second)
	for {
		b.mu.Lock()
		seen := false
		for _, m := range b.messages {
			if m.Text == mark {
				seen = true
			}
		}
		var errs []string
	next:
		for _, e := range b.errors {
			for _, a := range allowed {
				if strings.Contains(e, a) {
					continue next
				}
			}
			errs = append(errs, e)
		}
		b.mu.Unlock()
		if seen {
			if len(errs) > 0 {
				b.t.Fatalf("%s: console errors:\n%s", where, strings.Join(errs, "\n"))
			}
			return
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("%s: the console mark never arrived", where)
		}
		time.Sleep(20 * time.Millisecond) // polling the reader's slice, with a deadline
	}
}

// login signs the browser in through the login form.
func (b *browser) login(e *dashboardtest.Env, tok dashboardtest.Token, next string) {
	b.t.Helper()
	b.do(
		chromedp.Navigate(e.URL+"/ui/login?next="+next),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), tok.Secret),
	)
	run(b, chromedp.WaitEvent(page.LoadEventFired, nil, chromedp.Submit(chromedp.ID("token"))))
	if loc := run(b, chromedp.Location()); !strings.HasPrefix(loc, e.URL+next) {
		b.t.Fatalf("after signing in: at %s, want %s", loc, next)
	}
}

func waitSpec() *relv1.RolloutSpec {
	// The first host, then a gate: the rollout waits for approval
	// before the rest, so the test decides when it goes on.
	return &relv1.RolloutSpec{Strategy: "rolling", Waves: []*relv1.Quantity{{Count: 1}, {Percent: 100}}, ApproveWaves: true}
}

// TestBrowserPagesRender: every page renders in Chromium with no console
// error, and shows what it is about.
func TestBrowserPagesRender(t *testing.T) {
	b := newBrowser(t)
	e := dashboardtest.Start(t)
	e.Setup(t, "1.0.0", "1.1.0")
	e.StartAgents(t, "web", 3)
	id := e.Roll(t, "1.0.0", nil)
	e.WaitState(t, id, "succeeded")
	b.login(e, e.Token(t, "view", auth.Viewer), "/ui/")
	for _, tc := range []struct {
		path, sel, want string
	}{
		{"/ui/", ".matrix", "3/3 hosts healthy"},
		{"/ui/rollouts", "main", id},
		{"/ui/rollouts/" + id, "#rollout-waves", "3 healthy"},
		{"/ui/releases", "main", "1.1.0"},
		{"/ui/hosts", "main", "web-3"},
		{"/ui/approvals", "main", "Nothing waits"},
		{"/ui/audit", "main", "create_rollout"},
		{"/ui/report", ".rel-report", "web in prod"},
		{"/ui/events", "main", "rollout.succeeded"},
	} {
		b.do(chromedp.Navigate(e.URL+tc.path), chromedp.WaitVisible(chromedp.CSS(tc.sel)))
		if text := run(b, chromedp.Text(chromedp.CSS(tc.sel))); !strings.Contains(text, tc.want) {
			t.Errorf("%s: %s has no %q:\n%s", tc.path, tc.sel, tc.want, text)
		}
		b.noConsoleErrors(tc.path)
	}
}

// TestBrowserRolloutLive: a rollout's page follows the rollout over SSE
// with no reload: the gate opened elsewhere (relctl, here gRPC), the
// second wave's hosts go healthy and the state turns succeeded on the
// page that was loaded while it waited.
func TestBrowserRolloutLive(t *testing.T) {
	b := newBrowser(t)
	e := dashboardtest.Start(t)
	e.Setup(t, "1.0.0")
	e.StartAgents(t, "web", 4)
	id := e.Roll(t, "1.0.0", waitSpec())
	e.WaitState(t, id, "waiting_approval")
	b.login(e, e.Token(t, "view", auth.Viewer), "/ui/rollouts/"+id)
	b.do(
		chromedp.WaitVisible(chromedp.ID("rollout-waves")),
		// A reload would lose this.
		chromedp.Evaluate[chromedp.Void](`window.relNoReload = "still here"`),
		// The stream is open before the change is made.
		chromedp.Poll[chromedp.Void](`document.getElementById("live-status").classList.contains("on")`, chromedp.WithPollingTimeout(15*time.Second)),
	)
	if s := run(b, chromedp.Text(chromedp.ID("rollout-state"))); s != "waiting_approval" {
		t.Fatalf("state on the page: %q, want waiting_approval", s)
	}
	if w := run(b, chromedp.Text(chromedp.ID("rollout-waves"))); !strings.Contains(w, "1 healthy") || !strings.Contains(w, "3 pending") {
		t.Fatalf("waves before the gate: %q", w)
	}
	if _, err := e.Ctl.ControlRollout(dashboardtest.Ctx(t), &relv1.ControlRolloutRequest{Id: id, Action: "approve", Wave: 2}); err != nil {
		t.Fatal(err)
	}
	b.do(chromedp.Poll[chromedp.Void](`document.getElementById("rollout-state").textContent === "succeeded"`, chromedp.WithPollingTimeout(30*time.Second)))
	waves := `Array.from(document.querySelectorAll("#rollout-waves .wave-counts")).map(w => w.textContent.replace(/\s+/g, " ").trim())`
	if w := run(b, chromedp.Evaluate[[]string](waves)); len(w) != 2 || !strings.HasPrefix(w[0], "1 healthy") || !strings.HasPrefix(w[1], "3 healthy") || strings.Contains(w[0]+w[1], "pending") {
		t.Errorf("waves after the gate: %q, want the second wave's 3 hosts healthy", w)
	}
	if h := run(b, chromedp.Text(chromedp.ID("rollout-hosts"))); strings.Contains(h, "pending") {
		t.Errorf("hosts after the gate still pending: %q", h)
	}
	if v := run(b, chromedp.Evaluate[string](`window.relNoReload || ""`)); v != "still here" {
		t.Fatal("the page was reloaded")
	}
	if n := run(b, chromedp.Evaluate[int](`Number(document.getElementById("rollout").dataset.updates || 0)`)); n == 0 {
		t.Fatal("no live update arrived")
	}
	b.noConsoleErrors("live rollout page")
}

// TestBrowserEventsLive: the events page puts a new event at the top
// as the cluster applies it, with no reload.
func TestBrowserEventsLive(t *testing.T) {
	b := newBrowser(t)
	e := dashboardtest.Start(t)
	e.Setup(t, "1.0.0")
	b.login(e, e.Token(t, "view", auth.Viewer), "/ui/events")
	b.do(
		chromedp.WaitVisible(chromedp.ID("events-body")),
		chromedp.Evaluate[chromedp.Void](`window.relNoReload = "still here"`),
		chromedp.Poll[chromedp.Void](`document.getElementById("live-status").classList.contains("on")`, chromedp.WithPollingTimeout(15*time.Second)),
	)
	if _, err := e.Ctl.CreateRelease(dashboardtest.Ctx(t), &relv1.CreateReleaseRequest{App: "web", Version: "3.1.4",
		ArtifactUrl: "https://example.com/web-3.1.4.tgz", Sha256: strings.Repeat("c", 64)}); err != nil {
		t.Fatal(err)
	}
	b.do(chromedp.Poll[chromedp.Void](`document.querySelector("#events-body tr") !== null && document.querySelector("#events-body tr").textContent.includes("3.1.4")`,
		chromedp.WithPollingTimeout(30*time.Second)))
	if v := run(b, chromedp.Evaluate[string](`window.relNoReload || ""`)); v != "still here" {
		t.Fatal("the page was reloaded")
	}
	b.noConsoleErrors("live events page")
}

// TestBrowserViewerCannotPause: a viewer's page has no controls, and a
// POST made from the page anyway (with the session's CSRF token) gets
// 403 and changes nothing.
func TestBrowserViewerCannotPause(t *testing.T) {
	b := newBrowser(t)
	e := dashboardtest.Start(t)
	e.Setup(t, "1.0.0")
	e.StartAgents(t, "web", 2)
	id := e.Roll(t, "1.0.0", waitSpec())
	e.WaitState(t, id, "waiting_approval")
	b.login(e, e.Token(t, "view", auth.Viewer), "/ui/rollouts/"+id)
	b.do(chromedp.WaitVisible(chromedp.ID("rollout-waves")))
	if n := run(b, chromedp.Evaluate[int](`document.querySelectorAll("#rollout-controls button").length`)); n != 0 {
		t.Fatalf("a viewer sees %d control buttons", n)
	}
	code := run(b, chromedp.Evaluate[int](fmt.Sprintf(`fetch("/ui/rollouts/%s/pause", {method: "POST", body: new URLSearchParams({
		csrf: document.querySelector("input[name=csrf]").value, confirmed: "yes"})}).then(r => r.status)`, id), chromedp.EvalAwaitPromise))
	if code != 403 {
		t.Fatalf("a viewer's POST of pause: %d, want 403", code)
	}
	if st := e.WaitState(t, id, "waiting_approval"); st.GetRollout().GetState() != "waiting_approval" {
		t.Fatal("the viewer's pause changed the rollout")
	}
	// The browser logs the fetch's 403 as an error: that one is expected.
	b.noConsoleErrors("viewer's rollout page", "the server responded with a status of 403")
}

// TestBrowserDeployerPauses: a deployer's page has the pause button; it
// asks for confirmation, and once confirmed the rollout is paused, on
// the server and on the page.
func TestBrowserDeployerPauses(t *testing.T) {
	b := newBrowser(t)
	e := dashboardtest.Start(t)
	e.Setup(t, "1.0.0")
	e.StartAgents(t, "web", 2)
	id := e.Roll(t, "1.0.0", waitSpec())
	e.WaitState(t, id, "waiting_approval")
	b.login(e, e.Token(t, "deploy", auth.Deployer), "/ui/rollouts/"+id)
	b.do(chromedp.WaitVisible(chromedp.ID("control-pause")))
	if q := run(b, chromedp.Evaluate[string](`document.getElementById("control-pause").form.dataset.confirm`)); !strings.Contains(q, "Pause rollout "+id) {
		t.Fatalf("the pause button's confirmation: %q", q)
	}
	run(b, chromedp.WaitEvent(page.LoadEventFired, nil, chromedp.Click(chromedp.ID("control-pause"))))
	e.WaitState(t, id, "paused")
	b.do(chromedp.Poll[chromedp.Void](`document.getElementById("rollout-state").textContent === "paused"`, chromedp.WithPollingTimeout(15*time.Second)),
		chromedp.WaitVisible(chromedp.ID("control-resume")))
	if f := run(b, chromedp.Text(chromedp.CSS(".flash"))); !strings.Contains(f, "pause") {
		t.Errorf("no confirmation of the pause on the page: %q", f)
	}
	b.noConsoleErrors("deployer's rollout page")
}

// TestScreenshots writes docs/img/dashboard-overview.png and
// docs/img/dashboard-rollout.png from a live run when REL_SCREENSHOTS
// names the directory:
//
//	REL_SCREENSHOTS=$PWD/docs/img go test -tags browser -run TestScreenshots ./internal/dashboard/browsertest/
func TestScreenshots(t *testing.T) {
	dir := os.Getenv("REL_SCREENSHOTS")
	if dir == "" {
		t.Skip("REL_SCREENSHOTS is not set")
	}
	b := newBrowser(t)
	e := dashboardtest.Start(t)
	e.App(t, "web", "1.4.0", "1.5.0")
	e.App(t, "api", "2.0.3", "2.1.0")
	e.App(t, "worker", "0.9.1")
	e.Environment(t, "prod")
	e.Environment(t, "staging")
	e.StartAgentsIn(t, "prod", "prod", 6)
	e.StartAgentsIn(t, "staging", "stg", 2)
	for _, r := range []struct{ app, ver, env string }{
		{"web", "1.4.0", "prod"}, {"api", "2.0.3", "prod"}, {"worker", "0.9.1", "prod"},
		{"web", "1.5.0", "staging"}, {"api", "2.1.0", "staging"}, {"worker", "0.9.1", "staging"},
	} {
		e.WaitState(t, e.RollTo(t, r.app, r.ver, r.env, nil), "succeeded")
	}
	id := e.RollTo(t, "web", "1.5.0", "prod", &relv1.RolloutSpec{Strategy: "rolling",
		Waves: []*relv1.Quantity{{Count: 1}, {Percent: 50}, {Percent: 100}}, ApproveWaves: true})
	e.WaitState(t, id, "waiting_approval")
	// Through the second gate, so the page shows two waves done and the
	// third waiting.
	if _, err := e.Ctl.ControlRollout(dashboardtest.Ctx(t), &relv1.ControlRolloutRequest{Id: id, Action: "approve", Wave: 2}); err != nil {
		t.Fatal(err)
	}
	testcluster.WaitFor(t, 30*time.Second, func() (bool, string) {
		st := e.WaitState(t, id, "waiting_approval")
		return st.GetRollout().GetCurrentWave() == 1, "still at the first gate"
	})
	b.login(e, e.Token(t, "release-manager", auth.Deployer), "/ui/")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	shot := func(path, file string) {
		b.do(chromedp.Navigate(e.URL+path), chromedp.WaitVisible(chromedp.CSS("main")))
		b.noConsoleErrors(path)
		png := run(b, chromedp.FullScreenshot(100))
		if err := os.WriteFile(filepath.Join(dir, file), png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", filepath.Join(dir, file))
	}
	shot("/ui/", "dashboard-overview.png")
	shot("/ui/rollouts/"+id, "dashboard-rollout.png")
}
