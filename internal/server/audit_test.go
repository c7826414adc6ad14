package server_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/relhq/rel/internal/audit"
	"github.com/relhq/rel/internal/auth"
	"github.com/relhq/rel/internal/server"
	"github.com/relhq/rel/internal/testcluster"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

func listAudit(t *testing.T, cl relv1.AuditServiceClient, req *relv1.ListAuditRequest) []*relv1.AuditRecord {
	t.Helper()
	var out []*relv1.AuditRecord
	for {
		resp, err := cl.ListAudit(ctxT(t), req)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, resp.GetRecords()...)
		if resp.GetNextPageToken() == "" {
			return out
		}
		req.PageToken = resp.GetNextPageToken()
	}
}

// TestAuditRefusalsOnTheWire: on a 3-server cluster, a request refused by
// a follower's authorization leaves a record naming the caller; a request
// a follower forwards to the leader, refused there, leaves exactly one;
// the trail pages and filters, and a checkpoint verifies with audit.pub.
func TestAuditRefusalsOnTheWire(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{})
	leader := c.WaitLeader()
	follower := c.Followers()[0]
	admin := leader.Admin()
	viewerSecret, viewerAcc := createToken(t, admin, "eve", []string{"viewer"}, nil, 0)
	ctl := relv1.NewControlServiceClient(admin)
	if _, err := ctl.CreateApp(withRequestID(t, "rq-audit-app"), &relv1.CreateAppRequest{Name: "web"}); err != nil {
		t.Fatal(err)
	}

	// The follower knows eve's token once its replica has the entry.
	c.WaitConverged()
	// Refused by the follower's interceptor.
	eve := relv1.NewControlServiceClient(tokenConn(t, c, follower.GRPCAddr(), viewerSecret))
	_, err := eve.StartRollout(withRequestID(t, "rq-audit-eve"), &relv1.StartRolloutRequest{App: "web", Version: "1.0.0", Environment: "prod"})
	wantCode(t, "viewer starts a rollout", err, codes.PermissionDenied)
	// Refused by the leader, forwarded by the follower: the release does
	// not exist.
	fctl := relv1.NewControlServiceClient(follower.Admin())
	_, err = fctl.StartRollout(withRequestID(t, "rq-audit-fwd"), &relv1.StartRolloutRequest{App: "web", Version: "9.9.9", Environment: "prod"})
	if err == nil {
		t.Fatal("a rollout of a release that does not exist started")
	}

	al := relv1.NewAuditServiceClient(admin)
	var recs []*relv1.AuditRecord
	testcluster.WaitFor(t, 30*time.Second, func() (bool, string) {
		recs = listAudit(t, al, &relv1.ListAuditRequest{Read: &relv1.ReadOptions{Consistent: true}})
		n := 0
		for _, r := range recs {
			if r.GetRequestId() == "rq-audit-eve" || r.GetRequestId() == "rq-audit-fwd" {
				n++
			}
		}
		return n >= 2, "both refusals recorded"
	})
	// A duplicate would have been queued by the follower or the leader
	// before a later refusal on each: once those are in, so is it.
	for i, n := range []*testcluster.Node{follower, leader} {
		cl := relv1.NewControlServiceClient(tokenConn(t, c, n.GRPCAddr(), viewerSecret))
		_, err := cl.CreateApp(withRequestID(t, fmt.Sprintf("rq-audit-mark-%d", i)), &relv1.CreateAppRequest{Name: "mark"})
		wantCode(t, "viewer creates an app", err, codes.PermissionDenied)
	}
	testcluster.WaitFor(t, 30*time.Second, func() (bool, string) {
		recs = listAudit(t, al, &relv1.ListAuditRequest{Read: &relv1.ReadOptions{Consistent: true}})
		n := 0
		for _, r := range recs {
			if strings.HasPrefix(r.GetRequestId(), "rq-audit-mark-") {
				n++
			}
		}
		return n == 2, "the later refusals recorded"
	})
	byID := map[string][]*relv1.AuditRecord{}
	for _, r := range recs {
		byID[r.GetRequestId()] = append(byID[r.GetRequestId()], r)
	}
	if got := byID["rq-audit-eve"]; len(got) != 1 {
		t.Fatalf("eve's refusal: %d records, want 1: %v", len(got), got)
	} else if r := got[0]; r.GetActor().GetId() != viewerAcc || r.GetActor().GetName() != "eve" || r.GetResult() != audit.Refused ||
		r.GetErrorKind() != "PermissionDenied" || r.GetAction() != "StartRollout" || r.GetApp() != "web" || r.GetEnv() != "prod" ||
		!strings.Contains(r.GetObject(), "server "+follower.ID) {
		t.Errorf("eve's refusal recorded as %v", r)
	}
	if got := byID["rq-audit-fwd"]; len(got) != 1 {
		t.Fatalf("the forwarded refusal: %d records, want exactly 1: %v", len(got), got)
	} else if r := got[0]; r.GetResult() != audit.Refused || r.GetActor().GetKind() != auth.KindClient {
		t.Errorf("the forwarded refusal recorded as %v", r)
	}
	if got := byID["rq-audit-app"]; len(got) != 1 || got[0].GetResult() != audit.Applied || got[0].GetAction() != "create_app" {
		t.Errorf("the app's creation recorded as %v", got)
	}

	// Filters and pages: one record a page, eve's only (her three).
	paged := listAudit(t, al, &relv1.ListAuditRequest{Actor: viewerAcc, PageSize: 1})
	if len(paged) != 3 || paged[0].GetRequestId() != "rq-audit-eve" || paged[2].GetRequestId() != "rq-audit-mark-1" {
		t.Errorf("eve's records, a page at a time: %v", paged)
	}
	all := listAudit(t, al, &relv1.ListAuditRequest{PageSize: 1})
	if len(all) != len(recs) {
		t.Errorf("%d records a page at a time, %d at once", len(all), len(recs))
	}
	chain := audit.NewChain()
	for _, r := range all {
		if err := chain.Add(r); err != nil {
			t.Fatal(err)
		}
	}
	if got := listAudit(t, al, &relv1.ListAuditRequest{App: "web", Env: "prod"}); len(got) < 2 {
		t.Errorf("records of web in prod: %v", got)
	}
	if got := listAudit(t, al, &relv1.ListAuditRequest{SinceSeq: chain.Seq}); len(got) != 1 || got[0].GetSeq() != chain.Seq {
		t.Errorf("since the head: %v", got)
	}
	_, err = al.ListAudit(ctxT(t), &relv1.ListAuditRequest{PageToken: "rollouts.AAAA"})
	wantCode(t, "a token of another list", err, codes.InvalidArgument, "page token")

	// A checkpoint of the head, signed with the cluster's audit key.
	cp, err := al.AuditCheckpoint(ctxT(t), &relv1.AuditCheckpointRequest{})
	if err != nil {
		t.Fatal(err)
	}
	pub, err := audit.ReadPublicKeyFile(c.PKI.AuditPubFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := audit.VerifyCheckpoint(cp, pub); err != nil {
		t.Fatal(err)
	}
	if cp.GetSeq() < chain.Seq || cp.GetCluster() == "" {
		t.Errorf("checkpoint %v: want the head (at least %d) and the cluster", cp, chain.Seq)
	}

	// No credentials: refused, and recorded as anonymous? No: reads are
	// not recorded; a write without credentials is.
	anon := relv1.NewControlServiceClient(c.As(leader.GRPCAddr(), nil))
	_, err = anon.CreateApp(ctxT(t), &relv1.CreateAppRequest{Name: "ghost"})
	wantCode(t, "no credentials", err, codes.Unauthenticated)
	testcluster.WaitFor(t, 30*time.Second, func() (bool, string) {
		for _, r := range listAudit(t, al, &relv1.ListAuditRequest{App: "ghost"}) {
			if r.GetActor().GetKind() == "anonymous" && r.GetErrorKind() == "Unauthenticated" {
				return true, ""
			}
		}
		return false, "the anonymous refusal recorded"
	})
}

// TestAuditKeyPermissions: a server refuses to start with an audit key
// group or others may read, saying how to fix it.
func TestAuditKeyPermissions(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{})
	cfg := c.Nodes[0].Config()
	c.Stop()
	key := filepath.Join(t.TempDir(), "audit.key")
	b, err := os.ReadFile(c.PKI.AuditKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg.AuditKeyFile, cfg.Bootstrap = key, false
	srv, err := server.New(cfg)
	if err == nil {
		_ = srv.Shutdown()
		t.Fatal("a server started with a world-readable audit key")
	}
	if !strings.Contains(err.Error(), "--audit-key-file") || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("error %q: want it to name --audit-key-file and the fix", err)
	}
}
