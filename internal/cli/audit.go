package cli

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/relhq/rel/internal/audit"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

func (r *runner) auditCommand() *cobra.Command {
	var (
		since, actor, app, env string
		limit                  int
	)
	cmd := &cobra.Command{
		Use:   "audit [--since SEQ|DURATION|RFC3339] [--actor ID] [--app APP] [--env ENV] [--limit N]",
		Short: "Show the audit trail: who changed what, and which changes were refused",
		Long: `Show the audit trail, oldest first: one record for every change made
through the cluster (apps, environments, releases, rollouts and their
controls, tokens, join tokens, revocations, and the leader's own decisions
that change what runs or what is kept: catch-ups, automatic rollbacks,
retention passes, artifact GC), and for every change refused, whether the
FSM refused it or the server refused it before (no permission, bad input,
a precondition). Agents' traffic and the rollout engine's steps are not
recorded (history and rollout events keep them).

Each record is written in the same raft entry as the change, numbered
without gaps (SEQ) and chained to the one before by its hash: 'relctl
audit verify' checks the chain. No API deletes or edits a record;
retention (rel-server --audit-retention) removes only records that 'relctl
audit archive' wrote to an archive and marked archived, oldest first.

ACTOR is who asked: a token (its name and accessor) or a client
certificate; "server leader" for the leader's own decisions; "anonymous"
for a caller without credentials. RESULT is applied, or refused with the
refusal's kind and message.

--since takes a record number (records from that SEQ on), a duration back
from now (24h) or an RFC 3339 time. --actor takes a token's accessor id or
a certificate's name. The filters run on the server, which answers in
pages that relctl follows.`,
		Example: `  relctl audit
  relctl audit --since 24h --env prod
  relctl audit --actor 3f9c2a7e1b0d4c65 -o json | jq -r '.records[] | select(.result == "refused") | .message'
  relctl audit --since 120`,
		Args: noArgs,
		RunE: r.do(func(ctx context.Context, _ []string) error {
			if err := checkLimit(limit); err != nil {
				return err
			}
			req := &relv1.ListAuditRequest{Read: r.readOptions(), Actor: actor, App: app, Env: env}
			if seq, err := strconv.ParseUint(since, 10, 64); err == nil {
				req.SinceSeq = seq
			} else {
				from, err := parseSince(since, time.Now())
				if err != nil {
					return usagef("invalid --since %q: want a record number (120), a duration (24h) or an RFC 3339 time (2025-03-04T10:00:00Z)", since)
				}
				if !from.IsZero() {
					req.SinceUnixNano = from.UnixNano()
				}
			}
			recs, err := r.auditRecords(ctx, req, limit)
			if err != nil {
				return err
			}
			return r.printer().auditRecords(recs)
		}),
	}
	f := cmd.Flags()
	f.StringVar(&since, "since", "", "only records from `WHEN` on: a record number, a duration back from now (24h) or an RFC 3339 time")
	f.StringVar(&actor, "actor", "", "only records of actor `ID` (a token's accessor id, a certificate's name)")
	f.StringVar(&app, "app", "", "only records of app `APP`")
	f.StringVar(&env, "env", "", "only records of environment `ENV`")
	limitFlag(cmd, &limit)
	_ = cmd.RegisterFlagCompletionFunc("env", r.completeEnvFlag)
	cmd.AddCommand(r.auditVerifyCommand(), r.auditCheckpointCommand(), r.auditArchiveCommand())
	return cmd
}

// auditRecords pages through ListAudit.
func (r *runner) auditRecords(ctx context.Context, req *relv1.ListAuditRequest, limit int) ([]*relv1.AuditRecord, error) {
	return allPages(limit, func(tok string, size uint32) ([]*relv1.AuditRecord, string, error) {
		req.PageToken, req.PageSize = tok, size
		var resp *relv1.ListAuditResponse
		_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
			resp, err = relv1.NewAuditServiceClient(cc).ListAudit(ctx, req, opts...)
			return err
		})
		return resp.GetRecords(), resp.GetNextPageToken(), err
	})
}

