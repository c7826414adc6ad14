package state

import (
	"fmt"
	"testing"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// benchHistory is a store with n closed history entries over 1,000 hosts
// (and one open entry per host), as a fleet's quarter might leave.
func benchHistory(b *testing.B, n int) *Store {
	b.Helper()
	s := New()
	txn := s.writeTxn()
	for i := range n {
		h := &relv1.HistoryEntry{App: "web", AgentId: fmt.Sprintf("host-%d", i%1000), Version: fmt.Sprintf("1.%d.0", i/1000),
			FromUnixNano: int64(i), ToUnixNano: int64(i + 1), Outcome: OutcomeReplaced, CreateIndex: uint64(i + 1)}
		if err := putHistory(txn, uint64(i+1), h); err != nil {
			b.Fatal(err)
		}
	}
	for h := range 1000 {
		if err := putHistory(txn, uint64(n+h+1), &relv1.HistoryEntry{App: "web", AgentId: fmt.Sprintf("host-%d", h), Version: "2.0.0", FromUnixNano: int64(n), CreateIndex: uint64(n + h + 1)}); err != nil {
			b.Fatal(err)
		}
	}
	txn.Commit()
	return s
}

// BenchmarkFoldHistory: one pass (5,000 entries folded) over 100,000
// closed entries: what applying one FoldHistory entry costs every replica.
// Each op folds 5,000 more of the same store (20 passes empty it).
func BenchmarkFoldHistory(b *testing.B) {
	s := benchHistory(b, 100_000)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%20 == 0 && i > 0 {
			b.StopTimer()
			s = benchHistory(b, 100_000)
			b.StartTimer()
		}
		if n, err := s.FoldHistory(uint64(1<<40+i), 1<<62, 5000); err != nil || n != 5000 {
			b.Fatal(n, err)
		}
	}
}

// BenchmarkFoldableHistory: the leader's look before a pass, over
// 100,000 closed entries.
func BenchmarkFoldableHistory(b *testing.B) {
	s := benchHistory(b, 100_000)
	for b.Loop() {
		if n, err := s.FoldableHistory(1<<62, 5000); err != nil || n != 5000 {
			b.Fatal(n, err)
		}
	}
}
