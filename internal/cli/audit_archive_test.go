package cli

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/relhq/rel/internal/audit"
	"github.com/relhq/rel/internal/auth"
	"github.com/relhq/rel/internal/pki"
	"github.com/relhq/rel/internal/server"
	"github.com/relhq/rel/internal/testcluster"
)

// TestAuditArchiveAndVerify: on a 3-server cluster with a short
// --audit-retention, 'relctl audit archive' writes the records not
// archived yet and marks them; retention removes them on every server;
// 'audit verify' passes on the trimmed chain, saying what was removed,
// and with the archives (in any order) too; an archive missing, a
// checkpoint older than the first record kept without its archive, and a
// tampered archive are named; --out is never overwritten without --force.
func TestAuditArchiveAndVerify(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{Configure: func(i int, cfg *server.Config) {
		cfg.AuditRetention = time.Millisecond
		cfg.RetentionInterval = 100 * time.Millisecond
	}})
	dir := t.TempDir()
	opsCert, opsKey := c.PKI.Files(t, pki.Leaf{Identity: testcluster.ClientID("ops", auth.Operator)})
	viewerCert, viewerKey := c.PKI.Files(t, pki.Leaf{Identity: testcluster.ClientID("eve", auth.Viewer)})
	env := func(cert, key string) map[string]string {
		return map[string]string{envAddr: c.Followers()[0].GRPCAddr(), envCAFile: c.PKI.CAFile, envCertFile: cert, envKeyFile: key}
	}
	ops, viewer := env(opsCert, opsKey), env(viewerCert, viewerKey)
	pub := c.PKI.AuditPubFile
	// trimmedTo waits until every server removed records up to seq.
	trimmedTo := func(t *testing.T, seq uint64) {
		t.Helper()
		for _, n := range c.Running() {
			testcluster.WaitFor(t, 15*time.Second, func() (bool, string) {
				ret, _ := n.Server().Store().AuditRetention()
				return ret.GetTrimmedSeq() == seq && ret.GetArchivedSeq() == seq, fmt.Sprintf("%s: retention %v, want records 1-%d removed", n.ID, ret, seq)
			})
		}
	}
	for i := range 4 {
		expectCLI(t, ops, exitOK, "", "app", "create", fmt.Sprintf("app-%d", i))
	}
	cpOld := filepath.Join(dir, "cp-old.json")
	res := expectCLI(t, ops, exitOK, `"signature"`, "audit", "checkpoint")
	if err := os.WriteFile(cpOld, []byte(res.stdout), 0o600); err != nil {
		t.Fatal(err)
	}

	// Bad input: no --out; an --out that exists (kept as it was, nothing
	// marked); a viewer may not mark.
	expectCLI(t, ops, exitUsage, "--out is required", "audit", "archive")
	taken := filepath.Join(dir, "taken.jsonl")
	if err := os.WriteFile(taken, []byte("mine\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	expectCLI(t, ops, exitUsage, "already exists: give another --out, or --force", "audit", "archive", "--out", taken)
	if b, _ := os.ReadFile(taken); string(b) != "mine\n" {
		t.Fatalf("an existing --out was changed: %q", b)
	}
	// A viewer may read the trail and write the file, not mark it.
	expectCLI(t, viewer, exitRefused, "is written (records 1-", "audit", "archive", "--out", filepath.Join(dir, "eve.jsonl"))
	if ret, _ := c.WaitLeader().Server().Store().AuditRetention(); ret.GetArchivedSeq() != 0 {
		t.Fatalf("marked %d after refused archives", ret.GetArchivedSeq())
	}

	a1 := filepath.Join(dir, "a1.jsonl")
	res = expectCLI(t, ops, exitOK, "records up to seq", "audit", "archive", "--out", a1, "--public-key", pub)
	var first, last uint64
	if _, err := fmt.Sscanf(res.stdout[strings.Index(res.stdout, "(seq "):], "(seq %d-%d)", &first, &last); err != nil || first != 1 || last < 4 {
		t.Fatalf("archive output %q: want records from 1 (%v)", res.stdout, err)
	}
	if !strings.Contains(res.stdout, fmt.Sprintf("records up to seq %d may now be removed after --audit-retention", last)) ||
		!strings.Contains(res.stdout, "signature checked") {
		t.Fatalf("archive output %q", res.stdout)
	}
	checkArchiveFile(t, a1, first, last)
	trimmedTo(t, last)
	res = expectCLI(t, ops, exitOK, "chain intact", "audit", "verify")
	if want := fmt.Sprintf("records 1-%d were archived (up to %d) and removed from the cluster", last, last); !strings.Contains(res.stdout, want) ||
		!strings.Contains(res.stdout, "--archive") {
		t.Fatalf("verify on the trimmed chain: %q, want %q and how to check them", res.stdout, want)
	}
	expectCLI(t, ops, exitOK, "1 archives hold records 1-", "audit", "verify", "--archive", a1, "--public-key", pub)

	// More records, a second archive from where the first ended.
	expectCLI(t, ops, exitOK, "", "app", "create", "late")
	a2 := filepath.Join(dir, "a2.jsonl")
	res = expectCLI(t, ops, exitOK, fmt.Sprintf("(seq %d-", last+1), "audit", "archive", "--out", a2)
	if !strings.Contains(res.stdout, "signature not checked") {
		t.Errorf("archive without --public-key: %q, want it to say the signature was not checked", res.stdout)
	}
	var last2 uint64
	fmt.Sscanf(res.stdout[strings.Index(res.stdout, "records up to seq "):], "records up to seq %d", &last2)
	checkArchiveFile(t, a2, last+1, last2)
	trimmedTo(t, last2)

	// Both archives, in any order: they join each other and the trail.
	res = expectCLI(t, ops, exitOK, fmt.Sprintf("2 archives hold records 1-%d, chain intact", last2), "audit", "verify", "--archive", a2, "--archive", a1, "--public-key", pub)
	if !strings.Contains(res.stdout, "signatures checked") {
		t.Errorf("verify --archive --public-key: %q", res.stdout)
	}
	expectCLI(t, viewer, exitOK, "2 archives", "audit", "verify", "--archive", a1, "--archive", a2)
	expectCLI(t, ops, exitRefused, fmt.Sprintf("records 1-%d are in none of the archives given", last), "audit", "verify", "--archive", a2)
	expectCLI(t, ops, exitRefused, fmt.Sprintf("records %d-%d are in none of them", last+1, last2), "audit", "verify", "--archive", a1)
	// A checkpoint older than the first record kept: only the archives
	// can prove it.
	expectCLI(t, ops, exitRefused, "was archived and removed from the cluster", "audit", "verify", "--checkpoint", cpOld, "--public-key", pub)
	expectCLI(t, ops, exitOK, "matches the checkpoint at seq", "audit", "verify", "--checkpoint", cpOld, "--public-key", pub, "--archive", a1, "--archive", a2)

	// A record edited in an archive is named with its file.
	tampered := filepath.Join(dir, "tampered.jsonl")
	editArchive(t, a1, tampered, 3, func(l *archiveLine) { l.Record.Reason = "nothing happened here" })
	expectCLI(t, ops, exitRefused, tampered+": record 3: hash does not match its contents", "audit", "verify", "--archive", tampered, "--archive", a2)
	// Rewritten consistently from record 3 on: its checkpoint no longer
	// matches.
	rewritten := filepath.Join(dir, "rewritten.jsonl")
	rewriteArchive(t, a1, rewritten, 3, false)
	expectCLI(t, ops, exitRefused, rewritten+fmt.Sprintf(": record %d: its hash is not the archive's checkpoint's", last), "audit", "verify", "--archive", rewritten, "--archive", a2)
	// ... and its checkpoint's hash too: the signature catches it, and
	// without --public-key the join to the next archive does.
	rewriteArchive(t, a1, rewritten, 3, true)
	expectCLI(t, ops, exitRefused, "signature is not valid", "audit", "verify", "--archive", rewritten, "--archive", a2, "--public-key", pub)
	expectCLI(t, ops, exitRefused, fmt.Sprintf("%s: record %d: prev_hash is not record %d's hash in %s", a2, last+1, last, rewritten), "audit", "verify", "--archive", rewritten, "--archive", a2)
	// ... and alone, it does not join the records the cluster keeps.
	rewriteArchive(t, a2, rewritten, last2, true)
	expectCLI(t, ops, exitRefused, fmt.Sprintf("record %d: its hash in the archives is not the one the cluster's first kept record chains to", last2), "audit", "verify", "--archive", a1, "--archive", rewritten)
	// --force replaces a file.
	expectCLI(t, ops, exitOK, "", "audit", "archive", "--out", taken, "--force", "--from-first-kept")
	if b, _ := os.ReadFile(taken); bytes.HasPrefix(b, []byte("mine")) {
		t.Fatal("--force did not replace the file")
	}
}

// checkArchiveFile checks an archive's lines: records first..last, then
// the checkpoint at last.
func checkArchiveFile(t *testing.T, path string, first, last uint64) {
	t.Helper()
	lines := readArchiveLines(t, path)
	if n := uint64(len(lines)); n != last-first+2 {
		t.Fatalf("%s: %d lines, want %d records and a checkpoint", path, n, last-first+1)
	}
	for i, l := range lines[:len(lines)-1] {
		if l.Type != archiveRecord || l.Record.Seq != first+uint64(i) {
			t.Fatalf("%s line %d: %+v, want record %d", path, i+1, l, first+uint64(i))
		}
	}
	if cp := lines[len(lines)-1]; cp.Type != archiveCheckpoint || cp.Checkpoint.Seq != last || cp.Checkpoint.Hash != lines[len(lines)-2].Record.Hash {
		t.Fatalf("%s: last line %+v, want the checkpoint of record %d", path, cp, last)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("%s: %v, %v", path, fi.Mode(), err)
	}
	if m, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".*.tmp-*")); len(m) != 0 {
		t.Errorf("temporary files left: %v", m)
	}
}

