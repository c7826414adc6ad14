package server

import (
	"context"
	"sort"
	"sync"
	"time"

	"github.com/hashicorp/go-memdb"
	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/relhq/rel/internal/auth"
	"github.com/relhq/rel/internal/retry"
	"github.com/relhq/rel/internal/validate"
	"github.com/relhq/rel/internal/version"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// memberProbeTimeout bounds how long Members waits for each member's status.
const memberProbeTimeout = time.Second

// clusterService implements relv1.ClusterService.
type clusterService struct {
	relv1.UnimplementedClusterServiceServer
	s *Server
}

// Members lists the raft configuration, asking every member for its status
// concurrently. It is served by the leader, whose configuration is
// authoritative.
func (c *clusterService) Members(ctx context.Context, req *relv1.MembersRequest) (*relv1.MembersResponse, error) {
	s := c.s
	if !s.IsLeader() {
		if isForwarded(ctx) {
			return nil, status.Error(codes.Unavailable, "leadership moved while the request was forwarded: retry")
		}
		conn, err := s.consistentRead(ctx)
		if err != nil {
			return nil, toStatus(err)
		}
		if conn != nil {
			return relv1.NewClusterServiceClient(conn).Members(forwardCtx(ctx), req)
		}
	}
	cf := s.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return nil, toStatus(err)
	}
	servers, _, err := s.store.Servers(memdb.NewWatchSet())
	if err != nil {
		return nil, toStatus(err)
	}
	byID := map[string]*relv1.Server{}
	for _, srv := range servers {
		byID[srv.GetId()] = srv
	}
	_, leaderID := s.raft.LeaderWithID()
	cfgServers := cf.Configuration().Servers
	members := make([]*relv1.Member, len(cfgServers))
	var wg sync.WaitGroup
	for i, rs := range cfgServers {
		m := &relv1.Member{
			Id:       string(rs.ID),
			RaftAddr: string(rs.Address),
			Suffrage: rs.Suffrage.String(),
			Leader:   rs.ID == leaderID,
		}
		if reg := byID[m.Id]; reg != nil {
			m.GrpcAddr, m.HttpAddr = reg.GetGrpcAddr(), reg.GetHttpAddr()
		}
		members[i] = m
		if m.Id == s.cfg.NodeID {
			st := s.status()
			m.Role, m.AppliedIndex, m.CommitIndex, m.LastIndex = st.Role, st.AppliedIndex, st.CommitIndex, st.LastIndex
			continue
		}
		if m.GrpcAddr == "" {
			m.Role, m.Error = "unknown", "not registered yet"
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			pctx, cancel := context.WithTimeout(ctx, memberProbeTimeout)
			defer cancel()
			conn, err := s.peers.get(m.GrpcAddr)
			var st *relv1.StatusResponse
			if err == nil {
				st, err = relv1.NewClusterServiceClient(conn).Status(pctx, &relv1.StatusRequest{})
			}
			if err != nil {
				m.Role, m.Error = "unreachable", status.Convert(err).Message()
				return
			}
			m.Role, m.AppliedIndex, m.CommitIndex, m.LastIndex = st.GetRole(), st.GetAppliedIndex(), st.GetCommitIndex(), st.GetLastIndex()
		}()
	}
	wg.Wait()
	sort.Slice(members, func(i, j int) bool { return members[i].Id < members[j].Id })
	return &relv1.MembersResponse{Members: members}, nil
}

// Join admits a node. Followers forward it to the leader. Only a server
// certificate of this cluster may ask, and only for itself: the node id it
// joins as is its certificate's.
func (c *clusterService) Join(ctx context.Context, req *relv1.JoinRequest) (*relv1.JoinResponse, error) {
	s := c.s
	if req.GetId() == "" || req.GetRaftAddr() == "" || req.GetGrpcAddr() == "" {
		return nil, status.Error(codes.InvalidArgument, "join needs the node's id, raft address and gRPC address")
	}
	if !nodeIDRE.MatchString(req.GetId()) {
		return nil, status.Errorf(codes.InvalidArgument, "node id %q: use 1-63 letters, digits and . _ -", req.GetId())
	}
	if err := validate.Command(registerCmd(req)); err != nil {
		return nil, toStatus(err)
	}
	if p := auth.FromContext(ctx); p.Kind != auth.KindServer || p.ID != req.GetId() {
		return nil, status.Errorf(codes.PermissionDenied, "%s may not join the cluster as server %q: a server joins with its own server certificate", p, req.GetId())
	}
	if conn, err := s.leaderTarget(ctx); err != nil {
		return nil, err
	} else if conn != nil {
		return relv1.NewClusterServiceClient(conn).Join(forwardCtx(ctx), req)
	}
	idx, err := s.addNonvoter(ctx, req)
	if err != nil {
		return nil, toStatus(err)
	}
	return &relv1.JoinResponse{Index: idx}, nil
}

