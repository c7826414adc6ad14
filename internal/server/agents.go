package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/hashicorp/go-memdb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/relhq/rel/internal/artifact"
	"github.com/relhq/rel/internal/auth"
	"github.com/relhq/rel/internal/retry"
	"github.com/relhq/rel/internal/textcut"
	"github.com/relhq/rel/internal/validate"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// helloTimeout is the default of Config.HelloTimeout.
const helloTimeout = 10 * time.Second

// session is one agent stream held by this server. Heartbeats and load live
// here only: they are never raft writes.
type session struct {
	agentID string
	id      string
	cancel  context.CancelCauseFunc
	// certNotBefore is when the certificate the stream was opened with
	// became valid: a revocation at or after it ends the stream.
	certNotBefore time.Time

	mu sync.Mutex
	// row is the agent as this session recorded it (AgentUp), once
	// committed at upIndex; reassertSessions records it again if the
	// cluster marked the live stream down (a partition between this server
	// and the leader).
	row           *relv1.Agent
	upIndex       uint64
	lastHeard     time.Time
	lastHeartbeat time.Time
	load          *relv1.Load
}

func (ss *session) heard(hb *relv1.Heartbeat) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	ss.lastHeard = time.Now()
	if hb != nil {
		ss.lastHeartbeat = ss.lastHeard
		ss.load = hb.GetLoad()
	}
}

func (ss *session) snapshot() (time.Time, time.Time, *relv1.Load) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.lastHeard, ss.lastHeartbeat, ss.load
}

// sessions is this server's registry of agent streams, one per agent id.
type sessions struct {
	mu   sync.Mutex
	byID map[string]*session
}

func newSessions() *sessions { return &sessions{byID: map[string]*session{}} }

// errTooManyStreams refuses a stream past --max-agent-streams.
var errTooManyStreams = errors.New("too many agent streams")

// add registers ss, returning the session it replaces, if any. Past max
// streams (0: no limit) a new agent is refused; one replacing its own
// stream never is.
func (r *sessions) add(ss *session, max int) (*session, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.byID[ss.agentID]
	if old == nil && max > 0 && len(r.byID) >= max {
		return nil, errTooManyStreams
	}
	r.byID[ss.agentID] = ss
	return old, nil
}

// remove unregisters ss if it is still the agent's current session.
func (r *sessions) remove(ss *session) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.byID[ss.agentID] == ss {
		delete(r.byID, ss.agentID)
		return true
	}
	return false
}

func (r *sessions) get(agentID string) *session {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.byID[agentID]
}

func (r *sessions) all() []*session {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*session, 0, len(r.byID))
	for _, ss := range r.byID {
		out = append(out, ss)
	}
	return out
}

// unixNano is t in Unix nanoseconds, 0 for the zero time.
func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func newID(prefix string) string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// agentService implements relv1.AgentService.
type agentService struct {
	relv1.UnimplementedAgentServiceServer
	s *Server
}

