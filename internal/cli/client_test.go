package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/relhq/rel/internal/version"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// TestAddrFailover drives relctl against real gRPC servers on loopback to
// check the --addr list semantics: skip addresses that cannot be reached
// or answer Unavailable, stop at the first server that answers anything
// else.
func TestAddrFailover(t *testing.T) {
	closed1, closed2 := closedAddr(t), closedAddr(t)
	first := &fakeControl{name: "first", calls: make(chan struct{}, 10)}
	second := &fakeControl{name: "second", calls: make(chan struct{}, 10)}
	firstAddr := serve(t, first, nil)
	secondAddr := serve(t, second, nil)
	noLeader := serve(t, &fakeControl{err: status.Error(codes.Unavailable, "no leader elected yet")}, nil)
	notFound := serve(t, &fakeControl{err: status.Error(codes.NotFound, `app "web" not found`)}, nil)

	tests := []struct {
		name       string
		addrs      []string
		wantCode   int
		wantStdout string // substring
		wantStderr string // whole line without "relctl: " and newline
		wantFirst  int    // ListApps calls the first server must have seen
		wantSecond int
		timeout    string // --timeout, if not the default
	}{
		{
			name:       "closed port first, answer from the next",
			addrs:      []string{closed1, firstAddr, secondAddr},
			wantCode:   exitOK,
			wantStdout: "served by first",
			wantFirst:  1,
		},
		{
			name:       "several closed ports",
			addrs:      []string{closed1, closed2, secondAddr},
			wantCode:   exitOK,
			wantStdout: "served by second",
			wantSecond: 1,
		},
		{
			name:       "first reachable address wins",
			addrs:      []string{firstAddr, secondAddr},
			wantCode:   exitOK,
			wantStdout: "served by first",
			wantFirst:  1,
		},
		{
			name:     "all closed",
			addrs:    []string{closed1, closed2},
			wantCode: exitUnavailable,
			wantStderr: "no rel server reachable at " + closed1 + ", " + closed2 +
				"; start rel-server or set --addr/REL_ADDR (last error: ",
		},
		{
			// A server's Unavailable (no leader yet, a leader change) may
			// have left a write applied or not: relctl asks the next
			// server, with the same request id, so that it acts once.
			name:       "server answers unavailable, the next one is asked",
			addrs:      []string{closed1, noLeader, secondAddr},
			wantCode:   exitOK,
			wantStdout: "served by second",
			wantSecond: 1,
		},
		{
			// Until --timeout; then the last server's answer says why.
			name:       "every server answers unavailable",
			addrs:      []string{closed1, noLeader},
			timeout:    "600ms",
			wantCode:   exitUnavailable,
			wantStderr: "no leader elected yet (Unavailable)",
		},
		{
			name:       "server refusal is final",
			addrs:      []string{notFound, secondAddr},
			wantCode:   exitRefused,
			wantStderr: `app "web" not found (NotFound)`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := []string{"--addr", strings.Join(tt.addrs, ","), "app", "list"}
			if tt.timeout != "" {
				args = append([]string{"--timeout", tt.timeout}, args...)
			}
			res := runCLI(t, nil, "", args...)
			if res.code != tt.wantCode {
				t.Errorf("exit code = %d, want %d (stderr %q)", res.code, tt.wantCode, res.stderr)
			}
			if !strings.Contains(res.stdout, tt.wantStdout) {
				t.Errorf("stdout = %q, want it to contain %q", res.stdout, tt.wantStdout)
			}
			if tt.wantStderr != "" {
				checkOneErrorLine(t, res)
				if !strings.HasPrefix(res.stderr, "relctl: "+tt.wantStderr) {
					t.Errorf("stderr = %q, want it to start with %q", res.stderr, "relctl: "+tt.wantStderr)
				}
			} else if res.stderr != "" {
				t.Errorf("stderr = %q, want nothing", res.stderr)
			}
			if got := drain(first.calls); got != tt.wantFirst {
				t.Errorf("first server saw %d calls, want %d", got, tt.wantFirst)
			}
			if got := drain(second.calls); got != tt.wantSecond {
				t.Errorf("second server saw %d calls, want %d", got, tt.wantSecond)
			}
		})
	}
}

// drain counts and empties the calls recorded so far. The RPC has returned
// by the time it is called, so no call is still in flight.
func drain(c chan struct{}) int {
	n := 0
	for {
		select {
		case <-c:
			n++
		default:
			return n
		}
	}
}

func TestTimeout(t *testing.T) {
	addr := serve(t, &fakeControl{block: true}, nil)
	res := runCLI(t, nil, "", "--addr", addr, "--timeout", "100ms", "app", "list")
	if res.code != exitTimeout {
		t.Errorf("exit code = %d, want %d", res.code, exitTimeout)
	}
	checkOneErrorLine(t, res)
	want := "relctl: no answer from " + addr + " within --timeout 100ms; raise it with --timeout\n"
	if res.stderr != want {
		t.Errorf("stderr = %q, want %q", res.stderr, want)
	}
}

