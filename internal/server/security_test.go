package server_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/relhq/rel/internal/auth"
	"github.com/relhq/rel/internal/pki"
	"github.com/relhq/rel/internal/server"
	"github.com/relhq/rel/internal/state"
	"github.com/relhq/rel/internal/testcluster"
	"github.com/relhq/rel/internal/transport"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// certConn dials addr presenting cert (nil: none). It checks the server
// against the cluster's CA certificate, which is public: an attacker
// holding it, or a client of the cluster holding a certificate the cluster
// must refuse, gets exactly this far.
func certConn(t testing.TB, c *testcluster.Cluster, addr string, cert *tls.Certificate, extra ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(c.PKI.CA.Cert)
	var get func() *tls.Certificate
	if cert != nil {
		get = func() *tls.Certificate { return cert }
	}
	cfg := transport.VerifyingClientConfig(pool, c.PKI.CA.Cluster, get)
	conn, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cfg))}, extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// tokenConn dials addr without a certificate, sending an operator token.
func tokenConn(t testing.TB, c *testcluster.Cluster, addr, secret string) *grpc.ClientConn {
	t.Helper()
	return c.PKI.Dial(t, addr, nil, grpc.WithPerRPCCredentials(testcluster.Token(secret)))
}

// idConn dials addr with a certificate of the cluster's CA for id.
func idConn(t testing.TB, c *testcluster.Cluster, addr string, id pki.Identity) *grpc.ClientConn {
	t.Helper()
	return c.As(addr, &id)
}

// createToken makes an operator token through conn and returns its secret
// and accessor.
func createToken(t testing.TB, conn *grpc.ClientConn, name string, roles, apps []string, ttl time.Duration) (string, string) {
	t.Helper()
	resp, err := relv1.NewACLServiceClient(conn).CreateToken(ctxT(t), &relv1.CreateACLTokenRequest{
		Name: name, Roles: roles, Apps: apps, TtlSeconds: int64(ttl / time.Second),
	})
	if err != nil {
		t.Fatalf("create token %s: %v", name, err)
	}
	return resp.GetSecret(), resp.GetToken().GetAccessorId()
}

// wantCode checks a status code and that the message says what the issue
// promises (clear errors).
func wantCode(t testing.TB, what string, err error, code codes.Code, words ...string) {
	t.Helper()
	st := status.Convert(err)
	if st.Code() != code {
		t.Errorf("%s: %v, want %v", what, err, code)
		return
	}
	for _, w := range words {
		if !strings.Contains(st.Message(), w) {
			t.Errorf("%s: message %q, want it to contain %q", what, st.Message(), w)
		}
	}
}

// clusterView is what an attack must leave as it was: who leads and in
// which term, the writes each replica holds, the apps, the membership.
type clusterView struct {
	leader  string
	term    map[string]uint64
	latest  map[string]uint64
	apps    map[string][]string
	members []string
}

func appNames(t testing.TB, st *state.Store) []string {
	t.Helper()
	apps, _, err := st.Apps(nil)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, a := range apps {
		out = append(out, a.GetName())
	}
	return out
}

func membership(t testing.TB, c *testcluster.Cluster) []string {
	t.Helper()
	f := c.WaitLeader().Server().Raft().GetConfiguration()
	if err := f.Error(); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range f.Configuration().Servers {
		out = append(out, fmt.Sprintf("%s@%s/%s", s.ID, s.Address, s.Suffrage))
	}
	slices.Sort(out)
	return out
}

func viewOf(t testing.TB, c *testcluster.Cluster) clusterView {
	t.Helper()
	c.WaitConverged()
	v := clusterView{leader: c.WaitLeader().ID, term: map[string]uint64{}, latest: map[string]uint64{}, apps: map[string][]string{}, members: membership(t, c)}
	for _, n := range c.Running() {
		v.term[n.ID] = n.Server().Raft().CurrentTerm()
		v.latest[n.ID] = n.Server().Store().LatestIndex()
		v.apps[n.ID] = appNames(t, n.Server().Store())
	}
	return v
}

// healthyAndUnchanged checks that every node is up, the same node leads in
// the same term, no replica holds a write it did not hold before, and then
// that a normal admin write through a follower still commits.
func healthyAndUnchanged(t testing.TB, c *testcluster.Cluster, before clusterView) {
	t.Helper()
	for _, n := range c.Nodes {
		if srv := n.Server(); srv != nil && srv.Raft().State() == raft.Shutdown {
			t.Errorf("%s: raft shut down", n.ID)
		}
	}
	after := viewOf(t, c)
	if after.leader != before.leader {
		t.Errorf("leader %s, was %s", after.leader, before.leader)
	}
	for id, term := range before.term {
		if after.term[id] != term {
			t.Errorf("%s: term %d, was %d", id, after.term[id], term)
		}
		if after.latest[id] != before.latest[id] {
			t.Errorf("%s: latest write at index %d, was %d: something was written", id, after.latest[id], before.latest[id])
		}
		if !slices.Equal(after.apps[id], before.apps[id]) {
			t.Errorf("%s: apps %v, were %v", id, after.apps[id], before.apps[id])
		}
	}
	if !slices.Equal(after.members, before.members) {
		t.Errorf("membership %v, was %v", after.members, before.members)
	}
	target := c.Leader()
	if fs := c.Followers(); len(fs) > 0 {
		target = fs[0]
	}
	name := fmt.Sprintf("after-%d", time.Now().UnixNano()%1_000_000)
	if _, err := dial(t, target).CreateApp(ctxT(t), &relv1.CreateAppRequest{Name: name}); err != nil {
		t.Errorf("a normal admin write after the attack: %v", err)
	}
}

// plainLayer is raft's stream layer over plain TCP: what an attacker on the
// network who speaks raft's wire format, but holds no certificate, has.
type plainLayer struct{ net.Listener }

func (l plainLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return net.DialTimeout("tcp", string(addr), timeout)
}

// tlsLayer is raft's stream layer over TLS with an attacker's certificate;
// it does not check the server (the attacker does not care).
type tlsLayer struct {
	net.Listener
	cert tls.Certificate
}

func (l tlsLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	cfg := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{l.cert}}
	return tls.DialWithDialer(&net.Dialer{Timeout: timeout}, "tcp", string(addr), cfg)
}

// rogueTransport is raft's own client, for crafting real AppendEntries.
func rogueTransport(t *testing.T, layer func(net.Listener) raft.StreamLayer) *raft.NetworkTransport {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: layer(ln), MaxPool: 1, Timeout: 3 * time.Second, Logger: hclog.NewNullLogger(),
	})
	t.Cleanup(func() {
		trans.CloseStreams()
		trans.Close()
	})
	return trans
}

