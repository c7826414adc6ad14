package server

import (
	"context"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/relhq/rel/internal/validate"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// Bounds of one agent_sessions entry. A crowd reconnecting after its server
// died is committed in entries of at most this many items or bytes (one
// item always goes, whatever its size), so no entry holds up the log.
const (
	maxSessionItems = validate.MaxAgentSessions
	maxSessionBytes = 1 << 20
)

// sessionBatcher group-commits this server's agent connects (AgentUp) and
// disconnects (AgentDown): one goroutine commits whatever is queued as one
// agent_sessions entry, and while that commit is in flight new items
// queue for the next. An item arriving when nothing is in flight is
// committed at once, so an idle server adds no latency; 10,000 agents
// reconnecting at once are a few dozen entries instead of 10,000.
//
// Order: items of one entry apply ups first, then downs, each in queue
// order, and entries go one at a time. A server queues a session's down
// only once its up was answered, so a session's down never applies before
// its up; a down names its session, so it cannot end a newer one.
type sessionBatcher struct {
	s    *Server
	mu   sync.Mutex
	q    []*sessionItem
	wake chan struct{}
	// beforeCommit, set by tests only, runs before each commit with the
	// ids of the agents the entry connects.
	beforeCommit func(ups []string)
}

// sessionItem is one queued up or down and its waiter.
type sessionItem struct {
	up   *relv1.AgentUp
	down *relv1.AgentDown
	size int
	// taken is set (under the batcher's lock) when the item leaves the
	// queue for a commit: from then on its waiter waits for the answer.
	taken bool
	done  chan sessionAnswer
}

// sessionAnswer is an item's own outcome: the entry's index, or why the
// item was refused (a revoked agent) or the entry failed.
type sessionAnswer struct {
	index uint64
	err   error
}

func newSessionBatcher(s *Server) *sessionBatcher {
	return &sessionBatcher{s: s, wake: make(chan struct{}, 1)}
}

// up records an agent's session and returns the index of the entry that
// did. It is refused on its own (nothing written) when the item is
// invalid or the FSM refuses it; others in the same entry are unaffected.
func (b *sessionBatcher) up(ctx context.Context, up *relv1.AgentUp) (uint64, error) {
	if err := validate.AgentUp(up); err != nil {
		return 0, err
	}
	return b.enqueue(ctx, &sessionItem{up: up, size: proto.Size(up)})
}

// down records a session ended (ignored by the FSM when the agent has a
// newer session).
func (b *sessionBatcher) down(ctx context.Context, down *relv1.AgentDown) (uint64, error) {
	if err := validate.AgentDown(down); err != nil {
		return 0, err
	}
	return b.enqueue(ctx, &sessionItem{down: down, size: proto.Size(down)})
}

func (b *sessionBatcher) enqueue(ctx context.Context, it *sessionItem) (uint64, error) {
	it.done = make(chan sessionAnswer, 1)
	b.mu.Lock()
	b.q = append(b.q, it)
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
	select {
	case a := <-it.done:
		return a.index, a.err
	case <-ctx.Done():
	case <-b.s.ctx.Done():
	}
	b.mu.Lock()
	if !it.taken {
		// Still queued: withdraw it, so nothing is written for a waiter
		// that is gone (a stream closed before its up went out).
		b.q = slices.DeleteFunc(b.q, func(x *sessionItem) bool { return x == it })
		b.mu.Unlock()
		if b.s.ctx.Err() != nil {
			return 0, status.Error(codes.Unavailable, "this server is shutting down: connect to another")
		}
		return 0, context.Cause(ctx)
	}
	b.mu.Unlock()
	// In flight: the answer comes (the commit is bounded), and the caller
	// must know it: a session recorded up needs its down.
	a := <-it.done
	return a.index, a.err
}

// take removes the next entry's items from the queue: at most
// maxSessionItems and maxSessionBytes, at least one.
func (b *sessionBatcher) take() []*sessionItem {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, size := 0, 0
	for n < len(b.q) && n < maxSessionItems {
		if n > 0 && size+b.q[n].size > maxSessionBytes {
			break
		}
		size += b.q[n].size
		b.q[n].taken = true
		n++
	}
	batch := slices.Clone(b.q[:n])
	b.q = slices.Delete(b.q, 0, n)
	return batch
}

func (b *sessionBatcher) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.wake:
		}
		for {
			batch := b.take()
			if len(batch) == 0 {
				break
			}
			b.mu.Lock()
			hook := b.beforeCommit
			b.mu.Unlock()
			if hook != nil {
				var ups []string
				for _, it := range batch {
					if it.up != nil {
						ups = append(ups, it.up.GetAgent().GetId())
					}
				}
				hook(ups)
			}
			b.commit(ctx, batch)
		}
	}
}

// commit applies one entry and answers every item of it.
func (b *sessionBatcher) commit(ctx context.Context, batch []*sessionItem) {
	cmd := &relv1.AgentSessions{}
	// The FSM answers ups first, then downs: pos maps each item to its
	// answer.
	pos := make([]int, len(batch))
	for i, it := range batch {
		if it.up != nil {
			pos[i] = len(cmd.Up)
			cmd.Up = append(cmd.Up, it.up)
		}
	}
	for i, it := range batch {
		if it.down != nil {
			pos[i] = len(cmd.Up) + len(cmd.Down)
			cmd.Down = append(cmd.Down, it.down)
		}
	}
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	a, err := b.s.applyCommand(actx, &relv1.Command{Kind: &relv1.Command_AgentSessions{AgentSessions: cmd}})
	cancel()
	if err == nil {
		b.s.metrics.sessionEntries.Inc()
		b.s.metrics.sessionsBatched.Add(float64(len(batch)))
	}
	for i, it := range batch {
		ans := sessionAnswer{index: a.Index, err: err}
		if err == nil {
			ans.err = a.item(pos[i])
		}
		it.done <- ans
	}
}
