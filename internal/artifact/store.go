// Package artifact is the cluster's content-addressed blob store: each
// server keeps the artifacts uploaded to the cluster under its data dir,
// named by their sha256, and serves them over HTTP with Range support.
package artifact

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Errors of the store; the server maps them to gRPC codes.
var (
	// ErrDigestMismatch: the bytes do not hash to the announced digest.
	ErrDigestMismatch = errors.New("digest mismatch")
	// ErrTooLarge: the blob exceeds the size limit or the announced size.
	ErrTooLarge = errors.New("artifact too large")
	// ErrSizeMismatch: fewer bytes arrived than announced.
	ErrSizeMismatch = errors.New("size mismatch")
	// ErrNotFound: no blob with that digest here.
	ErrNotFound = errors.New("artifact not found")
	// ErrInvalidDigest: not 64 lower-case hex digits.
	ErrInvalidDigest = errors.New("invalid digest")
	// ErrQuotaExceeded: storing the blob would take the store above its
	// quota.
	ErrQuotaExceeded = errors.New("artifact store quota exceeded")
)

// URLPrefix starts the artifact URL of a blob in the cluster's store.
const URLPrefix = "rel://sha256/"

var digestRE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// DigestFromURL returns the digest of a rel://sha256/<hex> URL.
func DigestFromURL(u string) (string, bool) {
	if !strings.HasPrefix(u, URLPrefix) {
		return "", false
	}
	d := strings.TrimPrefix(u, URLPrefix)
	return d, digestRE.MatchString(d)
}

// URL is the artifact URL of a stored blob.
func URL(digest string) string { return URLPrefix + digest }

// HTTPPath is where every server serves a blob.
func HTTPPath(digest string) string { return "/v1/artifacts/sha256/" + digest }

// Store keeps blobs in dir/sha256/<hex>; partial writes live in dir/tmp and
// are renamed into place only once verified, so a blob that exists is whole.
type Store struct {
	dir     string
	maxSize int64
	// quota bounds the bytes of stored blobs (0: no bound).
	quota int64

	// mu orders renames into place and removals, and guards the counts.
	mu sync.Mutex
	// used is the bytes of the blobs in sha256/; reserved, the bytes
	// announced by writes in progress, so that concurrent uploads cannot
	// together pass the quota.
	used, reserved int64
}

// Open creates the store's directories, removes partial uploads left by a
// crash and counts the bytes stored. quota bounds them (0: no bound).
func Open(dir string, maxSize, quota int64) (*Store, error) {
	for _, d := range []string{filepath.Join(dir, "sha256"), filepath.Join(dir, "tmp")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("artifact store: %w", err)
		}
	}
	tmps, _ := filepath.Glob(filepath.Join(dir, "tmp", "*"))
	for _, t := range tmps {
		os.Remove(t)
	}
	s := &Store{dir: dir, maxSize: maxSize, quota: quota}
	blobs, err := s.List()
	if err != nil {
		return nil, err
	}
	for _, b := range blobs {
		s.used += b.Size
	}
	return s, nil
}

// Blob is a stored blob as List reports it.
type Blob struct {
	Digest string
	Size   int64
	// ModTime is when this server stored (or last received again) the
	// blob: an upload, a fetch from a peer, or the same bytes uploaded
	// again all renew it, so the GC grace counts from the latest.
	ModTime time.Time
}

// List returns the stored blobs; files that are not blobs are ignored.
func (s *Store) List() ([]Blob, error) {
	ents, err := os.ReadDir(filepath.Join(s.dir, "sha256"))
	if err != nil {
		return nil, fmt.Errorf("artifact store: %w", err)
	}
	var out []Blob
	for _, e := range ents {
		if !digestRE.MatchString(e.Name()) || !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		out = append(out, Blob{Digest: e.Name(), Size: fi.Size(), ModTime: fi.ModTime()})
	}
	return out, nil
}

// Used is the bytes of the blobs stored.
func (s *Store) Used() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.used
}

// Quota is the store's bound in bytes (0: none).
func (s *Store) Quota() int64 { return s.quota }

