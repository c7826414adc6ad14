package state

import (
	"fmt"
	"sort"
	"strings"

	"github.com/hashicorp/go-memdb"
	"google.golang.org/protobuf/proto"

	"github.com/relhq/rel/internal/lifecycle"
	"github.com/relhq/rel/internal/rollout"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// Lifecycles: the rows (lifecycles, promotions), the gate a deploy
// rollout passes in the entry that creates it, release blocks, and the
// promotion bookkeeping every rollout write does. What the gate decides is
// internal/lifecycle's pure function.

// Tables of lifecycles.
const (
	TableLifecycles = "lifecycles"
	// TablePromotions holds one row per (app, digest, environment) that a
	// deploy rollout went to: what the gate needs, kept whatever rollout
	// retention removes.
	TablePromotions = "promotions"
)

func lifecycleTables() map[string]*memdb.TableSchema {
	return map[string]*memdb.TableSchema{
		TableLifecycles: {
			Name: TableLifecycles,
			Indexes: map[string]*memdb.IndexSchema{
				"id": {Name: "id", Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Name"}},
			},
		},
		TablePromotions: {
			Name: TablePromotions,
			Indexes: map[string]*memdb.IndexSchema{
				"id": {Name: "id", Unique: true, Indexer: &memdb.CompoundIndex{Indexes: []memdb.Indexer{
					&memdb.StringFieldIndex{Field: "App"},
					&memdb.StringFieldIndex{Field: "Sha256"},
					&memdb.StringFieldIndex{Field: "Environment"},
				}}},
			},
		},
	}
}

// checkLifecycleEnvs refuses a lifecycle naming an environment that does
// not exist.
func checkLifecycleEnvs(txn *memdb.Txn, lc *relv1.Lifecycle) error {
	var missing []string
	for _, p := range lc.GetPhases() {
		for _, e := range p.GetEnvironments() {
			raw, err := txn.First(TableEnvironments, "id", e)
			if err != nil {
				return fmt.Errorf("state: lookup environment: %w", err)
			}
			if raw == nil {
				missing = append(missing, e)
			}
		}
	}
	if len(missing) > 0 {
		return newError(ErrNotFound, fmt.Sprintf("lifecycle %s names unknown environments %s: create them first ('relctl env create NAME --selector ...'); 'relctl env list' shows those that exist",
			lc.GetName(), strings.Join(missing, ", ")))
	}
	return nil
}

func lifecycleNotFound(name string) error {
	return newError(ErrNotFound, fmt.Sprintf("lifecycle %q not found: 'relctl lifecycle list' shows them", name))
}

// CreateLifecycle stores a new lifecycle, refused when the name is taken
// or an environment it names does not exist.
func (s *Store) CreateLifecycle(index uint64, lc *relv1.Lifecycle, actor *relv1.Actor) error {
	return s.putLifecycle(index, lc, actor, true)
}

// UpdateLifecycle replaces an existing lifecycle's description and phases.
// Rollouts already created keep what the gate decided for them.
func (s *Store) UpdateLifecycle(index uint64, lc *relv1.Lifecycle, actor *relv1.Actor) error {
	return s.putLifecycle(index, lc, actor, false)
}

func (s *Store) putLifecycle(index uint64, lc *relv1.Lifecycle, actor *relv1.Actor, create bool) error {
	txn := s.writeTxn()
	defer txn.Abort()
	raw, err := txn.First(TableLifecycles, "id", lc.GetName())
	if err != nil {
		return fmt.Errorf("state: lookup lifecycle: %w", err)
	}
	row := proto.Clone(lc).(*relv1.Lifecycle)
	row.UpdatedBy = actor
	row.CreateIndex, row.ModifyIndex = index, index
	switch {
	case create && raw != nil:
		return newError(ErrAlreadyExists, fmt.Sprintf("lifecycle %q already exists: 'relctl lifecycle update %s' changes it", lc.GetName(), lc.GetName()))
	case !create && raw == nil:
		return lifecycleNotFound(lc.GetName())
	case !create:
		old := raw.(*relv1.Lifecycle)
		row.CreateIndex, row.CreatedUnixNano = old.GetCreateIndex(), old.GetCreatedUnixNano()
	}
	if err := checkLifecycleEnvs(txn, lc); err != nil {
		return err
	}
	if err := txn.Insert(TableLifecycles, row); err != nil {
		return fmt.Errorf("state: insert lifecycle: %w", err)
	}
	if err := setIndex(txn, TableLifecycles, index); err != nil {
		return err
	}
	txn.Commit()
	return nil
}

// DeleteLifecycle deletes a lifecycle, refused while an app uses it.
func (s *Store) DeleteLifecycle(index uint64, name string) error {
	txn := s.writeTxn()
	defer txn.Abort()
	raw, err := txn.First(TableLifecycles, "id", name)
	if err != nil {
		return fmt.Errorf("state: lookup lifecycle: %w", err)
	}
	if raw == nil {
		return lifecycleNotFound(name)
	}
	apps, err := appsUsing(txn, name)
	if err != nil {
		return err
	}
	if len(apps) > 0 {
		return newError(ErrConflict, fmt.Sprintf("lifecycle %s is used by app(s) %s: move them to another lifecycle or none first ('relctl app update %s --lifecycle \"\"')",
			name, strings.Join(apps, ", "), apps[0]))
	}
	if err := txn.Delete(TableLifecycles, raw); err != nil {
		return fmt.Errorf("state: delete lifecycle: %w", err)
	}
	if err := setIndex(txn, TableLifecycles, index); err != nil {
		return err
	}
	txn.Commit()
	return nil
}

func appsUsing(txn *memdb.Txn, name string) ([]string, error) {
	it, err := txn.Get(TableApps, "id")
	if err != nil {
		return nil, fmt.Errorf("state: list apps: %w", err)
	}
	var out []string
	for raw := it.Next(); raw != nil; raw = it.Next() {
		if a := raw.(*relv1.App); a.GetLifecycle() == name {
			out = append(out, a.GetName())
		}
	}
	return out, nil
}

// AppsUsing names the apps whose lifecycle is name.
func (s *Store) AppsUsing(name string) ([]string, error) {
	return appsUsing(s.readTxn(), name)
}

// lifecyclesWith names the lifecycles that hold env in a phase.
func lifecyclesWith(txn *memdb.Txn, env string) ([]string, error) {
	it, err := txn.Get(TableLifecycles, "id")
	if err != nil {
		return nil, fmt.Errorf("state: list lifecycles: %w", err)
	}
	var out []string
	for raw := it.Next(); raw != nil; raw = it.Next() {
		if lc := raw.(*relv1.Lifecycle); lifecycle.PhaseOf(lc, env) >= 0 {
			out = append(out, lc.GetName())
		}
	}
	return out, nil
}

// SetAppLifecycle sets (or, with "", clears) an app's lifecycle.
func (s *Store) SetAppLifecycle(index uint64, app, name string) error {
	txn := s.writeTxn()
	defer txn.Abort()
	raw, err := txn.First(TableApps, "id", app)
	if err != nil {
		return fmt.Errorf("state: lookup app: %w", err)
	}
	if raw == nil {
		return newError(ErrNotFound, fmt.Sprintf("app %q not found: 'relctl app list' shows them", app))
	}
	if err := lifecycleExists(txn, name); err != nil {
		return err
	}
	row := proto.Clone(raw.(*relv1.App)).(*relv1.App)
	row.Lifecycle = name
	row.ModifyIndex = index
	if err := txn.Insert(TableApps, row); err != nil {
		return fmt.Errorf("state: update app: %w", err)
	}
	if err := setIndex(txn, TableApps, index); err != nil {
		return err
	}
	txn.Commit()
	return nil
}

// lifecycleExists refuses a lifecycle name that names none ("" is none,
// and fine).
func lifecycleExists(txn *memdb.Txn, name string) error {
	if name == "" {
		return nil
	}
	raw, err := txn.First(TableLifecycles, "id", name)
	if err != nil {
		return fmt.Errorf("state: lookup lifecycle: %w", err)
	}
	if raw == nil {
		return lifecycleNotFound(name)
	}
	return nil
}

// BlockRelease blocks or unblocks a release.
func (s *Store) BlockRelease(index uint64, app, version string, blocked bool, reason string, actor *relv1.Actor) error {
	txn := s.writeTxn()
	defer txn.Abort()
	raw, err := txn.First(TableReleases, "id", app, version)
	if err != nil {
		return fmt.Errorf("state: lookup release: %w", err)
	}
	if raw == nil {
		return newError(ErrNotFound, fmt.Sprintf("release %s@%s not found: 'relctl release list %s' shows them", app, version, app))
	}
	row := proto.Clone(raw.(*relv1.Release)).(*relv1.Release)
	row.Blocked = blocked
	if blocked {
		row.BlockReason, row.BlockedBy = reason, actor
	} else {
		row.BlockReason, row.BlockedBy = "", nil
	}
	row.ModifyIndex = index
	if err := txn.Insert(TableReleases, row); err != nil {
		return fmt.Errorf("state: update release: %w", err)
	}
	if err := setIndex(txn, TableReleases, index); err != nil {
		return err
	}
	txn.Commit()
	return nil
}

// Lifecycle returns one lifecycle.
func (s *Store) Lifecycle(ws memdb.WatchSet, name string) (*relv1.Lifecycle, uint64, error) {
	txn := s.readTxn()
	ch, raw, err := txn.FirstWatch(TableLifecycles, "id", name)
	if err != nil {
		return nil, 0, fmt.Errorf("state: lookup lifecycle: %w", err)
	}
	ws.Add(ch)
	idx := tableIndexOf(txn, ws, TableLifecycles)
	if raw == nil {
		return nil, idx, lifecycleNotFound(name)
	}
	return raw.(*relv1.Lifecycle), idx, nil
}

// Lifecycles lists the lifecycles by name.
func (s *Store) Lifecycles(ws memdb.WatchSet) ([]*relv1.Lifecycle, uint64, error) {
	txn := s.readTxn()
	it, err := txn.Get(TableLifecycles, "id")
	if err != nil {
		return nil, 0, fmt.Errorf("state: list lifecycles: %w", err)
	}
	ws.Add(it.WatchCh())
	var out []*relv1.Lifecycle
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*relv1.Lifecycle))
	}
	return out, tableIndexOf(txn, ws, TableLifecycles), nil
}

