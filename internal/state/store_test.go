package state

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/go-memdb"
	"go.uber.org/goleak"
	"pgregory.net/rapid"

	"github.com/relhq/rel/internal/rollout"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func mustApp(t *testing.T, s *Store, idx uint64, name string) {
	t.Helper()
	if err := s.CreateApp(idx, &relv1.App{Name: name}); err != nil {
		t.Fatalf("create app %s: %v", name, err)
	}
}

func TestCreateErrors(t *testing.T) {
	s := New()
	mustApp(t, s, 1, "web")
	tests := []struct {
		name    string
		err     error
		kind    error
		message string
	}{
		{"duplicate app", s.CreateApp(2, &relv1.App{Name: "web"}), ErrAlreadyExists, `app "web" already exists`},
		{"release of unknown app", s.CreateRelease(3, &relv1.Release{App: "nope", Version: "1.0.0"}), ErrNotFound, `app "nope" not found: create it first with 'relctl app create nope'`},
		{"duplicate environment", func() error {
			if err := s.CreateEnvironment(4, &relv1.Environment{Name: "prod"}); err != nil {
				return err
			}
			return s.CreateEnvironment(5, &relv1.Environment{Name: "prod"})
		}(), ErrAlreadyExists, `environment "prod" already exists`},
		{"duplicate release", func() error {
			if err := s.CreateRelease(6, &relv1.Release{App: "web", Version: "1.0.0", Sha256: "a"}); err != nil {
				return err
			}
			return s.CreateRelease(7, &relv1.Release{App: "web", Version: "1.0.0", Sha256: "b"})
		}(), ErrAlreadyExists, "release web@1.0.0 already exists: releases are immutable, create a new version"},
	}
	for _, tt := range tests {
		if !errors.Is(tt.err, tt.kind) {
			t.Errorf("%s: err = %v, want %v", tt.name, tt.err, tt.kind)
			continue
		}
		if tt.err.Error() != tt.message {
			t.Errorf("%s: message %q, want %q", tt.name, tt.err.Error(), tt.message)
		}
	}
	// A refused create changed nothing: the first release is intact.
	rel, _, err := s.Release(nil, "web", "1.0.0")
	if err != nil || rel.GetSha256() != "a" || rel.GetCreateIndex() != 6 {
		t.Fatalf("release after refused duplicate: %v, %v", rel, err)
	}
	if got := s.LatestIndex(); got != 6 {
		t.Fatalf("latest index %d, want 6: a refused write must not bump it", got)
	}
}

func TestSortReleases(t *testing.T) {
	mk := func(app, v string, idx uint64) *relv1.Release {
		return &relv1.Release{App: app, Version: v, CreateIndex: idx}
	}
	rs := []*relv1.Release{
		mk("web", "1.10.0", 1),
		mk("web", "1.2.0", 2),
		mk("web", "nightly-b", 3),
		mk("web", "1.2.0-rc.1", 4),
		mk("web", "v1.9.3", 5),
		mk("api", "2.0.0", 6),
		mk("web", "nightly-a", 7),
		mk("web", "1.2", 8), // not full semver: creation order
	}
	SortReleases(rs)
	var got []string
	for _, r := range rs {
		got = append(got, r.GetApp()+"@"+r.GetVersion())
	}
	want := []string{"api@2.0.0", "web@nightly-b", "web@nightly-a", "web@1.2", "web@1.2.0-rc.1", "web@1.2.0", "web@v1.9.3", "web@1.10.0"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("order\n got %v\nwant %v", got, want)
	}
}

func TestBlockingQueryWakesOnWrite(t *testing.T) {
	s := New()
	mustApp(t, s, 5, "web")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan uint64)
	go func() {
		_, idx, _ := s.BlockingQuery(ctx, 5, func(ws memdb.WatchSet, s *Store) (any, uint64, error) {
			apps, idx, err := s.Apps(ws)
			return apps, idx, err
		})
		done <- idx
	}()
	mustApp(t, s, 9, "api")
	if idx := <-done; idx != 9 {
		t.Fatalf("blocking query returned index %d, want 9", idx)
	}
}

