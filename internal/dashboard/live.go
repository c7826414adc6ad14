package dashboard

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// liveFragments are the parts of the rollout page a live update
// replaces, by element id; each is a template of rollout.html.
var liveFragments = []string{"rollout-head", "rollout-controls", "rollout-waves", "rollout-hosts", "rollout-events"}

// liveUpdate is one change, rendered: fragments by element id, which the
// page replaces ("update") or puts first ("prepend", the events page).
type liveUpdate struct {
	index     uint64
	event     string
	fragments map[string]string
	err       error
}

// live streams a rollout page's changes as Server-Sent Events: an
// "update" event with the page's fragments re-rendered (JSON: element id
// to HTML) each time the rollout changes, comments as heartbeats, and
// "ended" when the session ends. Changes are found by the server's
// blocking query on the rollout (GetRollout with wait_index, on the
// state store's watch sets), never by polling.
//
// One goroutine (this handler) writes the response; a second one waits
// on the blocking query and hands renders over. Both end when the client
// leaves or the server shuts down (Config.Context).
func (d *Dashboard) live(w http.ResponseWriter, r *http.Request, v *view) {
	id := r.PathValue("id")
	index, _ := strconv.ParseUint(r.URL.Query().Get("index"), 10, 64)
	if h := r.Header.Get("Last-Event-ID"); h != "" {
		if n, err := strconv.ParseUint(h, 10, 64); err == nil {
			index = n
		}
	}
	d.stream(w, r, v, "rollout "+id, func(ctx context.Context, out chan<- liveUpdate) {
		d.watchRollout(ctx, v, id, index, out)
	})
}

// stream serves one Server-Sent Events response: what watch hands over,
// heartbeats, and "ended" or "failed" when the session or a read ends.
// This handler is the response's one writer; watch runs in a second
// goroutine until the client leaves or the server shuts down.
func (d *Dashboard) stream(w http.ResponseWriter, r *http.Request, v *view, what string, watch func(ctx context.Context, out chan<- liveUpdate)) {
	rc := http.NewResponseController(w)
	// The server's read and write timeouts are for ordinary requests;
	// a stream sets its own write deadline before each write.
	_ = rc.SetReadDeadline(time.Time{})

	ctx, cancel := context.WithCancel(r.Context())
	stop := context.AfterFunc(d.cfg.Context, cancel)
	defer stop()

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)

	updates := make(chan liveUpdate)
	var wg sync.WaitGroup
	// Cancel, then wait: the waiter leaves its blocking query and its send.
	defer wg.Wait()
	defer cancel()
	wg.Add(1)
	go func() {
		defer wg.Done()
		watch(ctx, updates)
	}()

	write := func(format string, args ...any) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(d.cfg.Heartbeat + 10*time.Second))
		if _, err := fmt.Fprintf(w, format, args...); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !write(": stream of %s\nretry: 2000\n\n", what) {
		return
	}
	beat := time.NewTicker(d.cfg.Heartbeat)
	defer beat.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-beat.C:
			if _, err := d.principal(v.Session); err != nil {
				write("event: ended\ndata: %s\n\n", status.Convert(err).Message())
				return
			}
			if !write(": heartbeat\n\n") {
				return
			}
		case u := <-updates:
			if u.err != nil {
				// A session that ended (its token revoked or expired) sends
				// the page to the login form; anything else stops the stream.
				name := "failed"
				if status.Code(u.err) == codes.Unauthenticated {
					name = "ended"
				}
				write("event: %s\ndata: %s\n\n", name, status.Convert(u.err).Message())
				return
			}
			body, err := json.Marshal(u.fragments)
			if err != nil {
				return
			}
			event := u.event
			if event == "" {
				event = "update"
			}
			if !write("id: %d\nevent: %s\ndata: %s\n\n", u.index, event, body) {
				return
			}
		}
	}
}

// watchRollout waits for each change of the rollout past index and
// sends it rendered, until ctx ends or a read fails.
func (d *Dashboard) watchRollout(ctx context.Context, v *view, id string, index uint64, out chan<- liveUpdate) {
	for ctx.Err() == nil {
		// Re-resolve the token for each read: a session whose token was
		// revoked reads nothing more.
		p, err := d.principal(v.Session)
		if err == nil {
			v = &view{Nav: v.Nav, Session: v.Session, Who: p.String(), p: p}
		}
		var data *rolloutData
		if err == nil {
			data, err = d.rolloutData(ctx, v, id, index)
		}
		if ctx.Err() != nil {
			return
		}
		// The read may have waited long: the token may have been revoked
		// meanwhile, and then what it read is not sent.
		if err == nil {
			_, err = d.principal(v.Session)
		}
		u := liveUpdate{err: err}
		if err == nil {
			if data.Index <= index {
				continue // the blocking query's wait ended with no change
			}
			index = data.Index
			u.index = index
			u.fragments, u.err = d.renderFragments(v, data)
		}
		if !handOver(ctx, out, u) {
			return
		}
	}
}

// handOver gives u to the stream's writer; false when the waiter is to
// stop (ctx ended, or u ends the stream with an error).
func handOver(ctx context.Context, out chan<- liveUpdate, u liveUpdate) bool {
	select {
	case out <- u:
		return u.err == nil
	case <-ctx.Done():
		return false
	}
}

func (d *Dashboard) renderFragments(v *view, data *rolloutData) (map[string]string, error) {
	v.Data = data
	out := make(map[string]string, len(liveFragments))
	t := d.pages["rollout.html"]
	for _, name := range liveFragments {
		var buf bytes.Buffer
		if err := t.ExecuteTemplate(&buf, name, v); err != nil {
			return nil, err
		}
		out[name] = buf.String()
	}
	return out, nil
}
