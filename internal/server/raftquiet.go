package server

import (
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// An idle cluster used to cost the leader 4-5 % of a core and each
// follower 1.5 % (issue 10), almost all of it raft's replication loop:
// with CommitTimeout at 5 ms (server.go says why it is that short) the
// leader sends every follower an AppendEntries every 5-10 ms even when
// there is nothing to say, each one a msgpack encode, a TLS record each
// way and a wake-up of three goroutines on both ends.
//
// quietAppends holds those empty AppendEntries instead: one that repeats
// exactly what the follower last acknowledged (same term, same previous
// entry, same commit index, no entries) waits until there is something to
// say, and is then sent unchanged. It never alters a request nor answers
// for a follower: everything raft sees came from the wire. What wakes a
// held append:
//
//   - entries stored on the leader's log (StoreLogs, before raft triggers
//     their replication; the held request goes out, then raft sends the
//     entries);
//   - this node's FSM applying a command (on the leader: a new commit
//     index the followers should learn, so agents served by followers see
//     the change as soon as before);
//   - another follower's append carrying a higher commit index than any
//     before (commits of entries the FSM does not see: no-ops, barriers,
//     configuration changes);
//   - a heartbeat that failed (a follower restarting or cut off);
//   - maxIdle (a fifth of the leader lease), so that the leader hears
//     from each follower often enough for its lease with heartbeats
//     late, and a follower that lost what it had (or anything we did not
//     think of) is found out within that time;
//   - stop, before leadership transfer and shutdown, which wait on raft's
//     replication goroutines.
//
// Heartbeats (no previous entry, no commit index) are never held: they
// keep the follower's LastContact (freshness, elections) and the leader's
// lease as before.
type quietAppends struct {
	maxIdle time.Duration
	// applied returns this node's last applied index and a channel closed
	// when it changes (fsm.FSM.Applied).
	applied func() (uint64, <-chan struct{})

	mu sync.Mutex
	// wake is closed, and replaced, to release every held append.
	wake chan struct{}
	// acked is, per follower, the empty append it last acknowledged.
	acked map[raft.ServerID]appendKey
	// stored is the highest index written to this node's log.
	stored uint64
	// commit is the highest commit index any append carried.
	commit  uint64
	stopped bool
}

type appendKey struct{ term, prev, commit uint64 }

func newQuietAppends(maxIdle time.Duration, applied func() (uint64, <-chan struct{})) *quietAppends {
	return &quietAppends{maxIdle: maxIdle, applied: applied, wake: make(chan struct{}), acked: map[raft.ServerID]appendKey{}}
}

func isHeartbeat(req *raft.AppendEntriesRequest) bool {
	return len(req.Entries) == 0 && req.PrevLogEntry == 0 && req.LeaderCommitIndex == 0
}

// releaseLocked lets every held append go.
func (q *quietAppends) releaseLocked() {
	close(q.wake)
	q.wake = make(chan struct{})
}

func (q *quietAppends) release() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.releaseLocked()
}

// stop releases every held append and holds none from now on.
func (q *quietAppends) stop() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.stopped = true
	q.releaseLocked()
}

// storedUpTo records entries written to the log and releases held
// appends, which would otherwise delay the entries' replication.
func (q *quietAppends) storedUpTo(index uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.stored = max(q.stored, index)
	q.releaseLocked()
}

// hold waits while req has nothing to tell follower id that it has not
// acknowledged already.
func (q *quietAppends) hold(id raft.ServerID, req *raft.AppendEntriesRequest) {
	if len(req.Entries) > 0 || isHeartbeat(req) {
		return
	}
	key := appendKey{term: req.Term, prev: req.PrevLogEntry, commit: req.LeaderCommitIndex}
	q.mu.Lock()
	if req.LeaderCommitIndex > q.commit {
		q.commit = req.LeaderCommitIndex
		q.releaseLocked()
	}
	// Entries stored after raft built req, or a commit it does not carry
	// yet: send now (checked under mu, so a wake cannot fall between the
	// check and the wait).
	if q.stopped || q.acked[id] != key || q.stored > req.PrevLogEntry || q.commit > req.LeaderCommitIndex {
		q.mu.Unlock()
		return
	}
	wake := q.wake
	q.mu.Unlock()
	applied, appliedCh := q.applied()
	if applied > req.LeaderCommitIndex {
		return
	}
	t := time.NewTimer(q.maxIdle)
	defer t.Stop()
	select {
	case <-wake:
	case <-appliedCh:
	case <-t.C:
	}
}

// sent records what the follower answered to req.
func (q *quietAppends) sent(id raft.ServerID, req *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse, err error) {
	if isHeartbeat(req) {
		if err != nil {
			q.release()
		}
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if err != nil || !resp.Success || resp.Term != req.Term || len(req.Entries) > 0 {
		// Hold nothing until an empty append has gone through again.
		delete(q.acked, id)
		return
	}
	q.acked[id] = appendKey{term: req.Term, prev: req.PrevLogEntry, commit: req.LeaderCommitIndex}
}

// quietTransport is Rel's raft transport (noPipeline) with empty appends
// held by quietAppends.
type quietTransport struct {
	noPipeline
	q *quietAppends
}

func (t quietTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, req *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	t.q.hold(id, req)
	err := t.noPipeline.AppendEntries(id, target, req, resp)
	t.q.sent(id, req, resp, err)
	return err
}

// quietLogs tells quietAppends about entries stored in the log.
type quietLogs struct {
	raft.LogStore
	q *quietAppends
}

func (l quietLogs) StoreLog(log *raft.Log) error {
	err := l.LogStore.StoreLog(log)
	l.q.storedUpTo(log.Index)
	return err
}

func (l quietLogs) StoreLogs(logs []*raft.Log) error {
	err := l.LogStore.StoreLogs(logs)
	if len(logs) > 0 {
		l.q.storedUpTo(logs[len(logs)-1].Index)
	}
	return err
}

// DeleteRange forgets stored entries raft removed (a follower's conflicting
// tail), so that a later leader's appends are held again.
func (l quietLogs) DeleteRange(lo, hi uint64) error {
	err := l.LogStore.DeleteRange(lo, hi)
	l.q.mu.Lock()
	if l.q.stored >= lo && l.q.stored <= hi && lo > 0 {
		l.q.stored = lo - 1
	}
	l.q.mu.Unlock()
	return err
}
