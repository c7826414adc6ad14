// Package dashboardtest starts what the dashboard's tests look at: a
// real in-process cluster (internal/testcluster) serving the dashboard on
// its HTTPS port, real agents (internal/agent with the no-op installer)
// connected over mutual TLS, ACL tokens of given roles, and an app with
// releases and an environment to roll out to.
package dashboardtest

import (
	"context"
	"crypto/sha1"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relhq/rel/internal/agent"
	"github.com/relhq/rel/internal/auth"
	"github.com/relhq/rel/internal/server"
	"github.com/relhq/rel/internal/testcluster"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// Env is a running cluster with the dashboard.
type Env struct {
	C    *testcluster.Cluster
	Node *testcluster.Node
	// URL is the dashboard's base, https://127.0.0.1:PORT.
	URL   string
	Ctl   relv1.ControlServiceClient
	ACL   relv1.ACLServiceClient
	t     testing.TB
	agWG  sync.WaitGroup
	agEnd context.CancelFunc
	agCtx context.Context
}

// Start starts a one-node cluster with agents that heartbeat every 200 ms.
func Start(t testing.TB) *Env {
	t.Helper()
	c := testcluster.New(t, 1, testcluster.Options{Configure: func(_ int, cfg *server.Config) {
		cfg.HeartbeatInterval = 200 * time.Millisecond
		cfg.AgentGrace = time.Second
	}})
	n := c.WaitLeader()
	conn := n.Admin()
	e := &Env{C: c, Node: n, URL: "https://" + n.HTTPAddr(), Ctl: relv1.NewControlServiceClient(conn), ACL: relv1.NewACLServiceClient(conn), t: t}
	e.agCtx, e.agEnd = context.WithCancel(context.Background())
	// Agents stop before the cluster does (cleanups run last-in first-out).
	t.Cleanup(func() {
		e.agEnd()
		e.agWG.Wait()
	})
	return e
}

// Ctx is a context for one call of a test.
func Ctx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// Token is an ACL token made for a test.
type Token struct {
	Secret, Accessor string
}

// Token creates an ACL token with role.
func (e *Env) Token(t testing.TB, name string, role auth.Role) Token {
	t.Helper()
	resp, err := e.ACL.CreateToken(Ctx(t), &relv1.CreateACLTokenRequest{Name: name, Roles: []string{string(role)}})
	if err != nil {
		t.Fatalf("create %s token: %v", role, err)
	}
	return Token{Secret: resp.GetSecret(), Accessor: resp.GetToken().GetAccessorId()}
}

// Revoke revokes tok.
func (e *Env) Revoke(t testing.TB, tok Token) {
	t.Helper()
	if _, err := e.ACL.RevokeToken(Ctx(t), &relv1.RevokeACLTokenRequest{AccessorId: tok.Accessor}); err != nil {
		t.Fatal(err)
	}
}

// StartAgents starts n real agents, ids prefix-1 ... prefix-n, labelled
// env=prod, each reporting a fixed load so pages and screenshots are
// stable. They connect to the node over mutual TLS.
func (e *Env) StartAgents(t testing.TB, prefix string, n int) {
	e.StartAgentsIn(t, "prod", prefix, n)
}

// StartAgentsIn starts n agents labelled env=env.
func (e *Env) StartAgentsIn(t testing.TB, env, prefix string, n int) {
	t.Helper()
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("%s-%d", prefix, i)
		cpu := float64(10 + 7*i%60)
		a, err := agent.New(agent.Config{
			Servers:   []string{e.Node.GRPCAddr()},
			NodeID:    id,
			Labels:    map[string]string{"env": env, "zone": fmt.Sprintf("z%d", i%3+1)},
			Installer: &agent.NoopInstaller{},
			Security:  e.C.PKI.Security(t, testcluster.AgentID(id)),
			Facts:     &relv1.HostFacts{Hostname: id, Os: "linux", Platform: "debian", PlatformVersion: "13", Arch: "amd64", Cpus: 4, MemoryBytes: 8 << 30},
			LoadFunc: func() *relv1.Load {
				return &relv1.Load{CpuPercent: cpu, MemoryPercent: 35 + cpu/3, DiskFreeBytes: 40 << 30, DiskTotalBytes: 100 << 30}
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		e.agWG.Add(1)
		go func() {
			defer e.agWG.Done()
			_ = a.Run(e.agCtx)
		}()
	}
	testcluster.WaitFor(t, 20*time.Second, func() (bool, string) {
		resp, err := e.Ctl.ListAgents(Ctx(t), &relv1.ListAgentsRequest{})
		if err != nil {
			return false, err.Error()
		}
		up := 0
		for _, a := range resp.GetAgents() {
			if strings.HasPrefix(a.GetAgent().GetId(), prefix+"-") && a.GetAgent().GetConnected() {
				up++
			}
		}
		return up == n, fmt.Sprintf("%d of %d agents connected", up, n)
	})
}

// Setup creates app web with releases, environment prod (env=prod).
func (e *Env) Setup(t testing.TB, versions ...string) {
	t.Helper()
	e.App(t, "web", versions...)
	e.Environment(t, "prod")
}

// Environment creates environment name, selecting env=name.
func (e *Env) Environment(t testing.TB, name string) {
	t.Helper()
	if _, err := e.Ctl.CreateEnvironment(Ctx(t), &relv1.CreateEnvironmentRequest{Name: name, Selector: map[string]string{"env": name}}); err != nil {
		t.Fatal(err)
	}
}

// App creates app with releases.
func (e *Env) App(t testing.TB, app string, versions ...string) {
	t.Helper()
	ctx := Ctx(t)
	if _, err := e.Ctl.CreateApp(ctx, &relv1.CreateAppRequest{Name: app}); err != nil {
		t.Fatal(err)
	}
	for i, v := range versions {
		if _, err := e.Ctl.CreateRelease(ctx, &relv1.CreateReleaseRequest{App: app, Version: v,
			ArtifactUrl: "https://artifacts.example.com/" + app + "-" + v + ".tgz", Sha256: strings.Repeat(fmt.Sprintf("%x", i+10), 64)[:64],
			Notes: "Release " + v + ": faster checkout, fewer retries.", Commit: fmt.Sprintf("%x", sha1.Sum([]byte(app+v))),
			Labels: map[string]string{"team": "shop"}}); err != nil {
			t.Fatal(err)
		}
	}
}

// Roll starts a rollout of web@version to prod and returns its id.
func (e *Env) Roll(t testing.TB, version string, spec *relv1.RolloutSpec) string {
	return e.RollTo(t, "web", version, "prod", spec)
}

// RollTo starts a rollout of app@version to env and returns its id.
func (e *Env) RollTo(t testing.TB, app, version, env string, spec *relv1.RolloutSpec) string {
	t.Helper()
	resp, err := e.Ctl.StartRollout(Ctx(t), &relv1.StartRolloutRequest{App: app, Version: version, Environment: env, Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetRollout().GetId()
}

// WaitState waits until rollout id is in one of states.
func (e *Env) WaitState(t testing.TB, id string, states ...string) *relv1.RolloutStatus {
	t.Helper()
	var st *relv1.RolloutStatus
	testcluster.WaitFor(t, 30*time.Second, func() (bool, string) {
		resp, err := e.Ctl.GetRollout(Ctx(t), &relv1.GetRolloutRequest{Id: id})
		if err != nil {
			return false, err.Error()
		}
		st = resp.GetStatus()
		for _, s := range states {
			if st.GetRollout().GetState() == s {
				return true, ""
			}
		}
		return false, fmt.Sprintf("rollout %s is %s, want %v", id, st.GetRollout().GetState(), states)
	})
	return st
}

// Client is an HTTPS client that trusts the cluster's CA, keeps cookies
// and does not follow redirects (tests look at them).
func (e *Env) Client(t testing.TB) *http.Client {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	cfg := e.C.PKI.TLSConfig(t, nil)
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Jar: jar, Transport: tr, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

// TLSConfig is the client TLS config of Client, for other clients.
func (e *Env) TLSConfig(t testing.TB) *tls.Config { return e.C.PKI.TLSConfig(t, nil) }

var csrfRe = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// CSRF is the first CSRF token in a page.
func CSRF(t testing.TB, body string) string {
	t.Helper()
	m := csrfRe.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no csrf field in the page:\n%s", body)
	}
	return m[1]
}

// Get fetches path and returns the status and body.
func (e *Env) Get(t testing.TB, c *http.Client, path string) (*http.Response, string) {
	t.Helper()
	resp, err := c.Get(e.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// Post posts a form to path with the Origin a browser would send.
func (e *Env) Post(t testing.TB, c *http.Client, path string, form url.Values) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", e.URL)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// Login signs c in with secret and fails the test unless it worked.
func (e *Env) Login(t testing.TB, c *http.Client, tok Token) {
	t.Helper()
	_, body := e.Get(t, c, "/ui/login")
	resp, body := e.Post(t, c, "/ui/login", url.Values{"csrf": {CSRF(t, body)}, "token": {tok.Secret}, "next": {"/ui/"}})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login: %s\n%s", resp.Status, body)
	}
}
