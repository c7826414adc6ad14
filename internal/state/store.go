package state

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/hashicorp/go-memdb"
	"golang.org/x/mod/semver"
	"google.golang.org/protobuf/proto"

	"github.com/relhq/rel/internal/rollout"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// Store holds the state. Reads take a consistent snapshot of the whole
// database; writes come only from the FSM.
type Store struct {
	mu sync.RWMutex
	db *memdb.MemDB
	// abandonCh is closed when Restore replaces db, so that blocking queries
	// watching the old database wake up and re-read from the new one.
	abandonCh chan struct{}
}

// New returns an empty store.
func New() *Store {
	return &Store{db: newDB(), abandonCh: make(chan struct{})}
}

func (s *Store) current() (*memdb.MemDB, chan struct{}) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.db, s.abandonCh
}

// AbandonCh is closed when the store's contents are replaced by a restore.
func (s *Store) AbandonCh() <-chan struct{} {
	_, ch := s.current()
	return ch
}

func (s *Store) readTxn() *memdb.Txn {
	db, _ := s.current()
	return db.Txn(false)
}

// writeTxn returns a write transaction. Only the FSM writes, one entry at a
// time, so there is no contention.
func (s *Store) writeTxn() *memdb.Txn {
	db, _ := s.current()
	return db.Txn(true)
}

func setIndex(txn *memdb.Txn, table string, index uint64) error {
	if err := txn.Insert(tableIndex, &indexEntry{Key: table, Value: index}); err != nil {
		return fmt.Errorf("state: update index of %s: %w", table, err)
	}
	return nil
}

func tableIndexOf(txn *memdb.Txn, ws memdb.WatchSet, tables ...string) uint64 {
	var max uint64
	for _, t := range tables {
		ch, raw, err := txn.FirstWatch(tableIndex, "id", t)
		if err != nil {
			continue
		}
		ws.Add(ch)
		if raw != nil {
			if v := raw.(*indexEntry).Value; v > max {
				max = v
			}
		}
	}
	return max
}

// dataTables are the tables whose writes the index table records;
// allTables adds the requests table (bookkeeping of request ids, which
// no query watches and which a refused write still records), the audit
// table (which a refused write appends to as well) with its retention
// row, and the index table itself.
var (
	dataTables = []string{TableApps, TableEnvironments, TableReleases, TableServers,
		TableAgents, TableAgentApps, TableDesired, TableRollouts, TableHistory, TableEvents,
		TableHistorySummaries, TableACLTokens, TableJoinTokens, TableRevocations, TableArtifactTombstones,
		TableLifecycles, TablePromotions, TableFreezes, TableDeployments,
		TableClusterEvents, TableWebhooks, TableWebhookDeadLetters}
	allTables = append(append([]string{}, dataTables...), TableRequests, TableAudit, TableAuditRetention, tableIndex)
)

// LatestIndex is the raft index of the latest write to any table.
func (s *Store) LatestIndex() uint64 {
	txn := s.readTxn()
	return tableIndexOf(txn, nil, dataTables...)
}

// CreateApp inserts an app. It fails with ErrAlreadyExists when the name is taken.
func (s *Store) CreateApp(index uint64, app *relv1.App) error {
	txn := s.writeTxn()
	defer txn.Abort()
	existing, err := txn.First(TableApps, "id", app.GetName())
	if err != nil {
		return fmt.Errorf("state: lookup app: %w", err)
	}
	if existing != nil {
		return newError(ErrAlreadyExists, fmt.Sprintf("app %q already exists", app.GetName()))
	}
	if err := lifecycleExists(txn, app.GetLifecycle()); err != nil {
		return err
	}
	row := proto.Clone(app).(*relv1.App)
	row.CreateIndex, row.ModifyIndex = index, index
	if err := txn.Insert(TableApps, row); err != nil {
		return fmt.Errorf("state: insert app: %w", err)
	}
	if err := setIndex(txn, TableApps, index); err != nil {
		return err
	}
	txn.Commit()
	return nil
}

