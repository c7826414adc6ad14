package server

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// fakeApplied stands in for fsm.FSM.Applied.
type fakeApplied struct {
	mu    sync.Mutex
	index uint64
	ch    chan struct{}
}

func newFakeApplied(index uint64) *fakeApplied {
	return &fakeApplied{index: index, ch: make(chan struct{})}
}

func (f *fakeApplied) get() (uint64, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.index, f.ch
}

func (f *fakeApplied) set(index uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.index = index
	close(f.ch)
	f.ch = make(chan struct{})
}

func emptyAppend(term, prev, commit uint64) *raft.AppendEntriesRequest {
	return &raft.AppendEntriesRequest{Term: term, PrevLogEntry: prev, PrevLogTerm: term, LeaderCommitIndex: commit}
}

var ok = &raft.AppendEntriesResponse{Success: true, Term: 3}

// holdReturns runs hold in the background and reports on a channel when it
// returns.
func holdReturns(q *quietAppends, id raft.ServerID, req *raft.AppendEntriesRequest) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		q.hold(id, req)
		close(done)
	}()
	return done
}

// returnsSoon fails unless done is closed within a deadline generous enough
// for a loaded machine.
func returnsSoon(t *testing.T, done <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("%s: append still held after 5s", what)
	}
}

// stillHeld fails if done closes within a short while: the append is held
// (maxIdle is an hour in these tests, so nothing but a wake releases it).
func stillHeld(t *testing.T, done <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-done:
		t.Fatalf("%s: append went out, want it held", what)
	case <-time.After(50 * time.Millisecond):
	}
}

// TestQuietAppendsSendWhenThereIsSomethingToSay: only an empty append that
// repeats what the follower acknowledged is held; anything else goes out at
// once.
func TestQuietAppendsSendWhenThereIsSomethingToSay(t *testing.T) {
	const id = raft.ServerID("s2")
	tests := []struct {
		name string
		// prepare runs on a fresh quietAppends (stored up to 10, applied
		// 10) before hold is called with req.
		prepare func(q *quietAppends)
		req     *raft.AppendEntriesRequest
	}{
		{"nothing acknowledged yet", func(q *quietAppends) {}, emptyAppend(3, 10, 10)},
		{"heartbeat", func(q *quietAppends) { q.sent(id, emptyAppend(3, 0, 0), ok, nil) }, emptyAppend(3, 0, 0)},
		{"entries", func(q *quietAppends) { q.sent(id, emptyAppend(3, 10, 10), ok, nil) },
			&raft.AppendEntriesRequest{Term: 3, PrevLogEntry: 10, LeaderCommitIndex: 10, Entries: []*raft.Log{{Index: 11, Term: 3}}}},
		{"new commit index", func(q *quietAppends) { q.sent(id, emptyAppend(3, 10, 9), ok, nil) }, emptyAppend(3, 10, 10)},
		{"new term", func(q *quietAppends) {
			q.sent(id, emptyAppend(2, 10, 10), &raft.AppendEntriesResponse{Success: true, Term: 2}, nil)
		}, emptyAppend(3, 10, 10)},
		{"last one failed", func(q *quietAppends) {
			q.sent(id, emptyAppend(3, 10, 10), ok, nil)
			q.sent(id, emptyAppend(3, 10, 10), nil, errors.New("connection reset"))
		}, emptyAppend(3, 10, 10)},
		{"last one refused", func(q *quietAppends) {
			q.sent(id, emptyAppend(3, 10, 10), ok, nil)
			q.sent(id, emptyAppend(3, 10, 10), &raft.AppendEntriesResponse{Success: false, Term: 3}, nil)
		}, emptyAppend(3, 10, 10)},
		{"last one carried entries", func(q *quietAppends) {
			q.sent(id, emptyAppend(3, 10, 10), ok, nil)
			q.sent(id, &raft.AppendEntriesRequest{Term: 3, PrevLogEntry: 9, LeaderCommitIndex: 10, Entries: []*raft.Log{{Index: 10, Term: 3}}}, ok, nil)
		}, emptyAppend(3, 10, 10)},
		{"entries stored since it was built", func(q *quietAppends) {
			q.sent(id, emptyAppend(3, 10, 10), ok, nil)
			q.storedUpTo(11)
		}, emptyAppend(3, 10, 10)},
		{"another follower carried a higher commit", func(q *quietAppends) {
			q.sent(id, emptyAppend(3, 10, 10), ok, nil)
			q.hold("s3", emptyAppend(3, 11, 11))
		}, emptyAppend(3, 10, 10)},
		{"stopped", func(q *quietAppends) {
			q.sent(id, emptyAppend(3, 10, 10), ok, nil)
			q.stop()
		}, emptyAppend(3, 10, 10)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := newQuietAppends(time.Hour, newFakeApplied(10).get)
			q.storedUpTo(10)
			tc.prepare(q)
			returnsSoon(t, holdReturns(q, id, tc.req), tc.name)
		})
	}
}

