package textcut

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestTailAndHead(t *testing.T) {
	for _, tc := range []struct {
		name, in       string
		n              int
		tail, headWant string
	}{
		{"short", "short é", 1024, "short é", "short é"},
		{"ascii", "abcdef", 3, "def", "abc"},
		{"cut inside a character", "aé", 1, "", "a"},
		{"tail starts mid-character", "\xa9abc", 10, "abc", "\uFFFDabc"},
		{"invalid bytes", "a\xffb", 10, "a\uFFFDb", "a\uFFFDb"},
		{"multibyte at the cut", "ééé", 3, "é", "é"},
	} {
		if got := Tail(tc.in, tc.n); got != tc.tail {
			t.Errorf("%s: Tail(%q, %d) = %q, want %q", tc.name, tc.in, tc.n, got, tc.tail)
		}
		if got := Head(tc.in, tc.n); got != tc.headWant {
			t.Errorf("%s: Head(%q, %d) = %q, want %q", tc.name, tc.in, tc.n, got, tc.headWant)
		}
	}
	long := strings.Repeat("é", 1000) + "\xff"
	for _, n := range []int{0, 1, 2, 1023, 1024} {
		if s := Tail(long, n); len(s) > n || !utf8.ValidString(s) {
			t.Errorf("Tail to %d: %d bytes, valid %v", n, len(s), utf8.ValidString(s))
		}
		if s := Head(long, n); len(s) > n || !utf8.ValidString(s) {
			t.Errorf("Head to %d: %d bytes, valid %v", n, len(s), utf8.ValidString(s))
		}
	}
}
