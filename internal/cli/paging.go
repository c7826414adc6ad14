package cli

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/relhq/rel/internal/rollout"
)

// maxPage is the most items relctl asks for in one page (the servers' own
// maximum); the servers also cut a page short before it gets too big.
const maxPage = 1000

// allPages gets a list page by page, each request carrying the previous
// answer's next page token, until the last page or until limit items
// (0: all). fetch asks for at most size items (0: the server's default).
func allPages[T any](limit int, fetch func(token string, size uint32) ([]T, string, error)) ([]T, error) {
	var (
		out []T
		tok string
	)
	for {
		// Whole pages: following every page, fewer round trips (the
		// server still cuts a page before it passes its byte budget).
		size := uint32(maxPage)
		if limit > 0 {
			size = uint32(min(limit-len(out), maxPage))
		}
		items, next, err := fetch(tok, size)
		if err != nil {
			return nil, err
		}
		out = append(out, items...)
		if limit > 0 && len(out) >= limit {
			return out[:limit], nil
		}
		if next == "" {
			return out, nil
		}
		if next == tok || len(items) == 0 {
			return nil, fmt.Errorf("the server answered page token %q with no progress; try again", tok)
		}
		tok = next
	}
}

// limitFlag adds --limit to a list command.
func limitFlag(cmd *cobra.Command, limit *int) {
	cmd.Flags().IntVar(limit, "limit", 0, "show at most `N` items (0: all)")
}

// checkLimit refuses a negative --limit.
func checkLimit(limit int) error {
	if limit < 0 {
		return usagef("invalid --limit %d: want 0 (all) or more", limit)
	}
	return nil
}

// checkRolloutState refuses a --state that is no rollout state.
func checkRolloutState(s string) error {
	if s == "" || s == "active" {
		return nil
	}
	for _, st := range rollout.States {
		if s == st {
			return nil
		}
	}
	return usagef("invalid --state %q: want active or one of %s", s, strings.Join(rollout.States, ", "))
}
