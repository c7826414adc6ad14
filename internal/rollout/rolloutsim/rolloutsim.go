// Package rolloutsim runs one rollout over simulated hosts in-process and
// counts the bytes it writes to the raft log. Everything but the network
// and the agents is real: the planner (rollout.Step), the engine's commit
// (engine.Engine.Commit), command validation, protobuf encoding and the
// FSM applying each entry at its index. The hosts are connected agents
// that walk through every install phase, one report batch per phase, and
// turn healthy. The clock is simulated (a second per report batch), so a
// run is deterministic and takes no wall time beyond the CPU it uses.
//
// It serves the test that keeps a rollout's raft bytes linear in the
// fleet (internal/rollout) and the raft-bytes figures of `make bench`.
package rolloutsim

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"github.com/relhq/rel/internal/fsm"
	"github.com/relhq/rel/internal/rollout"
	"github.com/relhq/rel/internal/rollout/engine"
	"github.com/relhq/rel/internal/state"
	"github.com/relhq/rel/internal/validate"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// Phases are what an agent reports while it installs, in order (the
// agent's install.Phase values); a report of a phase that is not an
// outcome is progress without an engine step.
var Phases = []string{"downloading", "installing", "starting", "verifying", "healthy"}

// Config describes one simulated rollout.
type Config struct {
	// Hosts is the number of simulated hosts, named sim-0001, sim-0002, ...
	// (as rel-agent --simulate names its agents).
	Hosts int
	// MaxParallel of the rolling rollout; 0 means 1.
	MaxParallel uint32
	// Replay also applies the log as it was written before deltas (every
	// step a whole row, Command.rollout_step) to a second FSM, and fails
	// the run unless both stores end identical. It doubles the run's cost.
	Replay bool
}

// Result is what one rollout wrote to the raft log: its creation, every
// engine step and the agents' report batches (the setup of apps, releases
// and agents is not counted). Bytes are the entries' data, the encoded
// rel.v1.Command, as the server hands it to raft.Apply.
type Result struct {
	Hosts      int
	FinalState string

	Entries, Steps, ReportBatches       int
	Bytes                               int64
	CreateBytes, StepBytes, ReportBytes int64
	// Largest is the largest entry; LargestStep the largest engine step.
	Largest, LargestStep int

	// The same steps as whole rows, as the engine wrote them before
	// deltas: what the log would have held.
	WholeStepBytes   int64
	WholeLargestStep int
}

// WholeBytes is what the rollout wrote with every step a whole row.
func (r Result) WholeBytes() int64 { return r.Bytes - r.StepBytes + r.WholeStepBytes }

// WholeLargest is the largest entry with every step a whole row.
func (r Result) WholeLargest() int { return max(r.Largest, r.WholeLargestStep) }

const (
	app        = "web"
	env        = "prod"
	oldVersion = "1.0.0"
	newVersion = "2.0.0"
	rolloutID  = "ro-sim"
	sha        = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
)

type sim struct {
	cfg   Config
	fsm   *fsm.FSM
	whole *fsm.FSM // with Replay
	index uint64
	now   time.Time
	res   Result
}

