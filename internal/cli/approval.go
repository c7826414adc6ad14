package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/relhq/rel/internal/rollout"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// Change control's approvals in relctl: environments' approval policies,
// approving, rejecting and reviewing rollouts, and the lists of what waits.

const approvalPolicyHelp = `A deploy rollout into an environment with an approval policy starts in
state awaiting_approval: its hosts are chosen when it is requested, and
nothing is dispatched until --approvals N distinct eligible people have
approved it ("relctl rollout approve ID"). The approval that makes the
count queues it; it then starts as soon as no other rollout holds its
hosts. Each approval is bound to the rollout, the release's artifact
digest and the policy's version: changing the policy refuses the approvals
of rollouts requested before ("policy changed: request again"). A rollout
not approved within --approval-expiry (default 72h) ends failed
("approval expired after 72h"). "relctl rollout reject ID --comment TEXT"
ends it at once. Between-wave gates (--approve-waves) of its rollouts
follow the same rules: N distinct eligible approvers per wave.

Approvers (--approver, repeatable or comma-separated):
  role:ROLE     anyone holding ROLE over the app and environment (a role
                with the approve permission: approver or admin)
  token:NAME    the token named NAME (or with accessor NAME)
  client:NAME   the client certificate named NAME

Unless --allow-self-approval, neither the release's creator nor the
rollout's requester may approve it (four eyes). Rollbacks and catch-ups
never wait for approvals. With --allow-standard-changes a rollout started
with --change standard skips the approvals; otherwise standard changes are
refused. An emergency change (--emergency) needs one approval instead of N.`

func (r *runner) envApprovalPolicyCommand() *cobra.Command {
	return noun("approval-policy",
		"Set or clear the approvals an environment's rollouts need",
		approvalPolicyHelp,
		`  relctl env approval-policy set prod --approvals 2 --approver role:approver
  relctl env approval-policy set prod --approvals 1 --approver token:alice,token:bob --approval-expiry 24h
  relctl env approval-policy clear prod`,
		r.envApprovalPolicySetCommand(),
		r.envApprovalPolicyClearCommand(),
	)
}

// parseApprovers splits --approver values into roles and names.
func parseApprovers(values []string) (roles, names []string, err error) {
	for _, v := range values {
		kind, name, ok := strings.Cut(v, ":")
		if !ok || name == "" {
			return nil, nil, usagef("--approver %q: want role:ROLE, token:NAME or client:NAME", v)
		}
		switch kind {
		case "role":
			roles = append(roles, name)
		case "token", "client":
			names = append(names, name)
		default:
			return nil, nil, usagef("--approver %q: %q is not role, token or client", v, kind)
		}
	}
	return roles, names, nil
}

func (r *runner) envApprovalPolicySetCommand() *cobra.Command {
	var (
		required      uint32
		approvers     []string
		allowSelf     bool
		expiry        time.Duration
		allowStandard bool
	)
	cmd := &cobra.Command{
		Use:   "set ENV --approvals N --approver role:ROLE|token:NAME|client:NAME... [--approval-expiry 72h] [--allow-self-approval] [--allow-standard-changes]",
		Short: "Require approvals before rollouts into an environment start",
		Long: `Set environment ENV's approval policy, replacing any it had (its version
goes up, so rollouts waiting under the old one must be requested again).
relctl prints the policy set.

` + approvalPolicyHelp,
		Example: `  relctl env approval-policy set prod --approvals 2 --approver role:approver
  relctl env approval-policy set prod --approvals 2 --approver token:alice --approver token:bob --allow-standard-changes`,
		Args:              exactArgs("ENV"),
		ValidArgsFunction: r.completeEnvFlag,
		RunE: r.do(func(ctx context.Context, args []string) error {
			roles, names, err := parseApprovers(approvers)
			if err != nil {
				return err
			}
			p := &relv1.ApprovalPolicy{Required: required, Roles: roles, Names: names, AllowSelf: allowSelf, AllowStandard: allowStandard}
			if expiry != 0 {
				p.ExpiryMs = expiry.Milliseconds()
				if p.ExpiryMs == 0 {
					p.ExpiryMs = -1 // below a millisecond: refused by the server, with the limits
				}
			}
			var resp *relv1.SetApprovalPolicyResponse
			_, err = r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
				resp, err = relv1.NewApprovalServiceClient(cc).SetPolicy(ctx, &relv1.SetApprovalPolicyRequest{Environment: args[0], Policy: p}, opts...)
				return err
			})
			if err != nil {
				return err
			}
			return r.printer().approvalPolicy(args[0], resp.GetEnvironment())
		}),
	}
	cmd.Flags().Uint32Var(&required, "approvals", 0, "approvals `N` (1-10) a rollout needs, from distinct people (required)")
	_ = cmd.MarkFlagRequired("approvals")
	cmd.Flags().StringSliceVar(&approvers, "approver", nil, "who may approve: role:ROLE, token:NAME or client:NAME (repeatable)")
	cmd.Flags().BoolVar(&allowSelf, "allow-self-approval", false, "let the release's creator and the rollout's requester approve it")
	cmd.Flags().DurationVar(&expiry, "approval-expiry", 0, "how long a rollout waits for its approvals before it fails (default 72h; 1s to 2160h)")
	cmd.Flags().BoolVar(&allowStandard, "allow-standard-changes", false, "let rollouts started with --change standard skip the approvals")
	return cmd
}

func (r *runner) envApprovalPolicyClearCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "clear ENV",
		Short: "Remove an environment's approval policy",
		Long: `Remove environment ENV's approval policy: new rollouts into it start
without approvals. Rollouts still awaiting approval under the old policy
can no longer be approved ("policy changed"): reject them, or let them
expire, and request them again.`,
		Example:           `  relctl env approval-policy clear staging`,
		Args:              exactArgs("ENV"),
		ValidArgsFunction: r.completeEnvFlag,
		RunE: r.do(func(ctx context.Context, args []string) error {
			var resp *relv1.SetApprovalPolicyResponse
			_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
				resp, err = relv1.NewApprovalServiceClient(cc).SetPolicy(ctx, &relv1.SetApprovalPolicyRequest{Environment: args[0], Clear: true}, opts...)
				return err
			})
			if err != nil {
				return err
			}
			return r.printer().approvalPolicy(args[0], resp.GetEnvironment())
		}),
	}
}

// rolloutApproveOrControl sends "rollout approve": through the approval
// policy for a rollout under one (awaiting_approval, or a between-wave
// gate of a rollout requested under a policy), the old way otherwise.
func (r *runner) approveUnderPolicy(ctx context.Context, id, comment string, wave uint32, waveGiven bool) (bool, error) {
	var got *relv1.GetRolloutResponse
	_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
		got, err = relv1.NewControlServiceClient(cc).GetRollout(ctx, &relv1.GetRolloutRequest{Id: id, Read: &relv1.ReadOptions{Consistent: true}}, opts...)
		return err
	})
	if err != nil {
		return false, err
	}
	ro := got.GetStatus().GetRollout()
	if ro.GetApprovalPolicy() == nil {
		return false, nil
	}
	if !waveGiven && ro.GetState() == stateWaitingApproval {
		wave = waveBase(ro) + ro.GetCurrentWave() + 1
	}
	var resp *relv1.ApproveRolloutResponse
	_, err = r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
		resp, err = relv1.NewApprovalServiceClient(cc).Approve(ctx, &relv1.ApproveRolloutRequest{Id: id, Comment: comment, Wave: wave}, opts...)
		return err
	})
	if err != nil {
		return true, err
	}
	return true, r.printer().approved(resp.GetRollout(), wave)
}

