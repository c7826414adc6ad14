package server

import (
	"testing"

	"github.com/hashicorp/raft"
)

// TestLastCommand: a follower waits for the last command at or below the
// leader's commit index, not for raft's own entries after it, which its
// FSM never applies.
func TestLastCommand(t *testing.T) {
	logs := raft.NewInmemStore()
	types := map[uint64]raft.LogType{
		1: raft.LogConfiguration, 2: raft.LogCommand, 3: raft.LogCommand,
		4: raft.LogNoop, 5: raft.LogBarrier, // a new leader's first entries
		6: raft.LogCommand, 7: raft.LogNoop,
	}
	for i := uint64(1); i <= 7; i++ {
		if err := logs.StoreLog(&raft.Log{Index: i, Term: 1, Type: types[i]}); err != nil {
			t.Fatal(err)
		}
	}
	long := raft.NewInmemStore()
	for i := uint64(1); i <= maxRaftEntriesScanned+10; i++ {
		typ := raft.LogNoop
		if i == 1 {
			typ = raft.LogCommand
		}
		if err := long.StoreLog(&raft.Log{Index: i, Term: 1, Type: typ}); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name           string
		logs           raft.LogStore
		applied, index uint64
		want           uint64
	}{
		{"commit is a command", logs, 2, 3, 3},
		{"commit is a new leader's barrier after the last command applied", logs, 3, 5, 3},
		{"a command before the barrier is not applied yet", logs, 2, 5, 3},
		{"a command between no-ops", logs, 3, 7, 6},
		{"all applied", logs, 6, 6, 6},
		{"an entry this replica does not hold yet counts as a command", logs, 6, 9, 9},
		{"a gap longer than the scan counts as a command", long, 1, maxRaftEntriesScanned + 10, maxRaftEntriesScanned + 10},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := lastCommand(tc.logs, tc.applied, tc.index); got != tc.want {
				t.Errorf("lastCommand(applied %d, index %d) = %d, want %d", tc.applied, tc.index, got, tc.want)
			}
		})
	}
}
