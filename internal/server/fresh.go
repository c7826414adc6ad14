package server

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// Desired state is level-triggered, and a replica that was cut off from the
// leader applies the entries it missed one after the other when it comes
// back: a rollout's dispatch to the agents it holds and, entries later, the
// rollback that reverted it. Sending each intermediate state would start
// installs the cluster has already taken back (issue 8: hosts behind a
// partitioned server installed the rolled-back release after the heal). So
// a server that has lost contact with the leader (or just started) holds
// desired-state updates until it has applied everything the leader had
// committed when contact came back.

// staleAfter is how long without a word from the leader makes a follower's
// replica stale. The leader heartbeats each follower every 100-200 ms
// (HeartbeatTimeout/10; empty appends are held while idle, raftquiet.go),
// so this is several missed ones.
const staleAfter = 500 * time.Millisecond

// freshness says whether this replica may be trusted to be current.
type freshness struct {
	mu    sync.Mutex
	stale bool
	ready chan struct{} // closed while fresh
}

func newFreshness() *freshness {
	// Stale until proven otherwise: a restarted follower replays its log
	// before it hears from the leader.
	return &freshness{stale: true, ready: make(chan struct{})}
}

func (f *freshness) set(fresh bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case fresh && f.stale:
		f.stale = false
		close(f.ready)
	case !fresh && !f.stale:
		f.stale = true
		f.ready = make(chan struct{})
	}
}

func (f *freshness) isStale() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stale
}

// wait returns true once the replica is fresh, false when ctx ends first.
func (f *freshness) wait(ctx context.Context) bool {
	f.mu.Lock()
	ch := f.ready
	f.mu.Unlock()
	select {
	case <-ch:
		return true
	case <-ctx.Done():
		return false
	}
}

// watchFreshness runs on every server until it stops.
func (s *Server) watchFreshness() {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		s.checkFresh()
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Server) checkFresh() {
	if s.IsLeader() {
		// Entries are applied here before anyone else learns of them.
		s.fresh.set(true)
		return
	}
	if lc := s.raft.LastContact(); lc.IsZero() || time.Since(lc) > staleAfter {
		s.fresh.set(false)
		return
	}
	if !s.fresh.isStale() {
		return
	}
	// Back in contact: catch up with what the leader has committed now.
	conn, err := s.leaderConn()
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, time.Second)
	defer cancel()
	st, err := relv1.NewClusterServiceClient(conn).Status(ctx, &relv1.StatusRequest{})
	if err != nil {
		return
	}
	applied, _ := s.fsm.Applied()
	want := lastCommand(s.raftLogs, applied, st.GetCommitIndex())
	s.waitLocal(ctx, want)
	if applied, _ := s.fsm.Applied(); applied >= want {
		s.fresh.set(true)
	}
}

// maxRaftEntriesScanned bounds lastCommand's walk back through the log.
const maxRaftEntriesScanned = 256

// lastCommand is the index of the last command at or below index in the
// log, or applied when every entry after applied up to index is raft's own
// (the no-op a new leader writes, its barrier, configuration changes):
// those never reach the FSM, whose applied index would then never reach a
// commit index pointing at one. A follower compared its FSM with the
// leader's commit index, so after a leadership change with no command
// since, it stayed stale, and the agents it serves never got their next
// rollout step (seen in the failover bench: a rollout stuck for minutes
// on a host dispatched just before its server lost leadership). An entry
// this replica does not hold yet, or a gap longer than the scan, counts
// as a command.
func lastCommand(logs raft.LogStore, applied, index uint64) uint64 {
	for i := index; i > applied; i-- {
		if index-i >= maxRaftEntriesScanned {
			return index
		}
		var l raft.Log
		if err := logs.GetLog(i, &l); err != nil {
			return index
		}
		if l.Type == raft.LogCommand {
			return i
		}
	}
	return applied
}
