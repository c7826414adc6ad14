package fsm

import (
	"strings"
	"testing"

	"github.com/relhq/rel/internal/state"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// TestEventStream applies a small history and checks the cluster events
// it makes: one per change, in raft order, seq without gaps, each with
// its entry's index, the stamped time (or the change's own), the actor
// of the request; nothing for a refused command, a repeated request, or
// a new session of an agent already connected.
func TestEventStream(t *testing.T) {
	f := New(state.New())
	alice := &relv1.Actor{Kind: "token", Id: "00000000000000aa", Name: "alice"}
	as := func(c *relv1.Command) *relv1.Command { c.Actor = alice; return c }
	running := fuzzRollout("ro-1", "running")
	running.EventSeq = 1
	release := &relv1.Release{App: "web", Version: "1.0.0", Sha256: fuzzSHA, ArtifactUrl: "rel://sha256/" + fuzzSHA}
	type want struct {
		typ   string
		time  int64
		actor bool
	}
	steps := []struct {
		name string
		cmd  *relv1.Command
		want []want
	}{
		{"app", stamped(1, &relv1.Command_CreateApp{CreateApp: &relv1.CreateApp{App: &relv1.App{Name: "web"}}}), nil},
		{"env", stamped(2, &relv1.Command_CreateEnvironment{CreateEnvironment: &relv1.CreateEnvironment{Environment: &relv1.Environment{Name: "prod", Selector: map[string]string{"env": "prod"}}}}), nil},
		{"release", as(withRequestID("rq-1", stamped(3, &relv1.Command_CreateRelease{CreateRelease: &relv1.CreateRelease{Release: release}}))), []want{{"release.created", 3, true}}},
		{"repeated request", as(withRequestID("rq-1", stamped(4, &relv1.Command_CreateRelease{CreateRelease: &relv1.CreateRelease{Release: release}}))), nil},
		{"refused duplicate", as(stamped(5, &relv1.Command_CreateRelease{CreateRelease: &relv1.CreateRelease{Release: release}})), nil},
		{"block", as(stamped(6, &relv1.Command_BlockRelease{BlockRelease: &relv1.BlockRelease{App: "web", Version: "1.0.0", Blocked: true, Reason: "bad"}})), []want{{"release.blocked", 6, true}}},
		{"unblock", as(stamped(7, &relv1.Command_BlockRelease{BlockRelease: &relv1.BlockRelease{App: "web", Version: "1.0.0"}})), []want{{"release.unblocked", 7, true}}},
		{"agent joins", sessionsCmd(8, []*relv1.AgentUp{upAt("web-1", "s-1", 80)}, nil), []want{{"agent.joined", 80, false}}},
		{"new session while connected", sessionsCmd(9, []*relv1.AgentUp{upAt("web-1", "s-2", 90)}, nil), nil},
		{"agent lost", sessionsCmd(10, nil, []*relv1.AgentDown{down("web-1", "s-2")}), []want{{"agent.lost", 99, false}}},
		{"agent back", sessionsCmd(11, []*relv1.AgentUp{upAt("web-1", "s-3", 110)}, nil), []want{{"agent.back", 110, false}}},
		{"rollout", as(stamped(12, &relv1.Command_CreateRollout{CreateRollout: &relv1.CreateRollout{Rollout: running, Desired: fuzzDesired("ro-1"),
			Events: []*relv1.RolloutEvent{{RolloutId: "ro-1", Seq: 1, AtUnixNano: 12, Type: "started"}}}})), []want{{"rollout.started", 12, true}}},
		{"pause", as(stamped(13, &relv1.Command_RolloutControl{RolloutControl: &relv1.RolloutControl{RolloutId: "ro-1", Action: "pause", AtUnixNano: 13}})), []want{{"rollout.paused", 13, true}}},
		{"refused pause", as(stamped(14, &relv1.Command_RolloutControl{RolloutControl: &relv1.RolloutControl{RolloutId: "ro-1", Action: "pause", AtUnixNano: 14}})), nil},
		{"freeze", as(stamped(15, &relv1.Command_CreateFreeze{CreateFreeze: &relv1.CreateFreeze{Window: &relv1.FreezeWindow{Name: "xmas", Apps: []string{"web"}, Environments: []string{"prod"},
			StartUnixNano: 1e18, EndUnixNano: 2e18, CreatedUnixNano: 15}}})), []want{{"freeze.created", 15, true}}},
		{"unfreeze", as(stamped(16, &relv1.Command_DeleteFreeze{DeleteFreeze: &relv1.DeleteFreeze{Name: "xmas"}})), []want{{"freeze.deleted", 16, true}}},
	}
	var seq uint64
	for i, st := range steps {
		index := uint64(i + 1)
		f.Apply(logEntry(t, index, st.cmd))
		var got []*relv1.Event
		if _, _, _, err := f.Store().Events(nil, state.EventQuery{After: seq}, func(e *relv1.Event) bool { got = append(got, e); return true }); err != nil {
			t.Fatal(err)
		}
		if len(got) != len(st.want) {
			t.Fatalf("%s: %d events %v, want %d", st.name, len(got), got, len(st.want))
		}
		for j, w := range st.want {
			e := got[j]
			seq++
			if e.GetSeq() != seq || e.GetIndex() != index || e.GetType() != w.typ || e.GetTimeUnixNano() != w.time {
				t.Errorf("%s: event seq %d index %d type %s time %d, want seq %d index %d type %s time %d",
					st.name, e.GetSeq(), e.GetIndex(), e.GetType(), e.GetTimeUnixNano(), seq, index, w.typ, w.time)
			}
			if (e.GetActor().GetId() == alice.GetId()) != w.actor {
				t.Errorf("%s: actor %v, want alice: %v", st.name, e.GetActor(), w.actor)
			}
			if e.GetMessage() == "" {
				t.Errorf("%s: %s has no message", st.name, e.GetType())
			}
		}
	}
	// A rollout's events name its app, environment and version.
	var started *relv1.Event
	_, _, _, _ = f.Store().Events(nil, state.EventQuery{}, func(e *relv1.Event) bool {
		if e.GetType() == "rollout.started" {
			started = e
		}
		return true
	})
	if started.GetApp() != "web" || started.GetEnv() != "prod" || started.GetVersion() != "1.0.0" || started.GetRolloutId() != "ro-1" {
		t.Errorf("rollout.started %v: want web@1.0.0 in prod, ro-1", started)
	}
}

func upAt(id, session string, at int64) *relv1.AgentUp {
	u := up(id, session, 1)
	u.Agent.ConnectedUnixNano = at
	return u
}

// TestWebhookAuditHasNoSecret: creating a webhook is audited, and its
// record does not carry the secret.
func TestWebhookAuditHasNoSecret(t *testing.T) {
	f := New(state.New())
	cmd := withAlice(stamped(1, &relv1.Command_CreateWebhook{CreateWebhook: &relv1.CreateWebhook{Webhook: &relv1.Webhook{
		Name: "chat", Url: "https://hooks.example.com/x", Events: []string{"rollout.*"}, Format: "json", Secret: []byte("whsec-do-not-log")}}}))
	if res := f.Apply(logEntry(t, 1, cmd)).(*Result); res.Err != nil {
		t.Fatal(res.Err)
	}
	var recs []*relv1.AuditRecord
	if _, err := f.Store().Audit(nil, state.AuditFilter{}, func(r *relv1.AuditRecord) bool { recs = append(recs, r); return true }); err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0].GetAction() != "create_webhook" {
		t.Fatalf("audit records %v, want one create_webhook", recs)
	}
	if strings.Contains(recs[0].String(), "whsec-do-not-log") {
		t.Fatalf("the audit record holds the secret: %v", recs[0])
	}
}
