package rollout

import (
	"fmt"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"pgregory.net/rapid"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

var (
	hostStates    = []string{HostPending, HostDispatched, HostHealthy, HostFailed, HostSkipped}
	rolloutStates = []string{StateRunning, StateWaitingApproval, StatePaused, StateSucceeded, StateFailed}
	phases        = []string{"", "downloading", "healthy", "failed"}
	versions      = []string{"", "1.0.0", "2.0.0"}
)

func drawHost(t *rapid.T, id string) *relv1.RolloutHost {
	return &relv1.RolloutHost{
		AgentId: id, Wave: uint32(rapid.IntRange(0, 3).Draw(t, "wave")), State: rapid.SampledFrom(hostStates).Draw(t, "hostState"),
		PreviousVersion: rapid.SampledFrom(versions).Draw(t, "prev"), TargetVersion: rapid.SampledFrom(versions).Draw(t, "target"),
		Reason: rapid.SampledFrom([]string{"", "agent lost"}).Draw(t, "hostReason"), Phase: rapid.SampledFrom(phases).Draw(t, "phase"),
		DispatchedUnixNano: rapid.Int64Range(0, 3).Draw(t, "dispatched"), FinishedUnixNano: rapid.Int64Range(0, 3).Draw(t, "finished"),
	}
}

func drawRollout(t *rapid.T, n int) *relv1.Rollout {
	r := &relv1.Rollout{
		Id: "ro-1", App: "web", Version: "2.0.0", Environment: "prod", Kind: KindDeploy,
		Spec:  &relv1.RolloutSpec{Strategy: Rolling, MaxParallel: uint32(rapid.IntRange(0, 3).Draw(t, "maxParallel"))},
		State: rapid.SampledFrom(rolloutStates).Draw(t, "state"), Reason: rapid.SampledFrom([]string{"", "2 of 3 hosts healthy"}).Draw(t, "reason"),
		CurrentWave: uint32(rapid.IntRange(0, 3).Draw(t, "currentWave")), WaveCount: 4,
		EventSeq: rapid.Uint64Range(0, 9).Draw(t, "eventSeq"), LastProgressUnixNano: rapid.Int64Range(0, 9).Draw(t, "progress"),
		WaveStartedUnixNano: rapid.Int64Range(0, 9).Draw(t, "waveStarted"), ApprovedWave: uint32(rapid.IntRange(0, 2).Draw(t, "approved")),
		CreateIndex: 3, ModifyIndex: rapid.Uint64Range(3, 9).Draw(t, "modifyIndex"),
	}
	if rapid.Bool().Draw(t, "noSpec") {
		r.Spec = nil
	}
	for i := 0; i < n; i++ {
		r.Hosts = append(r.Hosts, drawHost(t, fmt.Sprintf("h%02d", i)))
	}
	return r
}

// TestDeltaMergeProperty: for random rows cur and next holding the same
// hosts (random header, each host kept, redrawn, or changed in one field),
// the delta holds exactly the hosts that differ, in order, and merging it
// into cur gives next.
func TestDeltaMergeProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(0, 12).Draw(t, "hosts")
		cur := drawRollout(t, n)
		next := drawRollout(t, n) // a new header
		for i := range next.Hosts {
			switch rapid.IntRange(0, 2).Draw(t, "hostChange") {
			case 0: // unchanged, as Step leaves most hosts: an equal clone
				next.Hosts[i] = proto.Clone(cur.Hosts[i]).(*relv1.RolloutHost)
			case 1: // one field changed
				h := proto.Clone(cur.Hosts[i]).(*relv1.RolloutHost)
				h.State = rapid.SampledFrom(hostStates).Draw(t, "newState")
				next.Hosts[i] = h
			} // 2: redrawn whole
		}
		curBefore := proto.Clone(cur).(*relv1.Rollout)
		nextBefore := proto.Clone(next).(*relv1.Rollout)

		delta, ok := Delta(cur, next)
		if !ok {
			t.Fatalf("no delta for rows holding the same hosts")
		}
		var want []string
		for i := range cur.Hosts {
			if !proto.Equal(cur.Hosts[i], next.Hosts[i]) {
				want = append(want, cur.Hosts[i].GetAgentId())
			}
		}
		var got []string
		for _, h := range delta.GetHosts() {
			got = append(got, h.GetAgentId())
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("delta holds hosts %v, want the changed ones %v", got, want)
		}
		header := proto.Clone(next).(*relv1.Rollout)
		header.Hosts = nil
		dh := proto.Clone(delta).(*relv1.Rollout)
		dh.Hosts = nil
		if !proto.Equal(dh, header) {
			t.Fatalf("delta header %v, want %v", dh, header)
		}
		// Through the wire, as a replica gets it.
		b, err := proto.Marshal(delta)
		if err != nil {
			t.Fatal(err)
		}
		var decoded relv1.Rollout
		if err := proto.Unmarshal(b, &decoded); err != nil {
			t.Fatal(err)
		}
		merged, err := MergeDelta(cur, &decoded)
		if err != nil {
			t.Fatalf("merge: %v", err)
		}
		if !proto.Equal(merged, next) {
			t.Fatalf("merge(cur, Delta(cur, next)) =\n%v\nwant\n%v", merged, next)
		}
		if !proto.Equal(cur, curBefore) || !proto.Equal(next, nextBefore) {
			t.Fatalf("Delta or the merge changed its input")
		}
	})
}

