package server_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"

	"github.com/relhq/rel/internal/pki"
	"github.com/relhq/rel/internal/testcluster"
	"github.com/relhq/rel/internal/transport"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// pinnedConn is an agent's first contact: all it knows of the cluster is
// the CA pin.
func pinnedConn(t testing.TB, addr, pin string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(transport.PinnedClientConfig(pin))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// joinToken makes a join token through conn (an operator's).
func joinToken(t testing.TB, conn *grpc.ClientConn, uses uint32, ttl time.Duration, labels map[string]string) *relv1.CreateJoinTokenResponse {
	t.Helper()
	resp, err := relv1.NewACLServiceClient(conn).CreateJoinToken(ctxT(t), &relv1.CreateJoinTokenRequest{
		Uses: uses, TtlSeconds: int64(ttl / time.Second), Labels: labels, Description: "test hosts",
	})
	if err != nil {
		t.Fatalf("create join token: %v", err)
	}
	return resp
}

// csr makes an agent's key and certificate request, as rel-agent does.
func csr(t testing.TB, id string) (crypto.Signer, []byte) {
	t.Helper()
	key, err := pki.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	der, err := pki.NewCSR(key, id)
	if err != nil {
		t.Fatal(err)
	}
	return key, der
}

// enrolled turns an enrolment answer into the agent's TLS material.
func enrolled(t testing.TB, resp *relv1.EnrollResponse, key crypto.Signer) *transport.Bundle {
	t.Helper()
	certs, err := pki.ParseCerts(resp.GetCertificate())
	if err != nil {
		t.Fatal(err)
	}
	cas, err := pki.ParseCerts(resp.GetCaCertificates())
	if err != nil {
		t.Fatal(err)
	}
	b, err := transport.NewBundle(cas, certs, key)
	if err != nil {
		t.Fatalf("enrolled material: %v", err)
	}
	return b
}

func bundleConn(t testing.TB, addr string, b *transport.Bundle) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, transport.Security{M: transport.StaticMaterial(b)}.GRPCDialOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// openStream says hello on an agent stream and returns the stream and the
// first answer (a welcome, or the refusal).
func openStream(t testing.TB, conn *grpc.ClientConn, id string) (relv1.AgentService_ConnectClient, context.CancelFunc, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := relv1.NewAgentServiceClient(conn).Connect(ctx)
	if err == nil {
		err = stream.Send(&relv1.AgentMessage{Kind: &relv1.AgentMessage_Hello{Hello: &relv1.Hello{NodeId: id, AgentVersion: "test"}}})
		if errors.Is(err, io.EOF) {
			// The server ended the stream first (refused it): its status
			// comes from Recv, as gRPC documents for SendMsg.
			err = nil
		}
	}
	if err == nil {
		var w *relv1.ServerMessage
		w, err = stream.Recv()
		if err == nil && w.GetWelcome() == nil {
			err = fmt.Errorf("first message %v, want a welcome", w)
		}
	}
	if err != nil {
		cancel()
		return nil, nil, err
	}
	return stream, cancel, nil
}

// TestEnroll: agents trade a join token and a CSR for a certificate bound
// to their node id and the token's labels, and use it; tokens are spent
// exactly as many times as they allow; revocation ends streams and
// refuses certificates; renewal keeps the identity.
func TestEnroll(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{})
	leader := c.WaitLeader()
	follower := c.Followers()[0]
	ops := leader.Admin()
	ctx := ctxT(t)
	pin := pki.Pin(c.PKI.CA.Cert)

	enroll := func(addr, token, id string, der []byte) (*relv1.EnrollResponse, error) {
		return relv1.NewEnrollServiceClient(pinnedConn(t, addr, pin)).Enroll(ctx, &relv1.EnrollRequest{NodeId: id, JoinToken: token, Csr: der})
	}

	var web1 *transport.Bundle
	t.Run("enrol and connect", func(t *testing.T) {
		tok := joinToken(t, ops, 1, time.Hour, map[string]string{"env": "prod"})
		if len(tok.GetCaPins()) != 1 || tok.GetCaPins()[0] != pin {
			t.Errorf("CA pins %v, want [%s]", tok.GetCaPins(), pin)
		}
		if !strings.HasPrefix(tok.GetSecret(), "relj_") || tok.GetToken().GetSecretHash() != "" {
			t.Errorf("join token answer %v: the secret once, the hash never", tok)
		}
		key, der := csr(t, "whatever the agent claims")
		resp, err := enroll(leader.GRPCAddr(), tok.GetSecret(), "web-1", der)
		if err != nil {
			t.Fatalf("enrol: %v", err)
		}
		web1 = enrolled(t, resp, key)
		want := pki.Identity{Cluster: testcluster.ClusterName, Kind: pki.KindAgent, ID: "web-1", Labels: map[string]string{"env": "prod"}}
		if id := web1.Identity; id.Kind != want.Kind || id.ID != want.ID || id.Cluster != want.Cluster || !maps.Equal(id.Labels, want.Labels) {
			t.Errorf("enrolled identity %v, want %v", id, want)
		}
		if d := web1.Leaf.NotAfter.Sub(web1.Leaf.NotBefore); d > 25*time.Hour || d < 23*time.Hour {
			t.Errorf("agent certificate valid for %s, want about 24h", d)
		}
		if resp.GetNotAfterUnixNano() != web1.Leaf.NotAfter.UnixNano() {
			t.Errorf("not_after %d, certificate says %s", resp.GetNotAfterUnixNano(), web1.Leaf.NotAfter)
		}
		// The certificate works: an agent stream on any server.
		for _, n := range c.Nodes {
			_, cancel, err := openStream(t, bundleConn(t, n.GRPCAddr(), web1), "web-1")
			if err != nil {
				t.Fatalf("%s: connect with the enrolled certificate: %v", n.ID, err)
			}
			cancel()
		}
		testcluster.WaitFor(t, 5*time.Second, func() (bool, string) {
			resp, err := dial(t, leader).GetAgent(ctx, &relv1.GetAgentRequest{Id: "web-1"})
			if err != nil {
				return false, err.Error()
			}
			return resp.GetAgent().GetAgent().GetLabels()["env"] == "prod", fmt.Sprint(resp.GetAgent().GetAgent())
		})

		// The token was single-use: replaying it fails and says so.
		_, der2 := csr(t, "web-2")
		_, err = enroll(follower.GRPCAddr(), tok.GetSecret(), "web-2", der2)
		wantCode(t, "replayed single-use token", err, codes.Unauthenticated, "used up", tok.GetToken().GetAccessorId())
		list, err := relv1.NewACLServiceClient(ops).ListJoinTokens(ctx, &relv1.ListJoinTokensRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, jt := range list.GetTokens() {
			if jt.GetAccessorId() == tok.GetToken().GetAccessorId() && (jt.GetUsesLeft() != 0 || len(jt.GetUsedBy()) != 1 || jt.GetUsedBy()[0] != "web-1") {
				t.Errorf("token after use: %v", jt)
			}
			if jt.GetSecretHash() != "" {
				t.Error("ListJoinTokens shows secret hashes")
			}
		}
	})

	t.Run("through a follower", func(t *testing.T) {
		tok := joinToken(t, ops, 1, time.Hour, nil)
		key, der := csr(t, "web-f")
		resp, err := enroll(follower.GRPCAddr(), tok.GetSecret(), "web-f", der)
		if err != nil {
			t.Fatalf("enrol through %s: %v", follower.ID, err)
		}
		if b := enrolled(t, resp, key); b.Identity.ID != "web-f" {
			t.Errorf("identity %v", b.Identity)
		}
	})

	t.Run("concurrent enrolments of a single-use token", func(t *testing.T) {
		tok := joinToken(t, ops, 1, time.Hour, nil)
		var (
			wg   sync.WaitGroup
			mu   sync.Mutex
			won  []string
			lost []error
		)
		for i, n := range []*testcluster.Node{leader, follower, c.Followers()[1], leader} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				id := fmt.Sprintf("race-%d", i)
				_, der := csr(t, id)
				_, err := enroll(n.GRPCAddr(), tok.GetSecret(), id, der)
				mu.Lock()
				defer mu.Unlock()
				if err == nil {
					won = append(won, id)
				} else {
					lost = append(lost, err)
				}
			}()
		}
		wg.Wait()
		if len(won) != 1 {
			t.Fatalf("%d enrolments won (%v), want exactly 1; errors %v", len(won), won, lost)
		}
		for _, err := range lost {
			wantCode(t, "losing enrolment", err, codes.Unauthenticated, "used up")
		}
	})

	t.Run("a bad request does not spend the token", func(t *testing.T) {
		tok := joinToken(t, ops, 1, time.Hour, nil)
		rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		rsaCSR, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, rsaKey)
		_, goodCSR := csr(t, "web-b")
		for _, tc := range []struct {
			name string
			id   string
			der  []byte
			want string
		}{
			{"garbage CSR", "web-b", []byte("not a CSR"), "certificate request"},
			{"empty CSR", "web-b", nil, "certificate request of 0 bytes"},
			{"RSA key", "web-b", rsaCSR, "use ECDSA P-256 or Ed25519"},
			{"bad node id", "web b", goodCSR, `agent node id "web b"`},
		} {
			_, err := enroll(leader.GRPCAddr(), tok.GetSecret(), tc.id, tc.der)
			wantCode(t, tc.name, err, codes.InvalidArgument, tc.want)
		}
		_, err = enroll(leader.GRPCAddr(), "relt_not-a-join-token", "web-b", goodCSR)
		wantCode(t, "an operator token as join token", err, codes.Unauthenticated, "not a join token")
		_, err = enroll(leader.GRPCAddr(), "relj_made-up", "web-b", goodCSR)
		wantCode(t, "made-up join token", err, codes.Unauthenticated, "unknown join token")
		if _, err := enroll(leader.GRPCAddr(), tok.GetSecret(), "web-b", goodCSR); err != nil {
			t.Fatalf("the token was spent by refused requests: %v", err)
		}
	})

	t.Run("expired and revoked join tokens", func(t *testing.T) {
		short := joinToken(t, ops, 5, time.Second, nil)
		revoked := joinToken(t, ops, 5, time.Hour, nil)
		if _, err := relv1.NewACLServiceClient(ops).RevokeJoinToken(ctx, &relv1.RevokeJoinTokenRequest{AccessorId: revoked.GetToken().GetAccessorId()}); err != nil {
			t.Fatal(err)
		}
		_, der := csr(t, "web-x")
		_, err := enroll(leader.GRPCAddr(), revoked.GetSecret(), "web-x", der)
		wantCode(t, "revoked join token", err, codes.Unauthenticated, "unknown join token")
		time.Sleep(time.Until(time.Unix(0, short.GetToken().GetExpiresUnixNano()))) // a fixed expiry time
		_, err = enroll(follower.GRPCAddr(), short.GetSecret(), "web-x", der)
		wantCode(t, "expired join token", err, codes.Unauthenticated, "expired at", short.GetToken().GetAccessorId())
	})

	t.Run("renew", func(t *testing.T) {
		if web1 == nil {
			t.Skip("no enrolled agent")
		}
		key, der := csr(t, "web-1")
		resp, err := relv1.NewEnrollServiceClient(bundleConn(t, follower.GRPCAddr(), web1)).Renew(ctx, &relv1.RenewRequest{Csr: der})
		if err != nil {
			t.Fatalf("renew: %v", err)
		}
		renewed := enrolled(t, resp, key)
		if renewed.Identity.ID != "web-1" || !maps.Equal(renewed.Identity.Labels, web1.Identity.Labels) {
			t.Errorf("renewed identity %v, want %v", renewed.Identity, web1.Identity)
		}
		if renewed.Leaf.SerialNumber.Cmp(web1.Leaf.SerialNumber) == 0 {
			t.Error("renewal returned the same certificate")
		}
		if _, cancel, err := openStream(t, bundleConn(t, leader.GRPCAddr(), renewed), "web-1"); err != nil {
			t.Errorf("connect with the renewed certificate: %v", err)
		} else {
			cancel()
		}
		// Renewal is for agents only.
		_, err = relv1.NewEnrollServiceClient(leader.Admin()).Renew(ctx, &relv1.RenewRequest{Csr: der})
		wantCode(t, "renew by an admin", err, codes.PermissionDenied)
	})

	t.Run("revoke", func(t *testing.T) {
		before := joinToken(t, ops, 5, time.Hour, nil) // made before the revocation
		key, der := csr(t, "web-r")
		resp, err := enroll(leader.GRPCAddr(), before.GetSecret(), "web-r", der)
		if err != nil {
			t.Fatal(err)
		}
		old := enrolled(t, resp, key)
		stream, cancel, err := openStream(t, bundleConn(t, follower.GRPCAddr(), old), "web-r")
		if err != nil {
			t.Fatal(err)
		}
		defer cancel()
		ended := make(chan error, 1)
		go func() {
			for {
				if _, err := stream.Recv(); err != nil {
					ended <- err
					return
				}
			}
		}()

		start := time.Now()
		if _, err := relv1.NewACLServiceClient(ops).RevokeAgent(ctx, &relv1.RevokeAgentRequest{AgentId: "web-r", Reason: "host stolen"}); err != nil {
			t.Fatalf("revoke: %v", err)
		}
		select {
		case err := <-ended:
			wantCode(t, "the revoked agent's open stream", err, codes.Unauthenticated, `agent "web-r" was revoked`)
			t.Logf("stream closed %s after the revocation", time.Since(start).Round(time.Millisecond))
		case <-time.After(5 * time.Second):
			t.Fatal("the revoked agent's stream is still open 5 s after the revocation")
		}
		c.WaitConverged()
		for _, n := range c.Nodes {
			_, _, err := openStream(t, bundleConn(t, n.GRPCAddr(), old), "web-r")
			wantCode(t, n.ID+": revoked certificate", err, codes.Unauthenticated, `agent "web-r" was revoked at`, "host stolen")
		}
		_, der2 := csr(t, "web-r")
		_, err = relv1.NewEnrollServiceClient(bundleConn(t, leader.GRPCAddr(), old)).Renew(ctx, &relv1.RenewRequest{Csr: der2})
		wantCode(t, "renew with a revoked certificate", err, codes.Unauthenticated, "was revoked")
		// A token made before the revocation does not undo it.
		_, err = enroll(leader.GRPCAddr(), before.GetSecret(), "web-r", der2)
		wantCode(t, "re-enrolment with a token made before the revocation", err, codes.PermissionDenied, "revoked after join token")

		// One made after it does, and the new certificate is accepted.
		after := joinToken(t, ops, 1, time.Hour, nil)
		key3, der3 := csr(t, "web-r")
		resp, err = enroll(follower.GRPCAddr(), after.GetSecret(), "web-r", der3)
		if err != nil {
			t.Fatalf("re-enrolment with a token made since: %v", err)
		}
		fresh := enrolled(t, resp, key3)
		for _, n := range c.Nodes {
			_, cancel, err := openStream(t, bundleConn(t, n.GRPCAddr(), fresh), "web-r")
			if err != nil {
				t.Fatalf("%s: certificate issued after the revocation: %v", n.ID, err)
			}
			cancel()
		}
	})

	t.Run("CA pin", func(t *testing.T) {
		tok := joinToken(t, ops, 1, time.Hour, nil)
		wrong := pki.Pin(testcluster.NewPKI(t, testcluster.ClusterName).CA.Cert)
		_, der := csr(t, "web-p")
		_, err := relv1.NewEnrollServiceClient(pinnedConn(t, leader.GRPCAddr(), wrong)).Enroll(ctx, &relv1.EnrollRequest{NodeId: "web-p", JoinToken: tok.GetSecret(), Csr: der})
		wantCode(t, "wrong CA pin", err, codes.Unavailable, "no CA of the server matches the CA pin "+wrong)
		// The refused attempt never reached the server: the token is whole.
		if _, err := enroll(leader.GRPCAddr(), tok.GetSecret(), "web-p", der); err != nil {
			t.Fatalf("right pin: %v", err)
		}
	})
}

