package validate

import (
	"net/url"
	"strings"
)

// MaxPrunedDeployments bounds one deployment retention pass.
const MaxPrunedDeployments = 5000

// Changelog checks a release's changelog: at most MaxNotesLen bytes, as
// notes.
func Changelog(s string) error {
	if len(s) > MaxNotesLen {
		return invalid("changelog is %d bytes long: the limit is %d (64 KiB); shorten it or link it with --build-url", len(s), MaxNotesLen)
	}
	return nil
}

// BuildURL checks the optional link to the build that made a release:
// an absolute http:// or https:// URL with a host.
func BuildURL(s string) error {
	if s == "" {
		return nil
	}
	if len(s) > MaxURLLen {
		return invalid("build URL is %d characters long: the limit is %d", len(s), MaxURLLen)
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || strings.ContainsAny(s, " \t\r\n") {
		return invalid("build URL %q: give an absolute http:// or https:// URL (e.g. https://ci.example.com/builds/123)", s)
	}
	return nil
}

// CommitTime checks a release's optional commit time against the time the
// release is created: a commit cannot come after its build.
func CommitTime(commit, created int64) error {
	if commit < 0 {
		return invalid("commit time is negative")
	}
	if commit > created && created > 0 {
		return invalid("commit time is after the release's creation: give the time the commit was made (RFC 3339, e.g. 2026-11-27T10:00:00Z)")
	}
	return nil
}

func pruneDeployments(cutoff int64, n uint32) error {
	if n == 0 || n > MaxPrunedDeployments {
		return invalid("a deployment retention pass removes 1 to %d records, not %d", MaxPrunedDeployments, n)
	}
	if cutoff <= 0 {
		return invalid("prune_deployments has no cutoff time")
	}
	return nil
}
