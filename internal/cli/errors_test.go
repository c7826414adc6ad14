package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestExitCodeFor(t *testing.T) {
	tests := []struct {
		code codes.Code
		want int
	}{
		{codes.OK, exitOK},
		{codes.InvalidArgument, exitRefused},
		{codes.NotFound, exitRefused},
		{codes.AlreadyExists, exitRefused},
		{codes.FailedPrecondition, exitRefused},
		{codes.PermissionDenied, exitRefused},
		{codes.Unauthenticated, exitRefused},
		{codes.Internal, exitRefused},
		{codes.Unimplemented, exitRefused},
		{codes.Canceled, exitRefused},
		{codes.Unknown, exitRefused},
		{codes.Unavailable, exitUnavailable},
		{codes.DeadlineExceeded, exitTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.code.String(), func(t *testing.T) {
			if got := exitCodeFor(tt.code); got != tt.want {
				t.Errorf("exitCodeFor(%s) = %d, want %d", tt.code, got, tt.want)
			}
		})
	}
}

func TestDescribeError(t *testing.T) {
	tests := []struct {
		name      string
		err       error
		beforeRun bool
		wantCode  int
		wantMsg   string
	}{
		{
			name:     "server refusal keeps its message and names the code",
			err:      status.Error(codes.AlreadyExists, `app "web" already exists`),
			wantCode: exitRefused,
			wantMsg:  `app "web" already exists (AlreadyExists)`,
		},
		{
			name:     "no leader is passed through as unavailable",
			err:      status.Error(codes.Unavailable, "no leader elected yet; retry shortly"),
			wantCode: exitUnavailable,
			wantMsg:  "no leader elected yet; retry shortly (Unavailable)",
		},
		{
			name:     "server-side deadline",
			err:      status.Error(codes.DeadlineExceeded, "raft apply timed out after 5s"),
			wantCode: exitTimeout,
			wantMsg:  "raft apply timed out after 5s (DeadlineExceeded)",
		},
		{
			name:     "multi-line server message becomes one line",
			err:      status.Error(codes.InvalidArgument, "bad request:\nversion is empty"),
			wantCode: exitRefused,
			wantMsg:  "bad request: version is empty (InvalidArgument)",
		},
		{
			name:     "usage error points at help",
			err:      usagef(`--label "x": missing "="`),
			wantCode: exitUsage,
			wantMsg:  `--label "x": missing "=" (see relctl release create --help)`,
		},
		{
			name:      "anything before the command ran is usage",
			err:       errors.New(`required flag(s) "artifact" not set`),
			beforeRun: true,
			wantCode:  exitUsage,
			wantMsg:   `required flag(s) "artifact" not set (see relctl release create --help)`,
		},
		{
			name: "unreachable",
			err: &unreachableError{addrs: []string{"127.0.0.1:1", "127.0.0.1:2"},
				last: status.Error(codes.Unavailable, "connection refused")},
			wantCode: exitUnavailable,
			wantMsg: "no rel server reachable at 127.0.0.1:1, 127.0.0.1:2; start rel-server or set --addr/REL_ADDR" +
				" (last error: connection refused)",
		},
		{
			name:     "own timeout",
			err:      &timeoutError{addr: "127.0.0.1:7400", timeout: 10 * time.Second},
			wantCode: exitTimeout,
			wantMsg:  "no answer from 127.0.0.1:7400 within --timeout 10s; raise it with --timeout",
		},
		{
			name:     "bare context deadline",
			err:      fmt.Errorf("waiting: %w", context.DeadlineExceeded),
			wantCode: exitTimeout,
			wantMsg:  "waiting: context deadline exceeded; raise it with --timeout",
		},
		{
			name:     "other local failure",
			err:      errors.New("write /dev/stdout: no space left on device"),
			wantCode: exitRefused,
			wantMsg:  "write /dev/stdout: no space left on device",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, msg := describeError(tt.err, "relctl release create", tt.beforeRun)
			if code != tt.wantCode || msg != tt.wantMsg {
				t.Errorf("got (%d, %q), want (%d, %q)", code, msg, tt.wantCode, tt.wantMsg)
			}
		})
	}
}