// TestDeltaRefusesRowsItCannotDescribe: a delta matches hosts by agent id
// and keeps the stored order, so other host lists travel whole.
func TestDeltaRefusesRowsItCannotDescribe(t *testing.T) {
	row := func(ids ...string) *relv1.Rollout {
		r := &relv1.Rollout{Id: "ro-1"}
		for _, id := range ids {
			r.Hosts = append(r.Hosts, &relv1.RolloutHost{AgentId: id, State: HostPending})
		}
		return r
	}
	twice := row("a", "a")
	twice.Hosts[1].State = HostDispatched
	for name, c := range map[string][2]*relv1.Rollout{
		"host added":       {row("a", "b"), row("a", "b", "c")},
		"host removed":     {row("a", "b"), row("a")},
		"hosts reordered":  {row("a", "b"), row("b", "a")},
		"host replaced":    {row("a", "b"), row("a", "c")},
		"changed id twice": {row("a", "a"), twice},
	} {
		if d, ok := Delta(c[0], c[1]); ok {
			t.Errorf("%s: delta %v, want none (a whole row)", name, d)
		}
	}
	if d, ok := Delta(row("a", "b"), row("a", "b")); !ok || len(d.GetHosts()) != 0 {
		t.Errorf("no change: %v %v, want a delta without hosts", d, ok)
	}
	// An id twice among hosts that do not change is no ambiguity.
	other := row("a", "a", "b")
	other.Hosts[2].State = HostDispatched
	if d, ok := Delta(row("a", "a", "b"), other); !ok || len(d.GetHosts()) != 1 {
		t.Errorf("unchanged id twice: %v %v, want a delta of b", d, ok)
	}
}

// TestSameHostSeesEveryField sets each field of RolloutHost in turn, as
// its descriptor lists them: a field added later and forgotten in sameHost
// fails here instead of being left out of deltas.
func TestSameHostSeesEveryField(t *testing.T) {
	fields := (&relv1.RolloutHost{}).ProtoReflect().Descriptor().Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		b := &relv1.RolloutHost{}
		m := b.ProtoReflect()
		switch {
		case fd.IsList():
			l := m.Mutable(fd).List()
			l.Append(l.NewElement())
		case fd.IsMap():
			t.Fatalf("field %s: a map; teach this test to set one", fd.Name())
		case fd.Kind() == protoreflect.MessageKind:
			m.Set(fd, protoreflect.ValueOfMessage(m.NewField(fd).Message()))
		case fd.Kind() == protoreflect.StringKind:
			m.Set(fd, protoreflect.ValueOfString("x"))
		case fd.Kind() == protoreflect.BoolKind:
			m.Set(fd, protoreflect.ValueOfBool(true))
		case fd.Kind() == protoreflect.EnumKind:
			m.Set(fd, protoreflect.ValueOfEnum(1))
		case fd.Kind() == protoreflect.Uint32Kind || fd.Kind() == protoreflect.Fixed32Kind:
			m.Set(fd, protoreflect.ValueOfUint32(1))
		case fd.Kind() == protoreflect.Uint64Kind || fd.Kind() == protoreflect.Fixed64Kind:
			m.Set(fd, protoreflect.ValueOfUint64(1))
		case fd.Kind() == protoreflect.Int32Kind || fd.Kind() == protoreflect.Sint32Kind || fd.Kind() == protoreflect.Sfixed32Kind:
			m.Set(fd, protoreflect.ValueOfInt32(1))
		case fd.Kind() == protoreflect.Int64Kind || fd.Kind() == protoreflect.Sint64Kind || fd.Kind() == protoreflect.Sfixed64Kind:
			m.Set(fd, protoreflect.ValueOfInt64(1))
		default:
			t.Fatalf("field %s: kind %s; teach this test to set it", fd.Name(), fd.Kind())
		}
		if sameHost(&relv1.RolloutHost{}, b) {
			t.Errorf("sameHost misses RolloutHost.%s: a host changed in it would be left out of deltas", fd.Name())
		}
	}
	u := &relv1.RolloutHost{}
	u.ProtoReflect().SetUnknown(protowire.AppendVarint(protowire.AppendTag(nil, 99, protowire.VarintType), 1))
	if sameHost(&relv1.RolloutHost{}, u) {
		t.Error("sameHost misses unknown fields")
	}
	if !sameHost(&relv1.RolloutHost{AgentId: "a", Wave: 2}, &relv1.RolloutHost{AgentId: "a", Wave: 2}) {
		t.Error("equal hosts differ")
	}
}
