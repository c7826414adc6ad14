package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/relhq/rel/internal/rollout"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// The lifecycle's words are internal/rollout's: relctl prints and compares
// the same strings the FSM writes.
const (
	stateQueued          = rollout.StateQueued
	stateRunning         = rollout.StateRunning
	stateWaitingApproval = rollout.StateWaitingApproval
	statePaused          = rollout.StatePaused
	stateRollingBack     = rollout.StateRollingBack
	stateSucceeded       = rollout.StateSucceeded
	kindRollback         = rollout.KindRollback
)

func isTerminalRolloutState(state string) bool { return rollout.Terminal(state) }

// statusEvents is how many of the latest events "rollout status" shows.
const statusEvents = 5

func (r *runner) rolloutCommand() *cobra.Command {
	return noun("rollout",
		"Plan, start, steer and follow rollouts",
		`A rollout takes a release to every host of an environment, wave after
wave: each host's agent downloads, installs, starts and verifies the
release and reports each phase. The rollout ends succeeded when every host
is healthy on the new version; too many failed hosts or a stall fail it.
"relctl rollout rollback" takes the hosts a rollout changed back.

States: running, waiting_approval, paused and rolling_back while it goes
on; then succeeded, failed, aborted or rolled_back.

In tables, waves are numbered from 1, except that a canary rollout's canary
is wave 0; JSON fields (wave, current_wave, index) count from 0 as the
server does.`,
		`  relctl rollout plan web@1.2.3 --env prod --strategy canary --waves 50%,100%
  relctl rollout start web@1.2.3 --env prod --strategy canary --waves 50%,100%
  relctl rollout status 01J8X4W2QZ --watch
  relctl rollout approve 01J8X4W2QZ
  relctl rollout rollback 01J8X4W2QZ
  relctl rollout list --app web`,
		r.rolloutPlanCommand(),
		r.rolloutStartCommand(),
		r.rolloutStatusCommand(),
		r.rolloutEventsCommand(),
		r.rolloutListCommand(),
		r.rolloutControlCommand("pause", "Pause a rollout: no further host is started",
			`Pause rollout ID: hosts already changing finish, no further host is started
and no wave begins until "relctl rollout resume ID".`,
			func(s *relv1.Rollout) bool {
				return s.GetState() == stateRunning || s.GetState() == stateWaitingApproval
			}),
		r.rolloutControlCommand("resume", "Resume a paused rollout",
			`Resume rollout ID, paused by "relctl rollout pause": it continues from where
it stopped.`,
			func(s *relv1.Rollout) bool { return s.GetState() == statePaused }),
		r.rolloutControlCommand(actionApprove, "Approve a rollout awaiting approval, or its next wave",
			`Approve rollout ID. A rollout into an environment with an approval
policy awaits its approvals (awaiting_approval) before it starts: your
approval counts once, and the one that makes the count queues it ("relctl
env approval-policy --help" tells the rules). --comment is recorded with
it. relctl prints "rollout ID: STATE; N of M approvals".

Approve the wave rollout ID waits for. A rollout started with
--approve-waves stops after each wave has finished and baked
(waiting_approval) until the next wave is approved.

Without --wave, relctl reads the rollout from the leader, approves the
wave it waits for and prints which ("rollout ID: running; approved wave 2
of 3"). --wave N names the wave, numbered as "relctl rollout status"
numbers waves (from 1; a canary rollout's canary is wave 0 and never
waits). Either way the server refuses (FailedPrecondition) an approve of
any wave but the one waiting, so an approve never opens a later gate than
the one its author meant, even when it is sent again after the rollout
moved on.`,
			func(s *relv1.Rollout) bool { return s.GetState() == stateWaitingApproval }),
		r.rolloutControlCommand("abort", "Stop a rollout for good",
			`Abort rollout ID: no further host is started and the rollout ends aborted.
Hosts keep what they run; "relctl rollout rollback ID" takes them back.`,
			func(s *relv1.Rollout) bool { return !isTerminalRolloutState(s.GetState()) }),
		r.rolloutRejectCommand(),
		r.rolloutReviewCommand(),
		r.rolloutRollbackCommand(),
	)
}