// Promotions returns the promotion rows of an app's digest, by
// environment.
func (s *Store) Promotions(ws memdb.WatchSet, app, digest string) (map[string]*relv1.Promotion, error) {
	return promotions(s.readTxn(), ws, app, digest)
}

func promotions(txn *memdb.Txn, ws memdb.WatchSet, app, digest string) (map[string]*relv1.Promotion, error) {
	it, err := txn.Get(TablePromotions, "id_prefix", app, digest)
	if err != nil {
		return nil, fmt.Errorf("state: list promotions: %w", err)
	}
	if ws != nil {
		ws.Add(it.WatchCh())
	}
	out := map[string]*relv1.Promotion{}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		p := raw.(*relv1.Promotion)
		if p.GetApp() == app && p.GetSha256() == digest {
			out[p.GetEnvironment()] = p
		}
	}
	return out, nil
}

// AllPromotions lists every promotion row (the auto-deploy loop's input).
func (s *Store) AllPromotions(ws memdb.WatchSet) ([]*relv1.Promotion, uint64, error) {
	txn := s.readTxn()
	it, err := txn.Get(TablePromotions, "id")
	if err != nil {
		return nil, 0, fmt.Errorf("state: list promotions: %w", err)
	}
	ws.Add(it.WatchCh())
	var out []*relv1.Promotion
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*relv1.Promotion))
	}
	return out, tableIndexOf(txn, ws, TablePromotions), nil
}

