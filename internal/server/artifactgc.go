package server

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/relhq/rel/internal/retry"
	"github.com/relhq/rel/internal/validate"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// artifactGCLoop runs on the leader: every ArtifactGCInterval it removes
// the blobs of its store that no release references and that it stored
// more than --artifact-grace ago, one small RemoveArtifacts entry per pass.
// The age is this server's copy's mtime: a blob uploaded to a follower
// that the leader fetched later counts from the fetch, so the grace is
// never shorter than asked. Blobs the leader never held are not seen.
func (s *Server) artifactGCLoop(ctx context.Context) {
	for retry.Sleep(ctx, retry.Jitter(s.cfg.ArtifactGCInterval)) {
		if _, err := s.artifactGCPass(ctx); err != nil && ctx.Err() == nil {
			s.logger.Warn("artifact gc: pass failed; the next pass retries", "err", err)
		}
	}
}

// artifactGCPass is one pass; it returns how many blobs it removed.
func (s *Server) artifactGCPass(ctx context.Context) (int, error) {
	blobs, err := s.artifacts.List()
	if err != nil {
		return 0, err
	}
	refs, _, err := s.store.ReferencedArtifacts(nil)
	if err != nil {
		return 0, err
	}
	tombs, _, err := s.store.ArtifactTombstones(nil)
	if err != nil {
		return 0, err
	}
	pending := map[string]bool{}
	done := s.removals.processed()
	for _, t := range tombs {
		// Removed already and not deleted here yet: nothing to decide. A
		// tombstone this server has handled and a blob still here means the
		// blob was stored again since; it is judged afresh.
		if t.GetModifyIndex() > done {
			pending[t.GetDigest()] = true
		}
	}
	cutoff := time.Now().Add(-s.cfg.ArtifactGrace)
	var digests []string
	var bytes int64
	for _, b := range blobs {
		if len(refs[b.Digest]) > 0 || pending[b.Digest] || b.ModTime.After(cutoff) {
			continue
		}
		digests = append(digests, b.Digest)
		bytes += b.Size
		if len(digests) == validate.MaxRemovedArtifacts {
			break
		}
	}
	if len(digests) == 0 {
		return 0, nil
	}
	slices.Sort(digests)
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	idx, err := s.apply(actx, &relv1.Command{Kind: &relv1.Command_RemoveArtifacts{RemoveArtifacts: &relv1.RemoveArtifacts{Digests: digests}}})
	if err != nil {
		return 0, err
	}
	// The FSM skips digests a release took meanwhile: count what it kept.
	removed := 0
	for _, d := range digests {
		if t, err := s.store.ArtifactTombstone(d); err == nil && t.GetModifyIndex() == idx {
			removed++
		}
	}
	s.metrics.artifactsRemoved.Add(float64(removed))
	s.logger.Info("artifact gc: removed unreferenced artifacts", "count", removed, "skipped", len(digests)-removed,
		"bytes_here", bytes, "older_than", s.cfg.ArtifactGrace, "index", idx)
	return removed, nil
}

// removals deletes this server's copies of the blobs artifact GC removed,
// outside the FSM: it follows the tombstone table, and records through
// which index it has deleted (in memory, and in a file beside the store so
// a restart does not delete again a blob stored after its tombstone).
type removals struct {
	mu   sync.Mutex
	done uint64
	// changed is closed and replaced whenever done moves.
	changed chan struct{}
	file    string
}

func newRemovals(dir string) *removals {
	r := &removals{changed: make(chan struct{}), file: filepath.Join(dir, "removed-index")}
	if b, err := os.ReadFile(r.file); err == nil {
		r.done, _ = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	}
	return r
}

// processed is the tombstone table index through which this server has
// deleted removed blobs.
func (r *removals) processed() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.done
}

func (r *removals) advance(idx uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if idx <= r.done {
		return
	}
	r.done = idx
	close(r.changed)
	r.changed = make(chan struct{})
	tmp := r.file + ".tmp"
	if os.WriteFile(tmp, []byte(strconv.FormatUint(idx, 10)+"\n"), 0o600) == nil {
		os.Rename(tmp, r.file)
	}
}

// wait blocks until processed reaches idx.
func (r *removals) wait(ctx context.Context, idx uint64) error {
	for {
		r.mu.Lock()
		done, ch := r.done, r.changed
		r.mu.Unlock()
		if done >= idx {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// watchRemovals deletes this server's copy of every blob a RemoveArtifacts
// entry tombstoned, once this replica has applied it.
func (s *Server) watchRemovals() {
	for s.ctx.Err() == nil {
		ws := newWatch(s.store)
		tombs, idx, err := s.store.ArtifactTombstones(ws)
		if err != nil {
			s.logger.Error("read artifact tombstones", "err", err)
			return
		}
		done := s.removals.processed()
		var freed int64
		n := 0
		for _, t := range tombs {
			if t.GetModifyIndex() <= done {
				continue
			}
			digest, at := t.GetDigest(), t.GetModifyIndex()
			// Asked under the store's lock: a release that lifted the
			// tombstone since keeps the blob.
			b, err := s.artifacts.Remove(digest, func() bool {
				cur, err := s.store.ArtifactTombstone(digest)
				return err != nil || cur == nil || cur.GetModifyIndex() != at
			})
			if err != nil {
				s.logger.Warn("artifact gc: could not delete a removed artifact", "sha256", digest, "err", err)
				continue
			}
			if b > 0 {
				freed += b
				n++
			}
		}
		if n > 0 {
			s.metrics.artifactBytesFreed.Add(float64(freed))
			s.logger.Info("artifact gc: deleted removed artifacts from this server's store", "count", n, "bytes", freed, "index", idx)
		}
		s.removals.advance(idx)
		if ws.WatchCtx(s.ctx) != nil {
			return
		}
	}
}

// awaitRemovals returns once this server has deleted its copy of digest
// for every removal of it this replica has applied, so that a blob stored
// again (uploaded, or fetched for a new upload) is not deleted right after
// by a removal that predates it.
func (s *Server) awaitRemovals(ctx context.Context, digest string) error {
	t, err := s.store.ArtifactTombstone(digest)
	if err != nil || t == nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := s.removals.wait(wctx, t.GetModifyIndex()); err != nil {
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			return fmt.Errorf("artifact %s is still being deleted from this server after a GC pass: try again shortly", digest)
		}
		return err
	}
	return nil
}
