package cli

import (
	"context"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

func (r *runner) envCommand() *cobra.Command {
	return noun("env",
		"Create, list, show, update and delete environments",
		`An environment selects hosts by agent labels: a host belongs to the
environment when every selector pair matches one of its labels.`,
		`  relctl env create prod --selector tier=prod,region=eu
  relctl env list
  relctl env show prod
  relctl env update prod --selector tier=prod,region=eu --dry-run
  relctl env delete old-staging`,
		r.envCreateCommand(),
		r.envListCommand(),
		r.envShowCommand(),
		r.envUpdateCommand(),
		r.envDeleteCommand(),
		r.envApprovalPolicyCommand(),
	)
}

func (r *runner) envCreateCommand() *cobra.Command {
	var (
		description     string
		selector        []string
		catchUp         string
		catchUpParallel uint32
		spec            specFlags
		cmd             *cobra.Command
	)
	cmd = &cobra.Command{
		Use:   "create NAME --selector KEY=VALUE[,KEY=VALUE...] [--catch-up auto|manual] [--catch-up-parallel N] [rollout spec flags]",
		Short: "Create an environment",
		Long: `Create an environment named NAME whose hosts are those carrying every
KEY=VALUE label of --selector. --selector is required; give several pairs
comma-separated or repeat the flag. relctl only checks the KEY=VALUE syntax;
the server decides which keys and values are valid.

An environment holds a release: that of its last rollout (or rollback) that
succeeded. With --catch-up auto (the default), a host that comes to match
the selector with nothing of an app, that is behind (it was away when the
last rollout ran), or that runs a release no rollout put there, is taken to
the current release by a catch_up rollout the leader starts, at most
--catch-up-parallel hosts at a time, health-gated and listed with the other
rollouts. Hosts that failed, and hosts on what a rollout to another
environment put there, are left alone. --catch-up manual leaves every host
as it is until a rollout says otherwise.

The rollout spec flags (--strategy, --canary, --waves, --wave-by,
--max-parallel, --bake, --approve-waves, --max-failures,
--progress-deadline, --auto-rollback; see "relctl rollout start --help")
set the environment's default spec: what "relctl release promote" rolls
out with. Without them promote uses rollout start's defaults.`,
		Example: `  relctl env create prod --selector tier=prod --strategy rolling --max-parallel 2 --bake 5m
  relctl env create prod --selector tier=prod
  relctl env create prod-eu --selector tier=prod,region=eu --description "Production, Europe"
  relctl env create canary --selector tier=prod --selector canary=true`,
		Args:              exactArgs("NAME"),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: r.do(func(ctx context.Context, args []string) error {
			sel, err := parseKeyValues("selector", selector)
			if err != nil {
				return err
			}
			if catchUp != "auto" && catchUp != "manual" {
				return usagef("--catch-up %q: use auto or manual", catchUp)
			}
			def, err := defaultSpec(cmd, &spec)
			if err != nil {
				return err
			}
			var resp *relv1.CreateEnvironmentResponse
			_, err = r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
				resp, err = relv1.NewControlServiceClient(cc).CreateEnvironment(ctx, &relv1.CreateEnvironmentRequest{
					Name:            args[0],
					Description:     description,
					Selector:        sel,
					CatchUpManual:   catchUp == "manual",
					CatchUpParallel: catchUpParallel,
					DefaultSpec:     def,
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
	cmd.Flags().StringVar(&catchUp, "catch-up", "auto", "`auto`: hosts that join or drift converge to the current release by themselves; manual: they do not")
	cmd.Flags().Uint32Var(&catchUpParallel, "catch-up-parallel", 1, "hosts a catch-up takes at a time (`N`)")
	spec.register(cmd)
	return cmd
}

// specFlagNames are the flags specFlags.register adds.
var specFlagNames = []string{"strategy", "canary", "waves", "wave-by", "max-parallel", "bake", "approve-waves", "max-failures", "progress-deadline", "auto-rollback"}

// defaultSpec is the environment default spec the rollout spec flags of
// env create or update give, or nil when none was given.
func defaultSpec(cmd *cobra.Command, f *specFlags) (*relv1.RolloutSpec, error) {
	for _, name := range specFlagNames {
		if cmd.Flags().Changed(name) {
			return f.spec(cmd)
		}
	}
	return nil, nil
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

func (r *runner) envUpdateCommand() *cobra.Command {
	var (
		description     string
		selector        []string
		dryRun          bool
		catchUp         string
		catchUpParallel uint32
		spec            specFlags
		cmd             *cobra.Command
	)
	cmd = &cobra.Command{
		Use:   "update ENV [--selector KEY=VALUE[,KEY=VALUE...]] [--description TEXT] [--catch-up auto|manual] [--catch-up-parallel N] [rollout spec flags] [--dry-run]",
		Short: "Change an environment's selector, description or catch-up",
		Long: `Change the selector or the description of environment ENV, and show
which hosts join it (the new selector matches them, the old did not) and
which leave it (the other way round), among the agents the cluster knows.
Give at least one of --selector (the whole new selector: it replaces the
old one), --description ("" clears it), --catch-up and --catch-up-parallel
(see "relctl env create --help"), and the rollout spec flags (they replace
the default spec "relctl release promote" uses, as a whole). A host that leaves the environment keeps
what it runs, and is no longer caught up.

With --dry-run nothing changes: relctl shows what the update would do.

A selector change is refused while a rollout to the environment is active
(its hosts were chosen by the old selector): wait until it finishes, or
abort it. A description change is always allowed.`,
		Example: `  relctl env update prod --selector tier=prod,region=eu --dry-run
  relctl env update prod --selector tier=prod,region=eu
  relctl env update prod --description "Production, Europe"
  relctl env update prod --catch-up manual
  relctl env update prod --selector tier=prod -o json`,
		Args:              exactArgs("ENV"),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: r.do(func(ctx context.Context, args []string) error {
			sel, err := parseKeyValues("selector", selector)
			if err != nil {
				return err
			}
			req := &relv1.UpdateEnvironmentRequest{Name: args[0], Selector: sel, DryRun: dryRun}
			if cmd.Flags().Changed("description") {
				req.Description = &description
			}
			if cmd.Flags().Changed("catch-up") {
				if catchUp != "auto" && catchUp != "manual" {
					return usagef("--catch-up %q: use auto or manual", catchUp)
				}
				req.CatchUp = &catchUp
			}
			if cmd.Flags().Changed("catch-up-parallel") {
				req.CatchUpParallel = &catchUpParallel
			}
			if req.DefaultSpec, err = defaultSpec(cmd, &spec); err != nil {
				return err
			}
			if len(sel) == 0 && req.Description == nil && req.CatchUp == nil && req.CatchUpParallel == nil && req.DefaultSpec == nil {
				return usagef("nothing to change: give --selector, --description, --catch-up, --catch-up-parallel or rollout spec flags")
			}
			var resp *relv1.UpdateEnvironmentResponse
			_, err = r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
				resp, err = relv1.NewControlServiceClient(cc).UpdateEnvironment(ctx, req, opts...)
				return err
			})
			if err != nil {
				return err
			}
			return r.printer().envUpdated(resp)
		}),
	}
	cmd.Flags().StringVar(&description, "description", "", "new `TEXT` saying what the environment is (\"\" clears it)")
	cmd.Flags().StringArrayVar(&selector, "selector", nil, "new host labels `KEY=VALUE[,KEY=VALUE...]` to select, replacing the old selector (repeatable)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "show which hosts would join and leave; change nothing")
	cmd.Flags().StringVar(&catchUp, "catch-up", "", "`auto` or manual: whether hosts that join or drift converge to the current release by themselves")
	cmd.Flags().Uint32Var(&catchUpParallel, "catch-up-parallel", 0, "hosts a catch-up takes at a time (`N`)")
	spec.register(cmd)
	return cmd
}

func (r *runner) envDeleteCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "delete ENV",
		Aliases: []string{"rm"},
		Short:   "Delete an environment",
		Long: `Delete environment ENV. Refused while a rollout of any app to it is
active: wait until it finishes, or abort it. Finished rollouts and the
history of its hosts stay.`,
		Example: `  relctl env delete old-staging
  relctl env delete old-staging -o json`,
		Args:              exactArgs("ENV"),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: r.do(func(ctx context.Context, args []string) error {
			var resp *relv1.DeleteEnvironmentResponse
			_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
				resp, err = relv1.NewControlServiceClient(cc).DeleteEnvironment(ctx, &relv1.DeleteEnvironmentRequest{Name: args[0]}, opts...)
				return err
			})
			if err != nil {
				return err
			}
			return r.printer().envDeleted(resp.GetName(), resp.GetIndex())
		}),
	}
}
