package rollout

import (
	"bytes"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// hostsField is Rollout.hosts: the one field a delta does not carry whole.
var hostsField = (&relv1.Rollout{}).ProtoReflect().Descriptor().Fields().ByName("hosts")

// Delta is what a step must carry to take a rollout from cur (as stored) to
// next (Step's new row): every field of next but hosts, and in hosts only
// the hosts of next that differ from cur's, whole. MergeDelta
// applies it. Without it every step of a rolling rollout carried the whole
// fleet, and the raft log grew with the square of the fleet.
//
// ok is false when a delta cannot say it: next does not hold cur's hosts
// in cur's order (the planner never adds, removes or reorders hosts, so
// that is a bug to survive, with a whole row), or a changed host's agent
// id appears twice (a delta matches hosts by agent id). The delta shares
// messages with next: it is for encoding, not for changing.
func Delta(cur, next *relv1.Rollout) (delta *relv1.Rollout, ok bool) {
	ch, nh := cur.GetHosts(), next.GetHosts()
	if len(ch) != len(nh) {
		return nil, false
	}
	var changed []*relv1.RolloutHost
	for i, h := range nh {
		if ch[i].GetAgentId() != h.GetAgentId() {
			return nil, false
		}
		if !sameHost(ch[i], h) {
			changed = append(changed, h)
		}
	}
	if len(changed) > 0 {
		// Each changed id must name one host of cur. A map of the changed
		// ids only: a step changes a host or two of thousands.
		seen := make(map[string]bool, len(changed))
		for _, h := range changed {
			seen[h.GetAgentId()] = false
		}
		for _, h := range ch {
			if twice, ok := seen[h.GetAgentId()]; ok {
				if twice {
					return nil, false
				}
				seen[h.GetAgentId()] = true
			}
		}
	}
	delta = Header(next)
	delta.Hosts = changed
	return delta, true
}

// Header is r without its hosts: every other field, sharing messages with
// r (for encoding and reading, not for changing). Copied by reflection, so
// that a header field added to Rollout later travels in deltas and lists
// without anyone remembering this function.
func Header(r *relv1.Rollout) *relv1.Rollout {
	h := &relv1.Rollout{}
	dst := h.ProtoReflect()
	r.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Number() != hostsField.Number() {
			dst.Set(fd, v)
		}
		return true
	})
	dst.SetUnknown(r.ProtoReflect().GetUnknown())
	return h
}

// sameHost reports whether two hosts are equal, field by field: Step clones
// the row, so an unchanged host is an equal message, not the same pointer,
// and proto.Equal's reflection over every host of every step cost more
// than the rest of the delta. TestSameHostSeesEveryField fails when a field
// added to RolloutHost is missing here.
func sameHost(a, b *relv1.RolloutHost) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.GetAgentId() == b.GetAgentId() &&
		a.GetPreviousVersion() == b.GetPreviousVersion() &&
		a.GetWave() == b.GetWave() &&
		a.GetState() == b.GetState() &&
		a.GetReason() == b.GetReason() &&
		a.GetDispatchedUnixNano() == b.GetDispatchedUnixNano() &&
		a.GetFinishedUnixNano() == b.GetFinishedUnixNano() &&
		a.GetTargetVersion() == b.GetTargetVersion() &&
		a.GetPhase() == b.GetPhase() &&
		bytes.Equal(a.ProtoReflect().GetUnknown(), b.ProtoReflect().GetUnknown())
}

// MergeDelta returns the row a delta step (Command.rollout_step_delta)
// makes of cur: every field of delta but hosts, and cur's hosts in cur's
// order with those delta names (by agent id) replaced by delta's. A delta
// naming a host cur does not hold, or one host twice, is refused
// (ErrRefused): the step was not decided on this row.
//
// Rows in the store are never mutated, so the new row shares cur's
// unchanged host messages instead of cloning them: a step costs a slice of
// pointers and its own few hosts, not a copy of the fleet.
func MergeDelta(cur, delta *relv1.Rollout) (*relv1.Rollout, error) {
	// The header and the changed hosts only: small.
	row := proto.Clone(delta).(*relv1.Rollout)
	changed := make(map[string]*relv1.RolloutHost, len(row.GetHosts()))
	for _, h := range row.GetHosts() {
		if _, dup := changed[h.GetAgentId()]; dup {
			return nil, refused("rollout step names host %q of rollout %s twice", h.GetAgentId(), delta.GetId())
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
				return nil, refused("rollout step names host %q, which rollout %s does not hold", h.GetAgentId(), delta.GetId())
			}
		}
	}
	row.Hosts = hosts
	return row, nil
}
