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

// fakeEnvs answers env update and env delete, recording what relctl sent.
type fakeEnvs struct {
	relv1.UnimplementedControlServiceServer
	updates chan *relv1.UpdateEnvironmentRequest
	deletes chan string
}

func (f *fakeEnvs) UpdateEnvironment(_ context.Context, req *relv1.UpdateEnvironmentRequest) (*relv1.UpdateEnvironmentResponse, error) {
	f.updates <- req
	env := &relv1.Environment{Name: req.GetName(), Selector: req.GetSelector(), Description: req.GetDescription(), CreatedUnixNano: t0, CreateIndex: 16, ModifyIndex: 30}
	resp := &relv1.UpdateEnvironmentResponse{Environment: env, Joining: []string{"web-3"}, Leaving: []string{"web-1", "web-2"}, DryRun: req.GetDryRun()}
	if !req.GetDryRun() {
		resp.Index = 30
	}
	return resp, nil
}

func (f *fakeEnvs) DeleteEnvironment(_ context.Context, req *relv1.DeleteEnvironmentRequest) (*relv1.DeleteEnvironmentResponse, error) {
	f.deletes <- req.GetName()
	if req.GetName() == "busy" {
		return nil, status.Error(codes.FailedPrecondition, `environment "busy" has an active rollout, r-1 (web@1.2.3, running): wait until it finishes or abort it ('relctl rollout abort r-1'), then delete the environment`)
	}
	return &relv1.DeleteEnvironmentResponse{Name: req.GetName(), Index: 31}, nil
}