// Remove takes a node out of the cluster. Followers forward it to the leader.
func (c *clusterService) Remove(ctx context.Context, req *relv1.RemoveRequest) (*relv1.RemoveResponse, error) {
	s := c.s
	if !nodeIDRE.MatchString(req.GetId()) {
		return nil, status.Errorf(codes.InvalidArgument, "node id %q: use 1-63 letters, digits and . _ -", req.GetId())
	}
	if conn, err := s.leaderTarget(ctx); err != nil {
		return nil, err
	} else if conn != nil {
		return relv1.NewClusterServiceClient(conn).Remove(forwardCtx(ctx), req)
	}
	// A retry of a remove already applied: the node is gone now, which
	// removeServer would call NotFound.
	if idx, _, ok, err := s.repeatedAnswer(ctx, &relv1.Command{Kind: &relv1.Command_DeregisterServer{DeregisterServer: &relv1.DeregisterServer{Id: req.GetId()}}}); ok {
		if err != nil {
			return nil, err
		}
		return &relv1.RemoveResponse{Index: idx}, nil
	}
	idx, err := s.removeServer(ctx, req.GetId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &relv1.RemoveResponse{Index: idx}, nil
}

// Status is this node's own view.
func (c *clusterService) Status(ctx context.Context, req *relv1.StatusRequest) (*relv1.StatusResponse, error) {
	return c.s.status(), nil
}

// Apply commits a command a peer forwarded; only the leader accepts it. The
// command is decoded and validated here, with the checks the endpoints
// apply, and only what was validated is proposed: a peer's bytes never
// reach the log unexamined.
func (c *clusterService) Apply(ctx context.Context, req *relv1.ApplyRequest) (*relv1.ApplyResponse, error) {
	if !c.s.IsLeader() {
		return nil, status.Error(codes.Unavailable, "not the leader: the forwarding server will retry with the new one")
	}
	var cmd relv1.Command
	if err := proto.Unmarshal(req.GetCommand(), &cmd); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "undecodable command: %v", err)
	}
	if err := validate.Command(&cmd); err != nil {
		return nil, toStatus(err)
	}
	b, err := proto.Marshal(&cmd)
	if err != nil {
		return nil, toStatus(err)
	}
	a, err := c.s.applyBytes(ctx, b, true)
	if err != nil {
		return nil, toStatus(err)
	}
	return &relv1.ApplyResponse{Index: a.Index, Ref: a.Ref, Duplicate: a.Duplicate, ItemErrors: itemErrors(a.Items)}, nil
}

func (s *Server) status() *relv1.StatusResponse {
	_, leaderID := s.raft.LeaderWithID()
	st := &relv1.StatusResponse{
		Id:           s.cfg.NodeID,
		Role:         roleName(s.raft.State()),
		LeaderId:     string(leaderID),
		AppliedIndex: s.raft.AppliedIndex(),
		CommitIndex:  s.raft.CommitIndex(),
		LastIndex:    s.raft.LastIndex(),
		Term:         s.raft.CurrentTerm(),
		Version:      version.Version,
		RaftAddr:     s.RaftAddr(),
		GrpcAddr:     s.GRPCAddr(),
		HttpAddr:     s.HTTPAddr(),
	}
	if leaderID != "" {
		if srv, err := s.store.Server(string(leaderID)); err == nil {
			st.LeaderGrpcAddr = srv.GetGrpcAddr()
		}
	}
	return st
}

func roleName(st raft.RaftState) string {
	switch st {
	case raft.Leader:
		return "leader"
	case raft.Follower:
		return "follower"
	case raft.Candidate:
		return "candidate"
	default:
		return "shutdown"
	}
}

// leaderTarget says where a leader-only request is served: nil means here
// (this node leads), a connection means forward it to the leader. A request
// that was already forwarded is not forwarded again.
func (s *Server) leaderTarget(ctx context.Context) (*grpc.ClientConn, error) {
	if s.IsLeader() {
		return nil, s.leaderCaughtUp(ctx)
	}
	if isForwarded(ctx) {
		return nil, status.Error(codes.Unavailable, "leadership moved while the request was forwarded: retry")
	}
	conn, err := s.waitLeaderConn(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	return conn, nil
}

// leaderCaughtUp returns once this leader's FSM holds every entry earlier
// leaders committed. A new leader learns that its log's tail is committed
// only when an entry of its own term commits, and its FSM applies that tail
// only then: a request it serves before may not see a write a client has
// already had answered (a release just created answered NotFound). The
// leader loop's barrier marks the term caught up; until then each request
// waits on a barrier of its own.
func (s *Server) leaderCaughtUp(ctx context.Context) error {
	term := s.raft.CurrentTerm()
	if s.caughtUpTerm.Load() == term {
		return nil
	}
	if err := s.raft.Barrier(timeoutFrom(ctx)).Error(); err != nil {
		return toStatus(err)
	}
	s.caughtUpTerm.Store(term)
	return nil
}

// waitLeaderConn waits up to LeaderWait for a known, registered leader.
func (s *Server) waitLeaderConn(ctx context.Context) (*grpc.ClientConn, error) {
	deadline := time.Now().Add(s.cfg.LeaderWait)
	backoff := 25 * time.Millisecond
	for {
		if conn, err := s.leaderConn(); err == nil {
			return conn, nil
		}
		if time.Now().After(deadline) {
			return nil, s.noLeaderError()
		}
		if !retry.Sleep(ctx, retry.Jitter(backoff)) {
			return nil, ctx.Err()
		}
		backoff = minDur(backoff*2, 250*time.Millisecond)
	}
}
