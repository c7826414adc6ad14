package cli

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// What runs where: "env show" and "status".

func (r *runner) envShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "show ENV",
		Short: "Show what runs in an environment, and which hosts are off it",
		Long: `Show environment ENV: its selector, the hosts it selects now, and for each
app its current release (the release of its last rollout or rollback to ENV
that succeeded), how many hosts are healthy on it, the rollout under way,
and every host off the current release with why:

  offline        the agent is disconnected
  in_rollout     a rollout of the app to ENV holds the host
  failed         its last install failed (the reason follows)
  installing     it is changing release now
  not_installed  it runs nothing of the app (a host that joined ENV later)
  behind         it runs an earlier rollout's release (it was away when the
                 last one ran)
  other_rollout  it runs what a rollout to another (overlapping) environment,
                 or one to ENV that did not succeed, put there
  out_of_band    it runs a release no rollout put there
  drifted        its agent saw the release it installed changed by hand
                 (the current link switched or removed)

With catch-up on (relctl env create --catch-up auto, the default), the
leader takes not_installed, behind, out_of_band and drifted hosts to the
current release through a catch_up rollout.`,
		Example: `  relctl env show prod
  relctl env show prod -o json | jq '.apps[] | {app, current_version, off}'`,
		Args:              exactArgs("ENV"),
		ValidArgsFunction: r.completeEnvFlag,
		RunE: r.do(func(ctx context.Context, args []string) error {
			var resp *relv1.ShowEnvironmentResponse
			_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
				resp, err = relv1.NewControlServiceClient(cc).ShowEnvironment(ctx,
					&relv1.ShowEnvironmentRequest{Name: args[0], Read: r.readOptions()}, opts...)
				return err
			})
			if err != nil {
				return err
			}
			return r.printer().environmentShow(resp)
		}),
	}
}

func (r *runner) statusCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show what runs where: every app in every environment",
		Long: `Show the matrix of apps and environments: each app's current release in
each environment (the release of its last succeeded rollout or rollback
there), hosts healthy on it of all the environment's hosts, the number off
it, and the rollout under way. "relctl env show ENV" says which hosts are
off and why.`,
		Example: `  relctl status
  relctl status -o json | jq '.cells[] | select(.off_count > 0)'`,
		Args:              exactArgs(),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: r.do(func(ctx context.Context, _ []string) error {
			var resp *relv1.OverviewResponse
			_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
				resp, err = relv1.NewControlServiceClient(cc).Overview(ctx, &relv1.OverviewRequest{Read: r.readOptions()}, opts...)
				return err
			})
			if err != nil {
				return err
			}
			return r.printer().overview(resp)
		}),
	}
}

type offHostJSON struct {
	AgentID string `json:"agent_id"`
	Why     string `json:"why"`
	Version string `json:"version"`
	Phase   string `json:"phase"`
	Detail  string `json:"detail"`
}

type envAppJSON struct {
	App                  string        `json:"app"`
	Environment          string        `json:"environment"`
	CurrentVersion       string        `json:"current_version"`
	CurrentRolloutID     string        `json:"current_rollout_id"`
	Hosts                uint32        `json:"hosts"`
	OnCurrent            uint32        `json:"on_current"`
	OffCount             int           `json:"off_count"`
	ActiveRolloutID      string        `json:"active_rollout_id"`
	ActiveRolloutState   string        `json:"active_rollout_state"`
	ActiveRolloutVersion string        `json:"active_rollout_version"`
	Off                  []offHostJSON `json:"off"`
}

func toEnvAppJSON(s *relv1.EnvAppStatus) envAppJSON {
	out := envAppJSON{App: s.GetApp(), Environment: s.GetEnvironment(), CurrentVersion: s.GetCurrentVersion(), CurrentRolloutID: s.GetCurrentRolloutId(),
		Hosts: s.GetHosts(), OnCurrent: s.GetOnCurrent(), OffCount: len(s.GetOff()), ActiveRolloutID: s.GetActiveRolloutId(),
		ActiveRolloutState: s.GetActiveRolloutState(), ActiveRolloutVersion: s.GetActiveRolloutVersion(), Off: []offHostJSON{}}
	for _, o := range s.GetOff() {
		out.Off = append(out.Off, offHostJSON{AgentID: o.GetAgentId(), Why: o.GetWhy(), Version: o.GetVersion(), Phase: o.GetPhase(), Detail: o.GetDetail()})
	}
	return out
}

// activeRollout says "ID (state, VERSION)" or "".
func activeRollout(s *relv1.EnvAppStatus) string {
	if s.GetActiveRolloutId() == "" {
		return ""
	}
	return fmt.Sprintf("%s (%s, %s)", s.GetActiveRolloutId(), s.GetActiveRolloutState(), s.GetActiveRolloutVersion())
}

func orNone(v string) string {
	if v == "" {
		return "none"
	}
	return v
}

