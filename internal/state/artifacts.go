package state

import (
	"fmt"
	"sort"

	"github.com/hashicorp/go-memdb"

	"github.com/relhq/rel/internal/artifact"
	relv1 "github.com/relhq/rel/proto/rel/v1"
)

// MaxArtifactTombstones bounds the tombstone table; past it the oldest go.
// A tombstone is only needed until every server has deleted its copy and no
// release decided before the removal can still be in flight, so keeping the
// latest 100,000 (about 10 MB) is plenty.
const MaxArtifactTombstones = 100_000

// RemoveArtifacts applies an artifact GC pass: each digest that no release
// references now gets a tombstone at index (a newer pass of a digest moves
// its tombstone to the new index); a digest a release references is
// skipped, since the release was created after the leader looked. Deleting
// the files is each server's own work, outside the FSM (see ArtifactTombstones).
// It returns the digests tombstoned.
func (s *Store) RemoveArtifacts(index uint64, stamp int64, digests []string) ([]string, error) {
	txn := s.writeTxn()
	defer txn.Abort()
	referenced, err := referencedArtifacts(txn)
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, d := range digests {
		if referenced[d] {
			continue
		}
		row := &relv1.ArtifactTombstone{Digest: d, RemovedUnixNano: stamp, CreateIndex: index, ModifyIndex: index}
		old, err := txn.First(TableArtifactTombstones, "id", d)
		if err != nil {
			return nil, fmt.Errorf("state: lookup tombstone: %w", err)
		}
		if old != nil {
			row.CreateIndex = old.(*relv1.ArtifactTombstone).GetCreateIndex()
		}
		if err := txn.Insert(TableArtifactTombstones, row); err != nil {
			return nil, fmt.Errorf("state: insert tombstone: %w", err)
		}
		removed = append(removed, d)
	}
	if len(removed) == 0 {
		txn.Commit()
		return nil, nil
	}
	if err := trimTombstones(txn); err != nil {
		return nil, err
	}
	if err := setIndex(txn, TableArtifactTombstones, index); err != nil {
		return nil, err
	}
	txn.Commit()
	return removed, nil
}

// trimTombstones drops the oldest tombstones past MaxArtifactTombstones.
func trimTombstones(txn *memdb.Txn) error {
	it, err := txn.Get(TableArtifactTombstones, "id")
	if err != nil {
		return fmt.Errorf("state: list tombstones: %w", err)
	}
	var all []*relv1.ArtifactTombstone
	for raw := it.Next(); raw != nil; raw = it.Next() {
		all = append(all, raw.(*relv1.ArtifactTombstone))
	}
	if len(all) <= MaxArtifactTombstones {
		return nil
	}
	// By index, then digest: the same order on every replica.
	sort.Slice(all, func(i, j int) bool {
		if all[i].GetModifyIndex() != all[j].GetModifyIndex() {
			return all[i].GetModifyIndex() < all[j].GetModifyIndex()
		}
		return all[i].GetDigest() < all[j].GetDigest()
	})
	for _, t := range all[:len(all)-MaxArtifactTombstones] {
		if err := txn.Delete(TableArtifactTombstones, t); err != nil {
			return fmt.Errorf("state: trim tombstones: %w", err)
		}
	}
	return nil
}

// referencedArtifacts is the set of digests releases use from the cluster's
// store.
func referencedArtifacts(txn *memdb.Txn) (map[string]bool, error) {
	it, err := txn.Get(TableReleases, "id")
	if err != nil {
		return nil, fmt.Errorf("state: list releases: %w", err)
	}
	out := map[string]bool{}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		if d, ok := artifact.DigestFromURL(raw.(*relv1.Release).GetArtifactUrl()); ok {
			out[d] = true
		}
	}
	return out, nil
}

// ReferencedArtifacts lists, per digest in the cluster's store, the
// releases (app@version) that use it.
func (s *Store) ReferencedArtifacts(ws memdb.WatchSet) (map[string][]string, uint64, error) {
	txn := s.readTxn()
	it, err := txn.Get(TableReleases, "id")
	if err != nil {
		return nil, 0, fmt.Errorf("state: list releases: %w", err)
	}
	ws.Add(it.WatchCh())
	out := map[string][]string{}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		r := raw.(*relv1.Release)
		if d, ok := artifact.DigestFromURL(r.GetArtifactUrl()); ok {
			out[d] = append(out[d], r.GetApp()+"@"+r.GetVersion())
		}
	}
	return out, tableIndexOf(txn, ws, TableReleases), nil
}

// ArtifactTombstones lists the tombstones by digest; servers watch it to
// delete their copies of removed blobs.
func (s *Store) ArtifactTombstones(ws memdb.WatchSet) ([]*relv1.ArtifactTombstone, uint64, error) {
	txn := s.readTxn()
	it, err := txn.Get(TableArtifactTombstones, "id")
	if err != nil {
		return nil, 0, fmt.Errorf("state: list tombstones: %w", err)
	}
	ws.Add(it.WatchCh())
	var out []*relv1.ArtifactTombstone
	for raw := it.Next(); raw != nil; raw = it.Next() {
		out = append(out, raw.(*relv1.ArtifactTombstone))
	}
	return out, tableIndexOf(txn, ws, TableArtifactTombstones), nil
}

// ArtifactTombstone returns a digest's tombstone, or nil if it has none.
func (s *Store) ArtifactTombstone(digest string) (*relv1.ArtifactTombstone, error) {
	raw, err := s.readTxn().First(TableArtifactTombstones, "id", digest)
	if err != nil {
		return nil, fmt.Errorf("state: lookup tombstone: %w", err)
	}
	if raw == nil {
		return nil, nil
	}
	return raw.(*relv1.ArtifactTombstone), nil
}

// checkRemovedArtifact decides, inside CreateRelease's transaction, whether
// a release of a blob in the cluster's store may be created. A tombstone
// newer than checked (the index through which the accepting server had
// deleted removed blobs when it found this one) means the blob it found may
// be gone everywhere now: refused. An older one means that server stored
// the blob again after deleting it: the tombstone is lifted, so no server
// that has not deleted its copy yet will.
func checkRemovedArtifact(txn *memdb.Txn, index uint64, rel *relv1.Release, checked uint64) error {
	d, ok := artifact.DigestFromURL(rel.GetArtifactUrl())
	if !ok {
		return nil
	}
	raw, err := txn.First(TableArtifactTombstones, "id", d)
	if err != nil {
		return fmt.Errorf("state: lookup tombstone: %w", err)
	}
	if raw == nil {
		return nil
	}
	t := raw.(*relv1.ArtifactTombstone)
	if t.GetModifyIndex() > checked {
		return newError(ErrConflict, fmt.Sprintf("artifact %s was removed from the cluster's store by artifact GC (no release used it for --artifact-grace) while release %s@%s was being created: upload it again (relctl release create --artifact PATH)",
			rel.GetArtifactUrl(), rel.GetApp(), rel.GetVersion()))
	}
	if err := txn.Delete(TableArtifactTombstones, t); err != nil {
		return fmt.Errorf("state: lift tombstone: %w", err)
	}
	return setIndex(txn, TableArtifactTombstones, index)
}
