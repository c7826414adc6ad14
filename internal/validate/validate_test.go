package validate

import (
	"errors"
	"strings"
	"testing"
)

func TestName(t *testing.T) {
	tests := []struct {
		in      string
		wantErr string // substring; "" means valid
	}{
		{"web", ""},
		{"a", ""},
		{"web-2", ""},
		{strings.Repeat("a", 63), ""},
		{"", "is empty"},
		{strings.Repeat("a", 64), "the limit is 63"},
		{"Web", "lower-case"},
		{"-web", "starting and ending"},
		{"web-", "starting and ending"},
		{"we_b", "lower-case"},
		{"we b", "lower-case"},
		{"wéb", "lower-case"},
	}
	for _, tt := range tests {
		err := Name("app name", tt.in)
		checkErr(t, "Name("+tt.in+")", err, tt.wantErr)
	}
}

func TestVersion(t *testing.T) {
	tests := []struct{ in, wantErr string }{
		{"1.2.3", ""},
		{"v1.2.3-rc.1+build.5", ""},
		{"2026_11_25", ""},
		{"", "is empty"},
		{".1", "starting with"},
		{"1.2 3", "use letters"},
		{"1/2", "use letters"},
		{strings.Repeat("1", 129), "the limit is 128"},
	}
	for _, tt := range tests {
		checkErr(t, "Version("+tt.in+")", Version(tt.in), tt.wantErr)
	}
}

func TestLabels(t *testing.T) {
	tests := []struct {
		name     string
		in       map[string]string
		required bool
		wantErr  string
	}{
		{"ok", map[string]string{"zone": "eu-1", "tier": "web"}, true, ""},
		{"empty value ok", map[string]string{"canary": ""}, false, ""},
		{"empty optional", nil, false, ""},
		{"empty required", nil, true, "at least one"},
		{"empty key", map[string]string{"": "x"}, false, "empty key"},
		{"bad key", map[string]string{"a b": "x"}, false, `key "a b"`},
		{"bad value", map[string]string{"a": "x y"}, false, `a="x y"`},
		{"long value", map[string]string{"a": strings.Repeat("x", 256)}, false, "the limit is 255"},
	}
	for _, tt := range tests {
		checkErr(t, tt.name, Labels("selector", tt.in, tt.required), tt.wantErr)
	}
}

func TestSHA256(t *testing.T) {
	good := strings.Repeat("ab", 32)
	got, err := SHA256(strings.ToUpper(good))
	if err != nil || got != good {
		t.Fatalf("SHA256(upper) = %q, %v; want %q", got, err, good)
	}
	for _, in := range []string{"", "abc", strings.Repeat("g", 64), good + "0"} {
		_, err := SHA256(in)
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("SHA256(%q) err = %v, want ErrInvalid", in, err)
		}
	}
}

func TestArtifactURL(t *testing.T) {
	tests := []struct{ in, wantErr string }{
		{"https://example.com/web-1.2.3.tar.gz", ""},
		{"http://10.0.0.1:8080/a.tar", ""},
		{"file:///srv/artifacts/a.tar.gz", ""},
		{"file://localhost/srv/a.tar", ""},
		{"rel://sha256/" + strings.Repeat("ab", 32), ""},
		{"rel://sha256/abc", "rel://sha256/<64 hex digits>"},
		{"rel://other/" + strings.Repeat("ab", 32), "rel://sha256/<64 hex digits>"},
		{"", "is empty"},
		{"example.com/a.tar", "no scheme"},
		{"ftp://example.com/a", `scheme "ftp"`},
		{"https:///a.tar", "no host"},
		{"https://user:pw@example.com/a", "credentials"},
		{"file://host/a", "file URLs are local"},
		{"file:a.tar", "no absolute path"},
		{"https://exa mple.com/", "does not parse"},
	}
	for _, tt := range tests {
		checkErr(t, "ArtifactURL("+tt.in+")", ArtifactURL(tt.in), tt.wantErr)
	}
}

func TestCommitAndText(t *testing.T) {
	checkErr(t, "commit ok", Commit("deadbeef"), "")
	checkErr(t, "commit empty", Commit(""), "")
	checkErr(t, "commit bad", Commit("main"), "not a hex revision")
	checkErr(t, "notes", Notes(strings.Repeat("x", MaxNotesLen+1)), "the limit is 65536")
	checkErr(t, "description", Description(strings.Repeat("x", MaxDescriptionLen+1)), "the limit is 1024")
}

func checkErr(t *testing.T, name string, err error, want string) {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Errorf("%s: unexpected error %v", name, err)
		}
		return
	}
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		return
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("%s: err = %q, want it to contain %q", name, err, want)
	}
}
