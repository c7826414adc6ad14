package cli

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

const phaseHelp = `Each --phase is one phase, in order:

  --phase NAME=ENV[,ENV...][:min=N|:optional][:auto=ENV[,ENV...]]

  NAME        the phase's name (dev, staging, prod)
  ENV,...     its environments; an environment is in one phase only
  (nothing)   progress all: every environment of the phase must have a
              succeeded rollout of the release's artifact before the next
              phase may have one
  :min=N      progress min N: N of the phase's environments suffice
  :optional   later phases do not wait for this one
  :auto=ENV   when a release enters this phase (the phases before it are
              done), the leader starts a rollout of it to ENV, once

A deploy rollout to an environment of a phase is refused until every
earlier phase that is not optional is done, counting succeeded rollouts of
the same artifact digest (another version with the same sha256 counts)
that were not rolled back. Rollbacks and catch-ups are never refused. An
environment in no phase of an app's lifecycle takes no deploy of that app.`

func (r *runner) lifecycleCommand() *cobra.Command {
	return noun("lifecycle",
		"Create, change, show, list and delete lifecycles",
		`A lifecycle is the ordered phases of environments a release goes through
(dev → staging → prod). An app follows at most one ('relctl app create
--lifecycle', 'relctl app update --lifecycle'); its deploy rollouts are
then refused into a phase whose earlier phases the release has not passed.

`+phaseHelp,
		`  relctl lifecycle create std --phase dev=dev --phase staging=staging-eu,staging-us:min=1 --phase prod=prod:auto=prod
  relctl lifecycle show std
  relctl lifecycle list`,
		r.lifecyclePutCommand(true),
		r.lifecyclePutCommand(false),
		r.lifecycleShowCommand(),
		r.lifecycleListCommand(),
		r.lifecycleDeleteCommand(),
	)
}

// parsePhase reads one --phase value (see phaseHelp).
func parsePhase(arg string) (*relv1.Phase, error) {
	name, rest, ok := strings.Cut(arg, "=")
	if !ok || name == "" || rest == "" {
		return nil, usagef("--phase %q: want NAME=ENV[,ENV...][:min=N|:optional][:auto=ENV[,ENV...]], e.g. --phase staging=staging-eu,staging-us:min=1", arg)
	}
	parts := strings.Split(rest, ":")
	p := &relv1.Phase{Name: name, Progress: "all"}
	for _, e := range strings.Split(parts[0], ",") {
		if e = strings.TrimSpace(e); e != "" {
			p.Environments = append(p.Environments, e)
		}
	}
	for _, opt := range parts[1:] {
		k, v, _ := strings.Cut(opt, "=")
		switch k {
		case "all":
			p.Progress = "all"
		case "optional":
			p.Progress = "optional"
		case "min":
			n, err := strconv.ParseUint(v, 10, 32)
			if err != nil {
				return nil, usagef("--phase %q: min=%q is not a number: write min=N, e.g. min=1", arg, v)
			}
			p.Progress, p.MinEnvironments = "min", uint32(n)
		case "auto":
			for _, e := range strings.Split(v, ",") {
				if e = strings.TrimSpace(e); e != "" {
					p.AutoDeploy = append(p.AutoDeploy, e)
				}
			}
		default:
			return nil, usagef("--phase %q: unknown option %q: use min=N, optional or auto=ENV[,ENV...]", arg, opt)
		}
	}
	return p, nil
}

