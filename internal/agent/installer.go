package agent

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/relhq/rel/internal/install"
)

// Installer is what the agent drives to converge one host: the real one is
// *install.Host (fetch, verify, extract, hooks, symlink switch, supervise);
// simulations and tests use NoopInstaller.
type Installer interface {
	// Installed lists every app on the host as the installer's own records
	// say. The agent reads it for its Hello and to skip work already done.
	Installed() []install.InstalledApp
	// Apply converges one app to d and blocks until it is healthy or failed,
	// calling report on every phase change. It is idempotent: applying what
	// is already healthy does nothing. Cancelling ctx abandons the attempt.
	Apply(ctx context.Context, d install.Desired, report func(install.Event)) error
	// Resume takes the services back under supervision after the agent
	// starts: it adopts those still running from before (an agent restart
	// is not a service restart) and starts the others, re-verifying each,
	// reporting what it finds.
	Resume(ctx context.Context, report func(install.Event)) error
	// Close stops supervising and leaves the services running. The agent
	// never calls it: whoever built the installer closes it after Run
	// returns.
	Close() error
}

// The real installer satisfies Installer as it is.
var _ Installer = (*install.Host)(nil)

// noopPhases are the phases NoopInstaller walks through, in order.
var noopPhases = []install.Phase{
	install.PhaseDownloading,
	install.PhaseInstalling,
	install.PhaseStarting,
	install.PhaseVerifying,
	install.PhaseHealthy,
}

// NoopInstaller installs nothing: Apply reports downloading, installing,
// starting, verifying and healthy at once, without sleeping, and remembers
// the version in memory. It is for simulated agents and tests. The zero
// value is ready to use and it is safe for concurrent use.
type NoopInstaller struct {
	mu   sync.Mutex
	apps map[string]install.InstalledApp
}

// Installed lists the apps Apply has made healthy, sorted by app name.
func (n *NoopInstaller) Installed() []install.InstalledApp {
	n.mu.Lock()
	defer n.mu.Unlock()
	out := make([]install.InstalledApp, 0, len(n.apps))
	for _, a := range n.apps {
		a.Kept = slices.Clone(a.Kept)
		out = append(out, a)
	}
	slices.SortFunc(out, func(a, b install.InstalledApp) int {
		switch {
		case a.App < b.App:
			return -1
		case a.App > b.App:
			return 1
		}
		return 0
	})
	return out
}

// Apply walks d through every phase and records it as healthy. Like the
// real installer, an app already healthy at d.Version is only reported
// healthy again. It stops (leaving the phase it reached) when ctx is
// cancelled.
func (n *NoopInstaller) Apply(ctx context.Context, d install.Desired, report func(install.Event)) error {
	n.mu.Lock()
	cur, ok := n.apps[d.App]
	n.mu.Unlock()
	if ok && cur.Version == d.Version && cur.Phase == install.PhaseHealthy {
		if report != nil {
			report(install.Event{App: d.App, Version: d.Version, PreviousVersion: cur.PreviousVersion, Phase: install.PhaseHealthy, At: time.Now()})
		}
		return nil
	}
	prev := cur.PreviousVersion
	kept := cur.Kept
	if ok && cur.Version != d.Version {
		prev = cur.Version
	}
	if !slices.Contains(kept, d.Version) {
		kept = append(slices.Clone(kept), d.Version)
	}
	for _, p := range noopPhases {
		if err := ctx.Err(); err != nil {
			return err
		}
		now := time.Now()
		n.mu.Lock()
		if n.apps == nil {
			n.apps = map[string]install.InstalledApp{}
		}
		n.apps[d.App] = install.InstalledApp{
			App: d.App, Version: d.Version, PreviousVersion: prev,
			Phase: p, Since: now, Current: d.Version, Kept: kept,
		}
		n.mu.Unlock()
		if report != nil {
			report(install.Event{App: d.App, Version: d.Version, PreviousVersion: prev, Phase: p, At: now})
		}
	}
	return nil
}

// Resume has nothing to restart: it returns at once.
func (n *NoopInstaller) Resume(ctx context.Context, report func(install.Event)) error {
	return ctx.Err()
}

// Close does nothing.
func (n *NoopInstaller) Close() error { return nil }