func evilCommand(t testing.TB, app string) []byte {
	t.Helper()
	b, err := proto.Marshal(&relv1.Command{StampedUnixNano: time.Now().UnixNano(), Kind: &relv1.Command_CreateApp{CreateApp: &relv1.CreateApp{App: &relv1.App{Name: app}}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestAttacks reruns the issue's attacks against one 3-node cluster, each
// as a subtest that proves the refusal and then that the cluster is
// healthy, its data unchanged and a normal write still works. Raft keeps
// its production timeouts here, so that a term that moves means an
// attack, not a slow test machine.
func TestAttacks(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{ProductionTimeouts: true})
	leader := c.WaitLeader()
	admin := dial(t, leader)
	if _, err := admin.CreateApp(ctxT(t), &relv1.CreateAppRequest{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	other := testcluster.NewPKI(t, testcluster.ClusterName) // another CA, same cluster name
	ctx := ctxT(t)

	t.Run("insecure dial", func(t *testing.T) {
		before := viewOf(t, c)
		for _, n := range c.Nodes {
			conn, err := grpc.NewClient(n.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
			if err != nil {
				t.Fatal(err)
			}
			cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err = relv1.NewControlServiceClient(conn).CreateApp(cctx, &relv1.CreateAppRequest{Name: "pwned"})
			wantCode(t, n.ID+": plaintext CreateApp", err, codes.Unavailable)
			_, err = relv1.NewClusterServiceClient(conn).Apply(cctx, &relv1.ApplyRequest{Command: evilCommand(t, "pwned")})
			wantCode(t, n.ID+": plaintext Apply", err, codes.Unavailable)
			cancel()
			conn.Close()
		}
		healthyAndUnchanged(t, c, before)
	})

	t.Run("raw Apply", func(t *testing.T) {
		addr := c.Leader().GRPCAddr()
		admSecret, _ := createToken(t, leader.Admin(), "adm", []string{"admin"}, nil, 0)
		before := viewOf(t, c)
		garbage := &relv1.ApplyRequest{Command: []byte{0xff}}
		_, err := relv1.NewClusterServiceClient(c.As(addr, nil)).Apply(ctx, garbage)
		wantCode(t, "0xff without a certificate", err, codes.Unauthenticated, "Apply is only for server certificates")
		_, err = relv1.NewClusterServiceClient(leader.Admin()).Apply(ctx, garbage)
		wantCode(t, "0xff from an admin client certificate", err, codes.PermissionDenied, "only server certificates may")
		_, err = relv1.NewClusterServiceClient(idConn(t, c, addr, testcluster.AgentID("web-1"))).Apply(ctx, garbage)
		wantCode(t, "0xff from an agent certificate", err, codes.PermissionDenied, "only server certificates may")
		_, err = relv1.NewClusterServiceClient(tokenConn(t, c, addr, admSecret)).Apply(ctx, garbage)
		wantCode(t, "0xff with an admin token", err, codes.PermissionDenied, "only server certificates may")

		// A real server certificate (a compromised member) is let in, and
		// its bytes are still decoded and validated before raft sees them.
		srv := relv1.NewClusterServiceClient(idConn(t, c, addr, testcluster.ServerID("s2")))
		_, err = srv.Apply(ctx, garbage)
		wantCode(t, "0xff from a server certificate", err, codes.InvalidArgument, "undecodable command")
		now := time.Now().UnixNano()
		for _, tc := range []struct {
			name string
			cmd  *relv1.Command
			want string
		}{
			{"release with an invalid URL", &relv1.Command{StampedUnixNano: now, Kind: &relv1.Command_CreateRelease{CreateRelease: &relv1.CreateRelease{Release: &relv1.Release{
				App: "web", Version: "6.6.6", ArtifactUrl: "ftp://evil.example.com/x.tgz", Sha256: digest("x")}}}}, `scheme "ftp"`},
			{"release without a hook-safe URL", &relv1.Command{StampedUnixNano: now, Kind: &relv1.Command_CreateRelease{CreateRelease: &relv1.CreateRelease{Release: &relv1.Release{
				App: "web", Version: "6.6.6", ArtifactUrl: "https://u:p@evil.example.com/x.tgz", Sha256: digest("x")}}}}, "carries credentials"},
			{"no kind", &relv1.Command{StampedUnixNano: now}, "command has no kind"},
			{"empty create_app", &relv1.Command{StampedUnixNano: now, Kind: &relv1.Command_CreateApp{}}, "carries no app"},
			{"rollout step without a rollout", &relv1.Command{StampedUnixNano: now, Kind: &relv1.Command_RolloutStep{RolloutStep: &relv1.RolloutStep{}}}, "carries no rollout"},
			{"not time-stamped", &relv1.Command{Kind: &relv1.Command_CreateApp{CreateApp: &relv1.CreateApp{App: &relv1.App{Name: "evil"}}}}, "not time-stamped"},
			{"oversized report output", &relv1.Command{StampedUnixNano: now, Kind: &relv1.Command_ReportBatch{ReportBatch: &relv1.ReportBatch{Reports: []*relv1.AgentReport{{
				AgentId: "web-1", SessionId: "s", Report: &relv1.AppReport{App: "web", Phase: "healthy", Output: strings.Repeat("x", 2000)}}}}}}, "report output"},
		} {
			b, err := proto.Marshal(tc.cmd)
			if err != nil {
				t.Fatal(err)
			}
			_, err = srv.Apply(ctx, &relv1.ApplyRequest{Command: b})
			wantCode(t, tc.name, err, codes.InvalidArgument, tc.want)
		}
		// The command kind numbers of a newer build decode as unknown
		// fields: no kind, refused.
		_, err = srv.Apply(ctx, &relv1.ApplyRequest{Command: []byte{0x08, 0x01, 0xfa, 0x06, 0x00}}) // stamp 1, field 111 empty
		wantCode(t, "unknown command kind", err, codes.InvalidArgument, "command has no kind")
		healthyAndUnchanged(t, c, before)

		// The log replays: a member restarted from disk comes back with
		// the same state (the 0xff entry made every restart panic).
		victim := c.Followers()[0]
		c.Kill(victim)
		c.Restart(victim)
		c.WaitConverged()
		if ok, why := state.Equal(c.Leader().Server().Store(), victim.Server().Store()); !ok {
			t.Fatalf("%s after restart differs from the leader: %s", victim.ID, why)
		}
	})

	t.Run("AppendEntries over the raft port", func(t *testing.T) {
		before := viewOf(t, c)
		type nodeState struct{ term, last uint64 }
		raftState := func() map[string]nodeState {
			out := map[string]nodeState{}
			for _, n := range c.Running() {
				out[n.ID] = nodeState{n.Server().Raft().CurrentTerm(), n.Server().Raft().LastIndex()}
			}
			return out
		}
		// settled waits until every log holds what the leader's does (the
		// barrier of viewOf may still be on its way to a follower).
		settled := func() map[string]nodeState {
			var out map[string]nodeState
			testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
				out = raftState()
				want := out[c.Leader().ID]
				for _, s := range out {
					if s != want {
						return false, fmt.Sprint(out)
					}
				}
				return true, ""
			})
			return out
		}
		attackers := []struct {
			name  string
			layer func(net.Listener) raft.StreamLayer
		}{
			{"plaintext TCP", func(ln net.Listener) raft.StreamLayer { return plainLayer{ln} }},
			{"TLS with an agent certificate", func(ln net.Listener) raft.StreamLayer {
				return tlsLayer{ln, c.PKI.Bundle(t, pki.Leaf{Identity: testcluster.AgentID("s9")}).Cert}
			}},
			{"TLS with a client certificate posing as a server", func(ln net.Listener) raft.StreamLayer {
				return tlsLayer{ln, c.PKI.Bundle(t, pki.Leaf{Identity: testcluster.ClientID("s9", auth.Admin)}).Cert}
			}},
			{"TLS with a server certificate of another CA", func(ln net.Listener) raft.StreamLayer {
				return tlsLayer{ln, other.Bundle(t, pki.Leaf{Identity: testcluster.ServerID("s1")}).Cert}
			}},
			{"TLS without a certificate", func(ln net.Listener) raft.StreamLayer { return tlsLayer{Listener: ln} }},
			// A server certificate of the cluster's own CA is not enough:
			// the node must be a member (a removed server keeps a valid
			// certificate).
			{"TLS with a server certificate of this CA for a non-member", func(ln net.Listener) raft.StreamLayer {
				return tlsLayer{ln, c.PKI.Bundle(t, pki.Leaf{Identity: testcluster.ServerID("s9")}).Cert}
			}},
		}
		for _, a := range attackers {
			trans := rogueTransport(t, a.layer)
			want := settled()
			for _, n := range c.Running() {
				r := n.Server().Raft()
				last := r.LastIndex()
				var lastTerm uint64
				fmt.Sscan(r.Stats()["last_log_term"], &lastTerm)
				req := &raft.AppendEntriesRequest{
					RPCHeader:         raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("evil"), Addr: []byte(trans.LocalAddr())},
					Term:              r.CurrentTerm() + 1,
					PrevLogEntry:      last,
					PrevLogTerm:       lastTerm,
					Entries:           []*raft.Log{{Index: last + 1, Term: r.CurrentTerm() + 1, Type: raft.LogCommand, Data: evilCommand(t, "evil")}},
					LeaderCommitIndex: last + 1,
				}
				var resp raft.AppendEntriesResponse
				err := trans.AppendEntries(raft.ServerID(n.ID), raft.ServerAddress(n.Server().RaftAddr()), req, &resp)
				if err == nil {
					t.Errorf("%s: %s's raft port answered an AppendEntries (success=%v, term %d)", a.name, n.ID, resp.Success, resp.Term)
				} else {
					t.Logf("%s → %s: %v", a.name, n.ID, err)
				}
			}
			if got := raftState(); !equalMaps(got, want) {
				t.Errorf("%s: raft term/last index moved: %v, were %v", a.name, got, want)
			}
		}
		for _, n := range c.Running() {
			if slices.Contains(appNames(t, n.Server().Store()), "evil") {
				t.Errorf("%s applied the attacker's entry", n.ID)
			}
		}
		healthyAndUnchanged(t, c, before)
	})

	t.Run("rogue join", func(t *testing.T) {
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		rogueAddr := ln.Addr().String()
		defer ln.Close()
		join := &relv1.JoinRequest{Id: "s9", RaftAddr: rogueAddr, GrpcAddr: rogueAddr, HttpAddr: rogueAddr}
		admSecret, _ := createToken(t, leader.Admin(), "adm-join", []string{"admin"}, nil, 0)
		before := viewOf(t, c)
		for _, n := range c.Running() { // the leader and followers alike
			addr := n.GRPCAddr()
			_, err := relv1.NewClusterServiceClient(idConn(t, c, addr, testcluster.AgentID("s9"))).Join(ctx, join)
			wantCode(t, n.ID+": join with an agent certificate", err, codes.PermissionDenied, "only server certificates may")
			_, err = relv1.NewClusterServiceClient(tokenConn(t, c, addr, admSecret)).Join(ctx, join)
			wantCode(t, n.ID+": join with an admin token", err, codes.PermissionDenied, "only server certificates may")
			_, err = relv1.NewClusterServiceClient(n.Admin()).Join(ctx, join)
			wantCode(t, n.ID+": join with an admin client certificate", err, codes.PermissionDenied, "only server certificates may")
			_, err = relv1.NewClusterServiceClient(idConn(t, c, addr, testcluster.ClientID("s9", auth.Admin))).Join(ctx, join)
			wantCode(t, n.ID+": join with a client certificate named s9", err, codes.PermissionDenied, "only server certificates may")
			oc := other.Bundle(t, pki.Leaf{Identity: testcluster.ServerID("s9")}).Cert
			_, err = relv1.NewClusterServiceClient(certConn(t, c, addr, &oc)).Join(ctx, join)
			wantCode(t, n.ID+": join with a server certificate of another CA", err, codes.Unavailable)
			_, err = relv1.NewClusterServiceClient(idConn(t, c, addr, testcluster.ServerID("s8"))).Join(ctx, join)
			wantCode(t, n.ID+": join as s9 with the certificate of s8", err, codes.PermissionDenied, `may not join the cluster as server "s9"`)
			// Nor can a server take an existing member's place.
			mine := &relv1.JoinRequest{Id: "s1", RaftAddr: rogueAddr, GrpcAddr: rogueAddr}
			_, err = relv1.NewClusterServiceClient(idConn(t, c, addr, testcluster.ServerID("s8"))).Join(ctx, mine)
			wantCode(t, n.ID+": join as s1 with the certificate of s8", err, codes.PermissionDenied, `as server "s1"`)
		}
		healthyAndUnchanged(t, c, before)
	})

	t.Run("certificates refused", func(t *testing.T) {
		before := viewOf(t, c)
		addr := c.Followers()[0].GRPCAddr()
		list := func(conn *grpc.ClientConn) error {
			_, err := relv1.NewControlServiceClient(conn).ListApps(ctx, &relv1.ListAppsRequest{})
			return err
		}
		create := func(conn *grpc.ClientConn) error {
			_, err := relv1.NewControlServiceClient(conn).CreateApp(ctx, &relv1.CreateAppRequest{Name: "evil"})
			return err
		}
		admin := testcluster.AdminID()
		wrongCA := other.Bundle(t, pki.Leaf{Identity: admin}).Cert
		expired := c.PKI.Bundle(t, pki.Leaf{Identity: admin, NotBefore: time.Now().Add(-48 * time.Hour), Validity: time.Hour}).Cert
		future := c.PKI.Bundle(t, pki.Leaf{Identity: admin, NotBefore: time.Now().Add(48 * time.Hour), Validity: time.Hour}).Cert
		for name, cert := range map[string]tls.Certificate{"client certificate of another CA": wrongCA, "expired client certificate": expired, "client certificate not valid yet": future} {
			// TLS refuses them in the handshake: the call never reaches a handler.
			wantCode(t, name+": create", create(certConn(t, c, addr, &cert)), codes.Unavailable)
			wantCode(t, name+": list", list(certConn(t, c, addr, &cert)), codes.Unavailable)
		}
		wantCode(t, "no client certificate: create", create(c.As(addr, nil)), codes.Unauthenticated, "CreateApp needs credentials")
		wantCode(t, "no client certificate: list", list(c.As(addr, nil)), codes.Unauthenticated, "ListApps needs credentials")

		agent := relv1.NewClusterServiceClient(idConn(t, c, addr, testcluster.AgentID("web-1")))
		_, err := agent.Apply(ctx, &relv1.ApplyRequest{Command: evilCommand(t, "evil")})
		wantCode(t, "agent certificate on ClusterService.Apply", err, codes.PermissionDenied, "only server certificates may")
		_, err = agent.LocalAgents(ctx, &relv1.LocalAgentsRequest{})
		wantCode(t, "agent certificate on ClusterService.LocalAgents", err, codes.PermissionDenied)
		_, err = agent.Status(ctx, &relv1.StatusRequest{})
		wantCode(t, "agent certificate on ClusterService.Status", err, codes.PermissionDenied)
		_, err = agent.Members(ctx, &relv1.MembersRequest{})
		wantCode(t, "agent certificate on ClusterService.Members", err, codes.PermissionDenied)
		wantCode(t, "agent certificate on ControlService.CreateApp", create(idConn(t, c, addr, testcluster.AgentID("web-1"))), codes.PermissionDenied)

		posing := relv1.NewClusterServiceClient(idConn(t, c, c.Leader().GRPCAddr(), testcluster.ClientID("s1", auth.Admin)))
		_, err = posing.Apply(ctx, &relv1.ApplyRequest{Command: evilCommand(t, "evil")})
		wantCode(t, "client certificate posing as a server on Apply", err, codes.PermissionDenied, "only server certificates may")
		_, err = posing.FetchArtifact(ctx, &relv1.FetchArtifactRequest{Sha256: digest("x"), Sources: []string{"https://" + leader.HTTPAddr()}})
		wantCode(t, "client certificate posing as a server on FetchArtifact", err, codes.PermissionDenied)

		// A client certificate may not smuggle a forwarded caller: only
		// servers forward.
		md := grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			return invoker(withCaller(ctx, auth.Principal{Kind: auth.KindServer, ID: "s1"}), method, req, reply, cc, opts...)
		})
		viewer := c.PKI.Bundle(t, pki.Leaf{Identity: testcluster.ClientID("eve", auth.Viewer)}).Cert
		_, err = relv1.NewClusterServiceClient(certConn(t, c, addr, &viewer, md)).Apply(ctx, &relv1.ApplyRequest{Command: evilCommand(t, "evil")})
		wantCode(t, "viewer forwarding a server caller", err, codes.PermissionDenied)
		healthyAndUnchanged(t, c, before)
	})

	t.Run("tokens refused", func(t *testing.T) {
		la := leader.Admin()
		if _, err := dial(t, leader).CreateEnvironment(ctx, &relv1.CreateEnvironmentRequest{Name: "prod", Selector: map[string]string{"env": "prod"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := dial(t, leader).CreateApp(ctx, &relv1.CreateAppRequest{Name: "api"}); err != nil {
			t.Fatal(err)
		}
		viewerSecret, _ := createToken(t, la, "viewer", []string{"viewer"}, nil, 0)
		deployerSecret, _ := createToken(t, la, "deploy-web", []string{"deployer"}, []string{"web*"}, 0)
		revokedSecret, revokedAcc := createToken(t, la, "soon-revoked", []string{"admin"}, nil, 0)
		shortSecret, _ := createToken(t, la, "short", []string{"admin"}, nil, time.Second)
		shortCreated := time.Now()
		opSecret, _ := createToken(t, la, "scoped-operator", []string{"operator"}, []string{"web*"}, 0)
		if _, err := relv1.NewACLServiceClient(la).RevokeToken(ctx, &relv1.RevokeACLTokenRequest{AccessorId: revokedAcc}); err != nil {
			t.Fatal(err)
		}
		before := viewOf(t, c)
		for _, n := range c.Running() {
			addr := n.GRPCAddr()
			_, err := relv1.NewControlServiceClient(tokenConn(t, c, addr, viewerSecret)).CreateApp(ctx, &relv1.CreateAppRequest{Name: "evil"})
			wantCode(t, n.ID+": viewer token creating an app", err, codes.PermissionDenied, `needs a role with "manage-apps"`)
			if _, err := relv1.NewControlServiceClient(tokenConn(t, c, addr, viewerSecret)).ListApps(ctx, &relv1.ListAppsRequest{}); err != nil {
				t.Errorf("%s: viewer token listing apps: %v", n.ID, err)
			}
			dep := relv1.NewControlServiceClient(tokenConn(t, c, addr, deployerSecret))
			_, err = dep.StartRollout(ctx, &relv1.StartRolloutRequest{App: "api", Version: "1.0.0", Environment: "prod"})
			wantCode(t, n.ID+": deployer of web* starting a rollout of api", err, codes.PermissionDenied, "limited to other apps", "app api")
			_, err = dep.StartRollout(ctx, &relv1.StartRolloutRequest{App: "web", Version: "1.0.0", Environment: "prod"})
			if code := status.Code(err); code == codes.PermissionDenied || code == codes.Unauthenticated {
				t.Errorf("%s: deployer of web* starting a rollout of web: %v, want it past authorization", n.ID, err)
			} else {
				t.Logf("deployer of web* on web gets past authorization: %v", err)
			}
			_, err = relv1.NewControlServiceClient(tokenConn(t, c, addr, revokedSecret)).ListApps(ctx, &relv1.ListAppsRequest{})
			wantCode(t, n.ID+": revoked token", err, codes.Unauthenticated, "token not known to this cluster", "revoked")
			_, err = relv1.NewControlServiceClient(tokenConn(t, c, addr, "relt_made-up")).ListApps(ctx, &relv1.ListAppsRequest{})
			wantCode(t, n.ID+": made-up token", err, codes.Unauthenticated, "token not known")
			_, err = relv1.NewACLServiceClient(tokenConn(t, c, addr, opSecret)).CreateToken(ctx, &relv1.CreateACLTokenRequest{Name: "x", Roles: []string{"viewer"}})
			wantCode(t, n.ID+": operator limited to web* creating a token", err, codes.PermissionDenied, "limited to some apps")
		}
		// A malformed authorization header is refused, not ignored.
		bad := grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			return invoker(appendMD(ctx, "authorization", "Basic dXNlcjpwYXNz"), method, req, reply, cc, opts...)
		})
		_, err := relv1.NewControlServiceClient(c.PKI.Dial(t, leader.GRPCAddr(), nil, bad)).ListApps(ctx, &relv1.ListAppsRequest{})
		wantCode(t, "Basic authorization", err, codes.Unauthenticated, "not 'Bearer <token>'")

		// An operator hands out any role but admin; only an admin makes admins.
		op := relv1.NewACLServiceClient(idConn(t, c, leader.GRPCAddr(), testcluster.ClientID("ops", auth.Operator)))
		_, err = op.CreateToken(ctx, &relv1.CreateACLTokenRequest{Name: "root", Roles: []string{"admin"}})
		wantCode(t, "operator creating an admin token", err, codes.PermissionDenied, "only admins make admin tokens")
		healthyAndUnchanged(t, c, before)
		if _, err := op.CreateToken(ctx, &relv1.CreateACLTokenRequest{Name: "ci", Roles: []string{"deployer"}}); err != nil {
			t.Errorf("operator creating a deployer token: %v", err)
		}
		if _, err := relv1.NewACLServiceClient(la).CreateToken(ctx, &relv1.CreateACLTokenRequest{Name: "root", Roles: []string{"admin"}}); err != nil {
			t.Errorf("admin creating an admin token: %v", err)
		}

		// The short token worked, and stops working when it expires.
		if _, err := relv1.NewControlServiceClient(tokenConn(t, c, leader.GRPCAddr(), shortSecret)).ListApps(ctx, &relv1.ListAppsRequest{}); err != nil && time.Since(shortCreated) < 900*time.Millisecond {
			t.Errorf("short-lived token before it expired: %v", err)
		}
		time.Sleep(time.Until(shortCreated.Add(1100 * time.Millisecond))) // its expiry is a fixed time
		_, err = relv1.NewControlServiceClient(tokenConn(t, c, leader.GRPCAddr(), shortSecret)).ListApps(ctx, &relv1.ListAppsRequest{})
		wantCode(t, "expired token", err, codes.Unauthenticated, "expired at")
	})

	t.Run("FetchArtifact", func(t *testing.T) {
		before := viewOf(t, c)
		var hits atomic.Int64
		outsider := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hits.Add(1)
			io.WriteString(w, "root:$6$secret:19000:0:99999:7:::\n")
		}))
		defer outsider.Close()
		sum := digest("root:$6$secret:19000:0:99999:7:::\n")
		outsiderTLS := "https://" + outsider.Listener.Addr().String()
		for _, n := range c.Running() {
			addr := n.GRPCAddr()
			req := &relv1.FetchArtifactRequest{Sha256: sum, Size: 34, Sources: []string{outsider.URL}}
			_, err := relv1.NewClusterServiceClient(n.Admin()).FetchArtifact(ctx, req)
			wantCode(t, n.ID+": FetchArtifact from an admin", err, codes.PermissionDenied, "only server certificates may")
			_, err = relv1.NewClusterServiceClient(idConn(t, c, addr, testcluster.AgentID("web-1"))).FetchArtifact(ctx, req)
			wantCode(t, n.ID+": FetchArtifact from an agent", err, codes.PermissionDenied, "only server certificates may")
			srv := relv1.NewClusterServiceClient(idConn(t, c, addr, testcluster.ServerID("s2")))
			_, err = srv.FetchArtifact(ctx, req)
			wantCode(t, n.ID+": FetchArtifact from a non-member", err, codes.InvalidArgument, outsider.URL, "is not the artifact endpoint of a member")
			var member string
			for _, m := range c.Running() {
				if m != n {
					member = "https://" + m.HTTPAddr()
				}
			}
			req.Sources = []string{member, outsiderTLS}
			_, err = srv.FetchArtifact(ctx, req)
			wantCode(t, n.ID+": FetchArtifact from a member and a non-member", err, codes.InvalidArgument, outsiderTLS)
			// The server's own address is not a source either (it would
			// fetch from itself).
			req.Sources = []string{"https://" + n.HTTPAddr()}
			_, err = srv.FetchArtifact(ctx, req)
			wantCode(t, n.ID+": FetchArtifact from itself", err, codes.InvalidArgument)
		}
		if hits.Load() != 0 {
			t.Errorf("the outsider's server was contacted %d times", hits.Load())
		}
		for _, n := range c.Nodes {
			if _, err := os.Stat(filepath.Join(n.DataDir(), "artifacts", "sha256", sum)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s stored the outsider's answer: %v", n.ID, err)
			}
		}
		healthyAndUnchanged(t, c, before)
	})

	t.Run("pprof off by default", func(t *testing.T) {
		admin := testcluster.AdminID()
		for _, n := range c.Running() {
			resp, err := httpsClient(t, c, &admin).Get("https://" + n.HTTPAddr() + "/debug/pprof/")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusNotFound {
				t.Errorf("%s: /debug/pprof/ without --enable-debug: %d, want 404 even for an admin", n.ID, resp.StatusCode)
			}
		}
	})

	// Last, since it changes the membership: a real server joins as a
	// non-voter and is promoted; people and agents without the right
	// cannot remove it, an operator can.
	t.Run("join and remove", func(t *testing.T) {
		obsCh := make(chan raft.Observation, 64)
		obs := raft.NewObserver(obsCh, false, func(o *raft.Observation) bool {
			_, ok := o.Data.(raft.PeerObservation)
			return ok
		})
		lr := c.Leader().Server().Raft()
		lr.RegisterObserver(obs)
		defer lr.DeregisterObserver(obs)

		n4 := c.AddNode()
		timeout := time.After(20 * time.Second)
	wait:
		for {
			select {
			case o := <-obsCh:
				if p := o.Data.(raft.PeerObservation); p.Peer.ID == raft.ServerID(n4.ID) && !p.Removed {
					if p.Peer.Suffrage != raft.Nonvoter {
						t.Errorf("%s was added as %s, want Nonvoter first", n4.ID, p.Peer.Suffrage)
					}
					break wait
				}
			case <-timeout:
				t.Fatalf("%s never added", n4.ID)
			}
		}
		c.WaitMembers(4) // all four registered and voters: the non-voter was promoted
		c.WaitConverged()
		if ok, why := state.Equal(c.Leader().Server().Store(), n4.Server().Store()); !ok {
			t.Fatalf("the new member's replica differs: %s", why)
		}

		la := c.Leader().Admin()
		viewerSecret, _ := createToken(t, la, "viewer-rm", []string{"viewer"}, nil, 0)
		deployerSecret, _ := createToken(t, la, "deployer-rm", []string{"deployer"}, nil, 0)
		before := viewOf(t, c)
		rm := &relv1.RemoveRequest{Id: n4.ID}
		for _, n := range c.Running() {
			addr := n.GRPCAddr()
			for name, conn := range map[string]*grpc.ClientConn{
				"viewer token":   tokenConn(t, c, addr, viewerSecret),
				"deployer token": tokenConn(t, c, addr, deployerSecret),
				"viewer cert":    idConn(t, c, addr, testcluster.ClientID("eve", auth.Viewer)),
				"agent cert":     idConn(t, c, addr, testcluster.AgentID("web-1")),
			} {
				_, err := relv1.NewClusterServiceClient(conn).Remove(ctx, rm)
				wantCode(t, n.ID+": remove by "+name, err, codes.PermissionDenied, "roles: operator, admin")
			}
			_, err := relv1.NewClusterServiceClient(c.As(addr, nil)).Remove(ctx, rm)
			wantCode(t, n.ID+": remove without credentials", err, codes.Unauthenticated)
		}
		healthyAndUnchanged(t, c, before)

		op := relv1.NewClusterServiceClient(idConn(t, c, c.Followers()[0].GRPCAddr(), testcluster.ClientID("ops", auth.Operator)))
		if _, err := op.Remove(ctx, rm); err != nil {
			t.Fatalf("operator removing %s: %v", n4.ID, err)
		}
		testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
			m := membership(t, c)
			return len(m) == 3, fmt.Sprint(m)
		})
		c.Kill(n4)
		if _, err := dial(t, c.Followers()[0]).CreateApp(ctx, &relv1.CreateAppRequest{Name: "after-remove"}); err != nil {
			t.Fatalf("write after remove: %v", err)
		}
	})
}