func (r *runner) lifecyclePutCommand(create bool) *cobra.Command {
	var (
		phases      []string
		description string
	)
	verb, short := "create", "Create a lifecycle"
	long := `Create lifecycle NAME from its phases, in order. The server refuses
unknown environments, an environment in two phases, two phases of one name,
a phase without environments, min N above the phase's size and auto-deploy
environments outside their phase; nothing is created then.`
	if !create {
		verb, short = "update", "Replace a lifecycle's phases"
		long = `Replace lifecycle NAME's phases (all of them: give every --phase again) and
description. Apps that follow it follow the new phases from their next
deploy; rollouts already started are not affected. Auto-deploy only acts on
releases that enter a phase after the change.`
	}
	cmd := &cobra.Command{
		Use:   verb + " NAME --phase NAME=ENV[,ENV...][:OPTIONS] ...",
		Short: short,
		Long:  long + "\n\n" + phaseHelp,
		Example: fmt.Sprintf(`  relctl lifecycle %s std --phase dev=dev --phase staging=staging-eu,staging-us:min=1 --phase prod=prod-eu,prod-us:auto=prod-eu
  relctl lifecycle %s hotfix --phase qa=qa:optional --phase prod=prod -o json`, verb, verb),
		Args:              exactArgs("NAME"),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: r.do(func(ctx context.Context, args []string) error {
			if len(phases) == 0 {
				return usagef("give the lifecycle's phases, in order: --phase dev=dev --phase prod=prod")
			}
			lc := &relv1.Lifecycle{Name: args[0], Description: description}
			for _, a := range phases {
				p, err := parsePhase(a)
				if err != nil {
					return err
				}
				lc.Phases = append(lc.Phases, p)
			}
			var resp *relv1.LifecycleResponse
			_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
				c := relv1.NewLifecycleServiceClient(cc)
				if create {
					resp, err = c.CreateLifecycle(ctx, &relv1.CreateLifecycleRequest{Lifecycle: lc}, opts...)
				} else {
					resp, err = c.UpdateLifecycle(ctx, &relv1.CreateLifecycleRequest{Lifecycle: lc}, opts...)
				}
				return err
			})
			if err != nil {
				return err
			}
			if create {
				return r.printer().created("lifecycle", resp.GetLifecycle().GetName(), resp.GetIndex(), toLifecycleJSON(resp.GetLifecycle(), nil))
			}
			return r.printer().lifecycleUpdated(resp.GetLifecycle(), resp.GetIndex())
		}),
	}
	cmd.Flags().StringArrayVar(&phases, "phase", nil, "a phase, in order: `NAME=ENV[,ENV...][:min=N|:optional][:auto=ENV[,ENV...]]` (repeatable)")
	cmd.Flags().StringVar(&description, "description", "", "`TEXT` saying what the lifecycle is for")
	return cmd
}

func (r *runner) lifecycleShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "show NAME",
		Short: "Show a lifecycle's phases and the apps that follow it",
		Long: `Show lifecycle NAME: each phase with its environments, its progress rule
and its auto-deploy environments, and the apps that follow it.`,
		Example: `  relctl lifecycle show std
  relctl lifecycle show std -o json | jq '.phases[].environments'`,
		Args:              exactArgs("NAME"),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: r.do(func(ctx context.Context, args []string) error {
			var resp *relv1.LifecycleResponse
			_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
				resp, err = relv1.NewLifecycleServiceClient(cc).GetLifecycle(ctx, &relv1.GetLifecycleRequest{Read: r.readOptions(), Name: args[0]}, opts...)
				return err
			})
			if err != nil {
				return err
			}
			return r.printer().lifecycle(resp.GetLifecycle(), resp.GetApps())
		}),
	}
}

func (r *runner) lifecycleListCommand() *cobra.Command {
	return &cobra.Command{
		Use:               "list",
		Aliases:           []string{"ls"},
		Short:             "List lifecycles",
		Long:              `List every lifecycle with its phases in order.`,
		Example:           `  relctl lifecycle list`,
		Args:              exactArgs(),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: r.do(func(ctx context.Context, _ []string) error {
			var resp *relv1.ListLifecyclesResponse
			_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
				resp, err = relv1.NewLifecycleServiceClient(cc).ListLifecycles(ctx, &relv1.ListLifecyclesRequest{Read: r.readOptions()}, opts...)
				return err
			})
			if err != nil {
				return err
			}
			return r.printer().lifecycles(resp.GetLifecycles())
		}),
	}
}

func (r *runner) lifecycleDeleteCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "delete NAME",
		Aliases: []string{"rm"},
		Short:   "Delete a lifecycle no app follows",
		Long: `Delete lifecycle NAME. Refused while an app follows it: move those apps
first ('relctl app update APP --lifecycle OTHER', or --lifecycle "" for none).`,
		Example:           `  relctl lifecycle delete old`,
		Args:              exactArgs("NAME"),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: r.do(func(ctx context.Context, args []string) error {
			var resp *relv1.DeleteLifecycleResponse
			_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
				resp, err = relv1.NewLifecycleServiceClient(cc).DeleteLifecycle(ctx, &relv1.DeleteLifecycleRequest{Name: args[0]}, opts...)
				return err
			})
			if err != nil {
				return err
			}
			return r.printer().deletedNamed("lifecycle", args[0], resp.GetIndex())
		}),
	}
}

