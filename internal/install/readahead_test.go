package install

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"testing/iotest"
)

// TestReadaheadKeepsBytesAndErrors: whatever the sizes and however the
// source splits its reads, readahead gives the same bytes in the same
// order, then the very error that ended the source (a truncated gzip
// stream's io.ErrUnexpectedEOF must not pass for a clean end).
func TestReadaheadKeepsBytesAndErrors(t *testing.T) {
	errBroken := errors.New("broken source")
	sizes := []int{0, 1, readaheadChunk - 1, readaheadChunk, readaheadChunk + 1, readaheadChunks*readaheadChunk + 7, 3*readaheadChunks*readaheadChunk + 5}
	wraps := []struct {
		name string
		wrap func(io.Reader) io.Reader
	}{
		{"whole reads", func(r io.Reader) io.Reader { return r }},
		{"half reads", iotest.HalfReader},
		{"data with EOF", iotest.DataErrReader},
	}
	ends := []struct {
		name string
		err  error // nil: a clean io.EOF
	}{
		{"EOF", nil},
		{"unexpected EOF", io.ErrUnexpectedEOF},
		{"other error", errBroken},
	}
	for _, size := range sizes {
		data := make([]byte, size)
		rng := rand.New(rand.NewPCG(uint64(size), 1))
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		for _, w := range wraps {
			for _, end := range ends {
				t.Run(strings.Join([]string{strconv.Itoa(size), w.name, end.name}, "/"), func(t *testing.T) {
					var src io.Reader = bytes.NewReader(data)
					if end.err != nil {
						src = io.MultiReader(src, iotest.ErrReader(end.err))
					}
					ra := newReadahead(w.wrap(src))
					defer ra.Close()
					got, err := io.ReadAll(ra)
					if !bytes.Equal(got, data) {
						t.Fatalf("read %d bytes, not the %d given", len(got), len(data))
					}
					if err != end.err { // io.ReadAll turns io.EOF into nil
						t.Fatalf("error %v, want %v", err, end.err)
					}
					// Asking again gives the same end.
					if n, err := ra.Read(make([]byte, 8)); n != 0 || (err != end.err && !(end.err == nil && err == io.EOF)) {
						t.Fatalf("read after the end: %d, %v", n, err)
					}
				})
			}
		}
	}
}

// countingReader is an endless source that counts its reads and fails
// the test if read after closed is set.
type countingReader struct {
	t      *testing.T
	reads  atomic.Int64
	closed atomic.Bool
}

func (c *countingReader) Read(p []byte) (int, error) {
	if c.closed.Load() {
		c.t.Error("source read after readahead's Close returned")
	}
	c.reads.Add(1)
	return len(p), nil
}

// TestReadaheadCloseStops: Close, whether the consumer read all, some or
// nothing, returns once the goroutine has stopped reading the source
// (goleak in TestMain catches a goroutine left behind), and a second
// Close is harmless.
func TestReadaheadCloseStops(t *testing.T) {
	for _, consume := range []int{0, 10, readaheadChunk * (readaheadChunks + 2)} {
		t.Run(strconv.Itoa(consume), func(t *testing.T) {
			src := &countingReader{t: t}
			ra := newReadahead(src)
			if _, err := io.ReadFull(ra, make([]byte, consume)); err != nil {
				t.Fatal(err)
			}
			if err := ra.Close(); err != nil {
				t.Fatal(err)
			}
			src.closed.Store(true)
			if err := ra.Close(); err != nil {
				t.Fatal(err)
			}
			// Bounded: at most every buffer filled ahead of what was read.
			if max := int64(consume/readaheadChunk+readaheadChunks+2) * readaheadChunk; src.reads.Load() > max {
				t.Errorf("%d reads of the source for %d bytes consumed", src.reads.Load(), consume)
			}
		})
	}
}

// TestExtractCompressedAcrossChunks: compressed archives larger than the
// readahead's buffers extract byte for byte, and cut short they are
// refused as broken archives, not installed short.
func TestExtractCompressedAcrossChunks(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	big := make([]byte, 3*readaheadChunks*readaheadChunk+123)
	for i := range big {
		big[i] = 'a' + byte(rng.Uint32()%16)
	}
	tarball := makeTar(t, file("data/big", string(big)), file("after", "the last entry"))
	lim := extractLimits{maxBytes: 64 << 20, maxEntries: 10}
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"tar.gz", gzipBytes(t, tarball)},
		{"tar.zst", zstdBytes(t, tarball)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dest, err := extractIn(t, tc.data, lim)
			if err != nil {
				t.Fatal(err)
			}
			if got := readFile(t, filepath.Join(dest, "data", "big")); got != string(big) {
				t.Fatalf("data/big: %d bytes, want the %d archived", len(got), len(big))
			}
			if got := readFile(t, filepath.Join(dest, "after")); got != "the last entry" {
				t.Fatalf("after = %q", got)
			}
		})
		t.Run(tc.name+" truncated", func(t *testing.T) {
			_, err := extractIn(t, tc.data[:len(tc.data)/2], lim)
			if !errors.Is(err, errRefused) {
				t.Fatalf("half an archive: error %v, want an archive refused", err)
			}
		})
	}
}