// TestQuietAppendsWake: a held append goes out when there is something to
// say, or after maxIdle.
func TestQuietAppendsWake(t *testing.T) {
	const id = raft.ServerID("s2")
	tests := []struct {
		name    string
		maxIdle time.Duration
		wake    func(q *quietAppends, a *fakeApplied)
	}{
		{"entries stored", time.Hour, func(q *quietAppends, a *fakeApplied) { q.storedUpTo(11) }},
		{"a command applied (a new commit)", time.Hour, func(q *quietAppends, a *fakeApplied) { a.set(11) }},
		{"another follower's append carries a new commit", time.Hour, func(q *quietAppends, a *fakeApplied) { q.hold("s3", emptyAppend(3, 11, 11)) }},
		{"a heartbeat failed", time.Hour, func(q *quietAppends, a *fakeApplied) {
			q.sent("s3", emptyAppend(3, 0, 0), nil, errors.New("connection refused"))
		}},
		{"stop (leadership transfer, shutdown)", time.Hour, func(q *quietAppends, a *fakeApplied) { q.stop() }},
		{"maxIdle", 20 * time.Millisecond, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := newFakeApplied(10)
			q := newQuietAppends(tc.maxIdle, a.get)
			q.storedUpTo(10)
			q.sent(id, emptyAppend(3, 10, 10), ok, nil)
			done := holdReturns(q, id, emptyAppend(3, 10, 10))
			if tc.wake != nil {
				stillHeld(t, done, tc.name)
				// A successful heartbeat says nothing new.
				q.sent("s3", emptyAppend(3, 0, 0), ok, nil)
				stillHeld(t, done, tc.name+", after a heartbeat")
				tc.wake(q, a)
			}
			returnsSoon(t, done, tc.name)
		})
	}
}

// TestQuietLogsForgetDeletedTail: a follower's conflicting tail removed
// from the log no longer counts as stored entries, so this node holds
// empty appends again once it leads.
func TestQuietLogsForgetDeletedTail(t *testing.T) {
	q := newQuietAppends(time.Hour, newFakeApplied(10).get)
	logs := quietLogs{LogStore: raft.NewInmemStore(), q: q}
	var entries []*raft.Log
	for i := uint64(1); i <= 12; i++ {
		entries = append(entries, &raft.Log{Index: i, Term: 2, Type: raft.LogCommand})
	}
	if err := logs.StoreLogs(entries); err != nil {
		t.Fatal(err)
	}
	if err := logs.DeleteRange(11, 12); err != nil {
		t.Fatal(err)
	}
	const id = raft.ServerID("s2")
	q.sent(id, emptyAppend(3, 10, 10), ok, nil)
	stillHeld(t, holdReturns(q, id, emptyAppend(3, 10, 10)), "after the tail 11-12 was deleted")
	q.stop()
}
