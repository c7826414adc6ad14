package cli

import (
	"bufio"
	"bytes"
	"encoding/json"
	"hash/crc64"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protodelim"

	"github.com/relhq/rel/internal/audit"
	"github.com/relhq/rel/internal/auth"
	"github.com/relhq/rel/internal/pki"
	"github.com/relhq/rel/internal/server"
	"github.com/relhq/rel/internal/testcluster"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// TestAuditTamperedSnapshot is the acceptance test of the audit trail: a
// record changed in a copied data dir's snapshot is found by relctl audit
// verify, which names its seq; a chain rewritten consistently from that
// record on passes the chain check but not a checkpoint made before.
func TestAuditTamperedSnapshot(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{})
	n := c.Nodes[0]
	dir := t.TempDir()
	adminCert, adminKey := c.PKI.Files(t, pki.Leaf{Identity: testcluster.ClientID("root", auth.Admin)})
	viewerCert, viewerKey := c.PKI.Files(t, pki.Leaf{Identity: testcluster.ClientID("eve", auth.Viewer)})
	env := func(cert, key string) map[string]string {
		return map[string]string{envAddr: n.GRPCAddr(), envCAFile: c.PKI.CAFile, envCertFile: cert, envKeyFile: key}
	}
	admin, viewer := env(adminCert, adminKey), env(viewerCert, viewerKey)

	expectCLI(t, admin, exitOK, "", "app", "create", "web")
	expectCLI(t, admin, exitOK, "", "env", "create", "prod", "--selector", "env=prod")
	expectCLI(t, admin, exitRefused, "already exists", "app", "create", "web")
	expectCLI(t, admin, exitRefused, "InvalidArgument", "app", "create", "Web_1")
	// Refused by authorization: recorded by the server's batcher, a
	// moment later.
	expectCLI(t, viewer, exitRefused, "PermissionDenied", "app", "create", "api")
	expectCLI(t, viewer, exitRefused, "PermissionDenied", "app", "create", "db")
	var recs struct{ Records []auditRecordJSON }
	testcluster.WaitFor(t, 30*time.Second, func() (bool, string) {
		res := expectCLI(t, admin, exitOK, "", "-o", "json", "audit", "--actor", "eve")
		recs.Records = nil
		if err := json.Unmarshal([]byte(res.stdout), &recs); err != nil {
			t.Fatal(err)
		}
		return len(recs.Records) == 2, "eve's two refusals in the trail: " + res.stdout
	})
	for _, r := range recs.Records {
		if r.Action != "CreateApp" || r.Result != audit.Refused || r.ErrorKind != "PermissionDenied" || r.Actor.Kind != "client" {
			t.Errorf("eve's record %+v: want a refused CreateApp", r)
		}
	}
	res := expectCLI(t, admin, exitOK, "SEQ", "audit")
	t.Logf("relctl audit:\n%s", res.stdout)
	for _, want := range []string{"create_app", "client root", "already_exists", "create_environment", "refused InvalidArgument: app name"} {
		if !strings.Contains(res.stdout, want) {
			t.Errorf("audit table lacks %q:\n%s", want, res.stdout)
		}
	}
	res = expectCLI(t, admin, exitOK, "", "-o", "json", "audit")
	var all struct{ Records []auditRecordJSON }
	if err := json.Unmarshal([]byte(res.stdout), &all); err != nil {
		t.Fatal(err)
	}
	head := len(all.Records)
	if head < 5 {
		t.Fatalf("%d records: want at least 5", head)
	}
	expectCLI(t, admin, exitOK, "records, chain intact (head seq", "audit", "verify")

	cpFile := filepath.Join(dir, "cp.json")
	res = expectCLI(t, admin, exitOK, `"signature"`, "audit", "checkpoint")
	if err := os.WriteFile(cpFile, []byte(res.stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	expectCLI(t, admin, exitOK, "matches the checkpoint at seq", "audit", "verify", "--checkpoint", cpFile, "--public-key", c.PKI.AuditPubFile)
	expectCLI(t, admin, exitUsage, "go together", "audit", "verify", "--checkpoint", cpFile)
	expectCLI(t, viewer, exitOK, "chain intact", "audit", "verify") // viewers may read the trail

	if err := n.Server().Raft().Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	c.Stop()
	cfg := n.Config()

	// restartOn starts a server on a copy of the data dir that edit
	// changed, and returns the env to reach it.
	restartOn := func(t *testing.T, edit func(recs []*relv1.SnapshotRecord)) *server.Server {
		t.Helper()
		copyDir := filepath.Join(t.TempDir(), "data")
		copyTree(t, cfg.DataDir, copyDir)
		rewriteSnapshot(t, copyDir, edit)
		rc := cfg
		rc.DataDir, rc.Bootstrap, rc.Join = copyDir, false, nil
		srv, err := server.New(rc)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = srv.Shutdown() })
		testcluster.WaitFor(t, 15*time.Second, func() (bool, string) {
			return srv.IsLeader(), "the server on the copy leads"
		})
		return srv
	}
	auditOf := func(recs []*relv1.SnapshotRecord, seq uint64) *relv1.AuditRecord {
		for _, r := range recs {
			if a := r.GetAudit(); a.GetSeq() == seq {
				return a
			}
		}
		t.Fatalf("no audit record %d in the snapshot", seq)
		return nil
	}

	t.Run("a record edited", func(t *testing.T) {
		restartOn(t, func(recs []*relv1.SnapshotRecord) {
			auditOf(recs, 2).Reason = "nothing happened here"
		})
		expectCLI(t, admin, exitRefused, "record 2: hash does not match its contents", "audit", "verify")
	})
	t.Run("an archive of a broken chain", func(t *testing.T) {
		srv := restartOn(t, func(recs []*relv1.SnapshotRecord) {
			auditOf(recs, 2).Reason = "nothing happened here"
		})
		outDir := t.TempDir()
		out := filepath.Join(outDir, "archive.jsonl")
		expectCLI(t, admin, exitRefused, "the trail does not verify, nothing archived: record 2: hash does not match its contents",
			"audit", "archive", "--out", out, "--public-key", c.PKI.AuditPubFile)
		if left, _ := os.ReadDir(outDir); len(left) != 0 {
			t.Fatalf("files left after a refused archive: %v", left)
		}
		if ret, _ := srv.Store().AuditRetention(); ret.GetArchivedSeq() != 0 {
			t.Fatalf("a refused archive marked records up to %d", ret.GetArchivedSeq())
		}
	})
	t.Run("a record edited and rehashed", func(t *testing.T) {
		restartOn(t, func(recs []*relv1.SnapshotRecord) {
			r := auditOf(recs, 3)
			r.Actor = &relv1.Actor{Kind: "client", Id: "somebody-else"}
			r.Hash = audit.Hash(r)
		})
		expectCLI(t, admin, exitRefused, "record 4: prev_hash is not record 3's hash", "audit", "verify")
	})
	t.Run("the chain rewritten after a checkpoint", func(t *testing.T) {
		restartOn(t, func(recs []*relv1.SnapshotRecord) {
			auditOf(recs, 2).Reason = "nothing happened here"
			// Rehash every record from 2 on, in seq order.
			var chain []*relv1.AuditRecord
			for _, r := range recs {
				if a := r.GetAudit(); a != nil {
					chain = append(chain, a)
				}
			}
			sort.Slice(chain, func(i, j int) bool { return chain[i].GetSeq() < chain[j].GetSeq() })
			prev := audit.ZeroHash
			for _, a := range chain {
				a.PrevHash = prev
				a.Hash = audit.Hash(a)
				prev = a.Hash
			}
		})
		expectCLI(t, admin, exitOK, "chain intact", "audit", "verify")
		expectCLI(t, admin, exitRefused, "the trail up to record", "audit", "verify", "--checkpoint", cpFile, "--public-key", c.PKI.AuditPubFile)
	})
	t.Run("a checkpoint altered", func(t *testing.T) {
		var cp checkpointJSON
		b, _ := os.ReadFile(cpFile)
		if err := json.Unmarshal(b, &cp); err != nil {
			t.Fatal(err)
		}
		cp.Seq--
		b, _ = json.Marshal(cp)
		bad := filepath.Join(t.TempDir(), "bad.json")
		if err := os.WriteFile(bad, b, 0o600); err != nil {
			t.Fatal(err)
		}
		// No server needed: the signature is checked first.
		expectCLI(t, admin, exitRefused, "signature is not valid", "audit", "verify", "--checkpoint", bad, "--public-key", c.PKI.AuditPubFile)
	})
}

