package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/relhq/rel/internal/testcluster"
)

// TestWebhookCommandsAgainstCluster: relctl refuses bad webhook input
// with one clear line (a missing or group-readable secret file, a bad URL,
// an unknown glob, a taken name), stores nothing for it, and never prints
// a secret.
func TestWebhookCommandsAgainstCluster(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{})
	dir := t.TempDir()
	mgmt := filepath.Join(dir, "mgmt.token")
	base := map[string]string{envAddr: c.Nodes[0].GRPCAddr(), envCAFile: c.PKI.CAFile}
	if res := runCLI(t, base, "", "acl", "bootstrap", "--out", mgmt); res.code != exitOK {
		t.Fatalf("bootstrap: %+v", res)
	}
	env := map[string]string{envAddr: c.Nodes[0].GRPCAddr(), envCAFile: c.PKI.CAFile, envTokenFile: mgmt}
	secret := filepath.Join(dir, "whsec")
	if err := os.WriteFile(secret, []byte("very-secret-value\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	open := filepath.Join(dir, "open")
	if err := os.WriteFile(open, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"missing secret file", []string{"--url", "https://h/x", "--events", "rollout.*", "--secret-file", filepath.Join(dir, "nope")}, exitUsage, "no such file"},
		{"secret readable by others", []string{"--url", "https://h/x", "--events", "rollout.*", "--secret-file", open}, exitUsage, "chmod 600"},
		{"bad URL", []string{"--url", "h/x", "--events", "rollout.*"}, exitRefused, "must be http or https"},
		{"unknown glob", []string{"--url", "https://h/x", "--events", "rollouts.*"}, exitUsage, "matches no event type"},
		{"no events", []string{"--url", "https://h/x"}, exitUsage, "--events is required"},
		{"bad format", []string{"--url", "https://h/x", "--events", "rollout.*", "--format", "xml"}, exitUsage, "want json or slack"},
		{"created", []string{"--url", "https://hooks.example.com/x", "--events", "rollout.*,release.*", "--secret-file", secret}, exitOK, "created webhook chat"},
		{"taken name", []string{"--url", "https://h/y", "--events", "rollout.*"}, exitRefused, "already exists"},
	}
	for _, tc := range tests {
		res := runCLI(t, env, "", append([]string{"webhook", "create", "chat"}, tc.args...)...)
		if res.code != tc.code || !strings.Contains(res.stdout+res.stderr, tc.want) {
			t.Errorf("%s: exit %d (%q %q), want %d and %q", tc.name, res.code, res.stdout, res.stderr, tc.code, tc.want)
		}
		if tc.code != exitOK {
			checkOneErrorLine(t, res)
		}
	}
	for _, args := range [][]string{{"webhook", "list"}, {"-o", "json", "webhook", "list"}, {"webhook", "deliveries", "chat"}} {
		res := runCLI(t, env, "", args...)
		if res.code != exitOK || strings.Contains(res.stdout, "very-secret") {
			t.Fatalf("%v: exit %d, stdout %q", args, res.code, res.stdout)
		}
		if args[len(args)-1] == "list" && (strings.Count(res.stdout, "hooks.example.com") != 1 || strings.Contains(res.stdout, "h/y")) {
			t.Errorf("%v: want only the one webhook created:\n%s", args, res.stdout)
		}
	}
	if res := runCLI(t, env, "", "webhook", "redeliver", "chat", "9"); res.code != exitRefused || !strings.Contains(res.stderr, "no dead letter for event 9") {
		t.Errorf("redeliver of no dead letter: %+v", res)
	}
	if res := runCLI(t, env, "", "events", "--type", "rollouts.*"); res.code != exitUsage {
		t.Errorf("events with an unknown glob: %+v", res)
	}
}