// Promoted is the set of environments where a digest has a succeeded, not
// rolled back deploy rollout.
func Promoted(ps map[string]*relv1.Promotion) map[string]bool {
	out := map[string]bool{}
	for env, p := range ps {
		if p.GetSucceededRollout() != "" {
			out[env] = true
		}
	}
	return out
}

// DeployGate decides whether a deploy rollout of app@version into env may
// be created now: the release must not be blocked, and the app's
// lifecycle (if any) must let its digest go there. The FSM decides it in
// the entry that creates the rollout; servers ask it first for an early,
// identical answer. Rollbacks and catch-ups are never gated.
func (s *Store) DeployGate(app, version, env string) error {
	return deployGate(s.readTxn(), app, version, env)
}

func deployGate(txn *memdb.Txn, app, version, env string) error {
	raw, err := txn.First(TableReleases, "id", app, version)
	if err != nil {
		return fmt.Errorf("state: lookup release: %w", err)
	}
	if raw == nil {
		return newError(ErrNotFound, fmt.Sprintf("release %s@%s not found", app, version))
	}
	rel := raw.(*relv1.Release)
	if rel.GetBlocked() {
		by := "someone"
		if a := rel.GetBlockedBy(); a != nil {
			by = ActorName(a)
		}
		return newError(ErrConflict, fmt.Sprintf("%s@%s is blocked by %s: %s ('relctl release unblock %s@%s' lifts it)", app, version, by, rel.GetBlockReason(), app, version))
	}
	araw, err := txn.First(TableApps, "id", app)
	if err != nil {
		return fmt.Errorf("state: lookup app: %w", err)
	}
	if araw == nil || araw.(*relv1.App).GetLifecycle() == "" {
		return nil
	}
	name := araw.(*relv1.App).GetLifecycle()
	lraw, err := txn.First(TableLifecycles, "id", name)
	if err != nil {
		return fmt.Errorf("state: lookup lifecycle: %w", err)
	}
	if lraw == nil {
		// SetAppLifecycle and DeleteLifecycle keep this from happening.
		return lifecycleNotFound(name)
	}
	lc := lraw.(*relv1.Lifecycle)
	ps, err := promotions(txn, nil, app, rel.GetSha256())
	if err != nil {
		return err
	}
	v := lifecycle.Gate(lc, env, Promoted(ps))
	if !v.Allowed {
		return newError(ErrConflict, v.Reason(lc, app, version, rel.GetSha256(), env))
	}
	return nil
}