// CreateEnvironment inserts an environment, or fails with ErrAlreadyExists.
func (s *Store) CreateEnvironment(index uint64, env *relv1.Environment) error {
	txn := s.writeTxn()
	defer txn.Abort()
	existing, err := txn.First(TableEnvironments, "id", env.GetName())
	if err != nil {
		return fmt.Errorf("state: lookup environment: %w", err)
	}
	if existing != nil {
		return newError(ErrAlreadyExists, fmt.Sprintf("environment %q already exists", env.GetName()))
	}
	row := proto.Clone(env).(*relv1.Environment)
	row.CreateIndex, row.ModifyIndex = index, index
	if err := txn.Insert(TableEnvironments, row); err != nil {
		return fmt.Errorf("state: insert environment: %w", err)
	}
	if err := setIndex(txn, TableEnvironments, index); err != nil {
		return err
	}
	txn.Commit()
	return nil
}

// UpdateEnvironment replaces an environment's selector and description if
// the row is still at expect (its ModifyIndex when the change was decided),
// so the hosts the accepting server found joining and leaving are those of
// the selector replaced. A selector change is refused while a rollout to
// the environment is active: its hosts were chosen by the old selector.
func (s *Store) UpdateEnvironment(index uint64, env *relv1.Environment, expect uint64) error {
	txn := s.writeTxn()
	defer txn.Abort()
	raw, err := txn.First(TableEnvironments, "id", env.GetName())
	if err != nil {
		return fmt.Errorf("state: lookup environment: %w", err)
	}
	if raw == nil {
		return envNotFound(env.GetName())
	}
	old := raw.(*relv1.Environment)
	if old.GetModifyIndex() != expect {
		return newError(ErrConflict, fmt.Sprintf("environment %q changed (at index %d) while this update was decided: run it again to see what it does now", env.GetName(), old.GetModifyIndex()))
	}
	if !sameLabels(old.GetSelector(), env.GetSelector()) {
		if ro, err := activeRolloutTo(txn, env.GetName()); err != nil {
			return err
		} else if ro != nil {
			return newError(ErrConflict, fmt.Sprintf("environment %q has an active rollout, %s: its hosts were chosen by the current selector; "+
				"wait until it finishes or abort it ('relctl rollout abort %s'), then change the selector (a description-only change is allowed now)",
				env.GetName(), describeRollout(ro), ro.GetId()))
		}
	}
	row := proto.Clone(old).(*relv1.Environment)
	row.Selector = env.GetSelector()
	row.Description = env.GetDescription()
	row.CatchUpManual, row.CatchUpParallel = env.GetCatchUpManual(), env.GetCatchUpParallel()
	// The update's whole row carries the default spec (the old one when
	// the request did not change it; none in entries written before it).
	row.DefaultSpec = env.GetDefaultSpec()
	row.ModifyIndex = index
	if err := txn.Insert(TableEnvironments, row); err != nil {
		return fmt.Errorf("state: update environment: %w", err)
	}
	if err := setIndex(txn, TableEnvironments, index); err != nil {
		return err
	}
	txn.Commit()
	return nil
}

// DeleteEnvironment deletes an environment, refused while a rollout of any
// app to it is active. Finished rollouts and history keep its name.
func (s *Store) DeleteEnvironment(index uint64, name string) error {
	txn := s.writeTxn()
	defer txn.Abort()
	raw, err := txn.First(TableEnvironments, "id", name)
	if err != nil {
		return fmt.Errorf("state: lookup environment: %w", err)
	}
	if raw == nil {
		return envNotFound(name)
	}
	if ro, err := activeRolloutTo(txn, name); err != nil {
		return err
	} else if ro != nil {
		return newError(ErrConflict, fmt.Sprintf("environment %q has an active rollout, %s: wait until it finishes or abort it ('relctl rollout abort %s'), then delete the environment",
			name, describeRollout(ro), ro.GetId()))
	}
	if lcs, err := lifecyclesWith(txn, name); err != nil {
		return err
	} else if len(lcs) > 0 {
		return newError(ErrConflict, fmt.Sprintf("environment %q is in lifecycle(s) %s: take it out of their phases first ('relctl lifecycle update %s ...'), then delete it",
			name, strings.Join(lcs, ", "), lcs[0]))
	}
	if err := txn.Delete(TableEnvironments, raw); err != nil {
		return fmt.Errorf("state: delete environment: %w", err)
	}
	if err := setIndex(txn, TableEnvironments, index); err != nil {
		return err
	}
	txn.Commit()
	return nil
}

func envNotFound(name string) error {
	return newError(ErrNotFound, fmt.Sprintf("environment %q not found: 'relctl env list' shows them", name))
}

