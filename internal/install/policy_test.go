package install

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// policyServer is a real HTTP(S) server on a chosen loopback address that
// counts its requests: a refused connection must leave the count at 0.
type policyServer struct {
	*httptest.Server
	hits atomic.Int32
}

func newPolicyServer(t *testing.T, addr string, useTLS bool, h http.HandlerFunc) *policyServer {
	t.Helper()
	s := &policyServer{}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		h(w, r)
	}))
	s.Listener.Close()
	s.Listener = l
	if useTLS {
		s.StartTLS()
	} else {
		s.Start()
	}
	t.Cleanup(s.Close)
	return s
}

// serveBytes answers every request with data.
func serveBytes(data []byte) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "", time.Time{}, strings.NewReader(string(data)))
	}
}

// redirectTo answers every request with a 302 to target.
func redirectTo(target string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target, http.StatusFound)
	}
}

// trusting is an HTTPClient that trusts httptest's TLS certificate.
func trusting(s *policyServer) *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: s.Client().Transport.(*http.Transport).TLSClientConfig.Clone()}}
}

// defaultPolicy is the test env with the policy's defaults: https only,
// no address allowed beyond the defaults.
func defaultPolicy(c *Config) { c.AllowedSchemes, c.AllowFetchFrom = nil, nil }

// checkNothingInstalled: a refused download leaves no release, no staging
// directory and no download behind.
func checkNothingInstalled(t *testing.T, e *testEnv, app string) {
	t.Helper()
	if _, err := os.Lstat(e.lay(app).appDir()); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s exists after a refused download (%v)", e.lay(app).appDir(), err)
	}
	if dl, _ := os.ReadDir(filepath.Join(e.cfg.DataDir, "downloads")); len(dl) != 0 {
		t.Errorf("downloads/ holds %v", dl)
	}
}

