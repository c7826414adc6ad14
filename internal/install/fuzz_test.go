package install

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// FuzzExtract feeds arbitrary bytes to the extractor. The property:
// whatever the input, extraction never panics, never creates or changes
// anything outside the destination directory, and leaves no symlink inside
// it that resolves outside and no device or fifo. The seed corpus in
// testdata/fuzz/FuzzExtract holds valid bundles (tar, tar.gz, tar.zst, a
// plain file) and the malicious ones of TestExtractRefuses.
//
// dest sits four directories deep in a tree that is otherwise fixed, so an
// escape through "..", "../..", ... lands somewhere the check looks. One
// tree serves every input (a fresh t.TempDir per input makes each exec
// several times slower, which starves the fuzzer's minimisation).
func FuzzExtract(f *testing.F) {
	lim := extractLimits{maxBytes: 1 << 20, maxEntries: 200}
	base := f.TempDir()
	levels := []string{base, filepath.Join(base, "a"), filepath.Join(base, "a", "b"), filepath.Join(base, "a", "b", "c")}
	parent := levels[len(levels)-1]
	if err := os.MkdirAll(parent, 0o755); err != nil {
		f.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(parent, "outside"), []byte("untouched"), 0o644); err != nil {
		f.Fatal(err)
	}
	dest := filepath.Join(parent, "dest")
	want := map[string][]string{
		levels[0]: {"a"}, levels[1]: {"b"}, levels[2]: {"c"}, levels[3]: {"dest", "outside"},
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.Mkdir(dest, 0o755); err != nil {
			t.Fatal(err)
		}
		defer removeTree(t, dest)

		err := extractArtifact(bytes.NewReader(data), dest, "artifact", lim)

		for dir, names := range want {
			entries, rerr := os.ReadDir(dir)
			if rerr != nil {
				t.Fatal(rerr)
			}
			var got []string
			for _, e := range entries {
				got = append(got, e.Name())
			}
			if !slices.Equal(got, names) {
				t.Fatalf("%s holds %v, want %v: extraction wrote outside dest (err %v)", dir, got, names, err)
			}
		}
		if got := readFile(t, filepath.Join(parent, "outside")); got != "untouched" {
			t.Fatalf("outside file changed to %q", got)
		}
		if err == nil {
			checkContained(t, dest)
		}
	})
}

// removeTree deletes an extracted tree, first giving back the write and
// search bits an archive may have taken from its directories.
func removeTree(t *testing.T, dir string) {
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o755)
		}
		return nil
	})
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
}
