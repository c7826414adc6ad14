package state

import (
	"fmt"

	"google.golang.org/protobuf/proto"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// MergeRolloutDelta returns the row a delta step (Command.rollout_step_delta)
// makes of cur: every field of delta but hosts, and cur's hosts in cur's
// order with those delta names (by agent id) replaced by delta's. A delta
// naming a host cur does not hold, or one host twice, is refused
// (ErrConflict): the step was not decided on this row.
//
// Rows in the store are never mutated, so the new row shares cur's
// unchanged host messages instead of cloning them: a step costs a slice of
// pointers and its own few hosts, not a copy of the fleet.
func MergeRolloutDelta(cur, delta *relv1.Rollout) (*relv1.Rollout, error) {
	// The header and the changed hosts only: small.
	row := proto.Clone(delta).(*relv1.Rollout)
	changed := make(map[string]*relv1.RolloutHost, len(row.GetHosts()))
	for _, h := range row.GetHosts() {
		if _, dup := changed[h.GetAgentId()]; dup {
			return nil, newError(ErrConflict, fmt.Sprintf("rollout step names host %q of rollout %s twice", h.GetAgentId(), delta.GetId()))
		}
		changed[h.GetAgentId()] = h
	}
	hosts := make([]*relv1.RolloutHost, len(cur.GetHosts()))
	copy(hosts, cur.GetHosts())
	for i, h := range hosts {
		if nh, ok := changed[h.GetAgentId()]; ok {
			hosts[i] = nh
			// Only the first host of an id (ids are unique in rows the
			// planner makes; this keeps the verdict deterministic anyway).
			delete(changed, h.GetAgentId())
		}
	}
	if len(changed) > 0 {
		// Name the first unknown host in the delta's order: map order is
		// random, and every replica must return the same error.
		for _, h := range row.GetHosts() {
			if _, unknown := changed[h.GetAgentId()]; unknown {
				return nil, newError(ErrConflict, fmt.Sprintf("rollout step names host %q, which rollout %s does not hold", h.GetAgentId(), delta.GetId()))
			}
		}
	}
	row.Hosts = hosts
	return row, nil
}

// stepRow is the row a step makes of cur: r itself when it is a whole row
// (steps written before deltas), else r merged into cur as a delta.
func stepRow(cur, r *relv1.Rollout, hostsDelta bool) (*relv1.Rollout, error) {
	if !hostsDelta {
		return proto.Clone(r).(*relv1.Rollout), nil
	}
	return MergeRolloutDelta(cur, r)
}
