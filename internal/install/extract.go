package install

import (
	"archive/tar"
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"github.com/klauspost/compress/gzip"
	"io"
	"io/fs"
	"os"
	"path"
	"strconv"
	"strings"

	"github.com/klauspost/compress/zstd"
)

// maxEntries bounds the number of entries of one archive: each costs an
// inode and a syscall or more, whatever its size.
const maxEntries = 100_000

// maxSymlinkHops bounds the symlinks followed while resolving one path, as
// the kernel does (ELOOP after 40).
const maxSymlinkHops = 40

// zstdMaxWindow bounds the memory a zstd stream may ask for (zstd -19 uses
// 8 MiB, --long 128 MiB).
const zstdMaxWindow = 256 << 20

type extractLimits struct {
	maxBytes   int64 // total bytes written, counted as they are copied
	maxEntries int
}

// errRefused is wrapped by every error about an archive that is unsafe or
// over a limit, as opposed to an I/O error of the host.
var errRefused = errors.New("archive refused")

type refusedError struct{ entry, reason string }

func (e *refusedError) Error() string {
	if e.entry == "" {
		return "archive refused: " + e.reason
	}
	return fmt.Sprintf("archive refused: entry %q: %s", e.entry, e.reason)
}

func (e *refusedError) Is(target error) bool { return target == errRefused }

func refuse(entry, format string, args ...any) error {
	return &refusedError{entry: entry, reason: fmt.Sprintf(format, args...)}
}

// extractArtifact unpacks a verified artifact into dir, an empty directory.
// The format is found by magic bytes: gzip or zstd are decompressed first;
// then a tar is extracted, and anything else is installed as one file named
// plainName (without a .gz/.zst suffix when it was compressed), mode 0755.
func extractArtifact(r io.Reader, dir, plainName string, lim extractLimits) error {
	br := bufio.NewReaderSize(r, 64<<10)
	magic, _ := br.Peek(4)
	var data io.Reader = br
	switch {
	case bytes.HasPrefix(magic, []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return refuse("", "gzip: %v", err)
		}
		defer zr.Close()
		ra := newReadahead(zr)
		defer ra.Close() // before zr.Close: it stops ra's reads of zr
		data = ra
		plainName = strings.TrimSuffix(plainName, ".gz")
	case bytes.HasPrefix(magic, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		// Concurrency 1 decodes in the goroutine that reads (readahead's):
		// no goroutines of the decoder's own to leak, and no memory for
		// blocks decoded in parallel.
		zr, err := zstd.NewReader(br, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(zstdMaxWindow))
		if err != nil {
			return refuse("", "zstd: %v", err)
		}
		defer zr.Close()
		ra := newReadahead(zr)
		defer ra.Close() // before zr.Close: it stops ra's reads of zr
		data = ra
		plainName = strings.TrimSuffix(plainName, ".zst")
	}
	inner := bufio.NewReaderSize(data, 64<<10)
	head, err := inner.Peek(512)
	if err != nil && !errors.Is(err, io.EOF) {
		return refuse("", "read: %v", err)
	}
	if len(head) == 512 && looksLikeTar(head) {
		return extractTar(inner, dir, lim)
	}
	return installPlain(inner, dir, plainName, lim)
}

// looksLikeTar checks a first 512-byte block: an end-of-archive block (an
// empty tar) or a header whose checksum field matches its bytes, which
// every tar format (v7, ustar, pax, GNU) has.
func looksLikeTar(b []byte) bool {
	if len(b) < 512 {
		return false
	}
	zero := true
	for _, c := range b[:512] {
		if c != 0 {
			zero = false
			break
		}
	}
	if zero {
		return true
	}
	field := strings.Trim(string(b[148:156]), " \x00")
	want, err := strconv.ParseInt(field, 8, 64)
	if err != nil {
		return false
	}
	var unsigned, signed int64
	for i, c := range b[:512] {
		if i >= 148 && i < 156 {
			c = ' '
		}
		unsigned += int64(c)
		signed += int64(int8(c))
	}
	return want == unsigned || want == signed
}

// installPlain installs a non-archive artifact as a single executable file.
func installPlain(r io.Reader, dir, name string, lim extractLimits) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") || name == relDirName {
		name = "artifact"
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	n, err := io.Copy(f, io.LimitReader(r, lim.maxBytes+1))
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if n > lim.maxBytes {
		return refuse(name, "expands past the limit of %d bytes", lim.maxBytes)
	}
	if err := f.Chmod(0o755); err != nil {
		return err
	}
	return f.Close()
}

