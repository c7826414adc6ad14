// Package testcluster starts in-process rel-server clusters for tests: real
// raft over TCP and real gRPC on loopback, each node with its own temp data
// dir, stopped by t.Cleanup.
package testcluster

import (
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"

	"github.com/relhq/rel/internal/pki"
	"github.com/relhq/rel/internal/server"
	"github.com/relhq/rel/internal/testport"
)

// Options tune a test cluster.
type Options struct {
	// Configure, when set, edits each node's config before it starts.
	Configure func(i int, cfg *server.Config)
	// ProductionTimeouts keeps raft's 1 s heartbeat and election timeouts
	// instead of the shortened test ones, for failover measurements.
	ProductionTimeouts bool
}

// Node is one member of a test cluster.
type Node struct {
	Index   int
	ID      string
	cfg     server.Config
	cluster *Cluster

	mu  sync.Mutex
	srv *server.Server
}

// Server is the node's running server, or nil while it is stopped.
func (n *Node) Server() *server.Server {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.srv
}

// Running reports whether the node is up.
func (n *Node) Running() bool { return n.Server() != nil }

// GRPCAddr is the node's gRPC address; it stays the same across restarts.
func (n *Node) GRPCAddr() string { return n.cfg.GRPCAddr }

// HTTPAddr is the node's HTTP address.
func (n *Node) HTTPAddr() string { return n.cfg.HTTPAddr }

// Dial connects to the node's gRPC address presenting a certificate for id
// (nil: none); the connection closes when the test ends.
func (n *Node) Dial(id *pki.Identity) *grpc.ClientConn {
	return n.cluster.PKI.Dial(n.cluster.t, n.GRPCAddr(), id)
}

// Admin connects to the node with an admin client certificate.
func (n *Node) Admin() *grpc.ClientConn {
	id := AdminID()
	return n.Dial(&id)
}

// Cluster is the cluster the node belongs to.
func (n *Node) Cluster() *Cluster { return n.cluster }

// DataDir is the node's data directory.
func (n *Node) DataDir() string { return n.cfg.DataDir }

// Cluster is a set of in-process nodes.
type Cluster struct {
	t     testing.TB
	Nodes []*Node
	// PKI is the cluster's CA; every node has a server certificate of it
	// and the CA key (it signs agent certificates).
	PKI *PKI
}

// New starts an n-node cluster: node 0 bootstraps, the others join it. It
// returns once every node is a registered member and a leader is known.
func New(t testing.TB, n int, opts Options) *Cluster {
	t.Helper()
	c := &Cluster{t: t, PKI: NewPKI(t, ClusterName)}
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("s%d", i+1)
		certFile, keyFile := c.PKI.Files(t, pki.Leaf{Identity: ServerID(id)})
		cfg := server.Config{
			NodeID:            id,
			CAFile:            c.PKI.CAFile,
			CertFile:          certFile,
			KeyFile:           keyFile,
			CAKeyFile:         c.PKI.CAKeyFile,
			AuditKeyFile:      c.PKI.AuditKeyFile,
			DataDir:           t.TempDir(),
			GRPCAddr:          freeAddr(t),
			RaftAddr:          freeAddr(t),
			HTTPAddr:          freeAddr(t),
			Bootstrap:         i == 0,
			SnapshotThreshold: 8192,
			SnapshotInterval:  5 * time.Second,
			Logger:            testLogger(t),
			LeaderWait:        5 * time.Second,
		}
		if !opts.ProductionTimeouts {
			cfg.HeartbeatTimeout = 300 * time.Millisecond
			cfg.ElectionTimeout = 300 * time.Millisecond
			cfg.LeaderLeaseTimeout = 150 * time.Millisecond
		}
		if i > 0 {
			cfg.Join = []string{c.Nodes[0].cfg.GRPCAddr}
		}
		if opts.Configure != nil {
			opts.Configure(i, &cfg)
		}
		node := &Node{Index: i, ID: cfg.NodeID, cfg: cfg, cluster: c}
		c.Nodes = append(c.Nodes, node)
		c.start(node)
		if i == 0 {
			c.WaitLeader()
		}
	}
	t.Cleanup(c.Stop)
	c.WaitMembers(n)
	return c
}

