package install

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Download tuning. Rounds go over every source in order; a round that
// moved no byte counts against maxIdleRounds, so a flaky server that keeps
// cutting the connection still finishes while it makes progress.
const (
	defaultMaxIdleRounds = 4
	defaultBackoff       = 200 * time.Millisecond
	maxBackoff           = 5 * time.Second
	defaultStallTimeout  = 60 * time.Second // no byte for this long: the connection is dead
)

// fetchOutcome classifies a failed attempt at one source.
type fetchOutcome int

const (
	outcomeRetry fetchOutcome = iota // transient: try again later (next source first)
	outcomeDead                      // this source will not serve it (4xx, no such file): skip it from now on
	outcomeFatal                     // the bytes are wrong or too big: stop
)

type attemptError struct {
	outcome  fetchOutcome
	progress bool // bytes were added to the .part file
	err      error
}

func (e *attemptError) Error() string { return e.err.Error() }
func (e *attemptError) Unwrap() error { return e.err }

// fetch downloads d's artifact into DataDir/downloads, verifying its sha256
// while streaming, and returns the verified file open at offset 0. Sources
// are the cluster's store first (StoreURLs, with the store client), then
// the external URLs, which the fetch policy filters: a scheme it refuses
// fails that source at once, and an address it refuses fails the
// connection before it is made. Bytes go to <sha256>.part first; a .part
// left by an earlier attempt (or an agent killed mid-download) is resumed
// with a Range request after hashing what it holds. Only a file whose digest matched is renamed to <sha256>, so
// nothing unverified is ever handed to extraction.
func (h *Host) fetch(ctx context.Context, d Desired) (*os.File, error) {
	unlock, err := h.downloads.lock(ctx, d.SHA256)
	if err != nil {
		return nil, err
	}
	defer unlock()

	dir := filepath.Join(h.cfg.DataDir, "downloads")
	verified := filepath.Join(dir, d.SHA256)
	part := verified + ".part"
	if f, err := openVerified(verified, d.SHA256); err == nil {
		return f, nil
	}
	// A failed fetch keeps a .part with bytes in it to resume, but not an
	// empty one: a refused or unreachable source writes nothing.
	defer func() {
		if fi, err := os.Stat(part); err == nil && fi.Size() == 0 {
			os.Remove(part)
		}
	}()

	limit := h.cfg.MaxArtifactBytes
	if d.Size > 0 {
		if d.Size > limit {
			return nil, fmt.Errorf("artifact is %d bytes: over the limit of %d", d.Size, limit)
		}
		limit = d.Size
	}

	type source struct {
		raw    string
		u      *url.URL
		client *http.Client
		dead   bool
		err    error
	}
	sources := make([]*source, 0, len(d.StoreURLs)+len(d.URLs))
	for _, raw := range d.StoreURLs {
		u, err := url.Parse(raw)
		if err != nil {
			return nil, fmt.Errorf("source %q: %w", raw, err)
		}
		sources = append(sources, &source{raw: raw, u: u, client: h.storeClient})
	}
	for _, raw := range d.URLs {
		u, err := url.Parse(raw)
		if err != nil {
			return nil, fmt.Errorf("source %q: %w", raw, err)
		}
		src := &source{raw: raw, u: u, client: h.client}
		if u.Scheme == "rel" {
			src.dead, src.err = true, errors.New("rel:// URLs are resolved into the store's URLs by the server, and this one was not")
		} else if err := h.policy.checkScheme(u.Scheme); err != nil {
			src.dead, src.err = true, err
		}
		sources = append(sources, src)
	}

	idle, restarted := 0, false
	backoff := h.backoff
	for {
		progress := false
		alive := 0
		for _, src := range sources {
			if src.dead {
				continue
			}
			var aerr *attemptError
			switch src.u.Scheme {
			case "file":
				aerr = h.copyFile(src.u, src.raw, part, d.SHA256, limit)
			case "http", "https":
				aerr = h.download(ctx, src.client, src.raw, part, d.SHA256, limit)
			default:
				aerr = &attemptError{outcome: outcomeDead, err: fmt.Errorf("unsupported scheme %q", src.u.Scheme)}
			}
			if aerr == nil {
				if err := os.Rename(part, verified); err != nil {
					return nil, err
				}
				if err := syncDir(dir); err != nil {
					return nil, err
				}
				// Its digest was checked while this process wrote it, in
				// a directory only the agent may write: hashing it again
				// would read the whole artifact once more for nothing.
				return os.Open(verified)
			}
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			h.cfg.Logger.Warn("download attempt failed", "app", d.App, "version", d.Version, "url", src.raw, "err", aerr.err)
			src.err = aerr.err
			progress = progress || aerr.progress
			switch aerr.outcome {
			case outcomeFatal:
				var mm *mismatchError
				if errors.As(aerr.err, &mm) && mm.resumed && !restarted {
					// The first part may have come from a server that has
					// since changed the file: one fresh start before
					// calling the artifact wrong.
					restarted = true
					progress = true
					alive++
					continue
				}
				return nil, aerr.err
			case outcomeDead:
				src.dead = true
			default:
				alive++
			}
		}
		if alive == 0 {
			return nil, sourcesError(sources, func(s *source) (string, error) { return s.raw, s.err })
		}
		if progress {
			idle = 0
			backoff = h.backoff
		} else if idle++; idle >= h.maxIdleRounds {
			return nil, sourcesError(sources, func(s *source) (string, error) { return s.raw, s.err })
		}
		// Jitter: agents that failed together must not come back together.
		wait := backoff/2 + rand.N(backoff/2+1)
		backoff = min(backoff*2, maxBackoff)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

func sourcesError[S any](sources []S, f func(S) (string, error)) error {
	var parts []string
	for _, s := range sources {
		raw, err := f(s)
		if err != nil {
			parts = append(parts, fmt.Sprintf("source %q: %v", raw, err))
		}
	}
	return fmt.Errorf("download failed: %s", strings.Join(parts, "; "))
}

// mismatchError is a complete download whose digest is not the one asked
// for. It names the digest wanted and the source, never the digest of
// what came: reports are shown to the cluster's users, and the digest of a
// file the agent was pointed at (file:///etc/shadow) tells which of a few
// guesses it holds, and is all it takes to create a release that installs
// it.
type mismatchError struct {
	source, want string
	resumed      bool
}

func (e *mismatchError) Error() string {
	return fmt.Sprintf("digest mismatch: the artifact from %s does not have the expected sha256 %s", e.source, e.want)
}

// openVerified opens a file only if its digest is want.
func openVerified(p, want string) (*os.File, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		f.Close()
		return nil, err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		f.Close()
		os.Remove(p)
		return nil, &mismatchError{source: p, want: want}
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// openPart opens the .part file and hashes what it holds, leaving the
// offset at its end.
func openPart(part string, limit int64) (*os.File, hash.Hash, int64, error) {
	f, err := os.OpenFile(part, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, 0, err
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		f.Close()
		return nil, nil, 0, err
	}
	if n > limit {
		if err := restart(f, h); err != nil {
			f.Close()
			return nil, nil, 0, err
		}
		n = 0
	}
	return f, h, n, nil
}

// restart empties the .part file and the running hash.
func restart(f *os.File, h hash.Hash) error {
	h.Reset()
	if err := f.Truncate(0); err != nil {
		return err
	}
	_, err := f.Seek(0, io.SeekStart)
	return err
}

// download makes one HTTP attempt, resuming the .part file when it holds
// bytes. It returns nil when the file is complete and verified.
func (h *Host) download(ctx context.Context, client *http.Client, rawURL, part, want string, limit int64) *attemptError {
	f, hasher, have, err := openPart(part, limit)
	if err != nil {
		return &attemptError{outcome: outcomeFatal, err: err}
	}
	defer f.Close()
	resumed := have > 0

	if have > 0 && hex.EncodeToString(hasher.Sum(nil)) == want {
		return nil // complete already: killed between the last byte and the rename
	}

	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodGet, rawURL, nil)
	if err != nil {
		return &attemptError{outcome: outcomeDead, err: err}
	}
	// identity: Go's transport would otherwise ask for gzip and inflate the
	// body, and the digest is of the bytes as served.
	req.Header.Set("Accept-Encoding", "identity")
	if have > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(have, 10)+"-")
	}
	resp, err := client.Do(req)
	if err != nil {
		var pe *policyError
		if errors.As(err, &pe) {
			// Refused by the policy (an address, a redirect): asking again
			// gets the same answer.
			return &attemptError{outcome: outcomeDead, err: pe}
		}
		return &attemptError{outcome: outcomeRetry, err: unwrapURL(err)}
	}
	defer resp.Body.Close()
	// Draining a short error body lets the connection be reused.
	defer func() { _, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10)) }()

	switch {
	case resp.StatusCode == http.StatusPartialContent && have > 0:
		start, ok := contentRangeStart(resp.Header.Get("Content-Range"))
		if !ok || start != have {
			// Not the range asked for: start over on the next attempt.
			if err := restart(f, hasher); err != nil {
				return &attemptError{outcome: outcomeFatal, err: err}
			}
			return &attemptError{outcome: outcomeRetry, err: fmt.Errorf("asked for bytes %d-, got Content-Range %q", have, resp.Header.Get("Content-Range"))}
		}
	case resp.StatusCode == http.StatusOK:
		if have > 0 {
			// The server ignored the Range header: the body is the whole
			// file.
			h.cfg.Logger.Info("server ignored Range, starting over", "url", rawURL, "had", have)
			if err := restart(f, hasher); err != nil {
				return &attemptError{outcome: outcomeFatal, err: err}
			}
			have, resumed = 0, false
		}
		if resp.ContentLength > limit {
			os.Remove(part)
			return &attemptError{outcome: outcomeFatal, err: fmt.Errorf("artifact is %d bytes: over the limit of %d", resp.ContentLength, limit)}
		}
	case resp.StatusCode == http.StatusRequestedRangeNotSatisfiable && have > 0:
		// The .part may already hold every byte (an agent killed between
		// the last byte and the rename).
		if hex.EncodeToString(hasher.Sum(nil)) == want {
			return nil
		}
		if err := restart(f, hasher); err != nil {
			return &attemptError{outcome: outcomeFatal, err: err}
		}
		return &attemptError{outcome: outcomeRetry, err: fmt.Errorf("HTTP %s for bytes %d-", resp.Status, have)}
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusRequestTimeout:
		return &attemptError{outcome: outcomeRetry, err: fmt.Errorf("HTTP %s", resp.Status)}
	default:
		return &attemptError{outcome: outcomeDead, err: fmt.Errorf("HTTP %s", resp.Status)}
	}

	// A connection that stops sending is as dead as one that was cut.
	stall := time.AfterFunc(h.stallTimeout, cancel)
	defer stall.Stop()
	body := &stallReader{r: resp.Body, timer: stall, d: h.stallTimeout}

	n, err := io.Copy(io.MultiWriter(f, hasher), io.LimitReader(body, limit-have+1))
	if have+n > limit {
		os.Remove(part)
		return &attemptError{outcome: outcomeFatal, err: fmt.Errorf("artifact is over %d bytes", limit)}
	}
	if err != nil {
		if stalled := actx.Err() != nil && ctx.Err() == nil; stalled {
			err = fmt.Errorf("no data for %s: %w", h.stallTimeout, err)
		}
		return &attemptError{outcome: outcomeRetry, progress: n > 0, err: fmt.Errorf("after %d bytes: %w", have+n, err)}
	}
	return finish(f, hasher, rawURL, part, want, resumed, n > 0)
}

