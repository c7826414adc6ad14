package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

const strategyAllAtOnce = "all-at-once"

// watchRetryDelay is how long "rollout status --watch" waits before asking
// again when an answer brought no change, so that a server that does not
// hold the request (or stops holding it early) is not asked in a busy loop.
var watchRetryDelay = time.Second

// terminalRolloutStates are the states a rollout does not leave.
var terminalRolloutStates = []string{"succeeded", "failed", "rolled_back", "aborted"}

func isTerminalRolloutState(state string) bool { return slices.Contains(terminalRolloutStates, state) }

func (r *runner) rolloutCommand() *cobra.Command {
	return noun("rollout",
		"Start rollouts and follow their progress",
		`A rollout takes a release to every host of an environment: each host's
agent downloads, installs, starts and verifies the release and reports each
phase. The rollout ends succeeded when every host is healthy on the new
version, or failed.`,
		`  relctl rollout start web@1.2.3 --env prod
  relctl rollout status 01J8X4W2QZ --watch
  relctl rollout list --app web`,
		r.rolloutStartCommand(),
		r.rolloutStatusCommand(),
		r.rolloutListCommand(),
	)
}

func (r *runner) rolloutStartCommand() *cobra.Command {
	var env, strategy string
	cmd := &cobra.Command{
		Use:   "start APP@VERSION --env ENV",
		Short: "Start rolling a release out to an environment",
		Long: `Start rolling release VERSION of APP out to the hosts environment ENV selects,
and print the rollout's id and the hosts it targets with the version each ran
before. The command returns once the rollout is started; follow it with
"relctl rollout status ID --watch".

--strategy says how the rollout proceeds; all-at-once (every host at once) is
the only strategy for now. relctl passes it on; the server validates the
release, the environment and the strategy.`,
		Example: `  relctl rollout start web@1.2.3 --env prod
  id=$(relctl rollout start web@1.2.3 --env prod -o json | jq -r .id)
  relctl rollout status "$id" --watch`,
		Args:              exactArgs("APP@VERSION"),
		ValidArgsFunction: r.completeAppVersion,
		RunE: r.do(func(ctx context.Context, args []string) error {
			app, version, err := parseAppVersion(args[0])
			if err != nil {
				return err
			}
			var resp *relv1.StartRolloutResponse
			_, err = r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
				resp, err = relv1.NewControlServiceClient(cc).StartRollout(ctx, &relv1.StartRolloutRequest{
					App:         app,
					Version:     version,
					Environment: env,
					Spec:        &relv1.RolloutSpec{Strategy: strategy},
				}, opts...)
				return err
			})
			if err != nil {
				return err
			}
			return r.printer().rolloutStarted(resp.GetRollout(), resp.GetIndex())
		}),
	}
	cmd.Flags().StringVar(&env, "env", "", "`ENV`: the environment to roll out to (required)")
	cmd.Flags().StringVar(&strategy, "strategy", strategyAllAtOnce, "rollout `STRATEGY`: all-at-once")
	_ = cmd.MarkFlagRequired("env")
	_ = cmd.RegisterFlagCompletionFunc("env", r.completeEnvFlag)
	_ = cmd.RegisterFlagCompletionFunc("strategy", cobra.FixedCompletions(
		[]string{strategyAllAtOnce}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

func (r *runner) rolloutStatusCommand() *cobra.Command {
	var watch bool
	cmd := &cobra.Command{
		Use:   "status ID [--watch]",
		Short: "Show a rollout and the progress of each of its hosts",
		Long: `Show rollout ID: its release, environment, state, start and end, then one
line per host (PHASE is pending until the host reports for this rollout,
then downloading, installing, starting, verifying, healthy or failed) and
the number of hosts per phase.

With --watch, relctl keeps the request open at the server until the rollout
changes, prints it again (after a blank line; with -o json, one JSON document
per change) and stops when the rollout is over: succeeded, failed,
rolled_back or aborted. It then exits 0 if the rollout succeeded and 1
otherwise, so scripts can gate on it. --timeout applies to each request
rather than to the whole watch: a wait that brings no change within it is
simply renewed, so a watch lasts as long as the rollout. Without --watch
the exit code only says whether the status could be read.

The answer comes from the replica of the server asked; add --consistent to
read from the leader instead.`,
		Example: `  relctl rollout status 01J8X4W2QZ
  relctl rollout status 01J8X4W2QZ --watch && echo deployed
  relctl rollout status 01J8X4W2QZ -o json | jq '.hosts[] | select(.phase == "failed")'`,
		Args:              exactArgs("ID"),
		ValidArgsFunction: r.completeRolloutID,
		RunE: r.do(func(ctx context.Context, args []string) error {
			if watch {
				return r.watchRollout(args[0])
			}
			resp, err := r.getRollout(ctx, args[0], 0)
			if err != nil {
				return err
			}
			return r.printer().rolloutStatus(resp.GetStatus())
		}),
	}
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "print every change until the rollout is over; exit 0 only if it succeeded")
	return cmd
}

// watchRollout prints rollout id and every change to it until its state is
// terminal, long-polling GetRollout with the index of the last answer.
func (r *runner) watchRollout(id string) error {
	var (
		index   uint64 // of the last answer; 0 asks for an answer at once
		printed bool
	)
	for {
		// Each request has its own --timeout: the watch as a whole lasts as
		// long as the rollout does.
		ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
		resp, err := r.getRollout(ctx, id, index)
		cancel()
		if err != nil {
			var te *timeoutError
			switch {
			case index > 0 && errors.As(err, &te):
				continue // nothing changed while the request was held: ask again
			case index > 0 && status.Code(err) == codes.DeadlineExceeded:
				// The server stopped holding the request itself.
				time.Sleep(watchRetryDelay)
				continue
			}
			return err
		}
		st := resp.GetStatus()
		changed := !printed || resp.GetIndex() != index
		if changed {
			p := r.printer()
			if printed && !p.json() {
				if _, err := io.WriteString(p.w, "\n"); err != nil {
					return err
				}
			}
			if err := p.rolloutStatus(st); err != nil {
				return err
			}
			printed = true
		}
		if state := st.GetRollout().GetState(); isTerminalRolloutState(state) {
			return rolloutOutcome(st.GetRollout())
		}
		if !changed || resp.GetIndex() == 0 {
			time.Sleep(watchRetryDelay)
		}
		index = resp.GetIndex()
	}
}

// rolloutOutcome is the result of a watch that saw the rollout end: nil if
// it succeeded, an error naming the state and reason otherwise.
func rolloutOutcome(ro *relv1.Rollout) error {
	if ro.GetState() == "succeeded" {
		return nil
	}
	msg := fmt.Sprintf("rollout %s of %s@%s to %s ended %s", ro.GetId(), ro.GetApp(), ro.GetVersion(),
		ro.GetEnvironment(), ro.GetState())
	if reason := ro.GetReason(); reason != "" {
		msg += ": " + reason
	}
	return errors.New(msg)
}

func (r *runner) rolloutListCommand() *cobra.Command {
	var app, env string
	cmd := &cobra.Command{
		Use:     "list [--app APP] [--env ENV]",
		Aliases: []string{"ls"},
		Short:   "List rollouts",
		Long: `List rollouts with their state and the number of hosts per phase, of every
app and environment or only of --app and/or --env. The answer comes from the
replica of the server asked; add --consistent to read from the leader
instead.`,
		Example: `  relctl rollout list
  relctl rollout list --app web --env prod
  relctl rollout list -o json | jq -r '.rollouts[] | select(.rollout.state == "running") | .rollout.id'`,
		Args:              exactArgs(),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: r.do(func(ctx context.Context, _ []string) error {
			rollouts, err := r.listRollouts(ctx, app, env)
			if err != nil {
				return err
			}
			return r.printer().rollouts(rollouts)
		}),
	}
	cmd.Flags().StringVar(&app, "app", "", "only rollouts of `APP`")
	cmd.Flags().StringVar(&env, "env", "", "only rollouts to environment `ENV`")
	_ = cmd.RegisterFlagCompletionFunc("app", r.completeAppFlag)
	_ = cmd.RegisterFlagCompletionFunc("env", r.completeEnvFlag)
	return cmd
}

func (r *runner) getRollout(ctx context.Context, id string, waitIndex uint64) (*relv1.GetRolloutResponse, error) {
	var resp *relv1.GetRolloutResponse
	_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
		resp, err = relv1.NewControlServiceClient(cc).GetRollout(ctx, &relv1.GetRolloutRequest{
			Read:      r.readOptions(),
			Id:        id,
			WaitIndex: waitIndex,
		}, opts...)
		return err
	})
	return resp, err
}

