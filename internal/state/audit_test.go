package state

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/relhq/rel/internal/audit"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// auditTrail appends one record per time, at index 1, 2, ...; record i
// (from 1) is stamped times[i-1].
func auditTrail(t *testing.T, s *Store, times ...int64) {
	t.Helper()
	for i, at := range times {
		if err := s.AppendAudit(uint64(i+1), []*relv1.AuditRecord{{TimeUnixNano: at, Action: "create_app", Result: audit.Applied,
			Object: fmt.Sprintf("app-%d", i+1)}}); err != nil {
			t.Fatal(err)
		}
	}
}

func auditRows(t *testing.T, s *Store) []*relv1.AuditRecord {
	t.Helper()
	var out []*relv1.AuditRecord
	if _, err := s.Audit(nil, AuditFilter{}, func(r *relv1.AuditRecord) bool {
		out = append(out, r)
		return true
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func auditHash(t *testing.T, s *Store, seq uint64) []byte {
	t.Helper()
	for _, r := range auditRows(t, s) {
		if r.GetSeq() == seq {
			return r.GetHash()
		}
	}
	t.Fatalf("no audit record %d", seq)
	return nil
}

// checkKeptChain checks the records kept chain to the anchor and to each
// other.
func checkKeptChain(t *testing.T, s *Store) {
	t.Helper()
	ret, err := s.AuditRetention()
	if err != nil {
		t.Fatal(err)
	}
	c := audit.NewChainAfter(ret.GetTrimmedSeq(), ret.GetTrimmedHash())
	for _, r := range auditRows(t, s) {
		if err := c.Add(r); err != nil {
			t.Fatalf("kept chain after anchor %d: %v", ret.GetTrimmedSeq(), err)
		}
	}
}

// TestTrimAudit: a pass removes exactly the prefix the rule allows: from
// the oldest kept, records archived (seq <= the mark) and stamped at or
// before the cutoff, at most max, stopping at the first that is not.
func TestTrimAudit(t *testing.T) {
	// Records 1-8; record 5 is newer than the others (a refusal stamped by
	// a server whose clock runs ahead).
	times := []int64{10, 20, 30, 40, 900, 50, 60, 70}
	for _, tc := range []struct {
		name        string
		mark        uint64
		cutoff      int64
		max         int
		wantRemoved int
	}{
		{"nothing archived", 0, 1000, 100, 0},
		{"up to the mark", 3, 1000, 100, 3},
		{"up to the cutoff", 8, 25, 100, 2},
		{"a record at the cutoff goes", 8, 30, 100, 3},
		{"at most max", 8, 1000, 2, 2},
		{"a newer record in the middle stops it", 8, 80, 100, 4},
		{"every record", 8, 1000, 100, 8},
		{"nothing old enough", 8, 5, 100, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := New()
			auditTrail(t, s, times...)
			if tc.mark > 0 {
				if err := s.MarkAuditArchived(20, tc.mark, auditHash(t, s, tc.mark)); err != nil {
					t.Fatal(err)
				}
			}
			before := auditRows(t, s)
			n, err := s.TrimmableAudit(tc.cutoff, tc.max)
			if err != nil || n != tc.wantRemoved {
				t.Fatalf("TrimmableAudit = %d, %v; want %d", n, err, tc.wantRemoved)
			}
			got, err := s.TrimAudit(21, tc.cutoff, tc.max)
			if err != nil || got != tc.wantRemoved {
				t.Fatalf("TrimAudit removed %d, %v; want %d", got, err, tc.wantRemoved)
			}
			after := auditRows(t, s)
			if len(after) != len(times)-tc.wantRemoved {
				t.Fatalf("%d records kept, want %d", len(after), len(times)-tc.wantRemoved)
			}
			if len(after) > 0 && after[0].GetSeq() != uint64(tc.wantRemoved+1) {
				t.Fatalf("first kept is %d, want %d: not a prefix", after[0].GetSeq(), tc.wantRemoved+1)
			}
			ret, _ := s.AuditRetention()
			if tc.wantRemoved == 0 {
				if ret.GetTrimmedSeq() != 0 || len(ret.GetTrimmedHash()) != 0 {
					t.Fatalf("anchor %d %x after removing nothing", ret.GetTrimmedSeq(), ret.GetTrimmedHash())
				}
			} else {
				last := before[tc.wantRemoved-1]
				if ret.GetTrimmedSeq() != last.GetSeq() || !bytes.Equal(ret.GetTrimmedHash(), last.GetHash()) {
					t.Fatalf("anchor %d %x, want record %d's %x", ret.GetTrimmedSeq(), ret.GetTrimmedHash(), last.GetSeq(), last.GetHash())
				}
			}
			if ret.GetArchivedSeq() != tc.mark {
				t.Errorf("mark %d after a pass, want %d", ret.GetArchivedSeq(), tc.mark)
			}
			checkKeptChain(t, s)
			// A repeat finds nothing left.
			if again, err := s.TrimAudit(22, tc.cutoff, tc.max); err != nil || (again != 0 && tc.max >= len(times)) {
				t.Errorf("repeat removed %d, %v", again, err)
			}
		})
	}
}

// TestAppendAuditAfterTrimAll: with every record removed, the next record
// goes on from the anchor (seq and hash), not from 1 and the zero hash;
// a snapshot keeps the anchor and the mark, and the restored store goes
// on the same way.
func TestAppendAuditAfterTrimAll(t *testing.T) {
	s := New()
	auditTrail(t, s, 10, 20, 30)
	head := auditRows(t, s)[2]
	if err := s.MarkAuditArchived(10, 3, head.GetHash()); err != nil {
		t.Fatal(err)
	}
	if n, err := s.TrimAudit(11, 100, 100); err != nil || n != 3 {
		t.Fatalf("TrimAudit = %d, %v; want every record", n, err)
	}
	if len(auditRows(t, s)) != 0 || s.AuditHead() != nil {
		t.Fatal("records left after trimming all")
	}
	if seq, hash, err := s.AuditHeadSeq(); err != nil || seq != 3 || !bytes.Equal(hash, head.GetHash()) {
		t.Fatalf("AuditHeadSeq = %d %x %v; want the anchor, record 3", seq, hash, err)
	}

	r := copyStore(t, s)
	if ok, why := Equal(s, r); !ok {
		t.Fatalf("restored store differs: %s", why)
	}
	want := &relv1.AuditRetention{ArchivedSeq: 3, ArchivedHash: head.GetHash(), TrimmedSeq: 3, TrimmedHash: head.GetHash()}
	for name, st := range map[string]*Store{"original": s, "restored": r} {
		ret, err := st.AuditRetention()
		if err != nil || ret.GetArchivedSeq() != want.ArchivedSeq || ret.GetTrimmedSeq() != want.TrimmedSeq ||
			!bytes.Equal(ret.GetArchivedHash(), want.ArchivedHash) || !bytes.Equal(ret.GetTrimmedHash(), want.TrimmedHash) {
			t.Fatalf("%s: retention %v, %v; want %v", name, ret, err, want)
		}
		if err := st.AppendAudit(12, []*relv1.AuditRecord{{TimeUnixNano: 40, Action: "trim_audit", Result: audit.Applied}}); err != nil {
			t.Fatal(err)
		}
		next := st.AuditHead()
		if next.GetSeq() != 4 || !bytes.Equal(next.GetPrevHash(), head.GetHash()) {
			t.Fatalf("%s: record after trimming all is %d with prev_hash %x; want 4 chained to record 3's %x", name, next.GetSeq(), next.GetPrevHash(), head.GetHash())
		}
		checkKeptChain(t, st)
	}
	if ok, why := Equal(s, r); !ok {
		t.Fatalf("original and restored differ after the same append: %s", why)
	}
}

// TestMarkAuditArchived: a mark names a record this replica holds, with
// its hash; anything else is refused (ErrConflict) and stores nothing. A
// lower mark is a no-op: the mark never goes back.
func TestMarkAuditArchived(t *testing.T) {
	s := New()
	auditTrail(t, s, 10, 20, 30, 40, 50)
	h := func(seq uint64) []byte { return auditHash(t, s, seq) }
	if err := s.MarkAuditArchived(10, 3, h(3)); err != nil {
		t.Fatal(err)
	}
	mark := func() uint64 {
		ret, err := s.AuditRetention()
		if err != nil {
			t.Fatal(err)
		}
		return ret.GetArchivedSeq()
	}
	for _, tc := range []struct {
		name     string
		seq      uint64
		hash     []byte
		refused  string
		wantMark uint64
	}{
		{"another record's hash", 4, h(3), "record 4's hash is", 3},
		{"a made-up hash", 5, bytes.Repeat([]byte{7}, 32), "does not hold this cluster's trail", 3},
		{"beyond the head", 6, h(5), "beyond the trail's head (record 5)", 3},
		{"record 0", 0, h(1), "beyond the trail's head", 3},
		{"a lower mark", 2, h(2), "", 3},
		{"the same mark", 3, h(3), "", 3},
		{"a higher mark", 5, h(5), "", 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := s.MarkAuditArchived(11, tc.seq, tc.hash)
			if tc.refused != "" {
				if !errors.Is(err, ErrConflict) || !bytes.Contains([]byte(err.Error()), []byte(tc.refused)) {
					t.Fatalf("MarkAuditArchived(%d) = %v, want a conflict saying %q", tc.seq, err, tc.refused)
				}
			} else if err != nil {
				t.Fatal(err)
			}
			if got := mark(); got != tc.wantMark {
				t.Fatalf("mark %d, want %d", got, tc.wantMark)
			}
		})
	}

	// Once trimmed: a mark at the anchor is checked against the anchor's
	// hash; one below it (its record is gone) changes nothing.
	anchor := h(4)
	if n, err := s.TrimAudit(12, 40, 100); err != nil || n != 4 {
		t.Fatalf("TrimAudit = %d, %v; want 4", n, err)
	}
	if err := s.MarkAuditArchived(13, 4, h(5)); !errors.Is(err, ErrConflict) {
		t.Fatalf("a mark of the anchor with another hash: %v, want a conflict", err)
	}
	for _, seq := range []uint64{2, 4} {
		hash := anchor
		if seq == 2 {
			hash = bytes.Repeat([]byte{1}, 32)
		}
		if err := s.MarkAuditArchived(13, seq, hash); err != nil {
			t.Fatalf("a mark of record %d, at or below the anchor: %v", seq, err)
		}
	}
	if got := mark(); got != 5 {
		t.Fatalf("mark %d after marks below it, want 5", got)
	}
}
