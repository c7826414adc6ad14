package agent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// stateFile is the agent's own record in its data dir.
const stateFile = "agent.json"

// localState is what the agent keeps across restarts: the newest
// desired-state generation it acted on (so it never goes back in time after
// reconnecting to a lagging server) and, per app, the last target it started
// converging to (so reports about an install carry its rollout, and a failed
// install is not retried by a mere reconnect or restart).
type localState struct {
	NodeID         string `json:"node_id"`
	LastGeneration uint64 `json:"last_generation"`
	// ClusterID names the cluster LastGeneration belongs to.
	ClusterID string             `json:"cluster_id,omitempty"`
	Apps      map[string]attempt `json:"apps,omitempty"`
}

// attempt is the last target the agent started converging one app to.
type attempt struct {
	Version    string `json:"version"`
	SHA256     string `json:"sha256"`
	RolloutID  string `json:"rollout_id,omitempty"`
	Generation uint64 `json:"generation"`
	// Failed says the install ended failed (the installer gave up, not the
	// agent stopping it): the same target for the same rollout is not tried
	// again. An install interrupted by a crash or restart is not Failed and
	// is tried again.
	Failed bool `json:"failed,omitempty"`
}

// sameTarget says whether a and b are the same release for the same
// rollout.
func (a attempt) sameTarget(b attempt) bool {
	return a.Version == b.Version && a.SHA256 == b.SHA256 && a.RolloutID == b.RolloutID
}

// loadState reads DataDir/agent.json. A missing file is an empty state; an
// unreadable one is an error: starting from generation 0 could act on an
// older desired state than one already acted on.
func loadState(dir string) (localState, error) {
	var st localState
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("read agent state: %w", err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("agent state %s is corrupt (%v): move it aside to start over, the agent then accepts any desired state the cluster sends", filepath.Join(dir, stateFile), err)
	}
	return st, nil
}

// saveState writes DataDir/agent.json atomically: a temp file in the same
// dir, fsync, rename over the old file, fsync of the dir.
func saveState(dir string, st localState) error {
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	f, err := os.CreateTemp(dir, stateFile+".tmp-*")
	if err != nil {
		return fmt.Errorf("write agent state: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a successful rename this fails harmlessly
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("write agent state: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("write agent state: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write agent state: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, stateFile)); err != nil {
		return fmt.Errorf("write agent state: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("write agent state: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("write agent state: sync dir: %w", err)
	}
	return nil
}
