package server

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/relhq/rel/internal/retry"
	"github.com/relhq/rel/internal/rollout"
	"github.com/relhq/rel/internal/rollout/engine"
	"github.com/relhq/rel/internal/state"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// monitorLeadership runs leader-only work while this node leads: one leader
// loop at a time, started on gaining leadership and cancelled on losing it.
func (s *Server) monitorLeadership() {
	var (
		stop    context.CancelFunc
		stopped chan struct{}
	)
	end := func() {
		if stop != nil {
			stop()
			<-stopped
			stop, stopped = nil, nil
		}
	}
	defer end()
	for {
		select {
		case <-s.ctx.Done():
			return
		case isLeader := <-s.leaderCh:
			if isLeader && stop == nil {
				ctx, cancel := context.WithCancel(s.ctx)
				stop, stopped = cancel, make(chan struct{})
				go func() {
					defer close(stopped)
					s.leaderLoop(ctx)
				}()
				s.logger.Info("gained leadership")
			} else if !isLeader && stop != nil {
				end()
				s.logger.Info("lost leadership")
			}
		}
	}
}

// leaderLoop establishes leadership: a barrier so the FSM holds everything
// committed by earlier leaders before leader-only work reads the state; then
// it runs the leader-only subsystems (the rollout watcher, the agent
// liveness sweep) until leadership is lost.
func (s *Server) leaderLoop(ctx context.Context) {
	for ctx.Err() == nil {
		term := s.raft.CurrentTerm()
		if err := s.raft.Barrier(s.cfg.LeaderWait).Error(); err != nil {
			s.logger.Warn("leader barrier failed; retrying", "err", err)
			if !retry.Sleep(ctx, retry.Jitter(200*time.Millisecond)) {
				return
			}
			continue
		}
		s.caughtUpTerm.Store(term)
		break
	}
	if s.store.ClusterID() == "" {
		// A new cluster: name it, so agents can tell it from a rebuilt one
		// whose raft indexes start again.
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if _, err := s.apply(actx, &relv1.Command{Kind: &relv1.Command_InitCluster{InitCluster: &relv1.InitCluster{ClusterId: newID("cl-")}}}); err != nil && ctx.Err() == nil {
			s.logger.Warn("could not name the cluster; agents will not notice a rebuilt cluster", "err", err)
		}
		cancel()
	}
	var wg sync.WaitGroup
	wg.Add(9)
	go func() {
		defer wg.Done()
		s.approvalExpiryLoop(ctx)
	}()
	go func() {
		defer wg.Done()
		s.promoteLoop(ctx)
	}()
	go func() {
		defer wg.Done()
		s.autoDeployLoop(ctx)
	}()
	go func() {
		defer wg.Done()
		s.artifactGCLoop(ctx)
	}()
	go func() {
		defer wg.Done()
		s.retentionLoop(ctx)
	}()
	go func() {
		defer wg.Done()
		s.catchUpLoop(ctx)
	}()
	go func() {
		defer wg.Done()
		eng := &engine.Engine{Store: s.store, Apply: s.apply, Logger: s.logger.With("component", "rollout-engine"),
			Now: time.Now, NewID: func() string { return newID("ro-") },
			// A frozen rollout requested under an approval policy carries
			// it: released from the freeze, it asks for its approvals.
			NeedsApproval: func(ro *relv1.Rollout) bool {
				return ro.GetApprovalPolicy() != nil && ro.GetChangeType() != rollout.ChangeStandard
			}}
		eng.Run(ctx)
	}()
	go func() {
		defer wg.Done()
		s.sweepAgents(ctx)
	}()
	go func() {
		defer wg.Done()
		s.deliverWebhooks(ctx)
	}()
	wg.Wait()
}