// withCaller adds a forwarded caller to a request, as a server forwarding
// for someone does.
func withCaller(ctx context.Context, p auth.Principal) context.Context {
	b, err := proto.Marshal(p.Proto())
	if err != nil {
		panic(err)
	}
	return metadata.AppendToOutgoingContext(ctx, "rel-caller", base64.RawStdEncoding.EncodeToString(b))
}

func appendMD(ctx context.Context, k, v string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, k, v)
}

func equalMaps[K comparable, V comparable](a, b map[K]V) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestJoinUnreachableRaftAddr: a join naming a raft address nobody answers
// at is refused before the configuration changes, so a 1-node cluster
// keeps its quorum and can still write.
func TestJoinUnreachableRaftAddr(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{})
	n := c.Nodes[0]
	before := membership(t, c)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	s9 := relv1.NewClusterServiceClient(idConn(t, c, n.GRPCAddr(), testcluster.ServerID("s9")))
	_, err := s9.Join(ctxT(t), &relv1.JoinRequest{Id: "s9", RaftAddr: dead, GrpcAddr: dead, HttpAddr: dead})
	wantCode(t, "join naming an unreachable raft address", err, codes.FailedPrecondition, dead, "does not answer")
	// An address that answers, but as another server, is no better.
	_, err = s9.Join(ctxT(t), &relv1.JoinRequest{Id: "s9", RaftAddr: n.Server().RaftAddr(), GrpcAddr: dead})
	wantCode(t, "join naming a member's raft address", err, codes.FailedPrecondition, "already a member")
	if after := membership(t, c); !slices.Equal(after, before) {
		t.Fatalf("membership %v, was %v", after, before)
	}
	if _, err := dial(t, n).CreateApp(ctxT(t), &relv1.CreateAppRequest{Name: "still-writable"}); err != nil {
		t.Fatalf("the 1-node cluster lost its quorum: %v", err)
	}
}