func (r *runner) appUpdateCommand() *cobra.Command {
	var lc string
	cmd := &cobra.Command{
		Use:   "update NAME --lifecycle LIFECYCLE",
		Short: "Set or clear an app's lifecycle",
		Long: `Set the lifecycle app NAME's deploy rollouts follow, or clear it with
--lifecycle "". An unknown lifecycle is refused and nothing changes. Needs
manage-apps on NAME.`,
		Example: `  relctl app update web --lifecycle std
  relctl app update web --lifecycle ""`,
		Args:              exactArgs("NAME"),
		ValidArgsFunction: r.completeFirstApp,
		RunE: r.do(func(ctx context.Context, args []string) error {
			var resp *relv1.SetAppLifecycleResponse
			_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
				resp, err = relv1.NewLifecycleServiceClient(cc).SetAppLifecycle(ctx, &relv1.SetAppLifecycleRequest{App: args[0], Lifecycle: lc}, opts...)
				return err
			})
			if err != nil {
				return err
			}
			return r.printer().appUpdated(resp.GetApp(), resp.GetIndex())
		}),
	}
	cmd.Flags().StringVar(&lc, "lifecycle", "", "the `LIFECYCLE` to follow (\"\" for none)")
	_ = cmd.MarkFlagRequired("lifecycle")
	return cmd
}

func (r *runner) releaseBlockCommand(block bool) *cobra.Command {
	var reason string
	use, short, long := "block APP@VERSION --reason TEXT", "Stop a release from being deployed",
		`Block release VERSION of APP: every deploy rollout of it (rollout start,
release promote, auto-deploy) is refused, naming the reason and who
blocked it, until 'relctl release unblock'. Rollbacks to it stay allowed:
going back is how one leaves a worse release. Rollouts already started
are not stopped (abort them with 'relctl rollout abort'). Needs
manage-apps on APP.`
	if !block {
		use, short, long = "unblock APP@VERSION", "Let a blocked release be deployed again",
			`Lift the block on release VERSION of APP. Needs manage-apps on APP.`
	}
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Long:  long,
		Example: `  relctl release block web@1.2.3 --reason "CVE-2026-1234 in libfoo"
  relctl release unblock web@1.2.3`,
		Args:              exactArgs("APP@VERSION"),
		ValidArgsFunction: r.completeAppVersion,
		RunE: r.do(func(ctx context.Context, args []string) error {
			app, version, err := parseAppVersion(args[0])
			if err != nil {
				return err
			}
			if block && strings.TrimSpace(reason) == "" {
				return usagef("a block needs --reason TEXT: people who find the release blocked read it")
			}
			var resp *relv1.BlockReleaseResponse
			_, err = r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
				resp, err = relv1.NewLifecycleServiceClient(cc).BlockRelease(ctx, &relv1.BlockReleaseRequest{App: app, Version: version, Blocked: block, Reason: reason}, opts...)
				return err
			})
			if err != nil {
				return err
			}
			return r.printer().releaseBlocked(resp.GetRelease(), resp.GetIndex())
		}),
	}
	if block {
		cmd.Flags().StringVar(&reason, "reason", "", "why, in `TEXT` people will read in every refusal")
	}
	return cmd
}