// Connect serves one agent stream: hello, AgentUp committed (batched with
// other streams' in one agent_sessions entry), welcome, then
// the agent's desired state on connect and on every change, while reports
// go to the batcher and heartbeats stay in memory. This goroutine receives;
// one sender goroutine owns stream.Send.
//
// The stream's node id is its certificate's: a hello that names another
// node is refused. Labels the join token fixed (in the certificate) win
// over the hello's; a hello contradicting one is refused. The stream ends
// when its certificate expires or the agent is revoked.
func (a *agentService) Connect(stream relv1.AgentService_ConnectServer) error {
	s := a.s
	ctx, cancel := context.WithCancelCause(stream.Context())
	defer cancel(nil)

	p := auth.FromContext(ctx)
	_, leaf, _, _ := peerCert(ctx)
	hello, err := recvHello(ctx, stream, s.cfg.HelloTimeout)
	if err != nil {
		return err
	}
	if hello.GetNodeId() != p.ID {
		s.metrics.authDenied.WithLabelValues(relv1.AgentService_Connect_FullMethodName+" hello", codes.PermissionDenied.String()).Inc()
		s.logger.Warn("agent stream refused: its hello names another node than its certificate", "certificate", p.ID, "hello_node_id", hello.GetNodeId())
		return status.Errorf(codes.PermissionDenied, "this stream's certificate is agent %q; a hello naming %q is refused", p.ID, hello.GetNodeId())
	}
	labels, err := mergeLabels(hello.GetLabels(), p.Labels)
	if err != nil {
		s.logger.Warn("agent stream refused", "agent", p.ID, "err", err)
		return err
	}
	ss := &session{agentID: hello.GetNodeId(), id: newID("sess-"), cancel: cancel}
	if leaf != nil {
		ss.certNotBefore = leaf.NotBefore
	}
	ss.heard(nil)
	old, err := s.sessions.add(ss, s.cfg.MaxAgentStreams)
	if err != nil {
		// The agent tries the next server (its backoff spreads a crowd).
		s.metrics.agentStreamsRefused.Inc()
		s.logger.Warn("agent stream refused: this server holds its maximum of agent streams", "agent", ss.agentID, "max_agent_streams", s.cfg.MaxAgentStreams)
		return status.Errorf(codes.ResourceExhausted, "server %s holds its maximum of %d agent streams (--max-agent-streams): connect to another server", s.cfg.NodeID, s.cfg.MaxAgentStreams)
	}
	if old != nil {
		// Most likely the agent's own half-open stream from before a network
		// blip: the newest stream wins.
		s.logger.Info("agent reconnected: replacing its previous stream", "agent", ss.agentID, "old_session", old.id, "session", ss.id)
		old.cancel(errReplaced)
	}
	if !p.Expires.IsZero() {
		// TLS checks a certificate once, at the handshake: end the stream
		// when it expires, so the agent reconnects with its renewed one.
		t := time.AfterFunc(time.Until(p.Expires), func() {
			cancel(status.Error(codes.Unauthenticated, "the stream's certificate expired: reconnect with the renewed one"))
		})
		defer t.Stop()
	}
	logger := s.logger.With("agent", ss.agentID, "session", ss.id)
	installed := make([]*relv1.AppReport, 0, len(hello.GetInstalled()))
	for _, r := range hello.GetInstalled() {
		installed = append(installed, sanitizeReport(r, time.Now()))
	}
	agent := &relv1.Agent{
		Id: hello.GetNodeId(), Labels: labels, AgentVersion: hello.GetAgentVersion(), Facts: hello.GetFacts(),
		SessionId: ss.id, ServerId: s.cfg.NodeID, ConnectedUnixNano: time.Now().UnixNano(),
	}
	// Batched with other agents' connects (sessionbatch.go); the FSM
	// refuses this one alone if the agent was revoked meanwhile.
	upIndex, err := s.agentSessions.up(ctx, &relv1.AgentUp{Agent: agent, Installed: installed, CertNotBeforeUnixNano: unixNano(ss.certNotBefore)})
	if err != nil {
		s.sessions.remove(ss)
		logger.Warn("could not record agent connection", "err", err)
		return toStatus(err)
	}
	ss.mu.Lock()
	ss.row, ss.upIndex = agent, upIndex
	ss.mu.Unlock()
	logger.Info("agent connected", "labels", hello.GetLabels())

	out := make(chan *relv1.ServerMessage, 4)
	sendErr := make(chan error, 1)
	go func() {
		// The only goroutine that calls stream.Send.
		for {
			select {
			case <-ctx.Done():
				sendErr <- nil
				return
			case m := <-out:
				if err := stream.Send(m); err != nil {
					sendErr <- err
					cancel(err)
					return
				}
			}
		}
	}()
	out <- &relv1.ServerMessage{Kind: &relv1.ServerMessage_Welcome{Welcome: &relv1.Welcome{
		ServerId: s.cfg.NodeID, SessionId: ss.id, HeartbeatIntervalMs: s.cfg.HeartbeatInterval.Milliseconds(),
		ClusterId: s.store.ClusterID(),
	}}}

	s.watchSilence(ctx, ss, cancel)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		gen := hello.GetLastGeneration()
		if cid := s.store.ClusterID(); hello.GetClusterId() != "" && cid != "" && hello.GetClusterId() != cid {
			// The agent's generation counts another cluster's raft
			// indexes: waiting for this cluster to reach it could take
			// forever. The agent forgets it too on the welcome.
			logger.Warn("agent last served by another cluster: its generation does not apply here", "agent_cluster", hello.GetClusterId(), "cluster", cid, "generation", gen)
			gen = 0
		}
		s.streamDesired(ctx, ss.agentID, gen, out)
	}()

	// Receive in a goroutine: stream.Recv returns only when the agent
	// sends or the stream ends, so a stream the server ends (revoked,
	// certificate expired, replaced, silent) must end by this handler
	// returning, which also ends that Recv.
	recvDone := make(chan error, 1)
	go func() { recvDone <- s.recvAgent(ctx, stream, ss) }()
	var recvErr error
	select {
	case recvErr = <-recvDone:
	case <-ctx.Done():
	}
	// A stream the server ended (revoked, certificate expired) says why.
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) && !errors.Is(cause, errReplaced) && stream.Context().Err() == nil {
		recvErr = cause
	}
	cancel(nil)
	wg.Wait()
	<-sendErr
	var bye *goodbyeError
	if s.sessions.remove(ss) {
		if errors.As(recvErr, &bye) {
			// Recorded down before the stream ends, so that no rollout
			// dispatches to an agent that said it is going.
			s.markDown(ss.agentID, ss.id, "agent stopped: "+bye.reason)
		} else {
			s.agentGone(ss, recvErr)
		}
	}
	if bye != nil {
		logger.Info("agent said goodbye", "reason", bye.reason)
		return nil
	}
	logger.Info("agent stream closed", "err", recvErr)
	if recvErr == nil || errors.Is(recvErr, io.EOF) || status.Code(recvErr) == codes.Canceled {
		return nil
	}
	return recvErr
}

