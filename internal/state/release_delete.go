package state

import (
	"fmt"
	"sort"

	"github.com/hashicorp/go-memdb"

	"github.com/relhq/rel/internal/rollout"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// DeleteRelease deletes a release that nothing needs (see releaseInUse):
// ErrNotFound for an unknown release, ErrConflict, saying why and what to
// do, for one in use. The artifact is not touched here: once no release
// refers to it (ReferencedArtifacts), the artifact GC removes it after
// its grace.
func (s *Store) DeleteRelease(index uint64, app, version string) error {
	txn := s.writeTxn()
	defer txn.Abort()
	raw, err := releaseInUse(txn, app, version)
	if err != nil {
		return err
	}
	if err := txn.Delete(TableReleases, raw); err != nil {
		return fmt.Errorf("state: delete release: %w", err)
	}
	if err := setIndex(txn, TableReleases, index); err != nil {
		return err
	}
	txn.Commit()
	return nil
}

// CheckReleaseDeletable answers what DeleteRelease would, without
// writing: the server refuses early with it, and the FSM decides again
// in the entry with the same rules.
func (s *Store) CheckReleaseDeletable(app, version string) error {
	_, err := releaseInUse(s.readTxn(), app, version)
	return err
}

// releaseInUse returns the release's row if it may be deleted. It may not
// while (the first reason found is the one given):
//   - an active rollout goes to it, or takes a host from or back to it;
//   - an environment's current release (its newest succeeded deploy or
//     rollback) is it;
//   - 'relctl rollout rollback' of an environment's newest rollout would
//     take a host back to it;
//   - a host runs it, installs it, or would fall back to it (its app row's
//     version or previous version), or is told to run it (a desired row).
func releaseInUse(txn *memdb.Txn, app, version string) (any, error) {
	raw, err := txn.First(TableReleases, "id", app, version)
	if err != nil {
		return nil, fmt.Errorf("state: lookup release: %w", err)
	}
	name := app + "@" + version
	if raw == nil {
		return nil, newError(ErrNotFound, fmt.Sprintf("release %s not found: 'relctl release list %s' shows them", name, app))
	}
	refuse := func(format string, args ...any) (any, error) {
		return nil, newError(ErrConflict, fmt.Sprintf("release %s is still needed: ", name)+fmt.Sprintf(format, args...))
	}

	rit, err := txn.Get(TableRollouts, "app", app)
	if err != nil {
		return nil, fmt.Errorf("state: rollouts: %w", err)
	}
	var ros []*relv1.Rollout
	for r := rit.Next(); r != nil; r = rit.Next() {
		ros = append(ros, r.(*relv1.Rollout))
	}
	// Newest first, as environments' current releases are read.
	sort.Slice(ros, func(i, j int) bool { return ros[i].GetCreateIndex() > ros[j].GetCreateIndex() })
	for _, ro := range ros {
		if rollout.Terminal(ro.GetState()) {
			continue
		}
		if ro.GetVersion() == version || hostGoesTo(ro.GetHosts(), version) || hostCameFrom(ro.GetHosts(), version) {
			return refuse("rollout %s goes to or from it: wait until it finishes or abort it ('relctl rollout abort %s')", describeRollout(ro), ro.GetId())
		}
	}
	current := map[string]bool{}
	newest := map[string]bool{}
	for _, ro := range ros {
		env := ro.GetEnvironment()
		if !newest[env] {
			newest[env] = true
			if rollout.Terminal(ro.GetState()) && ro.GetKind() != rollout.KindRollback && ro.GetRolledBackBy() == "" &&
				hostCameFrom(rollout.Touched(ro), version) {
				return refuse("'relctl rollout rollback %s' (the newest rollout to %s) would take hosts back to it: roll out another release to %s first", ro.GetId(), env, env)
			}
		}
		if !current[env] && ro.GetState() == rollout.StateSucceeded && ro.GetKind() != rollout.KindCatchUp {
			current[env] = true
			if ro.GetVersion() == version || hostGoesTo(ro.GetHosts(), version) {
				return refuse("it is environment %s's current release (rollout %s): roll out another release to %s first", env, ro.GetId(), env)
			}
		}
	}
	it, err := txn.Get(TableAgentApps, "app", app)
	if err != nil {
		return nil, fmt.Errorf("state: agent apps: %w", err)
	}
	for r := it.Next(); r != nil; r = it.Next() {
		aa := r.(*relv1.AgentApp)
		rep := aa.GetReport()
		switch version {
		case rep.GetVersion():
			return refuse("host %s has it (%s): roll out another release to that host's environment first", aa.GetAgentId(), rep.GetPhase())
		case rep.GetPreviousVersion():
			return refuse("host %s ran it before its current release and may fall back to it: roll out another release to that host's environment first", aa.GetAgentId())
		}
	}
	dit, err := txn.Get(TableDesired, "id")
	if err != nil {
		return nil, fmt.Errorf("state: desired: %w", err)
	}
	for r := dit.Next(); r != nil; r = dit.Next() {
		if d := r.(*relv1.Desired); d.GetApp() == app && d.GetVersion() == version {
			return refuse("host %s is told to run it (rollout %s): roll out another release to that host's environment first", d.GetAgentId(), d.GetRolloutId())
		}
	}

	return raw, nil
}

// hostGoesTo reports whether a host's target is version (a rollback's
// hosts each go back to their own previous version).
func hostGoesTo(hosts []*relv1.RolloutHost, version string) bool {
	for _, h := range hosts {
		if h.GetTargetVersion() == version {
			return true
		}
	}
	return false
}

// hostCameFrom reports whether a host ran version before the rollout:
// what a rollback takes it back to.
func hostCameFrom(hosts []*relv1.RolloutHost, version string) bool {
	for _, h := range hosts {
		if h.GetPreviousVersion() == version {
			return true
		}
	}
	return false
}
