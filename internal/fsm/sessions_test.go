package fsm

import (
	"bytes"
	"errors"
	"io"
	"testing"

	"github.com/relhq/rel/internal/state"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

func sessionsCmd(n int64, ups []*relv1.AgentUp, downs []*relv1.AgentDown) *relv1.Command {
	return stamped(n, &relv1.Command_AgentSessions{AgentSessions: &relv1.AgentSessions{Up: ups, Down: downs}})
}

func up(id, session string, certNotBefore int64) *relv1.AgentUp {
	return &relv1.AgentUp{Agent: &relv1.Agent{Id: id, SessionId: session, ServerId: "s1", Labels: map[string]string{"env": "prod"}},
		CertNotBeforeUnixNano: certNotBefore}
}

func down(id, session string) *relv1.AgentDown {
	return &relv1.AgentDown{AgentId: id, SessionId: session, AtUnixNano: 99, Reason: "stream closed"}
}

// TestAgentSessionsAnswerPerItem: a batch of connects and disconnects is
// answered item by item (ups, then downs). A revoked agent's up and an
// unknown agent's down are refused and write nothing, while the rest of the
// same entry applies; a down naming an old session leaves the newer one
// connected; ups apply before downs, so a session's down in the same entry
// as its up ends it.
func TestAgentSessionsAnswerPerItem(t *testing.T) {
	f := New(state.New())
	log := []*relv1.Command{
		sessionsCmd(1, []*relv1.AgentUp{up("a-1", "s-1", 1), up("a-2", "s-2", 1), up("a-3", "s-3", 1)}, nil),
		stamped(2, &relv1.Command_RevokeAgent{RevokeAgent: &relv1.RevokeAgent{Revocation: &relv1.AgentRevocation{AgentId: "a-2", RevokedUnixNano: 50}}}),
		// a-2 reconnects with its old certificate (valid from 1 <= 50):
		// refused. a-4 is new; a-1 gets a newer session, and the old
		// session's down must not end it; a-3's session s-3 ends; a-9 was
		// never seen.
		sessionsCmd(3, []*relv1.AgentUp{up("a-2", "s-5", 1), up("a-4", "s-4", 1), up("a-1", "s-6", 1), up("a-5", "s-7", 1)},
			[]*relv1.AgentDown{down("a-1", "s-1"), down("a-3", "s-3"), down("a-9", "s-9"), down("a-5", "s-7")}),
		// a-2 enrolled again after the revocation: its new certificate
		// (valid from 60) is accepted.
		sessionsCmd(4, []*relv1.AgentUp{up("a-2", "s-8", 60)}, nil),
	}
	want := [][]error{
		{nil, nil, nil},
		nil,
		{state.ErrUnauthenticated, nil, nil, nil, nil, nil, state.ErrNotFound, nil},
		{nil},
	}
	for i, cmd := range log {
		res := f.Apply(logEntry(t, uint64(i+1), cmd)).(*Result)
		if res.Err != nil {
			t.Fatalf("entry %d: %v", i+1, res.Err)
		}
		if len(res.Items) != len(want[i]) {
			t.Fatalf("entry %d: %d item answers, want %d", i+1, len(res.Items), len(want[i]))
		}
		for j, w := range want[i] {
			if got := res.Items[j]; (w == nil) != (got == nil) || !errors.Is(got, w) {
				t.Errorf("entry %d item %d: %v, want %v", i+1, j, got, w)
			}
		}
	}
	checks := []struct {
		id, session string
		connected   bool
		modify      uint64
	}{
		{"a-1", "s-6", true, 3},
		{"a-2", "s-8", true, 4},
		{"a-3", "s-3", false, 3},
		{"a-4", "s-4", true, 3},
		{"a-5", "s-7", false, 3},
	}
	for _, c := range checks {
		a, err := f.Store().Agent(nil, c.id)
		if err != nil {
			t.Fatalf("%s: %v", c.id, err)
		}
		if a.GetSessionId() != c.session || a.GetConnected() != c.connected || a.GetModifyIndex() != c.modify {
			t.Errorf("%s: session %s connected %v modify %d, want %s %v %d", c.id, a.GetSessionId(), a.GetConnected(), a.GetModifyIndex(), c.session, c.connected, c.modify)
		}
	}
	if _, err := f.Store().Agent(nil, "a-9"); !errors.Is(err, state.ErrNotFound) {
		t.Errorf("a-9 was stored by a refused down: %v", err)
	}
}

// TestAgentSessionsReplayDeterministic: two replicas applying the same
// agent_sessions entries, one restored from the other's snapshot half-way,
// end identical and answer every item the same.
func TestAgentSessionsReplayDeterministic(t *testing.T) {
	var log []*relv1.Command
	for i := int64(0); i < 6; i++ {
		var ups []*relv1.AgentUp
		var downs []*relv1.AgentDown
		for j := int64(0); j < 5; j++ {
			id := "a-" + string(rune('a'+(i+j)%7))
			ups = append(ups, up(id, "s-"+string(rune('a'+i))+string(rune('a'+j)), 1))
			downs = append(downs, down(id, "s-"+string(rune('a'+i-1))+string(rune('a'+j))))
		}
		log = append(log, sessionsCmd(i+1, ups, downs))
		if i == 2 {
			log = append(log, stamped(40, &relv1.Command_RevokeAgent{RevokeAgent: &relv1.RevokeAgent{Revocation: &relv1.AgentRevocation{AgentId: "a-c", RevokedUnixNano: 5}}}))
		}
	}
	a, b := New(state.New()), New(state.New())
	half := len(log) / 2
	for i, cmd := range log[:half] {
		a.Apply(logEntry(t, uint64(i+1), cmd))
	}
	snap, err := a.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := snap.(*fsmSnapshot).snap.Persist(&buf); err != nil {
		t.Fatal(err)
	}
	if err := b.Restore(io.NopCloser(&buf)); err != nil {
		t.Fatal(err)
	}
	for i, cmd := range log[half:] {
		idx := uint64(half + i + 1)
		ra, rb := a.Apply(logEntry(t, idx, cmd)).(*Result), b.Apply(logEntry(t, idx, cmd)).(*Result)
		if len(ra.Items) != len(rb.Items) {
			t.Fatalf("entry %d: %d / %d item answers", idx, len(ra.Items), len(rb.Items))
		}
		for j := range ra.Items {
			if state.ErrorKind(ra.Items[j]) != state.ErrorKind(rb.Items[j]) {
				t.Errorf("entry %d item %d: %v / %v", idx, j, ra.Items[j], rb.Items[j])
			}
		}
	}
	if ok, why := state.Equal(a.Store(), b.Store()); !ok {
		t.Fatalf("replicas differ: %s", why)
	}
}
