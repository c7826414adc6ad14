package install

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Names inside an app's directory and a release's directory.
const (
	releasesDirName = "releases"
	currentName     = "current"
	tmpPrefix       = ".tmp-"   // releases/.tmp-<version>-<rnd>, current.tmp-<rnd>
	relDirName      = ".rel"    // the agent's own files inside a release
	markerName      = "sha256"  // .rel/sha256: written last, after a complete extraction
	runLogName      = "run.log" // .rel/run.log: the run process's stdout and stderr
)

// layout computes the paths of one app.
type layout struct{ root, app string }

func (l layout) appDir() string      { return filepath.Join(l.root, l.app) }
func (l layout) releasesDir() string { return filepath.Join(l.root, l.app, releasesDirName) }
func (l layout) currentLink() string { return filepath.Join(l.root, l.app, currentName) }
func (l layout) releaseDir(version string) string {
	return filepath.Join(l.releasesDir(), version)
}
func (l layout) markerPath(version string) string {
	return filepath.Join(l.releaseDir(version), relDirName, markerName)
}

// current returns the version `current` points at, "" if there is none.
func (l layout) current() (string, error) {
	target, err := os.Readlink(l.currentLink())
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read %s: %w", l.currentLink(), err)
	}
	dir, version := filepath.Split(target)
	if filepath.Clean(dir) != releasesDirName || version == "" {
		return "", fmt.Errorf("%s points at %q, not at releases/<version>", l.currentLink(), target)
	}
	return version, nil
}

// complete reports whether releases/<version> holds a complete extraction
// of the artifact with this digest.
func (l layout) complete(version, sha string) bool {
	b, err := os.ReadFile(l.markerPath(version))
	return err == nil && strings.TrimSpace(string(b)) == sha
}

// markerOf returns the digest recorded for an extracted release, "" when
// it is not complete.
func (l layout) markerOf(version string) string {
	b, err := os.ReadFile(l.markerPath(version))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// writeMarker records that releases/<version> is complete. It is the last
// write of an installation; the switch to a release happens only when its
// marker exists, so `current` never points at a partial extraction.
func (l layout) writeMarker(version, sha string) error {
	dir := filepath.Join(l.releaseDir(version), relDirName)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := syncFS(dir); err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(dir, markerName), []byte(sha+"\n"), 0o644); err != nil {
		return err
	}
	return syncDir(l.releasesDir())
}

// removeRelease deletes a release, marker first, so that a crash half-way
// leaves a directory that is recognisably incomplete.
func (l layout) removeRelease(version string) error {
	if err := os.Remove(l.markerPath(version)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.RemoveAll(l.releaseDir(version)); err != nil {
		return err
	}
	return syncDir(l.releasesDir())
}

// switchCurrent points `current` at releases/<version> atomically: a new
// symlink is renamed over the old one, so a reader (or a crash) sees either
// the old target or the new one.
func (l layout) switchCurrent(version string) error {
	tmp := filepath.Join(l.appDir(), currentName+tmpPrefix+randomSuffix())
	if err := os.Symlink(filepath.Join(releasesDirName, version), tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, l.currentLink()); err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(l.appDir())
}

// completeReleases lists the versions with a marker, and the other entries
// of releases/ (leftover temporary or incomplete directories).
func (l layout) scanReleases() (complete, leftovers []string, err error) {
	entries, err := os.ReadDir(l.releasesDir())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() && !strings.HasPrefix(name, ".") && l.markerOf(name) != "" {
			complete = append(complete, name)
		} else {
			leftovers = append(leftovers, name)
		}
	}
	return complete, leftovers, nil
}

// cleanLeftovers removes what an interrupted run left in an app directory:
// temporary extraction dirs, releases without a marker (renamed but not
// finished), and half-made current.tmp-* symlinks. The release `current`
// points at is never touched.
func (l layout) cleanLeftovers() ([]string, error) {
	cur, err := l.current()
	if err != nil {
		return nil, err
	}
	_, leftovers, err := l.scanReleases()
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, name := range leftovers {
		if name == cur {
			continue
		}
		if err := os.RemoveAll(filepath.Join(l.releasesDir(), name)); err != nil {
			return removed, err
		}
		removed = append(removed, filepath.Join(releasesDirName, name))
	}
	entries, err := os.ReadDir(l.appDir())
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return removed, err
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), currentName+tmpPrefix) {
			if err := os.Remove(filepath.Join(l.appDir(), e.Name())); err != nil {
				return removed, err
			}
			removed = append(removed, e.Name())
		}
	}
	return removed, nil
}

func randomSuffix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// syncDir makes a rename or create in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}

// writeFileAtomic writes a file through a temporary name, fsyncs it,
// renames it into place and fsyncs the directory.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Chmod(perm); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	ok = true
	return syncDir(dir)
}

// syncTreeMaxFiles is the most files syncTree flushes one by one; a bigger
// release is flushed with one syncfs.
const syncTreeMaxFiles = 64

// syncTree makes a fresh extraction durable. A small release (most are a
// few binaries and a rel.yaml) gets an fsync per file and directory: that
// waits for its own bytes only, where syncfs would also wait for whatever
// else the host is writing (other installs, a database). A large one gets a
// single syncfs, cheaper than thousands of fsyncs.
func syncTree(dir string) error {
	var files, dirs []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			dirs = append(dirs, path)
		case d.Type().IsRegular():
			files = append(files, path)
		}
		if len(files) > syncTreeMaxFiles {
			return fs.SkipAll
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(files) > syncTreeMaxFiles {
		return syncFS(dir)
	}
	for _, p := range files {
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		err = f.Sync()
		f.Close()
		if err != nil {
			return fmt.Errorf("fsync %s: %w", p, err)
		}
	}
	for _, d := range dirs {
		if err := syncDir(d); err != nil {
			return err
		}
	}
	return nil
}

// syncFS flushes the whole filesystem holding dir: one call makes every
// file of a fresh extraction durable before its marker is written, where an
// fsync per file would cost a disk flush per file.
func syncFS(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := unix.Syncfs(int(d.Fd())); err != nil {
		return fmt.Errorf("syncfs %s: %w", dir, err)
	}
	return nil
}
