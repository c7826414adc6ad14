package cli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"

	"github.com/relhq/rel/internal/audit"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// An archive file ('relctl audit archive --out FILE') is JSON lines: one
// {"type":"record","record":{...}} per audit record, in seq order and
// without gaps, then one {"type":"checkpoint","checkpoint":{...}}, the
// signed head whose seq and hash are the last record's. Records and the
// checkpoint are as 'relctl audit -o json' and 'relctl audit checkpoint'
// print them (hashes in hex).
const (
	archiveRecord     = "record"
	archiveCheckpoint = "checkpoint"
)

// archiveLine is one line of an archive file.
type archiveLine struct {
	Type       string           `json:"type"`
	Record     *auditRecordJSON `json:"record,omitempty"`
	Checkpoint *checkpointJSON  `json:"checkpoint,omitempty"`
}

// maxArchiveLine bounds one line of an archive (a record holds at most a
// few KiB of text).
const maxArchiveLine = 1 << 20

func (r *runner) auditArchiveCommand() *cobra.Command {
	var (
		out, pubFile   string
		force, allKept bool
	)
	cmd := &cobra.Command{
		Use:   "archive --out FILE [--public-key audit.pub] [--force] [--from-first-kept]",
		Short: "Write the audit records not archived yet to a file, verified, and mark them archived",
		Long: `Archive the audit trail, so that retention may remove old records from
the cluster without losing them:

  1. ask a server for a signed checkpoint of the head (as 'relctl audit
     checkpoint'; the server needs --audit-key-file);
  2. fetch, from the leader, every record after the last one archived
     (with --from-first-kept: every record the cluster still keeps) up to
     the checkpoint's record;
  3. check them here: each hash, each prev_hash link (the first record's
     to the archived mark or the retention anchor the server reports),
     that the last record's hash is the checkpoint's, and, with
     --public-key (the cluster's audit.pub), the checkpoint's signature;
  4. write FILE atomically (a temporary file in the same directory, synced,
     then renamed): the records, then the checkpoint, as JSON lines that
     'relctl audit verify --archive FILE' reads back. An existing FILE is
     never replaced without --force;
  5. mark records 1 up to the checkpoint's seq archived in the cluster
     (MarkAuditArchived, role operator or admin): the FSM checks that it
     holds that record with that hash.

If the chain does not verify, no file is written and nothing is marked
(exit 1). Keep archives where the cluster's operators cannot rewrite them,
with their checkpoints.

Once marked, rel-server's retention (--audit-retention, 2160h by default)
removes archived records older than that, oldest first; records not
archived are never removed. Archives chain to each other: each starts where
the previous ended. 'relctl audit verify --archive A --archive B' checks
them and their joins to each other and to the records the cluster keeps.`,
		Example: `  relctl audit archive --out audit-2026-11.jsonl --public-key /etc/rel/audit.pub
  relctl audit verify --archive audit-2026-10.jsonl --archive audit-2026-11.jsonl --public-key /etc/rel/audit.pub`,
		Args: noArgs,
		RunE: r.do(func(ctx context.Context, _ []string) error {
			if out == "" {
				return usagef("--out is required: the archive file to write (JSON lines)")
			}
			if !force {
				if _, err := os.Lstat(out); err == nil {
					return usagef("%s already exists: give another --out, or --force to replace it", out)
				} else if !errors.Is(err, fs.ErrNotExist) {
					return usagef("--out %s: %v", out, err)
				}
			}
			var pub ed25519.PublicKey
			if pubFile != "" {
				var err error
				if pub, err = audit.ReadPublicKeyFile(pubFile); err != nil {
					return usagef("--public-key: %v", err)
				}
			}
			res, err := r.archive(ctx, out, pub, force, allKept)
			if err != nil {
				return err
			}
			return r.printer().auditArchived(res)
		}),
	}
	f := cmd.Flags()
	f.StringVar(&out, "out", "", "the archive `FILE` to write (JSON lines)")
	f.StringVar(&pubFile, "public-key", "", "the cluster's audit public key `FILE` (audit.pub): check the checkpoint's signature")
	f.BoolVar(&force, "force", false, "replace --out if it exists")
	f.BoolVar(&allKept, "from-first-kept", false, "archive every record the cluster keeps, archived before or not (when an earlier archive file was lost)")
	_ = cmd.MarkFlagFilename("out")
	_ = cmd.MarkFlagFilename("public-key")
	return cmd
}

