package rollout

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// Obs is what the cluster knows now of one host of a rollout.
type Obs struct {
	// Connected is false once the agent has been recorded down (silent or
	// gone past the grace period).
	Connected        bool
	DisconnectReason string
	// Phase and Reason of the agent's latest report for this rollout; ""
	// when it has not reported for it yet.
	Phase, Reason string
	// At is when the agent observed that phase.
	At time.Time
	// Running is the version the host last reported healthy, whatever
	// rollout put it there ("" when none): a queued rollout takes its
	// hosts' previous versions from it when it starts.
	Running string
}

// View is the planner's input: a rollout as stored, its hosts as observed,
// and the time (stamped by the leader, never read inside Step).
type View struct {
	Rollout *relv1.Rollout
	Hosts   map[string]Obs
	Now     time.Time
	// Blocker names the active rollout (or earlier queued one) that holds
	// some of a queued rollout's hosts; "" when nothing does.
	Blocker string
	// FrozenUntil is when the freeze over the rollout's app and
	// environment ends (freeze.Evaluate at Now); zero when none holds it.
	// FreezeWindow names the window in force and FreezeHold says it for
	// people ("freeze W until ... (reason)"). See freeze.go.
	FrozenUntil  time.Time
	FreezeWindow string
	FreezeHold   string
	// NeedsApproval: a frozen rollout released now waits for approvals
	// (awaiting_approval) instead of being queued.
	NeedsApproval bool
}

// Decision is the planner's output.
type Decision struct {
	// Rollout is the rollout's new row, or nil when nothing changes.
	Rollout *relv1.Rollout
	// Dispatch lists the hosts whose desired state must now be set.
	Dispatch []*relv1.RolloutHost
	Events   []*relv1.RolloutEvent
	// Rollback asks for an automatic rollback of this rollout.
	Rollback bool
	// Wake is when to look again if nothing changes meanwhile (zero: only
	// on a change).
	Wake time.Time
}

// Step decides the next move of one rollout. It is a pure function of its
// input: the engine commits what it returns, and a leader that takes over
// mid-rollout computes the same next move from the same replicated state.
func Step(v View) Decision {
	cur := v.Rollout
	if cur == nil || Terminal(cur.GetState()) || cur.GetState() == StateRollingBack {
		return Decision{}
	}
	st := &stepper{r: proto.Clone(cur).(*relv1.Rollout), now: v.Now, view: v}
	r := st.r
	if r.Spec == nil {
		r.Spec = &relv1.RolloutSpec{}
	}
	if r.LastProgressUnixNano == 0 {
		r.LastProgressUnixNano = r.GetCreatedUnixNano()
	}

	if st.freeze(v) {
		return st.decision()
	}
	// A rollout held by change control (a freeze, missing approvals) does
	// nothing here: what releases it is a decision of its own, after
	// which it is queued and goes on from there.
	if r.State == StateFrozen || r.State == StateAwaitingApproval {
		return st.decision()
	}
	if r.State == StateQueued {
		st.dequeue(v)
		if r.State == StateQueued {
			return st.decision()
		}
	}
	st.observe(v.Hosts)
	if st.checkBudget() || st.checkDeadline() {
		return st.decision()
	}
	if r.State == StatePaused || r.State == StateWaitingApproval {
		return st.decision()
	}
	st.advance(v.Hosts)
	if r.State == StateRunning && r.Spec.GetProgressDeadlineMs() > 0 {
		st.wakeAt(st.lastProgress().Add(time.Duration(r.Spec.GetProgressDeadlineMs()) * time.Millisecond))
	}
	return st.decision()
}

type stepper struct {
	r    *relv1.Rollout
	now  time.Time
	view View
	// activity is the newest report of a dispatched host: progress that is
	// not worth a raft entry of its own (a host moving from downloading to
	// installing), but that keeps the progress deadline away.
	activity time.Time
	changed  bool
	events   []*relv1.RolloutEvent
	dispatch []*relv1.RolloutHost
	rollback bool
	wake     time.Time
	// batch names the host event last appended that more hosts may join
	// ("" when the last event is not one).
	batch string
}

