package state

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

func storedRelease(version, digest string) *relv1.Release {
	return &relv1.Release{App: "web", Version: version, Sha256: digest, ArtifactUrl: "rel://sha256/" + digest}
}

// TestRemoveArtifacts: a GC pass tombstones only digests no release uses;
// a release decided before a removal of its blob is refused, one decided
// after its server deleted and stored the blob again lifts the tombstone;
// tombstones survive a snapshot.
func TestRemoveArtifacts(t *testing.T) {
	a, b, c := strings.Repeat("a", 64), strings.Repeat("b", 64), strings.Repeat("c", 64)
	s := New()
	mustApp(t, s, 1, "web")
	if err := s.CreateRelease(2, storedRelease("1.0.0", a)); err != nil {
		t.Fatal(err)
	}
	// a is referenced (the release was created after the leader looked):
	// skipped.
	removed, err := s.RemoveArtifacts(10, 1000, []string{a, b, c})
	if err != nil || len(removed) != 2 || removed[0] != b || removed[1] != c {
		t.Fatalf("RemoveArtifacts = %v, %v; want b and c", removed, err)
	}
	ts, idx, err := s.ArtifactTombstones(nil)
	if err != nil || len(ts) != 2 || idx != 10 || ts[0].GetModifyIndex() != 10 || ts[0].GetRemovedUnixNano() != 1000 {
		t.Fatalf("tombstones %v at %d, %v", ts, idx, err)
	}

	tests := []struct {
		name    string
		version string
		digest  string
		checked uint64
		wantErr error
		msg     string
	}{
		{"decided before the removal", "2.0.0", b, 9, ErrConflict, "was removed from the cluster's store by artifact GC"},
		{"an external URL is not the store's", "2.0.1", "", 0, nil, ""},
		{"stored again after the removal", "2.0.2", b, 10, nil, ""},
		{"a digest never removed", "2.0.3", a, 0, nil, ""},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := storedRelease(tt.version, tt.digest)
			if tt.digest == "" {
				r = &relv1.Release{App: "web", Version: tt.version, Sha256: c, ArtifactUrl: "https://example.com/" + c}
			}
			err := s.CreateReleaseChecked(uint64(20+i), r, tt.checked)
			if !errors.Is(err, tt.wantErr) || (err != nil && !strings.Contains(err.Error(), tt.msg)) {
				t.Fatalf("CreateReleaseChecked: %v, want %v %q", err, tt.wantErr, tt.msg)
			}
			if _, _, gerr := s.Release(nil, "web", tt.version); (gerr == nil) != (err == nil) {
				t.Fatalf("release stored %v after %v", gerr == nil, err)
			}
		})
	}
	// b's tombstone was lifted by the release that used it; c's is still
	// there (the external URL with c's sha256 does not use the store).
	if t1, _ := s.ArtifactTombstone(b); t1 != nil {
		t.Errorf("b's tombstone %v not lifted", t1)
	}
	if t2, _ := s.ArtifactTombstone(c); t2 == nil {
		t.Error("c's tombstone lifted by an external release")
	}
	// A later pass moves c's tombstone to its index.
	if removed, err := s.RemoveArtifacts(30, 2000, []string{c}); err != nil || len(removed) != 1 {
		t.Fatalf("second pass: %v %v", removed, err)
	}
	if t2, _ := s.ArtifactTombstone(c); t2.GetModifyIndex() != 30 || t2.GetCreateIndex() != 10 {
		t.Errorf("c's tombstone after a second pass: %v", t2)
	}
	refs, _, err := s.ReferencedArtifacts(nil)
	if err != nil || len(refs[a]) != 2 || len(refs[b]) != 1 || len(refs[c]) != 0 {
		t.Errorf("ReferencedArtifacts = %v %v", refs, err)
	}

	var buf bytes.Buffer
	if err := s.Snapshot().Persist(&buf); err != nil {
		t.Fatal(err)
	}
	dst := New()
	if err := dst.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	got, idx, _ := dst.ArtifactTombstones(nil)
	want, widx, _ := s.ArtifactTombstones(nil)
	if len(got) != len(want) || idx != widx || !proto.Equal(got[0], want[0]) {
		t.Fatalf("restored tombstones %v at %d, want %v at %d", got, idx, want, widx)
	}
}