// ActorName is how messages name an actor: its name, else its id, with
// its kind.
func ActorName(a *relv1.Actor) string {
	n := a.GetName()
	if n == "" {
		n = a.GetId()
	}
	if k := a.GetKind(); k != "" {
		return k + " " + n
	}
	return n
}

// trackPromotion keeps the promotion row of a deploy rollout's (app,
// digest, environment) in step with the rollout row just written: the
// first rollout created there, the succeeded one that counts for the gate
// (the newest), cleared when that one is rolled back (or starts being).
func trackPromotion(txn *memdb.Txn, index uint64, ro *relv1.Rollout) error {
	if ro.GetKind() != rollout.KindDeploy && ro.GetKind() != "" {
		return nil
	}
	rraw, err := txn.First(TableReleases, "id", ro.GetApp(), ro.GetVersion())
	if err != nil {
		return fmt.Errorf("state: lookup release: %w", err)
	}
	if rraw == nil {
		return nil
	}
	digest := rraw.(*relv1.Release).GetSha256()
	if digest == "" || ro.GetEnvironment() == "" {
		return nil
	}
	raw, err := txn.First(TablePromotions, "id", ro.GetApp(), digest, ro.GetEnvironment())
	if err != nil {
		return fmt.Errorf("state: lookup promotion: %w", err)
	}
	var row *relv1.Promotion
	if raw != nil {
		row = proto.Clone(raw.(*relv1.Promotion)).(*relv1.Promotion)
	} else {
		row = &relv1.Promotion{App: ro.GetApp(), Sha256: digest, Environment: ro.GetEnvironment(), CreateIndex: index}
	}
	if row.FirstRollout == "" {
		row.FirstRollout = ro.GetId()
	}
	switch ro.GetState() {
	case rollout.StateSucceeded:
		row.SucceededRollout, row.SucceededVersion, row.SucceededUnixNano = ro.GetId(), ro.GetVersion(), ro.GetFinishedUnixNano()
	case rollout.StateRollingBack, rollout.StateRolledBack:
		if row.GetSucceededRollout() == ro.GetId() {
			row.SucceededRollout, row.SucceededVersion, row.SucceededUnixNano = "", "", 0
			row.RolledBackRollout = ro.GetId()
		}
	}
	if raw != nil {
		old := raw.(*relv1.Promotion)
		row.ModifyIndex = old.GetModifyIndex()
		if proto.Equal(old, row) {
			return nil
		}
	}
	row.ModifyIndex = index
	if err := txn.Insert(TablePromotions, row); err != nil {
		return fmt.Errorf("state: insert promotion: %w", err)
	}
	return setIndex(txn, TablePromotions, index)
}

// SortedEnvs is the keys of a set, sorted.
func SortedEnvs(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
