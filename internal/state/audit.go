package state

import (
	"fmt"

	"github.com/hashicorp/go-memdb"
	"google.golang.org/protobuf/proto"

	"github.com/relhq/rel/internal/audit"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// actorIDIndex indexes audit records by their actor's id (a token's
// accessor, a certificate's name); records without one are left out.
type actorIDIndex struct{}

func (actorIDIndex) FromObject(raw any) (bool, []byte, error) {
	rec, ok := raw.(*relv1.AuditRecord)
	if !ok {
		return false, nil, fmt.Errorf("state: audit index on %T", raw)
	}
	id := rec.GetActor().GetId()
	if id == "" {
		return false, nil, nil
	}
	return true, []byte(id + "\x00"), nil
}

func (actorIDIndex) FromArgs(args ...any) ([]byte, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("state: audit actor index takes one argument, got %d", len(args))
	}
	s, ok := args[0].(string)
	if !ok {
		return nil, fmt.Errorf("state: audit actor index argument is %T, not a string", args[0])
	}
	return []byte(s + "\x00"), nil
}

// AppendAudit appends records to the audit trail, in order, in one
// transaction: each gets the next seq, the raft index, and its place in
// the hash chain (prev_hash, hash). The FSM calls it in the same Apply as
// the change the records describe. The records passed are not modified.
func (s *Store) AppendAudit(index uint64, recs []*relv1.AuditRecord) error {
	if len(recs) == 0 {
		return nil
	}
	txn := s.writeTxn()
	defer txn.Abort()
	seq, prev := uint64(0), audit.ZeroHash
	last, err := txn.Last(TableAudit, "id")
	if err != nil {
		return fmt.Errorf("state: last audit record: %w", err)
	}
	if last != nil {
		l := last.(*relv1.AuditRecord)
		seq, prev = l.GetSeq(), l.GetHash()
	}
	for _, r := range recs {
		row := proto.Clone(r).(*relv1.AuditRecord)
		seq++
		row.Seq, row.Index, row.PrevHash, row.Hash = seq, index, prev, nil
		row.Hash = audit.Hash(row)
		if err := txn.Insert(TableAudit, row); err != nil {
			return fmt.Errorf("state: insert audit record: %w", err)
		}
		prev = row.Hash
	}
	if err := setIndex(txn, TableAudit, index); err != nil {
		return err
	}
	txn.Commit()
	return nil
}

// AuditHead is the last audit record, or nil when there is none.
func (s *Store) AuditHead() *relv1.AuditRecord {
	raw, err := s.readTxn().Last(TableAudit, "id")
	if err != nil || raw == nil {
		return nil
	}
	return raw.(*relv1.AuditRecord)
}

// AuditFilter selects audit records; zero fields select everything.
type AuditFilter struct {
	// FromSeq: records with seq >= FromSeq.
	FromSeq uint64
	// SinceUnixNano: records stamped at or after it.
	SinceUnixNano   int64
	Actor, App, Env string
}

func (f AuditFilter) match(r *relv1.AuditRecord) bool {
	return r.GetSeq() >= f.FromSeq && r.GetTimeUnixNano() >= f.SinceUnixNano &&
		(f.Actor == "" || r.GetActor().GetId() == f.Actor) &&
		(f.App == "" || r.GetApp() == f.App) &&
		(f.Env == "" || r.GetEnv() == f.Env)
}

// Audit calls fn with the records f selects, in seq order, until fn
// returns false. It walks the narrowest index the filter allows. It
// returns the audit table's index.
func (s *Store) Audit(ws memdb.WatchSet, f AuditFilter, fn func(*relv1.AuditRecord) bool) (uint64, error) {
	txn := s.readTxn()
	idx := tableIndexOf(txn, ws, TableAudit)
	var (
		it  memdb.ResultIterator
		err error
		// in reports whether a record is still in the walked index's
		// prefix (this actor's, app's or environment's records).
		in = func(*relv1.AuditRecord) bool { return true }
	)
	switch {
	case f.Actor != "":
		it, err = txn.LowerBound(TableAudit, "actor", f.Actor, f.FromSeq)
		in = func(r *relv1.AuditRecord) bool { return r.GetActor().GetId() == f.Actor }
	case f.App != "":
		it, err = txn.LowerBound(TableAudit, "app", f.App, f.FromSeq)
		in = func(r *relv1.AuditRecord) bool { return r.GetApp() == f.App }
	case f.Env != "":
		it, err = txn.LowerBound(TableAudit, "env", f.Env, f.FromSeq)
		in = func(r *relv1.AuditRecord) bool { return r.GetEnv() == f.Env }
	default:
		it, err = txn.LowerBound(TableAudit, "id", f.FromSeq)
	}
	if err != nil {
		return 0, fmt.Errorf("state: audit: %w", err)
	}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		r := raw.(*relv1.AuditRecord)
		if !in(r) {
			break
		}
		if !f.match(r) {
			continue
		}
		if !fn(r) {
			break
		}
	}
	return idx, nil
}
