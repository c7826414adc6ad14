package cli

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// uploadSeen is what the fake artifact store received in one Upload call.
type uploadSeen struct {
	header   *relv1.UploadHeader
	chunks   []int // sizes, in order
	digest   string
	size     int64
	complete bool // the client half-closed the stream (CloseAndRecv)
	err      error
}

// fakeArtifacts is an ArtifactService that hashes what it receives, like the
// real store, and records it.
type fakeArtifacts struct {
	relv1.UnimplementedArtifactServiceServer
	calls atomic.Int32
	seen  chan uploadSeen
	err   error // answered after receiving the whole upload
	block bool  // wait for the client to give up
	// busyFor: the first busyFor calls are refused as a server at its
	// --max-concurrent-uploads refuses them (-1: every call).
	busyFor int32
}

func newFakeArtifacts() *fakeArtifacts { return &fakeArtifacts{seen: make(chan uploadSeen, 4)} }

func (f *fakeArtifacts) Upload(stream relv1.ArtifactService_UploadServer) error {
	if n := f.calls.Add(1); f.busyFor < 0 || n <= f.busyFor {
		st, _ := status.New(codes.ResourceExhausted, "4 uploads are in progress on this server: try again shortly").
			WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(20 * time.Millisecond)})
		return st.Err()
	}
	var seen uploadSeen
	defer func() { f.seen <- seen }()
	first, err := stream.Recv()
	if err != nil {
		seen.err = err
		return err
	}
	if seen.header = first.GetHeader(); seen.header == nil {
		return status.Error(codes.InvalidArgument, "the first message must be the header")
	}
	if f.block {
		<-stream.Context().Done()
		return stream.Context().Err()
	}
	h := sha256.New()
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			seen.complete = true
			break
		}
		if err != nil {
			seen.err = err
			return err
		}
		if req.GetHeader() != nil {
			return status.Error(codes.InvalidArgument, "a second header")
		}
		seen.chunks = append(seen.chunks, len(req.GetChunk()))
		h.Write(req.GetChunk())
		seen.size += int64(len(req.GetChunk()))
	}
	seen.digest = hex.EncodeToString(h.Sum(nil))
	if f.err != nil {
		return f.err
	}
	if seen.digest != seen.header.GetSha256() || seen.size != seen.header.GetSize() {
		return status.Error(codes.InvalidArgument, "digest or size mismatch")
	}
	return stream.SendAndClose(&relv1.UploadResponse{Sha256: seen.digest, Size: seen.size,
		ArtifactUrl: "rel://sha256/" + seen.digest, Holders: []string{"n1", "n2"}})
}

// serveUpload serves a fake ControlService and ArtifactService on one
// loopback address.
func serveUpload(t *testing.T, control *fakeControl, artifacts *fakeArtifacts) string {
	t.Helper()
	return serveWith(t, func(s *grpc.Server) {
		relv1.RegisterControlServiceServer(s, control)
		relv1.RegisterArtifactServiceServer(s, artifacts)
	})
}

// writeArtifact writes size random bytes to a file in a temporary directory
// and returns its path and hex sha256.
func writeArtifact(t *testing.T, name string, size int) (string, string) {
	t.Helper()
	b := make([]byte, size)
	rng := rand.NewChaCha8([32]byte{1, 2, 3})
	_, _ = rng.Read(b)
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return path, hex.EncodeToString(sum[:])
}

func TestReleaseCreateUpload(t *testing.T) {
	const size = 1<<20 + 1000 // four full chunks and a short one
	path, digest := writeArtifact(t, "web-1.2.3.tar.gz", size)

	tests := []struct {
		name   string
		sha256 string // --sha256, if any
		output string
	}{
		{name: "digest computed", output: formatTable},
		{name: "digest given and matching, upper case", sha256: strings.ToUpper(digest), output: formatTable},
		{name: "json", output: formatJSON},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			control := &fakeControl{created: make(chan *relv1.CreateReleaseRequest, 1)}
			artifacts := newFakeArtifacts()
			addr := serveUpload(t, control, artifacts)
			args := []string{"-o", tt.output, "release", "create", "web", "1.2.3", "--artifact", path, "--commit", "4f2a9c1"}
			if tt.sha256 != "" {
				args = append(args, "--sha256", tt.sha256)
			}
			res := runCLI(t, map[string]string{envAddr: addr}, "", args...)
			if res.code != exitOK {
				t.Fatalf("exit code = %d, stderr %q", res.code, res.stderr)
			}
			// stderr is no terminal here: no progress, nothing at all.
			if res.stderr != "" {
				t.Errorf("stderr = %q, want nothing", res.stderr)
			}

			seen := <-artifacts.seen
			wantHeader := &relv1.UploadHeader{Sha256: digest, Size: size, Name: "web-1.2.3.tar.gz"}
			if seen.header.String() != wantHeader.String() {
				t.Errorf("header = %v, want %v", seen.header, wantHeader)
			}
			wantChunks := []int{uploadChunkSize, uploadChunkSize, uploadChunkSize, uploadChunkSize, 1000}
			if !slices.Equal(seen.chunks, wantChunks) {
				t.Errorf("chunk sizes = %v, want %v", seen.chunks, wantChunks)
			}
			if !seen.complete || seen.digest != digest || seen.size != size {
				t.Errorf("server got complete=%v digest %s size %d, want true %s %d", seen.complete, seen.digest, seen.size, digest, size)
			}

			req := <-control.created
			want := &relv1.CreateReleaseRequest{App: "web", Version: "1.2.3", ArtifactUrl: "rel://sha256/" + digest,
				Sha256: digest, Commit: "4f2a9c1", Labels: map[string]string{}}
			if req.String() != want.String() {
				t.Errorf("CreateRelease request:\n got %v\nwant %v", req, want)
			}

			if tt.output == formatJSON {
				var rel releaseJSON
				if err := json.Unmarshal([]byte(res.stdout), &rel); err != nil || rel.ArtifactURL != "rel://sha256/"+digest {
					t.Errorf("stdout is not the release JSON (err %v):\n%s", err, res.stdout)
				}
				return
			}
			wantOut := "uploaded web-1.2.3.tar.gz (1.0 MiB) as rel://sha256/" + digest + "\n" +
				"created release web@1.2.3 (index 12)\n"
			if res.stdout != wantOut {
				t.Errorf("stdout = %q, want %q", res.stdout, wantOut)
			}
		})
	}
}