func (r *runner) rolloutStartCommand() *cobra.Command {
	var (
		change, changeReason string
		emergency            bool
		env                  string
		queue                bool
		flags                specFlags
		cmd                  *cobra.Command
	)
	cmd = &cobra.Command{
		Use:   "start APP@VERSION --env ENV [--strategy all-at-once|rolling|canary] [--queue] [flags]",
		Short: "Start rolling a release out to an environment",
		Long: `Start rolling release VERSION of APP out to the hosts environment ENV selects,
and print the rollout's id and the hosts it targets with their wave and the
version each ran before. The command returns once the rollout is started;
follow it with "relctl rollout status ID --watch". "relctl rollout plan"
with the same arguments shows the waves first without changing anything.

Only one rollout per app and host may be active. When another rollout of
APP holds some of the hosts (the same environment, or an overlapping one),
the start is refused with that rollout's id; with --queue the rollout is
created "queued" instead and starts by itself when the other one (and any
rollout queued before it over the same hosts) has ended.

Change control: into an environment with an approval policy, the rollout
is created awaiting_approval and starts once approved ("relctl env
approval-policy --help"). --change standard skips the approvals where the
policy allows standard changes (refused elsewhere); --emergency (or
--change emergency) with --reason TEXT needs the emergency permission,
waits for one approval instead of the policy's count, and stays open for a
post-hoc review ("relctl reviews --open").
Inside a freeze window over APP and ENV ("relctl freeze status --env ENV
--app APP") the rollout is created "frozen" instead and starts by itself
when the freeze ends. --emergency --reason TEXT overrides the freeze: the
rollout starts now and records the window it overrode.

` + specHelp,
		Example: specExamples("start") + `
  relctl rollout start web@1.2.4 --env prod-eu --queue   # after the prod rollout
  relctl rollout start web@1.2.5 --env prod --emergency --reason 'CVE-2026-1234 hotfix'
  id=$(relctl rollout start web@1.2.3 --env prod -o json | jq -r .id)
  relctl rollout status "$id" --watch`,
		Args:              exactArgs("APP@VERSION"),
		ValidArgsFunction: r.completeAppVersion,
		RunE: r.do(func(ctx context.Context, args []string) error {
			app, version, spec, err := rolloutTarget(cmd, args[0], &flags)
			if err != nil {
				return err
			}
			if emergency {
				if cmd.Flags().Changed("change") && change != rollout.ChangeEmergency {
					return usagef("--emergency and --change %s: give one", change)
				}
				change = rollout.ChangeEmergency
			}
			var resp *relv1.StartRolloutResponse
			_, err = r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
				resp, err = relv1.NewControlServiceClient(cc).StartRollout(ctx, &relv1.StartRolloutRequest{
					App: app, Version: version, Environment: env, Spec: spec, Queue: queue,
					ChangeType: change, ChangeReason: changeReason,
				}, opts...)
				return err
			})
			if err != nil {
				return err
			}
			return r.printer().rolloutStarted(resp.GetRollout(), resp.GetIndex())
		}),
	}
	r.targetFlags(cmd, &env, &flags)
	cmd.Flags().BoolVar(&queue, "queue", false, "when an active rollout of the app holds some of these hosts, wait for it (state queued) instead of being refused")
	cmd.Flags().StringVar(&change, "change", "", "change type: standard (pre-approved, where the environment's approval policy allows it), normal (default: the policy's approvals) or emergency")
	_ = cmd.RegisterFlagCompletionFunc("change", cobra.FixedCompletions([]string{rollout.ChangeStandard, rollout.ChangeNormal, rollout.ChangeEmergency}, cobra.ShellCompDirectiveNoFileComp))
	cmd.Flags().StringVar(&changeReason, "reason", "", "why, in `TEXT` (required for an emergency change; recorded)")
	cmd.Flags().BoolVar(&emergency, "emergency", false, "an emergency change: needs the emergency permission and --reason; one approval instead of the policy's count, and an open review afterwards")
	return cmd
}

