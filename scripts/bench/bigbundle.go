// What the agentfoot and install suites share: a one-server cluster (a big
// upload to three servers would replicate it twice, and the agent's side
// is what they measure), bundles of a given size generated fast on disk
// from a seeded PRNG, and their upload from the file without reading it
// into the heap.
package main

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// startSingle starts a one-server cluster (TLS) in work.
func startSingle(work string) (*cluster, error) {
	c := &cluster{work: work, fl: tlsFlavor()}
	var err error
	if c.sec, err = newClusterSec(c.fl, work); err != nil {
		return c, err
	}
	s := &server{id: "s1", grpc: freePort(), raft: freePort(), http: freePort(), dir: filepath.Join(work, "s1")}
	c.servers = append(c.servers, s)
	if err := c.start(s, "--bootstrap"); err != nil {
		return c, err
	}
	if err := c.waitHealthy(s, 20*time.Second); err != nil {
		return c, err
	}
	deadline := time.Now().Add(20 * time.Second)
	for c.leader() == nil {
		if time.Now().After(deadline) {
			return c, fmt.Errorf("s1 not leader after 20s (log %s)", filepath.Join(work, "s1.log"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	return c, nil
}

// bundleFile is a file put at the start of a generated bundle.
type bundleFile struct {
	name string
	mode int64
	data []byte
}

// bigBundle is a generated bundle on disk.
type bigBundle struct {
	path     string
	sha256   string
	size     int64 // the artifact's bytes (what is downloaded)
	expanded int64 // the bytes its files hold
}

// The generated content alternates 1 MiB of random bytes (which neither
// compressor can shrink) with 1 MiB of letters drawn from 16 (4 bits of
// entropy a byte: no matches, so the decoder does entropy decoding on
// every byte), which compresses to about half at the tools' default
// levels (zstd -3, gzip -6; their fastest levels store it as it is): the
// artifact is about 3/4 of the content.
const (
	genBlock    = 1 << 20
	genPartSize = 64 << 20 // content is split into files of this size
)

// writeBigBundle writes a tar of files followed by data/part-NNN files of
// generated content, compressed as format ("tar.zst" or "tar.gz"), so
// that the artifact is about size bytes. The same seed gives the same
// content whatever the format.
func writeBigBundle(path, format string, size int64, seed uint64, files []bundleFile) (bigBundle, error) {
	b := bigBundle{path: path}
	f, err := os.Create(path)
	if err != nil {
		return b, err
	}
	defer f.Close()
	hash := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(f, hash), 1<<20)
	var zw io.WriteCloser
	switch format {
	case "tar.zst":
		zw, err = zstd.NewWriter(bw, zstd.WithEncoderLevel(zstd.SpeedDefault))
	case "tar.gz":
		zw, err = gzip.NewWriterLevel(bw, gzip.DefaultCompression)
	default:
		err = fmt.Errorf("format %q: want tar.zst or tar.gz", format)
	}
	if err != nil {
		return b, err
	}
	tw := tar.NewWriter(zw)
	now := time.Now()
	for _, bf := range files {
		if err := tw.WriteHeader(&tar.Header{Name: bf.name, Mode: bf.mode, Size: int64(len(bf.data)), Typeflag: tar.TypeReg, ModTime: now}); err != nil {
			return b, err
		}
		if _, err := tw.Write(bf.data); err != nil {
			return b, err
		}
		b.expanded += int64(len(bf.data))
	}
	content := size / 3 * 4
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	block := make([]byte, genBlock)
	var blocks int64
	for part := 0; content > 0; part++ {
		n := min(content, genPartSize)
		content -= n
		if err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("data/part-%03d", part), Mode: 0o644, Size: n, Typeflag: tar.TypeReg, ModTime: now}); err != nil {
			return b, err
		}
		for left := n; left > 0; blocks++ {
			fillBlock(block, rng, blocks%2 == 1)
			m := min(left, genBlock)
			if _, err := tw.Write(block[:m]); err != nil {
				return b, err
			}
			left -= m
		}
		b.expanded += n
	}
	if err := tw.Close(); err != nil {
		return b, err
	}
	if err := zw.Close(); err != nil {
		return b, err
	}
	if err := bw.Flush(); err != nil {
		return b, err
	}
	fi, err := f.Stat()
	if err != nil {
		return b, err
	}
	b.size, b.sha256 = fi.Size(), hex.EncodeToString(hash.Sum(nil))
	return b, f.Close()
}

// fillBlock fills p with random bytes, or with letters a-p (4 bits each).
func fillBlock(p []byte, rng *rand.Rand, letters bool) {
	if !letters {
		for i := 0; i+8 <= len(p); i += 8 {
			binary.LittleEndian.PutUint64(p[i:], rng.Uint64())
		}
		return
	}
	for i := 0; i+16 <= len(p); i += 16 {
		v := rng.Uint64()
		for j := range 16 {
			p[i+j] = 'a' + byte(v>>(4*j))&0x0f
		}
	}
}

// uploadFile uploads a file to the store through the bench's upload,
// mapping it rather than reading it: a 1 GiB bundle stays in the page
// cache, not in the bench's heap.
func uploadFile(ctx context.Context, art relv1.ArtifactServiceClient, path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	data, err := syscall.Mmap(int(f.Fd()), 0, int(fi.Size()), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return "", err
	}
	defer syscall.Munmap(data)
	return upload(ctx, art, data)
}

// mib prints a byte count in MiB.
func mib(b int64) string { return fmt.Sprintf("%.0f MiB", float64(b)/(1<<20)) }
