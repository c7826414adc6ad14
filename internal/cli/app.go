package cli

import (
	"context"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

func (r *runner) appCommand() *cobra.Command {
	return noun("app",
		"Create, update (lifecycle) and list apps",
		`An app is a piece of software that Rel releases: a name that releases
hang off. Create the app before its first release.`,
		`  relctl app create web --description "Public website"
  relctl app list`,
		r.appCreateCommand(),
		r.appUpdateCommand(),
		r.appListCommand(),
	)
}

func (r *runner) appCreateCommand() *cobra.Command {
	var description, lifecycle string
	cmd := &cobra.Command{
		Use:   "create NAME",
		Short: "Create an app",
		Long: `Create an app named NAME. The server checks the name and refuses one that
already exists (exit code 1).`,
		Example: `  relctl app create web
  relctl app create web --description "Public website"
  relctl app create web --lifecycle std
  relctl -o json app create api`,
		Args:              exactArgs("NAME"),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: r.do(func(ctx context.Context, args []string) error {
			var resp *relv1.CreateAppResponse
			_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
				resp, err = relv1.NewControlServiceClient(cc).CreateApp(ctx, &relv1.CreateAppRequest{
					Name:        args[0],
					Description: description,
					Lifecycle:   lifecycle,
				}, opts...)
				return err
			})
			if err != nil {
				return err
			}
			app := resp.GetApp()
			return r.printer().created("app", app.GetName(), resp.GetIndex(), toAppJSON(app))
		}),
	}
	cmd.Flags().StringVar(&description, "description", "", "`TEXT` saying what the app is, for people")
	cmd.Flags().StringVar(&lifecycle, "lifecycle", "", "the `LIFECYCLE` its deploy rollouts follow ('relctl lifecycle list'); an unknown one is refused")
	return cmd
}

func (r *runner) appListCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List apps",
		Long: `List every app. The answer comes from the replica of the server asked;
add --consistent to read from the leader instead.`,
		Example: `  relctl app list
  relctl app list --consistent -o json`,
		Args:              exactArgs(),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: r.do(func(ctx context.Context, _ []string) error {
			apps, err := r.listApps(ctx)
			if err != nil {
				return err
			}
			return r.printer().apps(apps)
		}),
	}
}

func (r *runner) readOptions() *relv1.ReadOptions {
	return &relv1.ReadOptions{Consistent: r.consistent}
}

func (r *runner) listApps(ctx context.Context) ([]*relv1.App, error) {
	var resp *relv1.ListAppsResponse
	_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
		resp, err = relv1.NewControlServiceClient(cc).ListApps(ctx, &relv1.ListAppsRequest{Read: r.readOptions()}, opts...)
		return err
	})
	return resp.GetApps(), err
}

// completeApp suggests app names for an APP argument.
func (r *runner) completeApp(cmd *cobra.Command, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	return r.complete(cmd, toComplete, func(ctx context.Context) ([]string, error) {
		apps, err := r.listApps(ctx)
		names := make([]string, 0, len(apps))
		for _, a := range apps {
			names = append(names, a.GetName())
		}
		return names, err
	})
}
