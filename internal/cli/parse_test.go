package cli

import (
	"errors"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseKeyValues(t *testing.T) {
	tests := []struct {
		name    string
		values  []string
		want    map[string]string
		wantErr string // substring of the error; empty means success
	}{
		{name: "none", values: nil, want: map[string]string{}},
		{name: "one", values: []string{"tier=prod"}, want: map[string]string{"tier": "prod"}},
		{name: "comma list", values: []string{"tier=prod,region=eu"}, want: map[string]string{"tier": "prod", "region": "eu"}},
		{name: "repeated flag", values: []string{"tier=prod", "region=eu,zone=a"},
			want: map[string]string{"tier": "prod", "region": "eu", "zone": "a"}},
		{name: "empty value allowed", values: []string{"canary="}, want: map[string]string{"canary": ""}},
		{name: "value keeps later equals", values: []string{"q=a=b"}, want: map[string]string{"q": "a=b"}},
		{name: "missing equals", values: []string{"tier=prod,region"}, wantErr: `--label "region": missing "="`},
		{name: "empty key", values: []string{"=prod"}, wantErr: `--label "=prod": empty key`},
		{name: "duplicate in one list", values: []string{"a=1,a=2"}, wantErr: `--label "a=2": duplicate key "a"`},
		{name: "duplicate across flags", values: []string{"a=1", "b=2,a=3"}, wantErr: `duplicate key "a"`},
		{name: "trailing comma", values: []string{"a=1,"}, wantErr: `--label "a=1,": empty item`},
		{name: "empty flag value", values: []string{""}, wantErr: `--label "": empty item`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseKeyValues("label", tt.values)
			if tt.wantErr != "" {
				var ue *usageError
				if !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want usage error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestReadNotes(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ok := write("ok.md", []byte("Fixes the login loop.\n"))
	exact := write("exact.md", []byte(strings.Repeat("x", maxNotesFile)))
	big := write("big.md", []byte(strings.Repeat("x", maxNotesFile+1)))
	binary := write("bin", []byte{0xff, 0xfe, 0x00})
	missing := filepath.Join(dir, "missing.md")

	tests := []struct {
		name    string
		arg     string
		stdin   string
		want    string
		wantErr string
	}{
		{name: "empty", arg: "", want: ""},
		{name: "inline text", arg: "Fixes the login loop.", want: "Fixes the login loop."},
		{name: "file", arg: "@" + ok, want: "Fixes the login loop.\n"},
		{name: "exactly the limit", arg: "@" + exact, want: strings.Repeat("x", maxNotesFile)},
		{name: "stdin", arg: "@-", stdin: "from a pipe\n", want: "from a pipe\n"},
		{name: "literal at", arg: "@@channel is stable", want: "@channel is stable"},
		{name: "missing file", arg: "@" + missing, wantErr: "--notes @" + missing + ": open " + missing},
		{name: "too large", arg: "@" + big, wantErr: "larger than the 64 KiB limit"},
		{name: "directory", arg: "@" + dir, wantErr: "--notes @" + dir},
		{name: "not utf-8", arg: "@" + binary, wantErr: "not UTF-8 text"},
		{name: "no file name", arg: "@", wantErr: "missing file name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readNotes(tt.arg, strings.NewReader(tt.stdin))
			if tt.wantErr != "" {
				var ue *usageError
				if !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want usage error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseAppVersion(t *testing.T) {
	tests := []struct {
		arg          string
		app, version string
		wantErr      bool
	}{
		{arg: "web@1.2.3", app: "web", version: "1.2.3"},
		{arg: "web@1.2.3+build.7", app: "web", version: "1.2.3+build.7"},
		{arg: "web@v1@rc", app: "web", version: "v1@rc"},
		{arg: "web", wantErr: true},
		{arg: "web@", wantErr: true},
		{arg: "@1.2.3", wantErr: true},
		{arg: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.arg, func(t *testing.T) {
			app, version, err := parseAppVersion(tt.arg)
			if tt.wantErr {
				var ue *usageError
				if !errors.As(err, &ue) || !strings.Contains(err.Error(), "want APP@VERSION") {
					t.Fatalf("err = %v, want usage error asking for APP@VERSION", err)
				}
				return
			}
			if err != nil || app != tt.app || version != tt.version {
				t.Errorf("got (%q, %q, %v), want (%q, %q, nil)", app, version, err, tt.app, tt.version)
			}
		})
	}
}

func TestParseSince(t *testing.T) {
	now := time.Date(2025, 3, 4, 12, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		in, want, err string
	}{
		{in: "", want: "0001-01-01T00:00:00Z"},
		{in: "90m", want: "2025-03-04T10:30:00Z"},
		{in: "2025-03-01T08:00:00+02:00", want: "2025-03-01T06:00:00Z"},
		{in: "0s", err: "a duration must be positive"},
		{in: "3 days", err: `invalid --since "3 days": want a duration`},
		{in: "2025-03-01", err: "RFC 3339"},
	} {
		got, err := parseSince(tt.in, now)
		var ue *usageError
		switch {
		case tt.err != "":
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("parseSince(%q) = %v, %v; want a usage error with %q", tt.in, got, err, tt.err)
			}
		case err != nil || got.UTC().Format(time.RFC3339) != tt.want:
			t.Errorf("parseSince(%q) = %v, %v; want %s", tt.in, got, err, tt.want)
		}
	}
}
