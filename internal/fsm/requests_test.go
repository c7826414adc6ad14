package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/relhq/rel/internal/rollout"
	"github.com/relhq/rel/internal/state"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// replica applies entries with consecutive indexes.
type replica struct {
	t     *testing.T
	f     *FSM
	index uint64
}

func newReplica(t *testing.T) *replica { return &replica{t: t, f: New(state.New())} }

func (r *replica) apply(cmd *relv1.Command) *Result {
	r.t.Helper()
	r.index++
	return r.f.Apply(entry(r.t, r.index, cmd)).(*Result)
}

func (r *replica) must(cmd *relv1.Command) *Result {
	r.t.Helper()
	res := r.apply(cmd)
	if res.Err != nil {
		r.t.Fatalf("entry %d: %v", r.index, res.Err)
	}
	return res
}

func createApp(id string, at int64, name string) *relv1.Command {
	return withRequestID(id, stamped(at, &relv1.Command_CreateApp{CreateApp: &relv1.CreateApp{App: &relv1.App{Name: name, CreatedUnixNano: at}}}))
}

// gated is a rollout of three waves waiting for approval of its second
// (index 1): wave 2 of 3, or wave 1 of 2 after the canary.
func gated(id, strategy string) *relv1.Rollout {
	r := &relv1.Rollout{Id: id, App: "web", Version: "1.0.0", Environment: "prod", Kind: rollout.KindDeploy, State: rollout.StateWaitingApproval,
		Spec: &relv1.RolloutSpec{Strategy: strategy, ApproveWaves: true}, WaveCount: 3, CreatedUnixNano: 7}
	for w := uint32(0); w < 3; w++ {
		st := "pending"
		if w == 0 {
			st = "healthy"
		}
		r.Hosts = append(r.Hosts, &relv1.RolloutHost{AgentId: fmt.Sprintf("h%d", w), Wave: w, State: st, TargetVersion: "1.0.0"})
	}
	return r
}

func approve(id string, at int64, rollout string, wave uint32) *relv1.Command {
	return withRequestID(id, stamped(at, &relv1.Command_RolloutControl{RolloutControl: &relv1.RolloutControl{RolloutId: rollout, Action: "approve", AtUnixNano: at, Wave: wave}}))
}

func setup(r *replica) {
	r.must(stamped(1, &relv1.Command_CreateApp{CreateApp: &relv1.CreateApp{App: &relv1.App{Name: "web", CreatedUnixNano: 1}}}))
	r.must(stamped(2, &relv1.Command_CreateEnvironment{CreateEnvironment: &relv1.CreateEnvironment{Environment: &relv1.Environment{Name: "prod", Selector: map[string]string{"env": "prod"}}}}))
	r.must(stamped(3, &relv1.Command_CreateRelease{CreateRelease: &relv1.CreateRelease{Release: &relv1.Release{App: "web", Version: "1.0.0", Sha256: fuzzSHA}}}))
}

// TestRepeatedRequestID: a command whose request id was applied before
// changes nothing and gets the first answer, whether that was a success,
// a refusal, or a rollout made with another id.
func TestRepeatedRequestID(t *testing.T) {
	r := newReplica(t)
	setup(r)

	first := r.must(createApp("rq-a", 10, "api"))
	before := r.f.Store().LatestIndex()
	again := r.apply(createApp("rq-a", 11, "api"))
	if again.Err != nil || !again.Duplicate || again.Index != first.Index {
		t.Fatalf("repeated create: %+v, want the first answer (index %d, no error)", again, first.Index)
	}
	if app, _ := r.f.Store().App(nil, "api"); app.GetCreateIndex() != first.Index || app.GetCreatedUnixNano() != 10 {
		t.Errorf("the repeat changed the app: %v", app)
	}
	if got := r.f.Store().LatestIndex(); got != before {
		t.Errorf("the repeat wrote: latest index %d -> %d", before, got)
	}

	// A refusal is an answer too: the same refusal, from the first entry.
	refused := r.apply(createApp("rq-b", 12, "api"))
	if !errors.Is(refused.Err, state.ErrAlreadyExists) || refused.Duplicate {
		t.Fatalf("create of an existing app: %+v", refused)
	}
	again = r.apply(createApp("rq-b", 13, "api"))
	if !errors.Is(again.Err, state.ErrAlreadyExists) || again.Err.Error() != refused.Err.Error() || again.Index != refused.Index || !again.Duplicate {
		t.Errorf("repeated refusal: %+v, want %+v as a duplicate", again, refused)
	}

	// A retried start makes a new rollout id; the repeat answers with the
	// first one's, and only that one exists.
	start := func(at int64, id string) *relv1.Command {
		ro := &relv1.Rollout{Id: id, App: "web", Version: "1.0.0", Environment: "prod", Kind: rollout.KindDeploy, State: rollout.StateRunning,
			Hosts: []*relv1.RolloutHost{{AgentId: "h0", State: "pending", TargetVersion: "1.0.0"}}, WaveCount: 1, CreatedUnixNano: at}
		return withRequestID("rq-start", stamped(at, &relv1.Command_CreateRollout{CreateRollout: &relv1.CreateRollout{Rollout: ro}}))
	}
	created := r.must(start(20, "ro-first"))
	if created.Ref != "ro-first" {
		t.Fatalf("create rollout ref %q", created.Ref)
	}
	again = r.apply(start(21, "ro-second"))
	if again.Err != nil || !again.Duplicate || again.Ref != "ro-first" || again.Index != created.Index {
		t.Fatalf("repeated start: %+v, want ref ro-first at index %d", again, created.Index)
	}
	if ros, _, _ := r.f.Store().Rollouts(nil, "web"); len(ros) != 1 || ros[0].GetId() != "ro-first" {
		t.Errorf("rollouts after a repeated start: %v", ros)
	}

	// The same id on another request is refused, and changes nothing.
	reused := r.apply(createApp("rq-a", 30, "db"))
	if !errors.Is(reused.Err, state.ErrRequestIDReused) || reused.Duplicate || !strings.Contains(reused.Err.Error(), `request id "rq-a" was used at index 4 for another request (create_app api)`) {
		t.Errorf("reused id: %+v", reused)
	}
	if _, err := r.f.Store().App(nil, "db"); !errors.Is(err, state.ErrNotFound) {
		t.Errorf("a reused id created app db: %v", err)
	}
}

