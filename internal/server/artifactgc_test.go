package server_test

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/relhq/rel/internal/auth"
	"github.com/relhq/rel/internal/server"
	"github.com/relhq/rel/internal/testcluster"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

func randomBlob(n int) ([]byte, string) {
	b := make([]byte, n)
	rand.Read(b)
	sum := sha256.Sum256(b)
	return b, hex.EncodeToString(sum[:])
}

// uploadBlob uploads body through conn in 64 KiB chunks.
func uploadBlob(t testing.TB, conn grpc.ClientConnInterface, digest string, body []byte) (*relv1.UploadResponse, error) {
	st, err := relv1.NewArtifactServiceClient(conn).Upload(ctxT(t))
	if err != nil {
		return nil, err
	}
	if err := st.Send(&relv1.UploadRequest{Kind: &relv1.UploadRequest_Header{Header: &relv1.UploadHeader{Sha256: digest, Size: int64(len(body)), Name: "blob"}}}); err != nil {
		return st.CloseAndRecv()
	}
	for off := 0; off < len(body); off += 64 << 10 {
		if err := st.Send(&relv1.UploadRequest{Kind: &relv1.UploadRequest_Chunk{Chunk: body[off:min(off+64<<10, len(body))]}}); err != nil {
			break // the server refused early; CloseAndRecv says why
		}
	}
	return st.CloseAndRecv()
}

func blobPath(n *testcluster.Node, digest string) string {
	return filepath.Join(n.DataDir(), "artifacts", "sha256", digest)
}

// holders lists the nodes whose store has the blob.
func holders(c *testcluster.Cluster, digest string) []string {
	var out []string
	for _, n := range c.Nodes {
		if _, err := os.Stat(blobPath(n, digest)); err == nil {
			out = append(out, n.ID)
		}
	}
	return out
}