// registerSelfLoop makes sure this node's addresses are in the replicated
// servers table (after bootstrap, join, or a restart with new ports), retrying
// with jittered backoff until it is or the node stops.
func (s *Server) registerSelfLoop() {
	backoff := 100 * time.Millisecond
	for {
		self := s.selfRecord()
		cur, err := s.store.Server(self.GetId())
		if err == nil && sameAddrs(cur, self) {
			// Registered. Wait for the table to change (a restore, a
			// removal) before checking again.
			ws := newWatch(s.store)
			if _, _, err := s.store.Servers(ws); err == nil {
				if ws.WatchCtx(s.ctx) != nil {
					return
				}
			}
			continue
		}
		if !isMember(s.raft, self.GetId()) || !s.caughtUp() {
			// Not in the raft configuration (yet, or any more), or still
			// replaying the log after a restart, when the registration it
			// would read may be stale: check again shortly.
			if !retry.Sleep(s.ctx, retry.Jitter(backoff)) {
				return
			}
			backoff = minDur(backoff*2, 2*time.Second)
			continue
		}
		self.RegisteredUnixNano = time.Now().UnixNano()
		ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
		_, err = s.apply(ctx, &relv1.Command{Kind: &relv1.Command_RegisterServer{RegisterServer: &relv1.RegisterServer{Server: self}}})
		cancel()
		if err != nil {
			if s.ctx.Err() != nil {
				return
			}
			s.logger.Debug("registering this node failed; retrying", "err", err)
			if !retry.Sleep(s.ctx, retry.Jitter(backoff)) {
				return
			}
			backoff = minDur(backoff*2, 2*time.Second)
			continue
		}
		s.logger.Info("registered node addresses", "grpc_addr", self.GetGrpcAddr(), "http_addr", self.GetHttpAddr())
		backoff = 100 * time.Millisecond
	}
}

// caughtUp reports whether this node knows a leader and has applied
// everything it knows to be committed.
func (s *Server) caughtUp() bool { return replicaCaughtUp(s.raft) }

func sameAddrs(a, b *relv1.Server) bool {
	return a.GetRaftAddr() == b.GetRaftAddr() && a.GetGrpcAddr() == b.GetGrpcAddr() && a.GetHttpAddr() == b.GetHttpAddr()
}

func isMember(r *raft.Raft, id string) bool {
	f := r.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	for _, srv := range f.Configuration().Servers {
		if string(srv.ID) == id {
			return true
		}
	}
	return false
}

// joinLoop asks the --join addresses, in turn, to add this node, until one
// does or the node stops.
func (s *Server) joinLoop() {
	req := &relv1.JoinRequest{Id: s.cfg.NodeID, RaftAddr: s.RaftAddr(), GrpcAddr: s.GRPCAddr(), HttpAddr: s.HTTPAddr()}
	backoff := 200 * time.Millisecond
	for attempt := 0; ; attempt++ {
		if isMember(s.raft, s.cfg.NodeID) {
			return
		}
		for _, addr := range s.cfg.Join {
			ctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
			conn, err := s.peers.get(addr)
			if err == nil {
				_, err = relv1.NewClusterServiceClient(conn).Join(ctx, req)
			}
			cancel()
			if err == nil {
				s.logger.Info("joined the cluster", "via", addr)
				return
			}
			if s.ctx.Err() != nil {
				return
			}
			s.logger.Warn("join failed; will retry", "via", addr, "err", err, "attempt", attempt+1)
		}
		if !retry.Sleep(s.ctx, retry.Jitter(backoff)) {
			return
		}
		backoff = minDur(backoff*2, 5*time.Second)
	}
}

// addNonvoter admits a node on the leader and records its addresses. The
// node's raft address must answer, over TLS, as that node: a join naming an
// address nobody (or somebody else) answers at would add a voter that can
// never vote, and cost a small cluster its quorum. It joins as a non-voter
// and promoteLoop makes it a voter once it has caught up, so a new node
// replaying a long log does not count toward the quorum meanwhile.
func (s *Server) addNonvoter(ctx context.Context, req *relv1.JoinRequest) (uint64, error) {
	cf := s.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return 0, err
	}
	for _, srv := range cf.Configuration().Servers {
		sameID := string(srv.ID) == req.GetId()
		sameAddr := string(srv.Address) == req.GetRaftAddr()
		switch {
		case sameID && sameAddr:
			// Already a member (a retried join): just refresh its record.
			return s.apply(ctx, registerCmd(req))
		case sameID || sameAddr:
			return 0, errPrecondition("node %q or raft address %s is already a member as %q at %s: remove it first with 'relctl cluster remove %s'",
				req.GetId(), req.GetRaftAddr(), srv.ID, srv.Address, srv.ID)
		}
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	err := s.sec.ProbeRaft(pctx, req.GetRaftAddr(), req.GetId())
	cancel()
	if err != nil {
		return 0, errPrecondition("raft address %s of node %q does not answer as that server over TLS: %v; give --raft-addr the address peers reach the node at, and open that port", req.GetRaftAddr(), req.GetId(), err)
	}
	f := s.raft.AddNonvoter(raft.ServerID(req.GetId()), raft.ServerAddress(req.GetRaftAddr()), 0, timeoutFrom(ctx))
	if err := f.Error(); err != nil {
		return 0, err
	}
	s.logger.Info("added non-voter; it becomes a voter once it has caught up", "id", req.GetId(), "raft_addr", req.GetRaftAddr())
	idx, err := s.apply(ctx, registerCmd(req))
	select {
	case s.promoteCh <- struct{}{}:
	default:
	}
	return idx, err
}