func (s *stepper) decision() Decision {
	if !s.changed {
		return Decision{Wake: s.wake}
	}
	return Decision{Rollout: s.r, Dispatch: s.dispatch, Events: s.events, Rollback: s.rollback, Wake: s.wake}
}

func (s *stepper) event(typ, host, msg string) {
	s.r.EventSeq++
	s.events = append(s.events, &relv1.RolloutEvent{
		RolloutId: s.r.GetId(), Seq: s.r.EventSeq, AtUnixNano: s.now.UnixNano(),
		Type: typ, Host: host, Message: msg, Wave: s.r.GetCurrentWave(),
	})
	s.changed = true
	s.batch = ""
}

// hostEvent records the same thing happening to a host as to the hosts of
// the event just before it (same kind, key and wave) in that one event,
// which then lists them in hosts and says plural(n); otherwise it is an
// event of its own, about host alone, saying single. A wave dispatched
// to 10,000 hosts is one event, not 10,000: events were the largest part
// of a server's memory in the steady bench (issue 10). What each host went
// through stays in the rollout's host rows.
func (s *stepper) hostEvent(typ, key, host, single string, plural func(n int) string) {
	batch := typ + "\x00" + key
	if n := len(s.events); n > 0 && s.batch == batch && s.events[n-1].GetWave() == s.r.GetCurrentWave() {
		last := s.events[n-1]
		if len(last.Hosts) == 0 {
			last.Hosts, last.Host = []string{last.Host}, ""
		}
		last.Hosts = append(last.Hosts, host)
		last.Message = plural(len(last.Hosts))
		return
	}
	s.event(typ, host, single)
	s.batch = batch
}

func (s *stepper) progress() {
	s.r.LastProgressUnixNano = s.now.UnixNano()
	s.changed = true
}

// lastProgress is the later of the last committed progress and the newest
// report of a dispatched host.
func (s *stepper) lastProgress() time.Time {
	last := time.Unix(0, s.r.LastProgressUnixNano)
	if s.activity.After(last) {
		return s.activity
	}
	return last
}

func (s *stepper) wakeAt(t time.Time) {
	if s.wake.IsZero() || t.Before(s.wake) {
		s.wake = t
	}
}

// dequeue starts a queued rollout once nothing holds its hosts. Its hosts'
// previous versions are taken now, after the rollout it waited for: that is
// what its rollback would go back to.
func (s *stepper) dequeue(v View) {
	r := s.r
	if v.Blocker != "" {
		reason := "queued behind " + v.Blocker
		if r.Reason != reason {
			r.Reason = reason
			s.event(EventQueued, "", reason+": it starts when that rollout ends")
		}
		return
	}
	r.State, r.Reason = StateRunning, ""
	r.LastProgressUnixNano = s.now.UnixNano()
	for _, h := range r.Hosts {
		if run := v.Hosts[h.AgentId].Running; run != "" {
			h.PreviousVersion = run
		}
	}
	s.event(EventDequeued, "", "nothing holds its hosts any more: starting")
}

