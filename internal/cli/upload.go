package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/term"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/relhq/rel/internal/retry"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

const (
	// uploadChunkSize is the payload of one UploadRequest chunk.
	uploadChunkSize = 256 << 10

	defaultUploadTimeout = 10 * time.Minute

	// progressInterval limits how often the progress line is redrawn.
	progressInterval = 100 * time.Millisecond
)

// isLocalArtifact reports whether --artifact names a local file rather than
// a URL: anything without a scheme ("://") is a path.
func isLocalArtifact(arg string) bool { return !strings.Contains(arg, "://") }

// statArtifact checks that a local --artifact is a regular file and returns
// its size. Its failures are usage errors: the command line names a file
// relctl cannot upload.
func statArtifact(path string) error {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return usagef("--artifact %s: no such file (a URL needs a scheme, e.g. https://)", path)
	case err != nil:
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return usagef("--artifact %s: %v", path, err)
	case fi.IsDir():
		return usagef("--artifact %s is a directory, not a file", path)
	case !fi.Mode().IsRegular():
		return usagef("--artifact %s is not a regular file", path)
	}
	return nil
}

// hashFile returns the lower-case hex sha256 and the size of the file at
// path, streaming it: the file is never held in memory.
func hashFile(path string, prog *progress) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, usagef("--artifact %s: %v", path, unwrapPath(err))
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil {
		prog.start("hashing", filepath.Base(path), fi.Size())
	}
	h := sha256.New()
	n, err := io.Copy(h, &progressReader{r: f, p: prog})
	prog.clear()
	if err != nil {
		return "", 0, fmt.Errorf("read --artifact %s: %v", path, unwrapPath(err))
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// upload streams the file at path to ArtifactService.Upload: a header with
// the digest and size computed beforehand, then chunks of uploadChunkSize.
// It has its own deadline, timeout (--upload-timeout), instead of the
// command's --timeout, which is sized for small requests.
func (r *runner) upload(path, digest string, size int64, timeout time.Duration, prog *progress) (*relv1.UploadResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var resp *relv1.UploadResponse
	busyPause := time.Duration(0)
	var err, lastBusy error
	for {
		_, err = r.invoke(ctx, timeout, func(ctx context.Context, cc grpc.ClientConnInterface, opts ...grpc.CallOption) (err error) {
			resp, err = uploadFile(ctx, cc, path, digest, size, prog, opts...)
			return err
		})
		// A server at its --max-concurrent-uploads says so with a delay to
		// retry after; other refusals (a full store) are final.
		delay, busy := retryAfter(err)
		if !busy {
			// The time ran out during an attempt after the server said it
			// was busy: that answer says more than a timeout would.
			var te *timeoutError
			if lastBusy != nil && errors.As(err, &te) {
				err = lastBusy
			}
			break
		}
		lastBusy = err
		busyPause = min(max(2*busyPause, delay), maxBusyPause)
		wait := retry.Jitter(busyPause)
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			break // the server's answer says more than a timeout would
		}
		if !retry.Sleep(ctx, wait) {
			break
		}
	}
	var te *timeoutError
	if errors.As(err, &te) {
		te.flag, te.doing = "--upload-timeout", "upload of "+filepath.Base(path)
	}
	if err != nil {
		return nil, err
	}
	if resp.GetArtifactUrl() == "" {
		return nil, errors.New("the server accepted the upload but returned no artifact URL")
	}
	if got := resp.GetSha256(); got != "" && !strings.EqualFold(got, digest) {
		return nil, fmt.Errorf("the server stored sha256 %s, relctl computed %s", got, digest)
	}
	return resp, nil
}

// maxBusyPause caps the pause between uploads a busy server refused.
const maxBusyPause = 8 * time.Second

// retryAfter reports whether err is a ResourceExhausted refusal that says
// to try again (a RetryInfo detail), and after how long.
func retryAfter(err error) (time.Duration, bool) {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.ResourceExhausted {
		return 0, false
	}
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return max(ri.GetRetryDelay().AsDuration(), 10*time.Millisecond), true
		}
	}
	return 0, false
}