// reassertSessions runs on every server: each heartbeat interval it checks
// the replicated row of every agent whose stream it holds. A live stream
// recorded down (the leader's sweep could not reach this server during a
// partition) is recorded connected again, with the same session; a stream
// whose agent has a newer session elsewhere is closed. So the cluster sees
// every live stream as connected within one heartbeat of a partition
// healing.
func (s *Server) reassertSessions() {
	for retry.Sleep(s.ctx, retry.Jitter(s.cfg.HeartbeatInterval)) {
		for _, ss := range s.sessions.all() {
			ss.mu.Lock()
			mine, upIndex := ss.row, ss.upIndex
			ss.mu.Unlock()
			if mine == nil {
				continue // its AgentUp is not committed yet
			}
			cur, err := s.store.Agent(nil, ss.agentID)
			switch {
			case err != nil:
				continue
			case cur.GetSessionId() == ss.id && cur.GetConnected():
				continue
			case cur.GetSessionId() != ss.id && cur.GetModifyIndex() > upIndex:
				// Another session was recorded after ours: raft's order,
				// not the servers' clocks, says which stream is newer.
				s.logger.Info("closing an agent stream: the agent has a newer one", "agent", ss.agentID, "session", ss.id, "newer_session", cur.GetSessionId(), "on", cur.GetServerId())
				ss.cancel(errReplaced)
				continue
			case cur.GetSessionId() != ss.id:
				continue // this replica has not applied our AgentUp yet
			}
			s.logger.Info("agent recorded down while its stream is alive here: recording it connected again", "agent", ss.agentID, "session", ss.id,
				"recorded_session", cur.GetSessionId(), "reason", cur.GetDisconnectReason())
			ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
			idx, err := s.agentSessions.up(ctx, &relv1.AgentUp{Agent: mine, CertNotBeforeUnixNano: unixNano(ss.certNotBefore)})
			cancel()
			if err != nil {
				if s.ctx.Err() == nil {
					s.logger.Warn("could not record a live agent connected again; will retry", "agent", ss.agentID, "err", err)
				}
				continue
			}
			ss.mu.Lock()
			ss.upIndex = idx
			ss.mu.Unlock()
		}
	}
}

