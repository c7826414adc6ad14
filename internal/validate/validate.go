// Package validate checks user-supplied names, versions, labels, digests and
// artifact URLs. Every server endpoint validates with it before anything is
// proposed to raft, so that a bad request never reaches the log.
package validate

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"sort"
	"strings"

	"github.com/relhq/rel/internal/reqid"
)

// ErrInvalid is wrapped by every error this package returns.
var ErrInvalid = errors.New("invalid argument")

// Limits on user input, chosen so names fit DNS labels, file names and
// Prometheus label values, and rows stay small enough to replicate cheaply.
const (
	MaxNameLen        = 63
	MaxVersionLen     = 128
	MaxDescriptionLen = 1024
	MaxNotesLen       = 64 << 10
	MaxLabelKeyLen    = 63
	MaxLabelValueLen  = 255
	MaxLabels         = 64
	MaxURLLen         = 2048
	MaxCommitLen      = 64
)

var (
	nameRE     = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`)
	versionRE  = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]*$`)
	labelKeyRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._/-]*[A-Za-z0-9])?$`)
	labelValRE = regexp.MustCompile(`^[A-Za-z0-9._:/@+-]*$`)
	sha256RE   = regexp.MustCompile(`^[0-9a-f]{64}$`)
	commitRE   = regexp.MustCompile(`^[0-9a-fA-F]{4,64}$`)
)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// Name checks an app, environment or node name: 1-63 characters of a-z, 0-9
// and '-', starting and ending with a letter or digit. kind names the thing
// in the error ("app name").
func Name(kind, s string) error {
	switch {
	case s == "":
		return invalid("%s is empty: use 1-%d characters a-z, 0-9 and '-'", kind, MaxNameLen)
	case len(s) > MaxNameLen:
		return invalid("%s %q is %d characters long: the limit is %d", kind, s, len(s), MaxNameLen)
	case !nameRE.MatchString(s):
		return invalid("%s %q: use lower-case letters a-z, digits 0-9 and '-', starting and ending with a letter or digit", kind, s)
	}
	return nil
}

// Version checks a release version: 1-128 characters of letters, digits and
// ". _ + -", starting with a letter or digit. Semantic versions (1.2.3,
// v1.2.3-rc.1+build) fit.
func Version(s string) error {
	switch {
	case s == "":
		return invalid("version is empty: use 1-%d characters of letters, digits and . _ + -", MaxVersionLen)
	case len(s) > MaxVersionLen:
		return invalid("version %q is %d characters long: the limit is %d", s, len(s), MaxVersionLen)
	case !versionRE.MatchString(s):
		return invalid("version %q: use letters, digits and . _ + -, starting with a letter or digit", s)
	}
	return nil
}

// Description checks a free-text description.
func Description(s string) error {
	if len(s) > MaxDescriptionLen {
		return invalid("description is %d bytes long: the limit is %d", len(s), MaxDescriptionLen)
	}
	return nil
}

// Notes checks release notes.
func Notes(s string) error {
	if len(s) > MaxNotesLen {
		return invalid("notes are %d bytes long: the limit is %d", len(s), MaxNotesLen)
	}
	return nil
}

// Labels checks a label or selector map. kind names it in errors ("label",
// "selector"). required says whether an empty map is refused.
func Labels(kind string, m map[string]string, required bool) error {
	if len(m) == 0 {
		if required {
			return invalid("%s is empty: give at least one KEY=VALUE", kind)
		}
		return nil
	}
	if len(m) > MaxLabels {
		return invalid("%d %s pairs: the limit is %d", len(m), kind, MaxLabels)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys) // report the same first error every time
	for _, k := range keys {
		v := m[k]
		switch {
		case k == "":
			return invalid("%s has an empty key", kind)
		case len(k) > MaxLabelKeyLen:
			return invalid("%s key %q is %d characters long: the limit is %d", kind, k, len(k), MaxLabelKeyLen)
		case !labelKeyRE.MatchString(k):
			return invalid("%s key %q: use letters, digits and . _ / -, starting and ending with a letter or digit", kind, k)
		case len(v) > MaxLabelValueLen:
			return invalid("%s %s: value is %d characters long: the limit is %d", kind, k, len(v), MaxLabelValueLen)
		case !labelValRE.MatchString(v):
			return invalid("%s %s=%q: values may hold letters, digits and . _ : / @ + -", kind, k, v)
		}
	}
	return nil
}

// SHA256 checks a hex sha256 digest and returns it in lower case.
func SHA256(s string) (string, error) {
	l := strings.ToLower(strings.TrimSpace(s))
	if l == "" {
		return "", invalid("sha256 is empty: give the artifact's sha256 as 64 hex digits (sha256sum FILE)")
	}
	if !sha256RE.MatchString(l) {
		return "", invalid("sha256 %q is not 64 hex digits (sha256sum FILE prints it)", s)
	}
	return l, nil
}

// Commit checks an optional source revision.
func Commit(s string) error {
	if s != "" && !commitRE.MatchString(s) {
		return invalid("commit %q is not a hex revision of 4-64 digits", s)
	}
	return nil
}

// ArtifactURL checks where agents will fetch an artifact from: an absolute
// https://, http:// or file:// URL.
func ArtifactURL(s string) error {
	if s == "" {
		return invalid("artifact URL is empty: give an https://, http:// or file:// URL, or upload a file")
	}
	if len(s) > MaxURLLen {
		return invalid("artifact URL is %d characters long: the limit is %d", len(s), MaxURLLen)
	}
	u, err := url.Parse(s)
	if err != nil {
		return invalid("artifact URL %q does not parse: %v", s, errors.Unwrap(err))
	}
	switch u.Scheme {
	case "https", "http":
		if u.Host == "" || u.Hostname() == "" {
			return invalid("artifact URL %q has no host", s)
		}
		if u.User != nil {
			return invalid("artifact URL %q carries credentials: they would be stored and shown to everyone; serve the artifact without them", s)
		}
	case "rel":
		// An artifact in the cluster's own store: rel://sha256/<hex>.
		if u.Host != "sha256" || !sha256RE.MatchString(strings.TrimPrefix(u.Path, "/")) {
			return invalid("artifact URL %q: artifacts in the cluster's store are rel://sha256/<64 hex digits>; upload a file with --artifact PATH", s)
		}
	case "file":
		if u.Host != "" && u.Host != "localhost" {
			return invalid("artifact URL %q names host %q: file URLs are local, write file:///path", s, u.Host)
		}
		if u.Path == "" || !strings.HasPrefix(u.Path, "/") {
			return invalid("artifact URL %q has no absolute path: write file:///path/to/artifact", s)
		}
	case "":
		return invalid("artifact URL %q has no scheme: give an https://, http:// or file:// URL", s)
	default:
		return invalid("artifact URL %q: scheme %q is not supported; use https, http or file", s, u.Scheme)
	}
	return nil
}

// RequestID checks a request id (the rel-request-id metadata): 1-64
// printable ASCII characters without spaces.
func RequestID(s string) error {
	if s == "" || len(s) > reqid.MaxLen {
		return invalid("request id (%s metadata) is %d bytes long: want 1-%d printable ASCII characters", reqid.MetadataKey, len(s), reqid.MaxLen)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c > '~' {
			return invalid("request id (%s metadata) %q: want printable ASCII characters without spaces, found byte %#x at %d", reqid.MetadataKey, s, c, i)
		}
	}
	return nil
}