func (r *runner) rolloutRejectCommand() *cobra.Command {
	var comment string
	cmd := &cobra.Command{
		Use:   "reject ID --comment TEXT",
		Short: "Refuse a rollout awaiting approval: it ends",
		Long: `Reject rollout ID, which awaits the approvals of its environment's
policy: it ends aborted, with "rejected by NAME: TEXT" as its reason and
you recorded as who rejected it. Only someone the policy lets approve may
reject (the release's creator and the requester included). A rollout that
has started is stopped with "relctl rollout abort" instead.`,
		Example:           `  relctl rollout reject 01J8X4W2QZ --comment "not during the Black Friday sale"`,
		Args:              exactArgs("ID"),
		ValidArgsFunction: r.completeRolloutID,
		RunE: r.do(func(ctx context.Context, args []string) error {
			var resp *relv1.RejectRolloutResponse
			_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
				resp, err = relv1.NewApprovalServiceClient(cc).Reject(ctx, &relv1.RejectRolloutRequest{Id: args[0], Comment: comment}, opts...)
				return err
			})
			if err != nil {
				return err
			}
			if r.printer().json() {
				return r.printer().writeJSON(toRolloutJSON(resp.GetRollout()))
			}
			_, err = fmt.Fprintf(r.stdout, "rollout %s: %s (%s)\n", cell(resp.GetRollout().GetId()), cell(resp.GetRollout().GetState()), cell(resp.GetRollout().GetReason()))
			return err
		}),
	}
	cmd.Flags().StringVar(&comment, "comment", "", "why, in `TEXT`: the rollout's reason for ending (required)")
	_ = cmd.MarkFlagRequired("comment")
	return cmd
}

func (r *runner) rolloutReviewCommand() *cobra.Command {
	var comment string
	cmd := &cobra.Command{
		Use:   "review ID [--comment TEXT]",
		Short: "Mark an emergency change reviewed",
		Long: `Close the post-hoc review of rollout ID, an emergency change (started with
--emergency): you are recorded as its reviewer, with the time and
--comment. Needs the approve permission; the one who requested the change
may not review it. "relctl reviews --open" lists the changes still to
review.`,
		Example:           `  relctl rollout review 01J8X4W2QZ --comment "hotfix for CVE-2026-1234, checked"`,
		Args:              exactArgs("ID"),
		ValidArgsFunction: r.completeRolloutID,
		RunE: r.do(func(ctx context.Context, args []string) error {
			var resp *relv1.ReviewRolloutResponse
			_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
				resp, err = relv1.NewApprovalServiceClient(cc).Review(ctx, &relv1.ReviewRolloutRequest{Id: args[0], Comment: comment}, opts...)
				return err
			})
			if err != nil {
				return err
			}
			if r.printer().json() {
				return r.printer().writeJSON(toRolloutJSON(resp.GetRollout()))
			}
			_, err = fmt.Fprintf(r.stdout, "rollout %s: reviewed by %s\n", cell(resp.GetRollout().GetId()), cell(rollout.ActorName(resp.GetRollout().GetReview().GetReviewedBy())))
			return err
		}),
	}
	cmd.Flags().StringVar(&comment, "comment", "", "what the review found, in `TEXT`")
	return cmd
}

func (r *runner) approvalsCommand() *cobra.Command {
	var app, env string
	pending := &cobra.Command{
		Use:   "pending [--app APP] [--env ENV]",
		Short: "List the rollouts waiting for approvals, and who may give them",
		Long: `List the rollouts that wait for approvals: those awaiting approval to
start and those waiting at a between-wave gate under a policy. For each:
the rollout, app, environment and version, who requested it, the approvals
so far and required, when it expires, and who may approve (roles and
names; "not self" when the release's creator and the requester may not).`,
		Example: `  relctl approvals pending
  relctl approvals pending --env prod -o json`,
		Args: noArgs,
		RunE: r.do(func(ctx context.Context, _ []string) error {
			var resp *relv1.PendingApprovalsResponse
			_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
				resp, err = relv1.NewApprovalServiceClient(cc).Pending(ctx, &relv1.PendingApprovalsRequest{App: app, Environment: env, Read: r.readOptions()}, opts...)
				return err
			})
			if err != nil {
				return err
			}
			return r.printer().pendingApprovals(resp.GetPending())
		}),
	}
	pending.Flags().StringVar(&app, "app", "", "only rollouts of `APP`")
	pending.Flags().StringVar(&env, "env", "", "only rollouts into `ENV`")
	return noun("approvals", "Rollouts waiting for approvals",
		`Change control: rollouts into environments with an approval policy wait
for approvals ("relctl env approval-policy --help" tells how).`,
		`  relctl approvals pending`, pending)
}