func (r *runner) auditVerifyCommand() *cobra.Command {
	var (
		cpFile, pubFile string
		archives        []string
	)
	cmd := &cobra.Command{
		Use:   "verify [--checkpoint FILE --public-key FILE] [--archive FILE ...]",
		Short: "Check the audit trail's hash chain, its archives, and that it matches a checkpoint",
		Long: `Fetch every audit record and check, here and not on the server, that
each record's hash is the sha256 of its contents (the canonical encoding
documented in the README) and that each record's prev_hash is the hash of
the record before it, from record 1 (whose prev_hash is 32 zero bytes).
The first record that fails is named, and the command exits 1:

  record 17: hash does not match its contents       (record 17 was edited)
  record 18: prev_hash is not record 17's hash      (record 17 was replaced, rehashed)
  record 19 follows record 17: records are missing or repeated

When retention removed old records ('relctl audit archive' archived them,
rel-server --audit-retention), the cluster keeps records from A+1 on and
reports A, the last record removed, with its hash (the anchor): the check
starts there (record A+1's prev_hash must be the anchor's hash), the
anchor must be archived (A at or below the archived mark), and verify says
that records 1-A were archived and removed.

With --archive (once per archive file, in any order), verify also checks
each archive: its records' hashes and links, that its last record is its
checkpoint's (and the checkpoint's signature, with --public-key), that the
archives join each other from record 1 with no record missing (the first
record of each the one after the last of the one before, its prev_hash that
record's hash), and that they join the records the cluster keeps (the
anchor's hash is the archives' record A's). The first bad record is named
with its file.

A chain can be rewritten consistently from the record changed on, by
anyone who can write a server's data dir. With --checkpoint (a file
'relctl audit checkpoint' printed earlier and kept elsewhere) and
--public-key (the cluster's audit.pub), verify also checks the
checkpoint's signature with that key and that the record at the
checkpoint's seq has the checkpoint's hash: then nothing up to that record
was rewritten since the checkpoint was made. A checkpoint older than the
first record kept is checked against the archives (give them with
--archive).

It reads the records from the leader (as with --consistent), whose
replica holds every record any server could have signed.

It prints "N records, chain intact (head seq S hash H)" and exits 0.`,
		Example: `  relctl audit verify
  relctl audit checkpoint > cp-2026-11-27.json
  relctl audit verify --checkpoint cp-2026-11-27.json --public-key /etc/rel/audit.pub
  relctl audit verify --archive audit-2026-10.jsonl --archive audit-2026-11.jsonl --public-key /etc/rel/audit.pub`,
		Args: noArgs,
		RunE: r.do(func(ctx context.Context, _ []string) error {
			if cpFile != "" && pubFile == "" || pubFile != "" && cpFile == "" && len(archives) == 0 {
				return usagef("--checkpoint and --public-key go together: a checkpoint is checked with the cluster's audit public key (audit.pub)")
			}
			var (
				cp  *relv1.SignedAuditHead
				pub ed25519.PublicKey
			)
			if pubFile != "" {
				var err error
				if pub, err = audit.ReadPublicKeyFile(pubFile); err != nil {
					return usagef("--public-key: %v", err)
				}
			}
			if cpFile != "" {
				var err error
				if cp, err = readCheckpoint(cpFile); err != nil {
					return usagef("--checkpoint: %v", err)
				}
				if err := audit.VerifyCheckpoint(cp, pub); err != nil {
					return fmt.Errorf("checkpoint %s: %w", cpFile, err)
				}
			}
			// From the leader: a follower's replica may be behind the
			// record a checkpoint (signed on any server) names.
			recs, first, err := r.auditTrail(ctx)
			if err != nil {
				return err
			}
			v := auditVerification{records: len(recs), cp: cp, trimmedSeq: first.GetTrimmedSeq(), archivedSeq: first.GetArchivedSeq()}
			if v.trimmedSeq > v.archivedSeq {
				return fmt.Errorf("the cluster removed records up to %d, but records are marked archived only up to %d: records were removed without an archive", v.trimmedSeq, v.archivedSeq)
			}
			if len(archives) > 0 {
				if v.archives, err = verifyArchives(archives, pub, first.GetTrimmedSeq(), first.GetTrimmedHash(), cp.GetSeq()); err != nil {
					return err
				}
			}
			chain := audit.NewChainAfter(first.GetTrimmedSeq(), first.GetTrimmedHash())
			for _, rec := range recs {
				if err := chain.Add(rec); err != nil {
					if rec.GetSeq() == first.GetTrimmedSeq()+1 && first.GetTrimmedSeq() > 0 && rec.GetSeq() == chain.Seq+1 {
						return fmt.Errorf("%w (the anchor, record %d, is the last record retention removed)", err, first.GetTrimmedSeq())
					}
					return err
				}
				if cp != nil && rec.GetSeq() == cp.GetSeq() && !bytes.Equal(rec.GetHash(), cp.GetHash()) {
					return fmt.Errorf("record %d: its hash is not the checkpoint's: the trail up to record %d was rewritten since the checkpoint was made", rec.GetSeq(), cp.GetSeq())
				}
				if a := v.archives; a != nil && rec.GetSeq() == a.LastSeq && !bytes.Equal(rec.GetHash(), a.LastHash) {
					return fmt.Errorf("record %d: its hash in the cluster is not the one in %s: the archives and the trail disagree", rec.GetSeq(), a.lastFile)
				}
			}
			if a := v.archives; a != nil && a.LastSeq > chain.Seq {
				return fmt.Errorf("the archives hold records up to %d, past the trail's head (record %d): they are of another trail", a.LastSeq, chain.Seq)
			}
			if cp != nil {
				switch {
				case cp.GetSeq() > first.GetTrimmedSeq():
					if chain.Seq < cp.GetSeq() {
						return fmt.Errorf("the trail ends at record %d, before the checkpoint's record %d: records were removed", chain.Seq, cp.GetSeq())
					}
				case v.archives != nil:
					if !bytes.Equal(v.archives.AtHash, cp.GetHash()) {
						return fmt.Errorf("record %d: its hash in the archives is not the checkpoint's: the trail up to record %d was rewritten since the checkpoint was made", cp.GetSeq(), cp.GetSeq())
					}
				case cp.GetSeq() == first.GetTrimmedSeq():
					if !bytes.Equal(first.GetTrimmedHash(), cp.GetHash()) {
						return fmt.Errorf("record %d: the hash the first record kept chains to is not the checkpoint's: the trail up to record %d was rewritten since the checkpoint was made", cp.GetSeq(), cp.GetSeq())
					}
				default:
					return fmt.Errorf("the checkpoint's record %d was archived and removed from the cluster (records 1-%d): give the archives with --archive FILE to check it", cp.GetSeq(), first.GetTrimmedSeq())
				}
			}
			v.chain = chain
			return r.printer().auditVerified(v)
		}),
	}
	cmd.Flags().StringVar(&cpFile, "checkpoint", "", "a checkpoint `FILE` printed by 'relctl audit checkpoint'")
	cmd.Flags().StringVar(&pubFile, "public-key", "", "the cluster's audit public key `FILE` (audit.pub)")
	cmd.Flags().StringArrayVar(&archives, "archive", nil, "an archive `FILE` written by 'relctl audit archive' (repeat for each; any order)")
	_ = cmd.MarkFlagFilename("checkpoint")
	_ = cmd.MarkFlagFilename("public-key")
	_ = cmd.MarkFlagFilename("archive")
	return cmd
}

