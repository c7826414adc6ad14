package server

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/relhq/rel/internal/auth"
	"github.com/relhq/rel/internal/fsm"
	"github.com/relhq/rel/internal/retry"
	"github.com/relhq/rel/internal/state"
	"github.com/relhq/rel/internal/transport"
	"github.com/relhq/rel/internal/validate"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// forwardedKey marks a request one server forwarded to another, so that a
// node that lost leadership in between answers Unavailable instead of
// forwarding again in a loop.
const forwardedKey = "rel-forwarded"

// errNoLeader is returned when no leader is known within LeaderWait.
var errNoLeader = errors.New("no leader")

// apply commits a command: on the leader through raft, elsewhere by
// forwarding it to the leader. It stamps the command's time if the caller did
// not, so that the FSM never reads a clock, and the id of the request ctx
// serves, so that the FSM applies it once. It returns the entry's index (for
// a repeated request, the first entry's), or the application error the FSM
// decided on.
func (s *Server) apply(ctx context.Context, cmd *relv1.Command) (uint64, error) {
	a, err := s.applyCommand(ctx, cmd)
	return a.Index, err
}

// applyCommand is apply with the whole of the FSM's answer: what the
// command created, and whether its request id had been applied before.
func (s *Server) applyCommand(ctx context.Context, cmd *relv1.Command) (applied, error) {
	if cmd.StampedUnixNano == 0 {
		cmd.StampedUnixNano = time.Now().UnixNano()
	}
	if cmd.RequestId == "" {
		cmd.RequestId = requestID(ctx)
	}
	if cmd.Actor == nil {
		cmd.Actor = actorOf(auth.FromContext(ctx))
	}
	if err := validate.Command(cmd); err != nil {
		return applied{}, err
	}
	b, err := proto.Marshal(cmd)
	if err != nil {
		return applied{}, fmt.Errorf("encode command: %w", err)
	}
	return s.applyBytes(ctx, b, isForwarded(ctx))
}

// applyBytes proposes an encoded command on the leader, or forwards it to
// the leader; when the leader it knew is gone it sends the same bytes to
// the next. Those bytes carry the request id, so a command the old leader
// committed before dying is answered, not applied again, by the new one.
func (s *Server) applyBytes(ctx context.Context, b []byte, forwarded bool) (applied, error) {
	deadline := time.Now().Add(s.cfg.LeaderWait)
	backoff := 25 * time.Millisecond
	for {
		// Taken before trying, so that a leader elected meanwhile wakes
		// the wait below.
		changed := s.leaders.changed()
		if s.IsLeader() {
			a, err, retry := s.applyLocal(ctx, b)
			if !retry {
				return a, err
			}
		} else if forwarded {
			return applied{}, status.Error(codes.Unavailable, "leadership moved while the request was forwarded: retry")
		} else if conn, err := s.leaderConn(); err == nil {
			ctx := metadata.AppendToOutgoingContext(ctx, forwardedKey, "1")
			resp, err := relv1.NewClusterServiceClient(conn).Apply(ctx, &relv1.ApplyRequest{Command: b})
			if status.Code(err) != codes.Unavailable {
				// Committed (or refused by the leader's FSM): the trail
				// has it.
				markDecided(ctx)
			}
			if err == nil {
				s.waitLocal(ctx, resp.GetIndex())
				return applied{Index: resp.GetIndex(), Ref: resp.GetRef(), Duplicate: resp.GetDuplicate(), Items: itemsFrom(resp.GetItemErrors())}, nil
			}
			if status.Code(err) != codes.Unavailable {
				return applied{}, err
			}
			// The leader we knew is gone or stepped down: wait for the next.
		}
		if time.Now().After(deadline) {
			return applied{}, s.noLeaderError()
		}
		if !sleepOrLeader(ctx, retry.Jitter(backoff), changed) {
			return applied{}, ctx.Err()
		}
		backoff = minDur(backoff*2, 250*time.Millisecond)
	}
}

// applyLocal applies on this node, the leader. retry says the node lost
// leadership before the entry committed (or before it knew), so the caller
// should find the new leader.
func (s *Server) applyLocal(ctx context.Context, b []byte) (a applied, err error, retry bool) {
	start := time.Now()
	f := s.raft.Apply(b, timeoutFrom(ctx))
	if err := f.Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) || errors.Is(err, raft.ErrLeadershipTransferInProgress) {
			return applied{}, nil, true
		}
		if errors.Is(err, raft.ErrEnqueueTimeout) {
			return applied{}, status.Error(codes.Unavailable, "raft did not accept the write in time: the leader is overloaded, retry"), false
		}
		if errors.Is(err, raft.ErrRaftShutdown) {
			return applied{}, status.Error(codes.Unavailable, "this server is shutting down: retry on another"), false
		}
		return applied{}, err, false
	}
	s.metrics.applyLatency.Observe(time.Since(start).Seconds())
	markDecided(ctx)
	res, ok := f.Response().(*fsm.Result)
	if !ok {
		return applied{Index: f.Index()}, nil, false
	}
	return applied{Index: res.Index, Ref: res.Ref, Duplicate: res.Duplicate, Items: res.Items}, res.Err, false
}

