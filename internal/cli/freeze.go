package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/relhq/rel/internal/freeze"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

func (r *runner) freezeCommand() *cobra.Command {
	return noun("freeze",
		"Manage freeze windows: times when deploys to some environments wait",
		`A freeze window stops deploy rollouts of some apps (globs) to some
environments (names or globs) for a time: absolute (--start and --end, RFC
3339) or recurring (--cron-start and --cron-end, five-field cron
expressions read in the IANA time zone --tz).

Inside a freeze:
  * a deploy rollout requested is created in state "frozen" and starts by
    itself when the freeze ends (through the environment's approvals first,
    where it has a policy);
  * a running deploy finishes its current wave, then pauses ("freeze W until
    ...") and resumes by itself when the freeze ends;
  * rollbacks are always allowed, and so are catch-ups;
  * "relctl rollout start --emergency --reason TEXT" overrides the freeze,
    and the rollout records the window it overrode.

Creating and deleting windows needs the operator or admin role (manage-apps);
anyone who reads may list them and ask "freeze status".`,
		`  relctl freeze create weekend --apps '*' --env prod --cron-start '0 18 * * FRI' --cron-end '0 8 * * MON' --tz Europe/Berlin --reason 'weekend freeze'
  relctl freeze create black-friday --apps 'web*' --env 'prod*' --start 2026-11-27T00:00:00+01:00 --end 2026-11-30T08:00:00+01:00 --tz Europe/Berlin --reason 'release freeze for Black Friday'
  relctl freeze status --env prod
  relctl freeze list
  relctl freeze delete black-friday`,
		r.freezeCreateCommand(),
		r.freezeListCommand(),
		r.freezeDeleteCommand(),
		r.freezeStatusCommand(),
	)
}

func (r *runner) freezeCreateCommand() *cobra.Command {
	var (
		apps, envs                             []string
		start, end, cronStart, cronEnd, tz, rs string
	)
	cmd := &cobra.Command{
		Use:   "create NAME --apps GLOB --env ENV (--start TIME --end TIME | --cron-start EXPR --cron-end EXPR) [--tz ZONE] --reason TEXT",
		Short: "Create a freeze window",
		Long: `Create the freeze window NAME over the apps --apps (globs, repeatable or
comma-separated; '*' for every app) in the environments --env (names or
globs), either:

  absolute   --start TIME --end TIME, RFC 3339 (e.g. 2026-11-27T18:00:00+01:00);
             the freeze holds from start up to (not including) end
  recurring  --cron-start EXPR --cron-end EXPR, five-field cron expressions
             (minute hour day-of-month month day-of-week, e.g. "0 18 * * FRI")
             read in --tz (an IANA time zone such as Europe/Berlin; UTC when
             not given). A recurring freeze holds from each start to the end
             that follows it, and follows the zone's daylight saving time.

--tz also names the zone freeze messages show times in. A freeze lasts at
most a year (each occurrence, for a recurring one). A name already in use
is refused: delete the old window first. Needs the operator or admin role.`,
		Example: `  relctl freeze create weekend --apps '*' --env prod --cron-start '0 18 * * FRI' --cron-end '0 8 * * MON' --tz Europe/Berlin --reason 'weekend freeze'
  relctl freeze create black-friday --apps 'web*' --env prod --start 2026-11-27T00:00:00+01:00 --end 2026-11-30T08:00:00+01:00 --tz Europe/Berlin --reason 'release freeze for Black Friday'`,
		Args:              exactArgs("NAME"),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: r.do(func(ctx context.Context, args []string) error {
			w := &relv1.FreezeWindow{Name: args[0], Apps: splitList(apps), Environments: splitList(envs),
				CronStart: cronStart, CronEnd: cronEnd, TimeZone: tz, Reason: rs}
			for _, t := range []struct {
				flag, val string
				dst       *int64
			}{{"--start", start, &w.StartUnixNano}, {"--end", end, &w.EndUnixNano}} {
				if t.val == "" {
					continue
				}
				at, err := time.Parse(time.RFC3339, t.val)
				if err != nil {
					return usagef("invalid %s %q: want an RFC 3339 time, e.g. 2026-11-27T18:00:00+01:00 or 2026-11-27T17:00:00Z", t.flag, t.val)
				}
				*t.dst = at.UnixNano()
			}
			var resp *relv1.CreateFreezeResponse
			_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
				resp, err = relv1.NewFreezeServiceClient(cc).CreateFreeze(ctx, &relv1.CreateFreezeRequest{Window: w}, opts...)
				return err
			})
			if err != nil {
				return err
			}
			return r.printer().created("freeze window", w.GetName(), resp.GetIndex(), toFreezeJSON(resp.GetWindow()))
		}),
	}
	f := cmd.Flags()
	f.StringSliceVar(&apps, "apps", nil, "apps it freezes: `GLOB`s, repeatable or comma-separated ('*' for every app)")
	f.StringSliceVar(&envs, "env", nil, "environments it freezes: names or `GLOB`s, repeatable or comma-separated")
	f.StringVar(&start, "start", "", "absolute window: its start, an RFC 3339 `TIME`")
	f.StringVar(&end, "end", "", "absolute window: its end (excluded), an RFC 3339 `TIME`")
	f.StringVar(&cronStart, "cron-start", "", "recurring window: when each freeze starts, a five-field cron `EXPR` (e.g. \"0 18 * * FRI\")")
	f.StringVar(&cronEnd, "cron-end", "", "recurring window: when each freeze ends, a five-field cron `EXPR` (e.g. \"0 8 * * MON\")")
	f.StringVar(&tz, "tz", "", "IANA time `ZONE` the cron expressions are read in and times are shown in (default UTC)")
	f.StringVar(&rs, "reason", "", "why: shown in freeze status and in the reason of the rollouts it holds")
	return cmd
}

