package rollout

import (
	"errors"
	"fmt"
	"sort"
	"time"

	"google.golang.org/protobuf/proto"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// The rollout lifecycle's fixed words live here and nowhere else: the state
// store, the FSM, the server and relctl use these. They are strings in the
// rows (and so in every raft log and snapshot written so far); changing
// their spelling would need a migration of both.

// Rollout states. The first seven are active; the rest are terminal.
const (
	// StateFrozen waits for a freeze window over its app and environment
	// to end (change control), then goes on as a new request would.
	StateFrozen = "frozen"
	// StateAwaitingApproval waits for the approvals the environment's
	// policy requires (change control) before it may start.
	StateAwaitingApproval = "awaiting_approval"
	// StateQueued waits for an active rollout holding some of its hosts to
	// end (relctl rollout start --queue).
	StateQueued          = "queued"
	StateRunning         = "running"
	StateWaitingApproval = "waiting_approval"
	StatePaused          = "paused"
	StateRollingBack     = "rolling_back"
	StateSucceeded       = "succeeded"
	StateFailed          = "failed"
	StateAborted         = "aborted"
	StateRolledBack      = "rolled_back"
)

// ActiveStates are the states a rollout can still leave, in the order the
// engine reads them.
var ActiveStates = []string{StateFrozen, StateAwaitingApproval, StateQueued, StateRunning, StateWaitingApproval, StatePaused, StateRollingBack}

// States are all rollout states.
var States = append(append([]string(nil), ActiveStates...), StateSucceeded, StateFailed, StateAborted, StateRolledBack)

// Terminal reports whether a rollout state is final.
func Terminal(state string) bool {
	switch state {
	case StateSucceeded, StateFailed, StateAborted, StateRolledBack:
		return true
	}
	return false
}

// Change types (Rollout.change_type).
const (
	ChangeStandard  = "standard"
	ChangeNormal    = "normal"
	ChangeEmergency = "emergency"
)

// Rollout kinds.
const (
	KindDeploy   = "deploy"
	KindRollback = "rollback"
	// KindCatchUp takes hosts that joined an environment, or run something
	// no rollout put there, to its current release; the leader starts it.
	KindCatchUp = "catch_up"
)

// Host states in a rollout row.
const (
	HostPending    = "pending"
	HostDispatched = "dispatched"
	HostHealthy    = "healthy"
	HostFailed     = "failed"
	HostSkipped    = "skipped"
)

// HostStates are all host states.
var HostStates = []string{HostPending, HostDispatched, HostHealthy, HostFailed, HostSkipped}

// Control actions a release manager takes on a rollout.
const (
	ActionPause   = "pause"
	ActionResume  = "resume"
	ActionApprove = "approve"
	ActionAbort   = "abort"
)

// Actions are all control actions.
var Actions = []string{ActionPause, ActionResume, ActionApprove, ActionAbort}

// Event types of a rollout's events.
const (
	EventStarted          = "started"
	EventQueued           = "queued"
	EventDequeued         = "dequeued"
	EventWaveStarted      = "wave_started"
	EventDispatched       = "dispatched"
	EventHostHealthy      = "host_healthy"
	EventHostFailed       = "host_failed"
	EventHostAway         = "host_away"
	EventHostBack         = "host_back"
	EventWaveDone         = "wave_done"
	EventBaking           = "baking"
	EventWaitingApproval  = "waiting_approval"
	EventWaitingHosts     = "waiting_hosts"
	EventDeadlineExceeded = "deadline_exceeded"
	EventSucceeded        = "succeeded"
	EventFailed           = "failed"
	EventPaused           = "paused"
	EventResumed          = "resumed"
	EventApproved         = "approved"
	EventAborted          = "aborted"
	EventRollbackStarted  = "rollback_started"
	EventRolledBack       = "rolled_back"
)

// ErrRefused is a control or transition the rollout's state does not
// allow; the error's text says why for people.
var ErrRefused = errors.New("refused")

func refused(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrRefused, fmt.Sprintf(format, args...))
}

