package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/relhq/rel/internal/version"
)

func TestBadInput(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--servers", ""}, "--servers: no server addresses"},
		{[]string{"--servers", "localhost"}, `--servers: "localhost": want HOST:PORT`},
		{[]string{"--servers", "a:1,b:99999"}, `"b:99999": want HOST:PORT with a port 1-65535`},
		{[]string{"--node-id", " "}, "--node-id is empty"},
		{[]string{"--node-id", "a b"}, `--node-id "a b": use letters, digits and . _ -`},
		{[]string{"--node-id", "-x"}, `--node-id "-x": use letters`},
		{[]string{"--node-id", strings.Repeat("n", 64)}, `64 characters long: the limit is 63`},
		{[]string{"--node-id", strings.Repeat("n", 60), "--simulate", "10"}, `with --simulate 10: 65 characters long`},
		{[]string{"--labels", "env"}, `--labels: "env": want KEY=VALUE`},
		{[]string{"--labels", "env=prod,env=dev"}, `label "env" given twice`},
		{[]string{"--labels", "bad key=x"}, `--labels: label key "bad key"`},
		{[]string{"--labels", "env=a b"}, `--labels: label env="a b"`},
		{[]string{"--keep", "0"}, "--keep 0: keep at least 1 release"},
		{[]string{"--simulate", "-1"}, "--simulate -1"},
		{[]string{"--max-artifact-bytes", "-5"}, "--max-artifact-bytes -5"},
		{[]string{"--log-level", "loud"}, `--log-level "loud"`},
		{[]string{"--log-format", "xml"}, `--log-format "xml"`},
		{[]string{"extra"}, `unexpected argument "extra"`},
		{[]string{"--allow-url-schemes", "https,ftp"}, `--allow-url-schemes: "ftp": use https, http or file`},
		{[]string{"--allow-fetch-from", "127.0.0.1"}, `--allow-fetch-from: "127.0.0.1" is not a CIDR`},
		{[]string{"--join-token-file", "t"}, "enrolling needs a way to check the servers: give --ca-pin"},
		{[]string{"--join-token-file", "t", "--ca-pin", "sha256:12"}, `CA pin "sha256:12": want sha256:<64 hex digits>`},
		{[]string{"--cert-file", "c.pem"}, "--cert-file and --key-file go together"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(tc.args, &stdout, &stderr)
		if code != 2 {
			t.Errorf("%v: exit %d, want 2 (stderr %q)", tc.args, code, stderr.String())
		}
		line := stderr.String()
		if !strings.HasPrefix(line, "rel-agent: ") || !strings.Contains(line, tc.want) || strings.Count(line, "\n") != 1 {
			t.Errorf("%v: stderr %q, want one line with %q", tc.args, line, tc.want)
		}
	}
}

func TestEnvFallback(t *testing.T) {
	t.Setenv("REL_LABELS", "env")
	var stdout, stderr bytes.Buffer
	if code := run(nil, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), `--labels: "env"`) {
		t.Errorf("exit %d, stderr %q", code, stderr.String())
	}
	// The command line wins over the environment.
	t.Setenv("REL_KEEP", "0")
	stderr.Reset()
	if code := run([]string{"--keep", "2", "--labels", "x=y", "--log-level", "nope"}, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), "--log-level") {
		t.Errorf("exit %d, stderr %q", code, stderr.String())
	}
	t.Setenv("REL_KEEP", "many")
	stderr.Reset()
	if code := run(nil, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), `REL_KEEP="many"`) {
		t.Errorf("exit %d, stderr %q", code, stderr.String())
	}
}

func TestVersion(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"--version"}, &stdout, &stderr); code != 0 || stdout.String() != "rel-agent "+version.Version+"\n" {
		t.Errorf("exit %d, stdout %q", code, stdout.String())
	}
}
