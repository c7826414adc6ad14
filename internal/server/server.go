// Package server is one rel-server node: raft with a bolt log and file
// snapshots, the gRPC services for relctl and peers, the HTTP endpoints for
// health, metrics and profiling, cluster membership, write forwarding to the
// leader, and the leadership monitor that runs leader-only work.
package server

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
	"google.golang.org/grpc"

	"github.com/relhq/rel/internal/artifact"
	"github.com/relhq/rel/internal/fsm"
	"github.com/relhq/rel/internal/pki"
	"github.com/relhq/rel/internal/state"
	"github.com/relhq/rel/internal/transport"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// Server is one node of the control plane.
type Server struct {
	cfg    Config
	logger *slog.Logger
	sec    transport.Security
	// signer signs agent certificates; nil without --ca-key-file.
	signer atomic.Pointer[pki.CA]

	store *state.Store
	fsm   *fsm.FSM

	raft *raft.Raft
	// raftReady is raft once started, for the raft handshakes that may
	// begin while setupRaft is still running.
	raftReady atomic.Pointer[raft.Raft]
	raftTrans *raft.NetworkTransport
	// quiet holds raft's empty AppendEntries while there is nothing new.
	quiet *quietAppends
	// raftLogs is raft's log store (freshness reads entry types).
	raftLogs  raft.LogStore
	boltStore *raftboltdb.BoltStore
	// raftLogSizes counts the bytes appended to the log, and logTrailing
	// and logThreshold are the counts the log budget set (raftbudget.go).
	raftLogSizes              *logSizes
	logTrailing, logThreshold atomic.Uint64
	snaps                     *raft.FileSnapshotStore
	leaderCh                  chan bool
	// promoteCh wakes the leader's promotion of non-voters after a join.
	promoteCh chan struct{}

	grpcLn, httpLn net.Listener
	grpcSrv        *grpc.Server
	httpSrv        *http.Server

	metrics *metrics
	peers   *peerPool

	artifacts *artifact.Store
	// removals deletes the blobs artifact GC removed from this server.
	removals *removals
	// uploads holds a token per upload in progress (nil: no limit).
	uploads chan struct{}
	fetchState
	sessions      *sessions
	reports       *reportBatcher
	agentSessions *sessionBatcher
	// auditRefusals commits refusals that never reached raft.
	auditRefusals *auditBatcher
	// auditKey signs audit checkpoints; nil without --audit-key-file.
	auditKey ed25519.PrivateKey
	// fresh holds desired-state updates while this replica is stale.
	fresh *freshness
	// leaders wakes requests waiting out an election.
	leaders leaderWatch
	// caughtUpTerm is the raft term in which this node, leading, has seen
	// a barrier apply: its FSM holds what earlier leaders committed
	// (leaderCaughtUp).
	caughtUpTerm atomic.Uint64

	// ctx is cancelled when the server shuts down; background loops use it.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	shutdownOnce sync.Once
	shutdownErr  error
}