// TestRepeatedApproveAfterTheEngineMoved: an approve applied again after
// the rollout reached its next gate does not open it. Without a request id
// (and without a wave, as before approvals named theirs) it would.
func TestRepeatedApproveAfterTheEngineMoved(t *testing.T) {
	for _, withID := range []bool{true, false} {
		t.Run(fmt.Sprintf("request id %v", withID), func(t *testing.T) {
			r := newReplica(t)
			setup(r)
			r.must(stamped(10, &relv1.Command_CreateRollout{CreateRollout: &relv1.CreateRollout{Rollout: gated("ro-1", "rolling")}}))
			cmd := approve("rq-approve", 11, "ro-1", 2)
			if !withID {
				cmd = approve("", 11, "ro-1", 0)
			}
			r.must(cmd)
			ro, _ := r.f.Store().Rollout(nil, "ro-1")
			if ro.GetState() != rollout.StateRunning || ro.GetApprovedWave() != 1 {
				t.Fatalf("after approve: %s, approved wave %d", ro.GetState(), ro.GetApprovedWave())
			}
			// The engine runs wave 2 and stops at the gate of wave 3.
			next := gated("ro-1", "rolling")
			next.CurrentWave, next.ApprovedWave, next.EventSeq = 1, 1, ro.GetEventSeq()
			r.must(stamped(12, &relv1.Command_RolloutStep{RolloutStep: &relv1.RolloutStep{Rollout: next, ExpectModifyIndex: ro.GetModifyIndex()}}))

			res := r.apply(cmd)
			ro, _ = r.f.Store().Rollout(nil, "ro-1")
			opened := ro.GetState() != rollout.StateWaitingApproval || ro.GetApprovedWave() != 1
			if withID && (opened || !res.Duplicate || res.Err != nil) {
				t.Errorf("the repeated approve: %+v; rollout %s, approved wave %d: want the first answer and the gate of wave 3 still closed", res, ro.GetState(), ro.GetApprovedWave())
			}
			if !withID && !opened {
				t.Errorf("a legacy approve (no id, no wave) no longer approves whatever waits: %+v", res)
			}
			if withID {
				// Another request approving wave 2 is told it is late.
				res := r.apply(approve("rq-other", 13, "ro-1", 2))
				if want := "cannot approve wave 2 of rollout ro-1: wave 2 of 3 was approved already; it waits for approval of wave 3 of 3 (--wave 3)"; !errors.Is(res.Err, state.ErrConflict) || res.Err.Error() != want {
					t.Errorf("a new approve of the approved wave: %v, want %q", res.Err, want)
				}
			}
		})
	}
}

