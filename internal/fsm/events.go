package fsm

import (
	"fmt"
	"strings"

	"github.com/relhq/rel/internal/event"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// The event stream (internal/event, state.AppendEvents): after a command
// is applied, the FSM appends its events in the same Apply. A rollout's
// events come from the rollout events the entry wrote (made in one place,
// internal/rollout); the rest are described here from the command, and
// for agents' sessions from the agents' rows before and after.

// applyWithEvents applies cmd through apply and appends its events. A
// failure to append is the entry's error when the command succeeded.
func (f *FSM) applyWithEvents(index uint64, cmd *relv1.Command, apply func() ([]error, error)) ([]error, error) {
	before := f.agentsBefore(cmd)
	items, err := apply()
	var extra []*relv1.Event
	if err == nil {
		extra = append(f.commandEvents(cmd), f.agentEvents(before)...)
	}
	if aerr := f.store.AppendEvents(index, cmd.GetStampedUnixNano(), cmd.GetActor(), extra); aerr != nil && err == nil {
		err = aerr
	}
	return items, err
}

// agentBefore is an agent's row before a command (nil: unknown agent).
type agentBefore struct {
	id  string
	row *relv1.Agent
}

// agentsBefore reads the rows of the agents a session command names, in
// the command's order, each once.
func (f *FSM) agentsBefore(cmd *relv1.Command) []agentBefore {
	var ids []string
	switch k := cmd.GetKind().(type) {
	case *relv1.Command_AgentSessions:
		for _, u := range k.AgentSessions.GetUp() {
			ids = append(ids, u.GetAgent().GetId())
		}
		for _, d := range k.AgentSessions.GetDown() {
			ids = append(ids, d.GetAgentId())
		}
	case *relv1.Command_AgentUp:
		ids = append(ids, k.AgentUp.GetAgent().GetId())
	case *relv1.Command_AgentDown:
		ids = append(ids, k.AgentDown.GetAgentId())
	default:
		return nil
	}
	seen := map[string]bool{}
	out := make([]agentBefore, 0, len(ids))
	for _, id := range ids {
		if seen[id] {
			continue
		}
		seen[id] = true
		row, _ := f.store.Agent(nil, id) // nil row: not known yet
		out = append(out, agentBefore{id: id, row: row})
	}
	return out
}

// agentEvents compares each agent's row after the command with before:
// joined (first session), lost (connected to not), back (not to
// connected). A new session of a connected agent is no event.
func (f *FSM) agentEvents(before []agentBefore) []*relv1.Event {
	var out []*relv1.Event
	for _, b := range before {
		after, err := f.store.Agent(nil, b.id)
		if err != nil || after == nil {
			continue
		}
		was, is := b.row.GetConnected(), after.GetConnected()
		switch {
		case b.row == nil && is:
			out = append(out, &relv1.Event{Type: event.AgentJoined, AgentId: b.id, TimeUnixNano: after.GetConnectedUnixNano(),
				Message: fmt.Sprintf("agent %s connected for the first time (to %s)", b.id, after.GetServerId())})
		case was && !is:
			msg := "agent " + b.id + " lost"
			if r := after.GetDisconnectReason(); r != "" {
				msg += ": " + r
			}
			out = append(out, &relv1.Event{Type: event.AgentLost, AgentId: b.id, TimeUnixNano: after.GetDisconnectedUnixNano(), Message: msg})
		case b.row != nil && !was && is:
			out = append(out, &relv1.Event{Type: event.AgentBack, AgentId: b.id, TimeUnixNano: after.GetConnectedUnixNano(),
				Message: fmt.Sprintf("agent %s is back (connected to %s)", b.id, after.GetServerId())})
		}
	}
	return out
}

// commandEvents describes the commands whose change is an event of its
// own (not a rollout's): releases and freezes.
func (f *FSM) commandEvents(cmd *relv1.Command) []*relv1.Event {
	switch k := cmd.GetKind().(type) {
	case *relv1.Command_CreateRelease:
		r := k.CreateRelease.GetRelease()
		return []*relv1.Event{{Type: event.ReleaseCreated, App: r.GetApp(), Version: r.GetVersion(),
			Message: fmt.Sprintf("release %s@%s created", r.GetApp(), r.GetVersion())}}
	case *relv1.Command_DeleteRelease:
		c := k.DeleteRelease
		return []*relv1.Event{{Type: event.ReleaseDeleted, App: c.GetApp(), Version: c.GetVersion(),
			Message: fmt.Sprintf("release %s@%s deleted", c.GetApp(), c.GetVersion())}}
	case *relv1.Command_BlockRelease:
		c := k.BlockRelease
		typ, msg := event.ReleaseUnblocked, fmt.Sprintf("release %s@%s unblocked", c.GetApp(), c.GetVersion())
		if c.GetBlocked() {
			typ, msg = event.ReleaseBlocked, fmt.Sprintf("release %s@%s blocked", c.GetApp(), c.GetVersion())
		}
		if c.GetReason() != "" {
			msg += ": " + c.GetReason()
		}
		return []*relv1.Event{{Type: typ, App: c.GetApp(), Version: c.GetVersion(), Message: msg}}
	case *relv1.Command_CreateFreeze:
		w := k.CreateFreeze.GetWindow()
		msg := "freeze " + w.GetName() + " created"
		if scope := freezeScope(w); scope != "" {
			msg += " for " + scope
		}
		if w.GetReason() != "" {
			msg += ": " + w.GetReason()
		}
		return []*relv1.Event{{Type: event.FreezeCreated, App: only(w.GetApps()), Env: only(w.GetEnvironments()), Message: msg}}
	case *relv1.Command_DeleteFreeze:
		return []*relv1.Event{{Type: event.FreezeDeleted, Message: "freeze " + k.DeleteFreeze.GetName() + " deleted"}}
	}
	return nil
}

// only is the one element of xs, or "" (an event names one app and one
// environment; a freeze over several names them in its message).
func only(xs []string) string {
	if len(xs) == 1 {
		return xs[0]
	}
	return ""
}

func freezeScope(w *relv1.FreezeWindow) string {
	var parts []string
	if len(w.GetApps()) > 0 {
		parts = append(parts, "apps "+strings.Join(w.GetApps(), ","))
	}
	if len(w.GetEnvironments()) > 0 {
		parts = append(parts, "environments "+strings.Join(w.GetEnvironments(), ","))
	}
	return strings.Join(parts, ", ")
}
