package server

import (
	"context"
	"errors"
	"time"

	"github.com/hashicorp/go-memdb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/relhq/rel/internal/event"
	"github.com/relhq/rel/internal/state"
	"github.com/relhq/rel/internal/validate"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// eventService serves the cluster's event stream from the local replica.
// Every replica holds the same events with the same seqs (the FSM numbers
// them), and a follower's replica is a prefix of the leader's, so a
// client that resumes after seq N on another server misses nothing and
// sees nothing twice.
type eventService struct {
	relv1.UnimplementedEventServiceServer
	s *Server
}

// followBatch bounds the events of one FollowEvents message: a client far
// behind gets them in several messages rather than one huge one.
const followBatch = 500

// eventFilter checks a request's filter: app and environment are names,
// types a list of globs that each match a known type.
func eventFilter(f *relv1.EventFilter) (event.Filter, error) {
	out := event.Filter{App: f.GetApp(), Env: f.GetEnv()}
	if out.App != "" {
		if err := validate.Name("app name", out.App); err != nil {
			return out, toStatus(err)
		}
	}
	if out.Env != "" {
		if err := validate.Name("environment name", out.Env); err != nil {
			return out, toStatus(err)
		}
	}
	types, err := event.ParseTypes(f.GetTypes())
	if err != nil {
		return out, status.Error(codes.InvalidArgument, err.Error())
	}
	out.Types = types
	return out, nil
}

// errEventsTrimmed is the sentinel of a resume point older than what the
// replica keeps.
var errEventsTrimmed = errors.New("events trimmed")

// checkResume refuses (OutOfRange) a resume point the replica no longer
// holds: after seq `after`, when the oldest event kept is later than
// after+1, or from a time before the oldest kept event once any were
// trimmed. Without the refusal the client would see a gap it cannot
// tell from a quiet period.
func checkResume(after uint64, since int64, first uint64, firstTime int64) error {
	if first <= 1 {
		return nil
	}
	if after > 0 && after+1 < first {
		return status.Errorf(codes.OutOfRange, "%v: events after seq %d are no longer all kept: the oldest kept is seq %d (retention keeps events for --rollout-retention); resume with --since %d to accept the gap", errEventsTrimmed, after, first, first-1)
	}
	if after == 0 && since > 0 && since < firstTime {
		return status.Errorf(codes.OutOfRange, "%v: events from %s are no longer all kept: the oldest kept is seq %d of %s; resume with --since %d to accept the gap",
			errEventsTrimmed, time.Unix(0, since).UTC().Format(time.RFC3339), first, time.Unix(0, firstTime).UTC().Format(time.RFC3339), first-1)
	}
	return nil
}

// firstEventTime is the time of the oldest event kept (0 if none).
func (s *Server) firstEventTime() int64 {
	var t int64
	_, _, _, _ = s.store.Events(nil, state.EventQuery{}, func(e *relv1.Event) bool {
		t = e.GetTimeUnixNano()
		return false
	})
	return t
}

// maxEventsWait bounds ListEvents' wait_ms.
const maxEventsWait = time.Minute

func (e *eventService) ListEvents(ctx context.Context, req *relv1.ListEventsRequest) (*relv1.ListEventsResponse, error) {
	s := e.s
	if conn, err := s.readTarget(ctx, req.GetRead()); err != nil {
		return nil, toStatus(err)
	} else if conn != nil {
		return relv1.NewEventServiceClient(conn).ListEvents(forwardCtx(ctx), req)
	}
	f, err := eventFilter(req.GetFilter())
	if err != nil {
		return nil, err
	}
	q := state.EventQuery{After: req.GetSinceSeq(), SinceUnixNano: req.GetSinceUnixNano(), Filter: f}
	var after relv1.Event
	if ok, err := parsePageToken("events", req.GetPageToken(), &after); err != nil {
		return nil, err
	} else if ok && after.GetSeq() > q.After {
		q.After = after.GetSeq()
	} else if !ok {
		first, _ := s.store.EventBounds(nil)
		if err := checkResume(req.GetSinceSeq(), req.GetSinceUnixNano(), first, s.firstEventTime()); err != nil {
			return nil, err
		}
	}
	var wait context.Context = ctx
	if ms := req.GetWaitMs(); ms > 0 && req.GetPageToken() == "" {
		var cancel context.CancelFunc
		wait, cancel = context.WithTimeout(ctx, min(time.Duration(ms)*time.Millisecond, maxEventsWait))
		defer cancel()
	}
	var (
		resp             *relv1.ListEventsResponse
		more             bool
		idx, first, last uint64
	)
	for {
		budget := newPageBudget(req.GetPageSize())
		resp, more = &relv1.ListEventsResponse{}, false
		ws := memdb.NewWatchSet()
		ws.Add(s.store.AbandonCh())
		idx, first, last, err = s.store.Events(ws, q, func(ev *relv1.Event) bool {
			if budget.full() || !budget.take(ev) {
				more = true
				return false
			}
			resp.Events = append(resp.Events, ev)
			return true
		})
		if err != nil {
			return nil, toStatus(err)
		}
		// Without wait_ms, or with events, or when the wait is over: answer.
		if len(resp.Events) > 0 || wait == ctx || ws.WatchCtx(wait) != nil {
			break
		}
		// Trimmed while waiting: the resume point may be gone.
		if oldest, _ := s.store.EventBounds(nil); checkResume(q.After, 0, oldest, 0) != nil {
			return nil, checkResume(q.After, 0, oldest, 0)
		}
	}
	resp.Index, resp.FirstSeq, resp.LastSeq = idx, first, last
	if more && len(resp.Events) > 0 {
		resp.NextPageToken = pageToken("events", &relv1.Event{Seq: resp.Events[len(resp.Events)-1].GetSeq()})
	}
	return resp, nil
}

// FollowEvents is a blocking query over the events table: it sends what
// the replica holds after since_seq, then waits on the table's watch
// channel (and the store's abandon channel, for a restore) and sends what
// was added, until the client goes away. The handler is the stream's one
// sender.
func (e *eventService) FollowEvents(req *relv1.FollowEventsRequest, stream relv1.EventService_FollowEventsServer) error {
	s := e.s
	ctx := stream.Context()
	f, err := eventFilter(req.GetFilter())
	if err != nil {
		return err
	}
	after, since := req.GetSinceSeq(), req.GetSinceUnixNano()
	sentFirst := false
	for {
		ws := memdb.NewWatchSet()
		ws.Add(s.store.AbandonCh())
		var batch []*relv1.Event
		_, first, last, err := s.store.Events(ws, state.EventQuery{After: after, SinceUnixNano: since, Filter: f}, func(ev *relv1.Event) bool {
			batch = append(batch, ev)
			return len(batch) < followBatch
		})
		if err != nil {
			return toStatus(err)
		}
		// Checked on every pass, not only the first: a client too slow to
		// keep up while retention trims (or a restore from a snapshot
		// that trimmed more) must hear of the gap, not skip it.
		fromTime := int64(0)
		if !sentFirst {
			fromTime = since // a time is a resume point only before the first answer
		}
		if err := checkResume(after, fromTime, first, s.firstEventTime()); err != nil {
			return err
		}
		more := len(batch) == followBatch
		if len(batch) > 0 || !sentFirst {
			msg := &relv1.FollowEventsResponse{Events: batch, LastSeq: last, CaughtUp: !more, Server: s.cfg.NodeID}
			if err := stream.Send(msg); err != nil {
				return err
			}
			sentFirst = true
		}
		switch {
		case more:
			after = batch[len(batch)-1].GetSeq()
			continue
		case last > after:
			// Everything up to last was looked at in this read, matched
			// or not.
			after = last
		}
		if err := ws.WatchCtx(ctx); err != nil {
			return nil
		}
	}
}

// trimEvents is the event stream's retention pass: it removes the events
// older than --rollout-retention, oldest first, at most
// validate.MaxTrimmedEvents per entry, never the newest (which carries
// the sequence on). The FSM re-checks the cutoff and stops at the first
// event to keep, so what remains is a contiguous range of seqs.
func (s *Server) trimEvents(ctx context.Context) (full bool) {
	cutoff := time.Now().Add(-s.cfg.RolloutRetention).UnixNano()
	_, last := s.store.EventBounds(nil)
	var before uint64
	n := 0
	_, _, _, err := s.store.Events(nil, state.EventQuery{}, func(ev *relv1.Event) bool {
		if ev.GetSeq() >= last || ev.GetTimeUnixNano() >= cutoff || n == validate.MaxTrimmedEvents {
			before = ev.GetSeq()
			return false
		}
		n++
		return true
	})
	if err != nil || n == 0 {
		return false
	}
	cmd := &relv1.Command{Kind: &relv1.Command_TrimEvents{TrimEvents: &relv1.TrimEvents{BeforeSeq: before, CutoffUnixNano: cutoff, MaxEvents: validate.MaxTrimmedEvents}}}
	if !s.retentionApply(ctx, "trimming events", cmd) {
		return false
	}
	s.logger.Info("retention: trimmed the event stream", "count", n, "older_than", s.cfg.RolloutRetention, "oldest_kept_seq", before)
	return n == validate.MaxTrimmedEvents
}