func (c *Cluster) start(n *Node) {
	c.t.Helper()
	srv, err := server.New(n.cfg)
	if err != nil {
		c.t.Fatalf("start node %s: %v", n.ID, err)
	}
	n.mu.Lock()
	n.srv = srv
	n.mu.Unlock()
}

// Stop shuts every running node down.
func (c *Cluster) Stop() {
	for _, n := range c.Nodes {
		if srv := n.Server(); srv != nil {
			if err := srv.Shutdown(); err != nil {
				c.t.Logf("shutdown %s: %v", n.ID, err)
			}
			n.mu.Lock()
			n.srv = nil
			n.mu.Unlock()
		}
	}
}

// Kill stops a node the way a crash would look to its peers: no leadership
// hand-over. Its data dir stays for Restart.
func (c *Cluster) Kill(n *Node) {
	c.t.Helper()
	srv := n.Server()
	if srv == nil {
		c.t.Fatalf("kill %s: not running", n.ID)
	}
	if err := srv.Crash(); err != nil {
		c.t.Logf("kill %s: %v", n.ID, err)
	}
	n.mu.Lock()
	n.srv = nil
	n.mu.Unlock()
}

// Restart starts a stopped node again on the same data dir and addresses.
func (c *Cluster) Restart(n *Node) {
	c.t.Helper()
	if n.Running() {
		c.t.Fatalf("restart %s: still running", n.ID)
	}
	cfg := n.cfg
	cfg.Bootstrap, cfg.Join = false, nil // a known member needs neither
	n.cfg = cfg
	c.start(n)
}

// Running lists the nodes that are up.
func (c *Cluster) Running() []*Node {
	var out []*Node
	for _, n := range c.Nodes {
		if n.Running() {
			out = append(out, n)
		}
	}
	return out
}

// GRPCAddrs lists every node's gRPC address, running or not.
func (c *Cluster) GRPCAddrs() []string {
	var out []string
	for _, n := range c.Nodes {
		out = append(out, n.GRPCAddr())
	}
	return out
}

// Leader returns the running node that leads now, or nil.
func (c *Cluster) Leader() *Node {
	for _, n := range c.Running() {
		if n.Server().IsLeader() {
			return n
		}
	}
	return nil
}

// WaitLeader waits for a leader that every running node agrees on.
func (c *Cluster) WaitLeader() *Node {
	c.t.Helper()
	var leader *Node
	WaitFor(c.t, 15*time.Second, func() (bool, string) {
		leader = c.Leader()
		if leader == nil {
			return false, "no leader"
		}
		for _, n := range c.Running() {
			_, id := n.Server().Raft().LeaderWithID()
			if string(id) != leader.ID {
				return false, fmt.Sprintf("%s sees leader %q, want %q", n.ID, id, leader.ID)
			}
		}
		return true, ""
	})
	return leader
}

// WaitNewLeader waits for a leader other than old.
func (c *Cluster) WaitNewLeader(old *Node) *Node {
	c.t.Helper()
	var leader *Node
	WaitFor(c.t, 15*time.Second, func() (bool, string) {
		leader = c.Leader()
		if leader == nil || leader == old {
			return false, "no new leader"
		}
		return true, ""
	})
	return leader
}

// Followers lists the running nodes that do not lead.
func (c *Cluster) Followers() []*Node {
	var out []*Node
	for _, n := range c.Running() {
		if !n.Server().IsLeader() {
			out = append(out, n)
		}
	}
	return out
}

// Admin connects to addr with an admin client certificate.
func (c *Cluster) Admin(addr string) *grpc.ClientConn {
	id := AdminID()
	return c.PKI.Dial(c.t, addr, &id)
}