// archiveResult is what 'audit archive' did.
type archiveResult struct {
	File                string
	Records             int
	FirstSeq, LastSeq   uint64
	Checkpoint          *relv1.SignedAuditHead
	SignatureChecked    bool
	ArchivedSeq         uint64
	NothingToArchive    bool
	PreviousArchivedSeq uint64
}

// archive does 'audit archive': checkpoint, records, checks, file, mark.
func (r *runner) archive(ctx context.Context, out string, pub ed25519.PublicKey, force, allKept bool) (*archiveResult, error) {
	var cp *relv1.SignedAuditHead
	if _, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
		cp, err = relv1.NewAuditServiceClient(cc).AuditCheckpoint(ctx, &relv1.AuditCheckpointRequest{}, opts...)
		return err
	}); err != nil {
		return nil, err
	}
	res := &archiveResult{File: out, Checkpoint: cp, SignatureChecked: pub != nil}
	if pub != nil {
		if err := audit.VerifyCheckpoint(cp, pub); err != nil {
			return nil, fmt.Errorf("checkpoint from the server: %w", err)
		}
	}
	// From the leader, which holds every record a checkpoint signed on
	// any server names.
	first, err := r.auditPage(ctx, &relv1.ListAuditRequest{Read: &relv1.ReadOptions{Consistent: true}, PageSize: 1})
	if err != nil {
		return nil, err
	}
	res.PreviousArchivedSeq = first.GetArchivedSeq()
	after, prev := first.GetArchivedSeq(), first.GetArchivedHash()
	if allKept || after < first.GetTrimmedSeq() {
		after, prev = first.GetTrimmedSeq(), first.GetTrimmedHash()
	}
	if after == 0 {
		prev = audit.ZeroHash
	}
	if after >= cp.GetSeq() {
		res.NothingToArchive, res.ArchivedSeq = true, first.GetArchivedSeq()
		return res, nil
	}
	file, err := createAtomic(out)
	if err != nil {
		return nil, err
	}
	defer file.abort()
	w := bufio.NewWriter(file.f)
	enc := json.NewEncoder(w)
	chain := audit.NewChainAfter(after, prev)
	req := &relv1.ListAuditRequest{Read: &relv1.ReadOptions{Consistent: true}, SinceSeq: after + 1, PageSize: maxPage}
	for chain.Seq < cp.GetSeq() {
		resp, err := r.auditPage(ctx, req)
		if err != nil {
			return nil, err
		}
		for _, rec := range resp.GetRecords() {
			if rec.GetSeq() > cp.GetSeq() {
				break
			}
			if err := chain.Add(rec); err != nil {
				return nil, fmt.Errorf("the trail does not verify, nothing archived: %w", err)
			}
			j := auditToJSON(rec)
			if err := enc.Encode(archiveLine{Type: archiveRecord, Record: &j}); err != nil {
				return nil, fmt.Errorf("write %s: %w", out, err)
			}
			res.Records++
			if res.FirstSeq == 0 {
				res.FirstSeq = rec.GetSeq()
			}
		}
		if resp.GetNextPageToken() == "" || len(resp.GetRecords()) == 0 {
			break
		}
		req.PageToken = resp.GetNextPageToken()
	}
	if chain.Seq != cp.GetSeq() {
		return nil, fmt.Errorf("the trail ends at record %d, before the checkpoint's record %d: records are missing; nothing archived", chain.Seq, cp.GetSeq())
	}
	if !bytes.Equal(chain.Hash, cp.GetHash()) {
		return nil, fmt.Errorf("record %d: its hash is not the checkpoint's: the trail was rewritten; nothing archived", chain.Seq)
	}
	c := checkpointToJSON(cp)
	if err := enc.Encode(archiveLine{Type: archiveCheckpoint, Checkpoint: &c}); err != nil {
		return nil, fmt.Errorf("write %s: %w", out, err)
	}
	if err := w.Flush(); err != nil {
		return nil, fmt.Errorf("write %s: %w", out, err)
	}
	if err := file.commit(force); err != nil {
		return nil, err
	}
	res.LastSeq = chain.Seq
	var mark *relv1.MarkAuditArchivedResponse
	if _, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
		mark, err = relv1.NewAuditServiceClient(cc).MarkAuditArchived(ctx, &relv1.MarkAuditArchivedRequest{Seq: cp.GetSeq(), Hash: cp.GetHash()}, opts...)
		return err
	}); err != nil {
		st := status.Convert(err)
		return nil, fmt.Errorf("%s is written (records %d-%d), but marking them archived failed: %s (%s); retention removes nothing until they are marked: run 'relctl audit archive' again as an operator", out, res.FirstSeq, chain.Seq, st.Message(), st.Code())
	}
	res.ArchivedSeq = mark.GetArchivedSeq()
	return res, nil
}