func (r *runner) rolloutPlanCommand() *cobra.Command {
	var (
		env   string
		flags specFlags
		cmd   *cobra.Command
	)
	cmd = &cobra.Command{
		Use:   "plan APP@VERSION --env ENV [--strategy all-at-once|rolling|canary] [flags]",
		Short: "Show the waves a rollout would have, without starting it",
		Long: `Ask the server how "relctl rollout start" with the same arguments would
proceed, and change nothing. relctl prints the spec with the server's
defaults filled in, then each wave ("WAVE 0 (canary): 1 host") with its
hosts, what they run now and whether they are connected, the selected hosts
that are offline and would be skipped, how many hosts already run VERSION,
and the blockers: why the server would refuse to start the rollout now.

The plan is printed in full either way; when there are blockers relctl also
reports them on stderr and exits 1, so "relctl rollout plan ... && relctl
rollout start ..." starts only a rollout that can start.

` + specHelp,
		Example: specExamples("plan") + `
  relctl rollout plan web@1.2.3 --env prod -o json | jq '.waves[] | {index, hosts: [.hosts[].agent_id]}'`,
		Args:              exactArgs("APP@VERSION"),
		ValidArgsFunction: r.completeAppVersion,
		RunE: r.do(func(ctx context.Context, args []string) error {
			app, version, spec, err := rolloutTarget(cmd, args[0], &flags)
			if err != nil {
				return err
			}
			var resp *relv1.PlanRolloutResponse
			_, err = r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
				resp, err = relv1.NewControlServiceClient(cc).PlanRollout(ctx, &relv1.PlanRolloutRequest{
					App: app, Version: version, Environment: env, Spec: spec,
				}, opts...)
				return err
			})
			if err != nil {
				return err
			}
			if err := r.printer().plan(app, version, env, resp); err != nil {
				return err
			}
			if b := resp.GetBlockers(); len(b) > 0 {
				return fmt.Errorf("the rollout would not start: %s", strings.Join(b, "; "))
			}
			return nil
		}),
	}
	r.targetFlags(cmd, &env, &flags)
	return cmd
}

// targetFlags adds the flags "rollout start" and "rollout plan" share.
func (r *runner) targetFlags(cmd *cobra.Command, env *string, flags *specFlags) {
	cmd.Flags().StringVar(env, "env", "", "`ENV`: the environment to roll out to (required)")
	_ = cmd.MarkFlagRequired("env")
	_ = cmd.RegisterFlagCompletionFunc("env", r.completeEnvFlag)
	flags.register(cmd)
}

// rolloutTarget parses the APP@VERSION argument and the spec flags.
func rolloutTarget(cmd *cobra.Command, arg string, flags *specFlags) (app, version string, spec *relv1.RolloutSpec, err error) {
	if app, version, err = parseAppVersion(arg); err != nil {
		return "", "", nil, err
	}
	if spec, err = flags.spec(cmd); err != nil {
		return "", "", nil, err
	}
	return app, version, spec, nil
}

// rolloutControlCommand builds pause, resume, approve and abort, which
// differ only in the action sent, in which rollouts completion offers, and
// in approve's --wave.
func (r *runner) rolloutControlCommand(action, short, long string, offer func(*relv1.Rollout) bool) *cobra.Command {
	var (
		reason  string
		comment string
		wave    uint32
		cmd     *cobra.Command
	)
	use, example := action+" ID [--reason TEXT]", ""
	if action == actionApprove {
		use = action + " ID [--wave N] [--comment TEXT]"
		example = fmt.Sprintf("\n  relctl rollout %s 01J8X4W2QZ --wave 2", action)
	}
	cmd = &cobra.Command{
		Use:   use,
		Short: short,
		Long: long + `

relctl prints "rollout ID: STATE" with the state the rollout is in
afterwards (with -o json, the rollout). --reason is sent with the action
for the server to record. The server refuses an action the rollout's state
does not allow (FailedPrecondition, exit 1).

If no answer comes back (no leader, a leader change, a server going away),
relctl asks again, the next --addr address first, with the same request
id: the cluster applies the action once.`,
		Example: fmt.Sprintf(`  relctl rollout %[1]s 01J8X4W2QZ
  relctl rollout %[1]s 01J8X4W2QZ --reason "error rate up in eu-1"`, action) + example,
		Args: exactArgs("ID"),
		ValidArgsFunction: func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			return r.completeRolloutIDWhere(cmd, args, toComplete, offer)
		},
		RunE: r.do(func(ctx context.Context, args []string) error {
			req := &relv1.ControlRolloutRequest{Id: args[0], Action: action, Reason: reason}
			if action == actionApprove {
				text := comment
				if text == "" {
					text = reason
				}
				if done, err := r.approveUnderPolicy(ctx, args[0], text, wave, cmd.Flags().Changed("wave")); done || err != nil {
					return err
				}
				req.Wave = wave
				if !cmd.Flags().Changed("wave") {
					w, err := r.waitingWave(ctx, args[0])
					if err != nil {
						return err
					}
					req.Wave = w
				}
			}
			var resp *relv1.ControlRolloutResponse
			_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
				resp, err = relv1.NewControlServiceClient(cc).ControlRollout(ctx, req, opts...)
				return err
			})
			if err != nil {
				return err
			}
			return r.printer().rolloutControlled(resp.GetRollout(), req.GetWave())
		}),
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why, in `TEXT`, for the server to record with the action")
	_ = cmd.RegisterFlagCompletionFunc("reason", cobra.NoFileCompletions)
	if action == actionApprove {
		cmd.Flags().Uint32Var(&wave, "wave", 0, "the wave `N` to approve, numbered as 'rollout status' shows waves; refused unless it is the one waiting (default: the one waiting)")
		cmd.Flags().StringVar(&comment, "comment", "", "a `TEXT` recorded with your approval")
		_ = cmd.RegisterFlagCompletionFunc("wave", cobra.NoFileCompletions)
	}
	return cmd
}