func readArchiveLines(t *testing.T, path string) []archiveLine {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []archiveLine
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, maxArchiveLine)
	for sc.Scan() {
		var l archiveLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, l)
	}
	return out
}

func writeArchiveLines(t *testing.T, path string, lines []archiveLine) {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for _, l := range lines {
		if err := enc.Encode(l); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

// editArchive copies an archive with record seq changed by edit.
func editArchive(t *testing.T, from, to string, seq uint64, edit func(*archiveLine)) {
	t.Helper()
	lines := readArchiveLines(t, from)
	for i := range lines {
		if lines[i].Record != nil && lines[i].Record.Seq == seq {
			edit(&lines[i])
		}
	}
	writeArchiveLines(t, to, lines)
}

// rewriteArchive copies an archive with record seq edited and every
// record from it on rehashed, so that the archive's own chain holds; with
// fixCheckpoint the checkpoint's hash too (its signature then fails).
func rewriteArchive(t *testing.T, from, to string, seq uint64, fixCheckpoint bool) {
	t.Helper()
	lines := readArchiveLines(t, from)
	var prev string
	for i := range lines {
		r := lines[i].Record
		if r == nil {
			continue
		}
		if r.Seq == seq {
			r.Reason = "nothing happened here"
		}
		if r.Seq >= seq {
			r.PrevHash = prev
			rec, err := auditFromJSON(r)
			if err != nil {
				t.Fatal(err)
			}
			r.Hash = audit.HexHash(audit.Hash(rec))
		}
		prev = r.Hash
	}
	if cp := lines[len(lines)-1].Checkpoint; fixCheckpoint && cp != nil {
		cp.Hash = prev
	}
	writeArchiveLines(t, to, lines)
}