func (s *Server) noLeaderError() error {
	return status.Errorf(codes.Unavailable, "the cluster has no leader yet (asked %s): wait for an election, or check that a majority of servers is up ('relctl cluster members')", s.cfg.NodeID)
}

// localWait bounds how long a follower holds an answer for its own replica
// to catch up with a write it forwarded.
const localWait = 2 * time.Second

// waitLocal waits until this server's replica has applied index, so that a
// client that wrote through this server reads its write back from it
// (read-your-writes). It gives up quietly after localWait: the write is
// committed either way.
func (s *Server) waitLocal(ctx context.Context, index uint64) {
	ctx, cancel := context.WithTimeout(ctx, localWait)
	defer cancel()
	for {
		applied, ch := s.fsm.Applied()
		if applied >= index {
			return
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return
		}
	}
}

func isForwarded(ctx context.Context) bool {
	md, ok := metadata.FromIncomingContext(ctx)
	return ok && len(md.Get(forwardedKey)) > 0
}

// leaderConn returns a connection to the current leader's gRPC address, as
// registered in the servers table.
func (s *Server) leaderConn() (*grpc.ClientConn, error) {
	_, id := s.raft.LeaderWithID()
	if id == "" {
		return nil, errNoLeader
	}
	srv, err := s.store.Server(string(id))
	if err != nil {
		// Elected but not registered yet (a brand-new cluster).
		return nil, errNoLeader
	}
	return s.peers.get(srv.GetGrpcAddr())
}

// consistentRead prepares a linearizable read. On the leader it commits a
// barrier through a quorum, which proves leadership and returns only when the
// FSM has applied everything committed before it; the caller then reads
// locally (nil connection). Elsewhere it returns a connection to the leader,
// to which the caller forwards the read. raft.AppliedIndex is not enough to
// wait on: raft advances it when it hands entries to the FSM, not when the
// FSM has applied them.
func (s *Server) consistentRead(ctx context.Context) (*grpc.ClientConn, error) {
	deadline := time.Now().Add(s.cfg.LeaderWait)
	backoff := 25 * time.Millisecond
	for {
		changed := s.leaders.changed()
		if s.IsLeader() {
			err := s.raft.Barrier(timeoutFrom(ctx)).Error()
			if err == nil {
				return nil, nil
			}
			if !errors.Is(err, raft.ErrNotLeader) && !errors.Is(err, raft.ErrLeadershipLost) {
				return nil, toStatus(err)
			}
		} else if isForwarded(ctx) {
			return nil, status.Error(codes.Unavailable, "leadership moved while the read was forwarded: retry")
		} else if conn, err := s.leaderConn(); err == nil {
			return conn, nil
		}
		if time.Now().After(deadline) {
			return nil, s.noLeaderError()
		}
		if !sleepOrLeader(ctx, retry.Jitter(backoff), changed) {
			return nil, ctx.Err()
		}
		backoff = minDur(backoff*2, 250*time.Millisecond)
	}
}

func newWatch(st *state.Store) memdb.WatchSet {
	ws := memdb.NewWatchSet()
	ws.Add(st.AbandonCh())
	return ws
}

// peerPool keeps one gRPC connection per peer address.
type peerPool struct {
	sec   transport.Security
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

func newPeerPool(sec transport.Security) *peerPool {
	return &peerPool{sec: sec, conns: map[string]*grpc.ClientConn{}}
}

func (p *peerPool) get(addr string) (*grpc.ClientConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.conns[addr]; ok {
		return c, nil
	}
	c, err := grpc.NewClient(addr, p.sec.GRPCDialOptions()...)
	if err != nil {
		return nil, fmt.Errorf("dial peer %s: %w", addr, err)
	}
	p.conns[addr] = c
	return c, nil
}

func (p *peerPool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for addr, c := range p.conns {
		c.Close()
		delete(p.conns, addr)
	}
}

// actorOf is who a command is made for: the person or pipeline that asked,
// or nil for servers, agents and the servers' own work.
func actorOf(p auth.Principal) *relv1.Actor {
	if !p.IsPerson() {
		return nil
	}
	return &relv1.Actor{Kind: p.Kind, Id: p.ID, Name: p.Name}
}