// Rolling runs a rolling rollout of a new release to cfg.Hosts hosts until
// it ends, and returns what it wrote.
func Rolling(cfg Config) (Result, error) {
	if cfg.Hosts < 1 {
		return Result{}, errors.New("rolloutsim: at least one host")
	}
	if cfg.MaxParallel == 0 {
		cfg.MaxParallel = 1
	}
	s := &sim{cfg: cfg, fsm: fsm.New(state.New()), now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	if cfg.Replay {
		s.whole = fsm.New(state.New())
	}
	s.res.Hosts = cfg.Hosts
	if err := s.setup(); err != nil {
		return s.res, err
	}
	if err := s.start(); err != nil {
		return s.res, err
	}
	if err := s.run(); err != nil {
		return s.res, err
	}
	if s.whole != nil {
		if ok, why := state.Equal(s.fsm.Store(), s.whole.Store()); !ok {
			return s.res, fmt.Errorf("rolloutsim: the log of deltas and the log of whole rows end in different states: %s", why)
		}
	}
	return s.res, nil
}

func (s *sim) store() *state.Store { return s.fsm.Store() }

func hostID(i int) string { return fmt.Sprintf("sim-%04d", i+1) }

func stamped(now time.Time, cmd *relv1.Command) *relv1.Command {
	cmd.StampedUnixNano = now.UnixNano()
	return cmd
}

// apply does what the leader's Server.apply and every replica's FSM do
// with a command: validate, encode, apply at the next index. It returns
// the encoded size.
func (s *sim) apply(cmd *relv1.Command) (int, error) {
	if err := validate.Command(cmd); err != nil {
		return 0, err
	}
	b, err := proto.Marshal(cmd)
	if err != nil {
		return 0, err
	}
	s.index++
	wholeCmd := cmd
	if s.whole != nil {
		if cmd.GetRolloutStepDelta() != nil {
			if wholeCmd, _, err = wholeStep(s.whole.Store(), cmd); err != nil {
				return 0, err
			}
		}
	}
	res := s.fsm.Apply(&raft.Log{Index: s.index, Term: 1, Type: raft.LogCommand, Data: b}).(*fsm.Result)
	if res.Err != nil {
		return 0, fmt.Errorf("entry %d: %w", s.index, res.Err)
	}
	if s.whole != nil {
		wb, err := proto.Marshal(wholeCmd)
		if err != nil {
			return 0, err
		}
		if res := s.whole.Apply(&raft.Log{Index: s.index, Term: 1, Type: raft.LogCommand, Data: wb}).(*fsm.Result); res.Err != nil {
			return 0, fmt.Errorf("whole-row replica, entry %d: %w", s.index, res.Err)
		}
	}
	return len(b), nil
}

// wholeStep is a delta step as the engine wrote it before deltas: the
// rollout's whole new row (Step's output, which the delta merged into the
// stored row gives back), and its encoded size.
func wholeStep(st *state.Store, cmd *relv1.Command) (*relv1.Command, int, error) {
	d := cmd.GetRolloutStepDelta()
	cur, err := st.Rollout(nil, d.GetRollout().GetId())
	if err != nil {
		return nil, 0, err
	}
	row, err := rollout.MergeDelta(cur, d.GetRollout())
	if err != nil {
		return nil, 0, err
	}
	step := &relv1.RolloutStep{Rollout: row, ExpectModifyIndex: d.GetExpectModifyIndex(), Desired: d.GetDesired(),
		Events: d.GetEvents(), StartRollback: d.GetStartRollback()}
	w := &relv1.Command{StampedUnixNano: cmd.GetStampedUnixNano(), Kind: &relv1.Command_RolloutStep{RolloutStep: step}}
	return w, proto.Size(w), nil
}

// setup creates the app, its releases and the connected agents (not
// counted: they are there before any rollout).
func (s *sim) setup() error {
	cmds := []*relv1.Command{
		{Kind: &relv1.Command_CreateApp{CreateApp: &relv1.CreateApp{App: &relv1.App{Name: app, CreatedUnixNano: s.now.UnixNano()}}}},
		{Kind: &relv1.Command_CreateEnvironment{CreateEnvironment: &relv1.CreateEnvironment{Environment: &relv1.Environment{
			Name: env, Selector: map[string]string{"env": env}, CreatedUnixNano: s.now.UnixNano()}}}},
	}
	for _, v := range []string{oldVersion, newVersion} {
		cmds = append(cmds, &relv1.Command{Kind: &relv1.Command_CreateRelease{CreateRelease: &relv1.CreateRelease{Release: &relv1.Release{
			App: app, Version: v, Sha256: sha, Size: 4096, ArtifactUrl: "rel://sha256/" + sha, CreatedUnixNano: s.now.UnixNano()}}}})
	}
	for i := 0; i < s.cfg.Hosts; i++ {
		id := hostID(i)
		cmds = append(cmds, &relv1.Command{Kind: &relv1.Command_AgentUp{AgentUp: &relv1.AgentUp{
			Agent: &relv1.Agent{Id: id, Labels: map[string]string{"env": env}, SessionId: "sess-" + id, ServerId: "s1",
				Connected: true, ConnectedUnixNano: s.now.UnixNano()},
			Installed: []*relv1.AppReport{{App: app, Version: oldVersion, Phase: "healthy", AtUnixNano: s.now.UnixNano()}}}}})
	}
	for _, c := range cmds {
		if _, err := s.apply(stamped(s.now, c)); err != nil {
			return fmt.Errorf("rolloutsim: setup: %w", err)
		}
	}
	return nil
}

// start commits the rollout as StartRollout does: waves, the first Step
// and the first dispatches in the creating entry.
func (s *sim) start() error {
	spec, err := rollout.Normalize(&relv1.RolloutSpec{Strategy: rollout.Rolling, MaxParallel: s.cfg.MaxParallel})
	if err != nil {
		return err
	}
	cands := make([]rollout.Candidate, s.cfg.Hosts)
	previous := map[string]string{}
	for i := range cands {
		cands[i] = rollout.Candidate{ID: hostID(i), Labels: map[string]string{"env": env}}
		previous[hostID(i)] = oldVersion
	}
	waves, err := rollout.AssignWaves(spec, cands)
	if err != nil {
		return err
	}
	ro := rollout.NewRollout(rolloutID, app, newVersion, env, spec, waves, previous, s.now)
	ro.EventSeq = 1
	events := []*relv1.RolloutEvent{{RolloutId: rolloutID, Seq: 1, AtUnixNano: s.now.UnixNano(), Type: "started",
		Message: fmt.Sprintf("%s@%s to %s: %d hosts in %d wave(s), strategy %s", app, newVersion, env, len(ro.GetHosts()), len(waves), spec.GetStrategy())}}
	var desired []*relv1.Desired
	d := rollout.Step(rollout.View{Rollout: ro, Hosts: engine.Observe(s.store(), ro), Now: s.now})
	if d.Rollout == nil {
		return errors.New("rolloutsim: the first step dispatches nothing")
	}
	if desired, err = engine.DesiredRows(s.store(), d.Rollout, d.Dispatch); err != nil {
		return err
	}
	n, err := s.apply(stamped(s.now, &relv1.Command{Kind: &relv1.Command_CreateRollout{CreateRollout: &relv1.CreateRollout{
		Rollout: d.Rollout, Desired: desired, Events: append(events, d.Events...)}}}))
	if err != nil {
		return fmt.Errorf("rolloutsim: create rollout: %w", err)
	}
	s.count(n)
	s.res.CreateBytes = int64(n)
	return nil
}

func (s *sim) count(n int) {
	s.res.Entries++
	s.res.Bytes += int64(n)
	s.res.Largest = max(s.res.Largest, n)
}

// run alternates the agents' reports and engine passes until the rollout
// ends.
func (s *sim) run() error {
	e := &engine.Engine{
		Store:  s.store(),
		Logger: slog.New(slog.DiscardHandler),
		Now:    func() time.Time { return s.now },
		NewID:  func() string { return "ro-sim-rollback" },
	}
	e.Apply = func(_ context.Context, cmd *relv1.Command) (uint64, error) {
		// Measured before it is applied: the whole row is the stored row
		// with the delta merged in.
		whole := 0
		if cmd.GetRolloutStepDelta() != nil {
			var err error
			if _, whole, err = wholeStep(s.store(), cmd); err != nil {
				return 0, err
			}
		}
		n, err := s.apply(cmd)
		if err != nil {
			return 0, err
		}
		if whole == 0 {
			whole = n // written whole already
		}
		s.count(n)
		s.res.Steps++
		s.res.StepBytes += int64(n)
		s.res.LargestStep = max(s.res.LargestStep, n)
		s.res.WholeStepBytes += int64(whole)
		s.res.WholeLargestStep = max(s.res.WholeLargestStep, whole)
		return s.index, nil
	}
	// What the cluster knows of each host: rollout.Observe's answer, kept
	// up to date here instead of asked of the store every pass (two
	// lookups per host per pass made the 5,000-host run take minutes).
	// With Replay, every pass checks it against Observe.
	obs := make(map[string]rollout.Obs, s.cfg.Hosts)
	for i := 0; i < s.cfg.Hosts; i++ {
		obs[hostID(i)] = rollout.Obs{Connected: true}
	}
	// The hosts dispatched and not yet healthy, and the phase each reports
	// next.
	busy := map[string]int{}
	var order []string
	dispatched := func() {
		for _, h := range s.dispatchedHosts() {
			if _, ok := busy[h]; !ok {
				busy[h] = 0
				order = append(order, h)
			}
		}
	}
	dispatched()
	limit := (len(Phases) + 2) * (s.cfg.Hosts + 2)
	for pass := 0; ; pass++ {
		ro, err := s.store().Rollout(nil, rolloutID)
		if err != nil {
			return err
		}
		if rollout.Terminal(ro.GetState()) {
			s.res.FinalState = ro.GetState()
			return nil
		}
		if pass > limit {
			return fmt.Errorf("rolloutsim: rollout still %s after %d passes", ro.GetState(), pass)
		}
		if s.whole != nil {
			if err := sameObs(obs, engine.Observe(s.store(), ro)); err != nil {
				return err
			}
		}
		// The engine's pass (Engine.Run does this for every active rollout).
		d := rollout.Step(rollout.View{Rollout: ro, Hosts: obs, Now: s.now})
		if d.Rollout != nil {
			if err := e.Commit(context.Background(), ro, d); err != nil {
				return fmt.Errorf("rolloutsim: engine step: %w", err)
			}
			dispatched()
		}
		// Every busy host reports its next phase, together in one batch
		// (the server gathers the reports of a few milliseconds).
		s.now = s.now.Add(time.Second)
		var batch []*relv1.AgentReport
		var still []string
		for _, h := range order {
			p := busy[h]
			if p >= len(Phases) {
				delete(busy, h)
				continue
			}
			_, gen, _ := s.store().DesiredFor(nil, h)
			batch = append(batch, &relv1.AgentReport{AgentId: h, SessionId: "sess-" + h, Report: &relv1.AppReport{
				App: app, Version: newVersion, PreviousVersion: oldVersion, Phase: Phases[p],
				AtUnixNano: s.now.UnixNano(), RolloutId: rolloutID, Generation: gen}})
			busy[h] = p + 1
			obs[h] = rollout.Obs{Connected: true, Phase: Phases[p], At: s.now}
			still = append(still, h)
		}
		order = still
		if len(batch) > 0 {
			n, err := s.apply(stamped(s.now, &relv1.Command{Kind: &relv1.Command_ReportBatch{ReportBatch: &relv1.ReportBatch{Reports: batch}}}))
			if err != nil {
				return fmt.Errorf("rolloutsim: reports: %w", err)
			}
			s.count(n)
			s.res.ReportBatches++
			s.res.ReportBytes += int64(n)
		}
	}
}

// dispatchedHosts lists the rollout's hosts in state dispatched.
func (s *sim) dispatchedHosts() []string {
	ro, err := s.store().Rollout(nil, rolloutID)
	if err != nil {
		return nil
	}
	var out []string
	for _, h := range ro.GetHosts() {
		if h.GetState() == rollout.HostDispatched {
			out = append(out, h.GetAgentId())
		}
	}
	return out
}

// sameObs checks the simulation's view of the hosts against the store's.
func sameObs(sim, store map[string]rollout.Obs) error {
	if len(sim) != len(store) {
		return fmt.Errorf("rolloutsim: observing %d hosts, the store %d", len(sim), len(store))
	}
	for id, o := range store {
		so, ok := sim[id]
		if !ok || so.Connected != o.Connected || so.DisconnectReason != o.DisconnectReason || so.Phase != o.Phase ||
			so.Reason != o.Reason || !so.At.Equal(o.At) {
			return fmt.Errorf("rolloutsim: host %s observed as %+v, the store says %+v", id, so, o)
		}
	}
	return nil
}
