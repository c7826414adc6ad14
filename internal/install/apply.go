package install

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/relhq/rel/internal/health"
	"github.com/relhq/rel/internal/validate"
)

// Apply converges d.App to d, reporting every phase change through report
// (synchronously; never concurrently for one app). It returns nil once the
// release is healthy, or an error that was also reported as a failed Event.
//
// An app already at d.Version, running and passing its health check is
// reported healthy and left alone: a reconnect never reinstalls. A version
// still complete on disk (a kept release) is switched to and restarted
// without downloading. A failure after the switch leaves `current` where it
// is: whether to roll back is the cluster's decision.
func (h *Host) Apply(ctx context.Context, d Desired, report func(Event)) error {
	if report == nil {
		report = func(Event) {}
	}
	if err := checkDesired(&d); err != nil {
		report(Event{App: d.App, Version: d.Version, Phase: PhaseFailed, Reason: err.Error(), At: time.Now()})
		return err
	}
	rt, release, err := h.acquire(ctx, d.App)
	if err != nil {
		report(Event{App: d.App, Version: d.Version, Phase: PhaseFailed, Reason: err.Error(), At: time.Now()})
		return err
	}
	defer release()
	op := &operation{h: h, rt: rt, lay: layout{h.cfg.Root, d.App}, app: d.App, version: d.Version, sha: d.SHA256, report: report}
	return op.apply(ctx, d)
}

