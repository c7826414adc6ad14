package cli

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"

	"github.com/relhq/rel/internal/pki"
	"github.com/relhq/rel/internal/transport"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// testCA is the CA of the fake servers of this package: every server that
// serve starts presents a server certificate of it, and runCLI points
// REL_CA_FILE at it unless a test sets REL_CA_FILE itself.
var testCA struct {
	ca     *pki.CA
	caFile string
	server transport.Security
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "relctl-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := setUpTestCA(dir); err != nil {
		fmt.Fprintln(os.Stderr, "test CA:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		os.RemoveAll(dir)
		os.Exit(code)
	}))
}

func setUpTestCA(dir string) error {
	ca, err := pki.NewCA("test", 0, time.Now())
	if err != nil {
		return err
	}
	testCA.ca, testCA.caFile = ca, filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(testCA.caFile, ca.CertPEM(), 0o644); err != nil {
		return err
	}
	testCA.server, err = serverSecurity(ca, "fake-1")
	return err
}

// testSettings are the security settings of a runner made by hand: the
// test CA, no credentials.
func testSettings() securitySettings {
	return securitySettings{ca: setting{value: testCA.caFile, source: envCAFile}}
}

// serverSecurity is the TLS material of a server with a certificate of ca
// (valid for 127.0.0.1 and server.<cluster>.rel).
func serverSecurity(ca *pki.CA, id string) (transport.Security, error) {
	leaf := pki.Leaf{Identity: pki.Identity{Kind: pki.KindServer, ID: id}, IPs: []net.IP{net.IPv4(127, 0, 0, 1)}}
	certPEM, keyPEM, err := ca.Issue(leaf, time.Now())
	if err != nil {
		return transport.Security{}, err
	}
	certs, err := pki.ParseCerts(certPEM)
	if err != nil {
		return transport.Security{}, err
	}
	key, err := pki.ParseKey(keyPEM)
	if err != nil {
		return transport.Security{}, err
	}
	b, err := transport.NewBundle([]*x509.Certificate{ca.Cert}, certs, key)
	if err != nil {
		return transport.Security{}, err
	}
	return transport.Security{M: transport.StaticMaterial(b)}, nil
}

// issueFiles writes a certificate of ca for leaf and its key (0600) to dir
// and returns their paths.
func issueFiles(t *testing.T, ca *pki.CA, leaf pki.Leaf, dir string) (certFile, keyFile string) {
	t.Helper()
	certPEM, keyPEM, err := ca.Issue(leaf, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, leaf.Kind+"-"+leaf.ID+".pem"), filepath.Join(dir, leaf.Kind+"-"+leaf.ID+"-key.pem")
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// result is what one in-process relctl run produced.
type result struct {
	code           int
	stdout, stderr string
}

// runCLI runs relctl in-process with only the given environment variables
// set, so the developer's REL_ADDR or REL_OUTPUT cannot leak into a test.
// REL_CA_FILE is the test CA's unless env sets it (to "" for none).
func runCLI(t *testing.T, env map[string]string, stdin string, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	lookup := func(k string) (string, bool) {
		v, ok := env[k]
		if !ok && k == envCAFile {
			return testCA.caFile, true
		}
		return v, ok
	}
	code := run(args, lookup, strings.NewReader(stdin), &stdout, &stderr)
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// checkOneErrorLine asserts the one-line error contract.
func checkOneErrorLine(t *testing.T, res result) {
	t.Helper()
	if !strings.HasPrefix(res.stderr, "relctl: ") || !strings.HasSuffix(res.stderr, "\n") ||
		strings.Count(res.stderr, "\n") != 1 {
		t.Errorf("stderr is not exactly one \"relctl: ...\" line: %q", res.stderr)
	}
}

// serve starts a real gRPC server on loopback with the given services and
// returns its address. It is stopped when the test ends.
func serve(t *testing.T, control relv1.ControlServiceServer, cluster relv1.ClusterServiceServer) string {
	t.Helper()
	return serveWith(t, func(s *grpc.Server) {
		if control != nil {
			relv1.RegisterControlServiceServer(s, control)
		}
		if cluster != nil {
			relv1.RegisterClusterServiceServer(s, cluster)
		}
	})
}

// serveWith is serve for any set of services: register adds them. The
// server speaks TLS with a server certificate of the test CA.
func serveWith(t *testing.T, register func(s *grpc.Server)) string {
	t.Helper()
	return serveWithOptions(t, testCA.server.GRPCServerOptions(), register)
}

// serveWithOptions is serveWith with the server's options (its TLS
// material, or none for a plain-text server).
func serveWithOptions(t *testing.T, opts []grpc.ServerOption, register func(s *grpc.Server)) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(opts...)
	register(s)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = s.Serve(lis)
	}()
	t.Cleanup(func() {
		s.Stop()
		<-done
	})
	return lis.Addr().String()
}

// closedAddr returns a loopback address nothing listens on: a port the
// kernel just handed out and that was closed again.
func closedAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	if err := lis.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// fakeControl is a minimal ControlService for client-side tests: ListApps
// returns one app named after the server (or err), CreateRelease echoes the
// request back so tests can see what relctl sent.
type fakeControl struct {
	relv1.UnimplementedControlServiceServer
	name  string
	err   error
	block bool // ListApps waits for the caller to give up

	calls      chan struct{} // one value per ListApps call, if non-nil
	consistent chan bool     // ReadOptions.Consistent of each ListApps, if non-nil
	created    chan *relv1.CreateReleaseRequest
}

func (f *fakeControl) ListApps(ctx context.Context, req *relv1.ListAppsRequest) (*relv1.ListAppsResponse, error) {
	if f.calls != nil {
		f.calls <- struct{}{}
	}
	if f.consistent != nil {
		f.consistent <- req.GetRead().GetConsistent()
	}
	if f.block {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if f.err != nil {
		return nil, f.err
	}
	return &relv1.ListAppsResponse{
		Apps:  []*relv1.App{{Name: f.name, Description: "served by " + f.name, CreateIndex: 3, ModifyIndex: 3}},
		Index: 7,
	}, nil
}

func (f *fakeControl) CreateRelease(_ context.Context, req *relv1.CreateReleaseRequest) (*relv1.CreateReleaseResponse, error) {
	if f.created != nil {
		f.created <- req
	}
	return &relv1.CreateReleaseResponse{
		Release: &relv1.Release{
			App: req.GetApp(), Version: req.GetVersion(), ArtifactUrl: req.GetArtifactUrl(),
			Sha256: req.GetSha256(), Notes: req.GetNotes(), Commit: req.GetCommit(), Labels: req.GetLabels(),
			CreateIndex: 12, ModifyIndex: 12,
		},
		Index: 12,
	}, nil
}

type fakeCluster struct {
	relv1.UnimplementedClusterServiceServer
	id, version string
}

func (f *fakeCluster) Status(context.Context, *relv1.StatusRequest) (*relv1.StatusResponse, error) {
	return &relv1.StatusResponse{Id: f.id, Version: f.version, Role: "leader"}, nil
}