func (r *runner) releasePromoteCommand() *cobra.Command {
	var (
		env   string
		queue bool
		wait  bool
	)
	cmd := &cobra.Command{
		Use:   "promote APP@VERSION --to ENV [--wait]",
		Short: "Roll a release out to the next environment of its lifecycle",
		Long: `Start a deploy rollout of release VERSION of APP to environment ENV with
'relctl rollout start's defaults (all at once over the hosts ENV selects).
It is a rollout start in every respect: refused while an earlier phase of
the app's lifecycle lacks a succeeded rollout of the release's artifact, or
while the release is blocked, or (without --queue) while another rollout
holds the hosts. 'relctl release status APP@VERSION' says where it may go.
With --wait, relctl follows the rollout until it ends, as 'relctl rollout
status ID --watch' does, and exits 0 only if it succeeded. Needs deploy on
APP and ENV.`,
		Example: `  relctl release promote web@1.2.3 --to staging-eu --wait
  relctl release promote web@1.2.3 --to prod -o json | jq -r .id`,
		Args:              exactArgs("APP@VERSION"),
		ValidArgsFunction: r.completeAppVersion,
		RunE: r.do(func(ctx context.Context, args []string) error {
			app, version, err := parseAppVersion(args[0])
			if err != nil {
				return err
			}
			if env == "" {
				return usagef("say where to: --to ENV")
			}
			var resp *relv1.StartRolloutResponse
			_, err = r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
				resp, err = relv1.NewLifecycleServiceClient(cc).PromoteRelease(ctx, &relv1.PromoteReleaseRequest{App: app, Version: version, Environment: env, Queue: queue}, opts...)
				return err
			})
			if err != nil {
				return err
			}
			if wait {
				if !r.printer().json() {
					if err := r.printer().rolloutStarted(resp.GetRollout(), resp.GetIndex()); err != nil {
						return err
					}
				}
				return r.watchRollout(resp.GetRollout().GetId())
			}
			return r.printer().rolloutStarted(resp.GetRollout(), resp.GetIndex())
		}),
	}
	cmd.Flags().StringVar(&env, "to", "", "the `ENV`ironment to roll out to")
	cmd.Flags().BoolVar(&queue, "queue", false, "when an active rollout of the app holds some of these hosts, wait for it (state queued) instead of being refused")
	cmd.Flags().BoolVar(&wait, "wait", false, "follow the rollout until it ends; exit 0 only if it succeeded")
	return cmd
}

func (r *runner) releaseStatusCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "status APP@VERSION",
		Short: "Where a release has been, where it may go next, what blocks it",
		Long: `Show release VERSION of APP against its app's lifecycle: per phase and
environment, whether its artifact (any release with the same sha256) has a
succeeded rollout there, one that was rolled back, or one running now; the
environments it may be promoted to now; and what blocks it (a block, or the
first phase not done). An app without a lifecycle shows the environments
the artifact went to.`,
		Example: `  relctl release status web@1.2.3
  relctl release status web@1.2.3 -o json | jq -r '.next[]'`,
		Args:              exactArgs("APP@VERSION"),
		ValidArgsFunction: r.completeAppVersion,
		RunE: r.do(func(ctx context.Context, args []string) error {
			app, version, err := parseAppVersion(args[0])
			if err != nil {
				return err
			}
			var resp *relv1.ReleaseStatusResponse
			_, err = r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
				resp, err = relv1.NewLifecycleServiceClient(cc).ReleaseStatus(ctx, &relv1.ReleaseStatusRequest{Read: r.readOptions(), App: app, Version: version}, opts...)
				return err
			})
			if err != nil {
				return err
			}
			return r.printer().releaseStatus(resp)
		}),
	}
}

// Output.

type phaseJSON struct {
	Name         string   `json:"name"`
	Environments []string `json:"environments"`
	Progress     string   `json:"progress"`
	Min          uint32   `json:"min,omitempty"`
	AutoDeploy   []string `json:"auto_deploy"`
}

type lifecycleJSON struct {
	Name        string      `json:"name"`
	Description string      `json:"description"`
	Phases      []phaseJSON `json:"phases"`
	Apps        []string    `json:"apps,omitempty"`
	CreatedAt   string      `json:"created_at"`
	CreateIndex uint64      `json:"create_index"`
	ModifyIndex uint64      `json:"modify_index"`
}

func toPhaseJSON(p *relv1.Phase) phaseJSON {
	return phaseJSON{Name: p.GetName(), Environments: nonNilStrings(p.GetEnvironments()), Progress: p.GetProgress(),
		Min: p.GetMinEnvironments(), AutoDeploy: nonNilStrings(p.GetAutoDeploy())}
}

func toLifecycleJSON(lc *relv1.Lifecycle, apps []string) lifecycleJSON {
	out := lifecycleJSON{Name: lc.GetName(), Description: lc.GetDescription(), Phases: []phaseJSON{}, Apps: apps,
		CreatedAt: formatTime(lc.GetCreatedUnixNano(), time.RFC3339Nano), CreateIndex: lc.GetCreateIndex(), ModifyIndex: lc.GetModifyIndex()}
	for _, p := range lc.GetPhases() {
		out.Phases = append(out.Phases, toPhaseJSON(p))
	}
	return out
}