// extractTar creates every entry through an *os.Root opened on dir, so that
// no entry, whatever symlinks earlier entries made, can create or write
// anything outside dir: the kernel resolves each path relative to the
// root's descriptor and Root refuses a resolution that leaves it. On top of
// that, entries that would be dangerous where the release runs are
// refused: absolute or `..` names, symlinks and hardlinks leading out of
// the directory, device and fifo nodes, and archives over the size or entry
// limits (bytes are counted as copied: a sparse entry expands to far more
// than the archive holds).
func extractTar(r io.Reader, dir string, lim extractLimits) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()

	type dirMode struct {
		name string
		mode fs.FileMode
	}
	var (
		tr      = tar.NewReader(r)
		total   int64
		entries int
		dirs    []dirMode
		links   []string
	)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return refuse("", "read tar: %v", err)
		}
		entries++
		if entries > lim.maxEntries {
			return refuse(hdr.Name, "more than %d entries", lim.maxEntries)
		}
		if hdr.Typeflag == tar.TypeXGlobalHeader {
			continue // pax metadata for the whole archive, not a file
		}
		name, err := entryName(hdr.Name)
		if err != nil {
			return err
		}
		// No setuid, setgid or sticky, and no write for group or others:
		// the release's files are changed by new releases, not by whoever
		// shares a group with the agent.
		mode := fs.FileMode(hdr.Mode) & fs.ModePerm &^ 0o022

		switch hdr.Typeflag {
		case tar.TypeDir:
			if name == "" {
				continue // "./": the release directory itself
			}
			if err := makeDir(root, name); err != nil {
				return err
			}
			dirs = append(dirs, dirMode{name, mode})

		case tar.TypeReg, tar.TypeGNUSparse, tar.TypeCont:
			if name == "" {
				return refuse(hdr.Name, "a file cannot replace the release directory")
			}
			n, err := writeFile(root, name, tr, mode, lim.maxBytes-total)
			total += n
			if errors.Is(err, errOverBudget) {
				return refuse(hdr.Name, "archive expands past the limit of %d bytes", lim.maxBytes)
			}
			if err != nil {
				return err
			}

		case tar.TypeSymlink:
			if name == "" {
				return refuse(hdr.Name, "a symlink cannot replace the release directory")
			}
			if err := makeSymlink(root, name, hdr.Linkname); err != nil {
				return err
			}
			links = append(links, name)

		case tar.TypeLink:
			if name == "" {
				return refuse(hdr.Name, "a hardlink cannot replace the release directory")
			}
			if err := makeHardlink(root, name, hdr.Linkname); err != nil {
				return err
			}

		case tar.TypeChar, tar.TypeBlock:
			return refuse(hdr.Name, "device files are not allowed")
		case tar.TypeFifo:
			return refuse(hdr.Name, "fifos are not allowed")
		default:
			return refuse(hdr.Name, "unsupported entry type %q", hdr.Typeflag)
		}
	}

	// Each symlink was checked when it was made, but a later entry can
	// change what an earlier link resolves through (a link through a
	// then-missing directory that later became a link to "."): check them
	// all again against the final tree.
	for _, name := range links {
		fi, err := root.Lstat(name)
		if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			continue // replaced by a later entry
		}
		if _, err := resolve(root, nil, name); err != nil {
			target, _ := root.Readlink(name)
			return refuse(name, "symlink to %q leads outside the release directory", target)
		}
	}
	// A symlink in a name ("x -> ." then "x/.rel/sha256") could still have
	// made the agent's reserved directory.
	if _, err := root.Lstat(relDirName); err == nil {
		return refuse(relDirName, "%s/ is reserved for the agent", relDirName)
	}
	// Directory modes last, children first: a directory made read-only
	// earlier would refuse its later entries to an unprivileged agent.
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := root.Chmod(dirs[i].name, dirs[i].mode); err != nil {
			return err
		}
	}
	return nil
}