// auditTrail pages through the whole trail the leader keeps, and returns
// the first page's answer too: the anchor and mark its records chain to.
func (r *runner) auditTrail(ctx context.Context) ([]*relv1.AuditRecord, *relv1.ListAuditResponse, error) {
	var first *relv1.ListAuditResponse
	req := &relv1.ListAuditRequest{Read: &relv1.ReadOptions{Consistent: true}}
	recs, err := allPages(0, func(tok string, size uint32) ([]*relv1.AuditRecord, string, error) {
		req.PageToken, req.PageSize = tok, size
		resp, err := r.auditPage(ctx, req)
		if first == nil {
			first = resp
		}
		return resp.GetRecords(), resp.GetNextPageToken(), err
	})
	return recs, first, err
}

func (r *runner) auditCheckpointCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "checkpoint",
		Short: "Print the audit trail's head, signed with the cluster's audit key",
		Long: `Ask a server to sign the head of the audit trail (its last record's seq
and hash) with the cluster's audit key (ed25519; rel-server
--audit-key-file) and print it as JSON, always: keep it somewhere the
cluster's operators cannot write (another system, a ticket, a signed
commit). 'relctl audit verify --checkpoint FILE --public-key audit.pub'
later proves that nothing up to that record was rewritten since.

A server started without --audit-key-file refuses (FailedPrecondition).`,
		Example: `  relctl audit checkpoint > cp.json
  relctl audit verify --checkpoint cp.json --public-key audit.pub`,
		Args: noArgs,
		RunE: r.do(func(ctx context.Context, _ []string) error {
			var cp *relv1.SignedAuditHead
			_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
				cp, err = relv1.NewAuditServiceClient(cc).AuditCheckpoint(ctx, &relv1.AuditCheckpointRequest{}, opts...)
				return err
			})
			if err != nil {
				return err
			}
			return r.printer().writeJSON(checkpointToJSON(cp))
		}),
	}
}

