package rollout

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// Change control's approvals: who may approve a rollout under an
// environment's approval policy, and what an approval, a rejection, an
// expiry and a review do to it. Pure functions: the state store looks up
// the rows and applies what these decide, in one raft entry.

// DefaultApprovalExpiry is how long a rollout waits for its approvals when
// the policy gives no expiry.
const DefaultApprovalExpiry = 72 * time.Hour

// MaxApprovalsRequired bounds ApprovalPolicy.required.
const MaxApprovalsRequired = 10

// Event types of change control.
const (
	EventAwaitingApproval = "awaiting_approval"
	EventApproval         = "approval"
	EventRejected         = "rejected"
	EventApprovalExpired  = "approval_expired"
	EventReviewed         = "reviewed"
)

// ErrNotEligible is an approval (or rejection, or review) by somebody the
// policy does not allow: not named, without a role it names, or the
// release's creator or the rollout's requester when it forbids self
// approval. The error's text says why for people.
var ErrNotEligible = errors.New("not eligible")

func notEligible(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrNotEligible, fmt.Sprintf(format, args...))
}

// ApprovalExpiry is a policy's expiry (its default when unset).
func ApprovalExpiry(p *relv1.ApprovalPolicy) time.Duration {
	if p.GetExpiryMs() <= 0 {
		return DefaultApprovalExpiry
	}
	return time.Duration(p.GetExpiryMs()) * time.Millisecond
}

// FormatDuration prints a duration as people write it: 72h, 90m, 5s.
func FormatDuration(d time.Duration) string {
	switch {
	case d >= time.Hour && d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	case d >= time.Minute && d%time.Minute == 0:
		return fmt.Sprintf("%dm", d/time.Minute)
	}
	return d.String()
}

// ActorName is how people read an actor: a token's name, else its id.
func ActorName(a *relv1.Actor) string {
	if a.GetName() != "" {
		return a.GetName()
	}
	if a.GetId() != "" {
		return a.GetId()
	}
	return "the servers"
}

// Approvers lists who may approve under p, as people write them:
// role:NAME, then the names.
func Approvers(p *relv1.ApprovalPolicy) []string {
	var out []string
	for _, r := range p.GetRoles() {
		out = append(out, "role:"+r)
	}
	return append(out, p.GetNames()...)
}

// Eligible reports whether actor, holding roles over the rollout's app and
// environment, is one of p's approvers.
func Eligible(p *relv1.ApprovalPolicy, actor *relv1.Actor, roles []string) bool {
	if actor.GetId() == "" {
		return false
	}
	for _, r := range roles {
		if slices.Contains(p.GetRoles(), r) {
			return true
		}
	}
	for _, n := range p.GetNames() {
		if n == actor.GetId() || (actor.GetName() != "" && n == actor.GetName()) {
			return true
		}
	}
	return false
}

// Gate is the gate a rollout waits at: 0 for the start (awaiting_approval),
// the wave as people number it for a between-wave gate under a policy;
// ok is false when it waits at none that approvals open.
func Gate(r *relv1.Rollout) (wave uint32, ok bool) {
	switch {
	case r.GetState() == StateAwaitingApproval:
		return 0, true
	case r.GetState() == StateWaitingApproval && r.GetApprovalPolicy() != nil:
		return WaveNumber(r, r.GetCurrentWave()+1), true
	}
	return 0, false
}

// Approved counts the approvals given for one gate.
func Approved(r *relv1.Rollout, wave uint32) uint32 {
	var n uint32
	for _, a := range r.GetApprovals() {
		if a.GetWave() == wave {
			n++
		}
	}
	return n
}

// ApprovalInput is what an approval (or rejection) is decided on: the
// rollout as stored, its release, its environment's current policy
// version, who acts with which roles over the rollout's app and
// environment, and when (the accepting server's stamp).
type ApprovalInput struct {
	Rollout          *relv1.Rollout
	Release          *relv1.Release
	EnvPolicyVersion uint64
	Actor            *relv1.Actor
	Roles            []string
	Comment          string
	Wave             uint32
	At               int64
}

// checkApprover applies the rules every approval and rejection share.
func checkApprover(in ApprovalInput, verb string) error {
	r := in.Rollout
	p := r.GetApprovalPolicy()
	who := ActorName(in.Actor)
	if in.Actor.GetId() == "" {
		return notEligible("%s needs a person or pipeline (a token or a client certificate), not the servers", verb)
	}
	if !Eligible(p, in.Actor, in.Roles) {
		return notEligible("%s may not %s rollout %s: its approval policy names %s", who, verb, r.GetId(), strings.Join(Approvers(p), ", "))
	}
	if !p.GetAllowSelf() && verb == "approve" {
		if r.GetRequestedBy().GetId() == in.Actor.GetId() {
			return notEligible("%s requested rollout %s and may not approve it: another approver must (the policy forbids self-approval)", who, r.GetId())
		}
		if in.Release.GetCreatedBy().GetId() == in.Actor.GetId() {
			return notEligible("%s created release %s@%s and may not approve its rollout %s: another approver must (the policy forbids self-approval)", who, r.GetApp(), r.GetVersion(), r.GetId())
		}
	}
	return nil
}