// Reason strips ErrRefused's prefix from an error made by this package.
func Reason(err error) string {
	msg := err.Error()
	if p := ErrRefused.Error() + ": "; len(msg) > len(p) && msg[:len(p)] == p {
		return msg[len(p):]
	}
	return msg
}

// appendEvent numbers an event for r (which it changes) and returns it.
func appendEvent(r *relv1.Rollout, at int64, typ, host, msg string) *relv1.RolloutEvent {
	r.EventSeq++
	return &relv1.RolloutEvent{RolloutId: r.GetId(), Seq: r.GetEventSeq(), AtUnixNano: at, Type: typ, Host: host, Message: msg, Wave: r.GetCurrentWave()}
}

// Control decides a release manager's pause, resume, approve or abort of
// cur at time at: the new row and its event, or ErrRefused. An approve
// names the wave it approves as people number it (WaveNumber) and is
// refused for any other than the one waiting, so an approve applied after
// the rollout moved on does not open the next gate; wave 0 (commands
// written before approvals named their wave) approves the wave that waits.
func Control(cur *relv1.Rollout, action, reason string, wave uint32, at int64) (*relv1.Rollout, *relv1.RolloutEvent, error) {
	id := cur.GetId()
	r := proto.Clone(cur).(*relv1.Rollout)
	refuse := func(why string) error {
		return refused("cannot %s rollout %s: it is %s%s", action, id, cur.GetState(), why)
	}
	var typ, msg string
	switch action {
	case ActionPause:
		if cur.GetState() != StateRunning && cur.GetState() != StateWaitingApproval {
			return nil, nil, refuse("")
		}
		r.PausedFrom, r.State = cur.GetState(), StatePaused
		typ, msg = EventPaused, "paused: no more hosts are dispatched until resume"
	case ActionResume:
		if cur.GetState() != StatePaused {
			return nil, nil, refuse(", not paused")
		}
		r.State, r.PausedFrom = cur.GetPausedFrom(), ""
		// A freeze still in force pauses it again at the end of its wave.
		r.PausedByFreeze, r.FrozenUntilUnixNano = "", 0
		if r.State == "" {
			r.State = StateRunning
		}
		// The progress deadline measures the engine, not the time a person
		// held the rollout.
		r.LastProgressUnixNano = at
		typ, msg = EventResumed, "resumed"
	case ActionApprove:
		if cur.GetApprovalPolicy() != nil {
			// Its gates follow the approval policy (Approve): one person's
			// control command does not open them.
			return nil, nil, refused("rollout %s is under its environment's approval policy: its gates open with 'relctl rollout approve %s --wave N' by eligible approvers", id, id)
		}
		next := cur.GetCurrentWave() + 1
		if cur.GetState() != StateWaitingApproval {
			if i, ok := waveIndex(cur, wave); ok && i >= 1 && i <= cur.GetApprovedWave() {
				return nil, nil, refuse(fmt.Sprintf(", not waiting for approval: %s was approved already", WaveLabel(cur, i)))
			}
			return nil, nil, refuse(", not waiting for approval")
		}
		if want := WaveNumber(cur, next); wave != 0 && wave != want {
			late := ""
			if i, ok := waveIndex(cur, wave); ok && i >= 1 && i <= cur.GetApprovedWave() {
				late = WaveLabel(cur, i) + " was approved already; "
			}
			return nil, nil, refused("cannot approve wave %d of rollout %s: %sit waits for approval of %s (--wave %d)", wave, id, late, WaveLabel(cur, next), want)
		}
		r.State, r.ApprovedWave, r.LastProgressUnixNano = StateRunning, next, at
		typ, msg = EventApproved, "approved "+WaveLabel(cur, next)
	case ActionAbort:
		if Terminal(cur.GetState()) || cur.GetState() == StateRollingBack {
			return nil, nil, refuse("")
		}
		r.State, r.FinishedUnixNano = StateAborted, at
		r.Reason = "aborted"
		if reason != "" {
			r.Reason += ": " + reason
		}
		typ, msg = EventAborted, "aborted: hosts keep what they have; 'relctl rollout rollback "+id+"' takes them back"
	default:
		return nil, nil, refused("unknown action %q: use pause, resume, approve or abort", action)
	}
	if reason != "" && action != ActionAbort {
		msg += " (" + reason + ")"
	}
	return r, appendEvent(r, at, typ, "", msg), nil
}

