package state

import (
	"bytes"
	"testing"

	"pgregory.net/rapid"

	relv1 "github.com/relhq/rel/proto/rel/v1"
)

func seqs(t *testing.T, s *Store) []uint64 {
	t.Helper()
	var out []uint64
	if _, _, _, err := s.Events(nil, EventQuery{}, func(e *relv1.Event) bool { out = append(out, e.GetSeq()); return true }); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestTrimEvents: the retention pass removes the oldest events only, up
// to its bound, the cutoff and before_seq, never the newest; what stays
// is contiguous and the next event carries the sequence on.
func TestTrimEvents(t *testing.T) {
	tests := []struct {
		name      string
		before    uint64
		cutoff    int64
		max       int
		wantFirst uint64
	}{
		{"bounded by before_seq", 4, 1000, 0, 4},
		{"bounded by max", 10, 1000, 2, 3},
		{"bounded by the cutoff", 10, 3, 0, 3}, // events 1 and 2 are stamped 1 and 2
		{"never the newest", 100, 1000, 0, 6},
		{"nothing older", 10, 1, 0, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := New()
			for i := int64(1); i <= 6; i++ {
				if err := s.AppendEvents(uint64(i), i, nil, []*relv1.Event{{Type: "release.created"}}); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := s.TrimEvents(7, tc.before, tc.cutoff, tc.max); err != nil {
				t.Fatal(err)
			}
			got := seqs(t, s)
			if len(got) == 0 || got[0] != tc.wantFirst || got[len(got)-1] != 6 || len(got) != int(7-tc.wantFirst) {
				t.Fatalf("kept %v, want %d..6", got, tc.wantFirst)
			}
			if err := s.AppendEvents(8, 8, nil, []*relv1.Event{{Type: "release.created"}}); err != nil {
				t.Fatal(err)
			}
			if got := seqs(t, s); got[len(got)-1] != 7 {
				t.Fatalf("next event seq %d, want 7", got[len(got)-1])
			}
		})
	}
}

// TestEventStreamProperty: any run of appends and trims keeps the stream
// a contiguous range of seqs ending at the number of events appended,
// never empty once written, and survives a snapshot round trip.
func TestEventStreamProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		s := New()
		var index, appended uint64
		steps := rapid.IntRange(1, 40).Draw(t, "steps")
		for i := 0; i < steps; i++ {
			index++
			if rapid.Bool().Draw(t, "append") {
				n := rapid.IntRange(0, 3).Draw(t, "n")
				extra := make([]*relv1.Event, n)
				for j := range extra {
					extra[j] = &relv1.Event{Type: "release.created"}
				}
				if err := s.AppendEvents(index, int64(index), nil, extra); err != nil {
					t.Fatal(err)
				}
				appended += uint64(n)
			} else {
				before := rapid.Uint64Range(0, appended+2).Draw(t, "before")
				cutoff := rapid.Int64Range(0, int64(index)+1).Draw(t, "cutoff")
				if _, err := s.TrimEvents(index, before, cutoff, rapid.IntRange(0, 5).Draw(t, "max")); err != nil {
					t.Fatal(err)
				}
			}
			var got []uint64
			if _, _, _, err := s.Events(nil, EventQuery{}, func(e *relv1.Event) bool { got = append(got, e.GetSeq()); return true }); err != nil {
				t.Fatal(err)
			}
			if appended == 0 {
				if len(got) != 0 {
					t.Fatalf("events %v before any was appended", got)
				}
				continue
			}
			if len(got) == 0 || got[len(got)-1] != appended {
				t.Fatalf("kept %v after %d appended: the newest must stay", got, appended)
			}
			for j := 1; j < len(got); j++ {
				if got[j] != got[j-1]+1 {
					t.Fatalf("kept %v: not contiguous", got)
				}
			}
		}
		var buf bytes.Buffer
		if err := s.Snapshot().Persist(&buf); err != nil {
			t.Fatal(err)
		}
		r := New()
		if err := r.Restore(&buf); err != nil {
			t.Fatal(err)
		}
		if ok, why := Equal(s, r); !ok {
			t.Fatalf("restored store differs: %s", why)
		}
	})
}