// TestFetchPolicyRefuses: each way of leading the agent somewhere it must
// not fetch from fails that source with an error saying what was refused
// and which flag allows it, the server it was led to sees no request, and
// nothing is written.
func TestFetchPolicyRefuses(t *testing.T) {
	data := bundle(t, "1.0.0", "")
	secret := filepath.Join(t.TempDir(), "shadow")
	must(t, os.WriteFile(secret, []byte("root:$6$secret:19000:0:99999:7:::\n"), 0o600))

	tests := []struct {
		name string
		// setup starts what the case needs and returns the Config change,
		// the source URL and the servers that must see no request.
		setup func(t *testing.T) (mod func(*Config), src string, untouched []*policyServer)
		want  []string
	}{
		{
			name: "file scheme by default",
			setup: func(t *testing.T) (func(*Config), string, []*policyServer) {
				return defaultPolicy, "file://" + secret, nil
			},
			want: []string{`source "file://` + secret + `": scheme "file" is not allowed on this agent (start rel-agent with --allow-url-schemes https,file to allow it)`},
		},
		{
			name: "http scheme by default",
			setup: func(t *testing.T) (func(*Config), string, []*policyServer) {
				s := newPolicyServer(t, "127.0.0.1:0", false, serveBytes(data))
				return func(c *Config) { defaultPolicy(c); c.AllowFetchFrom = loopback }, s.URL + "/a.tar.gz", []*policyServer{s}
			},
			want: []string{`scheme "http" is not allowed on this agent (start rel-agent with --allow-url-schemes https,http to allow it)`},
		},
		{
			name: "loopback by default",
			setup: func(t *testing.T) (func(*Config), string, []*policyServer) {
				s := newPolicyServer(t, "127.0.0.1:0", true, serveBytes(data))
				return func(c *Config) { defaultPolicy(c); c.HTTPClient = trusting(s) }, s.URL + "/a.tar.gz", []*policyServer{s}
			},
			want: []string{`address 127.0.0.1 is a loopback address: artifacts are not fetched from it (start rel-agent with --allow-fetch-from 127.0.0.1/32 to allow it)`},
		},
		{
			// A name is checked by the address it resolves to.
			name: "loopback by name",
			setup: func(t *testing.T) (func(*Config), string, []*policyServer) {
				s := newPolicyServer(t, "127.0.0.1:0", true, serveBytes(data))
				_, port, _ := net.SplitHostPort(s.Listener.Addr().String())
				return func(c *Config) { defaultPolicy(c); c.HTTPClient = trusting(s) }, "https://localhost:" + port + "/a.tar.gz", []*policyServer{s}
			},
			want: []string{`is a loopback address: artifacts are not fetched from it (start rel-agent with --allow-fetch-from `},
		},
		{
			name: "redirect from an allowed source to a loopback address",
			setup: func(t *testing.T) (func(*Config), string, []*policyServer) {
				inner := newPolicyServer(t, "127.0.0.2:0", false, serveBytes(data))
				outer := newPolicyServer(t, "127.0.0.1:0", false, redirectTo(inner.URL+"/a.tar.gz"))
				return func(c *Config) {
					c.AllowedSchemes = []string{"https", "http"}
					c.AllowFetchFrom = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
				}, outer.URL + "/a.tar.gz", []*policyServer{inner}
			},
			want: []string{`address 127.0.0.2 is a loopback address: artifacts are not fetched from it (start rel-agent with --allow-fetch-from 127.0.0.2/32 to allow it)`},
		},
		{
			// Even with file:// allowed: a server does not get to pick a
			// local file.
			name: "redirect to a file URL",
			setup: func(t *testing.T) (func(*Config), string, []*policyServer) {
				outer := newPolicyServer(t, "127.0.0.1:0", false, redirectTo("file://"+secret))
				return nil, outer.URL + "/a.tar.gz", nil
			},
			want: []string{`redirect to "file://` + secret + `": a redirect may only lead to an https or http URL`},
		},
		{
			name: "redirect from https to http",
			setup: func(t *testing.T) (func(*Config), string, []*policyServer) {
				inner := newPolicyServer(t, "127.0.0.1:0", false, serveBytes(data))
				outer := newPolicyServer(t, "127.0.0.1:0", true, redirectTo(inner.URL+"/a.tar.gz"))
				return func(c *Config) { defaultPolicy(c); c.AllowFetchFrom = loopback; c.HTTPClient = trusting(outer) },
					outer.URL + "/a.tar.gz", []*policyServer{inner}
			},
			want: []string{`redirect to "http://127.0.0.1:`, `scheme "http" is not allowed on this agent (start rel-agent with --allow-url-schemes https,http to allow it)`},
		},
		{
			name: "more than 5 redirects",
			setup: func(t *testing.T) (func(*Config), string, []*policyServer) {
				var n atomic.Int32
				s := newPolicyServer(t, "127.0.0.1:0", false, func(w http.ResponseWriter, r *http.Request) {
					http.Redirect(w, r, fmt.Sprintf("/hop%d", n.Add(1)), http.StatusFound)
				})
				return nil, s.URL + "/a.tar.gz", nil
			},
			want: []string{`more than 5 redirects (the last to "http://127.0.0.1:`, `/hop6")`},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mod, src, untouched := tc.setup(t)
			e := newTestEnvWith(t, mod)
			err := e.apply(Desired{App: "web", Version: "1.0.0", URLs: []string{src}, SHA256: sha(data)})
			if err == nil {
				t.Fatal("Apply succeeded")
			}
			for _, want := range tc.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q\nlacks %q", err, want)
				}
			}
			t.Logf("refused: %v", err)
			ev := e.rec.take()
			checkPhases(t, ev, PhaseDownloading, PhaseFailed)
			if !strings.Contains(ev[1].Reason, tc.want[0]) {
				t.Errorf("reason %q lacks %q", ev[1].Reason, tc.want[0])
			}
			for _, s := range untouched {
				if n := s.hits.Load(); n != 0 {
					t.Errorf("%s was asked %d times", s.URL, n)
				}
			}
			checkNothingInstalled(t, e, "web")
		})
	}
}