// TestSpoofedHello: a stream's node id is its certificate's. A hello
// naming another agent is refused and counted; the real agent keeps its
// stream, its row and its desired state; labels the join token fixed cannot
// be contradicted; future-dated reports do not lock out later true ones.
func TestSpoofedHello(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{Configure: fastAgents})
	n := c.Nodes[0]
	ctl := dial(t, n)
	ctx := ctxT(t)
	mustCreate(t, ctl, "web")
	if _, err := ctl.CreateEnvironment(ctx, &relv1.CreateEnvironmentRequest{Name: "prod", Selector: map[string]string{"env": "prod"}}); err != nil {
		t.Fatal(err)
	}
	web1 := connectAgent(t, n, "web-1", map[string]string{"env": "prod"}, 0)
	web1.heartbeat(100 * time.Millisecond)
	web1.nextDesired(5 * time.Second)
	row := func() *relv1.Agent {
		resp, err := ctl.GetAgent(ctx, &relv1.GetAgentRequest{Id: "web-1"})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetAgent().GetAgent()
	}
	orig := row()

	hello := func(id pki.Identity, h *relv1.Hello) (*relv1.ServerMessage, error) {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		stream, err := relv1.NewAgentServiceClient(idConn(t, c, n.GRPCAddr(), id)).Connect(sctx)
		if err != nil {
			return nil, err
		}
		if err := stream.Send(&relv1.AgentMessage{Kind: &relv1.AgentMessage_Hello{Hello: h}}); err != nil {
			return nil, err
		}
		return stream.Recv()
	}
	m, err := hello(testcluster.AgentID("web-2"), &relv1.Hello{NodeId: "web-1", Labels: map[string]string{"env": "prod"}})
	if m != nil {
		t.Errorf("the spoofer was sent %v", m)
	}
	wantCode(t, "web-2 saying hello as web-1", err, codes.PermissionDenied, `certificate is agent "web-2"`, `naming "web-1" is refused`)

	fixed := testcluster.AgentID("web-3")
	fixed.Labels = map[string]string{"env": "staging"}
	_, err = hello(fixed, &relv1.Hello{NodeId: "web-3", Labels: map[string]string{"env": "prod"}})
	wantCode(t, "hello contradicting a fixed label", err, codes.PermissionDenied, "env=prod contradicts env=staging")
	// Without the contradiction the certificate's labels apply.
	m, err = hello(fixed, &relv1.Hello{NodeId: "web-3", Labels: map[string]string{"rack": "r1"}})
	if err != nil || m.GetWelcome() == nil {
		t.Fatalf("hello within the fixed labels: %v %v", m, err)
	}
	testcluster.WaitFor(t, 5*time.Second, func() (bool, string) {
		resp, err := ctl.GetAgent(ctx, &relv1.GetAgentRequest{Id: "web-3"})
		if err != nil {
			return false, err.Error()
		}
		l := resp.GetAgent().GetAgent().GetLabels()
		return l["env"] == "staging" && l["rack"] == "r1", fmt.Sprint(l)
	})

	// The refusal is counted.
	scrape := func() string {
		resp, err := httpsClient(t, c, ptr(testcluster.ClientID("prom", auth.Viewer))).Get("https://" + n.HTTPAddr() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	if body := scrape(); !strings.Contains(body, `rel_auth_denied_total{code="PermissionDenied",method="/rel.v1.AgentService/Connect hello"} 1`) {
		t.Errorf("the spoofed hello is not counted in rel_auth_denied_total")
	}

	// The real web-1 is untouched: same session, connected, its stream up
	// past the grace period in which a spoofer's disconnect used to mark
	// it down. Absence of a change can only be watched for a while.
	deadline := time.Now().Add(3 * fastGrace)
	for time.Now().Before(deadline) {
		cur := row()
		if cur.GetSessionId() != orig.GetSessionId() || !cur.GetConnected() {
			t.Fatalf("web-1's row changed: %v, was %v", cur, orig)
		}
		select {
		case err := <-web1.done:
			web1.done <- err // for the cleanup, which waits for it
			t.Fatalf("web-1's stream ended: %v", err)
		default:
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Future-dated reports are brought back to the server's clock, so the
	// agent's later true report is not ignored as older.
	web1.send(&relv1.AgentMessage{Kind: &relv1.AgentMessage_Reports{Reports: &relv1.Reports{Reports: []*relv1.AppReport{{
		App: "web", Version: "1.0.1", Phase: "failed", Reason: "from the future", AtUnixNano: time.Now().Add(365 * 24 * time.Hour).UnixNano(),
	}}}}})
	report := func() *relv1.AppReport {
		resp, err := ctl.GetAgent(ctx, &relv1.GetAgentRequest{Id: "web-1"})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range resp.GetAgent().GetApps() {
			if r.GetApp() == "web" {
				return r
			}
		}
		return nil
	}
	testcluster.WaitFor(t, 5*time.Second, func() (bool, string) {
		r := report()
		return r.GetPhase() == "failed", fmt.Sprint(r)
	})
	if at := report().GetAtUnixNano(); at > time.Now().UnixNano() {
		t.Errorf("a future report time was stored: %s", time.Unix(0, at))
	}
	web1.report("web", "1.0.1", "healthy", "")
	testcluster.WaitFor(t, 5*time.Second, func() (bool, string) {
		r := report()
		return r.GetPhase() == "healthy", fmt.Sprint(r)
	})
}

// fastGrace is fastAgents' AgentGrace.
const fastGrace = time.Second

func ptr[T any](v T) *T { return &v }

// TestHTTPAuth: who may use which HTTP endpoint, with --enable-debug.
func TestHTTPAuth(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{Configure: func(i int, cfg *server.Config) { cfg.EnableDebug = true }})
	n := c.Nodes[0]
	ctx := ctxT(t)
	la := n.Admin()
	viewerToken, _ := createToken(t, la, "prometheus", []string{"viewer"}, nil, 0)
	operatorToken, _ := createToken(t, la, "ops", []string{"operator"}, nil, 0)

	// An artifact to download.
	body := []byte("artifact bytes")
	sum := digest(string(body))
	st, err := relv1.NewArtifactServiceClient(la).Upload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st.Send(&relv1.UploadRequest{Kind: &relv1.UploadRequest_Header{Header: &relv1.UploadHeader{Sha256: sum, Size: int64(len(body))}}})
	st.Send(&relv1.UploadRequest{Kind: &relv1.UploadRequest_Chunk{Chunk: body}})
	if _, err := st.CloseAndRecv(); err != nil {
		t.Fatal(err)
	}

	type caller struct {
		id    *pki.Identity
		token string
	}
	var (
		none     = caller{}
		operator = caller{id: ptr(testcluster.ClientID("ops", auth.Operator))}
		adminC   = caller{id: ptr(testcluster.AdminID())}
		viewer   = caller{id: ptr(testcluster.ClientID("eve", auth.Viewer))}
		agent    = caller{id: ptr(testcluster.AgentID("web-1"))}
		srv      = caller{id: ptr(testcluster.ServerID("s2"))}
		vToken   = caller{token: viewerToken}
		opToken  = caller{token: operatorToken}
		badToken = caller{token: "relt_made-up"}
	)
	get := func(who caller, path string) (int, string) {
		req, _ := http.NewRequest("GET", "https://"+n.HTTPAddr()+path, nil)
		if who.token != "" {
			req.Header.Set("Authorization", "Bearer "+who.token)
		}
		resp, err := httpsClient(t, c, who.id).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return resp.StatusCode, string(b)
	}
	artifact := "/v1/artifacts/sha256/" + sum
	tests := []struct {
		name string
		who  caller
		path string
		code int
	}{
		{"pprof, operator certificate", operator, "/debug/pprof/", 200},
		{"pprof, admin certificate", adminC, "/debug/pprof/cmdline", 200},
		{"pprof, viewer certificate", viewer, "/debug/pprof/", 403},
		{"pprof, agent certificate", agent, "/debug/pprof/", 403},
		{"pprof, server certificate", srv, "/debug/pprof/", 403},
		{"pprof, no certificate", none, "/debug/pprof/", 401},
		{"pprof, operator token (pprof wants a certificate)", opToken, "/debug/pprof/", 401},
		{"pprof, viewer token", vToken, "/debug/pprof/", 401},
		{"artifact, no certificate", none, artifact, 401},
		{"artifact, viewer certificate", viewer, artifact, 403},
		{"artifact, admin certificate", adminC, artifact, 403},
		{"artifact, operator token", opToken, artifact, 401},
		{"artifact, agent certificate", agent, artifact, 200},
		{"artifact, server certificate", srv, artifact, 200},
		{"metrics, no certificate", none, "/metrics", 401},
		{"metrics, viewer token", vToken, "/metrics", 200},
		{"metrics, viewer certificate", viewer, "/metrics", 200},
		{"metrics, server certificate", srv, "/metrics", 200},
		{"metrics, agent certificate", agent, "/metrics", 403},
		{"metrics, unknown token", badToken, "/metrics", 401},
		{"health, no certificate", none, "/v1/health", 200},
	}
	for _, tt := range tests {
		code, b := get(tt.who, tt.path)
		if code != tt.code {
			t.Errorf("%s: %d (%.80q), want %d", tt.name, code, b, tt.code)
		}
		if tt.path == artifact && code == 200 && b != string(body) {
			t.Errorf("%s: body %q", tt.name, b)
		}
	}
	// Refusals say why.
	if _, b := get(none, "/metrics"); !strings.Contains(b, "needs a client certificate of the cluster or a token") {
		t.Errorf("metrics refusal: %q", b)
	}
	if _, b := get(agent, "/debug/pprof/"); !strings.Contains(b, "agent web-1 may not use this endpoint") {
		t.Errorf("pprof refusal: %q", b)
	}
	// Without a certificate of the cluster's CA the handshake fails.
	other := testcluster.NewPKI(t, testcluster.ClusterName)
	oc := other.Bundle(t, pki.Leaf{Identity: testcluster.ClientID("ops", auth.Operator)}).Cert
	cfg := c.PKI.TLSConfig(t, nil)
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &oc, nil }
	tr := &http.Transport{TLSClientConfig: cfg}
	defer tr.CloseIdleConnections()
	if resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://" + n.HTTPAddr() + "/debug/pprof/"); err == nil {
		resp.Body.Close()
		t.Errorf("pprof with an operator certificate of another CA: %d, want a failed handshake", resp.StatusCode)
	}
}