func scrapeMetrics(t testing.TB, c *testcluster.Cluster, n *testcluster.Node) string {
	resp, err := httpsClient(t, c, ptr(testcluster.ClientID("prom", auth.Viewer))).Get("https://" + n.HTTPAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestArtifactGC: a blob no release references is removed from all three
// servers' stores after the grace, a referenced one is kept, a release of
// the removed blob is refused until it is uploaded again, and then works
// and keeps it.
func TestArtifactGC(t *testing.T) {
	const grace = 1500 * time.Millisecond
	c := testcluster.New(t, 3, testcluster.Options{Configure: func(i int, cfg *server.Config) {
		cfg.MaxArtifactBytes = 1 << 20
		cfg.ArtifactGrace = grace
		cfg.ArtifactGCInterval = 100 * time.Millisecond
	}})
	c.WaitLeader()
	f := c.Followers()[0]
	ctl := dial(t, f)
	if _, err := ctl.CreateApp(ctxT(t), &relv1.CreateAppRequest{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	orphan, orphanSum := randomBlob(100_000)
	used, usedSum := randomBlob(50_000)
	for _, b := range []struct {
		body []byte
		sum  string
	}{{orphan, orphanSum}, {used, usedSum}} {
		if _, err := uploadBlob(t, f.Admin(), b.sum, b.body); err != nil {
			t.Fatalf("upload: %v", err)
		}
	}
	if _, err := ctl.CreateRelease(ctxT(t), &relv1.CreateReleaseRequest{App: "web", Version: "1.0.0", ArtifactUrl: "rel://sha256/" + usedSum}); err != nil {
		t.Fatal(err)
	}
	// Every server holds both eventually (the upload waits for a majority).
	testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
		h := holders(c, orphanSum)
		return len(h) == 3, fmt.Sprintf("orphan on %v", h)
	})
	usedOn := holders(c, usedSum)

	// ListArtifacts: this server's store by digest, in pages, with the
	// releases using each.
	var listed []*relv1.ArtifactInfo
	tok := ""
	for pages := 0; ; pages++ {
		resp, err := relv1.NewArtifactServiceClient(f.Admin()).ListArtifacts(ctxT(t), &relv1.ListArtifactsRequest{PageSize: 1, PageToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		if pages == 0 && (resp.GetServerId() != f.ID || resp.GetStoreBytes() != 150_000) {
			t.Errorf("list answered by %s with %d bytes stored", resp.GetServerId(), resp.GetStoreBytes())
		}
		listed = append(listed, resp.GetArtifacts()...)
		if tok = resp.GetNextPageToken(); tok == "" || pages > 3 {
			break
		}
	}
	if len(listed) != 2 {
		t.Fatalf("listed %v", listed)
	}
	for _, a := range listed {
		switch a.GetSha256() {
		case orphanSum:
			if len(a.GetReleases()) != 0 || a.GetSize() != 100_000 {
				t.Errorf("orphan listed as %v", a)
			}
		case usedSum:
			if len(a.GetReleases()) != 1 || a.GetReleases()[0] != "web@1.0.0" {
				t.Errorf("used blob listed as %v", a)
			}
		default:
			t.Errorf("listed %v", a)
		}
	}

	testcluster.WaitFor(t, 10*grace, func() (bool, string) {
		h := holders(c, orphanSum)
		return len(h) == 0, fmt.Sprintf("unreferenced blob still on %v after the grace", h)
	})
	if h := holders(c, usedSum); len(h) != len(usedOn) {
		t.Fatalf("referenced blob on %v, was on %v", h, usedOn)
	}
	leader := c.Leader()
	if m := scrapeMetrics(t, c, leader); !strings.Contains(m, "rel_retention_artifacts_removed_total 1\n") {
		t.Errorf("leader's metrics do not count one removed artifact:\n%s", grep(m, "artifact"))
	}
	for _, n := range c.Nodes {
		m := scrapeMetrics(t, c, n)
		if !strings.Contains(m, "rel_artifact_gc_bytes_freed_total 100000\n") {
			t.Errorf("%s: bytes freed not counted:\n%s", n.ID, grep(m, "artifact"))
		}
		if !strings.Contains(m, fmt.Sprintf("rel_artifact_store_bytes %d\n", 50_000*len(holdersOn(c, n, usedSum)))) {
			t.Errorf("%s: store bytes:\n%s", n.ID, grep(m, "artifact"))
		}
	}

	// The removed blob cannot make a release: it is gone everywhere.
	_, err := ctl.CreateRelease(ctxT(t), &relv1.CreateReleaseRequest{App: "web", Version: "2.0.0", ArtifactUrl: "rel://sha256/" + orphanSum})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "upload it first") {
		t.Fatalf("release of a removed artifact: %v, want FailedPrecondition telling to upload it", err)
	}

	// Uploaded again, it works and is kept while a release uses it.
	if _, err := uploadBlob(t, leader.Admin(), orphanSum, orphan); err != nil {
		t.Fatalf("upload again: %v", err)
	}
	if _, err := ctl.CreateRelease(ctxT(t), &relv1.CreateReleaseRequest{App: "web", Version: "2.0.0", ArtifactUrl: "rel://sha256/" + orphanSum}); err != nil {
		t.Fatalf("release of the artifact uploaded again: %v", err)
	}
	again := holders(c, orphanSum)
	if len(again) < 2 {
		t.Fatalf("uploaded again, the blob is on %v only", again)
	}
	// A later orphan's removal proves GC passes ran past the grace of the
	// re-upload; the released blob must still be where it was.
	later, laterSum := randomBlob(1000)
	if _, err := uploadBlob(t, leader.Admin(), laterSum, later); err != nil {
		t.Fatal(err)
	}
	testcluster.WaitFor(t, 10*grace, func() (bool, string) {
		h := holders(c, laterSum)
		return len(h) == 0, fmt.Sprintf("later orphan still on %v", h)
	})
	if h := holders(c, orphanSum); len(h) < len(again) {
		t.Fatalf("released blob on %v, was on %v", h, again)
	}
}

func holdersOn(c *testcluster.Cluster, n *testcluster.Node, digest string) []string {
	for _, id := range holders(c, digest) {
		if id == n.ID {
			return []string{id}
		}
	}
	return nil
}

func grep(s, word string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, word) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestArtifactQuota: an upload that would pass --artifact-quota is refused
// with ResourceExhausted naming the quota and what to do, and leaves no
// file on any server.
func TestArtifactQuota(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{Configure: func(i int, cfg *server.Config) {
		cfg.MaxArtifactBytes = 1 << 20
		cfg.ArtifactQuota = 100_000
	}})
	c.WaitLeader()
	f := c.Followers()[0]
	first, firstSum := randomBlob(60_000)
	if _, err := uploadBlob(t, f.Admin(), firstSum, first); err != nil {
		t.Fatalf("upload under the quota: %v", err)
	}
	// The straggler's copy lands too, so no partial file is in flight.
	testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
		h := holders(c, firstSum)
		return len(h) == 3, fmt.Sprintf("first blob on %v", h)
	})
	second, secondSum := randomBlob(60_000)
	_, err := uploadBlob(t, f.Admin(), secondSum, second)
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("upload past the quota: %v, want ResourceExhausted", err)
	}
	for _, want := range []string{"nothing stored", "quota of 97.7 KiB", "58.6 KiB stored", "--artifact-quota", "delete releases"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q does not say %q", err, want)
		}
	}
	if h := holders(c, secondSum); len(h) != 0 {
		t.Fatalf("refused blob stored on %v", h)
	}
	for _, n := range c.Nodes {
		if tmps, _ := os.ReadDir(filepath.Join(n.DataDir(), "artifacts", "tmp")); len(tmps) != 0 {
			t.Errorf("%s: %d partial files left", n.ID, len(tmps))
		}
	}
	// The same bytes again take no room: accepted.
	if _, err := uploadBlob(t, f.Admin(), firstSum, first); err != nil {
		t.Fatalf("the stored blob uploaded again: %v", err)
	}
	if m := scrapeMetrics(t, c, f); !strings.Contains(m, `rel_artifact_uploads_refused_total{reason="quota"} 1`) {
		t.Errorf("refusal not counted:\n%s", grep(m, "artifact"))
	}
}

