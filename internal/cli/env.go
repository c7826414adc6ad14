package cli

import (
	"context"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

func (r *runner) envCommand() *cobra.Command {
	return noun("env",
		"Create, list and show environments",
		`An environment selects hosts by agent labels: a host belongs to the
environment when every selector pair matches one of its labels.`,
		`  relctl env create prod --selector tier=prod,region=eu
  relctl env list
  relctl env show prod`,
		r.envCreateCommand(),
		r.envListCommand(),
		r.envShowCommand(),
	)
}

func (r *runner) envCreateCommand() *cobra.Command {
	var (
		description string
		selector    []string
	)
	cmd := &cobra.Command{
		Use:   "create NAME --selector KEY=VALUE[,KEY=VALUE...]",
		Short: "Create an environment",
		Long: `Create an environment named NAME whose hosts are those carrying every
KEY=VALUE label of --selector. --selector is required; give several pairs
comma-separated or repeat the flag. relctl only checks the KEY=VALUE syntax;
the server decides which keys and values are valid.`,
		Example: `  relctl env create prod --selector tier=prod
  relctl env create prod-eu --selector tier=prod,region=eu --description "Production, Europe"
  relctl env create canary --selector tier=prod --selector canary=true`,
		Args:              exactArgs("NAME"),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: r.do(func(ctx context.Context, args []string) error {
			sel, err := parseKeyValues("selector", selector)
			if err != nil {
				return err
			}
			var resp *relv1.CreateEnvironmentResponse
			_, err = r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
				resp, err = relv1.NewControlServiceClient(cc).CreateEnvironment(ctx, &relv1.CreateEnvironmentRequest{
					Name:        args[0],
					Description: description,
					Selector:    sel,
				}, opts...)
				return err
			})
			if err != nil {
				return err
			}
			env := resp.GetEnvironment()
			return r.printer().created("environment", env.GetName(), resp.GetIndex(), toEnvironmentJSON(env))
		}),
	}
	cmd.Flags().StringVar(&description, "description", "", "`TEXT` saying what the environment is, for people")
	cmd.Flags().StringArrayVar(&selector, "selector", nil, "host labels `KEY=VALUE[,KEY=VALUE...]` to select (required, repeatable)")
	_ = cmd.MarkFlagRequired("selector")
	return cmd
}

func (r *runner) envListCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List environments",
		Long: `List every environment with its selector. The answer comes from the replica
of the server asked; add --consistent to read from the leader instead.`,
		Example: `  relctl env list
  relctl env list -o json`,
		Args:              exactArgs(),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: r.do(func(ctx context.Context, _ []string) error {
			var resp *relv1.ListEnvironmentsResponse
			_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
				resp, err = relv1.NewControlServiceClient(cc).ListEnvironments(ctx,
					&relv1.ListEnvironmentsRequest{Read: r.readOptions()}, opts...)
				return err
			})
			if err != nil {
				return err
			}
			return r.printer().environments(resp.GetEnvironments())
		}),
	}
}