// TestMetadataAddressNeverDialed: the metadata services are refused by
// address before connect(2); no connection to them is even attempted.
func TestMetadataAddressNeverDialed(t *testing.T) {
	e := newTestEnvWith(t, func(c *Config) { c.AllowedSchemes = []string{"https", "http"}; c.AllowFetchFrom = nil })
	var mu sync.Mutex
	var dialed []netip.AddrPort
	e.host.policy.onDial = func(ap netip.AddrPort) {
		mu.Lock()
		dialed = append(dialed, ap)
		mu.Unlock()
	}
	for _, tc := range []struct{ url, want string }{
		{"http://169.254.169.254/latest/meta-data/iam/security-credentials/role", `address 169.254.169.254 is a link-local address (where cloud metadata services answer): artifacts are not fetched from it (start rel-agent with --allow-fetch-from 169.254.169.254/32 to allow it)`},
		{"https://100.100.100.200/latest/meta-data/", `address 100.100.100.200 is a cloud metadata address: artifacts are not fetched from it (start rel-agent with --allow-fetch-from 100.100.100.200/32 to allow it)`},
	} {
		start := time.Now()
		err := e.apply(Desired{App: "web", Version: "1.0.0", URLs: []string{tc.url}, SHA256: strings.Repeat("a", 64)})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Apply(%s): %v\nwant %q", tc.url, err, tc.want)
		}
		// Refused for good on the first attempt, not retried like an
		// unreachable host.
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("refusing %s took %s", tc.url, took)
		}
		checkPhases(t, e.rec.take(), PhaseDownloading, PhaseFailed)
		checkNothingInstalled(t, e, "web")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(dialed) != 0 {
		t.Errorf("dialed %v", dialed)
	}
}

func TestCheckAddr(t *testing.T) {
	p, err := newFetchPolicy(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	allowing, err := newFetchPolicy(nil, []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("169.254.169.254/32")})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		addr      string
		want      string // "" = allowed
		allowedBy bool   // allowed by `allowing`
	}{
		{"127.0.0.1", "is a loopback address", true},
		{"127.1.2.3", "is a loopback address", true},
		{"::1", "is a loopback address", false},
		{"::ffff:127.0.0.1", "address 127.0.0.1 is a loopback address", true},
		{"169.254.169.254", "is a link-local address", true},
		{"169.254.1.1", "is a link-local address", false},
		{"fe80::1", "is a link-local address", false},
		{"fe80::1%eth0", "address fe80::1 is a link-local address", false},
		{"fd00:ec2::254", "is a cloud metadata address", false},
		{"100.100.100.200", "is a cloud metadata address", false},
		{"0.0.0.0", "is an unspecified address", false},
		{"0.1.2.3", "is an unspecified address", false},
		{"::", "is an unspecified address", false},
		{"224.0.0.1", "is a multicast address", false},
		{"ff02::1", "is a multicast address", false},
		{"10.1.2.3", "", true},
		{"172.16.0.1", "", true},
		{"192.168.1.10", "", true},
		{"100.100.100.201", "", true},
		{"fd00::1", "", true},
		{"93.184.216.34", "", true},
		{"2001:db8::1", "", true},
	}
	for _, tc := range tests {
		err := p.checkAddr(netip.MustParseAddr(tc.addr))
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s refused: %v", tc.addr, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "--allow-fetch-from")):
			t.Errorf("%s: %v, want %q and the flag", tc.addr, err, tc.want)
		}
		if err := allowing.checkAddr(netip.MustParseAddr(tc.addr)); (err == nil) != (tc.allowedBy || tc.want == "") {
			t.Errorf("%s with 127.0.0.0/8 and 169.254.169.254/32 allowed: %v", tc.addr, err)
		}
	}
}

