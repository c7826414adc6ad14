package agent

import (
	"context"
	"fmt"
	"time"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// DriftChecker is an installer that can tell which apps were changed
// outside Rel (install.Host is one).
type DriftChecker interface {
	// Drifted maps each app whose installed release is no longer the one
	// the installer made current to what is current now ("" for nothing).
	Drifted() map[string]string
}

// DriftInterval is how often the agent looks for apps changed by hand.
var DriftInterval = 2 * time.Second

// PhaseDrifted is the report phase of an app changed outside Rel.
const PhaseDrifted = "drifted"

// watchDrift reports apps changed by hand (a `current` link switched or
// removed) so the cluster sees the host as off its environment's release
// and, with catch-up on, takes it back; and it makes the next desired state
// for the app reinstall instead of being taken as already done.
func (a *Agent) watchDrift(ctx context.Context, dc DriftChecker) {
	t := time.NewTicker(DriftInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		drifted := dc.Drifted()
		if len(drifted) == 0 && !a.anyDrift() {
			continue
		}
		// Read the installer's records before taking a.mu: the installer
		// reports (taking a.mu) while it holds its own locks.
		recorded := map[string]string{}
		for _, ia := range a.installer.Installed() {
			recorded[ia.App] = ia.Version
		}
		a.mu.Lock()
		for app := range a.drift {
			if _, still := drifted[app]; !still {
				delete(a.drift, app)
			}
		}
		var reports []*relv1.AppReport
		for app, now := range drifted {
			if w := a.workers[app]; w != nil && w.running() {
				continue // converging right now
			}
			if seen, ok := a.drift[app]; ok && seen == now {
				continue // said already
			}
			a.drift[app] = now
			shown := now
			if shown == "" {
				shown = "nothing"
			}
			reports = append(reports, &relv1.AppReport{App: app, Version: now, Phase: PhaseDrifted, AtUnixNano: time.Now().UnixNano(),
				Reason: fmt.Sprintf("current points at %s, not at %s, the release Rel installed: changed outside Rel", shown, recorded[app])})
		}
		a.mu.Unlock()
		for _, r := range reports {
			a.log.Warn("app changed outside Rel", "app", r.GetApp(), "reason", r.GetReason())
			a.reports.put(r)
		}
	}
}

// driftedLocked reports whether app was changed by hand since it was last
// installed. The caller holds a.mu.
func (a *Agent) driftedLocked(app string) bool {
	_, ok := a.drift[app]
	return ok
}

func (a *Agent) anyDrift() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.drift) > 0
}
