package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestRetentionFlags: --history-retention and --agent-retention must be
// positive; 0 would otherwise silently mean the default.
func TestRetentionFlags(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--history-retention", "0"}, "rel-server: --history-retention 0s: give a positive duration (the default is 2160h0m0s); retention cannot be turned off"},
		{[]string{"--agent-retention", "-5m"}, "rel-server: --agent-retention -5m0s: give a positive duration (the default is 72h0m0s); retention cannot be turned off"},
	}
	for _, tc := range cases {
		var stdout, stderr bytes.Buffer
		if code := run(tc.args, &stdout, &stderr); code != 2 || strings.TrimSpace(stderr.String()) != tc.want {
			t.Errorf("%v: exit %d, %q; want 2, %q", tc.args, code, stderr.String(), tc.want)
		}
	}
}