const actionApprove = "approve"

// waitingWave reads rollout id from the leader (a replica's view may be
// older than the gate) and returns the number of the wave it waits to
// have approved, numbered as tables number waves.
func (r *runner) waitingWave(ctx context.Context, id string) (uint32, error) {
	var resp *relv1.GetRolloutResponse
	_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
		resp, err = relv1.NewControlServiceClient(cc).GetRollout(ctx, &relv1.GetRolloutRequest{Id: id, Read: &relv1.ReadOptions{Consistent: true}}, opts...)
		return err
	})
	if err != nil {
		return 0, err
	}
	ro := resp.GetStatus().GetRollout()
	if ro.GetState() != stateWaitingApproval {
		return 0, status.Errorf(codes.FailedPrecondition, "rollout %s is %s, not waiting for approval: no wave to approve ('relctl rollout status %s' shows where it is)", id, ro.GetState(), id)
	}
	return waveBase(ro) + ro.GetCurrentWave() + 1, nil
}

func (r *runner) rolloutRollbackCommand() *cobra.Command {
	var allAtOnce bool
	cmd := &cobra.Command{
		Use:   "rollback ID [--all-at-once]",
		Short: "Take the hosts a rollout changed back to what they ran before",
		Long: `Start a rollback of rollout ID: every host the rollout changed goes back to
the version it ran before (its PREVIOUS). The rollback is a rollout of its
own, of kind rollback, that goes through the original's waves in reverse
order, or through every host at once with --all-at-once. The original's
status then names the rollback ("Rolled back by").

relctl prints the rollback's id and its hosts with the version each is
taken to (with -o json, the rollback rollout). Follow it with "relctl
rollout status ID --watch".`,
		Example: `  relctl rollout rollback 01J8X4W2QZ
  relctl rollout rollback 01J8X4W2QZ --all-at-once
  id=$(relctl rollout rollback 01J8X4W2QZ -o json | jq -r .id) && relctl rollout status "$id" --watch`,
		Args: exactArgs("ID"),
		ValidArgsFunction: func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			return r.completeRolloutIDWhere(cmd, args, toComplete, func(ro *relv1.Rollout) bool {
				return ro.GetKind() != kindRollback && ro.GetRolledBackBy() == ""
			})
		},
		RunE: r.do(func(ctx context.Context, args []string) error {
			var resp *relv1.RollbackRolloutResponse
			_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
				resp, err = relv1.NewControlServiceClient(cc).RollbackRollout(ctx, &relv1.RollbackRolloutRequest{
					Id: args[0], AllAtOnce: allAtOnce,
				}, opts...)
				return err
			})
			if err != nil {
				return err
			}
			return r.printer().rollbackStarted(resp.GetRollback(), resp.GetIndex())
		}),
	}
	cmd.Flags().BoolVar(&allAtOnce, "all-at-once", false, "every host at once instead of the rollout's waves in reverse")
	return cmd
}

func (r *runner) rolloutEventsCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "events ID",
		Short: "List everything that happened to a rollout",
		Long: `List every event of rollout ID, oldest first: TIME, WAVE, TYPE, HOST (for
host events) and MESSAGE. Types: started, wave_started, dispatched,
host_healthy, host_failed, wave_done, baking, waiting_approval, approved,
paused, resumed, succeeded, failed, aborted, rollback_started, rolled_back,
deadline_exceeded. The answer comes from the replica of the server asked;
add --consistent to read from the leader instead.`,
		Example: `  relctl rollout events 01J8X4W2QZ
  relctl rollout events 01J8X4W2QZ -o json | jq -r '.events[] | select(.type == "host_failed") | .host'`,
		Args:              exactArgs("ID"),
		ValidArgsFunction: r.completeRolloutID,
		RunE: r.do(func(ctx context.Context, args []string) error {
			events, ro, err := r.rolloutEvents(ctx, args[0], 0, 0)
			if err != nil {
				return err
			}
			return r.printer().events(ro, events)
		}),
	}
}

