package cli

import (
	"context"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/relhq/rel/internal/reqid"
	"github.com/relhq/rel/internal/validate"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// flakyControl answers CreateApp Unavailable, as a server does when the
// leader changed while it forwarded the write, for its first fail calls
// (all of them if fail < 0), and records the request id of every call.
type flakyControl struct {
	relv1.UnimplementedControlServiceServer
	fail int

	mu  sync.Mutex
	ids []string
}

func (f *flakyControl) CreateApp(ctx context.Context, req *relv1.CreateAppRequest) (*relv1.CreateAppResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ids = append(f.ids, strings.Join(md.Get(reqid.MetadataKey), ","))
	if f.fail < 0 || len(f.ids) <= f.fail {
		return nil, status.Error(codes.Unavailable, "leadership moved while the request was forwarded: retry")
	}
	return &relv1.CreateAppResponse{App: &relv1.App{Name: req.GetName(), CreateIndex: 9, ModifyIndex: 9}, Index: 9}, nil
}

func (f *flakyControl) seen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.ids...)
}

// TestRetriesKeepTheRequestID: a write answered Unavailable is sent again,
// to the same server or the next, with the request id of the first
// attempt, so the cluster applies it once; another invocation has another
// id.
func TestRetriesKeepTheRequestID(t *testing.T) {
	t.Run("same server", func(t *testing.T) {
		srv := &flakyControl{fail: 1}
		addr := serve(t, srv, nil)
		res := runCLI(t, nil, "", "--addr", addr, "app", "create", "web")
		if res.code != exitOK {
			t.Fatalf("exit %d, stderr %q", res.code, res.stderr)
		}
		ids := srv.seen()
		if len(ids) != 2 || ids[0] != ids[1] {
			t.Fatalf("request ids of the two attempts: %q, want the same id twice", ids)
		}
		if err := validate.RequestID(ids[0]); err != nil {
			t.Errorf("relctl's request id: %v", err)
		}

		res = runCLI(t, nil, "", "--addr", addr, "app", "create", "web")
		if ids := srv.seen(); res.code != exitOK || len(ids) != 3 || ids[2] == ids[0] {
			t.Errorf("a second invocation: exit %d, ids %q: want a new id", res.code, ids)
		}
	})
	t.Run("next server", func(t *testing.T) {
		down, up := &flakyControl{fail: -1}, &flakyControl{}
		res := runCLI(t, nil, "", "--addr", serve(t, down, nil)+","+serve(t, up, nil), "app", "create", "web")
		if res.code != exitOK {
			t.Fatalf("exit %d, stderr %q", res.code, res.stderr)
		}
		a, b := down.seen(), up.seen()
		if len(a) != 1 || len(b) != 1 || a[0] == "" || a[0] != b[0] {
			t.Fatalf("request ids: %q on the first server, %q on the second; want one and the same", a, b)
		}
	})
}