func TestBlockingQueryWakesOnRestore(t *testing.T) {
	src := New()
	mustApp(t, src, 7, "web")
	var buf bytes.Buffer
	if err := src.Snapshot().Persist(&buf); err != nil {
		t.Fatal(err)
	}
	dst := New()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan uint64)
	go func() {
		_, idx, _ := dst.BlockingQuery(ctx, 1, func(ws memdb.WatchSet, s *Store) (any, uint64, error) {
			apps, idx, err := s.Apps(ws)
			return apps, idx, err
		})
		done <- idx
	}()
	if err := dst.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	if idx := <-done; idx != 7 {
		t.Fatalf("blocking query after restore returned index %d, want 7", idx)
	}
}

func TestRestoreRejectsCorruptSnapshotAndKeepsState(t *testing.T) {
	s := New()
	mustApp(t, s, 3, "web")
	src := New()
	for i := 0; i < 10; i++ {
		mustApp(t, src, uint64(i+1), fmt.Sprintf("app-%d", i))
	}
	var buf bytes.Buffer
	if err := src.Snapshot().Persist(&buf); err != nil {
		t.Fatal(err)
	}
	full := buf.Bytes()
	for _, bad := range [][]byte{nil, full[:len(full)-3], append([]byte{0xff, 0xff, 0xff, 0xff, 0x0f}, full...)} {
		if err := s.Restore(bytes.NewReader(bad)); err == nil {
			t.Fatalf("restore of %d corrupt bytes succeeded", len(bad))
		}
		apps, _, _ := s.Apps(nil)
		if len(apps) != 1 || apps[0].GetName() != "web" {
			t.Fatalf("a failed restore changed the store: %v", apps)
		}
	}
}

// TestSnapshotRoundTripProperty: any sequence of writes, snapshotted and
// restored into a fresh store, gives an identical store; and the restored
// store keeps accepting the same writes with the same verdicts.
func TestSnapshotRoundTripProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		a := New()
		apps := []string{"web", "api", "db"}
		n := rapid.IntRange(0, 60).Draw(t, "writes")
		idx := uint64(0)
		write := func(s *Store, kind int, idx uint64, app, ver, env, srv string) error {
			return writeKind(s, kind, idx, app, ver, env, srv)
		}
		type op struct {
			kind               int
			app, ver, env, srv string
		}
		var ops []op
		for i := 0; i < n; i++ {
			ops = append(ops, op{
				kind: rapid.IntRange(0, writeKinds-1).Draw(t, "kind"),
				app:  rapid.SampledFrom(apps).Draw(t, "app"),
				ver:  rapid.SampledFrom([]string{"1.0.0", "1.2.0", "2.0.0-rc.1", "nightly"}).Draw(t, "ver"),
				env:  rapid.SampledFrom([]string{"dev", "prod"}).Draw(t, "env"),
				srv:  rapid.SampledFrom([]string{"s1", "s2"}).Draw(t, "srv"),
			})
		}
		for _, o := range ops {
			idx++
			_ = write(a, o.kind, idx, o.app, o.ver, o.env, o.srv)
		}
		var buf bytes.Buffer
		if err := a.Snapshot().Persist(&buf); err != nil {
			t.Fatal(err)
		}
		b := New()
		if err := b.Restore(&buf); err != nil {
			t.Fatal(err)
		}
		if ok, why := Equal(a, b); !ok {
			t.Fatalf("restored store differs: %s", why)
		}
		if a.LatestIndex() != b.LatestIndex() {
			t.Fatalf("latest index %d != %d", a.LatestIndex(), b.LatestIndex())
		}
		// Same writes after the restore: same verdicts, same state.
		for _, o := range ops[:min(len(ops), 10)] {
			idx++
			ea := write(a, o.kind, idx, o.app, o.ver, o.env, o.srv)
			eb := write(b, o.kind, idx, o.app, o.ver, o.env, o.srv)
			if (ea == nil) != (eb == nil) {
				t.Fatalf("verdicts differ after restore: %v vs %v", ea, eb)
			}
		}
		if ok, why := Equal(a, b); !ok {
			t.Fatalf("stores diverged after restore: %s", why)
		}
	})
}