// uploadFile is one Upload call on cc. It reads the file again and checks
// that what it sends still has the digest and size announced in the header;
// if the file changed, it abandons the stream (the server keeps nothing of
// an upload that was not completed) rather than let the server refuse it.
func uploadFile(ctx context.Context, cc grpc.ClientConnInterface, path, digest string, size int64, prog *progress,
	opts ...grpc.CallOption) (*relv1.UploadResponse, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open --artifact %s: %v", path, unwrapPath(err))
	}
	defer f.Close()

	// Returning before CloseAndRecv cancels the stream.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := relv1.NewArtifactServiceClient(cc).Upload(ctx, opts...)
	if err != nil {
		return nil, err
	}
	header := &relv1.UploadHeader{Sha256: digest, Size: size, Name: filepath.Base(path)}
	if err := stream.Send(&relv1.UploadRequest{Kind: &relv1.UploadRequest_Header{Header: header}}); err != nil {
		return nil, streamError(stream, err)
	}

	prog.start("uploading", filepath.Base(path), size)
	defer prog.clear()
	h := sha256.New()
	buf := make([]byte, uploadChunkSize)
	var sent int64
	for {
		n, rerr := io.ReadFull(f, buf)
		if n > 0 {
			sent += int64(n)
			if sent > size {
				break // grew since it was hashed; reported below
			}
			h.Write(buf[:n])
			// Send marshals the message before returning, so buf can be
			// reused for the next chunk.
			if err := stream.Send(&relv1.UploadRequest{Kind: &relv1.UploadRequest_Chunk{Chunk: buf[:n]}}); err != nil {
				return nil, streamError(stream, err)
			}
			prog.add(n)
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			return nil, fmt.Errorf("read --artifact %s: %v", path, unwrapPath(rerr))
		}
	}
	if sent != size || hex.EncodeToString(h.Sum(nil)) != digest {
		return nil, fmt.Errorf("--artifact %s changed while it was being uploaded; the upload was abandoned, run the command again", path)
	}
	return stream.CloseAndRecv()
}

// streamError returns why a client stream failed: Send reports only io.EOF
// when the server has ended the call, and the status is in CloseAndRecv.
func streamError(stream grpc.ClientStreamingClient[relv1.UploadRequest, relv1.UploadResponse], err error) error {
	if !errors.Is(err, io.EOF) {
		return err
	}
	if _, rerr := stream.CloseAndRecv(); rerr != nil {
		return rerr
	}
	return errors.New("the server ended the upload before it was complete")
}

func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// isTerminal reports whether w is a terminal, the condition for drawing
// progress on it.
func isTerminal(w io.Writer) bool {
	f, ok := w.(interface{ Fd() uintptr })
	return ok && term.IsTerminal(int(f.Fd()))
}

// progress draws one self-overwriting status line ("uploading web.tgz:
// 12.0 MiB of 100.0 MiB, 12%"). A nil *progress, or one with a nil writer,
// draws nothing: progress is only shown on a terminal, so that stderr stays
// the single error line scripts expect.
type progress struct {
	w   io.Writer
	now func() time.Time

	verb, name  string
	total, done int64
	drawn       time.Time // when the line was last drawn; zero: not drawn
}

func newProgress(w io.Writer) *progress {
	if w == nil || !isTerminal(w) {
		return nil
	}
	return &progress{w: w, now: time.Now}
}

func (p *progress) start(verb, name string, total int64) {
	if p == nil {
		return
	}
	p.verb, p.name, p.total, p.done = verb, name, total, 0
	p.draw()
}

func (p *progress) add(n int) {
	if p == nil {
		return
	}
	p.done += int64(n)
	if p.done >= p.total || p.now().Sub(p.drawn) >= progressInterval {
		p.draw()
	}
}

func (p *progress) draw() {
	pct := int64(100)
	if p.total > 0 {
		pct = p.done * 100 / p.total
	}
	// \r returns to the start of the line, \x1b[K erases what a longer
	// previous line left behind.
	fmt.Fprintf(p.w, "\r%s %s: %s of %s, %d%%\x1b[K", p.verb, cell(p.name),
		humanBytes(uint64(p.done)), humanBytes(uint64(p.total)), pct)
	p.drawn = p.now()
}

// clear erases the progress line, so that what follows on stderr (an error)
// starts on a clean line.
func (p *progress) clear() {
	if p == nil || p.drawn.IsZero() {
		return
	}
	fmt.Fprint(p.w, "\r\x1b[K")
	p.drawn = time.Time{}
}

// progressReader counts what passes through it into a progress.
type progressReader struct {
	r io.Reader
	p *progress
}

func (pr *progressReader) Read(b []byte) (int, error) {
	n, err := pr.r.Read(b)
	pr.p.add(n)
	return n, err
}