// TestApproveNamesItsWave: an approve of another wave than the one that
// waits is refused, naming both as people number them; waves count from 1,
// a canary deploy's from its canary (0).
func TestApproveNamesItsWave(t *testing.T) {
	tests := []struct {
		strategy string
		waiting  uint32 // the number of the wave that waits
		message  string
	}{
		{"rolling", 2, "cannot approve wave 3 of rollout ro-1: it waits for approval of wave 2 of 3 (--wave 2)"},
		{"canary", 1, "cannot approve wave 2 of rollout ro-1: it waits for approval of wave 1 of 2 (--wave 1)"},
	}
	for _, tt := range tests {
		t.Run(tt.strategy, func(t *testing.T) {
			r := newReplica(t)
			setup(r)
			r.must(stamped(10, &relv1.Command_CreateRollout{CreateRollout: &relv1.CreateRollout{Rollout: gated("ro-1", tt.strategy)}}))
			res := r.apply(approve("rq-1", 11, "ro-1", tt.waiting+1))
			if !errors.Is(res.Err, state.ErrConflict) || res.Err.Error() != tt.message {
				t.Fatalf("approve of the wrong wave: %v, want ErrConflict %q", res.Err, tt.message)
			}
			if ro, _ := r.f.Store().Rollout(nil, "ro-1"); ro.GetState() != rollout.StateWaitingApproval {
				t.Fatalf("a refused approve changed the rollout: %s", ro.GetState())
			}
			r.must(approve("rq-2", 12, "ro-1", tt.waiting))
			ro, _ := r.f.Store().Rollout(nil, "ro-1")
			evs, _, _ := r.f.Store().RolloutEvents(nil, "ro-1", 0)
			if ro.GetState() != rollout.StateRunning || len(evs) == 0 || evs[len(evs)-1].GetMessage() != fmt.Sprintf("approved wave %d of %d", tt.waiting, tt.waiting+1) {
				t.Fatalf("after approving wave %d: %s, events %v", tt.waiting, ro.GetState(), evs)
			}
			// Approved already: said so, whatever the request id.
			res = r.apply(approve("rq-3", 13, "ro-1", tt.waiting))
			if !errors.Is(res.Err, state.ErrConflict) || !strings.Contains(res.Err.Error(), fmt.Sprintf("not waiting for approval: wave %d of %d was approved already", tt.waiting, tt.waiting+1)) {
				t.Fatalf("second approve of the same wave with a new id: %v", res.Err)
			}
		})
	}
}

// TestRequestRecordsExpireAndAreCapped: records older than the TTL (by
// the stamps in the log) go as new ones come, the oldest go past the cap,
// and an id whose record went is a new request again. Two replicas, one
// restored from the other's snapshot half-way, keep the same records.
func TestRequestRecordsExpireAndAreCapped(t *testing.T) {
	const ttl = 100 * time.Second
	sec := int64(time.Second)
	a, b := newReplica(t), newReplica(t)
	for _, r := range []*replica{a, b} {
		r.f.requestTTL, r.f.maxRequests = ttl, 3
		setup(r)
	}
	ids := func(r *replica) string {
		var out []string
		for _, rec := range r.f.Store().Requests() {
			out = append(out, fmt.Sprintf("%s#%d", rec.GetId(), rec.GetSeq()))
		}
		return strings.Join(out, " ")
	}
	steps := []struct {
		cmd  *relv1.Command
		want string
	}{
		{createApp("r1", 10*sec, "a1"), "r1#1"},
		{createApp("r2", 20*sec, "a2"), "r1#1 r2#2"},
		{createApp("r3", 30*sec, "a3"), "r1#1 r2#2 r3#3"},
		// Past the cap of 3: the oldest goes.
		{createApp("r4", 40*sec, "a4"), "r2#2 r3#3 r4#4"},
		// A repeat records nothing.
		{createApp("r3", 41*sec, "a3"), "r2#2 r3#3 r4#4"},
		// 100 s after r2's and r3's stamps (not r4's): they expire.
		{createApp("r5", 135*sec, "a5"), "r4#4 r5#5"},
		// A command without a request id touches no record.
		{stamped(500*sec, &relv1.Command_CreateApp{CreateApp: &relv1.CreateApp{App: &relv1.App{Name: "a6"}}}), "r4#4 r5#5"},
		// Everything older than 100 s goes at once (and an empty table
		// counts from 1 again).
		{createApp("r1", 1000*sec, "a1"), "r1#1"},
	}
	for i, s := range steps {
		if i == 4 {
			var buf bytes.Buffer
			if err := a.f.Store().Snapshot().Persist(&buf); err != nil {
				t.Fatal(err)
			}
			if err := b.f.Restore(io.NopCloser(&buf)); err != nil {
				t.Fatal(err)
			}
			b.index = a.index
		}
		ra := a.apply(s.cmd)
		if i >= 4 {
			rb := b.apply(s.cmd)
			if fmt.Sprint(ra.Err) != fmt.Sprint(rb.Err) || ra.Index != rb.Index || ra.Duplicate != rb.Duplicate {
				t.Fatalf("step %d: replicas answer %+v and %+v", i, ra, rb)
			}
		}
		if got := ids(a); got != s.want {
			t.Fatalf("step %d: records %q, want %q", i, got, s.want)
		}
	}
	// r1's first record expired: it was a new request, refused as such
	// (a1 exists), not answered with the first answer.
	last := a.f.Store().Request("r1")
	if last.GetIndex() != a.index || last.GetErrorKind() != "already_exists" {
		t.Errorf("r1 after its record expired: %v", last)
	}
	if ok, why := state.Equal(a.f.Store(), b.f.Store()); !ok {
		t.Fatalf("replicas differ: %s", why)
	}
}