func progressWords(p *relv1.Phase) string {
	switch p.GetProgress() {
	case "min":
		return fmt.Sprintf("min %d of %d", p.GetMinEnvironments(), len(p.GetEnvironments()))
	case "optional":
		return "optional"
	}
	return "all"
}

func phaseChain(lc *relv1.Lifecycle) string {
	names := make([]string, 0, len(lc.GetPhases()))
	for _, p := range lc.GetPhases() {
		names = append(names, p.GetName())
	}
	return strings.Join(names, " → ")
}

func (p printer) lifecycleUpdated(lc *relv1.Lifecycle, index uint64) error {
	if p.json() {
		return p.writeJSON(toLifecycleJSON(lc, nil))
	}
	_, err := fmt.Fprintf(p.w, "updated lifecycle %s (index %d): %s\n", cell(lc.GetName()), index, cell(phaseChain(lc)))
	return err
}

func (p printer) lifecycle(lc *relv1.Lifecycle, apps []string) error {
	if p.json() {
		return p.writeJSON(toLifecycleJSON(lc, nonNilStrings(apps)))
	}
	head := fmt.Sprintf("lifecycle %s: %s", cell(lc.GetName()), cell(phaseChain(lc)))
	if d := lc.GetDescription(); d != "" {
		head += " (" + cell(d) + ")"
	}
	appsLine := "apps: (none)"
	if len(apps) > 0 {
		appsLine = "apps: " + cell(strings.Join(apps, ", "))
	}
	if _, err := fmt.Fprintf(p.w, "%s\n%s\n", head, appsLine); err != nil {
		return err
	}
	rows := make([][]string, 0, len(lc.GetPhases()))
	for _, ph := range lc.GetPhases() {
		rows = append(rows, []string{ph.GetName(), strings.Join(ph.GetEnvironments(), ","), progressWords(ph), strings.Join(ph.GetAutoDeploy(), ",")})
	}
	return p.table([]string{"PHASE", "ENVIRONMENTS", "PROGRESS", "AUTO-DEPLOY"}, rows)
}

func (p printer) lifecycles(lcs []*relv1.Lifecycle) error {
	if p.json() {
		out := struct {
			Lifecycles []lifecycleJSON `json:"lifecycles"`
		}{Lifecycles: []lifecycleJSON{}}
		for _, lc := range lcs {
			out.Lifecycles = append(out.Lifecycles, toLifecycleJSON(lc, nil))
		}
		return p.writeJSON(out)
	}
	rows := make([][]string, 0, len(lcs))
	for _, lc := range lcs {
		rows = append(rows, []string{lc.GetName(), phaseChain(lc), lc.GetDescription()})
	}
	return p.table([]string{"NAME", "PHASES", "DESCRIPTION"}, rows)
}

func (p printer) deletedNamed(kind, name string, index uint64) error {
	if p.json() {
		return p.writeJSON(envDeletedJSON{Name: name, Index: index})
	}
	_, err := fmt.Fprintf(p.w, "deleted %s %s (index %d)\n", kind, cell(name), index)
	return err
}

func (p printer) appUpdated(a *relv1.App, index uint64) error {
	if p.json() {
		return p.writeJSON(toAppJSON(a))
	}
	lc := a.GetLifecycle()
	if lc == "" {
		lc = "(none)"
	}
	_, err := fmt.Fprintf(p.w, "updated app %s (index %d): lifecycle %s\n", cell(a.GetName()), index, cell(lc))
	return err
}

func (p printer) releaseBlocked(rel *relv1.Release, index uint64) error {
	if p.json() {
		return p.writeJSON(toReleaseJSON(rel))
	}
	if rel.GetBlocked() {
		_, err := fmt.Fprintf(p.w, "blocked release %s@%s (index %d): %s\n", cell(rel.GetApp()), cell(rel.GetVersion()), index, cell(rel.GetBlockReason()))
		return err
	}
	_, err := fmt.Fprintf(p.w, "unblocked release %s@%s (index %d)\n", cell(rel.GetApp()), cell(rel.GetVersion()), index)
	return err
}

