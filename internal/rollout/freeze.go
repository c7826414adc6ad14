package rollout

import (
	"time"

	"google.golang.org/protobuf/proto"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// Freeze windows (change control) as the rollout lifecycle sees them. The
// windows themselves are internal/freeze's; here a freeze is only its
// verdict for one rollout (View.FrozenUntil, FreezeWindow, FreezeHold):
//
//   - a deploy requested inside a freeze is created frozen (Hold);
//   - a frozen rollout is released when its freeze ends (ReleaseFrozen):
//     to awaiting_approval when approvals are needed, else queued, from
//     where the queue logic starts it;
//   - a queued rollout is not dequeued inside a freeze: it becomes frozen;
//   - a running rollout finishes its current wave, then pauses
//     (paused_by_freeze) and resumes by itself when the freeze ends.
//
// Rollbacks, catch-ups and emergency changes are never held
// (FreezeApplies).

// Events of freezes.
const (
	EventFrozen   = "frozen"
	EventUnfrozen = "unfrozen"
)

// FreezeApplies reports whether freezes hold a rollout at all: deploys
// only, and not emergency changes (which record the freeze they override).
func FreezeApplies(r *relv1.Rollout) bool {
	return r.GetKind() == KindDeploy && r.GetChangeType() != ChangeEmergency
}

// Hold turns a new rollout (as StartRollout planned it) into a frozen
// one: nothing dispatched, its hosts pending, the reason naming the freeze
// and its end. Of the planned events only the first (started) is kept.
func Hold(cur *relv1.Rollout, events []*relv1.RolloutEvent, reason string, until, at int64) (*relv1.Rollout, []*relv1.RolloutEvent) {
	r := proto.Clone(cur).(*relv1.Rollout)
	r.State, r.Reason, r.FrozenUntilUnixNano = StateFrozen, reason, until
	r.CurrentWave, r.WaveStartedUnixNano, r.WaveDoneUnixNano = 0, 0, 0
	for _, h := range r.Hosts {
		if h.State == HostDispatched || h.State == HostHealthy || h.State == HostFailed {
			h.State, h.DispatchedUnixNano, h.FinishedUnixNano, h.Phase, h.Reason = HostPending, 0, 0, "", ""
		}
	}
	var out []*relv1.RolloutEvent
	r.EventSeq = 0
	if len(events) > 0 && events[0].GetType() == EventStarted {
		out = append(out, events[0])
		r.EventSeq = events[0].GetSeq()
	}
	out = append(out, appendEvent(r, at, EventFrozen, "", "frozen by "+reason+": it starts by itself when the freeze ends"))
	return r, out
}

// ReleaseFrozen decides where a frozen rollout goes when its freeze has
// ended: awaiting_approval when the environment's approval policy needs
// approvals for it, else queued (the engine then starts it when nothing
// blocks). It changes r and returns the event.
func ReleaseFrozen(r *relv1.Rollout, needsApproval bool, at time.Time) *relv1.RolloutEvent {
	r.Reason, r.FrozenUntilUnixNano = "", 0
	msg := "no freeze holds it any more: "
	if needsApproval {
		// The approvals' clock starts now: nobody could approve while it
		// was frozen.
		r.State = StateAwaitingApproval
		r.ApprovalExpiresUnixNano = at.Add(ApprovalExpiry(r.GetApprovalPolicy())).UnixNano()
		r.Reason = awaitingReason(r.GetApprovalPolicy())
		msg += "it waits for approval"
	} else {
		r.State = StateQueued
		msg += "starting when nothing holds its hosts"
	}
	return appendEvent(r, at.UnixNano(), EventUnfrozen, "", msg)
}

// held reports whether the view's freeze holds the rollout.
func (v View) held() bool {
	return !v.FrozenUntil.IsZero() && FreezeApplies(v.Rollout)
}

// freeze applies the view's freeze verdict before anything else moves:
// it holds or releases frozen rollouts, freezes queued ones and resumes
// the ones a freeze paused once it is over. It reports whether Step
// stops here.
func (s *stepper) freeze(v View) bool {
	r := s.r
	held := v.held()
	if held {
		s.wakeAt(v.FrozenUntil)
	}
	switch {
	case r.State == StateFrozen && held:
		s.holdReason(v)
		return true
	case r.State == StateFrozen:
		s.events = append(s.events, ReleaseFrozen(r, v.NeedsApproval, s.now))
		s.changed = true
		return r.State != StateQueued
	case r.State == StateQueued && held:
		r.State = StateFrozen
		r.Reason, r.FrozenUntilUnixNano = v.FreezeHold, v.FrozenUntil.UnixNano()
		s.event(EventFrozen, "", "frozen by "+v.FreezeHold+": it starts by itself when the freeze ends")
		return true
	case r.State == StatePaused && r.PausedByFreeze != "" && held:
		s.holdReason(v)
	case r.State == StatePaused && r.PausedByFreeze != "":
		r.State, r.PausedFrom, r.PausedByFreeze, r.Reason, r.FrozenUntilUnixNano = r.PausedFrom, "", "", "", 0
		if r.State == "" {
			r.State = StateRunning
		}
		r.LastProgressUnixNano = s.now.UnixNano()
		s.event(EventResumed, "", "resumed: no freeze holds it any more")
	}
	return false
}

// holdReason keeps a held rollout's reason in step with its freeze (a
// window added or removed moves its end).
func (s *stepper) holdReason(v View) {
	r := s.r
	if r.Reason != v.FreezeHold || r.FrozenUntilUnixNano != v.FrozenUntil.UnixNano() {
		r.Reason, r.FrozenUntilUnixNano = v.FreezeHold, v.FrozenUntil.UnixNano()
		if r.State == StatePaused {
			r.PausedByFreeze = v.FreezeWindow
		}
		s.changed = true
	}
}

// pauseForFreeze pauses a running rollout between waves while its freeze
// holds: the current wave is done, the next does not start.
func (s *stepper) pauseForFreeze(v View) bool {
	if !v.held() || s.r.State != StateRunning {
		return false
	}
	r := s.r
	r.PausedFrom, r.State, r.PausedByFreeze = StateRunning, StatePaused, v.FreezeWindow
	r.Reason, r.FrozenUntilUnixNano = v.FreezeHold, v.FrozenUntil.UnixNano()
	s.event(EventPaused, "", "paused after "+s.waveLabel(r.CurrentWave)+" by "+v.FreezeHold+": it resumes by itself when the freeze ends")
	return true
}