// Remove deletes a blob if keep, asked under the store's lock (so no write
// of the same digest lands between the question and the removal), says it
// may go. It returns the bytes freed (0 if the blob was not there or kept).
func (s *Store) Remove(digest string, keep func() bool) (int64, error) {
	if !digestRE.MatchString(digest) {
		return 0, fmt.Errorf("%w: %q", ErrInvalidDigest, digest)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	fi, err := os.Stat(s.path(digest))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("artifact store: %w", err)
	}
	if keep != nil && keep() {
		return 0, nil
	}
	if err := os.Remove(s.path(digest)); err != nil {
		return 0, fmt.Errorf("artifact store: %w", err)
	}
	s.used -= fi.Size()
	syncDir(filepath.Join(s.dir, "sha256"))
	return fi.Size(), nil
}

// reserve books n bytes for a write in progress, refusing when the store
// would pass its quota, and returns what it booked. A blob that is stored
// already takes no room.
func (s *Store) reserve(digest string, n int64) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.quota <= 0 || n <= 0 {
		return 0, nil
	}
	if _, err := os.Stat(s.path(digest)); err == nil {
		return 0, nil
	}
	if s.used+s.reserved+n > s.quota {
		return 0, s.quotaError(n)
	}
	s.reserved += n
	return n, nil
}

func (s *Store) quotaError(n int64) error {
	return fmt.Errorf("%w: %s more would take this server's store past its quota of %s (%s stored, %s being uploaded): "+
		"delete releases you no longer need (their artifacts are removed once unreferenced for --artifact-grace) or raise rel-server --artifact-quota",
		ErrQuotaExceeded, FormatSize(n), FormatSize(s.quota), FormatSize(s.used), FormatSize(s.reserved))
}

// MaxSize is the largest blob the store accepts.
func (s *Store) MaxSize() int64 { return s.maxSize }

func (s *Store) path(digest string) string { return filepath.Join(s.dir, "sha256", digest) }

// Has reports whether the blob is stored, with its size.
func (s *Store) Has(digest string) (int64, bool) {
	if !digestRE.MatchString(digest) {
		return 0, false
	}
	fi, err := os.Stat(s.path(digest))
	if err != nil {
		return 0, false
	}
	return fi.Size(), true
}

// Open opens a stored blob for reading.
func (s *Store) Open(digest string) (*os.File, error) {
	if !digestRE.MatchString(digest) {
		return nil, ErrInvalidDigest
	}
	f, err := os.Open(s.path(digest))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNotFound
	}
	return f, err
}