// entryName cleans an archive path into a relative slash path ("" for the
// root itself), refusing absolute paths, `..` elements and the agent's own
// .rel directory.
func entryName(raw string) (string, error) {
	if raw == "" {
		return "", refuse(raw, "empty name")
	}
	if strings.HasPrefix(raw, "/") {
		return "", refuse(raw, "absolute path")
	}
	var parts []string
	for _, p := range strings.Split(raw, "/") {
		switch p {
		case "", ".":
			continue
		case "..":
			return "", refuse(raw, "path contains \"..\"")
		}
		parts = append(parts, p)
	}
	if len(parts) > 0 && parts[0] == relDirName {
		return "", refuse(raw, "%s/ is reserved for the agent", relDirName)
	}
	return strings.Join(parts, "/"), nil
}

// clearPath removes what an earlier entry of the same name made, as tar
// does (the last entry wins), except a directory, which is refused.
func clearPath(root *os.Root, name string) error {
	fi, err := root.Lstat(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return refuse(name, "replaces a directory")
	}
	return root.Remove(name)
}

func makeParent(root *os.Root, name string) error {
	if parent := path.Dir(name); parent != "." {
		if err := root.MkdirAll(parent, 0o755); err != nil {
			return refuseIfEscape(name, err)
		}
	}
	return nil
}

func makeDir(root *os.Root, name string) error {
	fi, err := root.Lstat(name)
	switch {
	case err == nil && fi.IsDir():
		return nil
	case err == nil:
		return refuse(name, "directory replaces a file or link")
	}
	if err := root.MkdirAll(name, 0o755); err != nil {
		return refuseIfEscape(name, err)
	}
	return nil
}

var errOverBudget = errors.New("over the extraction budget")

// writeFile copies one regular entry, counting the bytes actually written
// against budget (the header's size is not trusted: a sparse entry's data
// expands).
func writeFile(root *os.Root, name string, r io.Reader, mode fs.FileMode, budget int64) (int64, error) {
	if err := makeParent(root, name); err != nil {
		return 0, err
	}
	if err := clearPath(root, name); err != nil {
		return 0, err
	}
	// O_EXCL: never write through a symlink that is already there.
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, refuseIfEscape(name, err)
	}
	defer f.Close()
	src := &trackedReader{r: r}
	n, err := io.Copy(f, io.LimitReader(src, max(budget, 0)+1))
	if src.err != nil {
		return n, refuse(name, "read tar: %v", src.err) // truncated or corrupt archive
	}
	if err != nil {
		return n, fmt.Errorf("extract %s: %w", name, err) // the host's disk
	}
	if n > budget {
		return n, errOverBudget
	}
	if err := f.Chmod(mode); err != nil {
		return n, err
	}
	return n, f.Close()
}

func makeSymlink(root *os.Root, name, target string) error {
	if target == "" {
		return refuse(name, "symlink with an empty target")
	}
	if strings.HasPrefix(target, "/") {
		return refuse(name, "symlink to absolute path %q", target)
	}
	// Lexically first: the common attack, with a clear message.
	if escapes(path.Join(path.Dir(name), target)) {
		return refuse(name, "symlink to %q leads outside the release directory", target)
	}
	if err := makeParent(root, name); err != nil {
		return err
	}
	if err := clearPath(root, name); err != nil {
		return err
	}
	if err := root.Symlink(target, name); err != nil {
		return refuseIfEscape(name, err)
	}
	// Then as the kernel would follow it, through the links made so far:
	// "a -> ." then "a/b -> .." is lexically inside but leads out.
	if _, err := resolve(root, nil, name); err != nil {
		_ = root.Remove(name)
		return refuse(name, "symlink to %q leads outside the release directory", target)
	}
	return nil
}