func (r *runner) reviewsCommand() *cobra.Command {
	var open bool
	cmd := &cobra.Command{
		Use:   "reviews [--open]",
		Short: "List emergency changes and their post-hoc review",
		Long: `List the rollouts started as emergency changes (--emergency), newest
first: who requested them and why, and who reviewed them and when ("open"
until someone marks them reviewed with "relctl rollout review ID").`,
		Example: `  relctl reviews --open
  relctl reviews -o json`,
		Args: noArgs,
		RunE: r.do(func(ctx context.Context, _ []string) error {
			var resp *relv1.ListReviewsResponse
			_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
				resp, err = relv1.NewApprovalServiceClient(cc).Reviews(ctx, &relv1.ListReviewsRequest{Open: open, Read: r.readOptions()}, opts...)
				return err
			})
			if err != nil {
				return err
			}
			return r.printer().reviews(resp.GetRollouts())
		}),
	}
	cmd.Flags().BoolVar(&open, "open", false, "only the changes nobody has reviewed yet")
	return cmd
}

// ---- output ----

type approvalJSON struct {
	By      string `json:"by"`
	ByID    string `json:"by_id"`
	At      string `json:"at"`
	Comment string `json:"comment"`
	// Wave: 0 for the start gate, otherwise the wave as tables number it.
	Wave uint32 `json:"wave"`
}

type approvalPolicyJSON struct {
	Required      uint32   `json:"required"`
	Approvers     []string `json:"approvers"`
	AllowSelf     bool     `json:"allow_self"`
	Expiry        string   `json:"expiry"`
	AllowStandard bool     `json:"allow_standard"`
}

// changeControlJSON is a rollout's change control in JSON.
type changeControlJSON struct {
	ChangeType    string              `json:"change_type"`
	ChangeReason  string              `json:"change_reason"`
	RequestedBy   string              `json:"requested_by"`
	Policy        *approvalPolicyJSON `json:"approval_policy,omitempty"`
	PolicyVersion uint64              `json:"approval_policy_version,omitempty"`
	Digest        string              `json:"approval_digest,omitempty"`
	ExpiresAt     string              `json:"approval_expires_at,omitempty"`
	Approvals     []approvalJSON      `json:"approvals"`
	RejectedBy    string              `json:"rejected_by,omitempty"`
	ReviewOpen    bool                `json:"review_open"`
	ReviewedBy    string              `json:"reviewed_by,omitempty"`
	ReviewedAt    string              `json:"reviewed_at,omitempty"`
	ReviewComment string              `json:"review_comment,omitempty"`
}

func toPolicyJSON(p *relv1.ApprovalPolicy) *approvalPolicyJSON {
	if p == nil {
		return nil
	}
	return &approvalPolicyJSON{Required: p.GetRequired(), Approvers: append([]string{}, rollout.Approvers(p)...), AllowSelf: p.GetAllowSelf(),
		Expiry: rollout.FormatDuration(rollout.ApprovalExpiry(p)), AllowStandard: p.GetAllowStandard()}
}

func toChangeControlJSON(r *relv1.Rollout) *changeControlJSON {
	if r.GetChangeType() == "" && r.GetApprovalPolicy() == nil && r.GetRequestedBy() == nil {
		return nil
	}
	out := &changeControlJSON{ChangeType: r.GetChangeType(), ChangeReason: r.GetChangeReason(), Policy: toPolicyJSON(r.GetApprovalPolicy()),
		PolicyVersion: r.GetApprovalPolicyVersion(), Digest: r.GetApprovalDigest(), ExpiresAt: jsonTime(r.GetApprovalExpiresUnixNano()),
		Approvals: []approvalJSON{}, ReviewOpen: rollout.ReviewOpen(r)}
	if a := r.GetRequestedBy(); a != nil {
		out.RequestedBy = rollout.ActorName(a)
	}
	for _, a := range r.GetApprovals() {
		out.Approvals = append(out.Approvals, approvalJSON{By: rollout.ActorName(a.GetActor()), ByID: a.GetActor().GetId(), At: jsonTime(a.GetAtUnixNano()), Comment: a.GetComment(), Wave: a.GetWave()})
	}
	if a := r.GetRejectedBy(); a != nil {
		out.RejectedBy = rollout.ActorName(a)
	}
	if rv := r.GetReview(); rv != nil {
		out.ReviewedBy, out.ReviewedAt, out.ReviewComment = rollout.ActorName(rv.GetReviewedBy()), jsonTime(rv.GetAtUnixNano()), rv.GetComment()
	}
	return out
}