// ActiveRolloutTo is the first (by id) rollout to environment env that is
// not finished, nil when there is none.
func (s *Store) ActiveRolloutTo(env string) (*relv1.Rollout, error) {
	return activeRolloutTo(s.readTxn(), env)
}

func activeRolloutTo(txn *memdb.Txn, env string) (*relv1.Rollout, error) {
	var found *relv1.Rollout
	for _, st := range rollout.ActiveStates {
		it, err := txn.Get(TableRollouts, "state", st)
		if err != nil {
			return nil, fmt.Errorf("state: active rollouts: %w", err)
		}
		for raw := it.Next(); raw != nil; raw = it.Next() {
			ro := raw.(*relv1.Rollout)
			if ro.GetEnvironment() == env && (found == nil || ro.GetId() < found.GetId()) {
				found = ro
			}
		}
	}
	return found, nil
}

func describeRollout(ro *relv1.Rollout) string {
	what := ro.GetApp() + "@" + ro.GetVersion()
	if ro.GetKind() == rollout.KindRollback {
		what = "rollback of " + ro.GetRollbackOf()
	}
	return fmt.Sprintf("%s (%s, %s)", ro.GetId(), what, ro.GetState())
}

func sameLabels(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

// CreateRelease inserts a release of an existing app. Versions are unique per
// app and immutable: a second create fails with ErrAlreadyExists, even with
// identical content, so that a version always names exactly one build.
func (s *Store) CreateRelease(index uint64, rel *relv1.Release) error {
	return s.CreateReleaseChecked(index, rel, 0)
}

// CreateReleaseChecked is CreateRelease for a command that says through
// which index its accepting server had deleted removed artifacts when it
// found the release's blob (CreateRelease.artifact_checked_index): a
// release of a blob removed after that is refused (ErrConflict).
func (s *Store) CreateReleaseChecked(index uint64, rel *relv1.Release, artifactChecked uint64) error {
	txn := s.writeTxn()
	defer txn.Abort()
	app, err := txn.First(TableApps, "id", rel.GetApp())
	if err != nil {
		return fmt.Errorf("state: lookup app: %w", err)
	}
	if app == nil {
		return newError(ErrNotFound, fmt.Sprintf("app %q not found: create it first with 'relctl app create %s'", rel.GetApp(), rel.GetApp()))
	}
	existing, err := txn.First(TableReleases, "id", rel.GetApp(), rel.GetVersion())
	if err != nil {
		return fmt.Errorf("state: lookup release: %w", err)
	}
	if existing != nil {
		return newError(ErrAlreadyExists, fmt.Sprintf("release %s@%s already exists: releases are immutable, create a new version", rel.GetApp(), rel.GetVersion()))
	}
	if err := checkRemovedArtifact(txn, index, rel, artifactChecked); err != nil {
		return err
	}
	row := proto.Clone(rel).(*relv1.Release)
	row.CreateIndex, row.ModifyIndex = index, index
	if err := txn.Insert(TableReleases, row); err != nil {
		return fmt.Errorf("state: insert release: %w", err)
	}
	if err := setIndex(txn, TableReleases, index); err != nil {
		return err
	}
	txn.Commit()
	return nil
}

// UpsertServer records a control-plane node's addresses, keeping the original
// CreateIndex when the node re-registers. Re-registering unchanged addresses
// changes nothing.
func (s *Store) UpsertServer(index uint64, srv *relv1.Server) error {
	txn := s.writeTxn()
	defer txn.Abort()
	row := proto.Clone(srv).(*relv1.Server)
	row.CreateIndex, row.ModifyIndex = index, index
	existing, err := txn.First(TableServers, "id", srv.GetId())
	if err != nil {
		return fmt.Errorf("state: lookup server: %w", err)
	}
	if existing != nil {
		old := existing.(*relv1.Server)
		if old.GetRaftAddr() == srv.GetRaftAddr() && old.GetGrpcAddr() == srv.GetGrpcAddr() && old.GetHttpAddr() == srv.GetHttpAddr() {
			// Nothing changed: keep the row, so that a node re-registering
			// after a restart does not wake every watcher of the table.
			return nil
		}
		row.CreateIndex = old.GetCreateIndex()
		if row.RegisteredUnixNano == 0 {
			row.RegisteredUnixNano = old.GetRegisteredUnixNano()
		}
	}
	if err := txn.Insert(TableServers, row); err != nil {
		return fmt.Errorf("state: insert server: %w", err)
	}
	if err := setIndex(txn, TableServers, index); err != nil {
		return err
	}
	txn.Commit()
	return nil
}

// DeleteServer removes a node's registration. Deleting an unknown node is not
// an error: membership removal must be idempotent.
func (s *Store) DeleteServer(index uint64, id string) error {
	txn := s.writeTxn()
	defer txn.Abort()
	existing, err := txn.First(TableServers, "id", id)
	if err != nil {
		return fmt.Errorf("state: lookup server: %w", err)
	}
	if existing != nil {
		if err := txn.Delete(TableServers, existing); err != nil {
			return fmt.Errorf("state: delete server: %w", err)
		}
	}
	if err := setIndex(txn, TableServers, index); err != nil {
		return err
	}
	txn.Commit()
	return nil
}

// Apps lists every app by name, with the index it was read at.
func (s *Store) Apps(ws memdb.WatchSet) ([]*relv1.App, uint64, error) {
	txn := s.readTxn()
	it, err := txn.Get(TableApps, "id")
	if err != nil {
		return nil, 0, fmt.Errorf("state: list apps: %w", err)
	}
	ws.Add(it.WatchCh())
	var out []*relv1.App
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*relv1.App))
	}
	return out, tableIndexOf(txn, ws, TableApps), nil
}