// TestHistoryIDsArePrefixes: host-1 is a prefix of host-10; a report of
// host-1 becoming healthy on a new version must close host-1's history
// entry, not host-10's.
func TestHistoryIDsArePrefixes(t *testing.T) {
	s := New()
	idx := uint64(1)
	next := func() uint64 { idx++; return idx }
	for _, id := range []string{"host-1", "host-10"} {
		if err := s.AgentUp(next(), &relv1.Agent{Id: id, SessionId: "s-" + id, ServerId: "s1"}, nil); err != nil {
			t.Fatal(err)
		}
	}
	report := func(agent, version string, at int64) {
		t.Helper()
		if err := s.ApplyReports(next(), []*relv1.AgentReport{{AgentId: agent, SessionId: "s-" + agent,
			Report: &relv1.AppReport{App: "web", Version: version, Phase: "healthy", AtUnixNano: at}}}); err != nil {
			t.Fatal(err)
		}
	}
	report("host-10", "1.0.0", 10)
	report("host-1", "1.0.0", 20)
	report("host-1", "2.0.0", 30)
	hist, _, err := s.History(memdb.NewWatchSet(), "web")
	if err != nil {
		t.Fatal(err)
	}
	open := map[string]string{}
	for _, h := range hist {
		if h.GetToUnixNano() == 0 {
			if prev, dup := open[h.GetAgentId()]; dup {
				t.Errorf("%s runs %s and %s at once", h.GetAgentId(), prev, h.GetVersion())
			}
			open[h.GetAgentId()] = h.GetVersion()
		}
	}
	if open["host-10"] != "1.0.0" || open["host-1"] != "2.0.0" {
		t.Errorf("running now: %v, want host-10 on 1.0.0 and host-1 on 2.0.0 (history %v)", open, hist)
	}
}

// writeKinds is how many kinds of write writeKind knows: one or more for
// every table, so the snapshot property test covers them all.
const writeKinds = 33