// auditRecordJSON is one record as relctl prints it; hashes in hex.
type auditRecordJSON struct {
	Seq       uint64    `json:"seq"`
	Index     uint64    `json:"index"`
	Time      string    `json:"time"`
	TimeNano  int64     `json:"time_unix_nano"`
	Actor     actorJSON `json:"actor"`
	Action    string    `json:"action"`
	Result    string    `json:"result"`
	ErrorKind string    `json:"error_kind"`
	Message   string    `json:"message"`
	Object    string    `json:"object"`
	App       string    `json:"app"`
	Env       string    `json:"env"`
	Digest    string    `json:"digest"`
	Reason    string    `json:"reason"`
	RequestID string    `json:"request_id"`
	PrevHash  string    `json:"prev_hash"`
	Hash      string    `json:"hash"`
}

type actorJSON struct {
	Kind string `json:"kind"`
	ID   string `json:"id"`
	Name string `json:"name"`
}

// checkpointJSON is the file 'audit checkpoint' prints and 'audit verify
// --checkpoint' reads; bytes in hex.
type checkpointJSON struct {
	Cluster      string `json:"cluster"`
	Seq          uint64 `json:"seq"`
	Hash         string `json:"hash"`
	Time         string `json:"time"`
	TimeUnixNano int64  `json:"time_unix_nano"`
	PublicKey    string `json:"public_key"`
	Signature    string `json:"signature"`
}

func checkpointToJSON(cp *relv1.SignedAuditHead) checkpointJSON {
	return checkpointJSON{Cluster: cp.GetCluster(), Seq: cp.GetSeq(), Hash: hex.EncodeToString(cp.GetHash()),
		Time: formatTime(cp.GetTimeUnixNano(), time.RFC3339Nano), TimeUnixNano: cp.GetTimeUnixNano(),
		PublicKey: hex.EncodeToString(cp.GetPublicKey()), Signature: hex.EncodeToString(cp.GetSignature())}
}

