package cli

import (
	"io"
	"os"
	"strings"
	"time"
	"unicode/utf8"
)

// maxNotesFile is the largest --notes @FILE relctl reads. Release notes are
// meant to be a changelog excerpt, and reading an unbounded file (a build
// artifact passed by mistake) into one RPC helps nobody.
const maxNotesFile = 64 << 10

// parseKeyValues parses the values of a repeatable KEY=VALUE flag, each of
// which may itself be a comma-separated list. It only parses: the server
// validates the characters and lengths of keys and values authoritatively.
// Everything after the first "=" is the value, and an empty value is allowed.
func parseKeyValues(flag string, values []string) (map[string]string, error) {
	out := make(map[string]string)
	for _, v := range values {
		for item := range strings.SplitSeq(v, ",") {
			if item == "" {
				return nil, usagef("--%s %q: empty item (want KEY=VALUE[,KEY=VALUE...])", flag, v)
			}
			key, value, ok := strings.Cut(item, "=")
			if !ok {
				return nil, usagef("--%s %q: missing \"=\" (want KEY=VALUE)", flag, item)
			}
			if key == "" {
				return nil, usagef("--%s %q: empty key (want KEY=VALUE)", flag, item)
			}
			if _, dup := out[key]; dup {
				return nil, usagef("--%s %q: duplicate key %q", flag, item, key)
			}
			out[key] = value
		}
	}
	return out, nil
}

// readNotes interprets --notes: "@FILE" reads FILE, "@-" reads stdin, "@@x"
// is the literal text "@x", and anything else is the notes themselves.
func readNotes(arg string, stdin io.Reader) (string, error) {
	rest, isFile := strings.CutPrefix(arg, "@")
	if !isFile {
		return arg, nil
	}
	if strings.HasPrefix(rest, "@") {
		return rest, nil
	}
	if rest == "" {
		return "", usagef("--notes @: missing file name (want @FILE, @- for stdin, or @@ for a literal @)")
	}

	var src io.Reader
	if rest == "-" {
		src = stdin
	} else {
		f, err := os.Open(rest)
		if err != nil {
			return "", usagef("--notes @%s: %v", rest, err)
		}
		defer f.Close()
		src = f
	}
	// Read one byte past the limit to tell "exactly 64 KiB" from "more".
	b, err := io.ReadAll(io.LimitReader(src, maxNotesFile+1))
	if err != nil {
		return "", usagef("--notes @%s: %v", rest, err)
	}
	if len(b) > maxNotesFile {
		return "", usagef("--notes @%s: larger than the %d KiB limit", rest, maxNotesFile>>10)
	}
	// protobuf refuses to marshal a string that is not UTF-8; saying so here
	// beats an opaque marshalling error from gRPC.
	if !utf8.Valid(b) {
		return "", usagef("--notes @%s: not UTF-8 text", rest)
	}
	return string(b), nil
}

// parseAppVersion splits the APP@VERSION argument of "release show" at the
// first "@", so a version may itself contain "@" but an app name may not.
func parseAppVersion(arg string) (app, version string, err error) {
	app, version, ok := strings.Cut(arg, "@")
	if !ok || app == "" || version == "" {
		return "", "", usagef("want APP@VERSION (e.g. web@1.2.3), got %q", arg)
	}
	return app, version, nil
}

// parseSince reads --since: a duration back from now (90m, 24h) or an
// RFC 3339 time. An empty value is no limit (zero time).
func parseSince(arg string, now time.Time) (time.Time, error) {
	if arg == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(arg); err == nil {
		if d <= 0 {
			return time.Time{}, usagef("invalid --since %q: a duration must be positive (e.g. 24h)", arg)
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, arg)
	if err != nil {
		return time.Time{}, usagef("invalid --since %q: want a duration (e.g. 90m, 24h) or an RFC 3339 time (e.g. 2025-03-04T10:00:00Z)", arg)
	}
	return t, nil
}