// heldUpload is an upload stream the test holds open half-sent.
type heldUpload struct {
	stream relv1.ArtifactService_UploadClient
	body   []byte
}

// TestUploadConcurrencyLimit: with four uploads held open on a server, the
// fifth is refused with ResourceExhausted and a RetryInfo detail; once they
// finish, uploads are accepted again.
func TestUploadConcurrencyLimit(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{Configure: func(i int, cfg *server.Config) {
		cfg.MaxArtifactBytes = 1 << 20
		cfg.MaxConcurrentUploads = 4
	}})
	n := c.WaitLeader()
	ac := relv1.NewArtifactServiceClient(n.Admin())
	var held []heldUpload
	for i := 0; i < 4; i++ {
		body, sum := randomBlob(2000)
		st, err := ac.Upload(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&relv1.UploadRequest{Kind: &relv1.UploadRequest_Header{Header: &relv1.UploadHeader{Sha256: sum, Size: int64(len(body))}}}); err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&relv1.UploadRequest{Kind: &relv1.UploadRequest_Chunk{Chunk: body[:1000]}}); err != nil {
			t.Fatal(err)
		}
		held = append(held, heldUpload{st, body})
	}
	// The held streams reach the server in their own time; each has its
	// place once its partial file exists (a fifth tried earlier could take
	// the place of one not yet in).
	testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
		tmps, _ := os.ReadDir(filepath.Join(n.DataDir(), "artifacts", "tmp"))
		return len(tmps) == 4, fmt.Sprintf("%d uploads in progress", len(tmps))
	})
	body5, sum5 := randomBlob(100)
	_, refused := uploadBlob(t, n.Admin(), sum5, body5)
	if status.Code(refused) != codes.ResourceExhausted {
		t.Fatalf("fifth upload: %v, want ResourceExhausted", refused)
	}
	if !strings.Contains(refused.Error(), "4 uploads are in progress on this server") || !strings.Contains(refused.Error(), "try again shortly") {
		t.Errorf("refusal %q", refused)
	}
	retryable := false
	for _, d := range status.Convert(refused).Details() {
		if _, ok := d.(*errdetails.RetryInfo); ok {
			retryable = true
		}
	}
	if !retryable {
		t.Error("the refusal carries no RetryInfo: clients cannot tell it from a quota refusal")
	}
	for _, h := range held {
		if err := h.stream.Send(&relv1.UploadRequest{Kind: &relv1.UploadRequest_Chunk{Chunk: h.body[1000:]}}); err != nil {
			t.Fatal(err)
		}
		if _, err := h.stream.CloseAndRecv(); err != nil {
			t.Fatalf("held upload: %v", err)
		}
	}
	body, sum := randomBlob(100)
	if _, err := uploadBlob(t, n.Admin(), sum, body); err != nil {
		t.Fatalf("upload after the others finished: %v", err)
	}
}

// TestArtifactGCServerDown: a server that was down while GC removed a blob
// deletes its copy when it is back.
func TestArtifactGCServerDown(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{Configure: func(i int, cfg *server.Config) {
		cfg.MaxArtifactBytes = 1 << 20
		cfg.ArtifactGrace = time.Second
		cfg.ArtifactGCInterval = 100 * time.Millisecond
	}})
	leader := c.WaitLeader()
	body, sum := randomBlob(20_000)
	if _, err := uploadBlob(t, leader.Admin(), sum, body); err != nil {
		t.Fatal(err)
	}
	testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
		h := holders(c, sum)
		return len(h) == 3, fmt.Sprintf("blob on %v", h)
	})
	down := c.Followers()[0]
	c.Kill(down)
	testcluster.WaitFor(t, 20*time.Second, func() (bool, string) {
		h := holders(c, sum)
		return len(h) == 1 && h[0] == down.ID, fmt.Sprintf("blob on %v, want only on the stopped %s", h, down.ID)
	})
	c.Restart(down)
	testcluster.WaitFor(t, 20*time.Second, func() (bool, string) {
		h := holders(c, sum)
		return len(h) == 0, fmt.Sprintf("blob still on %v after %s came back", h, down.ID)
	})
}

