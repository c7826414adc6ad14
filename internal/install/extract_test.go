package install

import (
	"archive/tar"
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// extractIn runs extractArtifact into <tmp>/dest, next to a file and a
// directory outside it that nothing may touch, and checks afterwards that
// nothing outside dest changed and no symlink inside dest resolves outside
// it, whatever the result.
func extractIn(t *testing.T, data []byte, lim extractLimits) (string, error) {
	t.Helper()
	parent := t.TempDir()
	dest := filepath.Join(parent, "dest")
	if err := os.Mkdir(dest, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(parent, "outside"), []byte("untouched"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(parent, "outdir"), 0o755); err != nil {
		t.Fatal(err)
	}
	before := snapshotTree(t, parent)
	err := extractArtifact(bytes.NewReader(data), dest, "artifact.bin", lim)

	after := snapshotTree(t, parent)
	for p, mode := range after {
		if strings.HasPrefix(p, dest+string(filepath.Separator)) {
			continue
		}
		if before[p] != mode {
			t.Errorf("extraction created or changed %s outside dest", p)
		}
	}
	if got := readFile(t, filepath.Join(parent, "outside")); got != "untouched" {
		t.Errorf("outside file now holds %q", got)
	}
	if err == nil {
		checkContained(t, dest)
	}
	return dest, err
}

// checkContained checks, independently of the code under test, that every
// symlink under dest that resolves at all resolves inside dest and that no
// device or fifo exists.
func checkContained(t testing.TB, dest string) {
	t.Helper()
	realDest, err := filepath.EvalSymlinks(dest)
	if err != nil {
		t.Fatal(err)
	}
	_ = filepath.WalkDir(dest, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			if filepath.IsAbs(target) {
				t.Errorf("%s is an absolute symlink to %s", p, target)
			}
			if r, err := filepath.EvalSymlinks(p); err == nil && r != realDest && !strings.HasPrefix(r, realDest+"/") {
				t.Errorf("%s -> %s resolves to %s, outside %s", p, target, r, realDest)
			}
		case d.Type()&(fs.ModeDevice|fs.ModeCharDevice|fs.ModeNamedPipe|fs.ModeSocket) != 0:
			t.Errorf("%s is a special file (%s)", p, d.Type())
		}
		return nil
	})
}

var testLimits = extractLimits{maxBytes: 64 << 10, maxEntries: 50}

func TestExtractRefuses(t *testing.T) {
	many := make([]ent, 0, 40)
	for i := range 40 {
		many = append(many, file("f"+strings.Repeat("x", i), strings.Repeat("a", 2<<10)))
	}
	tooMany := make([]ent, 0, 51)
	for i := range 51 {
		tooMany = append(tooMany, dir("d"+strings.Repeat("x", i)))
	}
	tests := []struct {
		name    string
		tar     []byte
		wantErr string
	}{
		{"absolute path", makeTar(t, file("/etc/evil", "x")), `entry "/etc/evil": absolute path`},
		{"dot-dot", makeTar(t, file("../evil", "x")), `entry "../evil": path contains ".."`},
		{"dot-dot inside a path", makeTar(t, file("a/../../evil", "x")), `path contains ".."`},
		{"dot-dot directory", makeTar(t, dir("../evil/")), `path contains ".."`},
		{"symlink escaping", makeTar(t, symlink("link", "../outside")), `entry "link": symlink to "../outside" leads outside`},
		{"symlink escaping deep", makeTar(t, symlink("a/b/link", "../../../outdir")), `leads outside`},
		{"symlink absolute", makeTar(t, symlink("link", "/etc")), `symlink to absolute path "/etc"`},
		{
			// Each link alone stays inside when read lexically: "a" is the
			// root itself, so "a/b -> .." is the root's parent.
			"two chained symlinks escaping",
			makeTar(t, symlink("a", "."), symlink("a/b", ".."), file("a/b/outside", "overwritten")),
			`entry "a/b": symlink to ".." leads outside`,
		},
		{
			"chain through a symlinked directory",
			makeTar(t, dir("d/"), symlink("d/up", ".."), symlink("d/up/d2", "."), symlink("d/up/d2/esc", "../..")),
			`leads outside`,
		},
		{
			// "x -> y/.." is inside while y does not exist; once y is a link
			// to "." it is the parent of the root.
			"symlink made escaping by a later entry",
			makeTar(t, symlink("x", "y/.."), symlink("y", ".")),
			`entry "x": symlink to "y/.." leads outside`,
		},
		{"symlink loop", makeTar(t, symlink("l1", "l2"), symlink("l2", "l1")), `leads outside`},
		{"write through symlink to parent", makeTar(t, symlink("up", "."), file("up/../outside", "x")), `path contains ".."`},
		{"hardlink escaping", makeTar(t, hardlink("h", "../outside")), `entry "h": hardlink to "../outside" leads outside`},
		{"hardlink absolute", makeTar(t, hardlink("h", "/etc/passwd")), `hardlink to absolute path`},
		{"hardlink to missing", makeTar(t, hardlink("h", "nothing")), `not a regular file`},
		{"hardlink to a directory", makeTar(t, dir("d/"), hardlink("h", "d")), `not a regular file`},
		{"char device", makeTar(t, special("null", tar.TypeChar)), `entry "null": device files are not allowed`},
		{"block device", makeTar(t, special("sda", tar.TypeBlock)), `device files are not allowed`},
		{"fifo", makeTar(t, special("pipe", tar.TypeFifo)), `entry "pipe": fifos are not allowed`},
		{"size bomb: many files", makeTar(t, many...), `archive expands past the limit of 65536 bytes`},
		{"size bomb: one huge file whose header lies", sparseBomb(t, 1<<30), `archive expands past the limit of 65536 bytes`},
		{"size bomb compressed", gzipBytes(t, makeTar(t, file("zeros", strings.Repeat("\x00", 1<<20)))), `archive expands past`},
		{"too many entries", makeTar(t, tooMany...), `more than 50 entries`},
		{"reserved .rel", makeTar(t, file(".rel/sha256", "x")), `.rel/ is reserved`},
		{"reserved .rel through a symlink", makeTar(t, symlink("x", "."), file("x/.rel/sha256", "x")), `.rel/ is reserved`},
		{"unsupported type", makeTar(t, ent{name: "vol", typ: 'V'}), `unsupported entry type`},
		{"file over directory", makeTar(t, dir("d/"), file("d", "x")), `replaces a directory`},
		{"truncated tar", makeTar(t, file("a", strings.Repeat("a", 4096)))[:1500], `read tar`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := extractIn(t, tc.tar, testLimits)
			if err == nil {
				t.Fatalf("extraction succeeded, want an error containing %q", tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error %q, want it to contain %q", err, tc.wantErr)
			}
			if !errors.Is(err, errRefused) {
				t.Errorf("error %q does not wrap errRefused", err)
			}
		})
	}
}

