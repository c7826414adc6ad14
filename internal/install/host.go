package install

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/relhq/rel/internal/validate"
)

// Config configures a Host. Zero values take the defaults noted.
type Config struct {
	Root             string // install root: <Root>/<app>/releases/<version>/, <Root>/<app>/current
	DataDir          string // the agent's own state: downloads in progress, state.json
	NodeID           string // given to hooks as REL_NODE_ID
	Keep             int    // releases kept per app, the current one included; default 3
	MaxArtifactBytes int64  // downloads larger than this are refused; default 2 GiB
	MaxExtractBytes  int64  // archives expanding past this are refused; default 8 GiB
	// HookTimeout bounds a hook that sets no timeout of its own; default 5m.
	HookTimeout time.Duration

	// HTTPClient fetches external sources (Desired.URLs). Default: a
	// client of its own, no overall timeout (a stalled transfer is cut
	// after 60s without data). Whichever it is, the host fetches through a
	// copy whose transport (a clone of this one's, which must be an
	// *http.Transport without dial functions of its own) dials through the
	// address policy and follows redirects only within the policy: there
	// is no way around AllowedSchemes and AllowFetchFrom.
	HTTPClient *http.Client
	// StoreClient fetches from the cluster's own store (Desired.StoreURLs),
	// used as given: the agent passes an mTLS client that checks the
	// servers' identity. Default: a plain client.
	StoreClient *http.Client
	// AllowedSchemes are the schemes external URLs may use: "https",
	// "http", "file". Default (empty): https only.
	AllowedSchemes []string
	// AllowFetchFrom are address ranges external sources may connect to
	// although they are loopback, link-local, cloud metadata, unspecified
	// or multicast addresses, which are refused otherwise (checked on the
	// address dialed, redirects included).
	AllowFetchFrom []netip.Prefix

	// RunAs is the user hooks, run processes and exec health checks run as
	// when rel.yaml names none; "" is the agent's own user. Another user
	// needs the agent to run as root.
	RunAs string
	// AllowedUsers are the other users rel.yaml's `user:` may name (RunAs,
	// or the agent's own user when RunAs is "", is always allowed).
	AllowedUsers []string

	Logger *slog.Logger // default: discard
}

// Defaults of Config.
const (
	DefaultKeep             = 3
	DefaultMaxArtifactBytes = 2 << 30
	DefaultMaxExtractBytes  = 8 << 30
	DefaultHookTimeout      = 5 * time.Minute
)

// Host installs releases on this machine. It is safe for concurrent use:
// Apply and Resume for different apps run concurrently, for the same app
// one after the other.
type Host struct {
	cfg         Config
	client      *http.Client // external sources, through policy
	storeClient *http.Client // the cluster's store
	policy      *fetchPolicy
	ownName     string      // the user the agent runs as
	traverse    os.FileMode // mode of Root, <app> and releases/: 0711 when releases run as other users
	state       *stateStore
	lock        *os.File // flock on DataDir: one agent per data dir

	mu     sync.Mutex
	apps   map[string]*appRuntime
	closed bool

	downloads keyedLock // one download per digest, whichever apps want it

	// Tuning; tests shorten these.
	backoff        time.Duration // first wait between download rounds
	maxIdleRounds  int           // download rounds without progress before giving up
	stallTimeout   time.Duration // a download with no byte for this long is cut
	restartBackoff time.Duration // first wait before restarting a run process
}

// appRuntime is what this process knows of an app beyond state.json.
type appRuntime struct {
	lock chan struct{} // held (1-buffered) by the Apply or Resume working on the app

	// Guarded by lock.
	proc     *supervisor // the run process of `current`, if it has one, started or adopted
	spec     *spec       // the rel.yaml of the release verified below
	user     *runUser    // who spec's release runs as
	verified string      // release verified healthy by this process and not restarted since
}