// TestFetchPolicyAllows: what the policy allows works through it: https
// to an address AllowFetchFrom holds, the HTTPClient's TLS settings kept,
// a redirect that stays within the policy followed.
func TestFetchPolicyAllows(t *testing.T) {
	data := bundle(t, "1.0.0", "")
	var s *policyServer
	s = newPolicyServer(t, "127.0.0.1:0", true, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/old.tar.gz" {
			http.Redirect(w, r, s.URL+"/web.tar.gz", http.StatusFound)
			return
		}
		serveBytes(data)(w, r)
	})
	e := newTestEnvWith(t, func(c *Config) {
		defaultPolicy(c)
		c.AllowFetchFrom = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
		c.HTTPClient = trusting(s)
	})
	// The hook TestMetadataAddressNeverDialed relies on sees real dials.
	var dialed atomic.Int32
	e.host.policy.onDial = func(ap netip.AddrPort) {
		if ap.Addr() == netip.MustParseAddr("127.0.0.1") {
			dialed.Add(1)
		}
	}
	if err := e.apply(Desired{App: "web", Version: "1.0.0", URLs: []string{s.URL + "/old.tar.gz"}, SHA256: sha(data)}); err != nil {
		t.Fatal(err)
	}
	if n := s.hits.Load(); n != 2 {
		t.Errorf("%d requests, want 2 (the redirect and the file)", n)
	}
	if dialed.Load() == 0 {
		t.Error("the policy's dial hook saw no dial to 127.0.0.1")
	}
}

// countingTransport counts the requests of a client.
type countingTransport struct {
	n  atomic.Int32
	rt http.RoundTripper
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return c.rt.RoundTrip(r)
}

// TestStoreURLs: the cluster's store is tried first, with StoreClient,
// and is exempt from the policy (plain http on loopback here, with the
// default policy); the external source is never dialed. A store URL that
// is not http(s) is refused.
func TestStoreURLs(t *testing.T) {
	data := bundle(t, "1.0.0", "")
	store := newPolicyServer(t, "127.0.0.1:0", false, serveBytes(data))
	ct := &countingTransport{rt: &http.Transport{}}
	e := newTestEnvWith(t, func(c *Config) { defaultPolicy(c); c.StoreClient = &http.Client{Transport: ct} })
	var dialed atomic.Int32
	e.host.policy.onDial = func(netip.AddrPort) { dialed.Add(1) }
	d := Desired{
		App: "web", Version: "1.0.0", SHA256: sha(data),
		StoreURLs: []string{store.URL + "/v1/artifacts/sha256/" + sha(data)},
		URLs:      []string{"https://artifacts.example.com/web-1.0.0.tar.gz"},
	}
	if err := e.apply(d); err != nil {
		t.Fatal(err)
	}
	if ct.n.Load() != 1 || store.hits.Load() != 1 {
		t.Errorf("StoreClient made %d requests, the store saw %d; want 1 and 1", ct.n.Load(), store.hits.Load())
	}
	if dialed.Load() != 0 {
		t.Errorf("the external source was dialed %d times", dialed.Load())
	}
	// Installed under the external URL's name when a plain file.
	if e.current("web") != "1.0.0" {
		t.Errorf("current = %q", e.current("web"))
	}
	e.rec.take()

	for _, bad := range []struct{ url, want string }{
		{"file:///var/lib/rel/artifacts/x", `store URL "file:///var/lib/rel/artifacts/x": the cluster's store is reached over https or http, not "file"`},
		{"https://user:pw@10.0.0.1/v1/artifacts/sha256/x", `without credentials`},
	} {
		err := e.apply(Desired{App: "api", Version: "1.0.0", SHA256: sha(data), StoreURLs: []string{bad.url}})
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("store URL %s: %v, want %q", bad.url, err, bad.want)
		}
		checkPhases(t, e.rec.take(), PhaseFailed)
		checkNothingInstalled(t, e, "api")
	}
}