// Put stores r's bytes if they hash to digest and are exactly size bytes
// (size < 0: unknown) within the store's limit. On any error nothing is left
// behind. Storing a blob that exists already verifies the bytes and renews
// the blob's mtime.
func (s *Store) Put(r io.Reader, digest string, size int64) (int64, error) {
	if !digestRE.MatchString(digest) {
		return 0, fmt.Errorf("%w: %q is not 64 lower-case hex digits", ErrInvalidDigest, digest)
	}
	if size > s.maxSize {
		return 0, fmt.Errorf("%w: %d bytes announced, the limit is %d (rel-server --max-artifact-bytes)", ErrTooLarge, size, s.maxSize)
	}
	reserved, err := s.reserve(digest, size)
	if err != nil {
		return 0, err
	}
	defer func() {
		if reserved > 0 {
			s.mu.Lock()
			s.reserved -= reserved
			s.mu.Unlock()
		}
	}()
	tmp, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), digest[:12]+"-*")
	if err != nil {
		return 0, fmt.Errorf("artifact store: %w", err)
	}
	keep := false
	defer func() {
		if !keep {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	limit := s.maxSize
	if size >= 0 {
		limit = size
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(r, limit+1))
	if err != nil {
		return n, fmt.Errorf("artifact store: receive: %w", err)
	}
	if n > limit {
		if size >= 0 {
			return n, fmt.Errorf("%w: more than the %d bytes announced", ErrTooLarge, size)
		}
		return n, fmt.Errorf("%w: more than %d bytes (rel-server --max-artifact-bytes)", ErrTooLarge, s.maxSize)
	}
	if size >= 0 && n != size {
		return n, fmt.Errorf("%w: %d bytes received, %d announced", ErrSizeMismatch, n, size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != digest {
		return n, fmt.Errorf("%w: the bytes hash to %s, not %s", ErrDigestMismatch, got, digest)
	}
	if err := tmp.Sync(); err != nil {
		return n, fmt.Errorf("artifact store: sync: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return n, fmt.Errorf("artifact store: close: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, statErr := os.Stat(s.path(digest))
	existed := statErr == nil
	if !existed && size < 0 && s.quota > 0 && s.used+s.reserved+n > s.quota {
		return n, s.quotaError(n)
	}
	// Renaming over a blob that exists (the same bytes) renews its mtime,
	// which the GC's grace counts from.
	if err := os.Rename(tmp.Name(), s.path(digest)); err != nil {
		return n, fmt.Errorf("artifact store: %w", err)
	}
	keep = true
	if !existed {
		s.used += n
	}
	syncDir(filepath.Join(s.dir, "sha256"))
	return n, nil
}

// FormatSize writes a byte count the way people read it (1.5 GiB).
func FormatSize(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// ParseSize reads a byte count as people write it: 1048576, 500MB, 50GiB,
// 2T (k/K, M, G, T with an optional B: powers of 1000 without i, of 1024
// with it, and a bare letter means 1024s, as most tools read "50G").
func ParseSize(v string) (int64, error) {
	t := strings.TrimSpace(v)
	i := len(t)
	for i > 0 && (t[i-1] < '0' || t[i-1] > '9') && t[i-1] != '.' {
		i--
	}
	num, unit := strings.TrimSpace(t[:i]), strings.ToLower(strings.TrimSpace(t[i:]))
	mult := map[string]float64{"": 1, "b": 1,
		"k": 1 << 10, "kib": 1 << 10, "kb": 1e3,
		"m": 1 << 20, "mib": 1 << 20, "mb": 1e6,
		"g": 1 << 30, "gib": 1 << 30, "gb": 1e9,
		"t": 1 << 40, "tib": 1 << 40, "tb": 1e12,
	}[unit]
	f, err := strconv.ParseFloat(num, 64)
	if mult == 0 || err != nil || f < 0 {
		return 0, fmt.Errorf("size %q: give bytes, or a number with a unit such as 500MB, 50GiB or 2T", v)
	}
	if f*mult > float64(1<<62) {
		return 0, fmt.Errorf("size %q is too large", v)
	}
	return int64(f * mult), nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// ServeHTTP serves GET /v1/artifacts/sha256/{digest} with Range support.
// fetchMissing, when set, is asked to bring a blob this server lacks from
// its peers before answering 404.
func (s *Store) Handler(fetchMissing func(ctx context.Context, digest string) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		digest := r.PathValue("digest")
		if !digestRE.MatchString(digest) {
			http.Error(w, "artifact digest must be 64 lower-case hex digits", http.StatusBadRequest)
			return
		}
		f, err := s.Open(digest)
		if errors.Is(err, ErrNotFound) && fetchMissing != nil && r.Header.Get("X-Rel-No-Fetch") == "" {
			if ferr := fetchMissing(r.Context(), digest); ferr == nil {
				f, err = s.Open(digest)
			}
		}
		if errors.Is(err, ErrNotFound) {
			http.Error(w, "artifact not found", http.StatusNotFound)
			return
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("ETag", `"sha256:`+digest+`"`)
		w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
		http.ServeContent(w, r, "", fi.ModTime(), f)
	})
}

// Fetch downloads a blob from the first source that has it (HTTP base URLs
// of peers, e.g. http://10.0.0.1:7480) into the store, verifying it.
func (s *Store) Fetch(ctx context.Context, client *http.Client, digest string, size int64, sources []string) error {
	if _, ok := s.Has(digest); ok {
		return nil
	}
	var errs []error
	for attempt := 0; attempt < 3; attempt++ {
		for _, src := range sources {
			err := s.fetchOne(ctx, client, strings.TrimRight(src, "/")+HTTPPath(digest), digest, size)
			if err == nil {
				return nil
			}
			if errors.Is(err, ErrDigestMismatch) || errors.Is(err, ErrTooLarge) {
				return err
			}
			errs = append(errs, fmt.Errorf("%s: %w", src, err))
		}
		if ctx.Err() != nil {
			break
		}
		t := time.NewTimer(time.Duration(50+rand.IntN(100)) * time.Millisecond << attempt)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
	}
	return fmt.Errorf("fetch artifact %s: %w", digest, errors.Join(errs...))
}

func (s *Store) fetchOne(ctx context.Context, client *http.Client, url, digest string, size int64) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	// A peer that lacks the blob too must not go fetching it from us.
	req.Header.Set("X-Rel-No-Fetch", "1")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%w: HTTP %s", ErrNotFound, resp.Status)
	}
	if size <= 0 {
		size = resp.ContentLength
	}
	_, err = s.Put(resp.Body, digest, size)
	return err
}
