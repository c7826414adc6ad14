package server

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/relhq/rel/internal/retry"
)

// leaderWatch tells the loops that wait out an election (forwarded writes,
// consistent reads) the moment raft sees a new leader. They used to find
// out on their next jittered retry, up to 375 ms later; during a failover
// that sat between the election and the new leader hearing of the reports
// it needs for the next rollout step (issue 10).
type leaderWatch struct {
	mu sync.Mutex
	ch chan struct{} // closed, and replaced, on every leader change
}

// changed returns a channel closed at the next leader change.
func (w *leaderWatch) changed() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ch == nil {
		w.ch = make(chan struct{})
	}
	return w.ch
}

func (w *leaderWatch) notify() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ch != nil {
		close(w.ch)
	}
	w.ch = make(chan struct{})
}

// watchLeaders feeds s.leaders from raft's leader observations until the
// server stops.
func (s *Server) watchLeaders(r *raft.Raft) {
	obs := make(chan raft.Observation, 4)
	o := raft.NewObserver(obs, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	r.RegisterObserver(o)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer r.DeregisterObserver(o)
		for {
			select {
			case <-s.ctx.Done():
				return
			case <-obs:
				s.leaders.notify()
			}
		}
	}()
}

// sleepOrLeader waits d, or until changed is closed (a new leader) and then
// a few milliseconds of jitter, so that the requests that waited spread
// out; it reports whether ctx is still live.
func sleepOrLeader(ctx context.Context, d time.Duration, changed <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	case <-changed:
		return retry.Sleep(ctx, retry.Jitter(5*time.Millisecond))
	}
}