// watchRevocations ends the streams of revoked agents as soon as this
// server applies the revocation.
func (s *Server) watchRevocations() {
	for s.ctx.Err() == nil {
		ws := newWatch(s.store)
		revs, _, err := s.store.Revocations(ws)
		if err != nil {
			s.logger.Error("read revocations", "err", err)
			return
		}
		for _, rev := range revs {
			ss := s.sessions.get(rev.GetAgentId())
			at := time.Unix(0, rev.GetRevokedUnixNano())
			if ss != nil && !ss.certNotBefore.After(at) {
				s.logger.Warn("closing the stream of a revoked agent", "agent", ss.agentID, "session", ss.id)
				ss.cancel(status.Errorf(codes.Unauthenticated, "agent %q was revoked: its certificates are refused", ss.agentID))
			}
		}
		if ws.WatchCtx(s.ctx) != nil {
			return
		}
	}
}

// errReplaced ends a stream that a newer stream of the same agent replaced.
var errReplaced = errors.New("replaced by a newer stream of the same agent")

// mergeLabels applies the labels an agent's certificate fixes to the ones
// its hello claims.
func mergeLabels(hello, fixed map[string]string) (map[string]string, error) {
	if len(fixed) == 0 {
		return hello, nil
	}
	out := make(map[string]string, len(hello)+len(fixed))
	for k, v := range hello {
		if f, ok := fixed[k]; ok && f != v {
			return nil, status.Errorf(codes.PermissionDenied, "label %s=%s contradicts %s=%s, which the agent's join token fixed: drop it from --labels", k, v, k, f)
		}
		out[k] = v
	}
	for k, v := range fixed {
		out[k] = v
	}
	if err := validate.Labels("label", out, false); err != nil {
		return nil, toStatus(err)
	}
	return out, nil
}

// sanitizeReport bounds what an agent's report may put in raft: hook
// output is cut to its last 1 KiB and the reason to 4 KiB. Its time is
// the receiving server's: an agent's clock (an hour behind, or ahead) must
// not decide which report is newer nor move a rollout's progress deadline.
// Reports of one stream keep their order (the stream's), and the FSM
// ignores reports of a session that is no longer the agent's.
func sanitizeReport(r *relv1.AppReport, now time.Time) *relv1.AppReport {
	if r == nil {
		return nil
	}
	out := proto.Clone(r).(*relv1.AppReport)
	out.Output = textcut.Tail(out.GetOutput(), validate.MaxOutputLen)
	out.Reason = textcut.Head(out.GetReason(), validate.MaxReasonLen)
	out.AtUnixNano = now.UnixNano()
	return out
}