// TestReloadTLS: a reload that fails keeps the certificate in use (new
// connections still work and see the old serial); a good one is used by
// new connections.
func TestReloadTLS(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{})
	n := c.Nodes[0]
	cfg := n.Config()
	serial := func() string {
		t.Helper()
		conn, err := tls.Dial("tcp", n.HTTPAddr(), c.PKI.TLSConfig(t, nil))
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
	}
	works := func(what string) {
		t.Helper()
		if _, err := dial(t, n).ListApps(ctxT(t), &relv1.ListAppsRequest{}); err != nil {
			t.Errorf("%s: a new connection fails: %v", what, err)
		}
	}
	orig := serial()
	goodCert, _ := os.ReadFile(cfg.CertFile)
	goodKey, _ := os.ReadFile(cfg.KeyFile)
	install := func(cert, key []byte) {
		t.Helper()
		if err := os.WriteFile(cfg.CertFile, cert, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(cfg.KeyFile, key, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	issue := func(leaf pki.Leaf) ([]byte, []byte) {
		cert, key, err := c.PKI.CA.Issue(leaf, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return cert, key
	}

	type reloadCase struct {
		name      string
		cert, key []byte
	}
	bad := []reloadCase{
		{"corrupt certificate", []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), goodKey},
		{"empty certificate", nil, goodKey},
	}
	for name, leaf := range map[string]pki.Leaf{
		"expired certificate":          {Identity: testcluster.ServerID("s1"), NotBefore: time.Now().Add(-48 * time.Hour), Validity: time.Hour},
		"certificate not valid yet":    {Identity: testcluster.ServerID("s1"), NotBefore: time.Now().Add(48 * time.Hour), Validity: time.Hour},
		"another server's certificate": {Identity: testcluster.ServerID("s2")},
		"an agent certificate":         {Identity: testcluster.AgentID("s1")},
	} {
		cert, key := issue(leaf)
		bad = append(bad, reloadCase{name, cert, key})
	}
	for _, b := range bad {
		install(b.cert, b.key)
		err := n.Server().ReloadTLS()
		if err == nil || !strings.Contains(err.Error(), "still using the previous certificate") {
			t.Errorf("%s: reload %v, want an error saying the previous certificate is kept", b.name, err)
		}
		if got := serial(); got != orig {
			t.Errorf("%s: new connections see serial %s, want the old %s", b.name, got, orig)
		}
		works(b.name)
	}
	install(goodCert, goodKey)

	cert, key := issue(pki.Leaf{Identity: testcluster.ServerID("s1")})
	install(cert, key)
	if err := n.Server().ReloadTLS(); err != nil {
		t.Fatalf("reload of a good certificate: %v", err)
	}
	certs, _ := pki.ParseCerts(cert)
	if got := serial(); got != certs[0].SerialNumber.String() {
		t.Errorf("after a good reload new connections see serial %s, want %s", got, certs[0].SerialNumber)
	}
	works("after a good reload")
}

// TestServerRefusesInsecureMaterial: a server does not start with a key
// others can read, without TLS, or with a certificate that is not its own
// server certificate; each error names the fix.
func TestServerRefusesInsecureMaterial(t *testing.T) {
	p := testcluster.NewPKI(t, testcluster.ClusterName)
	cfg := func(cert, key string) server.Config {
		return server.Config{NodeID: "s1", DataDir: t.TempDir(), Bootstrap: true,
			GRPCAddr: "127.0.0.1:0", RaftAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0",
			CAFile: p.CAFile, CertFile: cert, KeyFile: key}
	}
	certFile, keyFile := p.Files(t, pki.Leaf{Identity: testcluster.ServerID("s1")})
	if err := os.Chmod(keyFile, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := server.New(cfg(certFile, keyFile))
	if !errors.Is(err, pki.ErrKeyPermissions) || !errors.Is(err, server.ErrConfig) || !strings.Contains(err.Error(), "chmod 600 "+keyFile) {
		t.Errorf("world-readable key: %v, want ErrKeyPermissions naming chmod 600", err)
	}
	os.Chmod(keyFile, 0o600)

	_, err = server.New(cfg("", ""))
	if !errors.Is(err, server.ErrNoTLS) || !strings.Contains(err.Error(), "relctl tls ca create") {
		t.Errorf("no TLS: %v, want ErrNoTLS naming the command that makes it", err)
	}
	agentCert, agentKey := p.Files(t, pki.Leaf{Identity: testcluster.AgentID("s1")})
	_, err = server.New(cfg(agentCert, agentKey))
	if !errors.Is(err, server.ErrConfig) || !strings.Contains(err.Error(), "relctl tls cert create --server --node-id s1") {
		t.Errorf("agent certificate: %v", err)
	}
	s2Cert, s2Key := p.Files(t, pki.Leaf{Identity: testcluster.ServerID("s2")})
	_, err = server.New(cfg(s2Cert, s2Key))
	if !errors.Is(err, server.ErrConfig) || !strings.Contains(err.Error(), `certificate of server "s2", not of --node-id "s1"`) {
		t.Errorf("another server's certificate: %v", err)
	}
}

// TestServerEndsStreams: a stream the server decides to end (replaced by a
// newer stream of the same agent, its certificate expired) ends, even
// while the agent keeps quiet; it does not wait for the agent to send.
func TestServerEndsStreams(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{})
	n := c.Nodes[0]
	recvErr := func(stream relv1.AgentService_ConnectClient) <-chan error {
		ch := make(chan error, 1)
		go func() {
			for {
				if _, err := stream.Recv(); err != nil {
					ch <- err
					return
				}
			}
		}()
		return ch
	}
	conn := idConn(t, c, n.GRPCAddr(), testcluster.AgentID("web-1"))
	first, cancel1, err := openStream(t, conn, "web-1")
	if err != nil {
		t.Fatal(err)
	}
	defer cancel1()
	ended := recvErr(first)
	_, cancel2, err := openStream(t, conn, "web-1")
	if err != nil {
		t.Fatal(err)
	}
	defer cancel2()
	select {
	case err := <-ended:
		t.Logf("replaced stream ended: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("the replaced stream is still open")
	}

	// A certificate valid for a few seconds: the stream ends when it
	// expires, saying so.
	short := c.PKI.Bundle(t, pki.Leaf{Identity: testcluster.AgentID("web-2"), NotBefore: time.Now(), Validity: 3 * time.Second})
	stream, cancel3, err := openStream(t, certConn(t, c, n.GRPCAddr(), &short.Cert), "web-2")
	if err != nil {
		t.Fatal(err)
	}
	defer cancel3()
	select {
	case err := <-recvErr(stream):
		wantCode(t, "stream past its certificate's expiry", err, codes.Unauthenticated, "certificate expired")
	case <-time.After(10 * time.Second):
		t.Fatal("the stream outlived its certificate")
	}
}

// TestNonMemberServer: a server certificate of the cluster's CA whose node
// is not a member (never joined, or removed) may ask to join, and nothing
// else: Apply, FetchArtifact, LocalAgents and forwarding a caller are
// refused, naming the reason.
func TestNonMemberServer(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{})
	n := c.Nodes[0]
	testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
		return n.Server().Store().HasServers(), "s1 has not registered itself"
	})
	before := n.Server().Store().LatestIndex()
	cc := relv1.NewClusterServiceClient(idConn(t, c, n.GRPCAddr(), testcluster.ServerID("s9")))
	ctx := ctxT(t)
	_, err := cc.Apply(ctx, &relv1.ApplyRequest{Command: evilCommand(t, "evil")})
	wantCode(t, "Apply from a non-member server", err, codes.PermissionDenied, "not a member")
	_, err = cc.LocalAgents(ctx, &relv1.LocalAgentsRequest{})
	wantCode(t, "LocalAgents from a non-member server", err, codes.PermissionDenied, "not a member")
	_, err = cc.FetchArtifact(ctx, &relv1.FetchArtifactRequest{Sha256: strings.Repeat("a", 64), Sources: []string{"https://" + n.HTTPAddr()}})
	wantCode(t, "FetchArtifact from a non-member server", err, codes.PermissionDenied, "not a member")
	if got := n.Server().Store().LatestIndex(); got != before {
		t.Errorf("a non-member server's calls wrote: index %d, was %d", got, before)
	}
	if slices.Contains(appNames(t, n.Server().Store()), "evil") {
		t.Error("the non-member's command was applied")
	}
}

// TestRestartAfterEarlySnapshot: members are checked against the
// replicated servers table, which after a restart holds only what the
// snapshot held until a leader commits the rest. Nodes that joined after
// the snapshot must still be let in (by the raft configuration), or a
// full-cluster restart could never elect a leader.
func TestRestartAfterEarlySnapshot(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{})
	s1 := c.Nodes[0]
	testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
		return s1.Server().Store().HasServers(), "s1 has not registered itself"
	})
	if err := s1.Server().Raft().Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	c.AddNode()
	c.AddNode()
	c.WaitMembers(3)
	c.Stop()
	for _, n := range c.Nodes {
		c.Restart(n)
	}
	c.WaitLeader()
	c.WaitConverged()
	if _, err := dial(t, c.Followers()[0]).CreateApp(ctxT(t), &relv1.CreateAppRequest{Name: "after-restart"}); err != nil {
		t.Fatalf("write after a full restart: %v", err)
	}
}
