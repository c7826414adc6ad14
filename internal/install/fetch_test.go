package install

import (
	"bytes"
	"crypto/rand"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// bigBundle is a release large enough to cut in the middle, incompressible
// so the cut falls inside real data.
func bigBundle(t *testing.T, e *testEnv, version string) []byte {
	noise := make([]byte, 256<<10)
	rand.Read(noise)
	return bundle(t, version, relYAML(e.hooks, version), file("./blob", string(noise)))
}

// TestResumeAfterCut: the server promises the whole file, sends half and
// hangs up. The next attempt asks for the rest with Range, gets 206 and the
// digest of the joined file is right.
func TestResumeAfterCut(t *testing.T) {
	e := newTestEnv(t)
	data := bigBundle(t, e, "1.0.0")
	d := e.publish("web", "1.0.0", data)
	half := int64(len(data) / 2)
	e.srv.mu.Lock()
	e.srv.cutOnce["/web-1.0.0.tar.gz"] = half
	e.srv.mu.Unlock()

	if err := e.apply(d); err != nil {
		t.Fatal(err)
	}
	reqs := e.srv.requestsFor("web-1.0.0.tar.gz")
	if len(reqs) != 2 || reqs[0].rangeHeader != "" || reqs[1].rangeHeader != "bytes="+strconv.FormatInt(half, 10)+"-" {
		t.Fatalf("requests %+v, want a full one then Range: bytes=%d-", reqs, half)
	}
	if got := readFile(t, filepath.Join(e.lay("web").releaseDir("1.0.0"), ".rel", "sha256")); strings.TrimSpace(got) != sha(data) {
		t.Errorf("marker %q", got)
	}
	if got := readFile(t, filepath.Join(e.lay("web").releaseDir("1.0.0"), "blob")); len(got) != 256<<10 {
		t.Errorf("blob is %d bytes", len(got))
	}
}

// TestResumeServerIgnoresRange: a server that answers 200 to a Range
// request sends the whole file, which replaces the partial one.
func TestResumeServerIgnoresRange(t *testing.T) {
	e := newTestEnv(t)
	data := bigBundle(t, e, "1.0.0")
	d := e.publish("web", "1.0.0", data)
	e.srv.mu.Lock()
	e.srv.cutOnce["/web-1.0.0.tar.gz"] = int64(len(data) / 3)
	e.srv.ignoreRange["/web-1.0.0.tar.gz"] = true
	e.srv.mu.Unlock()
	if err := e.apply(d); err != nil {
		t.Fatal(err)
	}
	if reqs := e.srv.requestsFor("web-1.0.0.tar.gz"); len(reqs) != 2 || reqs[1].rangeHeader == "" {
		t.Fatalf("requests %+v", reqs)
	}
}

// TestPartLeftByEarlierRun: a .part from before (an agent killed
// mid-download) is hashed and continued.
func TestPartLeftByEarlierRun(t *testing.T) {
	e := newTestEnv(t)
	data := bigBundle(t, e, "1.0.0")
	d := e.publish("web", "1.0.0", data)
	part := filepath.Join(e.cfg.DataDir, "downloads", d.SHA256+".part")
	if err := os.WriteFile(part, data[:1000], 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.apply(d); err != nil {
		t.Fatal(err)
	}
	if reqs := e.srv.requestsFor("web-1.0.0.tar.gz"); len(reqs) != 1 || reqs[0].rangeHeader != "bytes=1000-" {
		t.Fatalf("requests %+v", reqs)
	}
	// A .part that is already complete needs no request at all.
	e2 := newTestEnv(t)
	d2 := e2.publish("web", "1.0.0", data)
	if err := os.WriteFile(filepath.Join(e2.cfg.DataDir, "downloads", d.SHA256+".part"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e2.apply(d2); err != nil {
		t.Fatal(err)
	}
	if n := e2.srv.total(); n != 0 {
		t.Errorf("%d requests for a complete .part", n)
	}
}

// TestStalePartFromChangedFile: a .part whose bytes belong to another file
// ends in a digest mismatch once joined; one fresh download fixes it.
func TestStalePartFromChangedFile(t *testing.T) {
	e := newTestEnv(t)
	data := bigBundle(t, e, "1.0.0")
	d := e.publish("web", "1.0.0", data)
	junk := bytes.Repeat([]byte("x"), 1000)
	if err := os.WriteFile(filepath.Join(e.cfg.DataDir, "downloads", d.SHA256+".part"), junk, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.apply(d); err != nil {
		t.Fatal(err)
	}
	if reqs := e.srv.requestsFor("web-1.0.0.tar.gz"); len(reqs) != 2 || reqs[0].rangeHeader != "bytes=1000-" || reqs[1].rangeHeader != "" {
		t.Fatalf("requests %+v", reqs)
	}
}

func TestSourceFallback(t *testing.T) {
	e := newTestEnv(t)
	data := e.stdBundle("1.0.0")
	good := e.srv.add("good.tar.gz", data)
	broken := e.srv.add("broken.tar.gz", data)
	e.srv.mu.Lock()
	e.srv.status["/broken.tar.gz"] = http.StatusServiceUnavailable
	e.srv.mu.Unlock()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + l.Addr().String() + "/x.tar.gz"
	l.Close()

	d := Desired{App: "web", Version: "1.0.0", SHA256: sha(data), URLs: []string{refused, broken, e.srv.URL + "/missing.tar.gz", good}}
	if err := e.apply(d); err != nil {
		t.Fatal(err)
	}
	if n := len(e.srv.requestsFor("good.tar.gz")); n != 1 {
		t.Errorf("good source asked %d times", n)
	}
	if n := len(e.srv.requestsFor("broken.tar.gz")); n != 1 {
		t.Errorf("broken source asked %d times", n)
	}

	// Every source failing: retried a few rounds with backoff (the 503 is
	// transient, the 404 is not), then a failure naming each source.
	e.srv.mu.Lock()
	e.srv.status["/good.tar.gz"] = http.StatusBadGateway
	e.srv.mu.Unlock()
	d2 := Desired{App: "api", Version: "1.0.0", SHA256: sha(data), URLs: []string{broken, e.srv.URL + "/missing.tar.gz", good}}
	err = e.apply(d2)
	if err == nil {
		t.Fatal("Apply succeeded")
	}
	for _, want := range []string{"download failed", `broken.tar.gz": HTTP 503`, `missing.tar.gz": HTTP 404`, `good.tar.gz": HTTP 502`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if n := len(e.srv.requestsFor("missing.tar.gz")); n != 2 {
		t.Errorf("404 source asked %d times in total, want 2 (once per Apply)", n)
	}
	if n := len(e.srv.requestsFor("broken.tar.gz")); n != 1+defaultMaxIdleRounds {
		t.Errorf("503 source asked %d times, want %d", n, 1+defaultMaxIdleRounds)
	}
}

func TestSizeLimits(t *testing.T) {
	e := newTestEnv(t)
	data := e.stdBundle("1.0.0")

	d := e.publish("web", "1.0.0", data)
	d.Size = int64(len(data)) - 10
	err := e.apply(d)
	if err == nil || !strings.Contains(err.Error(), "over the limit of "+strconv.Itoa(len(data)-10)) {
		t.Fatalf("declared size too small: %v", err)
	}

	e.host.cfg.MaxArtifactBytes = 100
	d = e.publish("web", "1.0.0", data)
	d.Size = 0
	if err := e.apply(d); err == nil || !strings.Contains(err.Error(), "over the limit of 100") {
		t.Fatalf("over MaxArtifactBytes: %v", err)
	}
	// Without a Content-Length, the limit holds while streaming.
	e.srv.mu.Lock()
	e.srv.ignoreRange["/web-1.0.0.tar.gz"] = true
	e.srv.mu.Unlock()
	if err := e.apply(d); err == nil || !strings.Contains(err.Error(), "over") {
		t.Fatalf("over MaxArtifactBytes: %v", err)
	}
	if dl, _ := os.ReadDir(filepath.Join(e.cfg.DataDir, "downloads")); len(dl) != 0 {
		t.Errorf("downloads/ holds %v", dl)
	}

	e.host.cfg.MaxArtifactBytes = DefaultMaxArtifactBytes
	e.host.cfg.MaxExtractBytes = 300
	if err := e.apply(e.publish("web", "1.0.0", data)); err == nil || !strings.Contains(err.Error(), "archive expands past the limit of 300 bytes") {
		t.Fatalf("over MaxExtractBytes: %v", err)
	}
}