func (r *runner) rolloutStatusCommand() *cobra.Command {
	var watch bool
	cmd := &cobra.Command{
		Use:   "status ID [--watch]",
		Short: "Show a rollout, its waves and the progress of each of its hosts",
		Long: `Show rollout ID: its kind, release, environment, spec, state and current
wave (with what it is doing: running, baking, waiting for approval, paused),
start and end; then one line per host with its WAVE, the engine's STATE
(pending, dispatched, healthy, failed, skipped) and the agent's PHASE
(pending until the host reports for this rollout, then downloading,
installing, starting, verifying, healthy or failed); the number of hosts
per phase; and the last 5 events ("relctl rollout events ID" lists all).

With --watch, relctl follows the rollout until it is over: succeeded,
failed, aborted or rolled_back. It then exits 0 if the rollout succeeded
and 1 otherwise, with one line on stderr saying how it ended, so scripts
and CI can wait on it. What it prints depends on where stdout goes:
  a terminal   a live view, redrawn on every change and every second:
               the state and time in the current step, one progress bar
               per wave, the hosts grouped by phase, the latest events;
  otherwise    one line per event, from the rollout's first, e.g.
               "2026-11-25T22:40:01Z wave=1 host_healthy web-2: healthy on 1.2.0";
  -o json      one JSON object per event and line, with the fields of
               "relctl rollout events -o json".
--timeout applies to each request rather than to the whole watch: a wait
that brings no change within it is simply renewed, so a watch lasts as long
as the rollout. Without --watch the exit code only says whether the status
could be read.

The answer comes from the replica of the server asked; add --consistent to
read from the leader instead.`,
		Example: `  relctl rollout status 01J8X4W2QZ
  relctl rollout status 01J8X4W2QZ --watch && echo deployed
  relctl rollout status 01J8X4W2QZ --watch -o json | jq -c 'select(.type == "host_failed")'
  relctl rollout status 01J8X4W2QZ -o json | jq '.hosts[] | select(.state == "failed")'`,
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
			p := r.printer()
			var events []*relv1.RolloutEvent
			if !p.json() {
				after := max(resp.GetStatus().GetRollout().GetEventSeq(), statusEvents) - statusEvents
				events, _, err = r.rolloutEvents(ctx, args[0], after, 0)
				if err != nil && !isUnimplemented(err) {
					return err
				}
			}
			return p.rolloutStatusWithEvents(resp.GetStatus(), lastEvents(events, statusEvents))
		}),
	}
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "follow the rollout until it is over; exit 0 only if it succeeded")
	return cmd
}