// TestGlobalSettings checks flag > environment > default precedence and
// that --consistent reaches the server.
func TestGlobalSettings(t *testing.T) {
	srv := &fakeControl{name: "web", consistent: make(chan bool, 1)}
	addr := serve(t, srv, nil)
	closed := closedAddr(t)

	tests := []struct {
		name           string
		env            map[string]string
		args           []string
		wantCode       int
		wantJSON       bool
		wantConsistent bool
	}{
		{name: "env addr", env: map[string]string{envAddr: addr}, args: []string{"app", "list"}},
		{name: "flag addr beats env", env: map[string]string{envAddr: closed},
			args: []string{"--addr", addr, "app", "list"}},
		{name: "env addr used over default", env: map[string]string{envAddr: closed},
			args: []string{"app", "list"}, wantCode: exitUnavailable},
		{name: "env output", env: map[string]string{envAddr: addr, envOutput: "json"},
			args: []string{"app", "list"}, wantJSON: true},
		{name: "flag output beats env", env: map[string]string{envAddr: addr, envOutput: "json"},
			args: []string{"-o", "table", "app", "list"}},
		{name: "consistent read", env: map[string]string{envAddr: addr},
			args: []string{"--consistent", "app", "list"}, wantConsistent: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := runCLI(t, tt.env, "", tt.args...)
			if res.code != tt.wantCode {
				t.Fatalf("exit code = %d, want %d (stderr %q)", res.code, tt.wantCode, res.stderr)
			}
			if tt.wantCode != exitOK {
				return
			}
			if got := <-srv.consistent; got != tt.wantConsistent {
				t.Errorf("server saw consistent=%v, want %v", got, tt.wantConsistent)
			}
			if isJSON := json.Valid([]byte(res.stdout)); isJSON != tt.wantJSON {
				t.Errorf("stdout JSON = %v, want %v:\n%s", isJSON, tt.wantJSON, res.stdout)
			}
		})
	}
}

// TestReleaseCreateRequest checks what relctl sends: labels merged from
// repeated and comma-separated flags, notes read from a file.
func TestReleaseCreateRequest(t *testing.T) {
	srv := &fakeControl{created: make(chan *relv1.CreateReleaseRequest, 1)}
	addr := serve(t, srv, nil)
	notes := filepath.Join(t.TempDir(), "notes.md")
	if err := os.WriteFile(notes, []byte("Fixes the login loop.\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	res := runCLI(t, map[string]string{envAddr: addr}, "", "release", "create", "web", "1.2.3",
		"--artifact", "https://ci.example.com/web.tgz", "--sha256", "abcd", "--commit", "4f2a9c1",
		"--notes", "@"+notes, "--label", "team=web,channel=stable", "--label", "tier=1")
	if res.code != exitOK {
		t.Fatalf("exit code = %d, stderr %q", res.code, res.stderr)
	}
	if want := "created release web@1.2.3 (index 12)\n"; res.stdout != want {
		t.Errorf("stdout = %q, want %q", res.stdout, want)
	}
	req := <-srv.created
	want := &relv1.CreateReleaseRequest{App: "web", Version: "1.2.3", ArtifactUrl: "https://ci.example.com/web.tgz",
		Sha256: "abcd", Notes: "Fixes the login loop.\n", Commit: "4f2a9c1",
		Labels: map[string]string{"team": "web", "channel": "stable", "tier": "1"}}
	if req.String() != want.String() {
		t.Errorf("request:\n got %v\nwant %v", req, want)
	}
}

func TestVersion(t *testing.T) {
	addr := serve(t, nil, &fakeCluster{id: "n1", version: "v9.9.9"})
	closed := closedAddr(t)

	t.Run("server answers", func(t *testing.T) {
		res := runCLI(t, nil, "", "--addr", closed+","+addr, "-o", "json", "version")
		if res.code != exitOK {
			t.Fatalf("exit code = %d, stderr %q", res.code, res.stderr)
		}
		want := `{
  "client_version": "` + version.Version + `",
  "server": {
    "id": "n1",
    "version": "v9.9.9",
    "address": "` + addr + `"
  }
}
`
		if res.stdout != want {
			t.Errorf("stdout:\n%s\nwant:\n%s", res.stdout, want)
		}
	})
	t.Run("no server", func(t *testing.T) {
		res := runCLI(t, nil, "", "--addr", closed, "version")
		if res.code != exitOK || res.stderr != "" {
			t.Fatalf("exit code = %d, stderr %q; want 0 and nothing", res.code, res.stderr)
		}
		want := "Client version: " + version.Version + "\nServer:         unreachable: no rel server reachable at " + closed
		if !strings.HasPrefix(res.stdout, want) || strings.Count(res.stdout, "\n") != 2 {
			t.Errorf("stdout = %q, want two lines starting %q", res.stdout, want)
		}
	})
}

// TestDynamicCompletion checks that shell completion of app arguments asks
// the server, and degrades to no suggestions when there is none.
func TestDynamicCompletion(t *testing.T) {
	addr := serve(t, &fakeControl{name: "web"}, nil)
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string // the suggestions, one a line, before cobra's ":<directive>" line
	}{
		{name: "app", env: map[string]string{envAddr: addr}, args: []string{"release", "list", "w"}, want: "web\n"},
		{name: "app prefix filters", env: map[string]string{envAddr: addr}, args: []string{"release", "list", "x"}, want: ""},
		{name: "app then at", env: map[string]string{envAddr: addr}, args: []string{"release", "show", ""}, want: "web@\n"},
		{name: "no server", env: map[string]string{envAddr: closedAddr(t)}, args: []string{"release", "list", ""}, want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := runCLI(t, tt.env, "", append([]string{"__complete"}, tt.args...)...)
			if res.code != exitOK {
				t.Fatalf("exit code = %d, stderr %q", res.code, res.stderr)
			}
			got, _, _ := strings.Cut(res.stdout, ":")
			if got != tt.want {
				t.Errorf("suggestions = %q, want %q (stdout %q)", got, tt.want, res.stdout)
			}
		})
	}
}
