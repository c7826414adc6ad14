package server_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/relhq/rel/internal/server"
)

// TestConfigRetentionInterval: --retention-interval (for tests and
// benches) refuses a negative duration, which would run retention back to
// back, with an error naming the flag; zero means the default.
func TestConfigRetentionInterval(t *testing.T) {
	for _, tc := range []struct {
		interval time.Duration
		wantErr  bool
	}{
		{0, false},
		{time.Second, false},
		{-time.Second, true},
	} {
		cfg := server.Config{NodeID: "s1", DataDir: t.TempDir(), CAFile: "ca.pem", CertFile: "s1.pem", KeyFile: "s1-key.pem",
			RetentionInterval: tc.interval}
		err := cfg.Validate()
		if tc.wantErr {
			if !errors.Is(err, server.ErrConfig) || !strings.Contains(err.Error(), "--retention-interval") {
				t.Errorf("interval %s: %v, want ErrConfig naming --retention-interval", tc.interval, err)
			}
		} else if err != nil {
			t.Errorf("interval %s: %v", tc.interval, err)
		}
	}
}