// splitList trims the items of a repeatable, comma-separated flag.
func splitList(in []string) []string {
	var out []string
	for _, s := range in {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

func (r *runner) listFreezes(ctx context.Context) ([]*relv1.FreezeWindow, error) {
	var resp *relv1.ListFreezesResponse
	_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
		resp, err = relv1.NewFreezeServiceClient(cc).ListFreezes(ctx, &relv1.ListFreezesRequest{Read: r.readOptions()}, opts...)
		return err
	})
	return resp.GetWindows(), err
}

func (r *runner) freezeListCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List freeze windows",
		Long: `List every freeze window: its name, apps, environments, when it holds
(absolute times, or the cron expressions and their time zone), the reason
and who made it.`,
		Example: `  relctl freeze list
  relctl freeze list -o json | jq -r '.windows[].name'`,
		Args:              exactArgs(),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: r.do(func(ctx context.Context, _ []string) error {
			ws, err := r.listFreezes(ctx)
			if err != nil {
				return err
			}
			return r.printer().freezes(ws)
		}),
	}
}

func (r *runner) freezeDeleteCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a freeze window",
		Long: `Delete the freeze window NAME. Rollouts it held (frozen, or paused between
waves by it) go on by themselves at once, unless another window still holds
them. Needs the operator or admin role.`,
		Example: `  relctl freeze delete black-friday`,
		Args:    exactArgs("NAME"),
		ValidArgsFunction: func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			if len(args) > 0 {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			return r.complete(cmd, toComplete, func(ctx context.Context) ([]string, error) {
				ws, err := r.listFreezes(ctx)
				names := make([]string, 0, len(ws))
				for _, w := range ws {
					names = append(names, w.GetName())
				}
				return names, err
			})
		},
		RunE: r.do(func(ctx context.Context, args []string) error {
			var resp *relv1.DeleteFreezeResponse
			_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
				resp, err = relv1.NewFreezeServiceClient(cc).DeleteFreeze(ctx, &relv1.DeleteFreezeRequest{Name: args[0]}, opts...)
				return err
			})
			if err != nil {
				return err
			}
			return r.printer().freezeDeleted(args[0], resp.GetIndex())
		}),
	}
}

func (r *runner) freezeStatusCommand() *cobra.Command {
	var env, app, at string
	cmd := &cobra.Command{
		Use:   "status --env ENV [--app APP] [--at TIME]",
		Short: "Say whether an environment is frozen, until when and why",
		Long: `Say in plain words whether ENV is frozen now (or at --at, an RFC 3339
time), until when (overlapping and back-to-back windows taken together) and
by which window; or, when it is not, when the next freeze starts. Without
--app the question is about the environment as a whole: windows over every
app ('*'); with --app, about that app's deploys.`,
		Example: `  relctl freeze status --env prod
  relctl freeze status --env prod --app web --at 2026-11-28T10:00:00Z
  relctl freeze status --env prod -o json | jq .frozen`,
		Args:              exactArgs(),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: r.do(func(ctx context.Context, _ []string) error {
			if env == "" {
				return usagef("--env is required: the environment to ask about")
			}
			req := &relv1.FreezeStatusRequest{Read: r.readOptions(), Environment: env, App: app}
			if at != "" {
				t, err := time.Parse(time.RFC3339, at)
				if err != nil {
					return usagef("invalid --at %q: want an RFC 3339 time, e.g. 2026-11-28T10:00:00Z", at)
				}
				req.AtUnixNano = t.UnixNano()
			}
			var resp *relv1.FreezeStatusResponse
			_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
				resp, err = relv1.NewFreezeServiceClient(cc).FreezeStatus(ctx, req, opts...)
				return err
			})
			if err != nil {
				return err
			}
			return r.printer().freezeStatus(resp)
		}),
	}
	cmd.Flags().StringVar(&env, "env", "", "the `ENV`ironment to ask about (required)")
	cmd.Flags().StringVar(&app, "app", "", "ask about this `APP`'s deploys (default: windows over every app)")
	cmd.Flags().StringVar(&at, "at", "", "ask about this RFC 3339 `TIME` instead of now")
	return cmd
}