// observe moves dispatched hosts to healthy or failed from their agents'
// reports; an agent recorded down is "agent lost", not a script failure.
// A rollback does not give up on an agent that is away: the host's desired
// state already names the release it goes back to, so it converges when it
// returns, and the rollback waits for it.
func (s *stepper) observe(obs map[string]Obs) {
	for _, h := range s.r.Hosts {
		if h.State != HostDispatched {
			continue
		}
		o := obs[h.AgentId]
		if o.Phase != "" && o.At.After(s.activity) {
			s.activity = o.At
		}
		if o.Phase == "healthy" || o.Phase == "failed" {
			h.Phase = o.Phase
		}
		switch {
		case o.Phase == "healthy":
			h.State, h.FinishedUnixNano, h.Reason = HostHealthy, s.now.UnixNano(), ""
			v := h.GetTargetVersion()
			s.hostEvent(EventHostHealthy, v, h.AgentId, "healthy on "+v, func(n int) string { return fmt.Sprintf("%d hosts healthy on %s", n, v) })
			s.progress()
		case o.Phase == "failed":
			h.State, h.Reason, h.FinishedUnixNano = HostFailed, o.Reason, s.now.UnixNano()
			s.event(EventHostFailed, h.AgentId, o.Reason)
			s.progress()
		case !o.Connected && s.r.GetKind() == KindRollback:
			if h.Reason != ReasonAway {
				h.Reason = ReasonAway
				s.event(EventHostAway, h.AgentId, h.AgentId+" is away: it goes back to "+h.GetTargetVersion()+" when it returns")
			}
		case !o.Connected:
			h.State, h.FinishedUnixNano = HostFailed, s.now.UnixNano()
			h.Reason = "agent lost"
			if o.DisconnectReason != "" {
				h.Reason += ": " + o.DisconnectReason
			}
			s.event(EventHostFailed, h.AgentId, h.Reason)
			s.progress()
		case h.Reason == ReasonAway:
			// Back: its progress deadline starts now, not when it left.
			h.Reason = ""
			s.event(EventHostBack, h.AgentId, h.AgentId+" is back")
			s.progress()
		}
	}
}

// ReasonAway marks a rollback's host whose agent is down: its desired state
// is already set, and the rollback waits for it to come back.
const ReasonAway = "agent away: goes back when it returns"

// away reports whether a dispatched host of a rollback waits for its agent
// to come back.
func away(h *relv1.RolloutHost) bool {
	return h.GetState() == HostDispatched && h.GetReason() == ReasonAway
}

// failed counts failed hosts and describes the first few.
func failed(r *relv1.Rollout) (int, string) {
	n := 0
	var parts []string
	for _, h := range r.GetHosts() {
		if h.GetState() == HostFailed {
			n++
			if len(parts) < 3 {
				parts = append(parts, h.GetAgentId()+": "+h.GetReason())
			}
		}
	}
	return n, strings.Join(parts, "; ")
}

// Budget is how many failed hosts a rollout tolerates.
func Budget(r *relv1.Rollout) int {
	return Resolve(r.GetSpec().GetMaxFailures(), len(r.GetHosts()))
}

func (s *stepper) fail(reason string) {
	r := s.r
	r.State, r.Reason, r.FinishedUnixNano = StateFailed, reason, s.now.UnixNano()
	s.event(EventFailed, "", reason)
	if r.GetSpec().GetAutoRollback() && r.GetKind() != KindRollback && changedAny(r) {
		s.rollback = true
	}
}

func changedAny(r *relv1.Rollout) bool {
	return len(Touched(r)) > 0
}

// Touched lists the hosts a rollout dispatched: the ones whose desired
// state it set, and so the ones its rollback must cover.
func Touched(r *relv1.Rollout) []*relv1.RolloutHost {
	var out []*relv1.RolloutHost
	for _, h := range r.GetHosts() {
		if h.GetDispatchedUnixNano() != 0 {
			out = append(out, h)
		}
	}
	return out
}

func (s *stepper) checkBudget() bool {
	n, why := failed(s.r)
	if budget := Budget(s.r); n > budget {
		s.fail(fmt.Sprintf("%d host(s) failed, more than the failure budget of %d: %s", n, budget, why))
		return true
	}
	return false
}

func (s *stepper) checkDeadline() bool {
	r := s.r
	d := time.Duration(r.GetSpec().GetProgressDeadlineMs()) * time.Millisecond
	if r.State != StateRunning || d <= 0 {
		return false
	}
	since := s.now.Sub(s.lastProgress())
	if since < d {
		return false
	}
	if r.GetKind() == KindRollback && s.onlyAway() {
		// Waiting for hosts to return is not a lack of progress.
		return false
	}
	var stuck []string
	for _, h := range r.Hosts {
		if h.State == HostDispatched && !away(h) {
			p := h.Phase
			if p == "" {
				p = "no report"
			}
			stuck = append(stuck, h.AgentId+" ("+p+")")
		}
	}
	msg := fmt.Sprintf("no progress for %s (progress deadline %s)", since.Round(time.Millisecond), d)
	if len(stuck) > 0 {
		msg += "; waiting on " + strings.Join(stuck, ", ")
	}
	s.event(EventDeadlineExceeded, "", msg)
	s.fail(msg)
	return true
}