func makeHardlink(root *os.Root, name, target string) error {
	// A hardlink's target is a path from the archive's root, not from the
	// link's directory.
	if target == "" {
		return refuse(name, "hardlink with an empty target")
	}
	if strings.HasPrefix(target, "/") {
		return refuse(name, "hardlink to absolute path %q", target)
	}
	tname, err := entryName(target)
	if err != nil || tname == "" {
		return refuse(name, "hardlink to %q leads outside the release directory", target)
	}
	resolved, err := resolve(root, nil, tname)
	if err != nil {
		return refuse(name, "hardlink to %q leads outside the release directory", target)
	}
	rp := strings.Join(resolved, "/")
	fi, err := root.Lstat(rp)
	if err != nil || !fi.Mode().IsRegular() {
		return refuse(name, "hardlink to %q, which is not a regular file earlier in the archive", target)
	}
	if err := makeParent(root, name); err != nil {
		return err
	}
	if err := clearPath(root, name); err != nil {
		return err
	}
	if err := root.Link(rp, name); err != nil {
		return refuseIfEscape(name, err)
	}
	return nil
}

// escapes reports whether a cleaned relative path leaves its root.
func escapes(p string) bool {
	p = path.Clean(p)
	return p == ".." || strings.HasPrefix(p, "../") || path.IsAbs(p)
}

// errEscape is resolve's verdict on a path that leads out of the root.
var errEscape = errors.New("leads outside the release directory")

// resolve follows rel from the directory dir (resolved components, nil for
// the root) component by component, substituting symlinks as the kernel
// would, and returns the resolved components; a path that climbs above the
// root, an absolute symlink or a symlink loop is errEscape. Components that
// do not exist are taken as they are (a dangling link is not an escape).
func resolve(root *os.Root, dir []string, rel string) ([]string, error) {
	hops := 0
	return resolveHops(root, dir, rel, &hops)
}

func resolveHops(root *os.Root, dir []string, rel string, hops *int) ([]string, error) {
	cur := append([]string(nil), dir...)
	for _, c := range strings.Split(rel, "/") {
		switch c {
		case "", ".":
			continue
		case "..":
			if len(cur) == 0 {
				return nil, errEscape
			}
			cur = cur[:len(cur)-1]
			continue
		}
		cur = append(cur, c)
		fi, err := root.Lstat(strings.Join(cur, "/"))
		if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
			continue
		}
		if *hops++; *hops > maxSymlinkHops {
			return nil, errEscape
		}
		target, err := root.Readlink(strings.Join(cur, "/"))
		if err != nil {
			return nil, err
		}
		if strings.HasPrefix(target, "/") {
			return nil, errEscape
		}
		cur, err = resolveHops(root, cur[:len(cur)-1], target, hops)
		if err != nil {
			return nil, err
		}
	}
	return cur, nil
}

// refuseIfEscape turns os.Root's refusal to leave the root into a refused
// archive; other errors (disk full, permissions) stay what they are.
func refuseIfEscape(name string, err error) error {
	if err != nil && strings.Contains(err.Error(), "path escapes from parent") {
		return refuse(name, "path leads outside the release directory")
	}
	return err
}

// trackedReader remembers a read error, to tell a bad archive from a bad
// disk after io.Copy.
type trackedReader struct {
	r   io.Reader
	err error
}

func (t *trackedReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err != nil && err != io.EOF {
		t.err = err
	}
	return n, err
}