type freezeJSON struct {
	Name         string   `json:"name"`
	Apps         []string `json:"apps"`
	Environments []string `json:"environments"`
	Start        string   `json:"start,omitempty"`
	End          string   `json:"end,omitempty"`
	CronStart    string   `json:"cron_start,omitempty"`
	CronEnd      string   `json:"cron_end,omitempty"`
	TimeZone     string   `json:"time_zone,omitempty"`
	Reason       string   `json:"reason"`
	CreatedBy    string   `json:"created_by"`
	CreatedAt    string   `json:"created_at"`
	CreateIndex  uint64   `json:"create_index"`
}

func toFreezeJSON(w *relv1.FreezeWindow) freezeJSON {
	by := w.GetCreatedBy().GetName()
	if by == "" {
		by = w.GetCreatedBy().GetId()
	}
	return freezeJSON{
		Name: w.GetName(), Apps: nonNilSlice(w.GetApps()), Environments: nonNilSlice(w.GetEnvironments()),
		Start: formatTime(w.GetStartUnixNano(), time.RFC3339), End: formatTime(w.GetEndUnixNano(), time.RFC3339),
		CronStart: w.GetCronStart(), CronEnd: w.GetCronEnd(), TimeZone: w.GetTimeZone(), Reason: w.GetReason(),
		CreatedBy: by, CreatedAt: formatTime(w.GetCreatedUnixNano(), time.RFC3339), CreateIndex: w.GetCreateIndex(),
	}
}

func nonNilSlice(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// freezeWhen says when a window holds, for the list.
func freezeWhen(w *relv1.FreezeWindow) string {
	if w.GetCronStart() != "" {
		tz := w.GetTimeZone()
		if tz == "" {
			tz = "UTC"
		}
		return fmt.Sprintf("from %q to %q %s", w.GetCronStart(), w.GetCronEnd(), tz)
	}
	return freeze.FormatTime(w, time.Unix(0, w.GetStartUnixNano())) + " to " + freeze.FormatTime(w, time.Unix(0, w.GetEndUnixNano()))
}

func (p printer) freezes(ws []*relv1.FreezeWindow) error {
	if p.json() {
		out := struct {
			Windows []freezeJSON `json:"windows"`
		}{Windows: []freezeJSON{}}
		for _, w := range ws {
			out.Windows = append(out.Windows, toFreezeJSON(w))
		}
		return p.writeJSON(out)
	}
	rows := make([][]string, 0, len(ws))
	for _, w := range ws {
		j := toFreezeJSON(w)
		rows = append(rows, []string{cell(w.GetName()), cell(strings.Join(w.GetApps(), ",")), cell(strings.Join(w.GetEnvironments(), ",")),
			cell(freezeWhen(w)), cell(w.GetReason()), cell(j.CreatedBy)})
	}
	return p.table([]string{"NAME", "APPS", "ENVIRONMENTS", "WHEN", "REASON", "CREATED BY"}, rows)
}

func (p printer) freezeDeleted(name string, index uint64) error {
	if p.json() {
		return p.writeJSON(struct {
			Name  string `json:"name"`
			Index uint64 `json:"index"`
		}{name, index})
	}
	_, err := fmt.Fprintf(p.w, "deleted freeze window %s (index %d)\n", cell(name), index)
	return err
}

type freezeStatusJSON struct {
	Frozen     bool        `json:"frozen"`
	Until      string      `json:"until,omitempty"`
	Window     *freezeJSON `json:"window,omitempty"`
	NextStart  string      `json:"next_start,omitempty"`
	NextEnd    string      `json:"next_end,omitempty"`
	NextWindow *freezeJSON `json:"next_window,omitempty"`
	At         string      `json:"at"`
	Message    string      `json:"message"`
}

func (p printer) freezeStatus(resp *relv1.FreezeStatusResponse) error {
	if p.json() {
		out := freezeStatusJSON{Frozen: resp.GetFrozen(), Until: formatTime(resp.GetUntilUnixNano(), time.RFC3339),
			NextStart: formatTime(resp.GetNextStartUnixNano(), time.RFC3339), NextEnd: formatTime(resp.GetNextEndUnixNano(), time.RFC3339),
			At: formatTime(resp.GetAtUnixNano(), time.RFC3339), Message: resp.GetMessage()}
		if w := resp.GetWindow(); w != nil {
			j := toFreezeJSON(w)
			out.Window = &j
		}
		if w := resp.GetNextWindow(); w != nil {
			j := toFreezeJSON(w)
			out.NextWindow = &j
		}
		return p.writeJSON(out)
	}
	_, err := io.WriteString(p.w, text(resp.GetMessage())+"\n")
	return err
}