// sparseBomb is a tar whose one entry is a GNU sparse file (PAX format
// 0.1, written by hand: archive/tar does not write sparse files). The
// archive carries no data at all, the entry's header says size 0, and
// reading it yields size bytes of zeros.
func sparseBomb(t *testing.T, size int64) []byte {
	t.Helper()
	pax := paxRecord("GNU.sparse.major", "0") + paxRecord("GNU.sparse.minor", "1") +
		paxRecord("GNU.sparse.name", "bomb") + paxRecord("GNU.sparse.realsize", strconv.FormatInt(size, 10)) +
		paxRecord("GNU.sparse.numblocks", "0") + paxRecord("GNU.sparse.map", "")
	var b []byte
	b = append(b, rawHeader("PaxHeaders/bomb", tar.TypeXHeader, int64(len(pax)))...)
	b = append(b, padBlock([]byte(pax))...)
	b = append(b, rawHeader("bomb", tar.TypeReg, 0)...)
	b = append(b, make([]byte, 1024)...)

	// The property the case depends on: tiny archive, huge expansion.
	tr := tar.NewReader(bytes.NewReader(b))
	hdr, err := tr.Next()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > 4096 || hdr.Size != size {
		t.Fatalf("sparse bomb is %d bytes and expands to %d, want a tiny archive expanding to %d", len(b), hdr.Size, size)
	}
	return b
}

// TestExtractEntryLimit: exactly the limit passes and one more is refused
// (with a small limit), and the real limit is 100,000: the 100,001st entry
// is refused. The big archive repeats one directory header, so the test
// costs headers, not inodes.
func TestExtractEntryLimit(t *testing.T) {
	fifty := make([]ent, 0, 50)
	for i := range 50 {
		fifty = append(fifty, file("f"+strconv.Itoa(i), "x"))
	}
	if _, err := extractIn(t, makeTar(t, fifty...), testLimits); err != nil {
		t.Fatalf("50 entries with a limit of 50: %v", err)
	}

	if testing.Short() {
		t.Skip("builds a 50 MB archive")
	}
	block := makeTar(t, dir("d/"))[:512]
	big := append(bytes.Repeat(block, maxEntries+1), make([]byte, 1024)...)
	lim := extractLimits{maxBytes: 1 << 20, maxEntries: maxEntries}
	if _, err := extractIn(t, big, lim); err == nil || !strings.Contains(err.Error(), "more than 100000 entries") {
		t.Fatalf("%d entries: %v, want refused", maxEntries+1, err)
	}
}

func goodBundle(t *testing.T) []byte {
	return makeTar(t,
		dir("./"),
		dir("./bin/"),
		exe("./bin/server", "#!/bin/sh\necho hi\n"),
		withMode(file("./bin/suid", "s"), 0o4755),
		withMode(file("./bin/wide", "w"), 0o777),        // group and world write dropped
		withMode(dir("./shared/"), 0o777),               //
		file("./conf/app.conf", "port=8080\n"),          // parent made implicitly
		withMode(dir("./private/"), 0o700),              // mode applied after its entries
		file("./private/key", "k"),                      //
		symlink("./bin/current", "server"),              // inside, same dir
		symlink("./lib", "conf"),                        // directory link
		symlink("./dangling", "not/there"),              // dangling but inside
		symlink("./conf/up", "../bin"),                  // .. that stays inside
		hardlink("./bin/server2", "bin/server"),         // hardlink by archive path
		file("./dup", "first"), file("./dup", "second"), // the last one wins
		file("./"+strings.Repeat("long/", 30)+"name", "pax long name"),
	)
}

