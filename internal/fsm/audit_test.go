package fsm

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/relhq/rel/internal/audit"
	"github.com/relhq/rel/internal/state"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

func auditRecords(t *testing.T, f *FSM) []*relv1.AuditRecord {
	t.Helper()
	var out []*relv1.AuditRecord
	if _, err := f.Store().Audit(nil, state.AuditFilter{}, func(r *relv1.AuditRecord) bool {
		out = append(out, r)
		return true
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

var alice = &relv1.Actor{Kind: "token", Id: "00000000000000a1", Name: "alice"}

func withActor(a *relv1.Actor, c *relv1.Command) *relv1.Command {
	c.Actor = a
	return c
}

// TestAuditRecordPerCommand: each command appends the record it should,
// in the same entry (its index), with the chain intact after each.
func TestAuditRecordPerCommand(t *testing.T) {
	r := newReplica(t)
	for _, c := range baseHistory() {
		r.must(c)
	}
	// The base history: register_server, init_cluster and agent_up add
	// nothing; create_app, create_environment, create_release,
	// create_rollout (no actor: the leader's), acl_bootstrap and
	// create_join_token add one each.
	recs := auditRecords(t, r.f)
	var actions []string
	for _, rec := range recs {
		actions = append(actions, rec.GetAction())
	}
	want := []string{"create_app", "create_environment", "create_release", "create_rollout", "acl_bootstrap", "create_join_token"}
	if len(actions) != len(want) {
		t.Fatalf("records after the base history: %v, want %v", actions, want)
	}
	for i := range want {
		if actions[i] != want[i] {
			t.Fatalf("records after the base history: %v, want %v", actions, want)
		}
	}
	if a := recs[3].GetActor(); a.GetKind() != "server" || a.GetId() != "leader" {
		t.Errorf("the leader's rollout is recorded as %v, want the leader", a)
	}
	if recs[3].GetDigest() != fuzzSHA || recs[3].GetApp() != "web" || recs[3].GetEnv() != "prod" {
		t.Errorf("rollout record %v: want app web, env prod and the release's digest", recs[3])
	}

	for _, tc := range []struct {
		name string
		cmd  *relv1.Command
		// want is the action of the record added, "" for none.
		want, result, errorKind string
		check                   func(t *testing.T, rec *relv1.AuditRecord)
	}{
		{"a person's change", withRequestID("rq-a1", withActor(alice, stamped(100, &relv1.Command_CreateApp{CreateApp: &relv1.CreateApp{App: &relv1.App{Name: "api"}}}))),
			"create_app", audit.Applied, "", func(t *testing.T, rec *relv1.AuditRecord) {
				if rec.GetActor().GetId() != alice.GetId() || rec.GetApp() != "api" || rec.GetRequestId() != "rq-a1" || rec.GetTimeUnixNano() != 100 {
					t.Errorf("record %v: want alice's create_app of api at 100 with its request id", rec)
				}
			}},
		{"a repeat of an applied request id", withRequestID("rq-a1", withActor(alice, stamped(101, &relv1.Command_CreateApp{CreateApp: &relv1.CreateApp{App: &relv1.App{Name: "api"}}}))),
			"", "", "", nil},
		{"a refused change", withRequestID("rq-a2", withActor(alice, stamped(102, &relv1.Command_CreateApp{CreateApp: &relv1.CreateApp{App: &relv1.App{Name: "web"}}}))),
			"create_app", audit.Refused, "already_exists", func(t *testing.T, rec *relv1.AuditRecord) {
				if rec.GetMessage() == "" {
					t.Error("a refusal's record has no message")
				}
			}},
		{"a request id reused for another request", withRequestID("rq-a1", withActor(alice, stamped(103, &relv1.Command_CreateApp{CreateApp: &relv1.CreateApp{App: &relv1.App{Name: "db"}}}))),
			"create_app", audit.Refused, "request_id_reused", nil},
		{"a control names the rollout's app and env and its reason", withRequestID("rq-a3", withActor(alice, stamped(104, &relv1.Command_RolloutControl{RolloutControl: &relv1.RolloutControl{RolloutId: "ro-1", Action: "pause", AtUnixNano: 104, Reason: "lunch"}}))),
			"rollout_control", audit.Applied, "", func(t *testing.T, rec *relv1.AuditRecord) {
				if rec.GetApp() != "web" || rec.GetEnv() != "prod" || rec.GetReason() != "lunch" || rec.GetDigest() != fuzzSHA {
					t.Errorf("record %v: want web, prod, lunch and the digest", rec)
				}
			}},
		{"a request without credentials", withRequestID("rq-anon", stamped(104, &relv1.Command_AclBootstrap{AclBootstrap: &relv1.ACLBootstrap{Token: &relv1.ACLToken{
			AccessorId: "00000000000000dd", SecretHash: fuzzTokenHash, Name: "management", Roles: []string{"admin"}}}})),
			"acl_bootstrap", audit.Refused, "conflict", func(t *testing.T, rec *relv1.AuditRecord) {
				if rec.GetActor().GetKind() != "anonymous" {
					t.Errorf("record %v: want an anonymous actor", rec)
				}
			}},
		{"agent traffic", stamped(105, &relv1.Command_AgentDown{AgentDown: &relv1.AgentDown{AgentId: "web-1", SessionId: "sess-1", AtUnixNano: 105}}), "", "", "", nil},
		{"a report batch", stamped(106, &relv1.Command_ReportBatch{ReportBatch: &relv1.ReportBatch{Reports: []*relv1.AgentReport{{AgentId: "web-1", SessionId: "sess-1",
			Report: &relv1.AppReport{App: "web", Version: "1.0.0", Phase: "healthy", AtUnixNano: 106}}}}}), "", "", "", nil},
		{"a stale step of the engine", stamped(107, &relv1.Command_RolloutStep{RolloutStep: &relv1.RolloutStep{Rollout: fuzzRollout("ro-1", "failed"), ExpectModifyIndex: 1}}), "", "", "", nil},
		{"a refused decision of the leader", stamped(108, &relv1.Command_DeleteEnvironment{DeleteEnvironment: &relv1.DeleteEnvironment{Name: "nope"}}), "", "", "", nil},
		{"a retention pass", stamped(109, &relv1.Command_FoldHistory{FoldHistory: &relv1.FoldHistory{CutoffUnixNano: 1, MaxEntries: 10}}),
			"fold_history", audit.Applied, "", func(t *testing.T, rec *relv1.AuditRecord) {
				if rec.GetReason() != "retention" || rec.GetActor().GetId() != "leader" {
					t.Errorf("record %v: want the leader's retention", rec)
				}
			}},
		{"refusals that never reached raft", stamped(110, &relv1.Command_AuditRefusals{AuditRefusals: &relv1.AuditRefusals{Server: "s1", Refusals: []*relv1.AuditRefusal{
			{TimeUnixNano: 109, Actor: alice, Method: "StartRollout", Code: "PermissionDenied", Message: "alice may not", App: "web", Env: "prod", Server: "s1", RequestId: "rq-z"}}}}),
			"StartRollout", audit.Refused, "PermissionDenied", func(t *testing.T, rec *relv1.AuditRecord) {
				if rec.GetActor().GetId() != alice.GetId() || rec.GetTimeUnixNano() != 109 || rec.GetEnv() != "prod" || rec.GetRequestId() != "rq-z" {
					t.Errorf("record %v: want alice's refusal as the server sent it", rec)
				}
			}},
		{"refusals dropped", stamped(111, &relv1.Command_AuditRefusals{AuditRefusals: &relv1.AuditRefusals{Server: "s1", Dropped: 7}}),
			"refusals_dropped", audit.Refused, "", func(t *testing.T, rec *relv1.AuditRecord) {
				if !bytes.Contains([]byte(rec.GetMessage()), []byte("7 refusals dropped")) {
					t.Errorf("record %v: want the number dropped", rec)
				}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := auditRecords(t, r.f)
			res := r.apply(tc.cmd)
			after := auditRecords(t, r.f)
			if tc.want == "" {
				if len(after) != len(before) {
					t.Fatalf("added %d records (%v), want none", len(after)-len(before), after[len(before):])
				}
				return
			}
			if len(after) != len(before)+1 {
				t.Fatalf("added %d records, want 1", len(after)-len(before))
			}
			rec := after[len(after)-1]
			if rec.GetAction() != tc.want || rec.GetResult() != tc.result || rec.GetErrorKind() != tc.errorKind {
				t.Errorf("record %v: want %s %s %s", rec, tc.want, tc.result, tc.errorKind)
			}
			if rec.GetIndex() != r.index || res.Index != r.index {
				t.Errorf("record at index %d, entry %d: want the same entry", rec.GetIndex(), r.index)
			}
			if tc.check != nil {
				tc.check(t, rec)
			}
		})
	}
	chain := audit.NewChain()
	for _, rec := range auditRecords(t, r.f) {
		if err := chain.Add(rec); err != nil {
			t.Fatalf("chain: %v", err)
		}
	}
}

// TestAuditReplicasAndSnapshot: two replicas applying the same entries
// hold the same trail, and a snapshot restores it whole.
func TestAuditReplicasAndSnapshot(t *testing.T) {
	a, b := newReplica(t), newReplica(t)
	cmds := append(baseHistory(), seedCommands()...)
	for _, c := range cmds {
		c.Actor = alice
		a.apply(c)
		b.apply(c)
	}
	if ok, why := state.Equal(a.f.Store(), b.f.Store()); !ok {
		t.Fatalf("replicas differ: %s", why)
	}
	recs := auditRecords(t, a.f)
	if len(recs) < 20 {
		t.Fatalf("%d records after %d commands: too few", len(recs), len(cmds))
	}
	chain := audit.NewChain()
	for i, rec := range recs {
		if rec.GetSeq() != uint64(i+1) {
			t.Fatalf("record %d has seq %d: seqs must have no gaps", i+1, rec.GetSeq())
		}
		if err := chain.Add(rec); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := a.f.Store().Snapshot().Persist(&buf); err != nil {
		t.Fatal(err)
	}
	c := New(state.New())
	if err := c.Restore(io.NopCloser(&buf)); err != nil {
		t.Fatal(err)
	}
	if ok, why := state.Equal(a.f.Store(), c.Store()); !ok {
		t.Fatalf("restored store differs: %s", why)
	}
	// The chain goes on from the restored head.
	a.index++
	c.Apply(entry(t, a.index, withActor(alice, stamped(200, &relv1.Command_CreateApp{CreateApp: &relv1.CreateApp{App: &relv1.App{Name: "late"}}}))))
	head := c.Store().AuditHead()
	if head.GetSeq() != uint64(len(recs)+1) || !bytes.Equal(head.GetPrevHash(), recs[len(recs)-1].GetHash()) {
		t.Fatalf("head after restore %v: want seq %d linked to the restored head", head, len(recs)+1)
	}
}

// TestAuditAutomaticRollback: a step that starts an automatic rollback is
// recorded as the leader's decision, naming the rollback.
func TestAuditAutomaticRollback(t *testing.T) {
	r := newReplica(t)
	for _, c := range baseHistory() {
		r.must(c)
	}
	rollback := fuzzRollout("ro-2", "rolling_back")
	rollback.Kind, rollback.RollbackOf, rollback.Reason = "rollback", "ro-1", "canary failed"
	r.must(stamped(60, &relv1.Command_RolloutStepDelta{RolloutStepDelta: &relv1.RolloutStep{Rollout: &relv1.Rollout{Id: "ro-1", App: "web", Version: "1.0.0",
		Environment: "prod", Kind: "deploy", State: "failed", CreatedUnixNano: 7}, ExpectModifyIndex: 7,
		StartRollback: &relv1.CreateRollout{Rollout: rollback, Desired: fuzzDesired("ro-2")}}}))
	recs := auditRecords(t, r.f)
	last := recs[len(recs)-1]
	if last.GetAction() != "automatic_rollback" || last.GetActor().GetId() != "leader" || last.GetResult() != audit.Applied ||
		last.GetReason() != "canary failed" || !bytes.Contains([]byte(last.GetObject()), []byte("rollback of ro-1")) || last.GetIndex() != r.index {
		t.Fatalf("last record %v: want the leader's automatic rollback of ro-1", last)
	}
}

// TestAuditDescribeByFields: a kind without a case of its own (as kinds
// added later are) is described from its fields' names.
func TestAuditDescribeByFields(t *testing.T) {
	r := newReplica(t)
	for _, c := range baseHistory() {
		r.must(c)
	}
	rec := &relv1.AuditRecord{}
	r.f.describeByFields(rec, stamped(61, &relv1.Command_RolloutControl{RolloutControl: &relv1.RolloutControl{RolloutId: "ro-1", Action: "pause", Reason: "freeze"}}))
	if rec.GetApp() != "web" || rec.GetEnv() != "prod" || rec.GetReason() != "freeze" || rec.GetObject() != "ro-1" || rec.GetDigest() != fuzzSHA {
		t.Errorf("from a rollout_id and a reason: %v", rec)
	}
	rec = &relv1.AuditRecord{}
	r.f.describeByFields(rec, stamped(62, &relv1.Command_CreateEnvironment{CreateEnvironment: &relv1.CreateEnvironment{Environment: &relv1.Environment{Name: "qa"}}}))
	if rec.GetObject() != "qa" {
		t.Errorf("from a nested name: %v", rec)
	}
}

// TestAuditArchiveAndTrim: audit_archived sets the mark only for a record
// the replica holds with that hash (a refusal stores nothing but its own
// record); trim_audit removes the archived, old enough prefix and is
// recorded naming what it removed; the chain goes on from the anchor.
func TestAuditArchiveAndTrim(t *testing.T) {
	r := newReplica(t)
	for _, c := range baseHistory() {
		r.must(c)
	}
	recs := auditRecords(t, r.f)
	if len(recs) < 4 {
		t.Fatalf("%d records after the base history", len(recs))
	}
	mark := func() *relv1.AuditRetention {
		ret, err := r.f.Store().AuditRetention()
		if err != nil {
			t.Fatal(err)
		}
		return ret
	}
	archived := func(id string, seq uint64, hash []byte) *relv1.Command {
		return withRequestID(id, withActor(alice, stamped(120, &relv1.Command_AuditArchived{AuditArchived: &relv1.AuditArchived{Seq: seq, Hash: hash}})))
	}
	for _, tc := range []struct {
		name string
		cmd  *relv1.Command
		want string
	}{
		{"a wrong hash", archived("rq-m1", 3, recs[1].GetHash()), "record 3's hash is"},
		{"beyond the head", archived("rq-m2", 1000, recs[0].GetHash()), "beyond the trail's head"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := r.apply(tc.cmd)
			if !errors.Is(res.Err, state.ErrConflict) || !strings.Contains(res.Err.Error(), tc.want) {
				t.Fatalf("%v, want a conflict saying %q", res.Err, tc.want)
			}
			if m := mark(); m.GetArchivedSeq() != 0 || len(m.GetArchivedHash()) != 0 {
				t.Fatalf("a refused mark stored %v", m)
			}
			last := auditRecords(t, r.f)
			if rec := last[len(last)-1]; rec.GetAction() != "audit_archived" || rec.GetResult() != audit.Refused || rec.GetActor().GetId() != alice.GetId() {
				t.Fatalf("last record %v: want alice's refused audit_archived", rec)
			}
		})
	}

	// Mark records 1-3, then a pass whose cutoff lets all of them go.
	r.must(archived("rq-m3", 3, recs[2].GetHash()))
	all := auditRecords(t, r.f)
	if rec := all[len(all)-1]; rec.GetAction() != "audit_archived" || rec.GetResult() != audit.Applied || !strings.Contains(rec.GetObject(), "audit records 1-3 archived") {
		t.Fatalf("mark's record %v: want it applied, naming records 1-3", rec)
	}
	if m := mark(); m.GetArchivedSeq() != 3 || !bytes.Equal(m.GetArchivedHash(), recs[2].GetHash()) {
		t.Fatalf("mark %v, want record 3", m)
	}
	r.must(stamped(200, &relv1.Command_TrimAudit{TrimAudit: &relv1.TrimAudit{CutoffUnixNano: 199, MaxRecords: 100}}))
	kept := auditRecords(t, r.f)
	if kept[0].GetSeq() != 4 || !bytes.Equal(kept[0].GetPrevHash(), recs[2].GetHash()) {
		t.Fatalf("first kept %v: want record 4, chained to record 3", kept[0])
	}
	rec := kept[len(kept)-1]
	if rec.GetAction() != "trim_audit" || rec.GetActor().GetId() != "leader" || rec.GetReason() != "retention" || !strings.Contains(rec.GetObject(), "3 audit records removed (1-3") {
		t.Fatalf("pass's record %v: want the leader's retention naming records 1-3", rec)
	}
	if m := mark(); m.GetTrimmedSeq() != 3 || !bytes.Equal(m.GetTrimmedHash(), recs[2].GetHash()) {
		t.Fatalf("anchor %v, want record 3", m)
	}
	c := audit.NewChainAfter(3, recs[2].GetHash())
	for _, k := range kept {
		if err := c.Add(k); err != nil {
			t.Fatal(err)
		}
	}
	// A lower mark is a no-op, not an error; the anchor's own mark too.
	r.must(archived("rq-m4", 2, recs[1].GetHash()))
	r.must(archived("rq-m5", 3, recs[2].GetHash()))
	if m := mark(); m.GetArchivedSeq() != 3 {
		t.Fatalf("mark went to %d", m.GetArchivedSeq())
	}
}