// Resume is for an agent that just started: for every app with a current
// release it takes the release's run process back under supervision and
// re-verifies it (validate hook, health check). A run process an earlier
// agent started and that still runs (state.json records its pid and start
// time; a pid that now belongs to another process is never taken for it)
// is adopted, not restarted: Resume reports verifying and healthy or
// failed, and the service keeps serving throughout. One that is gone is
// started again (starting, verifying, healthy or failed). A recorded
// process that is not the current release's (the agent died switching) is
// stopped first. It does not run stop or start hooks, and does nothing for
// an app already verified by this Host. Apps are resumed concurrently; the
// error joins those of the apps that failed.
func (h *Host) Resume(ctx context.Context, report func(Event)) error {
	if report == nil {
		report = func(Event) {}
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, app := range h.knownApps() {
		wg.Go(func() {
			if err := h.resumeApp(ctx, app, report); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (h *Host) resumeApp(ctx context.Context, app string, report func(Event)) error {
	rt, release, err := h.acquire(ctx, app)
	if err != nil {
		return err
	}
	defer release()
	lay := layout{h.cfg.Root, app}
	cur, err := lay.current()
	if err != nil || cur == "" {
		return err
	}
	rec := h.state.get(app)
	op := &operation{h: h, rt: rt, lay: lay, app: app, version: cur, sha: lay.markerOf(cur), prev: rec.Replaced, report: report}
	if op.sha == "" {
		return op.fail(fmt.Errorf("current release %s has no completion marker", cur))
	}
	if rt.verified == cur && op.running() {
		op.emit(PhaseHealthy, "", "")
		return nil
	}
	return op.startAndVerify(ctx, true)
}

func checkDesired(d *Desired) error {
	if err := validate.Name("app name", d.App); err != nil {
		return err
	}
	if err := validate.Version(d.Version); err != nil {
		return err
	}
	sha, err := validate.SHA256(d.SHA256)
	if err != nil {
		return err
	}
	d.SHA256 = sha
	if len(d.URLs) == 0 && len(d.StoreURLs) == 0 {
		return errors.New("no artifact URL")
	}
	for _, u := range d.URLs {
		if err := validate.ArtifactURL(u); err != nil {
			return err
		}
	}
	for _, raw := range d.StoreURLs {
		if err := checkStoreURL(raw); err != nil {
			return err
		}
	}
	if d.Size < 0 {
		return fmt.Errorf("negative size %d", d.Size)
	}
	return nil
}

// checkStoreURL accepts an https or http URL with a host and without
// credentials: the store's URLs are exempt from the fetch policy, so they
// must at least not be anything else (never file://).
func checkStoreURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("store URL %q does not parse", raw)
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return fmt.Errorf("store URL %q: the cluster's store is reached over https or http, not %q", raw, u.Scheme)
	}
	if u.Hostname() == "" || u.User != nil {
		return fmt.Errorf("store URL %q: want https://<server>/v1/artifacts/sha256/<hex>, without credentials", raw)
	}
	return nil
}

// operation is one Apply or Resume of one app, holding the app's lock.
type operation struct {
	h       *Host
	rt      *appRuntime
	lay     layout
	app     string
	version string // the release being installed or started
	sha     string
	prev    string // the release it replaces (for a restart in place, the one before it)
	report  func(Event)
}

// emit records a phase in state.json, then reports it.
func (op *operation) emit(phase Phase, reason, output string) {
	now := time.Now()
	err := op.h.state.update(op.app, func(r *appRecord) {
		if r.Version != op.version || r.Phase != phase {
			r.Since = now
		}
		r.Version, r.PreviousVersion, r.SHA256 = op.version, op.prev, op.sha
		r.Phase, r.Reason = phase, reason
	})
	if err != nil {
		op.h.cfg.Logger.Error("cannot record phase", "app", op.app, "version", op.version, "phase", phase, "err", err)
	}
	op.h.cfg.Logger.Info("phase", "app", op.app, "version", op.version, "previous", op.prev, "phase", phase, "reason", reason)
	op.report(Event{App: op.app, Version: op.version, PreviousVersion: op.prev, Phase: phase, Reason: reason, Output: output, At: now})
}

// fail reports a failure and returns it as Apply's error.
func (op *operation) fail(err error) error {
	var output string
	var he *hookError
	if errors.As(err, &he) {
		output = he.output
	}
	op.emit(PhaseFailed, err.Error(), output)
	return fmt.Errorf("%s %s: %w", op.app, op.version, err)
}

func (op *operation) apply(ctx context.Context, d Desired) error {
	cur, err := op.lay.current()
	if err != nil {
		return op.fail(err)
	}
	rec := op.h.state.get(op.app)
	op.prev = cur
	if cur == d.Version {
		op.prev = rec.Replaced
	}

	if marker := op.lay.markerOf(d.Version); marker != "" && marker != d.SHA256 {
		if cur == d.Version {
			return op.fail(fmt.Errorf("release %s is installed from sha256 %s, not %s: a version's artifact cannot change", d.Version, marker, d.SHA256))
		}
		// Not running: the copy on disk is simply stale.
		if err := op.lay.removeRelease(d.Version); err != nil {
			return op.fail(err)
		}
	}

	if cur == d.Version && op.lay.complete(cur, d.SHA256) {
		if op.healthyNow(ctx) {
			op.emit(PhaseHealthy, "", "")
			return nil
		}
		// Still running from an earlier agent (this Apply came before
		// Resume): verify it as it is.
		if adopted, err := op.adopt(ctx); adopted {
			return err
		}
		// Installed but not running or not healthy: restart it in place.
		return op.startAndVerify(ctx, false)
	}

	if !op.lay.complete(d.Version, d.SHA256) {
		op.emit(PhaseDownloading, "", "")
		f, err := op.h.fetch(ctx, d)
		if err != nil {
			return op.fail(err)
		}
		op.emit(PhaseInstalling, "", "")
		err = op.install(ctx, f, plainName(append(slices.Clone(d.URLs), d.StoreURLs...)))
		f.Close()
		// The download has served its purpose (or was bad): a retry of a
		// failed install downloads again rather than keep a copy of every
		// artifact that failed.
		os.Remove(f.Name())
		if err != nil {
			return op.fail(err)
		}
	}
	return op.startAndVerify(ctx, false)
}

// install extracts a verified artifact into a temporary directory, runs
// before_install there, renames it to releases/<version> and writes the
// completion marker, then runs after_install. A failure removes what it
// made: the marker only exists for a release whose install went through.
func (op *operation) install(ctx context.Context, f *os.File, plain string) error {
	if err := op.makeAppDirs(); err != nil {
		return err
	}
	tmp := filepath.Join(op.lay.releasesDir(), tmpPrefix+op.version+"-"+randomSuffix())
	if err := os.Mkdir(tmp, dirMode); err != nil {
		return err
	}
	defer os.RemoveAll(tmp) // a no-op once renamed

	lim := extractLimits{maxBytes: op.h.cfg.MaxExtractBytes, maxEntries: maxEntries}
	t0 := time.Now()
	if err := extractArtifact(f, tmp, plain, lim); err != nil {
		return err
	}
	extracted := time.Since(t0)
	sp, err := readSpec(tmp)
	if err != nil {
		return err
	}
	u, err := op.h.releaseUser(sp)
	if err != nil {
		return err
	}
	if u.other() {
		// Before any hook runs as that user: it reads the release, it
		// does not change it.
		if err := shareTree(tmp, u.gid); err != nil {
			return err
		}
	}
	// before_install runs in the staging directory, which is also its
	// REL_RELEASE_DIR: the release is not at its final path yet.
	if err := op.h.runHook(ctx, hookBeforeInstall, sp, u, tmp, op.h.hookEnv(op.app, op.version, op.prev, tmp, sp)); err != nil {
		return err
	}

	final := op.lay.releaseDir(op.version)
	if op.lay.complete(op.version, op.sha) {
		// Already there and complete (nothing to add): the staging copy
		// goes, by the deferred RemoveAll.
		return nil
	}
	if _, err := os.Lstat(final); err == nil {
		// An earlier install renamed it but died before the marker.
		if err := os.RemoveAll(final); err != nil {
			return err
		}
	}
	// Everything written so far reaches the disk before the rename and the
	// marker (a crash must not leave a marker over empty files).
	t1 := time.Now()
	if err := syncTree(tmp); err != nil {
		return err
	}
	synced := time.Since(t1)
	if err := os.Rename(tmp, final); err != nil {
		return err
	}
	if err := op.lay.writeMarker(op.version, op.sha); err != nil {
		return err
	}
	op.h.cfg.Logger.Debug("release unpacked", "app", op.app, "version", op.version,
		"extract", extracted.Round(time.Millisecond), "sync", synced.Round(time.Millisecond), "total", time.Since(t0).Round(time.Millisecond))
	if err := op.h.state.update(op.app, func(r *appRecord) { r.Kept = touchKept(r.Kept, op.version) }); err != nil {
		return err
	}

	if err := op.h.runHook(ctx, hookAfterInstall, sp, u, final, op.h.hookEnv(op.app, op.version, op.prev, final, sp)); err != nil {
		// Not a usable release: without this, the next Apply would find
		// it complete and switch to it without after_install.
		if rerr := op.lay.removeRelease(op.version); rerr != nil {
			op.h.cfg.Logger.Error("cannot remove failed release", "app", op.app, "version", op.version, "err", rerr)
		}
		_ = op.h.state.update(op.app, func(r *appRecord) { r.Kept = removeKept(r.Kept, op.version) })
		return err
	}
	return nil
}

// startAndVerify stops the old release (its stop hook, from its own
// directory, then its run process), switches `current`, runs start, starts
// run under supervision, then verifies: validate, then the health check.
// resume skips the hooks around the switch and the switch itself: the
// release is already current; its process is adopted if it still runs,
// else started.
func (op *operation) startAndVerify(ctx context.Context, resume bool) error {
	if resume {
		if adopted, err := op.adopt(ctx); adopted {
			return err
		}
	}
	op.emit(PhaseStarting, "", "")
	dir := op.lay.releaseDir(op.version)
	sp, err := readSpec(dir)
	if err != nil {
		return op.fail(err)
	}
	// Checked at every start, not only at install: the agent's users may
	// have changed since a kept release was unpacked.
	u, err := op.h.releaseUser(sp)
	if err != nil {
		return op.fail(err)
	}
	if err := op.makeAppDirs(); err != nil {
		return op.fail(err)
	}
	if err := ensureShared(dir, u); err != nil {
		return op.fail(err)
	}
	env := op.h.hookEnv(op.app, op.version, op.prev, dir, sp)

	cur, err := op.lay.current()
	if err != nil {
		return op.fail(err)
	}
	if !resume && cur != "" {
		if err := op.stopOld(ctx, cur); err != nil {
			return op.fail(err)
		}
	}
	op.h.stopService(op.app, op.rt)
	op.rt.verified, op.rt.spec, op.rt.user = "", nil, nil

	if cur != op.version {
		if err := op.lay.switchCurrent(op.version); err != nil {
			return op.fail(err)
		}
		err := op.h.state.update(op.app, func(r *appRecord) {
			r.Current, r.Replaced = op.version, cur
			r.Kept = touchKept(r.Kept, op.version)
		})
		if err != nil {
			return op.fail(err)
		}
	}

	if !resume {
		if err := op.h.runHook(ctx, hookStart, sp, u, dir, env); err != nil {
			return op.fail(err)
		}
	}
	if sp.Run != "" {
		sup, err := startSupervised(op.serviceConfig(sp, u, dir, env))
		if err != nil {
			return op.fail(err)
		}
		if err := op.h.supervise(op.rt, sup); err != nil {
			return op.fail(err)
		}
	}
	op.rt.spec, op.rt.user = sp, u
	return op.verify(ctx, sp, u, dir, env)
}

// serviceConfig is how the release's run process is supervised.
func (op *operation) serviceConfig(sp *spec, u *runUser, dir string, env []string) superviseConfig {
	return superviseConfig{
		name:        op.app + "@" + op.version,
		command:     sp.Run,
		dir:         dir,
		env:         env,
		cred:        u.credential(),
		logPath:     filepath.Join(dir, relDirName, runLogName),
		stopTimeout: sp.StopTimeout,
		backoff:     op.h.restartBackoff,
		logger:      op.h.cfg.Logger.With("app", op.app, "version", op.version),
		record:      op.h.recordService(op.app, op.version, dir, u),
	}
}

// adopt takes the run process an earlier agent started for this release
// under supervision, if it still runs, and verifies it (verifying, then
// healthy or failed): the service is neither restarted nor interrupted.
// It reports false, having done nothing, when there is nothing to adopt:
// this Host supervises the app already, no process is recorded, the one
// recorded is gone (its pid free or another process's: the start time
// differs) or belongs to another release, or the release's user is no
// longer the one it runs as. A recorded process that still runs and is not
// adopted is stopped by startAndVerify before it starts another.
func (op *operation) adopt(ctx context.Context) (bool, error) {
	if op.rt.proc != nil {
		return false, nil
	}
	rec := op.h.state.get(op.app).Service
	dir := op.lay.releaseDir(op.version)
	if rec == nil || rec.Release != op.version || rec.Dir != dir || !rec.id().alive() {
		return false, nil
	}
	sp, err := readSpec(dir)
	if err != nil || sp.Run == "" {
		return false, nil
	}
	u, err := op.h.releaseUser(sp)
	if err != nil || u.uid != rec.UID {
		return false, nil
	}
	env := op.h.hookEnv(op.app, op.version, op.prev, dir, sp)
	sup, err := adoptSupervised(op.serviceConfig(sp, u, dir, env), rec.id())
	if err != nil {
		return false, nil // it ended just now: start it
	}
	if err := op.h.supervise(op.rt, sup); err != nil {
		return true, op.fail(err)
	}
	op.h.cfg.Logger.Info("adopted the run process an earlier agent started", "app", op.app, "version", op.version,
		"pid", rec.PID, "user", rec.User, "since", rec.Started)
	op.rt.spec, op.rt.user = sp, u
	return true, op.verify(ctx, sp, u, dir, env)
}

// verify runs validate, then the health check, and checks that the run
// process is still up; then the release is healthy and older ones are
// pruned.
func (op *operation) verify(ctx context.Context, sp *spec, u *runUser, dir string, env []string) error {
	op.emit(PhaseVerifying, "", "")
	if err := op.h.runHook(ctx, hookValidate, sp, u, dir, env); err != nil {
		return op.fail(err)
	}
	if sp.Health != nil {
		check := *sp.Health
		check.Dir, check.Env, check.Credential = dir, env, u.credential()
		err := health.Wait(ctx, check, func(err error) {
			if err != nil {
				op.h.cfg.Logger.Debug("health attempt failed", "app", op.app, "version", op.version, "err", err)
			}
		})
		if err != nil {
			if ctx.Err() != nil {
				return op.fail(ctx.Err())
			}
			return op.fail(fmt.Errorf("health check failed: %w", err))
		}
	}
	if !op.running() {
		var why error
		if op.rt.proc != nil {
			why = op.rt.proc.LastExit()
		}
		return op.fail(fmt.Errorf("run process is not running: %v (see %s)", why,
			filepath.Join(dir, relDirName, runLogName)))
	}
	op.rt.verified = op.version

	op.emit(PhaseHealthy, "", "")
	op.prune()
	return nil
}

// stopOld runs the stop hook of the release being replaced, from that
// release's directory with its own rel.yaml. The run process is stopped by
// the caller. A failing stop hook stops the upgrade before the switch: the
// old release is still current and still running.
func (op *operation) stopOld(ctx context.Context, old string) error {
	dir := op.lay.releaseDir(old)
	sp, err := readSpec(dir)
	if err != nil {
		// It was valid when installed; an unreadable one now must not
		// block moving away from that release.
		op.h.cfg.Logger.Warn("cannot read the old release's rel.yaml: no stop hook", "app", op.app, "version", old, "err", err)
		return nil
	}
	u, err := op.h.releaseUser(sp)
	if err != nil {
		// Its user is no longer allowed (or gone): never run a hook as a
		// user the agent may not use, and do not let that pin the host to
		// the old release either. Its run process is still stopped.
		op.h.cfg.Logger.Warn("the old release's user cannot be used: no stop hook", "app", op.app, "version", old, "err", err)
		return nil
	}
	return op.h.runHook(ctx, hookStop, sp, u, dir, op.h.hookEnv(op.app, op.version, old, dir, sp))
}

// running reports whether the release's run process, if it has one, is up.
func (op *operation) running() bool {
	if op.rt.spec == nil || op.rt.spec.Run == "" {
		return true
	}
	return op.rt.proc != nil && op.rt.proc.Running()
}

// healthyNow tells whether the current release can be left alone: this
// process verified it, its run process is up and one probe of its health
// check passes right now (one probe, not the whole healthy_after wait: a
// reconnect must be cheap).
func (op *operation) healthyNow(ctx context.Context) bool {
	if op.rt.verified != op.version || op.rt.spec == nil || !op.running() {
		return false
	}
	if op.rt.spec.Health == nil {
		return true
	}
	dir := op.lay.releaseDir(op.version)
	check := *op.rt.spec.Health
	check.Dir, check.Env = dir, op.h.hookEnv(op.app, op.version, op.prev, dir, op.rt.spec)
	check.Credential = op.rt.user.credential()
	if err := check.Probe(ctx); err != nil {
		op.h.cfg.Logger.Info("installed release fails its health check: restarting it", "app", op.app, "version", op.version, "err", err)
		return false
	}
	return true
}

// makeAppDirs creates <app> and releases/ with the host's traversal mode,
// and sets it on existing ones (the agent's users may have changed).
func (op *operation) makeAppDirs() error {
	if err := ensureDir(op.lay.appDir(), op.h.traverse, true); err != nil {
		return err
	}
	return ensureDir(op.lay.releasesDir(), op.h.traverse, true)
}

// prune removes the releases beyond Keep, least recently used first, never
// the current one, the one it replaced (a rollback must stay a switch) or
// the one just installed.
func (op *operation) prune() {
	rec := op.h.state.get(op.app)
	protected := map[string]bool{rec.Current: true, rec.Replaced: true, op.version: true}
	var keep, drop []string
	for _, v := range rec.Kept {
		if len(keep) < op.h.cfg.Keep || protected[v] {
			keep = append(keep, v)
		} else {
			drop = append(drop, v)
		}
	}
	for _, v := range drop {
		if err := op.lay.removeRelease(v); err != nil {
			op.h.cfg.Logger.Error("cannot prune release", "app", op.app, "version", v, "err", err)
			keep = append(keep, v)
			continue
		}
		op.h.cfg.Logger.Info("pruned release", "app", op.app, "version", v)
	}
	if len(drop) > 0 {
		if err := op.h.state.update(op.app, func(r *appRecord) { r.Kept = keep }); err != nil {
			op.h.cfg.Logger.Error("cannot record pruning", "app", op.app, "err", err)
		}
	}
}

func removeKept(kept []string, version string) []string {
	var out []string
	for _, v := range kept {
		if v != version {
			out = append(out, v)
		}
	}
	return out
}