// New opens the node's data dir and listeners and starts raft, gRPC and HTTP.
// It returns once everything listens; the node may not have a leader yet.
func New(c Config) (_ *Server, err error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	cfg := c.withDefaults()
	mat, err := loadTLS(cfg)
	if err != nil {
		return nil, err
	}
	if err := ensureDataDir(cfg.DataDir, cfg.NodeID); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg:    cfg,
		logger: cfg.Logger.With("node", cfg.NodeID),
		store:  state.New(),
		ctx:    ctx,
		cancel: cancel,
		sec:    transport.Security{M: mat},
	}
	s.sec.RaftPeer = s.memberPeer
	if cfg.CAKeyFile != "" {
		ca, err := loadSigner(cfg, mat)
		if err != nil {
			cancel()
			return nil, err
		}
		s.signer.Store(ca)
	}
	if s.auditKey, err = loadAuditKey(cfg); err != nil {
		cancel()
		return nil, fmt.Errorf("--audit-key-file: %w", err)
	}
	s.promoteCh = make(chan struct{}, 1)
	s.fsm = fsm.New(s.store)
	s.peers = newPeerPool(s.sec)
	s.sessions = newSessions()
	s.reports = newReportBatcher(s)
	s.agentSessions = newSessionBatcher(s)
	s.auditRefusals = newAuditBatcher(s)
	s.fresh = newFreshness()
	s.fetches = map[string]*fetchCall{}
	s.httpClient = &http.Client{Transport: s.sec.HTTPTransport()}
	defer func() {
		if err != nil {
			s.closeAll()
		}
	}()

	if s.artifacts, err = artifact.Open(filepath.Join(cfg.DataDir, "artifacts"), cfg.MaxArtifactBytes, cfg.ArtifactQuota); err != nil {
		return nil, err
	}
	s.removals = newRemovals(filepath.Join(cfg.DataDir, "artifacts"))
	if n := s.cfg.MaxConcurrentUploads; n > 0 {
		s.uploads = make(chan struct{}, n)
	}
	if s.grpcLn, err = s.sec.Listen("grpc", cfg.GRPCAddr); err != nil {
		return nil, err
	}
	if s.httpLn, err = s.sec.Listen("http", cfg.HTTPAddr); err != nil {
		return nil, err
	}
	if err = s.setupRaft(); err != nil {
		return nil, err
	}
	s.metrics = newMetrics(s)
	s.setupGRPC()
	s.setupHTTP()

	// Rollout events up to the log's end on disk were counted by the
	// process that first applied them.
	eventsCounted := s.raft.LastIndex()
	s.wg.Add(12)
	go func() {
		defer s.wg.Done()
		s.watchRolloutEvents(eventsCounted)
	}()
	go func() {
		defer s.wg.Done()
		s.watchLogBudget()
	}()
	go func() {
		defer s.wg.Done()
		s.reports.run(s.ctx)
	}()
	go func() {
		defer s.wg.Done()
		s.auditRefusals.run(s.ctx)
	}()
	go func() {
		defer s.wg.Done()
		s.agentSessions.run(s.ctx)
	}()
	go func() {
		defer s.wg.Done()
		s.watchRemovals()
	}()
	go func() {
		defer s.wg.Done()
		s.watchFreshness()
	}()
	go func() {
		defer s.wg.Done()
		s.watchRevocations()
	}()
	go func() {
		defer s.wg.Done()
		s.reassertSessions()
	}()
	go func() {
		defer s.wg.Done()
		if err := s.grpcSrv.Serve(s.grpcLn); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			s.logger.Error("grpc server stopped", "err", err)
		}
	}()
	go func() {
		defer s.wg.Done()
		// The certificate comes from TLSConfig (GetConfigForClient), so
		// that a reload applies to new connections.
		if err := s.httpSrv.ServeTLS(s.httpLn, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.logger.Error("http server stopped", "err", err)
		}
	}()
	go func() {
		defer s.wg.Done()
		s.monitorLeadership()
	}()

	if err = s.bootstrapOrJoin(); err != nil {
		return nil, err
	}
	s.logger.Info("rel-server started",
		"grpc_addr", s.GRPCAddr(), "raft_addr", s.RaftAddr(), "http_addr", s.HTTPAddr(),
		"data_dir", cfg.DataDir, "cluster", s.cluster(), "signs_agent_certificates", s.signer.Load() != nil,
		"certificate_expires", mat.Current().Leaf.NotAfter.UTC().Format(time.RFC3339))
	return s, nil
}

// loadTLS reads the node's TLS material and checks that its certificate is
// a server certificate for this node id.
func loadTLS(cfg Config) (*transport.Material, error) {
	m, err := transport.NewMaterial(transport.Files{CA: cfg.CAFile, Cert: cfg.CertFile, Key: cfg.KeyFile})
	if err != nil {
		return nil, fmt.Errorf("%w: TLS: %w", ErrConfig, err)
	}
	if err := checkServerIdentity(m.Current(), cfg.NodeID); err != nil {
		return nil, err
	}
	return m, nil
}

func checkServerIdentity(b *transport.Bundle, nodeID string) error {
	id := b.Identity
	if id.Kind != pki.KindServer {
		return fmt.Errorf("%w: --cert-file holds the certificate of %s (%s); a server needs one made with 'relctl tls cert create --server --node-id %s'", ErrConfig, id.Kind, id, nodeID)
	}
	if id.ID != nodeID {
		return fmt.Errorf("%w: --cert-file is the certificate of server %q, not of --node-id %q", ErrConfig, id.ID, nodeID)
	}
	if time.Now().After(b.Leaf.NotAfter) {
		return fmt.Errorf("%w: --cert-file expired at %s: make a new one with 'relctl tls cert create --server --node-id %s'", ErrConfig, b.Leaf.NotAfter.UTC().Format(time.RFC3339), nodeID)
	}
	return nil
}

func loadSigner(cfg Config, m *transport.Material) (*pki.CA, error) {
	ca, err := pki.LoadCA(cfg.CAFile, cfg.CAKeyFile)
	if err != nil {
		return nil, fmt.Errorf("%w: --ca-key-file: %v", ErrConfig, err)
	}
	if ca.Cluster != m.Current().Cluster() {
		return nil, fmt.Errorf("%w: --ca-key-file is the key of cluster %q's CA, this node is in cluster %q", ErrConfig, ca.Cluster, m.Current().Cluster())
	}
	return ca, nil
}

