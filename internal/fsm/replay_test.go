package fsm

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
	"pgregory.net/rapid"

	"github.com/relhq/rel/internal/rollout"
	"github.com/relhq/rel/internal/rollout/engine"
	"github.com/relhq/rel/internal/state"
	"github.com/relhq/rel/internal/validate"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// TestReplayedCommandChangesNothing (issue 8, finding 4): a server re-sends
// a forwarded command after a leadership change even when the first send
// was committed, so any committed entry may come again. Over random
// histories of real rollouts (starts, queued starts, the planner's steps
// with their automatic rollbacks, and release managers' controls, each
// request with its id as the server stamps them), applying any earlier
// entry again changes nothing in the store.
func TestReplayedCommandChangesNothing(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		f := New(state.New())
		var (
			index   uint64
			entries [][]byte
			now     = time.Unix(1_900_000_000, 0)
			nreq    int
		)
		apply := func(cmd *relv1.Command) *Result {
			if err := validate.Command(cmd); err != nil {
				t.Fatalf("the test made an invalid command: %v", err)
			}
			b, err := proto.Marshal(cmd)
			if err != nil {
				t.Fatal(err)
			}
			index++
			entries = append(entries, b)
			return f.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: b}).(*Result)
		}
		request := func(cmd *relv1.Command) *relv1.Command {
			nreq++
			cmd.RequestId = fmt.Sprintf("rq-%d", nreq)
			cmd.StampedUnixNano = now.UnixNano()
			return cmd
		}
		dump := func() []byte {
			snap, err := f.Snapshot()
			if err != nil {
				t.Fatal(err)
			}
			var sink memSink
			if err := snap.Persist(&sink); err != nil {
				t.Fatal(err)
			}
			return sink.Bytes()
		}
		apply(request(&relv1.Command{Kind: &relv1.Command_CreateApp{CreateApp: &relv1.CreateApp{App: &relv1.App{Name: "web", CreatedUnixNano: now.UnixNano()}}}}))
		for _, v := range []string{"1.0.0", "2.0.0", "3.0.0"} {
			apply(request(&relv1.Command{Kind: &relv1.Command_CreateRelease{CreateRelease: &relv1.CreateRelease{Release: &relv1.Release{
				App: "web", Version: v, Sha256: strings.Repeat("a", 64), ArtifactUrl: "https://example.com/web-" + v + ".tar.gz", CreatedUnixNano: now.UnixNano()}}}}))
		}
		eng := &engine.Engine{
			Store:  f.store,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			Now:    func() time.Time { return now },
			NewID:  func() string { nreq++; return fmt.Sprintf("ro-rb-%d", nreq) },
			Apply: func(_ context.Context, cmd *relv1.Command) (uint64, error) {
				res := apply(cmd)
				return res.Index, res.Err
			},
		}
		hostsOf := func(label string) []string {
			var hs []string
			for i := 0; i < 5; i++ {
				if rapid.Bool().Draw(t, fmt.Sprintf("%s-h%d", label, i)) {
					hs = append(hs, fmt.Sprintf("h%d", i))
				}
			}
			if len(hs) == 0 {
				hs = []string{"h0"}
			}
			return hs
		}
		for op := 0; op < 30; op++ {
			now = now.Add(time.Second)
			active, err := f.store.ActiveRollouts(nil)
			if err != nil {
				t.Fatal(err)
			}
			switch rapid.IntRange(0, 3).Draw(t, "op") {
			case 0: // a release manager starts a rollout, maybe queued
				hosts := hostsOf("start")
				spec := &relv1.RolloutSpec{Strategy: rapid.SampledFrom([]string{rollout.AllAtOnce, rollout.Rolling}).Draw(t, "strategy"),
					AutoRollback: rapid.Bool().Draw(t, "autoRollback"), ApproveWaves: rapid.Bool().Draw(t, "approve"),
					Waves: []*relv1.Quantity{{Percent: 50}, {Percent: 100}}}
				if spec.Strategy == rollout.AllAtOnce {
					spec.Waves, spec.ApproveWaves = nil, false
				}
				spec, err := rollout.Normalize(spec)
				if err != nil {
					t.Fatal(err)
				}
				var cands []rollout.Candidate
				obs := map[string]rollout.Obs{}
				prev := map[string]string{}
				for _, h := range hosts {
					cands = append(cands, rollout.Candidate{ID: h})
					obs[h] = rollout.Obs{Connected: true}
					prev[h] = "1.0.0"
				}
				waves, err := rollout.AssignWaves(spec, cands)
				if err != nil {
					t.Fatal(err)
				}
				nreq++
				ro := rollout.NewRollout(fmt.Sprintf("ro-%d", nreq), "web", rapid.SampledFrom([]string{"2.0.0", "3.0.0"}).Draw(t, "version"),
					rapid.SampledFrom([]string{"prod", "prod-eu"}).Draw(t, "env"), spec, waves, prev, now)
				blocker := ""
				if b, _, err := f.store.Blocker(ro); err == nil && b != nil {
					if !rapid.Bool().Draw(t, "queue") {
						continue
					}
					blocker = b.GetId()
				}
				d := rollout.Start(ro, "start", blocker, obs, now)
				desired, err := engine.DesiredRows(f.store, d.Rollout, d.Dispatch)
				if err != nil {
					t.Fatal(err)
				}
				apply(request(&relv1.Command{Kind: &relv1.Command_CreateRollout{CreateRollout: &relv1.CreateRollout{Rollout: d.Rollout, Desired: desired, Events: d.Events}}}))
			case 1, 2: // the engine steps a rollout; its agents report
				if len(active) == 0 {
					continue
				}
				ro := active[rapid.IntRange(0, len(active)-1).Draw(t, "stepped")]
				obs := map[string]rollout.Obs{}
				for _, h := range ro.GetHosts() {
					o := rollout.Obs{Connected: true, Running: "1.0.0"}
					if h.GetState() == rollout.HostDispatched {
						o.Phase = rapid.SampledFrom([]string{"", "healthy", "healthy", "failed"}).Draw(t, "phase")
					}
					obs[h.GetAgentId()] = o
				}
				v := rollout.View{Rollout: ro, Hosts: obs, Now: now}
				if ro.GetState() == rollout.StateQueued {
					if b, _, _ := f.store.Blocker(ro); b != nil {
						v.Blocker = b.GetId()
					}
				}
				if d := rollout.Step(v); d.Rollout != nil {
					_ = eng.Commit(context.Background(), ro, d) // a refusal is the FSM's answer: the next step reads again
				}
			case 3: // a release manager steers a rollout
				if len(active) == 0 {
					continue
				}
				ro := active[rapid.IntRange(0, len(active)-1).Draw(t, "steered")]
				action := rapid.SampledFrom(rollout.Actions).Draw(t, "action")
				var wave uint32
				if action == rollout.ActionApprove {
					wave = rollout.WaveNumber(ro, ro.GetCurrentWave()+1)
				}
				apply(request(&relv1.Command{Kind: &relv1.Command_RolloutControl{RolloutControl: &relv1.RolloutControl{
					RolloutId: ro.GetId(), Action: action, AtUnixNano: now.UnixNano(), Wave: wave}}}))
			}
			// Any committed entry may come again.
			if rapid.Bool().Draw(t, "replay") {
				before := dump()
				i := rapid.IntRange(0, len(entries)-1).Draw(t, "replayed")
				var cmd relv1.Command
				if err := proto.Unmarshal(entries[i], &cmd); err != nil {
					t.Fatal(err)
				}
				index++
				f.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: entries[i]})
				if after := dump(); !bytes.Equal(before, after) {
					t.Fatalf("replaying entry %d (%T) changed the store", i+1, cmd.GetKind())
				}
			}
		}
	})
}
