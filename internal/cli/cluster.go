package cli

import (
	"context"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

func (r *runner) clusterCommand() *cobra.Command {
	return noun("cluster",
		"Inspect and change control-plane membership",
		`The control plane is a raft cluster of rel-servers. "members" shows the
raft configuration as the leader sees it, with each member's own status;
"remove" takes a node out of it.`,
		`  relctl cluster members
  relctl cluster remove node-3`,
		r.clusterMembersCommand(),
		r.clusterRemoveCommand(),
	)
}

func (r *runner) clusterMembersCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "members",
		Short: "List the control-plane members and their status",
		Long: `List the raft configuration as the leader sees it. ROLE is leader,
follower, candidate, or unreachable when the member did not answer its
status probe; an ERROR column then says why. LEADER marks the leader with *.
SUFFRAGE is Voter, or Nonvoter for a server that joined and is still
catching up with the log (the leader makes it a voter once it has).
APPLIED INDEX is the last raft entry the member applied: a member far behind
the leader is lagging.`,
		Example: `  relctl cluster members
  relctl cluster members -o json | jq -r '.members[] | select(.leader) | .id'`,
		Args:              exactArgs(),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: r.do(func(ctx context.Context, _ []string) error {
			members, err := r.listMembers(ctx)
			if err != nil {
				return err
			}
			return r.printer().members(members)
		}),
	}
}

func (r *runner) clusterRemoveCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "remove NODE",
		Short: "Remove a node from the control plane",
		Long: `Remove the node with id NODE from the raft configuration. Remove a node
before decommissioning it for good: a cluster that still counts a dead node
needs more live members to reach a quorum.`,
		Example: `  relctl cluster remove node-3`,
		Args:    exactArgs("NODE"),
		ValidArgsFunction: func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			if len(args) > 0 {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			return r.complete(cmd, toComplete, func(ctx context.Context) ([]string, error) {
				members, err := r.listMembers(ctx)
				ids := make([]string, 0, len(members))
				for _, m := range members {
					ids = append(ids, m.GetId())
				}
				return ids, err
			})
		},
		RunE: r.do(func(ctx context.Context, args []string) error {
			var resp *relv1.RemoveResponse
			_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
				resp, err = relv1.NewClusterServiceClient(cc).Remove(ctx, &relv1.RemoveRequest{Id: args[0]}, opts...)
				return err
			})
			if err != nil {
				return err
			}
			return r.printer().removed(args[0], resp.GetIndex())
		}),
	}
}

func (r *runner) listMembers(ctx context.Context) ([]*relv1.Member, error) {
	var resp *relv1.MembersResponse
	_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
		resp, err = relv1.NewClusterServiceClient(cc).Members(ctx, &relv1.MembersRequest{}, opts...)
		return err
	})
	return resp.GetMembers(), err
}