type envProgressJSON struct {
	Environment string `json:"environment"`
	State       string `json:"state"`
	RolloutID   string `json:"rollout_id"`
	Version     string `json:"version"`
	Allowed     bool   `json:"allowed"`
	BlockedBy   string `json:"blocked_by"`
}

type phaseProgressJSON struct {
	Phase        phaseJSON         `json:"phase"`
	Done         bool              `json:"done"`
	Environments []envProgressJSON `json:"environments"`
}

type releaseStatusJSON struct {
	App       string              `json:"app"`
	Version   string              `json:"version"`
	SHA256    string              `json:"sha256"`
	Lifecycle string              `json:"lifecycle"`
	Blocked   bool                `json:"blocked"`
	Phases    []phaseProgressJSON `json:"phases"`
	Next      []string            `json:"next"`
	Blockers  []string            `json:"blockers"`
}

func (p printer) releaseStatus(resp *relv1.ReleaseStatusResponse) error {
	rel := resp.GetRelease()
	if p.json() {
		out := releaseStatusJSON{App: rel.GetApp(), Version: rel.GetVersion(), SHA256: rel.GetSha256(), Lifecycle: resp.GetLifecycle(),
			Blocked: rel.GetBlocked(), Phases: []phaseProgressJSON{}, Next: nonNilStrings(resp.GetNext()), Blockers: nonNilStrings(resp.GetBlockers())}
		for _, ph := range resp.GetPhases() {
			pj := phaseProgressJSON{Phase: toPhaseJSON(ph.GetPhase()), Done: ph.GetDone(), Environments: []envProgressJSON{}}
			for _, e := range ph.GetEnvironments() {
				pj.Environments = append(pj.Environments, envProgressJSON{Environment: e.GetEnvironment(), State: e.GetState(), RolloutID: e.GetRolloutId(),
					Version: e.GetVersion(), Allowed: e.GetAllowed(), BlockedBy: e.GetBlockedBy()})
			}
			out.Phases = append(out.Phases, pj)
		}
		return p.writeJSON(out)
	}
	lc := resp.GetLifecycle()
	if lc == "" {
		lc = "(none)"
	}
	sha := rel.GetSha256()
	if len(sha) > 12 {
		sha = sha[:12] + "…"
	}
	if _, err := fmt.Fprintf(p.w, "release %s@%s (sha256:%s), lifecycle %s\n", cell(rel.GetApp()), cell(rel.GetVersion()), sha, cell(lc)); err != nil {
		return err
	}
	var rows [][]string
	for _, ph := range resp.GetPhases() {
		done := "no"
		if ph.GetDone() {
			done = "yes"
		}
		for _, e := range ph.GetEnvironments() {
			may := "yes"
			if !e.GetAllowed() {
				may = "no: " + e.GetBlockedBy()
			}
			rollout := e.GetRolloutId()
			if v := e.GetVersion(); v != "" && v != rel.GetVersion() {
				rollout += " (as " + v + ")"
			}
			rows = append(rows, []string{ph.GetPhase().GetName() + " (" + progressWords(ph.GetPhase()) + ")", done, e.GetEnvironment(), e.GetState(), rollout, may})
		}
	}
	if err := p.table([]string{"PHASE", "DONE", "ENVIRONMENT", "STATE", "ROLLOUT", "MAY DEPLOY"}, rows); err != nil {
		return err
	}
	next := "(nowhere)"
	if len(resp.GetNext()) > 0 {
		next = strings.Join(resp.GetNext(), ", ")
	}
	if _, err := fmt.Fprintf(p.w, "next: %s\n", cell(next)); err != nil {
		return err
	}
	for _, b := range resp.GetBlockers() {
		if _, err := fmt.Fprintf(p.w, "blocked: %s\n", cell(b)); err != nil {
			return err
		}
	}
	return nil
}

// actorWords names an actor for people: "token alice", "" for none.
func actorWords(a *relv1.Actor) string {
	if a == nil {
		return ""
	}
	n := a.GetName()
	if n == "" {
		n = a.GetId()
	}
	return strings.TrimSpace(a.GetKind() + " " + n)
}

func blockWords(r *relv1.Release) string {
	if !r.GetBlocked() {
		return "no"
	}
	return fmt.Sprintf("yes, by %s: %s", actorWords(r.GetBlockedBy()), r.GetBlockReason())
}