// onlyAway reports whether every host still under way is away (or none is
// under way): a rollback with nothing else to wait for.
func (s *stepper) onlyAway() bool {
	for _, h := range s.r.Hosts {
		if h.State == HostPending || (h.State == HostDispatched && !away(h)) {
			return false
		}
	}
	return true
}

// advance finishes, bakes, gates or starts waves, and dispatches hosts of
// the current wave within max_parallel.
func (s *stepper) advance(obs map[string]Obs) {
	r := s.r
	if r.GetKind() == KindRollback {
		s.dispatchAway(obs)
	}
	for {
		w := r.CurrentWave
		if r.WaveStartedUnixNano == 0 {
			r.WaveStartedUnixNano = s.now.UnixNano()
			s.event(EventWaveStarted, "", s.waveLabel(w)+" started")
		}
		if !s.waveDone(w) {
			s.dispatchWave(w, obs)
			return
		}
		if r.WaveDoneUnixNano == 0 {
			r.WaveDoneUnixNano = s.now.UnixNano()
			healthy, bad := s.waveCounts(w)
			s.event(EventWaveDone, "", fmt.Sprintf("%s done: %d healthy, %d failed", s.waveLabel(w), healthy, bad))
			if bake := time.Duration(r.Spec.GetBakeMs()) * time.Millisecond; bake > 0 && w+1 < r.WaveCount {
				s.event(EventBaking, "", fmt.Sprintf("baking %s before the next wave", bake))
			}
		}
		if bake := time.Duration(r.Spec.GetBakeMs()) * time.Millisecond; bake > 0 && w+1 < r.WaveCount {
			until := time.Unix(0, r.WaveDoneUnixNano).Add(bake)
			if s.now.Before(until) {
				s.wakeAt(until)
				return
			}
		}
		if w+1 >= r.WaveCount {
			if s.waitAway() {
				return
			}
			s.succeed()
			return
		}
		if s.pauseForFreeze(s.view) {
			return
		}
		if r.Spec.GetApproveWaves() && r.ApprovedWave < w+1 {
			r.State = StateWaitingApproval
			s.event(EventWaitingApproval, "", fmt.Sprintf("%s waits for 'relctl rollout approve %s --wave %d'", s.waveLabel(w+1), r.Id, WaveNumber(r, w+1)))
			return
		}
		r.CurrentWave = w + 1
		r.WaveStartedUnixNano, r.WaveDoneUnixNano = 0, 0
		s.progress()
	}
}

// waveLabel names a wave for people the way relctl shows it: "canary",
// then waves counted from 1 ("wave 2 of 3"); see WaveNumber.
func (s *stepper) waveLabel(w uint32) string { return WaveLabel(s.r, w) }

// waveDone reports whether every host of wave w has finished. A rollback's
// away hosts do not hold the next wave back: they converge when they
// return, and the rollback ends only once they have (waitAway).
func (s *stepper) waveDone(w uint32) bool {
	for _, h := range s.r.Hosts {
		if h.Wave == w && (h.State == HostPending || (h.State == HostDispatched && !away(h))) {
			return false
		}
	}
	return true
}

func (s *stepper) waveCounts(w uint32) (healthy, bad int) {
	for _, h := range s.r.Hosts {
		if h.Wave != w {
			continue
		}
		switch h.State {
		case HostHealthy:
			healthy++
		case HostFailed:
			bad++
		}
	}
	return
}