// App returns one app or ErrNotFound.
func (s *Store) App(ws memdb.WatchSet, name string) (*relv1.App, error) {
	txn := s.readTxn()
	ch, raw, err := txn.FirstWatch(TableApps, "id", name)
	if err != nil {
		return nil, fmt.Errorf("state: get app: %w", err)
	}
	ws.Add(ch)
	if raw == nil {
		return nil, newError(ErrNotFound, fmt.Sprintf("app %q not found", name))
	}
	return raw.(*relv1.App), nil
}

// Environments lists every environment by name.
func (s *Store) Environments(ws memdb.WatchSet) ([]*relv1.Environment, uint64, error) {
	txn := s.readTxn()
	it, err := txn.Get(TableEnvironments, "id")
	if err != nil {
		return nil, 0, fmt.Errorf("state: list environments: %w", err)
	}
	ws.Add(it.WatchCh())
	var out []*relv1.Environment
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*relv1.Environment))
	}
	return out, tableIndexOf(txn, ws, TableEnvironments), nil
}

// Releases lists releases, of one app when app is not empty, grouped by app
// name and ordered within an app by SortReleases.
func (s *Store) Releases(ws memdb.WatchSet, app string) ([]*relv1.Release, uint64, error) {
	txn := s.readTxn()
	var (
		it  memdb.ResultIterator
		err error
	)
	if app == "" {
		it, err = txn.Get(TableReleases, "id")
	} else {
		it, err = txn.Get(TableReleases, "app", app)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("state: list releases: %w", err)
	}
	ws.Add(it.WatchCh())
	var out []*relv1.Release
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*relv1.Release))
	}
	SortReleases(out)
	return out, tableIndexOf(txn, ws, TableReleases), nil
}

// Release returns one release or ErrNotFound.
func (s *Store) Release(ws memdb.WatchSet, app, version string) (*relv1.Release, uint64, error) {
	txn := s.readTxn()
	ch, raw, err := txn.FirstWatch(TableReleases, "id", app, version)
	if err != nil {
		return nil, 0, fmt.Errorf("state: get release: %w", err)
	}
	ws.Add(ch)
	idx := tableIndexOf(txn, ws, TableReleases)
	if raw == nil {
		return nil, idx, newError(ErrNotFound, fmt.Sprintf("release %s@%s not found", app, version))
	}
	return raw.(*relv1.Release), idx, nil
}

// Servers lists the registered control-plane nodes by id.
func (s *Store) Servers(ws memdb.WatchSet) ([]*relv1.Server, uint64, error) {
	txn := s.readTxn()
	it, err := txn.Get(TableServers, "id")
	if err != nil {
		return nil, 0, fmt.Errorf("state: list servers: %w", err)
	}
	ws.Add(it.WatchCh())
	var out []*relv1.Server
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*relv1.Server))
	}
	return out, tableIndexOf(txn, ws, TableServers), nil
}