// TestReleaseCreateUploadRefused covers the ways a local artifact upload
// fails: each must print one line, exit with the documented code, and never
// create a release.
func TestReleaseCreateUploadRefused(t *testing.T) {
	path, digest := writeArtifact(t, "web.tgz", 300<<10)
	wrong := strings.Repeat("0", 64)
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.tgz")

	tests := []struct {
		name      string
		artifacts *fakeArtifacts
		args      []string
		wantCode  int
		wantErr   string // the whole stderr line
		wantCalls int32  // Upload calls the server must have seen
	}{
		{
			name:     "digest mismatch is refused before uploading",
			args:     []string{"--artifact", path, "--sha256", wrong},
			wantCode: exitRefused,
			wantErr: "relctl: --artifact " + path + " has sha256 " + digest + ", but --sha256 is " + wrong +
				"; nothing was uploaded",
		},
		{
			name:     "missing file",
			args:     []string{"--artifact", missing},
			wantCode: exitUsage,
			wantErr: "relctl: --artifact " + missing + ": no such file (a URL needs a scheme, e.g. https://)" +
				" (see relctl release create --help)",
		},
		{
			name:     "directory",
			args:     []string{"--artifact", dir},
			wantCode: exitUsage,
			wantErr:  "relctl: --artifact " + dir + " is a directory, not a file (see relctl release create --help)",
		},
		{
			name:      "server refusal is passed through",
			artifacts: &fakeArtifacts{seen: make(chan uploadSeen, 1), err: status.Error(codes.ResourceExhausted, "artifact store full")},
			args:      []string{"--artifact", path},
			wantCode:  exitRefused,
			wantErr:   "relctl: artifact store full (ResourceExhausted)",
			wantCalls: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			control := &fakeControl{created: make(chan *relv1.CreateReleaseRequest, 1)}
			artifacts := tt.artifacts
			if artifacts == nil {
				artifacts = newFakeArtifacts()
			}
			addr := serveUpload(t, control, artifacts)
			res := runCLI(t, map[string]string{envAddr: addr}, "",
				append([]string{"release", "create", "web", "1.2.3"}, tt.args...)...)
			if res.code != tt.wantCode {
				t.Errorf("exit code = %d, want %d", res.code, tt.wantCode)
			}
			checkOneErrorLine(t, res)
			if got := strings.TrimSuffix(res.stderr, "\n"); got != tt.wantErr {
				t.Errorf("stderr:\n got %s\nwant %s", got, tt.wantErr)
			}
			if res.stdout != "" {
				t.Errorf("stdout = %q, want nothing", res.stdout)
			}
			if got := artifacts.calls.Load(); got != tt.wantCalls {
				t.Errorf("server saw %d Upload calls, want %d", got, tt.wantCalls)
			}
			select {
			case req := <-control.created:
				t.Errorf("a release was created: %v", req)
			default:
			}
		})
	}
}

func TestUploadTimeout(t *testing.T) {
	path, _ := writeArtifact(t, "web.tgz", 1000)
	artifacts := &fakeArtifacts{seen: make(chan uploadSeen, 1), block: true}
	addr := serveUpload(t, &fakeControl{}, artifacts)
	res := runCLI(t, map[string]string{envAddr: addr}, "",
		"release", "create", "web", "1.2.3", "--artifact", path, "--upload-timeout", "200ms")
	if res.code != exitTimeout {
		t.Errorf("exit code = %d, want %d", res.code, exitTimeout)
	}
	want := "relctl: upload of web.tgz to " + addr + " did not finish within --upload-timeout 200ms; raise it with --upload-timeout\n"
	if res.stderr != want {
		t.Errorf("stderr = %q, want %q", res.stderr, want)
	}
}