// checkBinding refuses an approval of the start gate once the rollout
// expired, its environment's policy changed or its release's digest is
// not the one it was requested with.
func checkBinding(in ApprovalInput) error {
	r := in.Rollout
	if exp := r.GetApprovalExpiresUnixNano(); exp != 0 && in.At >= exp {
		return refused("rollout %s's approval expired at %s (%s after its request): request it again", r.GetId(),
			time.Unix(0, exp).UTC().Format(time.RFC3339), FormatDuration(ApprovalExpiry(r.GetApprovalPolicy())))
	}
	if in.EnvPolicyVersion != r.GetApprovalPolicyVersion() {
		return refused("policy changed: environment %s's approval policy is at version %d, rollout %s was requested under version %d: request again", r.GetEnvironment(), in.EnvPolicyVersion, r.GetId(), r.GetApprovalPolicyVersion())
	}
	if in.Release == nil {
		return refused("release %s@%s is gone: rollout %s cannot start; request a new rollout", r.GetApp(), r.GetVersion(), r.GetId())
	}
	if in.Release.GetSha256() != r.GetApprovalDigest() {
		return refused("release %s@%s's artifact is sha256:%s, not the sha256:%s rollout %s was requested with: request again", r.GetApp(), r.GetVersion(), in.Release.GetSha256(), r.GetApprovalDigest(), r.GetId())
	}
	return nil
}

// Approve decides one approval: the rollout's new row and its events, or
// ErrRefused (not waiting for it, expired, policy changed, twice) or
// ErrNotEligible. The approval that makes the count opens the gate in the
// same decision: the start gate queues the rollout (the engine starts it
// when nothing holds its hosts), a wave's gate lets the wave start.
func Approve(in ApprovalInput) (*relv1.Rollout, []*relv1.RolloutEvent, error) {
	cur := in.Rollout
	id := cur.GetId()
	if cur.GetApprovalPolicy() == nil {
		return nil, nil, refused("rollout %s is under no approval policy: %s", id, noPolicyHint(cur))
	}
	gate, ok := Gate(cur)
	if !ok {
		return nil, nil, refused("cannot approve rollout %s: it is %s, not waiting for approval", id, cur.GetState())
	}
	if in.Wave != gate {
		if gate == 0 {
			return nil, nil, refused("cannot approve wave %d of rollout %s: it awaits approval to start (approve without --wave)", in.Wave, id)
		}
		return nil, nil, refused("cannot approve wave %d of rollout %s: it waits for approval of %s (--wave %d)", in.Wave, id, WaveLabel(cur, cur.GetCurrentWave()+1), gate)
	}
	if gate == 0 {
		if err := checkBinding(in); err != nil {
			return nil, nil, err
		}
	}
	if err := checkApprover(in, "approve"); err != nil {
		return nil, nil, err
	}
	for _, a := range cur.GetApprovals() {
		if a.GetWave() == gate && a.GetActor().GetId() == in.Actor.GetId() {
			what := "rollout " + id
			if gate != 0 {
				what += fmt.Sprintf(" (wave %d)", gate)
			}
			return nil, nil, refused("%s already approved %s: approvals count once per person", ActorName(in.Actor), what)
		}
	}
	r := proto.Clone(cur).(*relv1.Rollout)
	r.Approvals = append(r.Approvals, &relv1.Approval{Actor: in.Actor, AtUnixNano: in.At, Comment: in.Comment, Wave: gate,
		Digest: cur.GetApprovalDigest(), PolicyVersion: cur.GetApprovalPolicyVersion()})
	n, need := Approved(r, gate), r.GetApprovalPolicy().GetRequired()
	msg := fmt.Sprintf("approved by %s (%d of %d)", ActorName(in.Actor), n, need)
	if in.Comment != "" {
		msg += ": " + in.Comment
	}
	events := []*relv1.RolloutEvent{appendEvent(r, in.At, EventApproval, "", msg)}
	if n < need {
		return r, events, nil
	}
	if gate == 0 {
		r.State, r.Reason = StateQueued, ""
		events = append(events, appendEvent(r, in.At, EventApproved, "", fmt.Sprintf("%d of %d approvals: queued, it starts when nothing holds its hosts", n, need)))
	} else {
		next := cur.GetCurrentWave() + 1
		r.State, r.ApprovedWave, r.LastProgressUnixNano = StateRunning, next, in.At
		events = append(events, appendEvent(r, in.At, EventApproved, "", "approved "+WaveLabel(cur, next)))
	}
	return r, events, nil
}

func noPolicyHint(r *relv1.Rollout) string {
	if r.GetState() == StateWaitingApproval {
		return fmt.Sprintf("approve its wave with 'relctl rollout approve %s --wave N'", r.GetId())
	}
	return "nothing to approve"
}