// writeKind is one write of the snapshot property test, picked by kind,
// with the names drawn for it. srv doubles as an agent id and a session.
func writeKind(s *Store, kind int, idx uint64, app, ver, env, srv string) error {
	at := int64(idx) * 1000
	agent := "host-" + srv
	hash := func(k string) string { return fmt.Sprintf("%064x", sha256.Sum256([]byte(k))) }
	switch kind {
	case 0:
		return s.CreateApp(idx, &relv1.App{Name: app, CreatedUnixNano: int64(idx)})
	case 1:
		return s.CreateEnvironment(idx, &relv1.Environment{Name: env, Selector: map[string]string{"env": env}})
	case 2:
		return s.CreateRelease(idx, &relv1.Release{App: app, Version: ver, Sha256: hash(ver), Labels: map[string]string{"i": ver}})
	case 3:
		return s.UpsertServer(idx, &relv1.Server{Id: srv, GrpcAddr: fmt.Sprintf("h:%d", idx%3)})
	case 4:
		return s.DeleteServer(idx, srv)
	case 5:
		return s.InitCluster(idx, "cl-"+srv)
	case 6:
		return s.AgentUp(idx, &relv1.Agent{Id: agent, SessionId: "sess-" + srv + fmt.Sprint(idx%2), ServerId: srv, Labels: map[string]string{"env": env}, ConnectedUnixNano: at},
			[]*relv1.AppReport{{App: app, Version: ver, Phase: "healthy", AtUnixNano: at}})
	case 7:
		return s.AgentDown(idx, agent, "sess-"+srv+fmt.Sprint(idx%2), at, "gone")
	case 8:
		a, err := s.Agent(nil, agent)
		if err != nil {
			return err
		}
		return s.ApplyReports(idx, []*relv1.AgentReport{{AgentId: agent, SessionId: a.GetSessionId(),
			Report: &relv1.AppReport{App: app, Version: ver, Phase: []string{"healthy", "failed", "installing", "starting", "verifying"}[idx%5], RolloutId: "ro-" + app, AtUnixNano: at}}})
	case 9:
		ro := &relv1.Rollout{Id: fmt.Sprintf("ro-%s-%d", app, idx), App: app, Version: ver, Environment: env, Kind: rollout.KindDeploy, State: rollout.StateRunning,
			Hosts: []*relv1.RolloutHost{{AgentId: agent, State: "dispatched", TargetVersion: ver}}, CreatedUnixNano: at, EventSeq: 1}
		return s.CreateRollout(idx, ro, []*relv1.Desired{{AgentId: agent, App: app, Version: ver, Sha256: hash(ver), ArtifactUrl: "https://a/" + ver, RolloutId: ro.GetId()}},
			[]*relv1.RolloutEvent{{RolloutId: ro.GetId(), Seq: 1, AtUnixNano: at, Type: "started"}})
	case 10:
		rs, _, err := s.Rollouts(memdb.NewWatchSet(), app)
		if err != nil || len(rs) == 0 {
			return err
		}
		return s.ControlRollout(idx, rs[0].GetId(), []string{"pause", "resume", "abort"}[idx%3], "test", at, 0)
	case 11:
		return s.ACLBootstrap(idx, &relv1.ACLToken{AccessorId: fmt.Sprintf("%016x", idx), SecretHash: hash("boot" + srv), Name: "management", Roles: []string{"admin"}, CreatedUnixNano: at})
	case 12:
		return s.CreateACLToken(idx, &relv1.ACLToken{AccessorId: fmt.Sprintf("%016x", idx), SecretHash: hash(app + env + srv), Name: app, Roles: []string{"viewer"}, CreatedUnixNano: at})
	case 13:
		toks, _, err := s.ACLTokens(memdb.NewWatchSet())
		if err != nil || len(toks) == 0 {
			return err
		}
		return s.DeleteACLToken(idx, toks[int(idx)%len(toks)].GetAccessorId())
	case 14:
		return s.CreateJoinToken(idx, &relv1.JoinToken{AccessorId: fmt.Sprintf("%016x", idx), SecretHash: hash("join" + env + srv), Uses: 2, CreatedUnixNano: at, ExpiresUnixNano: at + 1e12,
			Labels: map[string]string{"env": env}})
	case 15:
		return s.UseJoinToken(idx, hash("join"+env+srv), agent, at)
	case 16:
		return s.RevokeAgent(idx, &relv1.AgentRevocation{AgentId: agent, RevokedUnixNano: at, RevokedBy: "test", Reason: app})
	case 17:
		_, err := s.RemoveArtifacts(idx, at, []string{hash(app + ver)})
		return err
	case 18:
		// A failed attempt of another version closes a history row at
		// once; the pass folds it with whatever else has ended.
		if a, err := s.Agent(nil, agent); err == nil {
			if err := s.ApplyReports(idx, []*relv1.AgentReport{{AgentId: agent, SessionId: a.GetSessionId(),
				Report: &relv1.AppReport{App: app, Version: ver + "-x", Phase: "failed", AtUnixNano: at}}}); err != nil {
				return err
			}
		}
		_, err := s.FoldHistory(idx, at, 1+int(idx%3))
		return err
	case 19:
		_, err := s.RemoveAgents(idx, []string{agent}, at, at)
		return err
	case 20:
		return s.DeleteRelease(idx, app, ver)
	case 22:
		return s.CreateLifecycle(idx, &relv1.Lifecycle{Name: "lc-" + env, Phases: []*relv1.Phase{{Name: "only", Environments: []string{env}, Progress: "all"}}}, nil)
	case 23:
		return s.SetAppLifecycle(idx, app, []string{"", "lc-dev", "lc-prod"}[idx%3])
	case 24:
		return s.BlockRelease(idx, app, ver, idx%2 == 0, "test", &relv1.Actor{Kind: "token", Id: "t1"})
	case 25:
		return s.AppendAudit(idx, []*relv1.AuditRecord{{TimeUnixNano: at, Actor: &relv1.Actor{Kind: "token", Id: srv}, Action: "create_app",
			Result: "applied", App: app, Env: env}, {TimeUnixNano: at, Action: "StartRollout", Result: "refused", Env: env}})
	case 26:
		return s.CreateFreeze(idx, &relv1.FreezeWindow{Name: "f-" + app + env, Apps: []string{app}, Environments: []string{env},
			StartUnixNano: at, EndUnixNano: at + int64(time.Hour), CreatedUnixNano: at})
	case 27:
		// A rollout that ends leaves a deployment record (deployments.go);
		// the retention pass removes records that ended long enough ago.
		rs, _, err := s.Rollouts(memdb.NewWatchSet(), app)
		if err != nil {
			return err
		}
		for _, ro := range rs {
			if !rollout.Terminal(ro.GetState()) {
				if err := s.ControlRollout(idx, ro.GetId(), rollout.ActionAbort, "test", at, 0); err != nil {
					return err
				}
				break
			}
		}
		_, err = s.PruneDeployments(idx, at-3000, 1+int(idx%2))
		return err
	case 28:
		// The event stream: events of the rollout events written at
		// idx (none unless kind 9 or 10 wrote at idx) and one of the
		// FSM's own.
		return s.AppendEvents(idx, at, &relv1.Actor{Kind: "token", Id: srv}, []*relv1.Event{{Type: "release.created", App: app, Version: ver}})
	case 29:
		_, err := s.TrimEvents(idx, idx/2+2, at, 1+int(idx%3))
		return err
	case 30:
		return s.CreateWebhook(idx, &relv1.Webhook{Name: "wh-" + app, Url: "https://hooks.example.com/" + env, Events: []string{"rollout.*"}, Format: "json", Secret: []byte(srv), CreatedUnixNano: at})
	case 31:
		wh, err := s.Webhook(nil, "wh-"+app)
		if err != nil {
			return err
		}
		seq := wh.GetDeliveredSeq() + 1
		return s.WebhookProgress(idx, &relv1.WebhookProgress{Name: wh.GetName(), CreateIndex: wh.GetCreateIndex(), DeliveredSeq: seq, FailedAttempts: 3,
			Deliveries:  []*relv1.WebhookDelivery{{Seq: seq, Type: "rollout.started", Outcome: "dead_letter", Attempts: 3, Status: 500, Error: "500"}},
			DeadLetters: []*relv1.WebhookDeadLetter{{Seq: seq, Type: "rollout.started", Attempts: 3, Status: 500, Error: "500", DeadUnixNano: at}}})
	case 32:
		// The audit trail's retention: the head marked archived, then a
		// pass over what is old enough (a prefix; maybe every record).
		seq, hash, err := s.AuditHeadSeq()
		if err != nil || seq == 0 {
			return err
		}
		if err := s.MarkAuditArchived(idx, seq, hash); err != nil {
			return err
		}
		_, err = s.TrimAudit(idx, at-2000, 1+int(idx%3))
		return err
	default:
		// What the FSM does for a command with a request id: expire, look
		// up, record (with a small TTL and cap, so both evict).
		id := "rq-" + app + env
		first, err := s.BeginRequest(id, at, 20*time.Microsecond)
		if err != nil || first != nil {
			return err
		}
		return s.RecordRequest(&relv1.RequestRecord{Id: id, Index: idx, StampedUnixNano: at, Kind: "create_app", Target: app,
			ErrorKind: []string{"", "already_exists"}[idx%2], Ref: srv}, 4)
	}
}