// StartRollingBack decides what a rollback rb starting does to the rollout
// it reverts: orig becomes rolling_back, naming rb. It refuses a rollout
// already rolled back.
func StartRollingBack(orig, rb *relv1.Rollout) (*relv1.Rollout, *relv1.RolloutEvent, error) {
	if orig.GetRolledBackBy() != "" {
		return nil, nil, refused("rollout %s is already rolled back by %s", orig.GetId(), orig.GetRolledBackBy())
	}
	o := proto.Clone(orig).(*relv1.Rollout)
	o.State, o.RolledBackBy = StateRollingBack, rb.GetId()
	return o, appendEvent(o, rb.GetCreatedUnixNano(), EventRollbackStarted, "", "rollback "+rb.GetId()+" started"), nil
}

// EndReverted decides what a finished rollback rb does to the rollout it
// reverted: rolled_back if rb succeeded, failed otherwise.
func EndReverted(orig, rb *relv1.Rollout) (*relv1.Rollout, *relv1.RolloutEvent) {
	o := proto.Clone(orig).(*relv1.Rollout)
	typ, msg := EventRolledBack, "rolled back by "+rb.GetId()
	if rb.GetState() == StateSucceeded {
		o.State = StateRolledBack
		if o.GetReason() != "" {
			o.Reason += "; "
		}
		o.Reason += msg
	} else {
		typ, msg = EventFailed, "rollback "+rb.GetId()+" ended "+rb.GetState()+": "+rb.GetReason()
		o.State, o.Reason = StateFailed, msg
	}
	o.FinishedUnixNano = rb.GetFinishedUnixNano()
	return o, appendEvent(o, rb.GetFinishedUnixNano(), typ, "", msg)
}

// Expired picks the rollouts a retention pass removes: terminal ones that
// finished before now-retention, beyond the newest keep of their app and
// environment, and never the one whose release an environment holds (its
// newest succeeded deploy or rollback), which a rollback may still need. At
// most limit ids, oldest first, so that one pass is one small raft entry.
func Expired(rollouts []*relv1.Rollout, now time.Time, retention time.Duration, keep, limit int) []string {
	type key struct{ app, env string }
	groups := map[key][]*relv1.Rollout{}
	for _, r := range rollouts {
		k := key{r.GetApp(), r.GetEnvironment()}
		groups[k] = append(groups[k], r)
	}
	cutoff := now.Add(-retention).UnixNano()
	var out []*relv1.Rollout
	for _, rs := range groups {
		sort.Slice(rs, func(i, j int) bool { return rs[i].GetCreateIndex() > rs[j].GetCreateIndex() })
		holds := ""
		for _, r := range rs {
			if r.GetState() == StateSucceeded && r.GetKind() != KindCatchUp {
				holds = r.GetId()
				break
			}
		}
		for i, r := range rs {
			if i < keep || r.GetId() == holds || !Terminal(r.GetState()) || r.GetFinishedUnixNano() == 0 || r.GetFinishedUnixNano() > cutoff {
				continue
			}
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetCreateIndex() < out[j].GetCreateIndex() })
	if len(out) > limit {
		out = out[:limit]
	}
	ids := make([]string, len(out))
	for i, r := range out {
		ids[i] = r.GetId()
	}
	return ids
}

// EventHosts lists the hosts an event is about: its hosts when it names
// several, else its one host (none for events about the rollout).
func EventHosts(e *relv1.RolloutEvent) []string {
	if len(e.GetHosts()) > 0 {
		return e.GetHosts()
	}
	if e.GetHost() != "" {
		return []string{e.GetHost()}
	}
	return nil
}