// As connects to addr presenting a certificate for id (nil: none).
func (c *Cluster) As(addr string, id *pki.Identity) *grpc.ClientConn {
	return c.PKI.Dial(c.t, addr, id)
}

// WaitMembers waits until n servers are registered on every running node.
func (c *Cluster) WaitMembers(n int) {
	c.t.Helper()
	WaitFor(c.t, 20*time.Second, func() (bool, string) {
		for _, node := range c.Running() {
			servers, _, err := node.Server().Store().Servers(nil)
			if err != nil {
				return false, err.Error()
			}
			if len(servers) != n {
				return false, fmt.Sprintf("%s has %d registered servers, want %d", node.ID, len(servers), n)
			}
		}
		// New members join as non-voters and are promoted once caught up.
		leader := c.Leader()
		if leader == nil {
			return false, "no leader"
		}
		f := leader.Server().Raft().GetConfiguration()
		if err := f.Error(); err != nil {
			return false, err.Error()
		}
		voters := 0
		for _, m := range f.Configuration().Servers {
			if m.Suffrage == raft.Voter {
				voters++
			}
		}
		if voters != n {
			return false, fmt.Sprintf("%d of %d members are voters", voters, n)
		}
		return true, ""
	})
}

// WaitConverged waits until every running node's state has caught up with
// the leader's: a barrier on the leader makes its FSM current, then each
// node's store must reach the leader's latest write index. (raft's
// AppliedIndex runs ahead of the FSM, so it cannot be used for this.)
func (c *Cluster) WaitConverged() {
	c.t.Helper()
	leader := c.WaitLeader()
	if err := leader.Server().Raft().Barrier(10 * time.Second).Error(); err != nil {
		c.t.Fatalf("barrier on leader %s: %v", leader.ID, err)
	}
	target := leader.Server().Store().LatestIndex()
	WaitFor(c.t, 20*time.Second, func() (bool, string) {
		for _, n := range c.Running() {
			if got := n.Server().Store().LatestIndex(); got < target {
				return false, fmt.Sprintf("%s has applied writes up to %d, want %d", n.ID, got, target)
			}
		}
		return true, ""
	})
}

// WaitFor polls cond every 10 ms until it holds or timeout passes, then
// fails the test with cond's last explanation.
func WaitFor(t testing.TB, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %s: %s", timeout, why)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// freeAddr reserves a free loopback port outside the kernel's ephemeral
// range (see package testport).
func freeAddr(t testing.TB) string {
	t.Helper()
	addr, err := testport.Addr()
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	return addr
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("REL_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// Config is the configuration the node was (last) started with.
func (n *Node) Config() server.Config { return n.cfg }

// AddNode starts one more server, configured like the first node but with
// its own id, certificate, data dir and ports, joining through every running
// node. It returns at once: the join (as a non-voter, promoted once caught
// up) happens in the background; WaitMembers waits for it.
func (c *Cluster) AddNode() *Node {
	c.t.Helper()
	id := fmt.Sprintf("s%d", len(c.Nodes)+1)
	certFile, keyFile := c.PKI.Files(c.t, pki.Leaf{Identity: ServerID(id)})
	cfg := c.Nodes[0].cfg
	cfg.NodeID = id
	cfg.CertFile, cfg.KeyFile = certFile, keyFile
	cfg.DataDir = c.t.TempDir()
	cfg.GRPCAddr, cfg.RaftAddr, cfg.HTTPAddr = freeAddr(c.t), freeAddr(c.t), freeAddr(c.t)
	cfg.Bootstrap = false
	cfg.Join = nil
	for _, n := range c.Running() {
		cfg.Join = append(cfg.Join, n.GRPCAddr())
	}
	node := &Node{Index: len(c.Nodes), ID: id, cfg: cfg, cluster: c}
	c.Nodes = append(c.Nodes, node)
	c.start(node)
	return node
}