// TestJoinTokenBoundToNodes: a join token made for some node ids enrols
// those and refuses any other, without spending a use on the refusal.
func TestJoinTokenBoundToNodes(t *testing.T) {
	c := testcluster.New(t, 1, testcluster.Options{})
	n := c.Nodes[0]
	acl := relv1.NewACLServiceClient(n.Admin())
	resp, err := acl.CreateJoinToken(ctxT(t), &relv1.CreateJoinTokenRequest{NodeIds: []string{"web-7", "web-8"}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetToken().GetUses() != 2 {
		t.Errorf("uses %d, want one per node id (2)", resp.GetToken().GetUses())
	}
	es := relv1.NewEnrollServiceClient(pinnedConn(t, n.GRPCAddr(), resp.GetCaPins()[0]))
	_, req := csr(t, "web-1")
	_, err = es.Enroll(ctxT(t), &relv1.EnrollRequest{JoinToken: resp.GetSecret(), NodeId: "web-1", Csr: req})
	wantCode(t, "enrol another node with a bound token", err, codes.PermissionDenied, "is for web-7, web-8", `not for node "web-1"`)
	key, req := csr(t, "web-7")
	got, err := es.Enroll(ctxT(t), &relv1.EnrollRequest{JoinToken: resp.GetSecret(), NodeId: "web-7", Csr: req})
	if err != nil {
		t.Fatalf("enrol web-7: %v", err)
	}
	if id := enrolled(t, got, key).Identity; id.ID != "web-7" {
		t.Errorf("certificate for %v, want web-7", id)
	}
	toks, err := acl.ListJoinTokens(ctxT(t), &relv1.ListJoinTokensRequest{})
	if err != nil || len(toks.GetTokens()) != 1 || toks.GetTokens()[0].GetUsesLeft() != 1 {
		t.Fatalf("tokens after one refusal and one enrolment: %v %v, want 1 use left", toks, err)
	}
	_, err = acl.CreateJoinToken(ctxT(t), &relv1.CreateJoinTokenRequest{NodeIds: []string{"bad id"}})
	wantCode(t, "a bound token naming a bad node id", err, codes.InvalidArgument, "node id")
}
