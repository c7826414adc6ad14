package cli

import (
	"context"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

func (r *runner) historyCommand() *cobra.Command {
	var env string
	cmd := &cobra.Command{
		Use:   "history APP [--env ENV]",
		Short: "Show which version of an app ran on which host, and when",
		Long: `Show, for every host, each version of APP that ran healthy there: from when
to when (TO is "now" for the version running), for how long, and the
rollout that brought it. With --env, only the hosts environment ENV
selects. The answer comes from the replica of the server asked; add
--consistent to read from the leader instead.`,
		Example: `  relctl history web
  relctl history web --env prod
  relctl history web -o json | jq -r '.entries[] | select(.current) | "\(.agent_id) \(.version)"'`,
		Args:              exactArgs("APP"),
		ValidArgsFunction: r.completeFirstApp,
		RunE: r.do(func(ctx context.Context, args []string) error {
			var resp *relv1.HistoryResponse
			_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
				resp, err = relv1.NewControlServiceClient(cc).History(ctx,
					&relv1.HistoryRequest{Read: r.readOptions(), App: args[0], Environment: env}, opts...)
				return err
			})
			if err != nil {
				return err
			}
			return r.printer().history(resp.GetEntries())
		}),
	}
	cmd.Flags().StringVar(&env, "env", "", "only the hosts environment `ENV` selects")
	_ = cmd.RegisterFlagCompletionFunc("env", r.completeEnvFlag)
	return cmd
}
