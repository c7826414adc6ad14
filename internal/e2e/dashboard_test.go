package e2e

import (
	"crypto/tls"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDashboardProcess: the rel-server binary serves the web dashboard on
// its HTTPS port: a viewer token made with relctl signs in, the overview
// renders, and with --ui=false there is no dashboard.
func TestDashboardProcess(t *testing.T) {
	p := newProc(t, "ui1")
	p.start(t, "--bootstrap")
	waitLeader(t, []*proc{p}, "the dashboard's server")
	tokFile := filepath.Join(t.TempDir(), "viewer.token")
	mustRelctl(t, p.grpc, "acl", "token", "create", "--name", "viewer", "--role", "viewer", "--out", tokFile)
	secret, err := os.ReadFile(tokFile)
	if err != nil {
		t.Fatal(err)
	}
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 10 * time.Second,
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{RootCAs: caPool, ServerName: "server.e2e.rel"}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	base := "https://" + p.http
	get := func(path string) (int, string) {
		resp, err := c.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/ui/"); code != http.StatusSeeOther {
		t.Fatalf("GET /ui/ without a session: %d, want 303 to the login page", code)
	}
	_, login := get("/ui/login")
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(login)
	if m == nil {
		t.Fatalf("login page without a CSRF field:\n%s", login)
	}
	form := url.Values{"csrf": {m[1]}, "token": {strings.TrimSpace(string(secret))}, "next": {"/ui/hosts"}}
	req, _ := http.NewRequest(http.MethodPost, base+"/ui/login", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/ui/hosts" {
		t.Fatalf("sign-in: %s to %q", resp.Status, resp.Header.Get("Location"))
	}
	if code, body := get("/ui/"); code != http.StatusOK || !strings.Contains(body, "What runs where") {
		t.Fatalf("GET /ui/ signed in: %d\n%s", code, body)
	}
	if code, css := get("/ui/static/style.css"); code != http.StatusOK || !strings.Contains(css, ".wave") {
		t.Fatalf("GET the stylesheet: %d", code)
	}
	if err := p.signal(t, syscall.SIGTERM); err != nil {
		t.Fatalf("server exit: %v\n%s", err, p.log)
	}

	off := newProc(t, "ui2")
	off.start(t, "--bootstrap", "--ui=false")
	waitLeader(t, []*proc{off}, "the server without a dashboard")
	base = "https://" + off.http
	if code, _ := get("/ui/login"); code != http.StatusNotFound {
		t.Fatalf("GET /ui/login with --ui=false: %d, want 404", code)
	}
}