// Reject decides a rejection of a rollout awaiting approval: it ends
// aborted, with who rejected it and the comment as its reason.
func Reject(in ApprovalInput) (*relv1.Rollout, *relv1.RolloutEvent, error) {
	cur := in.Rollout
	if cur.GetState() != StateAwaitingApproval {
		return nil, nil, refused("cannot reject rollout %s: it is %s, not awaiting approval ('relctl rollout abort' stops a started one)", cur.GetId(), cur.GetState())
	}
	if err := checkApprover(in, "reject"); err != nil {
		return nil, nil, err
	}
	r := proto.Clone(cur).(*relv1.Rollout)
	r.State, r.FinishedUnixNano, r.RejectedBy = StateAborted, in.At, in.Actor
	r.Reason = "rejected by " + ActorName(in.Actor)
	if in.Comment != "" {
		r.Reason += ": " + in.Comment
	}
	return r, appendEvent(r, in.At, EventRejected, "", r.Reason), nil
}

// ExpireApproval ends a rollout whose approval expired at or before at:
// failed, "approval expired after 72h". ok is false when it has not (or
// waits for approval no more).
func ExpireApproval(cur *relv1.Rollout, at int64) (*relv1.Rollout, *relv1.RolloutEvent, bool) {
	exp := cur.GetApprovalExpiresUnixNano()
	if cur.GetState() != StateAwaitingApproval || exp == 0 || at < exp {
		return nil, nil, false
	}
	r := proto.Clone(cur).(*relv1.Rollout)
	r.State, r.FinishedUnixNano = StateFailed, at
	r.Reason = fmt.Sprintf("approval expired after %s (%d of %d approvals)", FormatDuration(ApprovalExpiry(cur.GetApprovalPolicy())),
		Approved(cur, 0), cur.GetApprovalPolicy().GetRequired())
	return r, appendEvent(r, at, EventApprovalExpired, "", r.Reason), true
}

// ReviewOpen reports whether a rollout is an emergency change nobody has
// reviewed yet.
func ReviewOpen(r *relv1.Rollout) bool {
	return r.GetChangeType() == ChangeEmergency && r.GetReview() == nil
}

// Review closes an emergency change's post-hoc review.
func Review(cur *relv1.Rollout, actor *relv1.Actor, comment string, at int64) (*relv1.Rollout, *relv1.RolloutEvent, error) {
	if cur.GetChangeType() != ChangeEmergency {
		return nil, nil, refused("rollout %s is a %s change, not an emergency one: only emergency changes are reviewed", cur.GetId(), changeTypeName(cur))
	}
	if rv := cur.GetReview(); rv != nil {
		return nil, nil, refused("rollout %s was reviewed already by %s at %s", cur.GetId(), ActorName(rv.GetReviewedBy()), time.Unix(0, rv.GetAtUnixNano()).UTC().Format(time.RFC3339))
	}
	if actor.GetId() == "" {
		return nil, nil, notEligible("a review needs a person or pipeline (a token or a client certificate)")
	}
	if cur.GetRequestedBy().GetId() == actor.GetId() {
		return nil, nil, notEligible("%s requested emergency rollout %s and may not review it: somebody else must", ActorName(actor), cur.GetId())
	}
	r := proto.Clone(cur).(*relv1.Rollout)
	r.Review = &relv1.Review{ReviewedBy: actor, AtUnixNano: at, Comment: comment}
	msg := "emergency change reviewed by " + ActorName(actor)
	if comment != "" {
		msg += ": " + comment
	}
	return r, appendEvent(r, at, EventReviewed, "", msg), nil
}

func changeTypeName(r *relv1.Rollout) string {
	if r.GetChangeType() == "" {
		return ChangeNormal
	}
	return r.GetChangeType()
}

// awaitingReason is a rollout's reason while it awaits approvals.
func awaitingReason(p *relv1.ApprovalPolicy) string {
	return fmt.Sprintf("awaiting %d approval(s) from %s", p.GetRequired(), strings.Join(Approvers(p), ", "))
}

// AwaitApproval makes a new deploy rollout wait for the approvals of
// policy p (at version v, for the release's digest): no host is
// dispatched until they are given. Its hosts are those selected now; the
// versions they run are taken again when it starts.
func AwaitApproval(r *relv1.Rollout, p *relv1.ApprovalPolicy, v uint64, digest string, now time.Time) *relv1.RolloutEvent {
	r.State = StateAwaitingApproval
	r.ApprovalPolicy, r.ApprovalPolicyVersion, r.ApprovalDigest = p, v, digest
	r.ApprovalExpiresUnixNano = now.Add(ApprovalExpiry(p)).UnixNano()
	r.Reason = awaitingReason(p)
	return appendEvent(r, now.UnixNano(), EventAwaitingApproval, "", r.Reason+fmt.Sprintf("; expires in %s", FormatDuration(ApprovalExpiry(p))))
}
