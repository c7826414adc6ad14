package agent

import (
	"context"
	"maps"
	"time"

	"github.com/relhq/rel/internal/install"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// handleDesired converges the host to ds. It is level-triggered: ds is the
// complete desired state, and what is already running or done for the same
// target is left as it is, so receiving the same state again (after a
// reconnect, from another server) repeats no work. Apps not listed are left
// alone. A generation older than one already acted on is ignored.
func (a *Agent) handleDesired(ds *relv1.DesiredState) {
	a.reconcileMu.Lock()
	defer a.reconcileMu.Unlock()

	gen := ds.GetGeneration()
	a.mu.Lock()
	last := a.state.LastGeneration
	a.mu.Unlock()
	if gen < last {
		a.log.Warn("ignoring a desired state older than one already acted on", "generation", gen, "last_generation", last)
		return
	}
	installed := map[string]install.InstalledApp{}
	for _, ia := range a.installer.Installed() {
		installed[ia.App] = ia
	}
	changed := gen > last
	seen := map[string]bool{}
	for _, d := range ds.GetApps() {
		switch {
		case d.GetApp() == "" || d.GetVersion() == "":
			a.log.Warn("ignoring a desired app without a name or version", "generation", gen, "app", d.GetApp(), "version", d.GetVersion())
			continue
		case seen[d.GetApp()]:
			a.log.Warn("ignoring a second desired entry for the same app", "generation", gen, "app", d.GetApp())
			continue
		}
		seen[d.GetApp()] = true
		if a.converge(d, gen, installed) {
			changed = true
		}
	}
	if !changed {
		return
	}
	a.mu.Lock()
	a.state.LastGeneration = max(a.state.LastGeneration, gen)
	a.status.LastGeneration = a.state.LastGeneration
	a.mu.Unlock()
	a.persist()
}

// persist writes the agent's state to DataDir/agent.json (nothing without a
// data dir). Writes are serialised and each one takes a fresh snapshot, so
// an older state never overwrites a newer one.
func (a *Agent) persist() {
	if a.cfg.DataDir == "" {
		return
	}
	a.saveMu.Lock()
	defer a.saveMu.Unlock()
	a.mu.Lock()
	st := a.state
	st.Apps = maps.Clone(a.state.Apps)
	a.mu.Unlock()
	if err := saveState(a.cfg.DataDir, st); err != nil {
		// The state still holds in memory; only a restart before the next
		// successful write could act on an older generation.
		a.log.Error("persisting the agent's state", "generation", st.LastGeneration, "err", err)
	}
}

// converge makes sure app d is converging to, or already at, its desired
// target, starting a worker (after stopping a superseded one) when it is
// not. It reports whether the agent's per-app record changed.
func (a *Agent) converge(d *relv1.DesiredApp, gen uint64, installed map[string]install.InstalledApp) bool {
	app := d.GetApp()
	target := attempt{Version: d.GetVersion(), SHA256: d.GetSha256(), RolloutID: d.GetRolloutId(), Generation: gen}

	a.mu.Lock()
	w := a.workers[app]
	running := w != nil && w.running()
	if running && w.version == target.Version && w.sha256 == target.SHA256 {
		// Already converging to it: keep going, and attribute the rest of
		// its reports to the newest desired state.
		changed := a.state.Apps[app] != target
		w.rolloutID, w.generation = target.RolloutID, gen
		a.state.Apps[app] = target
		a.mu.Unlock()
		return changed
	}
	rec, hasRec := a.state.Apps[app]
	drifted := a.driftedLocked(app)
	a.mu.Unlock()

	if !running && !drifted {
		if ia, ok := installed[app]; ok && ia.Version == target.Version && ia.Phase == install.PhaseHealthy {
			if hasRec && rec.sameTarget(target) && !rec.Failed {
				return false
			}
			// Healthy already, but under another rollout (or before the
			// agent kept records): say so once for this one, so the rollout
			// sees the host as done. Observed now: an older time could lose
			// against the report already stored.
			a.reports.put(&relv1.AppReport{
				App: app, Version: ia.Version, PreviousVersion: ia.PreviousVersion,
				Phase: string(ia.Phase), AtUnixNano: time.Now().UnixNano(),
				RolloutId: target.RolloutID, Generation: gen,
			})
			a.mu.Lock()
			a.state.Apps[app] = target
			a.mu.Unlock()
			return true
		}
		if hasRec && rec.sameTarget(target) && rec.Failed {
			// Tried and failed for this very rollout: a reconnect or a
			// restart does not retry it. A new rollout (or another target)
			// does.
			a.log.Debug("not retrying a failed install for the same rollout", "app", app, "version", target.Version, "rollout_id", target.RolloutID)
			return false
		}
	}
	if running {
		a.log.Info("desired target changed: stopping the current install", "app", app, "from", w.version, "to", target.Version)
		w.cancel()
		<-w.done
	}
	a.startWorker(d, target)
	return true
}

// startWorker starts converging one app to target in its own goroutine.
func (a *Agent) startWorker(d *relv1.DesiredApp, target attempt) {
	a.mu.Lock()
	parent := a.workerCtx
	if parent == nil || parent.Err() != nil {
		a.mu.Unlock()
		return // not running, or stopping
	}
	ctx, cancel := context.WithCancel(parent)
	w := &worker{
		app: d.GetApp(), version: target.Version, sha256: target.SHA256,
		cancel: cancel, done: make(chan struct{}),
		rolloutID: target.RolloutID, generation: target.Generation,
	}
	a.workers[w.app] = w
	a.state.Apps[w.app] = target
	a.workerWG.Add(1)
	a.mu.Unlock()

	desired := install.Desired{
		App:       d.GetApp(),
		Version:   d.GetVersion(),
		URLs:      append([]string(nil), d.GetUrls()...),
		StoreURLs: append([]string(nil), d.GetStoreUrls()...),
		SHA256:    d.GetSha256(),
		Size:      d.GetSize(),
	}
	a.log.Info("converging", "app", w.app, "version", w.version, "rollout_id", target.RolloutID, "generation", target.Generation)
	go a.runWorker(ctx, w, desired)
}

func (a *Agent) runWorker(ctx context.Context, w *worker, d install.Desired) {
	defer a.workerWG.Done()
	defer close(w.done)
	defer w.cancel()
	err := a.installer.Apply(ctx, d, func(ev install.Event) { a.workerEvent(ctx, w, ev) })
	if err == nil || ctx.Err() != nil {
		return
	}
	a.log.Warn("install failed", "app", w.app, "version", w.version, "err", err)
	a.mu.Lock()
	last := w.lastPhase
	if rec := a.state.Apps[w.app]; rec.Version == w.version && rec.SHA256 == w.sha256 {
		rec.Failed = true
		a.state.Apps[w.app] = rec
	}
	a.mu.Unlock()
	a.persist()
	if last != install.PhaseFailed {
		// The installer gave up without saying so: the server must hear it.
		a.workerEvent(ctx, w, install.Event{App: w.app, Version: w.version, Phase: install.PhaseFailed, Reason: err.Error(), At: time.Now()})
	}
}

// workerEvent turns one of a worker's install events into a pending report.
// A superseded or stopping worker's events are dropped: its "failed:
// context canceled" would only mislead the server.
func (a *Agent) workerEvent(ctx context.Context, w *worker, ev install.Event) {
	if ctx.Err() != nil {
		return
	}
	a.mu.Lock()
	w.lastPhase = ev.Phase
	rollout, gen := w.rolloutID, w.generation
	a.mu.Unlock()
	if ev.App == "" {
		ev.App = w.app
	}
	a.reports.put(eventReport(ev, rollout, gen))
}

// resumeEvent reports what Installer.Resume finds, attributed to the
// rollout the agent last converged the app for when the versions match.
func (a *Agent) resumeEvent(ev install.Event) {
	a.mu.Lock()
	rec, ok := a.state.Apps[ev.App]
	a.mu.Unlock()
	var rollout string
	var gen uint64
	if ok && rec.Version == ev.Version {
		rollout, gen = rec.RolloutID, rec.Generation
	}
	a.reports.put(eventReport(ev, rollout, gen))
}

func eventReport(ev install.Event, rolloutID string, gen uint64) *relv1.AppReport {
	at := ev.At
	if at.IsZero() {
		at = time.Now()
	}
	return &relv1.AppReport{
		App:             ev.App,
		Version:         ev.Version,
		PreviousVersion: ev.PreviousVersion,
		Phase:           string(ev.Phase),
		Reason:          ev.Reason,
		Output:          ev.Output,
		AtUnixNano:      at.UnixNano(),
		RolloutId:       rolloutID,
		Generation:      gen,
	}
}