func describePolicy(p *relv1.ApprovalPolicy) string {
	if p == nil {
		return "none"
	}
	s := fmt.Sprintf("%d approval(s) from %s, expiry %s", p.GetRequired(), strings.Join(rollout.Approvers(p), ", "), rollout.FormatDuration(rollout.ApprovalExpiry(p)))
	if p.GetAllowSelf() {
		s += ", self-approval allowed"
	}
	if p.GetAllowStandard() {
		s += ", standard changes skip it"
	}
	return s
}

func (p printer) approvalPolicy(name string, e *relv1.Environment) error {
	if p.json() {
		return p.writeJSON(struct {
			Environment string              `json:"environment"`
			Policy      *approvalPolicyJSON `json:"approval_policy"`
			Version     uint64              `json:"approval_policy_version"`
		}{name, toPolicyJSON(e.GetApprovalPolicy()), e.GetApprovalPolicyVersion()})
	}
	_, err := fmt.Fprintf(p.w, "environment %s: approval policy %s (version %d)\n", cell(name), cell(describePolicy(e.GetApprovalPolicy())), e.GetApprovalPolicyVersion())
	return err
}

func (p printer) approved(r *relv1.Rollout, wave uint32) error {
	if p.json() {
		return p.writeJSON(toRolloutJSON(r))
	}
	n, need := rollout.Approved(r, wave), r.GetApprovalPolicy().GetRequired()
	what := ""
	if wave != 0 {
		what = fmt.Sprintf(" of wave %d", wave)
	}
	_, err := fmt.Fprintf(p.w, "rollout %s: %s; %d of %d approvals%s\n", cell(r.GetId()), cell(r.GetState()), n, need, what)
	return err
}

func approversCell(pa *relv1.PendingApproval) string {
	s := strings.Join(pa.GetApprovers(), ",")
	if !pa.GetAllowSelf() {
		s += " (not self)"
	}
	return s
}

func (p printer) pendingApprovals(list []*relv1.PendingApproval) error {
	if p.json() {
		type pendingJSON struct {
			Rollout     string   `json:"rollout"`
			App         string   `json:"app"`
			Environment string   `json:"environment"`
			Version     string   `json:"version"`
			State       string   `json:"state"`
			Wave        uint32   `json:"wave"`
			RequestedBy string   `json:"requested_by"`
			Approved    uint32   `json:"approved"`
			Required    uint32   `json:"required"`
			ExpiresAt   string   `json:"expires_at"`
			Approvers   []string `json:"approvers"`
			AllowSelf   bool     `json:"allow_self"`
			// The command that shows what the rollout changes.
			WhatChanges string `json:"what_changes"`
		}
		out := []pendingJSON{}
		for _, pa := range list {
			r := pa.GetRollout()
			out = append(out, pendingJSON{r.GetId(), r.GetApp(), r.GetEnvironment(), r.GetVersion(), r.GetState(), pa.GetWave(),
				rollout.ActorName(r.GetRequestedBy()), pa.GetApproved(), pa.GetRequired(), jsonTime(r.GetApprovalExpiresUnixNano()),
				append([]string{}, pa.GetApprovers()...), pa.GetAllowSelf(), notesCommand(r.GetApp(), r.GetVersion(), r.GetEnvironment())})
		}
		return p.writeJSON(out)
	}
	rows := make([][]string, 0, len(list))
	for _, pa := range list {
		r := pa.GetRollout()
		gate := "start"
		if pa.GetWave() != 0 {
			gate = fmt.Sprintf("wave %d", pa.GetWave())
		}
		expires := formatTime(r.GetApprovalExpiresUnixNano(), time.RFC3339)
		if pa.GetWave() != 0 {
			expires = ""
		}
		rows = append(rows, []string{r.GetId(), r.GetApp(), r.GetEnvironment(), r.GetVersion(), gate, rollout.ActorName(r.GetRequestedBy()),
			fmt.Sprintf("%d/%d", pa.GetApproved(), pa.GetRequired()), expires, approversCell(pa)})
	}
	if err := p.table([]string{"ROLLOUT", "APP", "ENV", "VERSION", "GATE", "REQUESTER", "APPROVALS", "EXPIRES", "APPROVERS"}, rows); err != nil {
		return err
	}
	// Approvers should see what they approve: one line per candidate.
	seen := map[string]bool{}
	for _, pa := range list {
		r := pa.GetRollout()
		line := whatChanges(r.GetApp(), r.GetVersion(), r.GetEnvironment())
		if !seen[line] {
			seen[line] = true
			if _, err := fmt.Fprintln(p.w, line); err != nil {
				return err
			}
		}
	}
	return nil
}