// Server returns one registered node or ErrNotFound.
func (s *Store) Server(id string) (*relv1.Server, error) {
	txn := s.readTxn()
	raw, err := txn.First(TableServers, "id", id)
	if err != nil {
		return nil, fmt.Errorf("state: get server: %w", err)
	}
	if raw == nil {
		return nil, newError(ErrNotFound, fmt.Sprintf("server %q not found", id))
	}
	return raw.(*relv1.Server), nil
}

// SortReleases orders releases by app name, then within an app: versions that
// are not semantic versions first, in creation order, then semantic versions
// in semantic order (1.2.0 < 1.10.0; a pre-release before its release). Ties
// between equal semantic versions (1.0.0 and v1.0.0) keep creation order.
// Newest is last, like `git tag --sort=version:refname`.
func SortReleases(rs []*relv1.Release) {
	sort.SliceStable(rs, func(i, j int) bool { return ReleaseLess(rs[i], rs[j]) })
}

// ReleaseLess is the order of SortReleases. It looks only at app, version
// and create index, so a release holding only those (a page token's)
// compares like the release itself.
func ReleaseLess(a, b *relv1.Release) bool {
	if a.GetApp() != b.GetApp() {
		return a.GetApp() < b.GetApp()
	}
	va, vb := canonicalSemver(a.GetVersion()), canonicalSemver(b.GetVersion())
	switch {
	case va == "" && vb == "":
		return a.GetCreateIndex() < b.GetCreateIndex()
	case va == "":
		return true
	case vb == "":
		return false
	}
	if c := semver.Compare(va, vb); c != 0 {
		return c < 0
	}
	if a.GetCreateIndex() != b.GetCreateIndex() {
		return a.GetCreateIndex() < b.GetCreateIndex()
	}
	return a.GetVersion() < b.GetVersion()
}

// canonicalSemver returns v as a "v"-prefixed semantic version, or "" when it
// is not one. Only full MAJOR.MINOR.PATCH versions count: "1.2" is not semver.
func canonicalSemver(v string) string {
	if len(v) > 0 && v[0] != 'v' {
		v = "v" + v
	}
	if !semver.IsValid(v) {
		return ""
	}
	// semver.IsValid accepts the shorthands v1 and v1.2; SemVer 2.0 does not.
	core := v
	if i := strings.IndexAny(core, "-+"); i >= 0 {
		core = core[:i]
	}
	if strings.Count(core, ".") != 2 {
		return ""
	}
	return v
}

// QueryFn reads from the store, registering what it read in ws, and returns
// its answer with the index the answer reflects.
type QueryFn func(ws memdb.WatchSet, s *Store) (any, uint64, error)

// BlockingQuery runs fn, and while the index it returns is not above
// minIndex, waits for anything fn read to change (or the store to be restored)
// and runs it again. It returns when the index passes minIndex or ctx ends;
// on ctx's end it returns the latest answer and no error, like a long poll.
func (s *Store) BlockingQuery(ctx context.Context, minIndex uint64, fn QueryFn) (any, uint64, error) {
	for {
		ws := memdb.NewWatchSet()
		ws.Add(s.AbandonCh())
		out, idx, err := fn(ws, s)
		if err != nil || idx > minIndex || minIndex == 0 {
			return out, idx, err
		}
		if err := ws.WatchCtx(ctx); err != nil {
			return out, idx, nil
		}
	}
}

// WatchTables adds the index rows of tables to ws: it fires on any write
// to them. For leader loops that follow whole tables.
func (s *Store) WatchTables(ws memdb.WatchSet, tables ...string) {
	tableIndexOf(s.readTxn(), ws, tables...)
}

// InitCluster records the cluster's id unless it has one: the first id
// committed wins, so every replica keeps the same.
func (s *Store) InitCluster(index uint64, id string) error {
	txn := s.writeTxn()
	defer txn.Abort()
	raw, err := txn.First(tableMeta, "id", metaClusterID)
	if err != nil {
		return fmt.Errorf("state: lookup cluster id: %w", err)
	}
	if raw != nil || id == "" {
		return nil
	}
	if err := txn.Insert(tableMeta, &metaEntry{Key: metaClusterID, Value: id}); err != nil {
		return fmt.Errorf("state: insert cluster id: %w", err)
	}
	txn.Commit()
	return nil
}

// ClusterID is the cluster's id, "" until the first leader has named it.
func (s *Store) ClusterID() string {
	raw, err := s.readTxn().First(tableMeta, "id", metaClusterID)
	if err != nil || raw == nil {
		return ""
	}
	return raw.(*metaEntry).Value
}
