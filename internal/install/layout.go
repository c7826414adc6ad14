package install

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"

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
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return err
	}
	if err := syncFS(dir); err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(dir, markerName), []byte(sha+"\n"), fileMode); err != nil {
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

// Modes of what the agent writes. Nothing of the agent's is world
// accessible: a release may hold secrets, and its logs what hooks print.
const (
	dirMode      = 0o750 // a release directory, .rel/, Root, <app>, releases/
	fileMode     = 0o640 // markers, hook logs, run.log
	dataDirMode  = 0o750 // DataDir (state.json is 0600 in it)
	privateMode  = 0o700 // DataDir/downloads: artifacts not yet verified
	traverseMode = 0o711 // Root, <app>, releases/ when releases run as other users
)

// makeDirs creates DataDir and its downloads directory. An existing DataDir
// keeps its mode (it may be a directory the operator made, even a shared
// one) but a world-accessible one is reported; downloads/ is the agent's
// own and always 0700.
func makeDirs(cfg Config) error {
	if err := ensureDir(cfg.DataDir, dataDirMode, false); err != nil {
		return fmt.Errorf("install: %w", err)
	}
	if fi, err := os.Stat(cfg.DataDir); err == nil && fi.Mode().Perm()&0o007 != 0 {
		cfg.Logger.Warn("data dir is accessible to every user; chmod o-rwx it", "dir", cfg.DataDir, "mode", fi.Mode().Perm())
	}
	if err := ensureDir(filepath.Join(cfg.DataDir, "downloads"), privateMode, true); err != nil {
		return fmt.Errorf("install: %w", err)
	}
	return nil
}

// ensureDir creates dir with exactly mode (whatever the umask), and sets
// the mode of an existing one when reset is true.
func ensureDir(dir string, mode os.FileMode, reset bool) error {
	fi, err := os.Stat(dir)
	switch {
	case err == nil && !fi.IsDir():
		return fmt.Errorf("%s is not a directory", dir)
	case err == nil && (!reset || fi.Mode().Perm() == mode):
		return nil
	case err == nil:
		return os.Chmod(dir, mode)
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	if err := os.MkdirAll(dir, mode); err != nil {
		return err
	}
	return os.Chmod(dir, mode)
}

// sharedMode is the mode of a release file or directory that a release
// running as another user reads through its group: the owner's read and
// execute bits for the group, never write, nothing for others. So 0755
// and 0700 become 0750, 0644 and 0600 become 0640.
func sharedMode(perm fs.FileMode) fs.FileMode {
	owner := perm & 0o700
	return owner | (owner>>3)&0o050
}

// shareTree gives a release tree to the group gid, read-only: owner stays
// the agent, group becomes the release user's primary group, modes become
// sharedMode. The service can read and execute its release but not change
// it (nor the next hook's view of it). The agent's .rel/ is left alone: its
// logs are the agent's, written through descriptors the agent opens.
// Everything goes through an *os.Root and symlinks are never followed.
func shareTree(dir string, gid int) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	todo := []string{"."}
	for len(todo) > 0 {
		name := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		fi, err := root.Lstat(name)
		if err != nil {
			return err
		}
		if err := root.Lchown(name, -1, gid); err != nil {
			return err
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			continue
		case fi.IsDir():
			if err := root.Chmod(name, sharedMode(fi.Mode().Perm())); err != nil {
				return err
			}
			d, err := root.Open(name)
			if err != nil {
				return err
			}
			entries, err := d.ReadDir(-1)
			d.Close()
			if err != nil {
				return err
			}
			for _, e := range entries {
				if name == "." && e.Name() == relDirName {
					continue
				}
				todo = append(todo, path.Join(name, e.Name()))
			}
		case fi.Mode().IsRegular():
			if err := root.Chmod(name, sharedMode(fi.Mode().Perm())); err != nil {
				return err
			}
		}
	}
	return nil
}

// ensureShared makes a release directory fit the user it is about to run
// as: shared with that user's group when it is another user (a kept
// release installed for someone else, or before RunAs changed), taken back
// to the agent's group when it is not (a user no longer used keeps no
// access), and not open to the world in any case (a release unpacked by an
// older agent).
func ensureShared(dir string, u *runUser) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("%s: no owner information", dir)
	}
	if u.other() {
		if int(st.Gid) != u.gid || fi.Mode().Perm()&0o027 != 0 {
			return shareTree(dir, u.gid)
		}
		return nil
	}
	if int(st.Gid) != os.Getegid() && int(st.Uid) == os.Geteuid() {
		return shareTree(dir, os.Getegid())
	}
	if fi.Mode().Perm()&0o007 != 0 {
		return os.Chmod(dir, fi.Mode().Perm()&^0o007)
	}
	return nil
}
