package cli

import (
	"context"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

func (r *runner) agentCommand() *cobra.Command {
	return noun("agent",
		"List and inspect the agents on production hosts",
		`An agent is a host running rel-agent. It connects to a rel-server with its
labels and host facts, reports what it runs per app, and sends heartbeats
with the host's load. Environments select agents by their labels.`,
		`  relctl agent list --env prod
  relctl agent show web-1`,
		r.agentListCommand(),
		r.agentShowCommand(),
	)
}

func (r *runner) agentListCommand() *cobra.Command {
	var env string
	cmd := &cobra.Command{
		Use:     "list [--env ENV]",
		Aliases: []string{"ls"},
		Short:   "List agents with their apps and load",
		Long: `List every agent, or only those environment --env selects. LAST SEEN is the
last heartbeat of a connected agent and the disconnection of one that is
not. APPS lists app@version:phase for each app the agent reports. CPU%,
MEM% and DISK FREE are the latest heartbeat's, and empty when the server
holding the agent's stream did not answer. The answer comes from the
replica of the server asked; add --consistent to read from the leader
instead.`,
		Example: `  relctl agent list
  relctl agent list --env prod
  relctl agent list -o json | jq -r '.agents[] | select(.connected | not) | .id'`,
		Args:              exactArgs(),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: r.do(func(ctx context.Context, _ []string) error {
			agents, err := r.listAgents(ctx, env)
			if err != nil {
				return err
			}
			return r.printer().agents(agents)
		}),
	}
	cmd.Flags().StringVar(&env, "env", "", "only the agents environment `ENV` selects")
	_ = cmd.RegisterFlagCompletionFunc("env", r.completeEnvFlag)
	return cmd
}

func (r *runner) agentShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "show ID",
		Short: "Show one agent in full",
		Long: `Show agent ID: its labels, version, host facts, connection, the
environments that select it, its load, and every app it reports, with the
output of a failing install hook. The answer comes from the replica of the
server asked; add --consistent to read from the leader instead.`,
		Example: `  relctl agent show web-1
  relctl agent show web-1 -o json | jq '.apps[] | select(.phase == "failed") | .output'`,
		Args:              exactArgs("ID"),
		ValidArgsFunction: r.completeAgentID,
		RunE: r.do(func(ctx context.Context, args []string) error {
			var resp *relv1.GetAgentResponse
			_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
				resp, err = relv1.NewControlServiceClient(cc).GetAgent(ctx,
					&relv1.GetAgentRequest{Read: r.readOptions(), Id: args[0]}, opts...)
				return err
			})
			if err != nil {
				return err
			}
			return r.printer().agent(resp.GetAgent())
		}),
	}
}

func (r *runner) listAgents(ctx context.Context, env string) ([]*relv1.AgentStatus, error) {
	var resp *relv1.ListAgentsResponse
	_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
		resp, err = relv1.NewControlServiceClient(cc).ListAgents(ctx,
			&relv1.ListAgentsRequest{Read: r.readOptions(), Environment: env}, opts...)
		return err
	})
	return resp.GetAgents(), err
}

// completeAgentID suggests agent ids for an ID argument.
func (r *runner) completeAgentID(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return r.complete(cmd, toComplete, func(ctx context.Context) ([]string, error) {
		agents, err := r.listAgents(ctx, "")
		ids := make([]string, 0, len(agents))
		for _, a := range agents {
			ids = append(ids, a.GetAgent().GetId())
		}
		return ids, err
	})
}
