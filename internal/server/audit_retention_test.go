package server_test

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/relhq/rel/internal/audit"
	"github.com/relhq/rel/internal/auth"
	"github.com/relhq/rel/internal/server"
	"github.com/relhq/rel/internal/state"
	"github.com/relhq/rel/internal/testcluster"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// TestAuditArchiveAndRetention: on a 3-server cluster, a mark of the
// archived records (through a follower, by an operator) lets the leader's
// retention pass remove them; every replica holds the same anchor; the
// kept chain starts at the anchor, as ListAudit says; a mark with a wrong
// hash, beyond the head or by a viewer is refused and moves nothing; a
// server that joins later from a snapshot holds the same anchor and mark.
func TestAuditArchiveAndRetention(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{Configure: func(i int, cfg *server.Config) {
		cfg.AuditRetention = time.Millisecond
		cfg.RetentionInterval = 100 * time.Millisecond
		cfg.SnapshotThreshold = 64
		cfg.TrailingLogs = 16
	}})
	leader := c.WaitLeader()
	follower := c.Followers()[0]
	ctl := dial(t, leader)
	for i := range 5 {
		if _, err := ctl.CreateApp(ctxT(t), &relv1.CreateAppRequest{Name: fmt.Sprintf("app-%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	al := relv1.NewAuditServiceClient(leader.Admin())
	recs := listAudit(t, al, &relv1.ListAuditRequest{Read: &relv1.ReadOptions{Consistent: true}})
	if len(recs) < 5 {
		t.Fatalf("%d records after 5 apps", len(recs))
	}
	head := recs[len(recs)-1]

	ops := relv1.NewAuditServiceClient(idConn(t, c, follower.GRPCAddr(), testcluster.ClientID("ops", auth.Operator)))
	viewer := relv1.NewAuditServiceClient(idConn(t, c, follower.GRPCAddr(), testcluster.ClientID("eve", auth.Viewer)))
	_, err := ops.MarkAuditArchived(ctxT(t), &relv1.MarkAuditArchivedRequest{Seq: head.GetSeq(), Hash: recs[0].GetHash()})
	wantCode(t, "a mark with another record's hash", err, codes.FailedPrecondition, fmt.Sprintf("record %d's hash is", head.GetSeq()), "audit verify --archive")
	_, err = ops.MarkAuditArchived(ctxT(t), &relv1.MarkAuditArchivedRequest{Seq: 100_000, Hash: head.GetHash()})
	wantCode(t, "a mark beyond the head", err, codes.FailedPrecondition, "beyond the trail's head")
	_, err = ops.MarkAuditArchived(ctxT(t), &relv1.MarkAuditArchivedRequest{Seq: 0, Hash: head.GetHash()})
	wantCode(t, "a mark of record 0", err, codes.InvalidArgument, "record 0")
	_, err = viewer.MarkAuditArchived(ctxT(t), &relv1.MarkAuditArchivedRequest{Seq: head.GetSeq(), Hash: head.GetHash()})
	wantCode(t, "a viewer's mark", err, codes.PermissionDenied)
	for _, n := range c.Running() {
		if ret, _ := n.Server().Store().AuditRetention(); ret.GetArchivedSeq() != 0 || ret.GetTrimmedSeq() != 0 {
			t.Fatalf("%s: a refused mark moved retention to %v", n.ID, ret)
		}
	}

	resp, err := ops.MarkAuditArchived(ctxT(t), &relv1.MarkAuditArchivedRequest{Seq: head.GetSeq(), Hash: head.GetHash()})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetArchivedSeq() != head.GetSeq() {
		t.Fatalf("mark answered %v, want %d", resp, head.GetSeq())
	}
	// Every replica removes records 1..head and anchors the chain there.
	for _, n := range c.Running() {
		st := n.Server().Store()
		testcluster.WaitFor(t, 15*time.Second, func() (bool, string) {
			ret, _ := st.AuditRetention()
			return ret.GetTrimmedSeq() == head.GetSeq() && bytes.Equal(ret.GetTrimmedHash(), head.GetHash()) &&
					ret.GetArchivedSeq() == head.GetSeq() && bytes.Equal(ret.GetArchivedHash(), head.GetHash()),
				fmt.Sprintf("%s: retention %v, want records 1-%d archived and removed", n.ID, ret, head.GetSeq())
		})
	}
	if got := metricSum(t, c, "rel_retention_audit_removed_total"); got != float64(head.GetSeq()) {
		t.Fatalf("rel_retention_audit_removed_total %v over the cluster, want %d", got, head.GetSeq())
	}

	// ListAudit on a follower: the anchor and the mark, and the kept
	// chain from the anchor on, with the pass's own record.
	fl := relv1.NewAuditServiceClient(follower.Admin())
	page, err := fl.ListAudit(ctxT(t), &relv1.ListAuditRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if page.GetTrimmedSeq() != head.GetSeq() || !bytes.Equal(page.GetTrimmedHash(), head.GetHash()) ||
		page.GetArchivedSeq() != head.GetSeq() || !bytes.Equal(page.GetArchivedHash(), head.GetHash()) {
		t.Fatalf("ListAudit says anchor %d %x, mark %d: want record %d for both", page.GetTrimmedSeq(), page.GetTrimmedHash(), page.GetArchivedSeq(), head.GetSeq())
	}
	kept := listAudit(t, fl, &relv1.ListAuditRequest{})
	chain := audit.NewChainAfter(page.GetTrimmedSeq(), page.GetTrimmedHash())
	trimmed := false
	for _, r := range kept {
		if err := chain.Add(r); err != nil {
			t.Fatalf("kept chain: %v", err)
		}
		trimmed = trimmed || (r.GetAction() == "trim_audit" && r.GetReason() == "retention")
	}
	if !trimmed {
		t.Errorf("no record of the retention pass in %v", kept)
	}
	// A checkpoint of the head after the trim verifies, and the kept
	// chain ends at it.
	cp, err := al.AuditCheckpoint(ctxT(t), &relv1.AuditCheckpointRequest{})
	if err != nil || cp.GetSeq() <= head.GetSeq() {
		t.Fatalf("checkpoint after the trim: %v, %v", cp, err)
	}

	// A server that can only catch up from a snapshot holds the same.
	if err := leader.Server().Raft().Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		if _, err := ctl.CreateApp(ctxT(t), &relv1.CreateAppRequest{Name: fmt.Sprintf("late-%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := leader.Server().Raft().Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	late := c.AddNode()
	c.WaitMembers(4)
	testcluster.WaitFor(t, 20*time.Second, func() (bool, string) {
		ok, why := state.Equal(leader.Server().Store(), late.Server().Store())
		return ok, "the new server's replica: " + why
	})
	if ret, _ := late.Server().Store().AuditRetention(); ret.GetTrimmedSeq() != head.GetSeq() || ret.GetArchivedSeq() != head.GetSeq() {
		t.Fatalf("new server's retention %v, want records 1-%d", ret, head.GetSeq())
	}
}

// TestAuditRetentionOff: --audit-retention 0 (Config -1) keeps archived
// records; the same wake with a retention removes them. The test runs
// the leader's wake itself.
func TestAuditRetentionOff(t *testing.T) {
	for _, tc := range []struct {
		name      string
		retention time.Duration
		removed   bool
	}{
		{"off", -1, false},
		{"on", time.Millisecond, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := testcluster.New(t, 1, testcluster.Options{Configure: func(i int, cfg *server.Config) {
				cfg.AuditRetention = tc.retention
				cfg.RetentionInterval = time.Hour
			}})
			n := c.WaitLeader()
			if _, err := dial(t, n).CreateApp(ctxT(t), &relv1.CreateAppRequest{Name: "web"}); err != nil {
				t.Fatal(err)
			}
			st := n.Server().Store()
			seq, hash, err := st.AuditHeadSeq()
			if err != nil || seq == 0 {
				t.Fatalf("head %d, %v", seq, err)
			}
			if _, err := relv1.NewAuditServiceClient(n.Admin()).MarkAuditArchived(ctxT(t), &relv1.MarkAuditArchivedRequest{Seq: seq, Hash: hash}); err != nil {
				t.Fatal(err)
			}
			time.Sleep(2 * time.Millisecond) // past the 1ms retention, by the clock the pass reads
			n.Server().RetentionWake(ctxT(t))
			ret, _ := st.AuditRetention()
			if got := ret.GetTrimmedSeq() == seq; got != tc.removed {
				t.Fatalf("retention %v after a wake: removed %v, want %v", ret, got, tc.removed)
			}
		})
	}
}
