// Package install converges one host to the releases it should run: it
// downloads an artifact while verifying its sha256, extracts it into a
// release directory without letting anything escape it, runs the release's
// rel.yaml hooks, switches the app's `current` symlink atomically, supervises
// the release's `run` process and waits for its health check.
//
// It knows nothing about gRPC or the cluster: rel-agent tells it what each
// app should be at (Desired) and forwards the Events it reports.
//
// Layout on disk:
//
//	<Root>/<app>/releases/<version>/           one extracted release
//	<Root>/<app>/releases/<version>/.rel/      the agent's files: sha256 marker, run.log, run.pgid, hook logs
//	<Root>/<app>/releases/.tmp-<version>-<rnd>/ an extraction in progress
//	<Root>/<app>/current -> releases/<version>  switched with rename(2)
//	<DataDir>/state.json                       what was installed, phase by phase, and the run process of each app
//	<DataDir>/downloads/<sha256>.part          a download in progress (resumed with Range)
//	<DataDir>/downloads/<sha256>               a verified download waiting to be extracted
//
// Sources: the cluster's store (Desired.StoreURLs) first, then external
// URLs under the fetch policy: https only unless Config.AllowedSchemes
// says otherwise, never to loopback, link-local, cloud metadata,
// unspecified or multicast addresses unless Config.AllowFetchFrom holds
// them (checked on every address dialed, so neither DNS nor a redirect
// gets around it), redirects within the same rules and at most 5.
//
// Users: hooks, the run process and an exec health check run as the
// release's user: rel.yaml's `user:` if it names one (it must be
// Config.RunAs or one of Config.AllowedUsers), else Config.RunAs, else the
// agent's own user. For another user than the agent's (which needs root),
// the release tree is owned by the agent and given to that user's primary
// group read-only (directories 0750, files 0640 or 0750); .rel/ stays the
// agent's. Nothing the agent writes is world-accessible: release and
// agent directories 0750, its files 0640, DataDir/downloads 0700,
// state.json 0600; bundle files lose group and world write.
//
// Hooks and the run process run with /bin/sh -c, in the release's
// directory, with an environment of PATH (the agent's), rel.yaml's env and
// REL_APP, REL_VERSION (the release being deployed), REL_PREVIOUS_VERSION
// (the one it replaces), REL_RELEASE_DIR (the directory the command runs
// in) and REL_NODE_ID. So the stop hook, which comes from the old release
// and runs in its directory, sees the new version in REL_VERSION, and
// before_install runs in the staging directory (.tmp-...), which is its
// REL_RELEASE_DIR, before the rename to releases/<version>.
//
// Run processes outlive the agent: each leads a session and a process
// group of its own, and nothing ties it to the agent (no Pdeathsig). Every
// one started is recorded in state.json (pid, process group, start time
// from /proc/<pid>/stat and boot id, release, user) before it may run its
// command. A restarted agent adopts the one of the current release that
// still runs, the very process recorded and not a later holder of its pid,
// and re-verifies it without restarting it (Resume); it watches it through
// a pidfd and restarts it when it exits, as it does its own children.
// Close stops supervising and leaves them running; a release change stops
// the old release's process, adopted or not; StopServices stops them all.
// Hooks, in contrast, die with the agent (Pdeathsig): they are steps of an
// install, which an interrupted agent redoes or reports failed.
//
// Crash safety: the switch of `current` happens only after the release's
// marker (.rel/sha256) is written, and the marker only after a complete
// extraction, fsynced; state.json is rewritten atomically at every phase.
// New removes the leftovers of an interrupted run and keeps a .part
// download to resume.
package install

import (
	"errors"
	"time"
)

// Desired is what one app should be at.
type Desired struct {
	App, Version string
	// StoreURLs are the cluster's own artifact store on its servers
	// (https://<server-http-addr>/v1/artifacts/sha256/<hex>), fetched with
	// Config.StoreClient. They are tried first and are exempt from the
	// fetch policy (the servers are authenticated), but must be https://
	// or http://.
	StoreURLs []string
	// URLs are external sources of the same bytes (https://, and http://
	// and file:// where Config.AllowedSchemes allows them), subject to the
	// fetch policy. All sources are tried in order, store first: the next
	// one is used when one cannot be reached, answers 5xx or is refused.
	URLs   []string
	SHA256 string // lower-case hex, required
	Size   int64  // 0 = unknown
}

// Phase is a step of an installation.
type Phase string

// The phases, in the order Apply goes through them. A switch back to a
// release that is still on disk skips downloading and installing.
const (
	PhaseDownloading Phase = "downloading"
	PhaseInstalling  Phase = "installing"
	PhaseStarting    Phase = "starting"
	PhaseVerifying   Phase = "verifying"
	PhaseHealthy     Phase = "healthy"
	PhaseFailed      Phase = "failed"
)

// Event reports a phase change of one app.
type Event struct {
	App, Version, PreviousVersion string
	Phase                         Phase
	// Reason says why it failed, for people: "digest mismatch: the
	// artifact from https://... does not have the expected sha256 Y", "hook
	// before_install exited 3", "health check failed: ...", "rel.yaml:
	// health.interval: invalid duration ...".
	Reason string
	// Output is the tail (at most the last 1 KiB, valid UTF-8) of the
	// failing hook's combined stdout and stderr; the whole of it stays in
	// the release's .rel/hook-<name>.log.
	Output string
	At     time.Time
}

// InstalledApp is what the host knows about one app.
type InstalledApp struct {
	// Version is the release the last Apply (or Resume) worked on and
	// Phase how far it got; PreviousVersion is what `current` pointed at
	// when it started.
	App, Version, PreviousVersion string
	Phase                         Phase
	Reason                        string
	Since                         time.Time // when Phase was entered
	// Current is the release `current` points at ("" before the first
	// switch). It differs from Version when an Apply failed before the
	// switch.
	Current string
	Kept    []string // versions complete on disk, most recently activated first
}

// ErrClosed is returned by Apply and Resume after Close.
var ErrClosed = errors.New("install: host closed")
