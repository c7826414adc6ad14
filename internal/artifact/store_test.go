package artifact

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestPut(t *testing.T) {
	st, err := Open(t.TempDir(), 1000, 0)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("rel"), 100)
	good := digestOf(data)
	tests := []struct {
		name   string
		digest string
		size   int64
		body   []byte
		err    error
	}{
		{"good", good, int64(len(data)), data, nil},
		{"again", good, int64(len(data)), data, nil},
		{"unknown size", good, -1, data, nil},
		{"digest mismatch", digestOf([]byte("x")), int64(len(data)), data, ErrDigestMismatch},
		{"short", good, int64(len(data)) + 5, data, ErrSizeMismatch},
		{"longer than announced", good, 10, data, ErrTooLarge},
		{"over the limit", digestOf(make([]byte, 1001)), -1, make([]byte, 1001), ErrTooLarge},
		{"announced over the limit", good, 5000, data, ErrTooLarge},
		{"bad digest", "ABC", 3, []byte("abc"), ErrInvalidDigest},
	}
	for _, tt := range tests {
		_, err := st.Put(bytes.NewReader(tt.body), tt.digest, tt.size)
		if tt.err == nil && err != nil || tt.err != nil && !errors.Is(err, tt.err) {
			t.Errorf("%s: err %v, want %v", tt.name, err, tt.err)
		}
	}
	if n, ok := st.Has(good); !ok || n != int64(len(data)) {
		t.Fatalf("Has(good) = %d, %v", n, ok)
	}
	entries, _ := os.ReadDir(filepath.Join(st.dir, "sha256"))
	tmps, _ := os.ReadDir(filepath.Join(st.dir, "tmp"))
	if len(entries) != 1 || len(tmps) != 0 {
		t.Fatalf("store holds %d blobs and %d partial files, want 1 and 0", len(entries), len(tmps))
	}
	if d, ok := DigestFromURL(URL(good)); !ok || d != good {
		t.Fatalf("URL round trip: %s %v", d, ok)
	}
	if _, ok := DigestFromURL("https://x/y"); ok {
		t.Fatal("https URL parsed as a store URL")
	}
}

func TestOpenRemovesPartialUploads(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "tmp"), 0o700)
	os.WriteFile(filepath.Join(dir, "tmp", "abc-123"), []byte("partial"), 0o600)
	if _, err := Open(dir, 10, 0); err != nil {
		t.Fatal(err)
	}
	if tmps, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(tmps) != 0 {
		t.Fatalf("%d partial uploads left after Open", len(tmps))
	}
}

func TestHandlerRangeAndFetch(t *testing.T) {
	src, _ := Open(t.TempDir(), 1<<20, 0)
	data := []byte(strings.Repeat("0123456789", 1000))
	d := digestOf(data)
	if _, err := src.Put(bytes.NewReader(data), d, int64(len(data))); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /v1/artifacts/sha256/{digest}", src.Handler(nil))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	req, _ := http.NewRequest("GET", srv.URL+HTTPPath(d), nil)
	req.Header.Set("Range", "bytes=9990-")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent || string(body) != "0123456789" {
		t.Fatalf("range: %d %q", resp.StatusCode, body)
	}
	for path, want := range map[string]int{HTTPPath(digestOf([]byte("nope"))): 404, "/v1/artifacts/sha256/xyz": 400} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, want)
		}
	}

	// A second store fetches it from the first, verifying it.
	dst, _ := Open(t.TempDir(), 1<<20, 0)
	if err := dst.Fetch(context.Background(), http.DefaultClient, d, int64(len(data)), []string{"http://127.0.0.1:1", srv.URL}); err != nil {
		t.Fatalf("fetch: %v", err)
	}
	if _, ok := dst.Has(d); !ok {
		t.Fatal("fetched blob missing")
	}
	// A peer that serves other bytes under the digest is refused.
	liar := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("other bytes")) }))
	defer liar.Close()
	other, _ := Open(t.TempDir(), 1<<20, 0)
	if err := other.Fetch(context.Background(), http.DefaultClient, d, 0, []string{liar.URL}); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("fetch from a lying peer: %v", err)
	}
	http.DefaultClient.CloseIdleConnections()
}