// auditPage asks for one page of the trail.
func (r *runner) auditPage(ctx context.Context, req *relv1.ListAuditRequest) (*relv1.ListAuditResponse, error) {
	var resp *relv1.ListAuditResponse
	_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
		resp, err = relv1.NewAuditServiceClient(cc).ListAudit(ctx, req, opts...)
		return err
	})
	return resp, err
}

// atomicFile is a file written under a temporary name in its directory
// and renamed into place once complete, so that a reader never sees half
// of it and a failure leaves nothing.
type atomicFile struct {
	path string
	f    *os.File
	done bool
}

func createAtomic(path string) (*atomicFile, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("--out %s: %w", path, err)
	}
	return &atomicFile{path: path, f: f}, nil
}

// commit syncs the file and gives it its name: without force a link,
// which fails if the name appeared meanwhile (rename would replace it).
func (a *atomicFile) commit(force bool) error {
	if err := a.f.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", a.path, err)
	}
	if err := a.f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", a.path, err)
	}
	tmp := a.f.Name()
	if force {
		if err := os.Rename(tmp, a.path); err != nil {
			return fmt.Errorf("write %s: %w", a.path, err)
		}
	} else {
		if err := os.Link(tmp, a.path); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return usagef("%s already exists: give another --out, or --force to replace it", a.path)
			}
			return fmt.Errorf("write %s: %w", a.path, err)
		}
		_ = os.Remove(tmp)
	}
	a.done = true
	if d, err := os.Open(filepath.Dir(a.path)); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// abort removes the temporary file unless commit gave it its name.
func (a *atomicFile) abort() {
	if a.done {
		return
	}
	a.f.Close()
	_ = os.Remove(a.f.Name())
}

// archiveSpan is what one archive file holds, once read and checked on
// its own.
type archiveSpan struct {
	file              string
	first, last       uint64
	firstPrev, lastH  []byte
	checkpoint        *relv1.SignedAuditHead
	signatureVerified bool
}

// readArchive reads an archive file, checking it on its own: its records
// chain to each other (the first one's prev_hash is taken as given, to be
// joined to the archive before), its checkpoint names its last record and
// hash, and the checkpoint's signature is valid for pub when pub is set.
// fn sees each record once it was checked. Errors name the file and the
// record (or line).
func readArchive(path string, pub ed25519.PublicKey, fn func(*relv1.AuditRecord) error) (*archiveSpan, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sp := &archiveSpan{file: path}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), maxArchiveLine)
	var chain *audit.Chain
	for line := 1; sc.Scan(); line++ {
		if sp.checkpoint != nil {
			return nil, fmt.Errorf("%s line %d: a line after the checkpoint: an archive ends with its checkpoint", path, line)
		}
		var l archiveLine
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&l); err != nil {
			return nil, fmt.Errorf("%s line %d is not a line of an archive 'relctl audit archive' wrote: %v", path, line, err)
		}
		switch {
		case l.Type == archiveRecord && l.Record != nil:
			rec, err := auditFromJSON(l.Record)
			if err != nil {
				return nil, fmt.Errorf("%s line %d: %v", path, line, err)
			}
			if chain == nil {
				chain = audit.NewChainAfter(rec.GetSeq()-1, rec.GetPrevHash())
				sp.first, sp.firstPrev = rec.GetSeq(), rec.GetPrevHash()
				if rec.GetSeq() == 0 {
					return nil, fmt.Errorf("%s: record 0: records are numbered from 1", path)
				}
			}
			if err := chain.Add(rec); err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			if err := fn(rec); err != nil {
				return nil, err
			}
		case l.Type == archiveCheckpoint && l.Checkpoint != nil:
			cp, err := checkpointFromJSON(*l.Checkpoint)
			if err != nil {
				return nil, fmt.Errorf("%s line %d: %v", path, line, err)
			}
			sp.checkpoint = cp
		default:
			return nil, fmt.Errorf("%s line %d: type %q: want a record or the checkpoint", path, line, l.Type)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if chain == nil {
		return nil, fmt.Errorf("%s holds no audit record: not an archive 'relctl audit archive' wrote", path)
	}
	sp.last, sp.lastH = chain.Seq, chain.Hash
	cp := sp.checkpoint
	if cp == nil {
		return nil, fmt.Errorf("%s ends at record %d without its checkpoint: the file was cut short", path, sp.last)
	}
	if cp.GetSeq() != sp.last || !bytes.Equal(cp.GetHash(), sp.lastH) {
		return nil, fmt.Errorf("%s: record %d: its hash is not the archive's checkpoint's (seq %d): the archive was rewritten", path, sp.last, cp.GetSeq())
	}
	if pub != nil {
		if err := audit.VerifyCheckpoint(cp, pub); err != nil {
			return nil, fmt.Errorf("%s: checkpoint: %w", path, err)
		}
		sp.signatureVerified = true
	}
	return sp, nil
}