// TestSnapshotCoversEveryTable: one of each write fills every table, and
// the snapshot carries all of them: a table added to the schema without
// its snapshot records (or without a write here) fails this test.
func TestSnapshotCoversEveryTable(t *testing.T) {
	a := New()
	idx := uint64(0)
	for kind := 0; kind < writeKinds; kind++ {
		if kind == 4 || kind == 7 || kind == 10 || kind == 13 || kind >= 17 && kind <= 20 || kind >= 22 {
			continue // deletions and controls: run below, after the rows exist
		}
		idx++
		if err := writeKind(a, kind, idx, "web", "1.0.0", "prod", "s1"); err != nil {
			t.Fatalf("write kind %d: %v", kind, err)
		}
	}
	for _, kind := range []int{10, 7, 17, 18, 22, 25, 32, 26, 9, 27, 28, 29, 30, 31} {
		idx++
		if err := writeKind(a, kind, idx, "web", "1.0.0", "prod", "s1"); err != nil {
			t.Fatalf("write kind %d: %v", kind, err)
		}
	}
	txn := a.readTxn()
	for table := range schema().Tables {
		if table == tableMeta {
			continue // checked below
		}
		if raw, err := txn.First(table, "id"); err != nil || raw == nil {
			t.Errorf("table %s is empty after one write of each kind (%v): give writeKind a write for it", table, err)
		}
		if !slices.Contains(allTables, table) {
			t.Errorf("table %s is not in allTables: Equal does not compare it", table)
		}
	}
	var buf bytes.Buffer
	if err := a.Snapshot().Persist(&buf); err != nil {
		t.Fatal(err)
	}
	b := New()
	if err := b.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	if ok, why := Equal(a, b); !ok {
		t.Fatalf("restored store differs: %s", why)
	}
	if !b.ACLBootstrapped() || b.ClusterID() == "" {
		t.Errorf("meta lost in the snapshot: bootstrapped %v, cluster %q", b.ACLBootstrapped(), b.ClusterID())
	}
}
