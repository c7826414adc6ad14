package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/relhq/rel/internal/event"
	"github.com/relhq/rel/internal/retry"
	"github.com/relhq/rel/internal/webhook"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// followMaxPause caps the pause between reconnects of "events --follow".
const followMaxPause = 5 * time.Second

func (r *runner) eventsCommand() *cobra.Command {
	var (
		since, app, env, types string
		follow                 bool
		limit                  int
	)
	cmd := &cobra.Command{
		Use:   "events [--follow] [--app APP] [--env ENV] [--type GLOB[,GLOB]] [--since SEQ|DURATION|RFC3339]",
		Short: "Show the cluster's events, or follow them as they happen",
		Long: `Show the cluster's event stream, oldest first: every change of state,
numbered without gaps in raft order (SEQ), the same on every server.

Types (--type takes globs over them, comma-separated, e.g. 'rollout.*,host.failed'):
  release.created release.deleted release.blocked release.unblocked
  release.promoted (a deploy succeeded in an environment)
  rollout.started rollout.queued rollout.dequeued rollout.frozen
  rollout.unfrozen rollout.awaiting_approval rollout.wave_started
  rollout.wave_done rollout.baking rollout.waiting_approval
  rollout.waiting_hosts rollout.deadline_exceeded rollout.paused
  rollout.resumed rollout.approved rollout.rejected rollout.aborted
  rollout.succeeded rollout.failed rollout.rolling_back rollout.rolled_back
  approval.given approval.expired approval.reviewed
  host.failed host.away host.back
  agent.joined agent.lost agent.back
  freeze.created freeze.deleted
A host's dispatch and its becoming healthy are not cluster events ('relctl
rollout status ID' shows them).

--since takes a seq (the events after it), a duration back from now (1h)
or an RFC 3339 time. Events are kept for the servers' --rollout-retention
(7 days by default); a --since older than what is kept is refused, naming
the oldest seq kept.

With --follow, relctl prints the events kept (after --since), then each new
event as the server applies it (a blocking query, no polling), until
interrupted. When the server goes away it reconnects by itself, to the next
address of --addr, with a growing, jittered pause, and resumes after the
last seq it saw: nothing is missed and nothing printed twice. Any server
answers from its own replica, which holds the same events in the same
order. With -o json, --follow prints one JSON object per line; without
--follow, -o json prints {"events": [...]}. --timeout does not apply to
--follow.`,
		Example: `  relctl events --since 1h
  relctl events --follow --env prod --type 'rollout.*,host.failed'
  relctl events --follow -o json --since 1041 | jq -c 'select(.type == "rollout.failed")'
  relctl --addr s1:7400,s2:7400,s3:7400 events --follow`,
		Args: noArgs,
		RunE: r.do(func(ctx context.Context, _ []string) error {
			if err := checkLimit(limit); err != nil {
				return err
			}
			if _, err := event.ParseTypes(types); err != nil {
				return usagef("invalid --type: %v", err)
			}
			f := &relv1.EventFilter{App: app, Env: env, Types: types}
			var afterSeq uint64
			var fromTime int64
			if seq, err := strconv.ParseUint(since, 10, 64); err == nil {
				afterSeq = seq
			} else {
				from, err := parseSince(since, time.Now())
				if err != nil {
					return usagef("invalid --since %q: want a seq (1041), a duration (1h) or an RFC 3339 time (2026-03-04T10:00:00Z)", since)
				}
				if !from.IsZero() {
					fromTime = from.UnixNano()
				}
			}
			if follow {
				return r.followEvents(f, afterSeq, fromTime)
			}
			req := &relv1.ListEventsRequest{Read: r.readOptions(), Filter: f, SinceSeq: afterSeq, SinceUnixNano: fromTime}
			evs, err := allPages(limit, func(tok string, size uint32) ([]*relv1.Event, string, error) {
				req.PageToken, req.PageSize = tok, size
				var resp *relv1.ListEventsResponse
				_, err := r.call(ctx, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
					resp, err = relv1.NewEventServiceClient(cc).ListEvents(ctx, req, opts...)
					return err
				})
				return resp.GetEvents(), resp.GetNextPageToken(), err
			})
			if err != nil {
				return err
			}
			return r.printer().clusterEvents(evs)
		}),
	}
	fl := cmd.Flags()
	fl.BoolVarP(&follow, "follow", "f", false, "print new events as they happen, reconnecting by itself, until interrupted")
	fl.StringVar(&since, "since", "", "only events after `WHEN`: a seq, a duration back from now (1h) or an RFC 3339 time")
	fl.StringVar(&app, "app", "", "only events of app `APP`")
	fl.StringVar(&env, "env", "", "only events of environment `ENV`")
	fl.StringVar(&types, "type", "", "only events whose type matches one of the `GLOBS` (comma-separated: 'rollout.*,host.failed')")
	limitFlag(cmd, &limit)
	_ = cmd.RegisterFlagCompletionFunc("env", r.completeEnvFlag)
	_ = cmd.RegisterFlagCompletionFunc("type", cobra.FixedCompletions(event.Types(), cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// followEvents follows the stream until interrupted, reconnecting after
// the last seq printed. Only refusals end it (a bad filter, a resume point
// no longer kept, no permission): retrying cannot change those.
func (r *runner) followEvents(f *relv1.EventFilter, after uint64, fromTime int64) error {
	sec, err := r.security()
	if err != nil {
		return err
	}
	// --timeout bounds commands that end; a follow ends when interrupted.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	p := r.printer()
	pause := retryPause
	for i := 0; ; i++ {
		addr := r.addrs[i%len(r.addrs)]
		got, err := followOnce(ctx, sec, addr, f, &after, &fromTime, p)
		if ctx.Err() != nil {
			return nil
		}
		switch status.Code(err) {
		case codes.InvalidArgument, codes.OutOfRange, codes.PermissionDenied, codes.Unauthenticated, codes.NotFound:
			return err
		}
		var ue *usageError
		if errors.As(err, &ue) {
			return err
		}
		if got {
			pause = retryPause // it worked for a while: come back quickly
		}
		fmt.Fprintf(r.stderr, "relctl: events from %s: %v; reconnecting after seq %d\n", addr, errText(err), after)
		if !retry.Sleep(ctx, retry.Jitter(pause)) {
			return nil
		}
		pause = min(2*pause, followMaxPause)
	}
}

func errText(err error) string {
	if s, ok := status.FromError(err); ok {
		return s.Message()
	}
	return err.Error()
}

// followOnce runs one FollowEvents stream against addr, printing each
// event and moving *after past it (and past what the server looked at
// when it says it caught up, so a filtered resume does not re-read).
// got reports whether the stream answered at all.
func followOnce(ctx context.Context, sec *security, addr string, f *relv1.EventFilter, after *uint64, fromTime *int64, p printer) (got bool, err error) {
	rec := &handshakeRecord{}
	opts := append(dialOptions(sec, rec),
		// A server cut off (not closed) is noticed by keepalive: a ping
		// after 10 s of silence, 5 s for its answer.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}))
	cc, err := grpc.NewClient("dns:///"+addr, opts...)
	if err != nil {
		return false, fmt.Errorf("connect to %s: %w", addr, err)
	}
	defer cc.Close()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req := &relv1.FollowEventsRequest{Filter: f, SinceSeq: *after}
	if *after == 0 {
		req.SinceUnixNano = *fromTime
	}
	stream, err := relv1.NewEventServiceClient(cc).FollowEvents(withRequestID(sctx), req)
	if err != nil {
		return false, err
	}
	for {
		msg, err := stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = status.Error(codes.Unavailable, "the server ended the stream")
			}
			if herr := rec.get(); herr != nil && !got {
				return false, sec.describeHandshake(addr, herr)
			}
			return got, err
		}
		got = true
		for _, ev := range msg.GetEvents() {
			if ev.GetSeq() <= *after {
				continue // never print one twice, whatever a server sends
			}
			if err := p.followedEvent(ev); err != nil {
				return got, err
			}
			*after = ev.GetSeq()
		}
		if msg.GetCaughtUp() && msg.GetLastSeq() > *after {
			*after = msg.GetLastSeq()
		}
		if *after > 0 {
			*fromTime = 0
		}
	}
}

// eventSubject is what an event is about, for the table: app@version in
// env, the rollout, the agent.
func eventSubject(e *relv1.Event) string {
	s := e.GetApp()
	if e.GetVersion() != "" {
		s += "@" + e.GetVersion()
	}
	if e.GetEnv() != "" {
		if s != "" {
			s += " "
		}
		s += "in " + e.GetEnv()
	}
	if e.GetAgentId() != "" {
		if s != "" {
			s += " "
		}
		s += "agent " + e.GetAgentId()
	}
	return s
}

func (p printer) clusterEvents(evs []*relv1.Event) error {
	if p.json() {
		out := struct {
			Events []webhook.EventBody `json:"events"`
		}{Events: []webhook.EventBody{}}
		for _, e := range evs {
			out.Events = append(out.Events, webhook.NewEventBody(e))
		}
		return p.writeJSON(out)
	}
	rows := make([][]string, 0, len(evs))
	for _, e := range evs {
		rows = append(rows, []string{strconv.FormatUint(e.GetSeq(), 10), formatTime(e.GetTimeUnixNano(), time.RFC3339),
			e.GetType(), eventSubject(e), e.GetRolloutId(), actorText(e.GetActor()), e.GetMessage()})
	}
	return p.table([]string{"SEQ", "TIME", "TYPE", "SUBJECT", "ROLLOUT", "ACTOR", "MESSAGE"}, rows)
}

// followedEvent prints one event of a follow: a JSON line, or a line of
// text (not aligned with the next: it is printed as it comes).
func (p printer) followedEvent(e *relv1.Event) error {
	if p.json() {
		b, err := json.Marshal(webhook.NewEventBody(e))
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(p.w, "%s\n", b)
		return err
	}
	line := fmt.Sprintf("%d  %s  %s", e.GetSeq(), formatTime(e.GetTimeUnixNano(), time.RFC3339), e.GetType())
	if s := eventSubject(e); s != "" {
		line += "  " + s
	}
	if e.GetRolloutId() != "" {
		line += "  rollout " + e.GetRolloutId()
	}
	if a := actorText(e.GetActor()); a != "" {
		line += "  by " + a
	}
	_, err := fmt.Fprintf(p.w, "%s  %s\n", line, e.GetMessage())
	return err
}