func (s *stepper) dispatchWave(w uint32, obs map[string]Obs) {
	r := s.r
	inflight := 0
	for _, h := range r.Hosts {
		if h.State == HostDispatched && !away(h) {
			inflight++
		}
	}
	slots := -1 // no limit
	if mp := int(r.Spec.GetMaxParallel()); mp > 0 {
		slots = mp - inflight
	}
	for _, h := range r.Hosts {
		if slots == 0 {
			return
		}
		if h.Wave != w || h.State != HostPending {
			continue
		}
		if o := obs[h.AgentId]; !o.Connected {
			h.State, h.FinishedUnixNano = HostFailed, s.now.UnixNano()
			h.Reason = "agent lost before its turn"
			if o.DisconnectReason != "" {
				h.Reason += ": " + o.DisconnectReason
			}
			s.event(EventHostFailed, h.AgentId, h.Reason)
			s.progress()
			if s.checkBudget() {
				return
			}
			continue
		}
		h.State, h.DispatchedUnixNano = HostDispatched, s.now.UnixNano()
		s.dispatch = append(s.dispatch, h)
		v := h.GetTargetVersion()
		s.hostEvent(EventDispatched, v, h.AgentId, "taking "+h.AgentId+" to "+v, func(n int) string { return fmt.Sprintf("taking %d hosts to %s", n, v) })
		s.progress()
		if slots > 0 {
			slots--
		}
	}
}

// dispatchAway sets the desired state of every pending host of a rollback
// whose agent is down, whatever its wave: a revert is a new desired state,
// so a host that is away converges to it when it returns instead of to the
// release being rolled back. It serves nothing meanwhile, so no wave order
// protects anything by holding it back.
func (s *stepper) dispatchAway(obs map[string]Obs) {
	for _, h := range s.r.Hosts {
		if h.State != HostPending || obs[h.AgentId].Connected {
			continue
		}
		h.State, h.DispatchedUnixNano, h.Reason = HostDispatched, s.now.UnixNano(), ReasonAway
		s.dispatch = append(s.dispatch, h)
		v := h.GetTargetVersion()
		s.hostEvent(EventDispatched, "away\x00"+v, h.AgentId, h.AgentId+" is away: its desired state goes back to "+v+" now, and it converges when it returns",
			func(n int) string {
				return fmt.Sprintf("%d hosts are away: their desired state goes back to %s now, and they converge when they return", n, v)
			})
	}
}

// waitAway keeps a rollback whose waves are done running while any host is
// still under way: away, or back from being away after its wave was done.
// It says which hosts are away, and returns false when none is under way.
func (s *stepper) waitAway() bool {
	if s.r.GetKind() != KindRollback {
		return false
	}
	var ids []string
	under := false
	for _, h := range s.r.Hosts {
		if away(h) {
			ids = append(ids, h.AgentId)
		}
		under = under || h.State == HostDispatched
	}
	if len(ids) > 0 {
		reason := fmt.Sprintf("waiting for %d host(s) to come back: %s", len(ids), strings.Join(ids, ", "))
		if s.r.Reason != reason {
			s.r.Reason = reason
			s.event(EventWaitingHosts, "", reason)
		}
	} else if under && s.r.Reason != "" {
		s.r.Reason = ""
		s.changed = true
	}
	return under
}

func (s *stepper) succeed() {
	r := s.r
	healthy, skipped := 0, 0
	for _, h := range r.Hosts {
		switch h.State {
		case HostHealthy:
			healthy++
		case HostSkipped:
			skipped++
		}
	}
	bad, why := failed(r)
	reason := fmt.Sprintf("%d of %d hosts healthy", healthy, len(r.Hosts))
	if bad > 0 {
		reason += fmt.Sprintf("; %d failed within the budget of %d (%s)", bad, Budget(r), why)
	}
	if skipped > 0 {
		reason += fmt.Sprintf("; %d skipped", skipped)
	}
	if r.GetKind() == KindRollback && bad > 0 {
		// A rollback succeeds only when every host it covers is back.
		r.State, r.Reason, r.FinishedUnixNano = StateFailed, fmt.Sprintf("%d host(s) did not go back (%s); %d of %d healthy", bad, why, healthy, len(r.Hosts)), s.now.UnixNano()
		s.event(EventFailed, "", r.Reason)
		return
	}
	r.State, r.Reason, r.FinishedUnixNano = StateSucceeded, reason, s.now.UnixNano()
	s.event(EventSucceeded, "", reason)
}