// cluster is the name of the cluster this node's certificate belongs to.
func (s *Server) cluster() string { return s.sec.M.Current().Cluster() }

// ReloadTLS reads the node's certificate, key, CA bundle and CA key again
// (SIGHUP). New connections use them; established ones keep theirs. If
// anything fails to load, everything in use is kept and the error says
// why.
func (s *Server) ReloadTLS() error {
	if err := s.sec.M.Reload(); err != nil {
		return err
	}
	if err := checkServerIdentity(s.sec.M.Current(), s.cfg.NodeID); err != nil {
		return err
	}
	if s.cfg.CAKeyFile != "" {
		ca, err := loadSigner(s.cfg, s.sec.M)
		if err != nil {
			return fmt.Errorf("TLS reload: the certificate was reloaded but the CA key was not: %w", err)
		}
		s.signer.Store(ca)
	}
	b := s.sec.M.Current()
	s.logger.Info("TLS material reloaded", "certificate", b.Identity.String(), "expires", b.Leaf.NotAfter.UTC().Format(time.RFC3339), "cas", len(b.CAs))
	return nil
}

func (s *Server) setupRaft() error {
	cfg := s.cfg
	raftDir := filepath.Join(cfg.DataDir, "raft")
	if err := os.MkdirAll(raftDir, 0o700); err != nil {
		return fmt.Errorf("%w: create %s: %v", ErrConfig, raftDir, err)
	}
	// Bolt takes an exclusive flock: a second rel-server on the same data
	// dir waits here, so bound the wait and say why.
	bolt, err := raftboltdb.New(raftboltdb.Options{
		Path:        filepath.Join(raftDir, "raft.db"),
		BoltOptions: &bbolt.Options{Timeout: 2 * time.Second},
	})
	if err != nil {
		return fmt.Errorf("open raft log %s: %w (is another rel-server running on this --data-dir?)", filepath.Join(raftDir, "raft.db"), err)
	}
	s.boltStore = bolt
	logs, err := raft.NewLogCache(512, bolt)
	if err != nil {
		return fmt.Errorf("raft log cache: %w", err)
	}
	snaps, err := raft.NewFileSnapshotStore(raftDir, snapshotsRetained, cfg.LogOutput)
	if err != nil {
		return fmt.Errorf("open snapshot store in %s: %w", raftDir, err)
	}
	s.snaps = snaps

	ln, err := s.sec.Listen("raft", cfg.RaftAddr)
	if err != nil {
		return err
	}
	advertise, err := advertiseAddr(ln.Addr())
	if err != nil {
		ln.Close()
		return err
	}
	layer := s.sec.RaftStreamLayer(ln, advertise)
	s.raftTrans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  layer,
		MaxPool: 3,
		Timeout: 10 * time.Second,
		Logger:  s.hclog("raft-net"),
	})

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.Logger = s.hclog("raft")
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.TrailingLogs = cfg.TrailingLogs
	// Followers learn that an entry committed from the leader's next
	// AppendEntries; when nothing else is written that is CommitTimeout
	// later (default 50 ms). Agents are served from followers' replicas,
	// so that delay would sit in every rollout step: keep it short. The
	// empty AppendEntries it would send every 5-10 ms while nothing
	// happens are held by quietAppends (raftquiet.go).
	rc.CommitTimeout = 5 * time.Millisecond
	// Failover is a follower missing heartbeats for HeartbeatTimeout (its
	// check fires every 1-2 timeouts) and, since a follower refuses votes
	// while it still has a leader, usually both followers doing so before
	// one wins: about two timeouts, 2.1-2.8 s with raft's 1 s (issue 10).
	// Half of it keeps the leader lease at 500 ms, as before: a leader
	// already had to reach a quorum every 500 ms or step down, so
	// followers now tolerate the same silence the leader always did.
	// Heartbeats go every 50-100 ms, outside the log's disk writes, and
	// pre-vote keeps one follower that times out spuriously from
	// deposing a leader the other still hears.
	rc.HeartbeatTimeout = DefaultRaftHeartbeatTimeout
	rc.ElectionTimeout = DefaultRaftElectionTimeout
	rc.LeaderLeaseTimeout = DefaultRaftLeaderLeaseTimeout
	if cfg.HeartbeatTimeout > 0 {
		rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	}
	if cfg.ElectionTimeout > 0 {
		rc.ElectionTimeout = cfg.ElectionTimeout
	}
	if cfg.LeaderLeaseTimeout > 0 {
		rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	}
	// Our own leadership monitor consumes NotifyCh; raft's LeaderCh drops
	// notifications when nobody reads it.
	s.leaderCh = make(chan bool, 16)
	rc.NotifyCh = s.leaderCh
	if err := raft.ValidateConfig(rc); err != nil {
		return fmt.Errorf("%w: raft: %v", ErrConfig, err)
	}
	// Held empty appends wait at most a fifth of the leader lease (100 ms
	// by default, 30 ms in test clusters): each also tells the leader its
	// follower is there, and the 5 ms appends used to give the lease far
	// more margin than heartbeats alone (every 50-100 ms) do, so at least
	// five contacts per lease window come from appends too.
	s.quiet = newQuietAppends(min(250*time.Millisecond, rc.LeaderLeaseTimeout/5), s.fsm.Applied)
	s.raftLogs = logs
	s.raftLogSizes = &logSizes{}
	r, err := raft.NewRaft(rc, s.fsm, sizedLogs{LogStore: quietLogs{LogStore: logs, q: s.quiet}, sizes: s.raftLogSizes}, bolt, snaps, quietTransport{noPipeline: noPipeline{s.raftTrans}, q: s.quiet})
	if err != nil {
		return fmt.Errorf("start raft: %w", err)
	}
	s.raft = r
	s.raftReady.Store(r)
	s.watchLeaders(r)
	return nil
}

