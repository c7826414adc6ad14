// Package event names the cluster's event types and decides which
// changes become events: the mapping from a rollout's own events (made in
// one place, internal/rollout) to the cluster's dotted types, and the
// filters (app, environment, type globs) that readers and webhooks use.
// It is pure: no store, no clock, no I/O.
package event

import (
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/relhq/rel/internal/rollout"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// Event types that do not come from a rollout's events.
const (
	ReleaseCreated   = "release.created"
	ReleaseDeleted   = "release.deleted"
	ReleaseBlocked   = "release.blocked"
	ReleaseUnblocked = "release.unblocked"
	// ReleasePromoted: a deploy of the release succeeded in an
	// environment (the release is then what the lifecycle promotes).
	ReleasePromoted = "release.promoted"
	FreezeCreated   = "freeze.created"
	FreezeDeleted   = "freeze.deleted"
	// AgentJoined is an agent's first session; AgentLost its session
	// ending (or going silent past the grace period); AgentBack a new
	// session after it was lost.
	AgentJoined = "agent.joined"
	AgentLost   = "agent.lost"
	AgentBack   = "agent.back"
)

// rolloutTypes maps a rollout event's type to the cluster's. Per-host
// progress that is not a failure (dispatched, host_healthy) is left out:
// a fleet of 2,000 hosts would write 4,000 events per rollout that the
// rollout's own events already keep ('relctl rollout status').
var rolloutTypes = map[string]string{
	rollout.EventStarted:          "rollout.started",
	rollout.EventQueued:           "rollout.queued",
	rollout.EventDequeued:         "rollout.dequeued",
	rollout.EventWaveStarted:      "rollout.wave_started",
	rollout.EventDispatched:       "",
	rollout.EventHostHealthy:      "",
	rollout.EventHostFailed:       "host.failed",
	rollout.EventHostAway:         "host.away",
	rollout.EventHostBack:         "host.back",
	rollout.EventWaveDone:         "rollout.wave_done",
	rollout.EventBaking:           "rollout.baking",
	rollout.EventWaitingApproval:  "rollout.waiting_approval",
	rollout.EventWaitingHosts:     "rollout.waiting_hosts",
	rollout.EventDeadlineExceeded: "rollout.deadline_exceeded",
	rollout.EventSucceeded:        "rollout.succeeded",
	rollout.EventFailed:           "rollout.failed",
	rollout.EventPaused:           "rollout.paused",
	rollout.EventResumed:          "rollout.resumed",
	rollout.EventApproved:         "rollout.approved",
	rollout.EventAborted:          "rollout.aborted",
	rollout.EventRollbackStarted:  "rollout.rolling_back",
	rollout.EventRolledBack:       "rollout.rolled_back",
	rollout.EventAwaitingApproval: "rollout.awaiting_approval",
	rollout.EventApproval:         "approval.given",
	rollout.EventRejected:         "rollout.rejected",
	rollout.EventApprovalExpired:  "approval.expired",
	rollout.EventReviewed:         "approval.reviewed",
	rollout.EventFrozen:           "rollout.frozen",
	rollout.EventUnfrozen:         "rollout.unfrozen",
}

// Types lists every event type, sorted.
func Types() []string {
	out := []string{ReleaseCreated, ReleaseDeleted, ReleaseBlocked, ReleaseUnblocked, ReleasePromoted,
		FreezeCreated, FreezeDeleted, AgentJoined, AgentLost, AgentBack}
	for _, t := range rolloutTypes {
		if t != "" {
			out = append(out, t)
		}
	}
	sort.Strings(out)
	return out
}

// FromRollout is the cluster event for a rollout event of r, or nil for a
// kind of event the stream leaves out. A type this build does not know
// (written by a newer planner) becomes rollout.<type>, so nothing is
// silently lost. A deploy that succeeds adds release.promoted.
func FromRollout(r *relv1.Rollout, e *relv1.RolloutEvent) []*relv1.Event {
	typ, known := rolloutTypes[e.GetType()]
	if !known {
		typ = "rollout." + e.GetType()
	}
	if typ == "" {
		return nil
	}
	ev := &relv1.Event{
		TimeUnixNano: e.GetAtUnixNano(), Type: typ, App: r.GetApp(), Env: r.GetEnvironment(),
		RolloutId: r.GetId(), Version: r.GetVersion(), AgentId: e.GetHost(), Message: e.GetMessage(), Wave: e.GetWave(),
	}
	if ev.Message == "" {
		ev.Message = fmt.Sprintf("rollout %s of %s@%s to %s: %s", r.GetId(), r.GetApp(), r.GetVersion(), r.GetEnvironment(), strings.ReplaceAll(e.GetType(), "_", " "))
	}
	out := []*relv1.Event{ev}
	if e.GetType() == rollout.EventSucceeded && (r.GetKind() == rollout.KindDeploy || r.GetKind() == "") {
		out = append(out, &relv1.Event{
			TimeUnixNano: e.GetAtUnixNano(), Type: ReleasePromoted, App: r.GetApp(), Env: r.GetEnvironment(),
			RolloutId: r.GetId(), Version: r.GetVersion(),
			Message: fmt.Sprintf("%s@%s succeeded in %s", r.GetApp(), r.GetVersion(), r.GetEnvironment()),
		})
	}
	return out
}

// ErrBadFilter is the sentinel of a type filter that is not valid.
var ErrBadFilter = errors.New("invalid event type filter")

// ParseTypes splits a comma-separated list of type globs (path.Match
// syntax: "rollout.*", "host.failed"), each of which must match at least
// one known type, so a typo ("rollouts.*") is refused instead of
// selecting nothing forever. "" is every type.
func ParseTypes(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	types := Types()
	var out []string
	for _, g := range strings.Split(s, ",") {
		g = strings.TrimSpace(g)
		if g == "" {
			return nil, fmt.Errorf("%w: %q has an empty glob: give globs separated by commas, e.g. 'rollout.*,release.*'", ErrBadFilter, s)
		}
		if _, err := path.Match(g, ""); err != nil {
			return nil, fmt.Errorf("%w: %q is not a glob (%v): use * and ? as in 'rollout.*'", ErrBadFilter, g, err)
		}
		matched := false
		for _, t := range types {
			if ok, _ := path.Match(g, t); ok {
				matched = true
				break
			}
		}
		if !matched {
			return nil, fmt.Errorf("%w: %q matches no event type; the types are %s", ErrBadFilter, g, strings.Join(types, ", "))
		}
		out = append(out, g)
	}
	return out, nil
}

// Filter selects events; zero fields select everything.
type Filter struct {
	App, Env string
	// Types are globs as ParseTypes returns them.
	Types []string
}

// Match reports whether f selects e.
func (f Filter) Match(e *relv1.Event) bool {
	if f.App != "" && e.GetApp() != f.App {
		return false
	}
	if f.Env != "" && e.GetEnv() != f.Env {
		return false
	}
	if len(f.Types) == 0 {
		return true
	}
	for _, g := range f.Types {
		if ok, _ := path.Match(g, e.GetType()); ok {
			return true
		}
	}
	return false
}