// NewRollout builds a deploy rollout's row from its waves.
func NewRollout(id, app, version, env string, spec *relv1.RolloutSpec, waves []Wave, previous map[string]string, now time.Time) *relv1.Rollout {
	r := &relv1.Rollout{
		Id: id, App: app, Version: version, Environment: env, Spec: spec, State: StateRunning,
		Kind: KindDeploy, CreatedUnixNano: now.UnixNano(), LastProgressUnixNano: now.UnixNano(),
		WaveCount: uint32(len(waves)),
	}
	for i, w := range waves {
		for _, id := range w.Hosts {
			r.Hosts = append(r.Hosts, &relv1.RolloutHost{AgentId: id, PreviousVersion: previous[id], Wave: uint32(i), State: HostPending, TargetVersion: version})
		}
	}
	return r
}

// PlanRollback builds the rollback of a rollout: every host it dispatched
// (whatever became of it: healthy, failed, or never heard from because its
// agent was away) goes back to the release it ran before; hosts it never
// dispatched are not touched. Staged, hosts that are not
// healthy on the new release go first (they serve nothing, so nothing
// healthy is taken away), then the rollout's waves in reverse order; with
// allAtOnce, one wave. Hosts with nothing to go back to are skipped. A
// rollback tries every host: its failure budget is all of them.
func PlanRollback(orig *relv1.Rollout, id string, allAtOnce bool, now time.Time) (*relv1.Rollout, error) {
	changed := Touched(orig)
	if len(changed) == 0 {
		return nil, fmt.Errorf("%w: rollout %s changed no host: there is nothing to roll back", ErrInvalidSpec, orig.GetId())
	}
	spec := &relv1.RolloutSpec{
		Strategy:           "staged",
		MaxParallel:        orig.GetSpec().GetMaxParallel(),
		MaxFailures:        &relv1.Quantity{Percent: 100},
		ProgressDeadlineMs: orig.GetSpec().GetProgressDeadlineMs(),
	}
	if allAtOnce {
		spec.Strategy, spec.MaxParallel = AllAtOnce, 0
	}
	// Group: unhealthy first, then original waves from the last to the first.
	groups := map[int][]*relv1.RolloutHost{}
	for _, h := range changed {
		g := 1 + int(orig.GetWaveCount()) - int(h.GetWave()) // later waves first
		if h.GetState() != HostHealthy {
			g = 0
		}
		if allAtOnce {
			g = 0
		}
		groups[g] = append(groups[g], h)
	}
	keys := make([]int, 0, len(groups))
	for k := range groups {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	rb := &relv1.Rollout{
		Id: id, App: orig.GetApp(), Environment: orig.GetEnvironment(), Spec: spec, State: StateRunning,
		Kind: KindRollback, RollbackOf: orig.GetId(), CreatedUnixNano: now.UnixNano(), LastProgressUnixNano: now.UnixNano(),
		WaveCount: uint32(len(keys)),
	}
	targets := map[string]bool{}
	for wi, k := range keys {
		for _, h := range groups[k] {
			nh := &relv1.RolloutHost{AgentId: h.GetAgentId(), PreviousVersion: h.GetTargetVersion(), Wave: uint32(wi),
				State: HostPending, TargetVersion: h.GetPreviousVersion()}
			if h.GetPreviousVersion() == "" {
				nh.State, nh.Reason = HostSkipped, "nothing to go back to: no earlier release ran on this host"
			} else {
				targets[h.GetPreviousVersion()] = true
			}
			rb.Hosts = append(rb.Hosts, nh)
		}
	}
	if len(targets) == 0 {
		return nil, fmt.Errorf("%w: no host of rollout %s ran an earlier release of %s: there is nothing to go back to", ErrInvalidSpec, orig.GetId(), orig.GetApp())
	}
	if len(targets) == 1 {
		for v := range targets {
			rb.Version = v
		}
	} else {
		rb.Version = "previous"
	}
	return rb, nil
}