func (s *Server) hclog(name string) hclog.Logger {
	level := hclog.Info
	switch {
	case s.cfg.LogLevel <= slog.LevelDebug:
		level = hclog.Debug
	case s.cfg.LogLevel >= slog.LevelError:
		level = hclog.Error
	case s.cfg.LogLevel >= slog.LevelWarn:
		level = hclog.Warn
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:       name,
		Level:      level,
		Output:     s.cfg.LogOutput,
		JSONFormat: s.cfg.LogJSON,
	}).With("node", s.cfg.NodeID)
}

// advertiseAddr is the address peers reach a listener at: a wildcard listen
// address cannot be dialled, so it must be given explicitly.
func advertiseAddr(a net.Addr) (net.Addr, error) {
	tcp, ok := a.(*net.TCPAddr)
	if !ok {
		return a, nil
	}
	if tcp.IP.IsUnspecified() {
		return nil, fmt.Errorf("%w: --raft-addr %s listens on every interface; give the one address peers reach this node at, e.g. --raft-addr 10.0.0.5:7401", ErrConfig, a)
	}
	return a, nil
}

// bootstrapOrJoin starts membership for a new data dir. A node with raft
// state on disk is already a member and needs neither.
func (s *Server) bootstrapOrJoin() error {
	has, err := raft.HasExistingState(s.boltStore, s.boltStore, s.snaps)
	if err != nil {
		return fmt.Errorf("read raft state: %w", err)
	}
	if has {
		s.logger.Info("raft state found on disk: rejoining the cluster as a known member")
	} else if s.cfg.Bootstrap {
		f := s.raft.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{
			Suffrage: raft.Voter,
			ID:       raft.ServerID(s.cfg.NodeID),
			Address:  s.raftTrans.LocalAddr(),
		}}})
		if err := f.Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			return fmt.Errorf("bootstrap cluster: %w", err)
		}
		s.logger.Info("bootstrapped a new cluster")
	} else if len(s.cfg.Join) > 0 {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.joinLoop()
		}()
	} else {
		s.logger.Warn("new data dir and neither --bootstrap nor --join: waiting to be added by a member (relctl cluster members shows the cluster)")
	}
	// Every node keeps its own registration (addresses) current in the
	// replicated state, so that peers can forward to it.
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.registerSelfLoop()
	}()
	return nil
}

// ID is the node id.
func (s *Server) ID() string { return s.cfg.NodeID }

// GRPCAddr is the address the gRPC API listens on.
func (s *Server) GRPCAddr() string { return s.grpcLn.Addr().String() }

// HTTPAddr is the address the HTTP endpoints listen on.
func (s *Server) HTTPAddr() string { return s.httpLn.Addr().String() }

// RaftAddr is the address raft listens on.
func (s *Server) RaftAddr() string { return string(s.raftTrans.LocalAddr()) }

// DataDir is the node's data directory.
func (s *Server) DataDir() string { return s.cfg.DataDir }

// Store is the node's replica of the state. Read only.
func (s *Server) Store() *state.Store { return s.store }