// TestUsageErrors runs relctl in-process on bad command lines: each must
// exit 2 with one stderr line pointing at the right help, print nothing on
// stdout, and never try to reach a server (REL_ADDR points nowhere, and
// an attempt would exit 3).
func TestUsageErrors(t *testing.T) {
	env := map[string]string{envAddr: closedAddr(t)}
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string // the whole stderr line
	}{
		{name: "unknown flag", args: []string{"app", "list", "--bogus"},
			want: "relctl: unknown flag: --bogus (see relctl app list --help)"},
		{name: "unknown shorthand flag", args: []string{"app", "list", "-x"},
			want: "relctl: unknown shorthand flag: 'x' in -x (see relctl app list --help)"},
		{name: "unknown command", args: []string{"aps"},
			want: `relctl: unknown command "aps" for "relctl"; did you mean "app"? (see relctl --help)`},
		{name: "unknown subcommand", args: []string{"app", "lst"},
			want: `relctl: unknown command "lst" for "relctl app"; did you mean "list"? (see relctl app --help)`},
		{name: "missing argument", args: []string{"app", "create"},
			want: "relctl: relctl app create takes 1 argument (NAME), got 0 arguments (see relctl app create --help)"},
		{name: "extra argument", args: []string{"app", "list", "web"},
			want: "relctl: relctl app list takes no arguments, got 1 argument (see relctl app list --help)"},
		{name: "bad output flag", args: []string{"-o", "yaml", "app", "list"},
			want: `relctl: invalid --output "yaml": want table or json (see relctl app list --help)`},
		{name: "bad output env", env: map[string]string{envOutput: "yaml"}, args: []string{"app", "list"},
			want: `relctl: invalid REL_OUTPUT "yaml": want table or json (see relctl app list --help)`},
		{name: "bad timeout", args: []string{"--timeout", "soon", "app", "list"},
			want: `relctl: invalid argument "soon" for "--timeout" flag: time: invalid duration "soon" (see relctl app list --help)`},
		{name: "zero timeout", args: []string{"--timeout", "0s", "app", "list"},
			want: `relctl: invalid --timeout 0s: must be positive (see relctl app list --help)`},
		{name: "bad addr", args: []string{"--addr", "localhost", "app", "list"},
			want: `relctl: --addr: "localhost" is not HOST:PORT (see relctl app list --help)`},
		{name: "bad addr env", env: map[string]string{envAddr: "a:1,,b:2"}, args: []string{"app", "list"},
			want: `relctl: REL_ADDR "a:1,,b:2": empty address in list (want HOST:PORT[,HOST:PORT...]) (see relctl app list --help)`},
		{name: "selector required", args: []string{"env", "create", "prod"},
			want: `relctl: required flag(s) "selector" not set (see relctl env create --help)`},
		{name: "bad selector", args: []string{"env", "create", "prod", "--selector", "tier"},
			want: `relctl: --selector "tier": missing "=" (want KEY=VALUE) (see relctl env create --help)`},
		{name: "duplicate label", args: []string{"release", "create", "web", "1", "--artifact", "file:///a", "--sha256", "ab",
			"--label", "a=1", "--label", "a=2"},
			want: `relctl: --label "a=2": duplicate key "a" (see relctl release create --help)`},
		{name: "notes file missing", args: []string{"release", "create", "web", "1", "--artifact", "file:///a", "--sha256", "ab",
			"--notes", "@/nonexistent/notes.md"},
			want: `relctl: --notes @/nonexistent/notes.md: open /nonexistent/notes.md: no such file or directory (see relctl release create --help)`},
		{name: "sha256 required for a URL", args: []string{"release", "create", "web", "1", "--artifact", "https://ci.example.com/a.tgz"},
			want: `relctl: --sha256 is required when --artifact is a URL (it is optional only for a local file) (see relctl release create --help)`},
		{name: "bad upload timeout", args: []string{"release", "create", "web", "1", "--artifact", "a.tgz", "--upload-timeout", "0s"},
			want: `relctl: invalid --upload-timeout 0s: must be positive (see relctl release create --help)`},
		{name: "missing artifact file", args: []string{"release", "create", "web", "1", "--artifact", "/nonexistent/web.tgz"},
			want: `relctl: --artifact /nonexistent/web.tgz: no such file (a URL needs a scheme, e.g. https://) (see relctl release create --help)`},
		{name: "rollout env required", args: []string{"rollout", "start", "web@1.2.3"},
			want: `relctl: required flag(s) "env" not set (see relctl rollout start --help)`},
		{name: "rollout start without at", args: []string{"rollout", "start", "web", "--env", "prod"},
			want: `relctl: want APP@VERSION (e.g. web@1.2.3), got "web" (see relctl rollout start --help)`},
		{name: "rollout status without id", args: []string{"rollout", "status"},
			want: "relctl: relctl rollout status takes 1 argument (ID), got 0 arguments (see relctl rollout status --help)"},
		{name: "agent show without id", args: []string{"agent", "show"},
			want: "relctl: relctl agent show takes 1 argument (ID), got 0 arguments (see relctl agent show --help)"},
		{name: "history without app", args: []string{"history"},
			want: "relctl: relctl history takes 1 argument (APP), got 0 arguments (see relctl history --help)"},
		{name: "history bad since", args: []string{"history", "web", "--since", "yesterday"},
			want: `relctl: invalid --since "yesterday": want a duration (e.g. 90m, 24h) or an RFC 3339 time (e.g. 2025-03-04T10:00:00Z) (see relctl history --help)`},
		{name: "history negative since", args: []string{"history", "web", "--since", "-1h"},
			want: `relctl: invalid --since "-1h": a duration must be positive (e.g. 24h) (see relctl history --help)`},
		{name: "show without at", args: []string{"release", "show", "web"},
			want: `relctl: want APP@VERSION (e.g. web@1.2.3), got "web" (see relctl release show --help)`},
		{name: "too many release list args", args: []string{"release", "list", "web", "api"},
			want: "relctl: relctl release list takes at most 1 argument (APP), got 2 arguments (see relctl release list --help)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := env
			if tt.env != nil {
				e = tt.env
			}
			res := runCLI(t, e, "", tt.args...)
			if res.code != exitUsage {
				t.Errorf("exit code = %d, want %d", res.code, exitUsage)
			}
			checkOneErrorLine(t, res)
			if got := strings.TrimSuffix(res.stderr, "\n"); got != tt.want {
				t.Errorf("stderr:\n got %s\nwant %s", got, tt.want)
			}
			if res.stdout != "" {
				t.Errorf("stdout = %q, want nothing", res.stdout)
			}
		})
	}
}