// auditFromJSON is a record as an archive holds it.
func auditFromJSON(j *auditRecordJSON) (*relv1.AuditRecord, error) {
	prev, err := hex.DecodeString(j.PrevHash)
	if err != nil {
		return nil, fmt.Errorf("record %d: prev_hash is not hex", j.Seq)
	}
	h, err := hex.DecodeString(j.Hash)
	if err != nil {
		return nil, fmt.Errorf("record %d: hash is not hex", j.Seq)
	}
	rec := &relv1.AuditRecord{Seq: j.Seq, Index: j.Index, TimeUnixNano: j.TimeNano, Action: j.Action, Result: j.Result,
		ErrorKind: j.ErrorKind, Message: j.Message, Object: j.Object, App: j.App, Env: j.Env, Digest: j.Digest,
		Reason: j.Reason, RequestId: j.RequestID, PrevHash: prev, Hash: h}
	if j.Actor != (actorJSON{}) {
		rec.Actor = &relv1.Actor{Kind: j.Actor.Kind, Id: j.Actor.ID, Name: j.Actor.Name}
	}
	return rec, nil
}

// verifyArchives checks archives, given in any order, against each other
// and against the trail the cluster keeps (anchor: the last record it
// removed, trimmedSeq and trimmedHash): sorted by first record, each must
// start at record 1 or join the ones before (its first prev_hash the hash
// of the record before it, or, overlapping, the same hash at the last
// record already read), with no record removed from the cluster left
// out; the record at the anchor must have the anchor's hash. It returns
// the joined chain's end and the hash it found for record at (0: none),
// for a checkpoint older than the first record kept.
func verifyArchives(files []string, pub ed25519.PublicKey, trimmedSeq uint64, trimmedHash []byte, at uint64) (*archivesResult, error) {
	// A first pass reads each archive on its own (it must verify on its
	// own anyway) to order them by their records.
	spans := make([]*archiveSpan, 0, len(files))
	for _, f := range files {
		sp, err := readArchive(f, pub, func(*relv1.AuditRecord) error { return nil })
		if err != nil {
			return nil, err
		}
		spans = append(spans, sp)
	}
	sortSpans(spans)
	res := &archivesResult{Files: len(spans), SignaturesVerified: pub != nil}
	chain := audit.NewChain()
	var atHash, anchorHash []byte
	note := func(seq uint64, h []byte) {
		if seq == at {
			atHash = h
		}
		if seq == trimmedSeq {
			anchorHash = h
		}
	}
	for _, sp := range spans {
		switch {
		case sp.first > chain.Seq+1:
			return nil, fmt.Errorf("%s starts at record %d: records %d-%d are in none of the archives given", sp.file, sp.first, chain.Seq+1, sp.first-1)
		case sp.first == chain.Seq+1:
			if !bytes.Equal(sp.firstPrev, chain.Hash) {
				if chain.Seq == 0 {
					return nil, fmt.Errorf("%s: record 1: prev_hash is not the chain's start (32 zero bytes)", sp.file)
				}
				return nil, fmt.Errorf("%s: record %d: prev_hash is not record %d's hash in %s: the archives do not join", sp.file, sp.first, chain.Seq, res.lastFile)
			}
		case sp.last <= chain.Seq:
			// Every record of it was read already, in other archives;
			// it was checked on its own only.
			res.Inside = append(res.Inside, sp.file)
			continue
		}
		// Read it again, now joined: records up to chain.Seq were read
		// in an archive before; the one at chain.Seq must have its hash.
		joinAt, joinHash := chain.Seq, chain.Hash
		if _, err := readArchive(sp.file, nil, func(rec *relv1.AuditRecord) error {
			switch {
			case rec.GetSeq() < joinAt:
				return nil
			case rec.GetSeq() == joinAt:
				if !bytes.Equal(rec.GetHash(), joinHash) {
					return fmt.Errorf("%s: record %d: its hash is not the one in %s: the archives disagree", sp.file, rec.GetSeq(), res.lastFile)
				}
				return nil
			}
			if err := chain.Add(rec); err != nil {
				return fmt.Errorf("%s: %w", sp.file, err)
			}
			note(rec.GetSeq(), rec.GetHash())
			return nil
		}); err != nil {
			return nil, err
		}
		res.lastFile = sp.file
	}
	if chain.Seq < trimmedSeq {
		return nil, fmt.Errorf("the cluster removed records up to %d, and the archives given end at record %d: records %d-%d are in none of them", trimmedSeq, chain.Seq, chain.Seq+1, trimmedSeq)
	}
	if trimmedSeq > 0 && !bytes.Equal(anchorHash, trimmedHash) {
		return nil, fmt.Errorf("record %d: its hash in the archives is not the one the cluster's first kept record chains to: the archives are of another trail, or were rewritten", trimmedSeq)
	}
	res.Records, res.LastSeq, res.LastHash, res.AtHash = chain.Seq, chain.Seq, chain.Hash, atHash
	return res, nil
}