// Raft exposes raft for tests and diagnostics.
func (s *Server) Raft() *raft.Raft { return s.raft }

// GRPCServiceInfo lists the gRPC services and methods this node serves, for
// tests that check every method has an authorization rule.
func (s *Server) GRPCServiceInfo() map[string]grpc.ServiceInfo { return s.grpcSrv.GetServiceInfo() }

// IsLeader reports whether this node is the raft leader now.
func (s *Server) IsLeader() bool { return s.raft.State() == raft.Leader }

// Shutdown stops the node: it hands leadership to a peer if it leads a
// multi-node cluster, stops serving, stops raft and closes its files. It is
// safe to call more than once.
func (s *Server) Shutdown() error {
	return s.shutdown(true)
}

// Crash stops the node without handing over leadership, so that peers find
// out the way they would after a crash or a network cut: by missing
// heartbeats. Tests use it to measure failover.
func (s *Server) Crash() error {
	return s.shutdown(false)
}

func (s *Server) shutdown(transfer bool) error {
	s.shutdownOnce.Do(func() {
		s.logger.Info("shutting down", "leadership_transfer", transfer)
		if transfer && s.raft != nil && s.IsLeader() && s.voterCount() > 1 {
			// A graceful stop should not cost the cluster an election timeout.
			// The transfer goes through raft's replication goroutines: let
			// no empty append hold them.
			s.quiet.stop()
			if err := s.raft.LeadershipTransfer().Error(); err != nil {
				s.logger.Warn("leadership transfer failed", "err", err)
			}
		}
		s.shutdownErr = s.closeAll()
	})
	return s.shutdownErr
}

func (s *Server) voterCount() int {
	f := s.raft.GetConfiguration()
	if f.Error() != nil {
		return 0
	}
	n := 0
	for _, srv := range f.Configuration().Servers {
		if srv.Suffrage == raft.Voter {
			n++
		}
	}
	return n
}

// closeAll releases everything New may have opened, in dependency order.
func (s *Server) closeAll() error {
	s.cancel()
	var errs []error
	if s.grpcSrv != nil {
		stopped := make(chan struct{})
		go func() { s.grpcSrv.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(3 * time.Second):
			s.grpcSrv.Stop() // streams that will not end on their own
			<-stopped
		}
	} else if s.grpcLn != nil {
		s.grpcLn.Close()
	}
	if s.httpSrv != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		if err := s.httpSrv.Shutdown(ctx); err != nil {
			s.httpSrv.Close()
		}
		cancel()
	} else if s.httpLn != nil {
		s.httpLn.Close()
	}
	// Raft's shutdown joins its replication goroutines, which may sit in
	// an RPC to a peer that does not answer: close the transport before
	// waiting, so that those RPCs fail instead of holding shutdown.
	var shut raft.Future
	if s.raft != nil {
		s.quiet.stop()
		shut = s.raft.Shutdown()
	}
	if s.raftTrans != nil {
		s.raftTrans.CloseStreams()
		if err := s.raftTrans.Close(); err != nil {
			errs = append(errs, fmt.Errorf("raft transport: %w", err))
		}
	}
	if shut != nil {
		if err := shut.Error(); err != nil {
			errs = append(errs, fmt.Errorf("raft shutdown: %w", err))
		}
	}
	s.wg.Wait()
	s.peers.close()
	// Bolt closes last: raft writes to it until Shutdown returns.
	if s.boltStore != nil {
		if err := s.boltStore.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close raft log: %w", err))
		}
	}
	return errors.Join(errs...)
}

// noPipeline is raft's network transport without pipelined replication.
// hashicorp/raft's pipeline can wedge: after a follower answers
// Success=false the send loop may park on a channel nobody reads, and from
// then on the leader heartbeats that follower but never sends it another
// entry (hashicorp/raft#612), nor can it shut down. A follower that must
// catch up after a partition is exactly the case, so Rel replicates with
// plain AppendEntries (up to MaxAppendEntries per RPC).
type noPipeline struct{ *raft.NetworkTransport }

func (noPipeline) AppendEntriesPipeline(raft.ServerID, raft.ServerAddress) (raft.AppendPipeline, error) {
	return nil, raft.ErrPipelineReplicationNotSupported
}

// selfRecord is this node's registration as it should be in the state.
func (s *Server) selfRecord() *relv1.Server {
	return &relv1.Server{
		Id:       s.cfg.NodeID,
		RaftAddr: s.RaftAddr(),
		GrpcAddr: s.GRPCAddr(),
		HttpAddr: s.HTTPAddr(),
	}
}
