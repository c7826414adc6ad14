package state

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// Limits of the requests table. They decide what every replica keeps, so
// they are constants of the build, not settings: a request sent again
// within RequestTTL of its first commit is answered with the first answer,
// and at most MaxRequests answers are kept (the oldest go first).
const (
	RequestTTL  = time.Hour
	MaxRequests = 20_000
)

// BeginRequest is the FSM's first step for a command carrying request id
// id, stamped at now: it drops the records stamped more than ttl before
// now, oldest first, and returns the first answer recorded for id, or nil
// when the request is new.
//
// Records are dropped in the order they were made and the dropping stops
// at the first record not yet expired, so the table always holds one
// unbroken run of records (RecordRequest counts on it). Stamps come from
// the servers' clocks, which may disagree a little: a record stamped
// later than an older one outlives its expiry until that one goes.
func (s *Store) BeginRequest(id string, now int64, ttl time.Duration) (*relv1.RequestRecord, error) {
	txn := s.writeTxn()
	defer txn.Abort()
	cutoff := now - int64(ttl)
	dropped := false
	for {
		raw, err := txn.First(TableRequests, "seq")
		if err != nil {
			return nil, fmt.Errorf("state: oldest request: %w", err)
		}
		if raw == nil || raw.(*relv1.RequestRecord).GetStampedUnixNano() >= cutoff {
			break
		}
		if err := txn.Delete(TableRequests, raw); err != nil {
			return nil, fmt.Errorf("state: expire request: %w", err)
		}
		dropped = true
	}
	raw, err := txn.First(TableRequests, "id", id)
	if err != nil {
		return nil, fmt.Errorf("state: lookup request: %w", err)
	}
	if dropped {
		txn.Commit()
	}
	if raw == nil {
		return nil, nil
	}
	return raw.(*relv1.RequestRecord), nil
}

// RecordRequest records the first answer to a request id (one BeginRequest
// found new) as the newest record, then drops the oldest records while
// more than limit are kept.
func (s *Store) RecordRequest(rec *relv1.RequestRecord, limit int) error {
	txn := s.writeTxn()
	defer txn.Abort()
	row := proto.Clone(rec).(*relv1.RequestRecord)
	row.Seq = 1
	last, err := txn.Last(TableRequests, "seq")
	if err != nil {
		return fmt.Errorf("state: newest request: %w", err)
	}
	if last != nil {
		row.Seq = last.(*relv1.RequestRecord).GetSeq() + 1
	}
	if err := txn.Insert(TableRequests, row); err != nil {
		return fmt.Errorf("state: insert request: %w", err)
	}
	// The records are the unbroken run first.Seq..row.Seq (see
	// BeginRequest): there are row.Seq-first.Seq+1 of them.
	for limit > 0 {
		raw, err := txn.First(TableRequests, "seq")
		if err != nil {
			return fmt.Errorf("state: oldest request: %w", err)
		}
		if raw == nil || raw.(*relv1.RequestRecord).GetSeq()+uint64(limit) > row.Seq {
			break
		}
		if err := txn.Delete(TableRequests, raw); err != nil {
			return fmt.Errorf("state: evict request: %w", err)
		}
	}
	txn.Commit()
	return nil
}

// Request returns the recorded first answer to a request id, or nil. It
// reads the replica as it is: a record past its TTL stays until the next
// request drops it.
func (s *Store) Request(id string) *relv1.RequestRecord {
	raw, err := s.readTxn().First(TableRequests, "id", id)
	if err != nil || raw == nil {
		return nil
	}
	return raw.(*relv1.RequestRecord)
}

// Requests lists the records, oldest first.
func (s *Store) Requests() []*relv1.RequestRecord {
	it, err := s.readTxn().Get(TableRequests, "seq")
	if err != nil {
		return nil
	}
	var out []*relv1.RequestRecord
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*relv1.RequestRecord))
	}
	return out
}
