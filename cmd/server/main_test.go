package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestRetentionFlags: --history-retention and --agent-retention must be
// positive; 0 would otherwise silently mean the default. --audit-retention
// may be 0 (off), not negative.
func TestRetentionFlags(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--history-retention", "0"}, "rel-server: --history-retention 0s: give a positive duration (the default is 2160h0m0s); retention cannot be turned off"},
		{[]string{"--agent-retention", "-5m"}, "rel-server: --agent-retention -5m0s: give a positive duration (the default is 72h0m0s); retention cannot be turned off"},
		// --audit-retention 0 keeps every record; only a negative one is wrong.
		{[]string{"--audit-retention", "-1h"}, "rel-server: --audit-retention -1h0m0s is negative: give how long archived audit records stay in the cluster (the default is 2160h0m0s), or 0 to keep every record"},
	}
	for _, tc := range cases {
		var stdout, stderr bytes.Buffer
		if code := run(tc.args, &stdout, &stderr); code != 2 || strings.TrimSpace(stderr.String()) != tc.want {
			t.Errorf("%v: exit %d, %q; want 2, %q", tc.args, code, stderr.String(), tc.want)
		}
	}
}