func (p printer) environmentShow(resp *relv1.ShowEnvironmentResponse) error {
	if p.json() {
		out := struct {
			Name        string              `json:"name"`
			Description string              `json:"description"`
			Selector    map[string]string   `json:"selector"`
			Hosts       []string            `json:"hosts"`
			Offline     []string            `json:"offline"`
			Apps        []envAppJSON        `json:"apps"`
			Index       uint64              `json:"index"`
			Approvals   *approvalPolicyJSON `json:"approval_policy,omitempty"`
		}{Name: resp.GetEnvironment().GetName(), Description: resp.GetEnvironment().GetDescription(), Selector: resp.GetEnvironment().GetSelector(),
			Hosts: append([]string{}, resp.GetHosts()...), Offline: append([]string{}, resp.GetOffline()...), Apps: []envAppJSON{}, Index: resp.GetIndex(),
			Approvals: toPolicyJSON(resp.GetEnvironment().GetApprovalPolicy())}
		for _, a := range resp.GetApps() {
			out.Apps = append(out.Apps, toEnvAppJSON(a))
		}
		return p.writeJSON(out)
	}
	env := resp.GetEnvironment()
	hosts := fmt.Sprintf("%d", len(resp.GetHosts()))
	if n := len(resp.GetOffline()); n > 0 {
		hosts += fmt.Sprintf(" (%d offline)", n)
	}
	if err := p.aligned(1, func(tw io.Writer) {
		fmt.Fprintf(tw, "Environment:\t%s\n", cell(env.GetName()))
		if env.GetDescription() != "" {
			fmt.Fprintf(tw, "Description:\t%s\n", cell(env.GetDescription()))
		}
		fmt.Fprintf(tw, "Selector:\t%s\n", cell(formatMap(env.GetSelector())))
		fmt.Fprintf(tw, "Hosts:\t%s\n", hosts)
		if p := env.GetApprovalPolicy(); p != nil {
			fmt.Fprintf(tw, "Approvals:\t%s\n", cell(describePolicy(p)))
		}
	}); err != nil {
		return err
	}
	if len(resp.GetApps()) == 0 {
		_, err := fmt.Fprintln(p.w, "\nNo release has been rolled out here yet.")
		return err
	}
	for _, a := range resp.GetApps() {
		if _, err := fmt.Fprintf(p.w, "\n%s: current %s, %d of %d hosts on it", cell(a.GetApp()), cell(orNone(a.GetCurrentVersion())), a.GetOnCurrent(), a.GetHosts()); err != nil {
			return err
		}
		if ar := activeRollout(a); ar != "" {
			if _, err := fmt.Fprintf(p.w, "; rollout %s under way", cell(ar)); err != nil {
				return err
			}
		}
		if _, err := fmt.Fprintln(p.w); err != nil {
			return err
		}
		if len(a.GetOff()) == 0 {
			continue
		}
		rows := make([][]string, 0, len(a.GetOff()))
		for _, o := range a.GetOff() {
			rows = append(rows, []string{o.GetAgentId(), o.GetWhy(), o.GetVersion(), o.GetPhase(), o.GetDetail()})
		}
		if err := p.table([]string{"HOST", "OFF", "RUNS", "PHASE", "DETAIL"}, rows); err != nil {
			return err
		}
	}
	return nil
}

func (p printer) overview(resp *relv1.OverviewResponse) error {
	if p.json() {
		out := struct {
			Apps         []string     `json:"apps"`
			Environments []string     `json:"environments"`
			Cells        []envAppJSON `json:"cells"`
			Index        uint64       `json:"index"`
		}{Apps: append([]string{}, resp.GetApps()...), Environments: append([]string{}, resp.GetEnvironments()...), Cells: []envAppJSON{}, Index: resp.GetIndex()}
		for _, c := range resp.GetCells() {
			out.Cells = append(out.Cells, toEnvAppJSON(c))
		}
		return p.writeJSON(out)
	}
	if len(resp.GetCells()) == 0 {
		_, err := fmt.Fprintln(p.w, `Nothing rolled out yet: "relctl rollout start APP@VERSION --env ENV" starts one.`)
		return err
	}
	rows := make([][]string, 0, len(resp.GetCells()))
	for _, c := range resp.GetCells() {
		off := ""
		if n := len(c.GetOff()); n > 0 {
			whys := map[string]int{}
			var order []string
			for _, o := range c.GetOff() {
				if whys[o.GetWhy()] == 0 {
					order = append(order, o.GetWhy())
				}
				whys[o.GetWhy()]++
			}
			parts := make([]string, 0, len(order))
			for _, w := range order {
				parts = append(parts, fmt.Sprintf("%d %s", whys[w], w))
			}
			off = strings.Join(parts, ", ")
		}
		rows = append(rows, []string{c.GetApp(), c.GetEnvironment(), orNone(c.GetCurrentVersion()),
			fmt.Sprintf("%d/%d", c.GetOnCurrent(), c.GetHosts()), off, activeRollout(c)})
	}
	return p.table([]string{"APP", "ENV", "RELEASE", "ON IT", "OFF", "ROLLOUT"}, rows)
}
