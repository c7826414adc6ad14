package cli

import (
	"context"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

func (r *runner) historyCommand() *cobra.Command {
	var (
		env, host, since string
		limit            int
	)
	cmd := &cobra.Command{
		Use:   "history APP [--env ENV] [--host HOST] [--since DURATION|RFC3339] [--limit N]",
		Short: "Show which versions of an app ran or failed on which host, and when",
		Long: `Show, for every host, each version of APP it ran or tried: from when to
when (TO is "now" for the version the host is on), for how long, how it
ended and the rollout that brought it. A row starts when the host switches
to the version. OUTCOME is starting (not healthy yet), running, replaced
(by a deploy), rolled_back (replaced by a rollback), or failed, with the
failure's reason; a version that failed before the switch (download,
install) has a row of its own, its attempt, while the version before it
keeps running. "failed, rolled back" is a failed version a rollback
replaced. ROLLOUT says "(rollback)" for a rollback's rollout.

Entries that ended longer ago than the servers' --history-retention (90
days by default) are folded into one line per host, printed before the
table: "web-1 before 2026-08-29: 412 versions, 3 failed, 1 rolled back,
last 1.4.2" (in JSON, "summaries"; --limit counts these lines too). The row of the version a host runs now
is never folded. The history of a host removed by --agent-retention stays,
its last row closed when it was removed.

With --env, only the hosts environment ENV selects; with --host, only
that host; with --since, only rows still open or ending at or after that
time (a duration back from now, e.g. 24h, or an RFC 3339 time). The
filters run on the server, which answers in pages that relctl follows;
--limit stops after N rows (the oldest). The answer comes from the replica
of the server asked; add --consistent to read from the leader instead.`,
		Example: `  relctl history web
  relctl history web --env prod --since 24h
  relctl history web --host web-1 --since 2025-03-04T10:00:00Z
  relctl history web -o json | jq -r '.entries[] | select(.outcome == "failed") | "\(.agent_id) \(.version) \(.reason)"'`,
		Args:              exactArgs("APP"),
		ValidArgsFunction: r.completeFirstApp,
		RunE: r.do(func(ctx context.Context, args []string) error {
			if err := checkLimit(limit); err != nil {
				return err
			}
			from, err := parseSince(since, time.Now())
			if err != nil {
				return err
			}
			req := &relv1.HistoryRequest{Read: r.readOptions(), App: args[0], Environment: env, Host: host}
			if !from.IsZero() {
				req.SinceUnixNano = from.UnixNano()
			}
			// Pages hold the summaries of folded history first, then
			// entries; --limit counts both.
			type item struct {
				sum   *relv1.HistorySummary
				entry *relv1.HistoryEntry
			}
			items, err := allPages(limit, func(tok string, size uint32) ([]item, string, error) {
				req.PageToken, req.PageSize = tok, size
				var resp *relv1.HistoryResponse
				_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
					resp, err = relv1.NewControlServiceClient(cc).History(ctx, req, opts...)
					return err
				})
				var page []item
				for _, m := range resp.GetSummaries() {
					page = append(page, item{sum: m})
				}
				for _, e := range resp.GetEntries() {
					page = append(page, item{entry: e})
				}
				return page, resp.GetNextPageToken(), err
			})
			if err != nil {
				return err
			}
			var (
				summaries []*relv1.HistorySummary
				entries   []*relv1.HistoryEntry
			)
			for _, it := range items {
				if it.sum != nil {
					summaries = append(summaries, it.sum)
				} else {
					entries = append(entries, it.entry)
				}
			}
			return r.printer().history(summaries, entries)
		}),
	}
	cmd.Flags().StringVar(&env, "env", "", "only the hosts environment `ENV` selects")
	cmd.Flags().StringVar(&host, "host", "", "only host `HOST` (an agent id)")
	cmd.Flags().StringVar(&since, "since", "", "only rows open or ending since `WHEN`: a duration back from now (24h) or an RFC 3339 time")
	limitFlag(cmd, &limit)
	_ = cmd.RegisterFlagCompletionFunc("env", r.completeEnvFlag)
	return cmd
}