func (p printer) reviews(list []*relv1.Rollout) error {
	if p.json() {
		out := []rolloutJSON{}
		for _, r := range list {
			out = append(out, toRolloutJSON(r))
		}
		return p.writeJSON(out)
	}
	rows := make([][]string, 0, len(list))
	for _, r := range list {
		review, by, at := "open", "", ""
		if rv := r.GetReview(); rv != nil {
			review, by, at = "reviewed", rollout.ActorName(rv.GetReviewedBy()), formatTime(rv.GetAtUnixNano(), time.RFC3339)
		}
		rows = append(rows, []string{r.GetId(), r.GetApp(), r.GetEnvironment(), r.GetVersion(), r.GetState(), rollout.ActorName(r.GetRequestedBy()),
			r.GetChangeReason(), review, by, at})
	}
	return p.table([]string{"ROLLOUT", "APP", "ENV", "VERSION", "STATE", "REQUESTER", "REASON", "REVIEW", "BY", "AT"}, rows)
}

// changeControlLines are rollout status's header lines of change control.
func changeControlLines(r *relv1.Rollout) [][2]string {
	var out [][2]string
	if ct := r.GetChangeType(); ct != "" {
		if r.GetChangeReason() != "" {
			ct += ": " + r.GetChangeReason()
		}
		out = append(out, [2]string{"Change", ct})
	}
	if w := r.GetFreezeOverridden(); w != "" {
		out = append(out, [2]string{"Freeze", "overrode freeze window " + w + " (emergency change)"})
	}
	if a := r.GetRequestedBy(); a != nil {
		out = append(out, [2]string{"Requested by", rollout.ActorName(a)})
	}
	if p := r.GetApprovalPolicy(); p != nil {
		s := fmt.Sprintf("%d of %d (%s)", rollout.Approved(r, 0), p.GetRequired(), strings.Join(rollout.Approvers(p), ", "))
		if r.GetState() == rollout.StateAwaitingApproval {
			s += ", expires " + formatTime(r.GetApprovalExpiresUnixNano(), time.RFC3339)
		}
		out = append(out, [2]string{"Approvals", s})
	}
	for _, a := range r.GetApprovals() {
		s := rollout.ActorName(a.GetActor()) + " at " + formatTime(a.GetAtUnixNano(), time.RFC3339)
		if a.GetWave() != 0 {
			s += fmt.Sprintf(" (wave %d)", a.GetWave())
		}
		if a.GetComment() != "" {
			s += ": " + a.GetComment()
		}
		out = append(out, [2]string{"  approved by", s})
	}
	if a := r.GetRejectedBy(); a != nil {
		out = append(out, [2]string{"Rejected by", rollout.ActorName(a)})
	}
	if r.GetChangeType() == rollout.ChangeEmergency {
		s := "open: 'relctl rollout review " + r.GetId() + "'"
		if rv := r.GetReview(); rv != nil {
			s = "reviewed by " + rollout.ActorName(rv.GetReviewedBy()) + " at " + formatTime(rv.GetAtUnixNano(), time.RFC3339)
			if rv.GetComment() != "" {
				s += ": " + rv.GetComment()
			}
		}
		out = append(out, [2]string{"Review", s})
	}
	return out
}