// promoteSlack is how far behind the leader's commit index a non-voter may
// be and still count as caught up.
const promoteSlack = 64

// promoteIdle is how often promoteLoop looks while there is no non-voter.
const promoteIdle = 10 * time.Second

// promoteLoop runs on the leader: a non-voter whose replica has caught up
// with the log becomes a voter.
func (s *Server) promoteLoop(ctx context.Context) {
	wait := 200 * time.Millisecond
	for {
		t := time.NewTimer(retry.Jitter(wait))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-s.promoteCh:
			t.Stop()
		case <-t.C:
		}
		if s.promoteCaughtUp(ctx) {
			// No non-voter left: a join wakes the loop through promoteCh,
			// so only look now and then (an idle leader used to ask raft
			// for its configuration every 200-400 ms).
			wait = promoteIdle
		} else {
			wait = minDur(wait*2, 2*time.Second)
		}
	}
}

// promoteCaughtUp promotes every caught-up non-voter; it reports whether
// none is left waiting.
func (s *Server) promoteCaughtUp(ctx context.Context) bool {
	cf := s.raft.GetConfiguration()
	if cf.Error() != nil {
		return false
	}
	done := true
	for _, m := range cf.Configuration().Servers {
		if m.Suffrage != raft.Nonvoter {
			continue
		}
		done = false
		reg, err := s.store.Server(string(m.ID))
		if err != nil {
			continue
		}
		conn, err := s.peers.get(reg.GetGrpcAddr())
		if err != nil {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, memberProbeTimeout)
		st, err := relv1.NewClusterServiceClient(conn).Status(pctx, &relv1.StatusRequest{})
		cancel()
		if err != nil || st.GetAppliedIndex()+promoteSlack < s.raft.CommitIndex() {
			continue
		}
		if err := s.raft.AddVoter(m.ID, m.Address, 0, timeoutFrom(ctx)).Error(); err != nil {
			s.logger.Warn("promoting a caught-up non-voter failed; will retry", "id", m.ID, "err", err)
			continue
		}
		s.logger.Info("promoted to voter", "id", m.ID, "applied_index", st.GetAppliedIndex())
	}
	return done
}

func registerCmd(req *relv1.JoinRequest) *relv1.Command {
	return &relv1.Command{StampedUnixNano: time.Now().UnixNano(), Kind: &relv1.Command_RegisterServer{RegisterServer: &relv1.RegisterServer{Server: &relv1.Server{
		Id: req.GetId(), RaftAddr: req.GetRaftAddr(), GrpcAddr: req.GetGrpcAddr(), HttpAddr: req.GetHttpAddr(),
		RegisteredUnixNano: time.Now().UnixNano(),
	}}}}
}

// removeServer takes a node out of the raft configuration and the servers table.
func (s *Server) removeServer(ctx context.Context, id string) (uint64, error) {
	if !isMember(s.raft, id) {
		if _, err := s.store.Server(id); errors.Is(err, state.ErrNotFound) {
			return 0, errNotFound("node %q is not a member: 'relctl cluster members' lists them", id)
		}
	} else {
		if id == s.cfg.NodeID && s.voterCount() == 1 {
			return 0, errPrecondition("node %q is the only voter: removing it would leave no cluster", id)
		}
		if err := s.raft.RemoveServer(raft.ServerID(id), 0, timeoutFrom(ctx)).Error(); err != nil {
			return 0, err
		}
		s.logger.Info("removed server", "id", id)
	}
	return s.apply(ctx, &relv1.Command{Kind: &relv1.Command_DeregisterServer{DeregisterServer: &relv1.DeregisterServer{Id: id}}})
}

func timeoutFrom(ctx context.Context) time.Duration {
	if d, ok := ctx.Deadline(); ok {
		if t := time.Until(d); t > 0 {
			return t
		}
		return time.Millisecond
	}
	return 10 * time.Second
}

func minDur(a, b time.Duration) time.Duration {
	if a < b {
		return a
	}
	return b
}