// finish checks the digest of a complete .part file.
func finish(f *os.File, hasher hash.Hash, source, part, want string, resumed, progress bool) *attemptError {
	if got := hex.EncodeToString(hasher.Sum(nil)); got != want {
		os.Remove(part)
		return &attemptError{outcome: outcomeFatal, progress: progress, err: &mismatchError{source: source, want: want, resumed: resumed}}
	}
	// No fsync: the download is unpacked straight away and then deleted.
	// After a crash a torn .part is caught by the digest, and a resumed
	// download that does not verify is fetched again from scratch.
	return nil
}

// copyFile takes the artifact from a local path (file://), from scratch.
func (h *Host) copyFile(u *url.URL, raw, part, want string, limit int64) *attemptError {
	if u.Host != "" && u.Host != "localhost" {
		return &attemptError{outcome: outcomeDead, err: fmt.Errorf("file URL names host %q", u.Host)}
	}
	src, err := os.Open(u.Path)
	if err != nil {
		out := outcomeRetry
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) {
			out = outcomeDead
		}
		return &attemptError{outcome: out, err: err}
	}
	defer src.Close()
	f, hasher, _, err := openPart(part, 0)
	if err != nil {
		return &attemptError{outcome: outcomeFatal, err: err}
	}
	defer f.Close()
	if err := restart(f, hasher); err != nil {
		return &attemptError{outcome: outcomeFatal, err: err}
	}
	n, err := io.Copy(io.MultiWriter(f, hasher), io.LimitReader(src, limit+1))
	if n > limit {
		os.Remove(part)
		return &attemptError{outcome: outcomeFatal, err: fmt.Errorf("artifact is over %d bytes", limit)}
	}
	if err != nil {
		return &attemptError{outcome: outcomeRetry, err: err}
	}
	return finish(f, hasher, raw, part, want, false, n > 0)
}

// stallReader re-arms a timer at every read: the timer cancels the request
// when the server goes quiet.
type stallReader struct {
	r     io.Reader
	timer *time.Timer
	d     time.Duration
}

func (s *stallReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if n > 0 {
		s.timer.Reset(s.d)
	}
	return n, err
}

// contentRangeStart parses the first byte of "bytes START-END/TOTAL".
func contentRangeStart(v string) (int64, bool) {
	rest, ok := strings.CutPrefix(v, "bytes ")
	if !ok {
		return 0, false
	}
	first, _, ok := strings.Cut(rest, "-")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(first), 10, 64)
	return n, err == nil
}

func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// plainName is the file name a non-archive artifact is installed under:
// the base name of the first URL that has one.
func plainName(urls []string) string {
	for _, raw := range urls {
		u, err := url.Parse(raw)
		if err != nil {
			continue
		}
		if b := path.Base(u.Path); b != "" && b != "/" && b != "." {
			return b
		}
	}
	return "artifact"
}
