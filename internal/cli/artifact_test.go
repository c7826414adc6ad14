package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// fakeArtifactList answers ListArtifacts one artifact per page.
type fakeArtifactList struct {
	relv1.UnimplementedArtifactServiceServer
	items []*relv1.ArtifactInfo
}

func (f *fakeArtifactList) ListArtifacts(_ context.Context, req *relv1.ListArtifactsRequest) (*relv1.ListArtifactsResponse, error) {
	i := 0
	for i < len(f.items) && req.GetPageToken() != "" && f.items[i].GetSha256() <= req.GetPageToken() {
		i++
	}
	resp := &relv1.ListArtifactsResponse{ServerId: "s1", StoreBytes: 3 << 20, QuotaBytes: 50 << 30}
	if i < len(f.items) {
		resp.Artifacts = f.items[i : i+1]
		if i+1 < len(f.items) {
			resp.NextPageToken = f.items[i].GetSha256()
		}
	}
	return resp, nil
}

func TestArtifactList(t *testing.T) {
	a, b := strings.Repeat("a", 64), strings.Repeat("b", 64)
	stored := time.Now().Add(-3 * time.Hour).UnixNano()
	fake := &fakeArtifactList{items: []*relv1.ArtifactInfo{
		{Sha256: a, Size: 2 << 20, StoredUnixNano: stored, Releases: []string{"web@1.0.0", "web@1.0.1"}},
		{Sha256: b, Size: 1 << 20, StoredUnixNano: stored, Removed: true},
	}}
	addr := serveWith(t, func(s *grpc.Server) { relv1.RegisterArtifactServiceServer(s, fake) })

	res := runCLI(t, map[string]string{envAddr: addr}, "", "artifact", "list")
	if res.code != 0 {
		t.Fatalf("exit %d: %s", res.code, res.stderr)
	}
	lines := strings.Split(strings.TrimSpace(res.stdout), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[0], "SHA256") ||
		!strings.Contains(lines[1], a) || !strings.Contains(lines[1], "2.0 MiB") || !strings.Contains(lines[1], "3h ago") || !strings.Contains(lines[1], "web@1.0.0,web@1.0.1") ||
		!strings.Contains(lines[2], b) || !strings.HasSuffix(lines[2], "yes") ||
		lines[3] != "s1: 3.0 MiB stored, of its --artifact-quota 50.0 GiB" {
		t.Fatalf("table:\n%s", res.stdout)
	}

	res = runCLI(t, map[string]string{envAddr: addr}, "", "artifact", "list", "-o", "json", "--limit", "1")
	var out struct {
		Server     string `json:"server"`
		QuotaBytes int64  `json:"quota_bytes"`
		Artifacts  []struct {
			SHA256   string   `json:"sha256"`
			Releases []string `json:"releases"`
		} `json:"artifacts"`
	}
	if err := json.NewDecoder(bytes.NewBufferString(res.stdout)).Decode(&out); err != nil || res.code != 0 {
		t.Fatalf("json %q: %v (exit %d, %s)", res.stdout, err, res.code, res.stderr)
	}
	if out.Server != "s1" || out.QuotaBytes != 50<<30 || len(out.Artifacts) != 1 || out.Artifacts[0].SHA256 != a || len(out.Artifacts[0].Releases) != 2 {
		t.Fatalf("json: %+v", out)
	}

	if res := runCLI(t, map[string]string{envAddr: addr}, "", "artifact", "list", "--help"); res.code != 0 || !strings.Contains(res.stdout, "--artifact-grace") {
		t.Fatalf("--help does not explain the grace: %s", res.stdout)
	}
}