func TestEnvUpdateOutput(t *testing.T) {
	env := &relv1.Environment{Name: "prod", Selector: map[string]string{"region": "eu", "tier": "prod"}, CreatedUnixNano: t0, CreateIndex: 16, ModifyIndex: 30}
	tests := []struct {
		name   string
		format string
		resp   *relv1.UpdateEnvironmentResponse
		want   string
	}{
		{
			name: "updated table", format: formatTable,
			resp: &relv1.UpdateEnvironmentResponse{Environment: env, Joining: []string{"web-3"}, Leaving: []string{"web-1"}, Index: 30},
			want: "" +
				"updated environment prod (index 30): selector region=eu,tier=prod\n" +
				"HOST   CHANGE\n" +
				"web-3  joins\n" +
				"web-1  leaves\n",
		},
		{
			name: "dry run table", format: formatTable,
			resp: &relv1.UpdateEnvironmentResponse{Environment: env, Joining: []string{"web-3"}, DryRun: true},
			want: "" +
				"dry run: environment prod would have selector region=eu,tier=prod (nothing changed)\n" +
				"HOST   CHANGE\n" +
				"web-3  would join\n",
		},
		{
			name: "nobody moves", format: formatTable,
			resp: &relv1.UpdateEnvironmentResponse{Environment: env, Index: 31},
			want: "updated environment prod (index 31): selector region=eu,tier=prod\nno host joins or leaves\n",
		},
		{
			name: "updated json", format: formatJSON,
			resp: &relv1.UpdateEnvironmentResponse{Environment: env, Leaving: []string{"web-1"}, Index: 30},
			// Empty lists are [], never null.
			want: `{
  "environment": {
    "name": "prod",
    "description": "",
    "selector": {
      "region": "eu",
      "tier": "prod"
    },
    "created_at": "2025-03-04T04:06:07.89Z",
    "create_index": 16,
    "modify_index": 30
  },
  "joining": [],
  "leaving": [
    "web-1"
  ],
  "dry_run": false,
  "index": 30
}
`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := (printer{w: &b, format: tt.format}).envUpdated(tt.resp); err != nil {
				t.Fatal(err)
			}
			if got := b.String(); got != tt.want {
				t.Errorf("output mismatch\n got:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

// TestEnvUpdateCommand: what relctl sends (the description only when the
// flag is given, even empty; the dry run) and prints; an update with
// nothing to change is a usage error before any call.
func TestEnvUpdateCommand(t *testing.T) {
	srv := &fakeEnvs{updates: make(chan *relv1.UpdateEnvironmentRequest, 10), deletes: make(chan string, 10)}
	env := map[string]string{envAddr: serve(t, srv, nil)}

	res := runCLI(t, env, "", "env", "update", "prod", "--selector", "region=eu,tier=prod", "--dry-run")
	if res.code != 0 {
		t.Fatalf("dry run: exit %d, %s", res.code, res.stderr)
	}
	req := <-srv.updates
	if !req.GetDryRun() || req.Description != nil || req.GetSelector()["region"] != "eu" || len(req.GetSelector()) != 2 {
		t.Fatalf("dry run sent %v", req)
	}
	if !strings.HasPrefix(res.stdout, "dry run: environment prod would have selector region=eu,tier=prod (nothing changed)\n") ||
		!strings.Contains(res.stdout, "web-3  would join") || !strings.Contains(res.stdout, "web-2  would leave") {
		t.Errorf("dry run printed %q", res.stdout)
	}

	res = runCLI(t, env, "", "env", "update", "prod", "--description", "")
	if res.code != 0 {
		t.Fatalf("description: exit %d, %s", res.code, res.stderr)
	}
	req = <-srv.updates
	if req.Description == nil || req.GetDescription() != "" || len(req.GetSelector()) != 0 || req.GetDryRun() {
		t.Fatalf("description-only update sent %v", req)
	}
	if !strings.HasPrefix(res.stdout, "updated environment prod (index 30)") {
		t.Errorf("printed %q", res.stdout)
	}

	res = runCLI(t, env, "", "env", "update", "prod")
	if res.code != exitUsage || strings.TrimSpace(res.stderr) != "relctl: nothing to change: give --selector, --description, --catch-up, --catch-up-parallel or rollout spec flags (see relctl env update --help)" {
		t.Errorf("empty update: exit %d, %q", res.code, res.stderr)
	}
	// Rollout spec flags replace the default spec release promote uses.
	res = runCLI(t, env, "", "env", "update", "prod", "--strategy", "rolling", "--max-parallel", "2")
	if res.code != 0 {
		t.Fatalf("default spec: exit %d, %s", res.code, res.stderr)
	}
	req = <-srv.updates
	if d := req.GetDefaultSpec(); d.GetStrategy() != "rolling" || d.GetMaxParallel() != 2 || req.Description != nil || len(req.GetSelector()) != 0 {
		t.Fatalf("default-spec update sent %v", req)
	}
	res = runCLI(t, env, "", "env", "update", "prod", "--max-parallel", "two")
	if res.code != exitUsage || !strings.Contains(res.stderr, "--max-parallel two") {
		t.Errorf("bad spec flag: exit %d, %q", res.code, res.stderr)
	}
	res = runCLI(t, env, "", "env", "update", "prod", "--selector", "tier")
	if res.code != exitUsage || !strings.Contains(res.stderr, `--selector "tier": missing "=" (want KEY=VALUE)`) {
		t.Errorf("bad selector: exit %d, %q", res.code, res.stderr)
	}
	if len(srv.updates) != 0 {
		t.Errorf("usage errors reached the server")
	}
}

func TestEnvDeleteCommand(t *testing.T) {
	srv := &fakeEnvs{updates: make(chan *relv1.UpdateEnvironmentRequest, 10), deletes: make(chan string, 10)}
	env := map[string]string{envAddr: serve(t, srv, nil)}

	res := runCLI(t, env, "", "env", "delete", "old")
	if res.code != 0 || res.stdout != "deleted environment old (index 31)\n" || <-srv.deletes != "old" {
		t.Fatalf("delete: exit %d, %q, %q", res.code, res.stdout, res.stderr)
	}
	res = runCLI(t, env, "", "-o", "json", "env", "rm", "old")
	if res.code != 0 || res.stdout != "{\n  \"name\": \"old\",\n  \"index\": 31\n}\n" {
		t.Fatalf("delete json: exit %d, %q, %q", res.code, res.stdout, res.stderr)
	}
	<-srv.deletes
	res = runCLI(t, env, "", "env", "delete", "busy")
	<-srv.deletes
	if res.code == 0 || !strings.Contains(res.stderr, "active rollout, r-1") {
		t.Fatalf("refused delete: exit %d, %q", res.code, res.stderr)
	}
	checkOneErrorLine(t, res)
}
