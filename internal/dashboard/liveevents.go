package dashboard

import (
	"bytes"
	"context"
	"net/http"
	"slices"
	"strconv"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// eventsWait is how long one blocking read of the live events page waits
// for a new event before it looks at the session again.
const eventsWait = 10000 // ms

// liveEvents streams the events page's new rows as Server-Sent Events: a
// "prepend" event with the rows (newest first) of each event after the
// seq the page was rendered with, in its filters. New events are found by
// the server's blocking read (ListEvents with wait_ms, on the state
// store's watch sets), never by polling.
func (d *Dashboard) liveEvents(w http.ResponseWriter, r *http.Request, v *view) {
	q := r.URL.Query()
	after, _ := strconv.ParseUint(q.Get("after"), 10, 64)
	if h := r.Header.Get("Last-Event-ID"); h != "" {
		if n, err := strconv.ParseUint(h, 10, 64); err == nil {
			after = n
		}
	}
	filter := &relv1.EventFilter{App: q.Get("app"), Env: q.Get("env"), Types: q.Get("type")}
	d.stream(w, r, v, "events", func(ctx context.Context, out chan<- liveUpdate) {
		d.watchEvents(ctx, v, filter, after, out)
	})
}

// watchEvents hands over each batch of new events after seq, rendered,
// until ctx ends or a read fails.
func (d *Dashboard) watchEvents(ctx context.Context, v *view, filter *relv1.EventFilter, after uint64, out chan<- liveUpdate) {
	for ctx.Err() == nil {
		// Re-resolve the token for each read, and again after it (the
		// read may have waited long): a revoked session gets nothing more.
		p, err := d.principal(v.Session)
		var resp *relv1.ListEventsResponse
		if err == nil {
			v = &view{Nav: v.Nav, Session: v.Session, Who: p.String(), p: p}
			resp, err = call[*relv1.ListEventsResponse](ctx, d, v, relv1.EventService_ListEvents_FullMethodName,
				&relv1.ListEventsRequest{SinceSeq: after, Filter: filter, WaitMs: eventsWait, PageSize: clusterEventsShown})
		}
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			_, err = d.principal(v.Session)
		}
		u := liveUpdate{err: err, event: "prepend"}
		if err == nil {
			evs := resp.GetEvents()
			if len(evs) == 0 {
				continue // the wait ended with nothing new
			}
			after = evs[len(evs)-1].GetSeq()
			u.index = after
			evs = slices.Clone(evs)
			slices.Reverse(evs)
			var b bytes.Buffer
			if err := d.pages["events.html"].ExecuteTemplate(&b, "event-rows", evs); err != nil {
				u.err = err
			}
			u.fragments = map[string]string{"events-body": b.String()}
		}
		if !handOver(ctx, out, u) {
			return
		}
	}
}