func TestExtractGood(t *testing.T) {
	bundle := goodBundle(t)
	tests := []struct {
		name string
		data []byte
	}{
		{"tar", bundle},
		{"tar.gz", gzipBytes(t, bundle)},
		{"tar.zst", zstdBytes(t, bundle)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dest, err := extractIn(t, tc.data, extractLimits{maxBytes: 1 << 20, maxEntries: 100})
			if err != nil {
				t.Fatal(err)
			}
			checks := map[string]string{
				"bin/server":                         "#!/bin/sh\necho hi\n",
				"bin/server2":                        "#!/bin/sh\necho hi\n",
				"bin/current":                        "#!/bin/sh\necho hi\n",
				"conf/app.conf":                      "port=8080\n",
				"lib/app.conf":                       "port=8080\n",
				"conf/up/server":                     "#!/bin/sh\necho hi\n",
				"private/key":                        "k",
				"dup":                                "second",
				strings.Repeat("long/", 30) + "name": "pax long name",
			}
			for p, want := range checks {
				if got := readFile(t, filepath.Join(dest, p)); got != want {
					t.Errorf("%s = %q, want %q", p, got, want)
				}
			}
			modes := map[string]fs.FileMode{
				"bin/server":    0o755,
				"bin/suid":      0o755, // setuid dropped
				"bin/wide":      0o755,
				"shared":        0o755 | fs.ModeDir,
				"conf/app.conf": 0o644,
				"private":       0o700 | fs.ModeDir,
			}
			for p, want := range modes {
				fi, err := os.Lstat(filepath.Join(dest, p))
				if err != nil {
					t.Fatal(err)
				}
				if got := fi.Mode() & (fs.ModePerm | fs.ModeDir | fs.ModeSetuid | fs.ModeSetgid); got != want {
					t.Errorf("%s mode %v, want %v", p, got, want)
				}
			}
			if target, _ := os.Readlink(filepath.Join(dest, "dangling")); target != "not/there" {
				t.Errorf("dangling -> %q", target)
			}
			a, _ := os.Stat(filepath.Join(dest, "bin/server"))
			b, _ := os.Stat(filepath.Join(dest, "bin/server2"))
			if !os.SameFile(a, b) {
				t.Error("bin/server2 is not a hardlink of bin/server")
			}
		})
	}
}

func TestExtractPlainFile(t *testing.T) {
	elf := append([]byte("\x7fELF"), bytes.Repeat([]byte{1}, 1000)...)
	tests := []struct {
		name, wantName string
		data           []byte
	}{
		{"binary", "artifact.bin", elf},
		{"short file", "artifact.bin", []byte("#!/bin/sh\n")},
		{"gzip of a binary", "artifact.bin", gzipBytes(t, elf)},
		{"empty", "artifact.bin", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dest, err := extractIn(t, tc.data, testLimits)
			if err != nil {
				t.Fatal(err)
			}
			entries, _ := os.ReadDir(dest)
			if len(entries) != 1 || entries[0].Name() != tc.wantName {
				t.Fatalf("dest holds %v, want one file %s", entries, tc.wantName)
			}
			fi, _ := os.Stat(filepath.Join(dest, tc.wantName))
			if fi.Mode().Perm() != 0o755 {
				t.Errorf("mode %v, want 0755", fi.Mode())
			}
		})
	}
	// Named after the URL, without the compression suffix.
	parent := t.TempDir()
	if err := extractArtifact(bytes.NewReader(gzipBytes(t, elf)), parent, "tool.gz", testLimits); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(parent, "tool")); err != nil {
		t.Fatal(err)
	}
	if got := plainName([]string{"https://example.com/dl/tool-1.2?x=1", "file:///x/other"}); got != "tool-1.2" {
		t.Errorf("plainName = %q", got)
	}
}

func TestExtractEmptyTar(t *testing.T) {
	dest, err := extractIn(t, makeTar(t), testLimits)
	if err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(dest); len(entries) != 0 {
		t.Fatalf("empty tar made %v", entries)
	}
}

func TestLooksLikeTar(t *testing.T) {
	b := makeTar(t, file("a", "b"))
	if !looksLikeTar(b[:512]) {
		t.Error("a tar header is not recognised")
	}
	c := append([]byte(nil), b[:512]...)
	c[0] ^= 1
	if looksLikeTar(c) {
		t.Error("a header with a bad checksum is taken for a tar")
	}
	if looksLikeTar(bytes.Repeat([]byte("a"), 512)) {
		t.Error("text is taken for a tar")
	}
}
