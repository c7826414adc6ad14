package install

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

const stateFormat = 1

// appRecord is one app in state.json.
type appRecord struct {
	App             string    `json:"app"`
	Version         string    `json:"version"`
	PreviousVersion string    `json:"previous_version,omitempty"`
	SHA256          string    `json:"sha256,omitempty"` // of Version
	Phase           Phase     `json:"phase"`
	Reason          string    `json:"reason,omitempty"`
	Since           time.Time `json:"since"`
	// Current is what `current` pointed at when this was written and
	// Replaced the release it replaced; Replaced is never pruned so that a
	// rollback is a switch.
	Current  string   `json:"current,omitempty"`
	Replaced string   `json:"replaced,omitempty"`
	Kept     []string `json:"kept,omitempty"` // most recently activated first
	// Service is the run process last started for the app, while the
	// agent has not stopped it: it outlives the agent, and the next agent
	// adopts it from this record or stops it.
	Service *serviceRecord `json:"service,omitempty"`
}

// serviceRecord is a run process as the agent started it: what tells it
// from any other process that ever had its pid (the boot, the pid, the
// clock tick it was forked at), and what it runs.
type serviceRecord struct {
	Release string `json:"release"` // the version it belongs to
	Dir     string `json:"dir"`     // that release's directory, its working directory
	PID     int    `json:"pid"`
	// PGID is its process group, and its session: every run process
	// leads both (pgid = sid = pid). Stopping it signals the group.
	PGID int `json:"pgid"`
	// StartTicks is field 22 of /proc/<pid>/stat (clock ticks after boot
	// when it was forked) and BootID /proc/sys/kernel/random/boot_id.
	StartTicks uint64    `json:"start_ticks"`
	BootID     string    `json:"boot_id"`
	User       string    `json:"user"` // the user it runs as
	UID        int       `json:"uid"`
	Started    time.Time `json:"started"`
}

func (r *serviceRecord) id() processID {
	return processID{pid: r.PID, start: r.StartTicks, boot: r.BootID}
}

type stateFile struct {
	Format int                   `json:"format"`
	Apps   map[string]*appRecord `json:"apps"`
}

// stateStore is state.json: read once at start, rewritten atomically
// (temporary file, fsync, rename, fsync dir) at every phase change so that
// a restarted agent knows where every app was.
type stateStore struct {
	path string
	mu   sync.Mutex
	apps map[string]*appRecord
}

func loadState(path string) (*stateStore, error) {
	s := &stateStore{path: path, apps: map[string]*appRecord{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, err
	}
	var f stateFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if f.Format != stateFormat {
		return nil, fmt.Errorf("%s: format %d, this agent reads format %d", path, f.Format, stateFormat)
	}
	for name, r := range f.Apps {
		if r == nil {
			continue
		}
		r.App = name
		s.apps[name] = r
	}
	return s, nil
}

// get returns a copy of an app's record (the zero record if unknown).
func (s *stateStore) get(app string) appRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.apps[app]; ok {
		c := *r
		c.Kept = slices.Clone(r.Kept)
		if r.Service != nil {
			svc := *r.Service
			c.Service = &svc
		}
		return c
	}
	return appRecord{App: app}
}

func (s *stateStore) names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.apps))
	for n := range s.apps {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// update changes one app's record and writes the file. The in-memory
// record changes even when the write fails, so that Installed tells the
// truth about this process; the error is returned for the caller to report.
func (s *stateStore) update(app string, f func(r *appRecord)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.apps[app]
	if !ok {
		r = &appRecord{App: app}
		s.apps[app] = r
	}
	f(r)
	return s.saveLocked()
}

func (s *stateStore) saveLocked() error {
	b, err := json.MarshalIndent(stateFile{Format: stateFormat, Apps: s.apps}, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(s.path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(s.path), err)
	}
	return nil
}

// touchKept moves version to the front of the kept list.
func touchKept(kept []string, version string) []string {
	out := []string{version}
	for _, v := range kept {
		if v != version {
			out = append(out, v)
		}
	}
	return out
}
