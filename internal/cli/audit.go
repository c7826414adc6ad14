package cli

import (
	"context"
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
audit verify' checks the chain. No API deletes or edits a record, and
retention never removes one.

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
	cmd.AddCommand(r.auditVerifyCommand(), r.auditCheckpointCommand())
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
	var cpFile, pubFile string
	cmd := &cobra.Command{
		Use:   "verify [--checkpoint FILE --public-key FILE]",
		Short: "Check the audit trail's hash chain, and that it matches a checkpoint",
		Long: `Fetch every audit record and check, here and not on the server, that
each record's hash is the sha256 of its contents (the canonical encoding
documented in the README) and that each record's prev_hash is the hash of
the record before it, from record 1 (whose prev_hash is 32 zero bytes).
The first record that fails is named, and the command exits 1:

  record 17: hash does not match its contents       (record 17 was edited)
  record 18: prev_hash is not record 17's hash      (record 17 was replaced, rehashed)
  record 19 follows record 17: records are missing or repeated

A chain can be rewritten consistently from the record changed on, by
anyone who can write a server's data dir. With --checkpoint (a file
'relctl audit checkpoint' printed earlier and kept elsewhere) and
--public-key (the cluster's audit.pub), verify also checks the
checkpoint's signature with that key and that the record at the
checkpoint's seq has the checkpoint's hash: then nothing up to that record
was rewritten since the checkpoint was made.

It reads the records from the leader (as with --consistent), whose
replica holds every record any server could have signed.

It prints "N records, chain intact (head seq S hash H)" and exits 0.`,
		Example: `  relctl audit verify
  relctl audit checkpoint > cp-2026-11-27.json
  relctl audit verify --checkpoint cp-2026-11-27.json --public-key /etc/rel/audit.pub`,
		Args: noArgs,
		RunE: r.do(func(ctx context.Context, _ []string) error {
			if (cpFile == "") != (pubFile == "") {
				return usagef("--checkpoint and --public-key go together: a checkpoint is checked with the cluster's audit public key (audit.pub)")
			}
			var cp *relv1.SignedAuditHead
			if cpFile != "" {
				pub, err := audit.ReadPublicKeyFile(pubFile)
				if err != nil {
					return usagef("--public-key: %v", err)
				}
				if cp, err = readCheckpoint(cpFile); err != nil {
					return usagef("--checkpoint: %v", err)
				}
				if err := audit.VerifyCheckpoint(cp, pub); err != nil {
					return fmt.Errorf("checkpoint %s: %w", cpFile, err)
				}
			}
			// From the leader: a follower's replica may be behind the
			// record a checkpoint (signed on any server) names.
			recs, err := r.auditRecords(ctx, &relv1.ListAuditRequest{Read: &relv1.ReadOptions{Consistent: true}}, 0)
			if err != nil {
				return err
			}
			chain := audit.NewChain()
			for _, rec := range recs {
				if err := chain.Add(rec); err != nil {
					return err
				}
				if cp != nil && rec.GetSeq() == cp.GetSeq() && hex.EncodeToString(rec.GetHash()) != hex.EncodeToString(cp.GetHash()) {
					return fmt.Errorf("record %d: its hash is not the checkpoint's: the trail up to record %d was rewritten since the checkpoint was made", rec.GetSeq(), cp.GetSeq())
				}
			}
			if cp != nil && chain.Seq < cp.GetSeq() {
				return fmt.Errorf("the trail ends at record %d, before the checkpoint's record %d: records were removed", chain.Seq, cp.GetSeq())
			}
			return r.printer().auditVerified(len(recs), chain, cp)
		}),
	}
	cmd.Flags().StringVar(&cpFile, "checkpoint", "", "a checkpoint `FILE` printed by 'relctl audit checkpoint'")
	cmd.Flags().StringVar(&pubFile, "public-key", "", "the cluster's audit public key `FILE` (audit.pub)")
	_ = cmd.MarkFlagFilename("checkpoint")
	_ = cmd.MarkFlagFilename("public-key")
	return cmd
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
	cp := &relv1.SignedAuditHead{Cluster: c.Cluster, Seq: c.Seq, TimeUnixNano: c.TimeUnixNano}
	for _, b := range []struct {
		name string
		hex  string
		dst  *[]byte
	}{{"hash", c.Hash, &cp.Hash}, {"public_key", c.PublicKey, &cp.PublicKey}, {"signature", c.Signature, &cp.Signature}} {
		v, err := hex.DecodeString(b.hex)
		if err != nil || len(v) == 0 {
			return nil, fmt.Errorf("%s: %s is not hex", path, b.name)
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

func (p printer) auditVerified(n int, c *audit.Chain, cp *relv1.SignedAuditHead) error {
	head := hex.EncodeToString(c.Hash)
	if p.json() {
		out := struct {
			Records    int    `json:"records"`
			Intact     bool   `json:"intact"`
			HeadSeq    uint64 `json:"head_seq"`
			HeadHash   string `json:"head_hash"`
			Checkpoint uint64 `json:"checkpoint_seq"`
		}{Records: n, Intact: true, HeadSeq: c.Seq, HeadHash: head, Checkpoint: cp.GetSeq()}
		return p.writeJSON(out)
	}
	line := fmt.Sprintf("%d records, chain intact (head seq %d hash %s)", n, c.Seq, head)
	if cp != nil {
		line += fmt.Sprintf("; matches the checkpoint at seq %d signed %s", cp.GetSeq(), formatTime(cp.GetTimeUnixNano(), time.RFC3339))
	}
	_, err := fmt.Fprintln(p.w, line)
	return err
}
