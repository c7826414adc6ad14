package cli

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"

	"go.uber.org/goleak"
	"google.golang.org/grpc"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// result is what one in-process relctl run produced.
type result struct {
	code           int
	stdout, stderr string
}

// runCLI runs relctl in-process with only the given environment variables
// set, so the developer's REL_ADDR or REL_OUTPUT cannot leak into a test.
func runCLI(t *testing.T, env map[string]string, stdin string, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
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

// serveWith is serve for any set of services: register adds them.
func serveWith(t *testing.T, register func(s *grpc.Server)) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
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