// New opens a host: creates Root and DataDir, takes an exclusive lock on
// DataDir, loads DataDir/state.json and cleans what an interrupted run left
// behind (temporary extraction dirs, releases without their completion
// marker, half-made current symlinks). An Apply that was interrupted is
// recorded as failed until the next Apply or Resume; its download, if
// any, is kept to be resumed.
func New(cfg Config) (*Host, error) {
	if cfg.Root == "" || cfg.DataDir == "" {
		return nil, errors.New("install: Root and DataDir are required")
	}
	var err error
	if cfg.Root, err = filepath.Abs(cfg.Root); err != nil {
		return nil, err
	}
	if cfg.DataDir, err = filepath.Abs(cfg.DataDir); err != nil {
		return nil, err
	}
	if cfg.Keep <= 0 {
		cfg.Keep = DefaultKeep
	}
	if cfg.MaxArtifactBytes <= 0 {
		cfg.MaxArtifactBytes = DefaultMaxArtifactBytes
	}
	if cfg.MaxExtractBytes <= 0 {
		cfg.MaxExtractBytes = DefaultMaxExtractBytes
	}
	if cfg.HookTimeout <= 0 {
		cfg.HookTimeout = DefaultHookTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	h := &Host{
		cfg:            cfg,
		ownName:        ownUserName(),
		traverse:       dirMode,
		apps:           map[string]*appRuntime{},
		backoff:        defaultBackoff,
		maxIdleRounds:  defaultMaxIdleRounds,
		stallTimeout:   defaultStallTimeout,
		restartBackoff: defaultRestartBackoff,
	}
	if h.policy, err = newFetchPolicy(cfg.AllowedSchemes, cfg.AllowFetchFrom); err != nil {
		return nil, err
	}
	if h.client, err = h.policy.client(cfg.HTTPClient); err != nil {
		return nil, err
	}
	h.storeClient = storeClient(cfg.StoreClient)
	others, err := checkUsers(cfg, h.ownName)
	if err != nil {
		return nil, err
	}
	if others {
		// Another user must be able to reach its release directory
		// through Root, <app> and releases/; search without read lets it
		// do that without listing them. What is inside a release stays
		// shut to everyone but that user's group (0750).
		h.traverse = traverseMode
	}
	if err := makeDirs(cfg); err != nil {
		return nil, err
	}
	if err := ensureDir(cfg.Root, h.traverse, false); err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}
	if fi, err := os.Stat(cfg.Root); err == nil && others && fi.Mode().Perm()&0o001 == 0 {
		cfg.Logger.Warn("install root is not searchable by other users: releases that run as another user cannot reach their directory", "root", cfg.Root, "mode", fi.Mode().Perm())
	}
	if h.lock, err = lockDir(cfg.DataDir); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			h.lock.Close()
		}
	}()
	if h.state, err = loadState(filepath.Join(cfg.DataDir, "state.json")); err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}
	if err := h.recover(); err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}
	ok = true
	return h, nil
}

// lockDir takes an exclusive flock on dir/agent.lock: two agents sharing a
// data dir would resume each other's downloads and overwrite state.json.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "agent.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("install: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("install: %s is in use by another agent: %w", dir, err)
	}
	return f, nil
}

// recover brings state.json and the disk back in line after a start.
func (h *Host) recover() error {
	for _, app := range h.knownApps() {
		lay := layout{h.cfg.Root, app}
		removed, err := lay.cleanLeftovers()
		if err != nil {
			return err
		}
		if len(removed) > 0 {
			h.cfg.Logger.Info("removed leftovers of an interrupted install", "app", app, "paths", removed)
		}
		cur, err := lay.current()
		if err != nil {
			return err
		}
		complete, _, err := lay.scanReleases()
		if err != nil {
			return err
		}
		rec := h.state.get(app)
		if rec.Phase == "" && cur == "" && len(complete) == 0 {
			continue
		}
		err = h.state.update(app, func(r *appRecord) {
			r.Current = cur
			r.Kept = reconcileKept(r.Kept, complete, lay)
			switch r.Phase {
			case PhaseDownloading, PhaseInstalling, PhaseStarting, PhaseVerifying:
				r.Reason = fmt.Sprintf("interrupted while %s: the agent stopped", r.Phase)
				r.Phase = PhaseFailed
				r.Since = time.Now()
			case "":
				// On disk but unknown to state.json (lost, or an older
				// agent): what is there is all we know.
				r.Version, r.Phase, r.Since = cur, PhaseFailed, time.Now()
				r.Reason = "found on disk at start; not verified yet"
			}
		})
		if err != nil {
			return err
		}
	}
	h.cleanDownloads()
	return nil
}