func readCheckpoint(path string) (*relv1.SignedAuditHead, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var c checkpointJSON
	dec := json.NewDecoder(io.LimitReader(f, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%s is not a checkpoint that 'relctl audit checkpoint' printed: %v", path, err)
	}
	cp, err := checkpointFromJSON(c)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	return cp, nil
}

// checkpointFromJSON is the checkpoint a checkpointJSON prints.
func checkpointFromJSON(c checkpointJSON) (*relv1.SignedAuditHead, error) {
	cp := &relv1.SignedAuditHead{Cluster: c.Cluster, Seq: c.Seq, TimeUnixNano: c.TimeUnixNano}
	for _, b := range []struct {
		name string
		hex  string
		dst  *[]byte
	}{{"hash", c.Hash, &cp.Hash}, {"public_key", c.PublicKey, &cp.PublicKey}, {"signature", c.Signature, &cp.Signature}} {
		v, err := hex.DecodeString(b.hex)
		if err != nil || len(v) == 0 {
			return nil, fmt.Errorf("the checkpoint's %s is not hex", b.name)
		}
		*b.dst = v
	}
	return cp, nil
}

func auditToJSON(r *relv1.AuditRecord) auditRecordJSON {
	a := r.GetActor()
	return auditRecordJSON{Seq: r.GetSeq(), Index: r.GetIndex(), Time: formatTime(r.GetTimeUnixNano(), time.RFC3339Nano), TimeNano: r.GetTimeUnixNano(),
		Actor: actorJSON{Kind: a.GetKind(), ID: a.GetId(), Name: a.GetName()}, Action: r.GetAction(), Result: r.GetResult(),
		ErrorKind: r.GetErrorKind(), Message: r.GetMessage(), Object: r.GetObject(), App: r.GetApp(), Env: r.GetEnv(),
		Digest: r.GetDigest(), Reason: r.GetReason(), RequestID: r.GetRequestId(),
		PrevHash: hex.EncodeToString(r.GetPrevHash()), Hash: hex.EncodeToString(r.GetHash())}
}

// actorText is an actor for a table: "token ci (3f9c...)", "client alice",
// "server leader", "anonymous".
func actorText(a *relv1.Actor) string {
	switch {
	case a.GetKind() == "":
		return ""
	case a.GetId() == "":
		return a.GetKind()
	case a.GetName() != "" && a.GetName() != a.GetId():
		return a.GetKind() + " " + a.GetName() + " (" + a.GetId() + ")"
	}
	return a.GetKind() + " " + a.GetId()
}

// maxAuditCell bounds a refusal's message in the table; -o json has it
// whole.
const maxAuditCell = 80

func (p printer) auditRecords(recs []*relv1.AuditRecord) error {
	if p.json() {
		out := struct {
			Records []auditRecordJSON `json:"records"`
		}{Records: []auditRecordJSON{}}
		for _, r := range recs {
			out.Records = append(out.Records, auditToJSON(r))
		}
		return p.writeJSON(out)
	}
	rows := make([][]string, 0, len(recs))
	for _, r := range recs {
		result := r.GetResult()
		if result == audit.Refused {
			msg := r.GetMessage()
			if len(msg) > maxAuditCell {
				msg = msg[:maxAuditCell] + "..."
			}
			result = strings.TrimSpace("refused " + r.GetErrorKind() + ": " + msg)
		}
		rows = append(rows, []string{strconv.FormatUint(r.GetSeq(), 10), formatTime(r.GetTimeUnixNano(), time.RFC3339),
			actorText(r.GetActor()), r.GetAction(), r.GetObject(), result, r.GetReason()})
	}
	return p.table([]string{"SEQ", "TIME", "ACTOR", "ACTION", "OBJECT", "RESULT", "REASON"}, rows)
}

// auditVerification is what 'audit verify' checked.
type auditVerification struct {
	records                 int
	chain                   *audit.Chain
	cp                      *relv1.SignedAuditHead
	trimmedSeq, archivedSeq uint64
	archives                *archivesResult
}

func (p printer) auditVerified(v auditVerification) error {
	c, cp := v.chain, v.cp
	head := hex.EncodeToString(c.Hash)
	if p.json() {
		out := struct {
			Records         int    `json:"records"`
			Intact          bool   `json:"intact"`
			HeadSeq         uint64 `json:"head_seq"`
			HeadHash        string `json:"head_hash"`
			Checkpoint      uint64 `json:"checkpoint_seq"`
			TrimmedSeq      uint64 `json:"trimmed_seq"`
			ArchivedSeq     uint64 `json:"archived_seq"`
			Archives        int    `json:"archives"`
			ArchivedRecords uint64 `json:"archived_records"`
		}{Records: v.records, Intact: true, HeadSeq: c.Seq, HeadHash: head, Checkpoint: cp.GetSeq(),
			TrimmedSeq: v.trimmedSeq, ArchivedSeq: v.archivedSeq}
		if a := v.archives; a != nil {
			out.Archives, out.ArchivedRecords = a.Files, a.Records
		}
		return p.writeJSON(out)
	}
	line := fmt.Sprintf("%d records, chain intact (head seq %d hash %s)", v.records, c.Seq, head)
	if cp != nil {
		line += fmt.Sprintf("; matches the checkpoint at seq %d signed %s", cp.GetSeq(), formatTime(cp.GetTimeUnixNano(), time.RFC3339))
	}
	lines := []string{line}
	switch a := v.archives; {
	case a != nil:
		sig := "their checkpoints' signatures checked"
		if !a.SignaturesVerified {
			sig = "their checkpoints' signatures not checked: give --public-key audit.pub"
		}
		joined := "they join each other"
		if v.trimmedSeq > 0 {
			joined += fmt.Sprintf(" and the records kept (at record %d, the last removed)", v.trimmedSeq)
		}
		lines = append(lines, fmt.Sprintf("%d archives hold records 1-%d, chain intact; %s; %s", a.Files, a.LastSeq, joined, sig))
		for _, f := range a.Inside {
			lines = append(lines, fmt.Sprintf("note: every record of %s is in the archives before it: it was checked on its own only", f))
		}
	case v.trimmedSeq > 0:
		lines = append(lines, fmt.Sprintf("records 1-%d were archived (up to %d) and removed from the cluster; the first record kept chains to record %d's hash: check records 1-%d with --archive FILE (every archive)",
			v.trimmedSeq, v.archivedSeq, v.trimmedSeq, v.trimmedSeq))
	}
	_, err := fmt.Fprintln(p.w, strings.Join(lines, "\n"))
	return err
}
