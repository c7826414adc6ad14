package cli

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// fakeReleaseDelete answers release delete, recording what relctl sent.
type fakeReleaseDelete struct {
	relv1.UnimplementedControlServiceServer
	deletes chan *relv1.DeleteReleaseRequest
}

func (f *fakeReleaseDelete) DeleteRelease(_ context.Context, req *relv1.DeleteReleaseRequest) (*relv1.DeleteReleaseResponse, error) {
	f.deletes <- req
	if req.GetVersion() == "1.0.0" {
		return nil, status.Error(codes.FailedPrecondition, "release web@1.0.0 is still needed: it is environment prod's current release (rollout r-1): roll out another release to prod first")
	}
	return &relv1.DeleteReleaseResponse{Index: 41}, nil
}

// TestReleaseDeleteCommand: what relctl sends and prints; a refusal is
// one line saying why; a malformed APP@VERSION never reaches the server.
func TestReleaseDeleteCommand(t *testing.T) {
	srv := &fakeReleaseDelete{deletes: make(chan *relv1.DeleteReleaseRequest, 10)}
	env := map[string]string{envAddr: serve(t, srv, nil)}

	res := runCLI(t, env, "", "release", "delete", "web@1.2.0")
	if res.code != 0 || res.stdout != "deleted release web@1.2.0 (index 41)\n" {
		t.Fatalf("delete: exit %d, %q, %q", res.code, res.stdout, res.stderr)
	}
	if req := <-srv.deletes; req.GetApp() != "web" || req.GetVersion() != "1.2.0" {
		t.Fatalf("sent %v", req)
	}
	res = runCLI(t, env, "", "-o", "json", "release", "rm", "web@1.2.0")
	if res.code != 0 || res.stdout != "{\n  \"app\": \"web\",\n  \"version\": \"1.2.0\",\n  \"index\": 41\n}\n" {
		t.Fatalf("delete json: exit %d, %q, %q", res.code, res.stdout, res.stderr)
	}
	<-srv.deletes
	res = runCLI(t, env, "", "release", "delete", "web@1.0.0")
	<-srv.deletes
	if res.code == 0 || !strings.Contains(res.stderr, "environment prod's current release") {
		t.Fatalf("refused delete: exit %d, %q", res.code, res.stderr)
	}
	checkOneErrorLine(t, res)
	res = runCLI(t, env, "", "release", "delete", "web")
	if res.code != exitUsage || len(srv.deletes) != 0 {
		t.Fatalf("no version: exit %d, %q; %d requests sent", res.code, res.stderr, len(srv.deletes))
	}
	res = runCLI(t, env, "", "release", "delete", "--help")
	if res.code != 0 || !strings.Contains(res.stdout, "'relctl rollout rollback' of an environment's newest rollout") {
		t.Fatalf("help: exit %d, %q", res.code, res.stdout)
	}
}

// TestHistorySummaryOutput: folded history prints one line per host
// before the table, and "summaries" in JSON.
func TestHistorySummaryOutput(t *testing.T) {
	sums := []*relv1.HistorySummary{{App: "web", AgentId: "web-1", Entries: 412, Replaced: 408, Failed: 3, RolledBack: 1,
		FirstUnixNano: t0 - 86400e9*200, LastUnixNano: t0 - 86400e9*90, LastVersion: "1.4.2"}}
	var b bytes.Buffer
	if err := (printer{w: &b, format: formatTable, now: nowOps}).history(sums, nil); err != nil {
		t.Fatal(err)
	}
	if want := "web-1 before 2024-12-04: 412 versions, 3 failed, 1 rolled back, last 1.4.2\n"; b.String() != want {
		t.Errorf("table: %q, want %q", b.String(), want)
	}
	b.Reset()
	if err := (printer{w: &b, format: formatJSON, now: nowOps}).history(sums, nil); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{`"summaries": [`, `"entries": 412`, `"rolled_back": 1`, `"last_version": "1.4.2"`, `"last": "2024-12-04T04:06:07.89Z"`, `"entries": []`} {
		if !strings.Contains(b.String(), w) {
			t.Errorf("json lacks %s:\n%s", w, b.String())
		}
	}
}