// knownApps lists the apps of state.json and those with a directory under
// Root (so a lost state.json still finds what is installed).
func (h *Host) knownApps() []string {
	names := h.state.names()
	entries, _ := os.ReadDir(h.cfg.Root)
	for _, e := range entries {
		if e.IsDir() && validate.Name("app name", e.Name()) == nil && !slices.Contains(names, e.Name()) {
			if _, err := os.Stat(filepath.Join(h.cfg.Root, e.Name(), releasesDirName)); err == nil {
				names = append(names, e.Name())
			}
		}
	}
	slices.Sort(names)
	return names
}

// reconcileKept keeps the recorded order of the releases complete on disk
// and appends the complete ones it did not know, newest marker first.
func reconcileKept(kept, complete []string, lay layout) []string {
	var out []string
	for _, v := range kept {
		if slices.Contains(complete, v) && !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	var extra []string
	for _, v := range complete {
		if !slices.Contains(out, v) {
			extra = append(extra, v)
		}
	}
	mtime := func(v string) time.Time {
		fi, err := os.Stat(lay.markerPath(v))
		if err != nil {
			return time.Time{}
		}
		return fi.ModTime()
	}
	slices.SortFunc(extra, func(a, b string) int { return mtime(b).Compare(mtime(a)) })
	return append(out, extra...)
}

// cleanDownloads removes downloads no app is working towards: a .part or
// verified file is kept only for the digest an app's last Apply wanted.
func (h *Host) cleanDownloads() {
	dir := filepath.Join(h.cfg.DataDir, "downloads")
	wanted := map[string]bool{}
	for _, app := range h.state.names() {
		if r := h.state.get(app); r.Phase != PhaseHealthy && r.SHA256 != "" {
			wanted[r.SHA256] = true
		}
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if !wanted[strings.TrimSuffix(e.Name(), ".part")] {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// Installed lists what the host knows of every app, sorted by app.
func (h *Host) Installed() []InstalledApp {
	var out []InstalledApp
	for _, app := range h.state.names() {
		r := h.state.get(app)
		out = append(out, InstalledApp{
			App: r.App, Version: r.Version, PreviousVersion: r.PreviousVersion,
			Phase: r.Phase, Reason: r.Reason, Since: r.Since,
			Current: r.Current, Kept: r.Kept,
		})
	}
	return out
}

// Drifted lists the apps whose `current` link no longer points at the
// release this host recorded as healthy (someone switched or removed it by
// hand), with the version it points at now ("" when there is none). Apps an
// Apply or Resume is working on are not looked at.
func (h *Host) Drifted() map[string]string {
	out := map[string]string{}
	for _, app := range h.state.names() {
		rec := h.state.get(app)
		if rec.Phase != PhaseHealthy || rec.Current == "" {
			continue
		}
		h.mu.Lock()
		rt := h.apps[app]
		busy := rt != nil && len(rt.lock) > 0
		h.mu.Unlock()
		if busy {
			continue
		}
		cur, err := layout{h.cfg.Root, app}.current()
		if err != nil {
			cur = "" // not a link Rel made: nothing Rel knows runs
		}
		if cur != rec.Current {
			out[app] = cur
		}
	}
	return out
}

// acquire takes the app's lock, waiting for an Apply or Resume of the same
// app to finish.
func (h *Host) acquire(ctx context.Context, app string) (*appRuntime, func(), error) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil, nil, ErrClosed
	}
	rt, ok := h.apps[app]
	if !ok {
		rt = &appRuntime{lock: make(chan struct{}, 1)}
		h.apps[app] = rt
	}
	h.mu.Unlock()
	select {
	case rt.lock <- struct{}{}:
		return rt, func() { <-rt.lock }, nil
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
}

// supervise registers a run process, unless the host is closing (Close
// detaches the ones registered before it; this one is detached too, and
// stays running, recorded for the next agent).
func (h *Host) supervise(rt *appRuntime, sup *supervisor) error {
	h.mu.Lock()
	closed := h.closed
	if !closed {
		rt.proc = sup
	}
	h.mu.Unlock()
	if closed {
		sup.Detach()
		return ErrClosed
	}
	return nil
}

// recordService returns the record function of a release's supervisor:
// every process it starts is written to state.json before it runs.
func (h *Host) recordService(app, version, dir string, u *runUser) func(processID) error {
	return func(id processID) error {
		return h.state.update(app, func(r *appRecord) {
			r.Service = &serviceRecord{
				Release: version, Dir: dir, PID: id.pid, PGID: id.pid,
				StartTicks: id.start, BootID: id.boot,
				User: u.name, UID: u.uid, Started: time.Now(),
			}
		})
	}
}

// stopService stops the app's run process: the one this Host supervises,
// or else the one an earlier agent recorded, if that is still running
// (SIGTERM to its process group, SIGKILL after its release's stop_timeout),
// and forgets its record. The caller holds the app's lock.
func (h *Host) stopService(app string, rt *appRuntime) {
	h.mu.Lock()
	sup := rt.proc
	rt.proc = nil
	h.mu.Unlock()
	rec := h.state.get(app).Service
	switch {
	case sup != nil:
		sup.Stop()
	case rec != nil:
		timeout := defaultStopTimeout
		if sp, err := readSpec(rec.Dir); err == nil {
			timeout = sp.StopTimeout
		}
		stopRecorded(rec.id(), app+"@"+rec.Release, filepath.Join(rec.Dir, relDirName, runLogName), timeout,
			h.cfg.Logger.With("app", app, "version", rec.Release))
	}
	if rec != nil {
		if err := h.state.update(app, func(r *appRecord) { r.Service = nil }); err != nil {
			h.cfg.Logger.Error("cannot record a stopped run process", "app", app, "err", err)
		}
	}
}

// StopServices stops the run process of every app (SIGTERM, SIGKILL after
// its stop_timeout), whether this Host supervises it or an earlier agent
// left it running, without running stop hooks, and forgets it: Resume or
// the next Apply start it again. Close leaves services running; this is
// for taking them down with the agent (a host being retired, tests). Apps
// are stopped concurrently, each once its Apply or Resume has finished.
func (h *Host) StopServices(ctx context.Context) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, app := range h.knownApps() {
		wg.Go(func() {
			rt, release, err := h.acquire(ctx, app)
			if err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("%s: %w", app, err))
				mu.Unlock()
				return
			}
			defer release()
			h.stopService(app, rt)
			rt.verified = ""
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Close stops supervising and releases the data dir. The run processes
// keep running, recorded in state.json: stopping the agent is neither
// uninstalling nor stopping the services, and the next agent adopts them
// (Resume). No stop hook runs. Apply and Resume fail with ErrClosed
// afterwards.
func (h *Host) Close() error {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil
	}
	h.closed = true
	var sups []*supervisor
	for _, rt := range h.apps {
		if rt.proc != nil {
			sups = append(sups, rt.proc)
		}
	}
	h.mu.Unlock()
	for _, s := range sups {
		s.Detach()
	}
	h.client.CloseIdleConnections()
	h.storeClient.CloseIdleConnections()
	return h.lock.Close() // releases the flock
}

// keyedLock is a set of mutexes by key whose Lock can be abandoned with a
// context.
type keyedLock struct {
	mu    sync.Mutex
	locks map[string]chan struct{}
}

func (k *keyedLock) lock(ctx context.Context, key string) (func(), error) {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = map[string]chan struct{}{}
	}
	ch, ok := k.locks[key]
	if !ok {
		ch = make(chan struct{}, 1)
		k.locks[key] = ch
	}
	k.mu.Unlock()
	select {
	case ch <- struct{}{}:
		return func() { <-ch }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
