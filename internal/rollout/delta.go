package rollout

import (
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// hostsField is Rollout.hosts: the one field a delta does not carry whole.
var hostsField = (&relv1.Rollout{}).ProtoReflect().Descriptor().Fields().ByName("hosts")

// Delta is what a step must carry to take a rollout from cur (as stored) to
// next (Step's new row): every field of next but hosts, and in hosts only
// the hosts of next that differ from cur's, whole. state.MergeRolloutDelta
// applies it. Without it every step of a rolling rollout carried the whole
// fleet, and the raft log grew with the square of the fleet.
//
// ok is false when a delta cannot say it: next does not hold cur's hosts
// in cur's order (the planner never adds, removes or reorders hosts, so
// that is a bug to survive, with a whole row), or an agent id appears twice
// (a delta matches hosts by agent id). The delta shares messages with next:
// it is for encoding, not for changing.
func Delta(cur, next *relv1.Rollout) (delta *relv1.Rollout, ok bool) {
	ch, nh := cur.GetHosts(), next.GetHosts()
	if len(ch) != len(nh) {
		return nil, false
	}
	seen := make(map[string]struct{}, len(ch))
	for i, h := range ch {
		id := h.GetAgentId()
		if nh[i].GetAgentId() != id {
			return nil, false
		}
		if _, dup := seen[id]; dup {
			return nil, false
		}
		seen[id] = struct{}{}
	}
	delta = &relv1.Rollout{}
	// Copy by reflection, so that a header field added to Rollout later
	// travels in deltas without anyone remembering this function.
	dst := delta.ProtoReflect()
	next.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Number() != hostsField.Number() {
			dst.Set(fd, v)
		}
		return true
	})
	dst.SetUnknown(next.ProtoReflect().GetUnknown())
	for i, h := range nh {
		// Step clones the row, so an unchanged host is an equal message,
		// not the same pointer.
		if !proto.Equal(ch[i], h) {
			delta.Hosts = append(delta.Hosts, h)
		}
	}
	return delta, true
}