func (r *runner) listRollouts(ctx context.Context, app, env string) ([]*relv1.RolloutStatus, error) {
	var resp *relv1.ListRolloutsResponse
	_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
		resp, err = relv1.NewControlServiceClient(cc).ListRollouts(ctx,
			&relv1.ListRolloutsRequest{Read: r.readOptions(), App: app, Environment: env}, opts...)
		return err
	})
	return resp.GetRollouts(), err
}

// completeRolloutID suggests rollout ids, newest last as the server lists
// them, for an ID argument.
func (r *runner) completeRolloutID(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return r.complete(cmd, toComplete, func(ctx context.Context) ([]string, error) {
		rollouts, err := r.listRollouts(ctx, "", "")
		ids := make([]string, 0, len(rollouts))
		for _, s := range rollouts {
			ids = append(ids, s.GetRollout().GetId())
		}
		return ids, err
	})
}

// completeAppVersion completes an APP@VERSION argument: the app first, then
// its released versions.
func (r *runner) completeAppVersion(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	app, _, hasAt := strings.Cut(toComplete, "@")
	if !hasAt {
		// Complete the app first; NoSpace lets the user type "@".
		comps, dir := r.completeApp(cmd, toComplete)
		for i := range comps {
			comps[i] += "@"
		}
		return comps, dir | cobra.ShellCompDirectiveNoSpace
	}
	return r.complete(cmd, toComplete, func(ctx context.Context) ([]string, error) {
		releases, err := r.listReleases(ctx, app)
		names := make([]string, 0, len(releases))
		for _, rel := range releases {
			names = append(names, rel.GetApp()+"@"+rel.GetVersion())
		}
		return names, err
	})
}

// completeAppFlag completes the value of an --app flag.
func (r *runner) completeAppFlag(cmd *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	return r.completeApp(cmd, toComplete)
}

// completeEnvFlag completes the value of an --env flag.
func (r *runner) completeEnvFlag(cmd *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	return r.complete(cmd, toComplete, func(ctx context.Context) ([]string, error) {
		var resp *relv1.ListEnvironmentsResponse
		_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
			resp, err = relv1.NewControlServiceClient(cc).ListEnvironments(ctx,
				&relv1.ListEnvironmentsRequest{Read: r.readOptions()}, opts...)
			return err
		})
		names := make([]string, 0, len(resp.GetEnvironments()))
		for _, e := range resp.GetEnvironments() {
			names = append(names, e.GetName())
		}
		return names, err
	})
}
