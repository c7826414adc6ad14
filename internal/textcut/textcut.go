// Package textcut cuts text to a byte budget without breaking UTF-8:
// hook output and failure reasons end up in protobuf strings (which must
// be valid UTF-8) and in raft entries (which must stay small).
package textcut

import (
	"strings"
	"unicode/utf8"
)

// Tail is the end of s, at most n bytes, as valid UTF-8 that starts on a
// character boundary: a character cut by the start of s is dropped,
// invalid bytes become U+FFFD, and if that made it longer than n the front
// is cut again at a boundary.
func Tail(s string, n int) string {
	for i := 0; i < utf8.UTFMax-1 && len(s) > 0 && !utf8.RuneStart(s[0]); i++ {
		s = s[1:]
	}
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	s = s[len(s)-n:]
	for len(s) > 0 && !utf8.RuneStart(s[0]) {
		s = s[1:]
	}
	return s
}

// Head is the start of s, at most n bytes, as valid UTF-8 ending on a
// character boundary.
func Head(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
