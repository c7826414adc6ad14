package agent

import (
	"slices"
	"strings"
	"sync"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// reportQueue holds the reports not yet handed to a stream, coalesced to the
// latest one per app: while the stream is down, or the send loop is busy
// with an earlier message, a newer report for an app replaces the older one
// instead of queueing behind it. Putting never blocks, so installs never
// wait for the network.
type reportQueue struct {
	mu      sync.Mutex
	pending map[string]*relv1.AppReport
	// ready holds one token while pending is non-empty (and maybe spuriously
	// after a take): the send loop selects on it.
	ready chan struct{}
}

func newReportQueue() *reportQueue {
	return &reportQueue{pending: map[string]*relv1.AppReport{}, ready: make(chan struct{}, 1)}
}

// put records r as the latest report for its app and wakes the send loop.
func (q *reportQueue) put(r *relv1.AppReport) {
	q.mu.Lock()
	q.pending[r.GetApp()] = r
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// take removes and returns every pending report, sorted by app.
func (q *reportQueue) take() []*relv1.AppReport {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.pending) == 0 {
		return nil
	}
	out := make([]*relv1.AppReport, 0, len(q.pending))
	for _, r := range q.pending {
		out = append(out, r)
	}
	clear(q.pending)
	slices.SortFunc(out, func(a, b *relv1.AppReport) int { return strings.Compare(a.GetApp(), b.GetApp()) })
	return out
}

// putBack returns reports a failed send could not deliver, except for apps
// that got a newer report meanwhile: order per app is kept.
func (q *reportQueue) putBack(rs []*relv1.AppReport) {
	q.mu.Lock()
	n := 0
	for _, r := range rs {
		if _, newer := q.pending[r.GetApp()]; !newer {
			q.pending[r.GetApp()] = r
			n++
		}
	}
	q.mu.Unlock()
	if n > 0 {
		select {
		case q.ready <- struct{}{}:
		default:
		}
	}
}