// TestReleaseRacingArtifactGC: a release decided on a server before a GC
// removal of its blob, and committed after it, is refused with a clear
// error and stores nothing (the blob is deleted everywhere); the blob
// uploaded again makes the release, and stays.
func TestReleaseRacingArtifactGC(t *testing.T) {
	c := testcluster.New(t, 3, testcluster.Options{Configure: func(i int, cfg *server.Config) {
		cfg.MaxArtifactBytes = 1 << 20
		cfg.ArtifactGrace = time.Hour // only the removal this test commits
	}})
	leader := c.WaitLeader()
	f := c.Followers()[0]
	ctl := dial(t, f)
	if _, err := ctl.CreateApp(ctxT(t), &relv1.CreateAppRequest{Name: "web"}); err != nil {
		t.Fatal(err)
	}
	body, sum := randomBlob(30_000)
	if _, err := uploadBlob(t, f.Admin(), sum, body); err != nil {
		t.Fatal(err)
	}
	// The two entries as a follower would forward them: the leader's GC
	// pass, then a release its server checked before that pass committed.
	apply := func(cmd *relv1.Command) (*relv1.ApplyResponse, error) {
		cmd.StampedUnixNano = time.Now().UnixNano()
		b, err := proto.Marshal(cmd)
		if err != nil {
			t.Fatal(err)
		}
		cc := relv1.NewClusterServiceClient(idConn(t, c, leader.GRPCAddr(), testcluster.ServerID(f.ID)))
		return cc.Apply(metadata.AppendToOutgoingContext(ctxT(t), "rel-forwarded", "1"), &relv1.ApplyRequest{Command: b})
	}
	removed, err := apply(&relv1.Command{Kind: &relv1.Command_RemoveArtifacts{RemoveArtifacts: &relv1.RemoveArtifacts{Digests: []string{sum}}}})
	if err != nil {
		t.Fatal(err)
	}
	rel := &relv1.Release{App: "web", Version: "1.0.0", ArtifactUrl: "rel://sha256/" + sum, Sha256: sum, Size: int64(len(body)), CreatedUnixNano: time.Now().UnixNano()}
	_, err = apply(&relv1.Command{Kind: &relv1.Command_CreateRelease{CreateRelease: &relv1.CreateRelease{Release: rel, ArtifactCheckedIndex: removed.GetIndex() - 1}}})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "removed from the cluster's store by artifact GC") || !strings.Contains(err.Error(), "upload it again") {
		t.Fatalf("release checked before the removal: %v, want FailedPrecondition telling to upload again", err)
	}
	if _, err := ctl.GetRelease(ctxT(t), &relv1.GetReleaseRequest{App: "web", Version: "1.0.0", Read: &relv1.ReadOptions{Consistent: true}}); status.Code(err) != codes.NotFound {
		t.Fatalf("refused release stored: %v", err)
	}
	testcluster.WaitFor(t, 10*time.Second, func() (bool, string) {
		h := holders(c, sum)
		return len(h) == 0, fmt.Sprintf("removed blob still on %v", h)
	})

	// Uploaded again, the release is made (lifting the removal) and the
	// blob stays on a majority.
	if _, err := uploadBlob(t, f.Admin(), sum, body); err != nil {
		t.Fatalf("upload again: %v", err)
	}
	if _, err := ctl.CreateRelease(ctxT(t), &relv1.CreateReleaseRequest{App: "web", Version: "1.0.0", ArtifactUrl: "rel://sha256/" + sum}); err != nil {
		t.Fatalf("release after the upload again: %v", err)
	}
	list, err := relv1.NewArtifactServiceClient(f.Admin()).ListArtifacts(ctxT(t), &relv1.ListArtifactsRequest{})
	if err != nil || len(list.GetArtifacts()) != 1 || list.GetArtifacts()[0].GetRemoved() || len(list.GetArtifacts()[0].GetReleases()) != 1 {
		t.Fatalf("after the release: %v %v", list, err)
	}
	if h := holders(c, sum); len(h) < 2 {
		t.Fatalf("blob on %v only", h)
	}
}
