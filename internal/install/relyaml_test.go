package install

import (
	"strings"
	"testing"
	"time"
)

func TestParseSpec(t *testing.T) {
	s, err := parseSpec([]byte(`
hooks:
  before_install: ./check.sh
  stop: {command: "./stop.sh", timeout: 30s}
run: ./bin/server --port 8080
health:
  http: http://127.0.0.1:8080/healthz
  interval: 1s
  timeout: 2s
  healthy_after: 3s
  deadline: 60s
env: {PORT: 8080, MODE: prod, EMPTY: }
stop_timeout: 15s
user: www-data
`))
	if err != nil {
		t.Fatal(err)
	}
	if s.Hooks["before_install"].Command != "./check.sh" || s.Hooks["stop"] != (hook{"./stop.sh", 30 * time.Second}) {
		t.Errorf("hooks %+v", s.Hooks)
	}
	h := s.Health
	if h.HTTP != "http://127.0.0.1:8080/healthz" || h.Interval != time.Second || h.Timeout != 2*time.Second || h.HealthyAfter != 3*time.Second || h.Deadline != time.Minute {
		t.Errorf("health %+v", h)
	}
	if s.Env["PORT"] != "8080" || s.Env["MODE"] != "prod" || s.Env["EMPTY"] != "" || s.Run != "./bin/server --port 8080" || s.StopTimeout != 15*time.Second || s.User != "www-data" {
		t.Errorf("spec %+v", s)
	}
	for _, empty := range []string{"", "\n", "# nothing\n", "---\n", "~\n"} {
		s, err := parseSpec([]byte(empty))
		if err != nil || s.Run != "" || s.Health != nil || s.StopTimeout != defaultStopTimeout {
			t.Errorf("parseSpec(%q) = %+v, %v", empty, s, err)
		}
	}
}

func TestParseSpecErrors(t *testing.T) {
	tests := []struct{ yaml, want string }{
		{"health:\n  exec: true\n  interval: fast\n", `rel.yaml: health.interval: invalid duration "fast"`},
		{"health:\n  exec: true\n  timeout: -1s\n", `rel.yaml: health.timeout: must be positive, got -1s`},
		{"health:\n  exec: true\n  healthy_after: -1s\n", `rel.yaml: health.healthy_after: must not be negative`},
		{"health:\n  exec: true\n  deadline: 10\n", `rel.yaml: health.deadline: invalid duration "10"`},
		{"health:\n  exec: true\n  tcp: 127.0.0.1:80\n", `rel.yaml: health: has exec and tcp: give exactly one of http, tcp and exec`},
		{"health:\n  interval: 1s\n", `rel.yaml: health: needs one of http, tcp and exec`},
		{"health:\n  http: ftp://x/\n", `rel.yaml: health.http: "ftp://x/" is not an http:// or https:// URL`},
		{"health:\n  tcp: localhost\n", `rel.yaml: health.tcp: "localhost" is not host:port`},
		{"health:\n  exec: true\n  intervall: 1s\n", `rel.yaml: health.intervall: unknown field`},
		{"health: yes\n", `rel.yaml: health: must be a mapping, got "yes"`},
		{"helth:\n  exec: true\n", `rel.yaml: helth: unknown field`},
		{"hooks:\n  restart: x\n", `rel.yaml: hooks.restart: unknown hook`},
		{"hooks:\n  start: {command: x, timout: 1s}\n", `rel.yaml: hooks.start.timout: unknown field`},
		{"hooks:\n  start: {timeout: 1s}\n", `rel.yaml: hooks.start.command: missing`},
		{"hooks:\n  start: {command: x, timeout: soon}\n", `rel.yaml: hooks.start.timeout: invalid duration "soon"`},
		{"hooks:\n  start: ''\n", `rel.yaml: hooks.start: empty command`},
		{"hooks:\n  start: [a, b]\n", `rel.yaml: hooks.start: must be a string, got a list`},
		{"hooks:\n  start: x\n  start: y\n", `rel.yaml: hooks.start: given twice`},
		{"run:\n", `rel.yaml: run: must be a string, got nothing`},
		{"env: {REL_APP: x}\n", `rel.yaml: env.REL_APP: names starting with REL_ are set by the agent`},
		{"env: {1X: x}\n", `rel.yaml: env.1X: not a variable name`},
		{"env: {A: [1]}\n", `rel.yaml: env.A: must be a string, got a list`},
		{"stop_timeout: 0s\n", `rel.yaml: stop_timeout: must be positive`},
		{"user: [a]\n", `rel.yaml: user: must be a string, got a list`},
		{"user: \"a b\"\n", `rel.yaml: user: "a b" is not a user name`},
		{"user: -root\n", `rel.yaml: user: "-root" is not a user name`},
		{"user:\n", `rel.yaml: user: must be a string, got nothing`},
		{"- a\n- b\n", `rel.yaml: must be a mapping of fields, got a list`},
		{"run: x\n---\nrun: y\n", `rel.yaml: holds more than one YAML document`},
		{"run: [unclosed\n", `rel.yaml: `},
	}
	for _, tc := range tests {
		_, err := parseSpec([]byte(tc.yaml))
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("parseSpec(%q) = %v, want an error starting with %q", tc.yaml, err, tc.want)
		}
	}
	if _, err := parseSpec([]byte(strings.Repeat("#", maxSpecBytes+1))); err == nil {
		t.Error("an oversized rel.yaml was accepted")
	}
}
