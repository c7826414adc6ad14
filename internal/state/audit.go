package state

import (
	"bytes"
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

// singletonIndex indexes a table of one row: every row has the same key.
type singletonIndex struct{}

func (singletonIndex) FromObject(any) (bool, []byte, error) { return true, []byte{0}, nil }

func (singletonIndex) FromArgs(args ...any) ([]byte, error) {
	if len(args) != 0 {
		return nil, fmt.Errorf("state: a one-row table's index takes no argument, got %d", len(args))
	}
	return []byte{0}, nil
}

// auditRetention is the retention row in txn: never nil (a zero row
// before the first mark). Shared with the store: do not modify it.
func auditRetention(txn *memdb.Txn) (*relv1.AuditRetention, error) {
	raw, err := txn.First(TableAuditRetention, "id")
	if err != nil {
		return nil, fmt.Errorf("state: audit retention: %w", err)
	}
	if raw == nil {
		return &relv1.AuditRetention{}, nil
	}
	return raw.(*relv1.AuditRetention), nil
}

// auditHead is the seq and hash the next record chains to: the last
// record's, else retention's anchor (every record kept was removed), else
// 0 and the zero hash.
func auditHead(txn *memdb.Txn) (uint64, []byte, error) {
	last, err := txn.Last(TableAudit, "id")
	if err != nil {
		return 0, nil, fmt.Errorf("state: last audit record: %w", err)
	}
	if last != nil {
		l := last.(*relv1.AuditRecord)
		return l.GetSeq(), l.GetHash(), nil
	}
	ret, err := auditRetention(txn)
	if err != nil {
		return 0, nil, err
	}
	if ret.GetTrimmedSeq() > 0 {
		return ret.GetTrimmedSeq(), ret.GetTrimmedHash(), nil
	}
	return 0, audit.ZeroHash, nil
}

// AppendAudit appends records to the audit trail, in order, in one
// transaction: each gets the next seq, the raft index, and its place in
// the hash chain (prev_hash, hash), after the last record or, when
// retention removed every record, after its anchor. The FSM calls it in
// the same Apply as the change the records describe. The records passed
// are not modified.
func (s *Store) AppendAudit(index uint64, recs []*relv1.AuditRecord) error {
	if len(recs) == 0 {
		return nil
	}
	txn := s.writeTxn()
	defer txn.Abort()
	seq, prev, err := auditHead(txn)
	if err != nil {
		return err
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

// AuditHeadSeq is the seq and hash of the chain's head: the last record,
// or retention's anchor when every record was removed, or 0 and the zero
// hash for an empty trail.
func (s *Store) AuditHeadSeq() (uint64, []byte, error) {
	return auditHead(s.readTxn())
}

// AuditRetention is where the trail's retention stands: the archived mark
// and the anchor (zero before any). Shared with the store: do not modify
// it.
func (s *Store) AuditRetention() (*relv1.AuditRetention, error) {
	return auditRetention(s.readTxn())
}

// MarkAuditArchived records that an archive covers records 1..seq, the
// last with hash. It refuses (ErrConflict) a seq beyond the head and a
// hash that is not the one this replica holds for seq (the record's, or
// the anchor's when seq is the anchor); a seq below the anchor, whose
// record was removed, or at or below the mark changes nothing. The mark
// never goes back.
func (s *Store) MarkAuditArchived(index, seq uint64, hash []byte) error {
	txn := s.writeTxn()
	defer txn.Abort()
	ret, err := auditRetention(txn)
	if err != nil {
		return err
	}
	head, _, err := auditHead(txn)
	if err != nil {
		return err
	}
	if seq == 0 || seq > head {
		return newError(ErrConflict, fmt.Sprintf(
			"audit record %d is beyond the trail's head (record %d): mark only records an archive holds ('relctl audit archive' marks what it wrote)", seq, head))
	}
	switch {
	case seq < ret.GetTrimmedSeq():
		// Removed, so archived before: nothing to check it against.
		return nil
	case seq == ret.GetTrimmedSeq():
		if !bytes.Equal(hash, ret.GetTrimmedHash()) {
			return newError(ErrConflict, fmt.Sprintf(
				"audit record %d's hash is %s here, not %s: the archive does not hold this cluster's trail; check it with 'relctl audit verify --archive FILE'",
				seq, audit.HexHash(ret.GetTrimmedHash()), audit.HexHash(hash)))
		}
		return nil
	}
	raw, err := txn.First(TableAudit, "id", seq)
	if err != nil {
		return fmt.Errorf("state: audit record %d: %w", seq, err)
	}
	if raw == nil {
		// Records from the anchor to the head are contiguous: this is a
		// broken store, not a bad request.
		return fmt.Errorf("state: audit record %d is missing between the anchor %d and the head %d", seq, ret.GetTrimmedSeq(), head)
	}
	if rec := raw.(*relv1.AuditRecord); !bytes.Equal(rec.GetHash(), hash) {
		return newError(ErrConflict, fmt.Sprintf(
			"audit record %d's hash is %s here, not %s: the archive does not hold this cluster's trail; check it with 'relctl audit verify --archive FILE'",
			seq, audit.HexHash(rec.GetHash()), audit.HexHash(hash)))
	}
	if seq <= ret.GetArchivedSeq() {
		return nil
	}
	row := proto.Clone(ret).(*relv1.AuditRetention)
	row.ArchivedSeq, row.ArchivedHash = seq, append([]byte(nil), hash...)
	if err := txn.Insert(TableAuditRetention, row); err != nil {
		return fmt.Errorf("state: audit retention: %w", err)
	}
	if err := setIndex(txn, TableAudit, index); err != nil {
		return err
	}
	txn.Commit()
	return nil
}

// trimmableAudit are the records a TrimAudit at cutoff would remove: from
// the oldest kept, in seq order, while archived (seq <= the mark) and
// stamped at or before cutoff, at most limit, up to the first that is
// not.
func trimmableAudit(txn *memdb.Txn, ret *relv1.AuditRetention, cutoff int64, limit int) ([]*relv1.AuditRecord, error) {
	it, err := txn.Get(TableAudit, "id")
	if err != nil {
		return nil, fmt.Errorf("state: audit: %w", err)
	}
	var out []*relv1.AuditRecord
	for raw := it.Next(); raw != nil && len(out) < limit; raw = it.Next() {
		r := raw.(*relv1.AuditRecord)
		if r.GetSeq() > ret.GetArchivedSeq() || r.GetTimeUnixNano() > cutoff {
			break
		}
		out = append(out, r)
	}
	return out, nil
}

// TrimmableAudit counts the records a TrimAudit at cutoff would remove
// (at most limit), so the leader proposes a pass only with work.
func (s *Store) TrimmableAudit(cutoff int64, limit int) (int, error) {
	txn := s.readTxn()
	ret, err := auditRetention(txn)
	if err != nil {
		return 0, err
	}
	recs, err := trimmableAudit(txn, ret, cutoff, limit)
	return len(recs), err
}

// TrimAudit is the audit trail's retention pass: it removes the records
// trimmableAudit picks and makes the last of them the anchor, from which
// the kept chain (or the next record appended) goes on. It returns how
// many it removed; a repeat finds none left.
func (s *Store) TrimAudit(index uint64, cutoff int64, limit int) (int, error) {
	txn := s.writeTxn()
	defer txn.Abort()
	ret, err := auditRetention(txn)
	if err != nil {
		return 0, err
	}
	recs, err := trimmableAudit(txn, ret, cutoff, limit)
	if err != nil || len(recs) == 0 {
		return 0, err
	}
	for _, r := range recs {
		if err := txn.Delete(TableAudit, r); err != nil {
			return 0, fmt.Errorf("state: trim audit record %d: %w", r.GetSeq(), err)
		}
	}
	last := recs[len(recs)-1]
	row := proto.Clone(ret).(*relv1.AuditRetention)
	row.TrimmedSeq, row.TrimmedHash = last.GetSeq(), append([]byte(nil), last.GetHash()...)
	if err := txn.Insert(TableAuditRetention, row); err != nil {
		return 0, fmt.Errorf("state: audit retention: %w", err)
	}
	if err := setIndex(txn, TableAudit, index); err != nil {
		return 0, err
	}
	txn.Commit()
	return len(recs), nil
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
	idx, _, err := s.AuditWithRetention(ws, f, fn)
	return idx, err
}

// AuditWithRetention is Audit that also returns the retention row read
// in the same transaction as the records, so that the anchor a client is
// told is the one the records it got chain to.
func (s *Store) AuditWithRetention(ws memdb.WatchSet, f AuditFilter, fn func(*relv1.AuditRecord) bool) (uint64, *relv1.AuditRetention, error) {
	txn := s.readTxn()
	idx := tableIndexOf(txn, ws, TableAudit)
	ret, err := auditRetention(txn)
	if err != nil {
		return 0, nil, err
	}
	var (
		it memdb.ResultIterator
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
		return 0, nil, fmt.Errorf("state: audit: %w", err)
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
	return idx, ret, nil
}