// TestUploadFileChanged checks that bytes that no longer match the digest
// announced in the header are never committed: relctl abandons the stream
// instead of half-closing it.
func TestUploadFileChanged(t *testing.T) {
	path, _ := writeArtifact(t, "web.tgz", 600<<10)
	artifacts := newFakeArtifacts()
	addr := serveUpload(t, &fakeControl{}, artifacts)
	r := &runner{addrs: []string{addr}, secure: testSettings()}
	_, err := r.upload(path, strings.Repeat("0", 64), 600<<10, 5*time.Second, nil)
	if err == nil || !strings.Contains(err.Error(), "changed while it was being uploaded") {
		t.Fatalf("err = %v, want the file-changed error", err)
	}
	if seen := <-artifacts.seen; seen.complete {
		t.Errorf("the server saw a complete upload: %+v", seen)
	}
}

func TestProgress(t *testing.T) {
	var b bytes.Buffer
	now := time.Unix(1000, 0)
	p := &progress{w: &b, now: func() time.Time { return now }}
	p.start("uploading", "web.tgz", 4<<20)
	p.add(1 << 20) // within progressInterval of the last draw: not drawn
	now = now.Add(progressInterval)
	p.add(1 << 20)
	p.add(2 << 20) // done: always drawn
	p.clear()
	p.clear() // nothing drawn since: no-op
	want := "\ruploading web.tgz: 0 B of 4.0 MiB, 0%\x1b[K" +
		"\ruploading web.tgz: 2.0 MiB of 4.0 MiB, 50%\x1b[K" +
		"\ruploading web.tgz: 4.0 MiB of 4.0 MiB, 100%\x1b[K" +
		"\r\x1b[K"
	if b.String() != want {
		t.Errorf("progress output:\n got %q\nwant %q", b.String(), want)
	}

	// Not a terminal: no progress at all, and a nil *progress is safe.
	if p := newProgress(&b); p != nil {
		t.Errorf("newProgress(buffer) = %v, want nil", p)
	}
	var none *progress
	none.start("hashing", "x", 1)
	none.add(1)
	none.clear()
}

// TestUploadFailover checks that an upload moves past an address that
// cannot be reached, like every other call.
func TestUploadFailover(t *testing.T) {
	path, digest := writeArtifact(t, "web.tgz", 1000)
	artifacts := newFakeArtifacts()
	addr := serveUpload(t, &fakeControl{}, artifacts)
	r := &runner{addrs: []string{closedAddr(t), addr}, secure: testSettings()}
	resp, err := r.upload(path, digest, 1000, 5*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetArtifactUrl() != "rel://sha256/"+digest {
		t.Errorf("artifact URL = %q", resp.GetArtifactUrl())
	}
}

// TestUploadBusyServer: a server at its --max-concurrent-uploads (a
// ResourceExhausted refusal with RetryInfo) is asked again after a jittered
// pause until it takes the upload; one that stays busy past
// --upload-timeout ends with its own refusal, not a timeout.
func TestUploadBusyServer(t *testing.T) {
	path, digest := writeArtifact(t, "web.tgz", 10<<10)
	tests := []struct {
		name      string
		busyFor   int32
		args      []string
		wantCode  int
		wantErr   string
		wantCalls func(int32) bool
	}{
		{name: "busy twice, then accepted", busyFor: 2, wantCode: 0, wantCalls: func(n int32) bool { return n == 3 }},
		{name: "busy until the upload timeout", busyFor: -1, args: []string{"--upload-timeout", "300ms"}, wantCode: exitRefused,
			wantErr:   "relctl: 4 uploads are in progress on this server: try again shortly (ResourceExhausted)",
			wantCalls: func(n int32) bool { return n >= 2 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			control := &fakeControl{created: make(chan *relv1.CreateReleaseRequest, 1)}
			artifacts := newFakeArtifacts()
			artifacts.busyFor = tt.busyFor
			artifacts.seen = make(chan uploadSeen, 100)
			addr := serveUpload(t, control, artifacts)
			res := runCLI(t, map[string]string{envAddr: addr}, "",
				append([]string{"release", "create", "web", "1.2.3", "--artifact", path}, tt.args...)...)
			if res.code != tt.wantCode {
				t.Fatalf("exit code = %d, want %d; stderr %s", res.code, tt.wantCode, res.stderr)
			}
			if tt.wantErr != "" {
				checkOneErrorLine(t, res)
				if got := strings.TrimSuffix(res.stderr, "\n"); got != tt.wantErr {
					t.Errorf("stderr:\n got %s\nwant %s", got, tt.wantErr)
				}
			} else if req := <-control.created; req.GetArtifactUrl() != "rel://sha256/"+digest {
				t.Errorf("release created with %q", req.GetArtifactUrl())
			}
			if n := artifacts.calls.Load(); !tt.wantCalls(n) {
				t.Errorf("server saw %d Upload calls", n)
			}
		})
	}
}