func recvHello(ctx context.Context, stream relv1.AgentService_ConnectServer, timeout time.Duration) (*relv1.Hello, error) {
	type result struct {
		m   *relv1.AgentMessage
		err error
	}
	ch := make(chan result, 1)
	go func() {
		m, err := stream.Recv()
		ch <- result{m, err}
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	var r result
	select {
	case r = <-ch:
	case <-t.C:
		return nil, status.Error(codes.DeadlineExceeded, "no hello within 10s")
	case <-ctx.Done():
		return nil, status.Error(codes.Canceled, "stream closed before hello")
	}
	if r.err != nil {
		return nil, r.err
	}
	hello := r.m.GetHello()
	if hello == nil {
		return nil, status.Error(codes.InvalidArgument, "the first message on an agent stream must be a hello")
	}
	if !nodeIDRE.MatchString(hello.GetNodeId()) {
		return nil, status.Errorf(codes.InvalidArgument, "agent node id %q: use 1-63 letters, digits and . _ -, starting with a letter or digit", hello.GetNodeId())
	}
	if err := validate.Labels("label", hello.GetLabels(), false); err != nil {
		return nil, toStatus(err)
	}
	return hello, nil
}

// goodbyeError ends a stream whose agent said it is stopping.
type goodbyeError struct{ reason string }

func (e *goodbyeError) Error() string { return "agent said goodbye: " + e.reason }

// recvAgent receives reports and heartbeats until the stream ends (or the
// agent says goodbye).
func (s *Server) recvAgent(ctx context.Context, stream relv1.AgentService_ConnectServer, ss *session) error {
	for {
		m, err := stream.Recv()
		if err != nil {
			return err
		}
		if ctx.Err() != nil {
			// The server ended the stream: nothing more from it counts.
			return context.Cause(ctx)
		}
		switch k := m.GetKind().(type) {
		case *relv1.AgentMessage_Heartbeat:
			ss.heard(k.Heartbeat)
		case *relv1.AgentMessage_Goodbye:
			reason := textcut.Head(k.Goodbye.GetReason(), 200)
			if reason == "" {
				reason = "stopping"
			}
			return &goodbyeError{reason: reason}
		case *relv1.AgentMessage_Reports:
			ss.heard(nil)
			now := time.Now()
			for _, r := range k.Reports.GetReports() {
				r = sanitizeReport(r, now)
				if err := validate.Report(r); err != nil {
					return toStatus(err)
				}
				s.reports.add(&relv1.AgentReport{AgentId: ss.agentID, SessionId: ss.id, Report: r})
			}
		default:
			return status.Errorf(codes.InvalidArgument, "unexpected agent message %T after hello", k)
		}
	}
}

// watchSilence ends a stream whose agent has said nothing for the grace
// period: a half-open connection that TCP has not noticed.
func (s *Server) watchSilence(ctx context.Context, ss *session, cancel context.CancelCauseFunc) {
	// A timer, not a goroutine: a server holds tens of thousands of idle
	// streams, and each goroutine costs its stack (make bench's streams
	// row).
	every := s.cfg.AgentGrace / 3
	var (
		mu sync.Mutex // t is set before its function first reads it
		t  *time.Timer
	)
	mu.Lock()
	defer mu.Unlock()
	t = time.AfterFunc(every, func() {
		if ctx.Err() != nil {
			return
		}
		heard, _, _ := ss.snapshot()
		if silent := time.Since(heard); silent > s.cfg.AgentGrace {
			s.logger.Warn("agent silent past the grace period: closing its stream", "agent", ss.agentID, "silent_for", silent.Round(time.Millisecond))
			cancel(status.Errorf(codes.DeadlineExceeded, "agent silent for more than %s", s.cfg.AgentGrace))
			return
		}
		mu.Lock()
		t.Reset(every)
		mu.Unlock()
	})
	context.AfterFunc(ctx, func() { t.Stop() })
}

// agentGone records an agent down once the grace period has passed without
// it coming back to this server. If it reconnected elsewhere meanwhile, the
// FSM ignores the stale session.
func (s *Server) agentGone(ss *session, cause error) {
	if s.ctx.Err() != nil {
		return // this server is stopping; its agents move to other servers
	}
	reason := "stream closed"
	if cause != nil && !errors.Is(cause, io.EOF) {
		reason = "stream closed: " + status.Convert(cause).Message()
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if !retry.Sleep(s.ctx, s.cfg.AgentGrace) {
			return
		}
		if s.sessions.get(ss.agentID) != nil {
			return // back on this server
		}
		s.markDown(ss.agentID, ss.id, reason)
	}()
}

func (s *Server) markDown(agentID, sessionID, reason string) {
	ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
	defer cancel()
	_, err := s.agentSessions.down(ctx, &relv1.AgentDown{
		AgentId: agentID, SessionId: sessionID, AtUnixNano: time.Now().UnixNano(), Reason: reason,
	})
	if err != nil && s.ctx.Err() == nil {
		s.logger.Warn("could not record agent down", "agent", agentID, "err", err)
	}
}

// streamDesired sends the agent's desired state on connect and whenever its
// rows change, by a blocking query on this server's replica that watches
// only this agent's rows. It never sends a generation older than the one the
// agent has already acted on: a lagging replica waits until it catches up.
// firstDesiredWait bounds how long a new stream's first desired state waits
// for a stale replica to catch up.
const firstDesiredWait = 3 * time.Second

func (s *Server) streamDesired(ctx context.Context, agentID string, agentGen uint64, out chan<- *relv1.ServerMessage) {
	var sent uint64
	first := true
	for ctx.Err() == nil {
		// A stale replica (cut off, or restarted) sends nothing until it
		// has caught up (fresh.go); a new stream's first state waits a
		// little for that, then goes out: the agent's generation keeps it
		// from going backwards.
		if first {
			wctx, cancel := context.WithTimeout(ctx, firstDesiredWait)
			s.fresh.wait(wctx)
			cancel()
		} else if !s.fresh.wait(ctx) {
			return
		}
		ws := newWatch(s.store)
		rows, gen, err := s.store.DesiredFor(ws, agentID)
		if err != nil {
			s.logger.Error("read desired state", "agent", agentID, "err", err)
			return
		}
		if gen >= agentGen && (first || gen > sent) {
			msg := &relv1.DesiredState{Generation: gen}
			for _, d := range rows {
				msg.Apps = append(msg.Apps, s.desiredApp(d))
			}
			select {
			case out <- &relv1.ServerMessage{Kind: &relv1.ServerMessage_Desired{Desired: msg}}:
			case <-ctx.Done():
				return
			}
			sent, first = gen, false
		}
		if err := ws.WatchCtx(ctx); err != nil {
			return
		}
	}
}

// desiredApp turns a desired row into what the agent needs, resolving
// artifacts in the cluster's store to every server's HTTP endpoint, this
// server first.
func (s *Server) desiredApp(d *relv1.Desired) *relv1.DesiredApp {
	app := &relv1.DesiredApp{App: d.GetApp(), Version: d.GetVersion(), Sha256: d.GetSha256(), Size: d.GetSize(), RolloutId: d.GetRolloutId()}
	digest, ok := artifact.DigestFromURL(d.GetArtifactUrl())
	if !ok {
		app.Urls = []string{d.GetArtifactUrl()}
		return app
	}
	app.StoreUrls = append(app.StoreUrls, "https://"+s.HTTPAddr()+artifact.HTTPPath(digest))
	for _, src := range s.peerArtifactSources() {
		app.StoreUrls = append(app.StoreUrls, src+artifact.HTTPPath(digest))
	}
	return app
}

// reportBatcher gathers agent reports for ReportWindow and commits them as
// one raft entry, keeping only the newest report per agent and app. A
// failed commit keeps the reports and retries with jittered backoff.
type reportBatcher struct {
	s      *Server
	mu     sync.Mutex
	buf    map[[2]string]*relv1.AgentReport
	wakeCh chan struct{}
}

func newReportBatcher(s *Server) *reportBatcher {
	return &reportBatcher{s: s, buf: map[[2]string]*relv1.AgentReport{}, wakeCh: make(chan struct{}, 1)}
}

// add queues a report: the latest to arrive per agent and app wins (a
// stream delivers in order). A report put back after a failed commit
// never replaces one that arrived since.
func (b *reportBatcher) add(r *relv1.AgentReport) { b.put(r, false) }

func (b *reportBatcher) put(r *relv1.AgentReport, retry bool) {
	b.mu.Lock()
	key := [2]string{r.GetAgentId(), r.GetReport().GetApp()}
	if _, newer := b.buf[key]; !retry || !newer {
		b.buf[key] = r
	}
	b.mu.Unlock()
	select {
	case b.wakeCh <- struct{}{}:
	default:
	}
}

func (b *reportBatcher) run(ctx context.Context) {
	backoff := 50 * time.Millisecond
	for {
		select {
		case <-ctx.Done():
			return
		case <-b.wakeCh:
		}
		if !retry.Sleep(ctx, b.s.cfg.ReportWindow) {
			return
		}
		for {
			b.mu.Lock()
			batch := make([]*relv1.AgentReport, 0, len(b.buf))
			for _, r := range b.buf {
				batch = append(batch, r)
			}
			b.buf = map[[2]string]*relv1.AgentReport{}
			b.mu.Unlock()
			if len(batch) == 0 {
				break
			}
			actx, cancel := context.WithTimeout(ctx, 10*time.Second)
			_, err := b.s.apply(actx, &relv1.Command{Kind: &relv1.Command_ReportBatch{ReportBatch: &relv1.ReportBatch{Reports: batch}}})
			cancel()
			if err == nil {
				backoff = 50 * time.Millisecond
				b.s.metrics.reportBatch.Observe(float64(len(batch)))
				continue // more may have arrived meanwhile
			}
			if ctx.Err() != nil {
				return
			}
			b.s.logger.Warn("committing agent reports failed; retrying", "reports", len(batch), "err", err)
			for _, r := range batch {
				b.put(r, true)
			}
			if !retry.Sleep(ctx, retry.Jitter(backoff)) {
				return
			}
			backoff = minDur(backoff*2, 2*time.Second)
		}
	}
}

// LocalAgents lists this server's agent streams with their live data.
func (c *clusterService) LocalAgents(ctx context.Context, req *relv1.LocalAgentsRequest) (*relv1.LocalAgentsResponse, error) {
	resp := &relv1.LocalAgentsResponse{}
	for _, ss := range c.s.sessions.all() {
		_, hb, load := ss.snapshot()
		la := &relv1.LocalAgent{AgentId: ss.agentID, SessionId: ss.id, Load: load}
		if !hb.IsZero() {
			la.LastHeartbeatUnixNano = hb.UnixNano()
		}
		resp.Agents = append(resp.Agents, la)
	}
	return resp, nil
}

// unreachableGrace is how many grace periods the sweep waits before
// recording down the agents of a server that does not answer.
const unreachableGrace = 3

// liveAgents asks every server (this one locally) for its agent streams; it
// also says which servers answered.
func (s *Server) liveAgents(ctx context.Context) (map[string]*relv1.LocalAgent, map[string]bool) {
	live := map[string]*relv1.LocalAgent{}
	answered := map[string]bool{s.cfg.NodeID: true}
	local, _ := (&clusterService{s: s}).LocalAgents(ctx, nil)
	for _, la := range local.GetAgents() {
		live[la.GetAgentId()] = la
	}
	servers, _, _ := s.store.Servers(memdb.NewWatchSet())
	var (
		mu sync.Mutex
		wg sync.WaitGroup
	)
	for _, srv := range servers {
		if srv.GetId() == s.cfg.NodeID || srv.GetGrpcAddr() == "" {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			pctx, cancel := context.WithTimeout(ctx, memberProbeTimeout)
			defer cancel()
			conn, err := s.peers.get(srv.GetGrpcAddr())
			if err != nil {
				return
			}
			resp, err := relv1.NewClusterServiceClient(conn).LocalAgents(pctx, &relv1.LocalAgentsRequest{})
			if err != nil {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			answered[srv.GetId()] = true
			for _, la := range resp.GetAgents() {
				live[la.GetAgentId()] = la
			}
		}()
	}
	wg.Wait()
	return live, answered
}

// sweepAgents runs on the leader: an agent recorded as connected whose
// server no longer holds its session (the server died, or was cut off) is
// marked down once the grace period has passed.
func (s *Server) sweepAgents(ctx context.Context) {
	t := time.NewTicker(s.cfg.AgentGrace / 2)
	defer t.Stop()
	missing := map[string]time.Time{} // session -> first seen missing
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		agents, _, err := s.store.Agents(memdb.NewWatchSet())
		if err != nil {
			continue
		}
		live, answered := s.liveAgents(ctx)
		seen := map[string]bool{}
		for _, a := range agents {
			if !a.GetConnected() {
				continue
			}
			if la := live[a.GetId()]; la != nil && la.GetSessionId() == a.GetSessionId() {
				continue
			}
			seen[a.GetSessionId()] = true
			first, ok := missing[a.GetSessionId()]
			if !ok {
				missing[a.GetSessionId()] = time.Now()
				continue
			}
			// A server that answered without the stream has lost it; one
			// that does not answer may be dead (its agents reconnect
			// elsewhere by themselves) or cut off from this leader with
			// its agents still streaming to it: give it longer, and its
			// streams are recorded connected again when it is back.
			wait, why := s.cfg.AgentGrace, fmt.Sprintf("agent lost: its server %s no longer holds its stream", a.GetServerId())
			if _, err := s.store.Server(a.GetServerId()); err == nil && !answered[a.GetServerId()] {
				wait, why = unreachableGrace*s.cfg.AgentGrace, fmt.Sprintf("agent lost: its server %s has not answered for %s", a.GetServerId(), unreachableGrace*s.cfg.AgentGrace)
			}
			if time.Since(first) >= wait {
				s.markDown(a.GetId(), a.GetSessionId(), why)
				delete(missing, a.GetSessionId())
			}
		}
		for sess := range missing {
			if !seen[sess] {
				delete(missing, sess)
			}
		}
	}
}