// TestQuota: a write that would pass the quota is refused before anything
// is written, writes in progress count against it, the same bytes again
// take no room, and removals give room back.
func TestQuota(t *testing.T) {
	dir := t.TempDir()
	st, err := Open(dir, 1000, 250)
	if err != nil {
		t.Fatal(err)
	}
	a := bytes.Repeat([]byte("a"), 200)
	b := bytes.Repeat([]byte("b"), 100)
	if _, err := st.Put(bytes.NewReader(a), digestOf(a), 200); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		body    []byte
		size    int64
		wantErr error
	}{
		{"announced size past the quota", b, 100, ErrQuotaExceeded},
		{"unknown size past the quota", b, -1, ErrQuotaExceeded},
		{"the same bytes again take no room", a, 200, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := st.Put(bytes.NewReader(tt.body), digestOf(tt.body), tt.size)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Put: %v, want %v", err, tt.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), "--artifact-quota") {
				t.Errorf("error %q does not say what to do", err)
			}
			if tmps, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(tmps) != 0 {
				t.Errorf("%d files left in tmp", len(tmps))
			}
			if _, ok := st.Has(digestOf(b)); ok {
				t.Error("refused blob stored")
			}
			if st.Used() != 200 {
				t.Errorf("used %d, want 200", st.Used())
			}
		})
	}
	// A write in progress holds its room: a second one that would not fit
	// beside it is refused at once.
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	c := bytes.Repeat([]byte("c"), 40)
	go func() {
		_, err := st.Put(pr, digestOf(c), 40)
		done <- err
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		st.mu.Lock()
		r := st.reserved
		st.mu.Unlock()
		if r == 40 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the write in progress reserved nothing")
		}
		time.Sleep(time.Millisecond)
	}
	d := bytes.Repeat([]byte("d"), 20)
	if _, err := st.Put(bytes.NewReader(d), digestOf(d), 20); !errors.Is(err, ErrQuotaExceeded) {
		t.Fatalf("Put beside a reservation: %v", err)
	}
	pw.Write(c)
	pw.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st.Used() != 240 {
		t.Fatalf("used %d, want 240", st.Used())
	}

	// Removing gives the room back; a kept blob stays.
	if n, err := st.Remove(digestOf(a), func() bool { return true }); err != nil || n != 0 {
		t.Fatalf("Remove kept: %d %v", n, err)
	}
	if n, err := st.Remove(digestOf(a), nil); err != nil || n != 200 {
		t.Fatalf("Remove: %d %v", n, err)
	}
	if _, ok := st.Has(digestOf(a)); ok || st.Used() != 40 {
		t.Fatalf("after Remove: used %d", st.Used())
	}
	if n, err := st.Remove(digestOf(a), nil); err != nil || n != 0 {
		t.Fatalf("Remove of a missing blob: %d %v", n, err)
	}
	// Stored again after removal: it works and counts.
	if _, err := st.Put(bytes.NewReader(a), digestOf(a), 200); err != nil || st.Used() != 240 {
		t.Fatalf("Put after Remove: %v, used %d", err, st.Used())
	}
	// A reopened store counts what is on disk.
	again, err := Open(dir, 1000, 250)
	if err != nil || again.Used() != 240 {
		t.Fatalf("reopened: used %d %v", again.Used(), err)
	}
}

// TestPutRenewsModTime: the same bytes stored again renew the blob's mtime,
// from which the GC's grace counts.
func TestPutRenewsModTime(t *testing.T) {
	st, _ := Open(t.TempDir(), 1000, 0)
	a := []byte("artifact")
	if _, err := st.Put(bytes.NewReader(a), digestOf(a), int64(len(a))); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-48 * time.Hour)
	os.Chtimes(st.path(digestOf(a)), old, old)
	if _, err := st.Put(bytes.NewReader(a), digestOf(a), int64(len(a))); err != nil {
		t.Fatal(err)
	}
	blobs, err := st.List()
	if err != nil || len(blobs) != 1 || time.Since(blobs[0].ModTime) > time.Hour {
		t.Fatalf("List after a second Put: %+v %v", blobs, err)
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		bad  bool
	}{
		{in: "0", want: 0},
		{in: "1048576", want: 1 << 20},
		{in: "50GiB", want: 50 << 30},
		{in: "50G", want: 50 << 30},
		{in: "500MB", want: 500e6},
		{in: "1.5 KiB", want: 1536},
		{in: "2t", want: 2 << 40},
		{in: "10 parsecs", bad: true},
		{in: "-1", bad: true},
		{in: "GiB", bad: true},
		{in: "", bad: true},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if tt.bad != (err != nil) || (!tt.bad && got != tt.want) {
			t.Errorf("ParseSize(%q) = %d, %v; want %d (bad %v)", tt.in, got, err, tt.want, tt.bad)
		}
	}
}