// rolloutOutcome is the result of a watch that saw the rollout end: nil if
// it succeeded, an error naming the state and reason otherwise.
func rolloutOutcome(ro *relv1.Rollout) error {
	if ro.GetState() == stateSucceeded {
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
	var (
		app, env, state, since string
		limit                  int
	)
	cmd := &cobra.Command{
		Use:     "list [--app APP] [--env ENV] [--state STATE] [--since WHEN] [--limit N]",
		Aliases: []string{"ls"},
		Short:   "List rollouts",
		Long: `List rollouts with their state and the number of hosts per phase, of every
app and environment or only of --app and/or --env, newest first. --state
keeps the rollouts in one state (or "active": queued, running,
waiting_approval, paused or rolling_back), --since those created since a
time (a duration back from now, e.g. 24h, or an RFC 3339 time); the filters
run on the server. The server answers in pages, which relctl follows;
--limit stops after N rollouts. The answer comes from the replica of the
server asked; add --consistent to read from the leader instead.`,
		Example: `  relctl rollout list
  relctl rollout list --app web --env prod
  relctl rollout list --state active --since 24h --limit 20
  relctl rollout list -o json | jq -r '.rollouts[] | select(.rollout.state == "running") | .rollout.id'`,
		Args:              exactArgs(),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: r.do(func(ctx context.Context, _ []string) error {
			if err := checkLimit(limit); err != nil {
				return err
			}
			if err := checkRolloutState(state); err != nil {
				return err
			}
			from, err := parseSince(since, time.Now())
			if err != nil {
				return err
			}
			req := &relv1.ListRolloutsRequest{App: app, Environment: env, State: state}
			if !from.IsZero() {
				req.SinceUnixNano = from.UnixNano()
			}
			rollouts, err := r.listRollouts(ctx, req, limit)
			if err != nil {
				return err
			}
			return r.printer().rollouts(rollouts)
		}),
	}
	cmd.Flags().StringVar(&app, "app", "", "only rollouts of `APP`")
	cmd.Flags().StringVar(&env, "env", "", "only rollouts to environment `ENV`")
	cmd.Flags().StringVar(&state, "state", "", "only rollouts in `STATE` (a rollout state, or active)")
	cmd.Flags().StringVar(&since, "since", "", "only rollouts created since `WHEN`: a duration back from now (24h) or an RFC 3339 time")
	limitFlag(cmd, &limit)
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

// rolloutEvents returns every event of rollout id after sequence number
// after, asking again while the server answers with a part of them (up to
// the rollout's event_seq), and the rollout as of the last answer.
// upTo, if above 0, is an event_seq the caller already knows of: relctl
// asks until it has the events up to it, even if the server's rollout says
// less.
func (r *runner) rolloutEvents(ctx context.Context, id string, after, upTo uint64) ([]*relv1.RolloutEvent, *relv1.Rollout, error) {
	var (
		out []*relv1.RolloutEvent
		ro  *relv1.Rollout
	)
	for {
		var resp *relv1.RolloutEventsResponse
		_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
			resp, err = relv1.NewControlServiceClient(cc).RolloutEvents(ctx, &relv1.RolloutEventsRequest{
				Read: r.readOptions(), Id: id, AfterSeq: after,
			}, opts...)
			return err
		})
		if err != nil {
			return nil, nil, err
		}
		ro = resp.GetRollout()
		progressed := false
		for _, e := range resp.GetEvents() {
			// Only events past the last one: a server that answers with
			// events already seen must not make relctl print them twice.
			if e.GetSeq() > after {
				out = append(out, e)
				after, progressed = e.GetSeq(), true
			}
		}
		if !progressed || after >= max(ro.GetEventSeq(), upTo) {
			return out, ro, nil
		}
	}
}

// lastEvents is the last n of events.
func lastEvents(events []*relv1.RolloutEvent, n int) []*relv1.RolloutEvent {
	return events[max(len(events)-n, 0):]
}

// listRollouts lists the rollouts req selects, following its pages, at
// most limit of them (0: all).
func (r *runner) listRollouts(ctx context.Context, req *relv1.ListRolloutsRequest, limit int) ([]*relv1.RolloutStatus, error) {
	return allPages(limit, func(tok string, size uint32) ([]*relv1.RolloutStatus, string, error) {
		page := proto.Clone(req).(*relv1.ListRolloutsRequest)
		page.Read, page.PageToken, page.PageSize = r.readOptions(), tok, size
		var resp *relv1.ListRolloutsResponse
		_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
			resp, err = relv1.NewControlServiceClient(cc).ListRollouts(ctx, page, opts...)
			return err
		})
		return resp.GetRollouts(), resp.GetNextPageToken(), err
	})
}

// completeRolloutID suggests rollout ids, newest last as the server lists
// them, for an ID argument.
func (r *runner) completeRolloutID(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	return r.completeRolloutIDWhere(cmd, args, toComplete, nil)
}

// completeRolloutIDWhere is completeRolloutID limited to the rollouts offer
// accepts (all if nil): the ones a command can act on.
func (r *runner) completeRolloutIDWhere(cmd *cobra.Command, args []string, toComplete string,
	offer func(*relv1.Rollout) bool) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	return r.complete(cmd, toComplete, func(ctx context.Context) ([]string, error) {
		rollouts, err := r.listRollouts(ctx, &relv1.ListRolloutsRequest{}, 0)
		ids := make([]string, 0, len(rollouts))
		for _, s := range rollouts {
			if offer == nil || offer(s.GetRollout()) {
				ids = append(ids, s.GetRollout().GetId())
			}
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
		releases, err := r.listReleases(ctx, app, 0)
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

// isUnimplemented reports a server that predates an RPC relctl uses only
// to add detail (the events under "rollout status").
func isUnimplemented(err error) bool { return status.Code(err) == codes.Unimplemented }