// archivesResult is what verifyArchives found.
type archivesResult struct {
	Files              int
	Records            uint64
	LastSeq            uint64
	LastHash           []byte
	AtHash             []byte
	SignaturesVerified bool
	// Inside are archives whose records all were in archives read
	// before.
	Inside   []string
	lastFile string
}

func sortSpans(spans []*archiveSpan) {
	// Insertion sort: a handful of files. By first record, then the
	// shorter first, so that a longer one overlapping it extends it.
	for i := 1; i < len(spans); i++ {
		for j := i; j > 0 && (spans[j].first < spans[j-1].first || spans[j].first == spans[j-1].first && spans[j].last < spans[j-1].last); j-- {
			spans[j], spans[j-1] = spans[j-1], spans[j]
		}
	}
}

func (p printer) auditArchived(res *archiveResult) error {
	if p.json() {
		out := struct {
			File             string `json:"file,omitempty"`
			Records          int    `json:"records"`
			FirstSeq         uint64 `json:"first_seq,omitempty"`
			LastSeq          uint64 `json:"last_seq,omitempty"`
			CheckpointSeq    uint64 `json:"checkpoint_seq"`
			SignatureChecked bool   `json:"signature_checked"`
			ArchivedSeq      uint64 `json:"archived_seq"`
		}{Records: res.Records, FirstSeq: res.FirstSeq, LastSeq: res.LastSeq, CheckpointSeq: res.Checkpoint.GetSeq(),
			SignatureChecked: res.SignatureChecked, ArchivedSeq: res.ArchivedSeq}
		if !res.NothingToArchive {
			out.File = res.File
		}
		return p.writeJSON(out)
	}
	if res.NothingToArchive {
		_, err := fmt.Fprintf(p.w, "nothing to archive: records up to %d are archived already, and the head is record %d; no file written\n", res.ArchivedSeq, res.Checkpoint.GetSeq())
		return err
	}
	sig := "signature checked with --public-key"
	if !res.SignatureChecked {
		sig = "signature not checked: give --public-key audit.pub"
	}
	_, err := fmt.Fprintf(p.w, "archived %d records (seq %d-%d) to %s, chain intact; checkpoint at seq %d signed %s (%s)\nrecords up to seq %d may now be removed after --audit-retention\n",
		res.Records, res.FirstSeq, res.LastSeq, res.File, res.Checkpoint.GetSeq(), formatTime(res.Checkpoint.GetTimeUnixNano(), time.RFC3339), sig, res.ArchivedSeq)
	return err
}