func TestHelpAndCompletion(t *testing.T) {
	tests := []struct {
		args []string
		want string // substring of stdout
	}{
		{args: []string{"--help"}, want: "Exit codes:"},
		{args: nil, want: "Available Commands:"},
		{args: []string{"release"}, want: "relctl release create"},
		{args: []string{"release", "create", "--help"}, want: "--upload-timeout"},
		{args: []string{"rollout"}, want: "relctl rollout start"},
		{args: []string{"rollout", "status", "--help"}, want: "exits 0 if the rollout succeeded"},
		{args: []string{"agent", "--help"}, want: "relctl agent show"},
		{args: []string{"history", "--help"}, want: "Examples:"},
		{args: []string{"completion", "bash"}, want: "__start_relctl"},
		{args: []string{"completion", "zsh"}, want: "#compdef relctl"},
		{args: []string{"completion", "fish"}, want: "complete -c relctl"},
		{args: []string{"completion", "powershell"}, want: "Register-ArgumentCompleter"},
		// Cobra's completion protocol, which the scripts above call.
		{args: []string{"__complete", "rel"}, want: "release"},
		{args: []string{"__complete", "-o", ""}, want: "json"},
		{args: []string{"--help"}, want: "REL_TOKEN_FILE"},
		{args: []string{"tls", "--help"}, want: "relctl tls cert create --client alice --role deployer"},
		{args: []string{"tls", "cert", "create", "--help"}, want: "https://127.0.0.1:7480/v1/health"},
		{args: []string{"acl", "token", "create", "--help"}, want: "--ttl DURATION"},
		{args: []string{"agent", "token", "create", "--help"}, want: "the rel-agent\ncommand that enrols with it"},
		{args: []string{"__complete", "tls", "cert", "create", "--role", "re"}, want: "release-creator"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			res := runCLI(t, nil, "", tt.args...)
			// __complete reports its directive on stderr, which the
			// completion scripts discard; everything else must be silent.
			if res.code != exitOK || (res.stderr != "" && tt.args[0] != "__complete") {
				t.Fatalf("exit %d, stderr %q", res.code, res.stderr)
			}
			if !strings.Contains(res.stdout, tt.want) {
				t.Errorf("stdout lacks %q:\n%s", tt.want, res.stdout)
			}
		})
	}
}

// TestEveryCommandDocumented keeps the help contract: Short, Long and an
// example on every command relctl defines.
func TestEveryCommandDocumented(t *testing.T) {
	r := &runner{lookupEnv: func(string) (string, bool) { return "", false }}
	root := r.rootCommand()
	stack := root.Commands()
	stack = append(stack, root)
	for len(stack) > 0 {
		c := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		stack = append(stack, c.Commands()...)
		if c.Short == "" || c.Long == "" || c.Example == "" {
			t.Errorf("%s: Short, Long and Example must all be set", c.CommandPath())
		}
	}
}
