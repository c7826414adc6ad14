package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/relhq/rel/internal/pki"
	"github.com/relhq/rel/internal/testcluster"
)

// TestReleaseNotesCommand runs relctl against a real server: releases
// created with the release-notes flags, notes in creation order in every
// format, and each bad input with its exit code and a message that says
// what to do.
func TestReleaseNotesCommand(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{})
	n := c.Nodes[0]
	cert, key := c.PKI.Files(t, pki.Leaf{Identity: testcluster.AdminID()})
	env := map[string]string{envAddr: n.GRPCAddr(), envCAFile: c.PKI.CAFile, envCertFile: cert, envKeyFile: key}
	expect := func(t *testing.T, code int, want string, args ...string) result {
		t.Helper()
		res := runCLI(t, env, "", args...)
		if res.code != code {
			t.Fatalf("relctl %s: exit %d, want %d (stdout %q, stderr %q)", strings.Join(args, " "), res.code, code, res.stdout, res.stderr)
		}
		if out := res.stdout + res.stderr; !strings.Contains(out, want) {
			t.Fatalf("relctl %s: output lacks %q:\n%s", strings.Join(args, " "), want, out)
		}
		if code != exitOK {
			checkOneErrorLine(t, res)
		}
		return res
	}
	dir := t.TempDir()
	changelog := filepath.Join(dir, "CHANGES.md")
	if err := os.WriteFile(changelog, []byte("- login: no loop on expired sessions\n- search: faster\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	huge := filepath.Join(dir, "huge.md")
	if err := os.WriteFile(huge, []byte(strings.Repeat("x", 64<<10+1)), 0o600); err != nil {
		t.Fatal(err)
	}
	sha := strings.Repeat("ab", 32)
	create := func(version string, extra ...string) []string {
		return append([]string{"release", "create", "web", version, "--artifact", "https://a.example.com/web-" + version + ".tgz", "--sha256", sha}, extra...)
	}
	expect(t, exitOK, "", "app", "create", "web")
	expect(t, exitOK, "", "env", "create", "prod", "--selector", "env=prod")
	expect(t, exitOK, "", create("1.0.0")...)
	expect(t, exitOK, "", create("1.2.0", "--notes", "new search")...)
	expect(t, exitOK, "", create("1.1.0", "--notes", "fix the login loop", "--commit", "4f2a9c1", "--label", "team=web",
		"--changelog-file", changelog, "--build-url", "https://ci.example.com/builds/812", "--commit-time", "2026-11-20T10:00:00Z")...)

	// Bad release-notes fields: relctl refuses what it can check (usage,
	// exit 2), the server the rest (exit 1); nothing is created.
	expect(t, exitUsage, "--changelog-file "+huge+": larger than the 64 KiB limit", create("1.3.0", "--changelog-file", huge)...)
	expect(t, exitUsage, "--changelog-file "+filepath.Join(dir, "none")+": open", create("1.3.0", "--changelog-file", filepath.Join(dir, "none"))...)
	expect(t, exitUsage, `invalid --commit-time "yesterday": want an RFC 3339 time`, create("1.3.0", "--commit-time", "yesterday")...)
	expect(t, exitRefused, "commit time is after the release's creation", create("1.3.0", "--commit-time", "2100-01-01T00:00:00Z")...)
	expect(t, exitRefused, `build URL "ftp://ci/1": give an absolute http:// or https:// URL`, create("1.3.0", "--build-url", "ftp://ci/1")...)
	expect(t, exitRefused, "not found", "release", "show", "web@1.3.0")

	// Creation order, not semantic order; prod runs nothing, so every
	// release up to the candidate.
	res := expect(t, exitOK, "What web@1.1.0 changes, compared with nothing: prod runs no release of web", "release", "notes", "web@1.1.0", "--env", "prod")
	for _, want := range []string{"3 releases: 1.0.0, 1.2.0, 1.1.0", "fix the login loop", "- search: faster", "commit 4f2a9c1 2026-11-20T10:00:00Z",
		"build  https://ci.example.com/builds/812", "labels team=web"} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("notes lack %q:\n%s", want, res.stdout)
		}
	}
	if strings.Index(res.stdout, "== web 1.2.0") > strings.Index(res.stdout, "== web 1.1.0") {
		t.Errorf("1.2.0 (created first) after 1.1.0:\n%s", res.stdout)
	}
	res = expect(t, exitOK, "# What web 1.1.0 changes", "release", "notes", "web@1.1.0", "--since", "1.0.0", "-o", "markdown")
	for _, want := range []string{"Compared with 1.0.0 (--since).", "## 1.2.0", "## 1.1.0", "### Changelog", "[build](https://ci.example.com/builds/812)"} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("markdown lacks %q:\n%s", want, res.stdout)
		}
	}
	res = expect(t, exitOK, "", "release", "notes", "web@1.1.0", "--since", "1.0.0", "-o", "json")
	var js releaseNotesJSON
	if err := json.Unmarshal([]byte(res.stdout), &js); err != nil {
		t.Fatal(err)
	}
	if js.BaseVersion != "1.0.0" || len(js.Releases) != 2 || js.Releases[0].Version != "1.2.0" || js.Releases[1].Changelog == "" || js.Releases[1].CommitTime != "2026-11-20T10:00:00Z" {
		t.Errorf("json %+v", js)
	}
	expect(t, exitOK, "web@1.0.0 is older than the base, 1.2.0 (--since): deploying it goes back", "release", "notes", "web@1.0.0", "--since", "1.2.0")
	expect(t, exitOK, "web@1.2.0 is the base, 1.2.0 (--since): nothing changes.", "release", "notes", "web@1.2.0", "--since", "1.2.0")

	// Bad input.
	expect(t, exitUsage, "give --since VERSION or --env ENV, not both", "release", "notes", "web@1.1.0", "--since", "1.0.0", "--env", "prod")
	expect(t, exitUsage, `want APP@VERSION`, "release", "notes", "web")
	expect(t, exitUsage, `invalid --output "html": want table, json, text or markdown`, "release", "notes", "web@1.1.0", "-o", "html")
	expect(t, exitRefused, `app "nope" not found`, "release", "notes", "nope@1.0.0")
	expect(t, exitRefused, "release web@9.0.0 not found: 'relctl release list web' shows its releases", "release", "notes", "web@9.0.0")
	expect(t, exitRefused, "--since 0.1.0: release web@0.1.0 not found", "release", "notes", "web@1.1.0", "--since", "0.1.0")
	expect(t, exitRefused, `environment "qa" not found`, "release", "notes", "web@1.1.0", "--env", "qa")

	// The report of a cluster with no finished rollout yet.
	expect(t, exitOK, "No rollout finished in this period or the one before.", "report")
	res = expect(t, exitOK, "<!DOCTYPE html>", "report", "--since", "12w", "-o", "html")
	if strings.Contains(res.stdout, "<script") {
		t.Errorf("html report has a script")
	}
	expect(t, exitOK, "# Release report: the 7 days from", "report", "--env", "prod", "--since", "7d", "-o", "markdown")
	expect(t, exitUsage, `invalid --since "0d"`, "report", "--since", "0d")
	expect(t, exitRefused, "give 1h to 200d", "report", "--since", "300d")
	expect(t, exitRefused, `app "nope" not found`, "report", "--app", "nope")
	expect(t, exitUsage, `invalid --output "text": want table, json, markdown or html`, "report", "-o", "text")
}
