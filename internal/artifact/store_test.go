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
	st, err := Open(t.TempDir(), 1000)
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
	if _, err := Open(dir, 10); err != nil {
		t.Fatal(err)
	}
	if tmps, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(tmps) != 0 {
		t.Fatalf("%d partial uploads left after Open", len(tmps))
	}
}

func TestHandlerRangeAndFetch(t *testing.T) {
	src, _ := Open(t.TempDir(), 1<<20)
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
	dst, _ := Open(t.TempDir(), 1<<20)
	if err := dst.Fetch(context.Background(), http.DefaultClient, d, int64(len(data)), []string{"http://127.0.0.1:1", srv.URL}); err != nil {
		t.Fatalf("fetch: %v", err)
	}
	if _, ok := dst.Has(d); !ok {
		t.Fatal("fetched blob missing")
	}
	// A peer that serves other bytes under the digest is refused.
	liar := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("other bytes")) }))
	defer liar.Close()
	other, _ := Open(t.TempDir(), 1<<20)
	if err := other.Fetch(context.Background(), http.DefaultClient, d, 0, []string{liar.URL}); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("fetch from a lying peer: %v", err)
	}
	http.DefaultClient.CloseIdleConnections()
}
