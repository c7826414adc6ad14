package rollout

import (
	"fmt"
	"time"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// RollbackCommand builds the command that starts a rollback of orig.
func RollbackCommand(orig *relv1.Rollout, id string, allAtOnce bool, now time.Time) (*relv1.Command, error) {
	rb, err := PlanRollback(orig, id, allAtOnce, now)
	if err != nil {
		return nil, err
	}
	rb.EventSeq = 1
	how := "staged: unhealthy hosts first, then the waves in reverse"
	if allAtOnce {
		how = "all at once"
	}
	ev := &relv1.RolloutEvent{RolloutId: id, Seq: 1, AtUnixNano: now.UnixNano(), Type: EventStarted,
		Message: fmt.Sprintf("rollback of %s: %d hosts back to their previous release, %s", orig.GetId(), len(rb.GetHosts()), how)}
	return &relv1.Command{StampedUnixNano: now.UnixNano(), Kind: &relv1.Command_CreateRollout{CreateRollout: &relv1.CreateRollout{
		Rollout: rb, Events: []*relv1.RolloutEvent{ev},
	}}}, nil
}

// Start decides how a new deploy rollout ro begins at now: its "started"
// event (summary says what it covers), and then either the queue (blocker
// names the active rollout holding some of its hosts) or the planner's
// first step, whose first dispatches go into the same raft entry as the
// rollout, so agents hear of it one commit sooner.
func Start(ro *relv1.Rollout, summary, blocker string, obs map[string]Obs, now time.Time) Decision {
	ro.EventSeq = 0
	events := []*relv1.RolloutEvent{appendEvent(ro, now.UnixNano(), EventStarted, "", summary)}
	if blocker != "" {
		// The engine starts it when the blocker (and any rollout queued
		// before it over these hosts) has ended.
		ro.State, ro.Reason = StateQueued, "queued behind "+blocker
		events = append(events, appendEvent(ro, now.UnixNano(), EventQueued, "", ro.GetReason()+": it starts when that rollout ends"))
		return Decision{Rollout: ro, Events: events}
	}
	d := Step(View{Rollout: ro, Hosts: obs, Now: now})
	if d.Rollout == nil || d.Rollback {
		return Decision{Rollout: ro, Events: events, Wake: d.Wake}
	}
	d.Events = append(events, d.Events...)
	return d
}