// copyTree copies a data dir (regular files and dirs, modes kept).
func copyTree(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.Walk(from, func(path string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, path)
		dst := filepath.Join(to, rel)
		if fi.IsDir() {
			return os.MkdirAll(dst, fi.Mode().Perm())
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, fi.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
}

// rewriteSnapshot decodes the newest raft snapshot of a data dir, lets
// edit change its records, and writes it back with the size and CRC that
// raft's file snapshot store checks, as someone with write access to the
// data dir could.
func rewriteSnapshot(t *testing.T, dataDir string, edit func(recs []*relv1.SnapshotRecord)) {
	t.Helper()
	snapDir := filepath.Join(dataDir, "raft", "snapshots")
	entries, err := os.ReadDir(snapDir)
	if err != nil || len(entries) == 0 {
		t.Fatalf("no snapshots in %s: %v", snapDir, err)
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	dir := filepath.Join(snapDir, names[len(names)-1])
	state, err := os.ReadFile(filepath.Join(dir, "state.bin"))
	if err != nil {
		t.Fatal(err)
	}
	var recs []*relv1.SnapshotRecord
	br := bufio.NewReader(bytes.NewReader(state))
	for {
		rec := &relv1.SnapshotRecord{}
		if err := protodelim.UnmarshalFrom(br, rec); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, rec)
	}
	edit(recs)
	var buf bytes.Buffer
	for _, rec := range recs {
		if _, err := protodelim.MarshalTo(&buf, rec); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "state.bin"), buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	metaPath := filepath.Join(dir, "meta.json")
	mb, err := os.ReadFile(metaPath)
	if err != nil {
		t.Fatal(err)
	}
	var meta map[string]any
	if err := json.Unmarshal(mb, &meta); err != nil {
		t.Fatal(err)
	}
	h := crc64.New(crc64.MakeTable(crc64.ECMA))
	h.Write(buf.Bytes())
	meta["CRC"], meta["Size"] = h.Sum(nil), buf.Len()
	if mb, err = json.Marshal(meta); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(metaPath, mb, 0o600); err != nil {
		t.Fatal(err)
	}
}

// expectCLI runs relctl with env e and fails t unless it exits with code
// and its output holds want.
func expectCLI(t *testing.T, e map[string]string, code int, want string, args ...string) result {
	t.Helper()
	res := runCLI(t, e, "", args...)
	if res.code != code {
		t.Fatalf("relctl %s: exit %d, want %d (stdout %q, stderr %q)", strings.Join(args, " "), res.code, code, res.stdout, res.stderr)
	}
	if out := res.stdout + res.stderr; !strings.Contains(out, want) {
		t.Fatalf("relctl %s: output lacks %q:\n%s", strings.Join(args, " "), want, out)
	}
	return res
}