// TestFileDigestMismatchHidesDigest: with file:// allowed, a file whose
// digest is not the release's fails as "digest mismatch" without telling
// what the file's digest is, and leaves no copy.
func TestFileDigestMismatchHidesDigest(t *testing.T) {
	secret := []byte("root:$6$secret:19000:0:99999:7:::\n")
	p := filepath.Join(t.TempDir(), "shadow")
	must(t, os.WriteFile(p, secret, 0o600))
	e := newTestEnv(t)
	err := e.apply(Desired{App: "web", Version: "1.0.0", URLs: []string{"file://" + p}, SHA256: strings.Repeat("c", 64)})
	want := "digest mismatch: the artifact from file://" + p + " does not have the expected sha256 " + strings.Repeat("c", 64)
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Apply: %v, want %q", err, want)
	}
	ev := e.rec.take()
	for _, x := range ev {
		if strings.Contains(x.Reason, sha(secret)) || strings.Contains(x.Output, sha(secret)) {
			t.Errorf("event %+v holds the file's digest", x)
		}
	}
	if strings.Contains(err.Error(), sha(secret)) {
		t.Errorf("error %q holds the file's digest", err)
	}
	checkNothingInstalled(t, e, "web")
}

// TestNewRefusesConfig: a Config the host cannot honour is refused by New
// with the setting named, before anything is created.
func TestNewRefusesConfig(t *testing.T) {
	tests := []struct {
		name     string
		mod      func(*Config)
		notRoot  bool
		wantErrs []string
	}{
		{"unknown scheme", func(c *Config) { c.AllowedSchemes = []string{"https", "ftp"} }, false,
			[]string{`allowed URL scheme "ftp": the agent fetches over https, http, file only`}},
		{"invalid prefix", func(c *Config) { c.AllowFetchFrom = []netip.Prefix{{}} }, false,
			[]string{`allowed fetch address range invalid Prefix is not a valid prefix`}},
		{"transport that is not an http.Transport", func(c *Config) { c.HTTPClient = &http.Client{Transport: &countingTransport{rt: http.DefaultTransport}} }, false,
			[]string{`HTTPClient's transport is a *install.countingTransport: the fetch policy needs an *http.Transport`}},
		{"transport that dials by itself", func(c *Config) {
			c.HTTPClient = &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{}).DialContext}}
		}, false, []string{`HTTPClient's transport has a dial function of its own`}},
		{"run-as user missing", func(c *Config) { c.RunAs = "rel-no-such-user" }, false,
			[]string{`run-as user "rel-no-such-user" does not exist on this host`}},
		{"allowed user that is no name", func(c *Config) { c.AllowedUsers = []string{"nobody", "x y"} }, false,
			[]string{`allowed user "x y" is not a user name`}},
		{"run-as another user without root", func(c *Config) { c.RunAs = "nobody" }, true,
			[]string{`run-as user "nobody": running as another user needs rel-agent to run as root (it runs as uid 4242)`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.notRoot {
				defer func(f func() int) { geteuid = f }(geteuid)
				geteuid = func() int { return 4242 }
			}
			base := t.TempDir()
			cfg := Config{Root: filepath.Join(base, "root"), DataDir: filepath.Join(base, "data")}
			tc.mod(&cfg)
			h, err := New(cfg)
			if err == nil {
				h.Close()
				t.Fatal("New succeeded")
			}
			for _, want := range tc.wantErrs {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q\nlacks %q", err, want)
				}
			}
			if entries, _ := os.ReadDir(base); len(entries) != 0 {
				t.Errorf("New created %v", entries)
			}
		})
	}
}

// TestPolicyDialControl: the Control hook is what refuses, at the socket
// level, whatever client code dials through the transport.
func TestPolicyDialControl(t *testing.T) {
	p, _ := newFetchPolicy([]string{"https", "http"}, nil)
	c, err := p.client(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	dial := c.Transport.(*http.Transport).DialContext
	_, err = dial(ctx, "tcp", "[::1]:9")
	var pe *policyError
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), "address ::1 is a loopback address") {
		// A host without IPv6 cannot make the socket at all: also no dial.
		if !errors.Is(err, syscall.EAFNOSUPPORT) && !errors.Is(err, syscall.EADDRNOTAVAIL) {
			t.Errorf("dial ::1: %v", err)
		}
	}
	_, err = dial(ctx, "tcp", "127.0.0.1:9")
	if !errors.As(err, &pe) {
		t.Errorf("dial 127.0.0.1: %v, want a policy error", err)
	}
}
