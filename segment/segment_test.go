package segment_test

import (
	"context"
	"io"

	"slices"
	"sync"
	"testing"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/segment"
)

func TestNames(t *testing.T) {
	for _, tt := range []struct {
		start int64
		name  string
	}{{0, "000000000000.b7"}, {1048576, "000001048576.b7"}, {1234567890123456, "1234567890123456.b7"}} {
		if got := segment.Name(tt.start); got != tt.name {
			t.Fatalf("Name(%d) = %q, want %q", tt.start, got, tt.name)
		}
		if got, ok := segment.Parse(tt.name); !ok || got != tt.start {
			t.Fatalf("Parse(%q) = %d, %v", tt.name, got, ok)
		}
	}
	for _, bad := range []string{"position.c7", "00000000000.b7", "0000000000001.b7x", "00000000000a.b7", "-00000000001.b7", "0000000000000.b7"} {
		if _, ok := segment.Parse(bad); ok {
			t.Fatalf("Parse(%q) accepted a name that is not a segment's", bad)
		}
	}
}

func TestChainAndLeftovers(t *testing.T) {
	present := []int64{3000, 0, 1000, 2000, 4000}
	e := messagevault.Extent{Position: 3500, Start: 1000, Segment: 3000}
	chain, err := segment.Chain(present, e)
	if err != nil || !slices.Equal(chain, []int64{1000, 2000, 3000}) {
		t.Fatalf("Chain = %v, %v", chain, err)
	}
	if left := segment.Leftovers(present, e); !slices.Equal(left, []int64{0, 4000}) {
		t.Fatalf("Leftovers = %v", left)
	}
	if _, err := segment.Chain([]int64{0, 2000}, messagevault.Extent{Position: 2500, Segment: 3000}); err == nil {
		t.Fatal("a chain without its active segment was accepted")
	}
	if _, err := segment.Chain([]int64{2000, 3000}, messagevault.Extent{Position: 3500, Start: 1000, Segment: 3000}); err == nil {
		t.Fatal("a chain without its first stored segment was accepted")
	}
	if chain, err := segment.Chain(nil, messagevault.Extent{}); err != nil || !slices.Equal(chain, []int64{0}) {
		t.Fatalf("a new stream whose first segment is being created: %v, %v", chain, err)
	}
	for off, want := range map[int64]int{0: 0, 999: 0, 1000: 1, 2999: 1, 3000: 2, 1 << 40: 2} {
		if got := segment.Find([]int64{0, 1000, 3000}, off); got != want {
			t.Fatalf("Find(%d) = %d, want %d", off, got, want)
		}
	}
}

// racyStore is a store trimmed between a reader's Extent and its List.
type racyStore struct {
	mu      sync.Mutex
	ext     messagevault.Extent
	present []int64
	trimmed bool
}

func (s *racyStore) Extent(context.Context) (messagevault.Extent, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ext, nil
}

func (s *racyStore) List(context.Context) ([]int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.trimmed {
		// The trim lands now: the start moves, the first segment goes.
		s.trimmed = true
		s.ext.Start = 1000
		s.present = s.present[1:]
	}
	return slices.Clone(s.present), nil
}

func (s *racyStore) ReadSegment(_ context.Context, start int64, p []byte, off int64) (int, error) {
	clear(p)
	return len(p), nil
}

func (s *racyStore) ReadIndex(context.Context, []byte, int64) (int, error) { return 0, io.EOF }

func (s *racyStore) Close() error { return nil }

// TestReaderSeesATrimMidway: a trim between reading the extent and
// listing the segments is not damage: the reader reads the extent again.
func TestReaderSeesATrimMidway(t *testing.T) {
	st := &racyStore{ext: messagevault.Extent{Position: 2500, Segment: 2000}, present: []int64{0, 1000, 2000}}
	r := segment.NewReader(st)
	e, err := r.Extent(context.Background())
	if err != nil || e.Start != 1000 {
		t.Fatalf("Extent across a trim: %+v, %v", e, err)
	}
	if segs, err := r.Segments(context.Background()); err != nil || !slices.Equal(segs, []int64{1000, 2000}) {
		t.Fatalf("Segments = %v, %v", segs, err)
	}
}

// countingStore counts its listings.
type countingStore struct {
	racyStore
	lists int
}

func (s *countingStore) List(context.Context) ([]int64, error) {
	s.lists++
	return slices.Clone(s.present), nil
}

// TestSharedChains: readers that share Chains list the segments once per
// change of the chain, not once each.
func TestSharedChains(t *testing.T) {
	ctx := context.Background()
	st := &countingStore{racyStore: racyStore{ext: messagevault.Extent{Position: 2500, Segment: 2000}, present: []int64{0, 1000, 2000}}}
	var chains segment.Chains
	for range 3 {
		if _, err := segment.NewSharedReader(st, &chains, "s").Extent(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if st.lists != 1 {
		t.Fatalf("three readers listed %d times", st.lists)
	}
	st.ext.Segment, st.present = 3000, append(st.present, 3000)
	if segs, err := segment.NewSharedReader(st, &chains, "s").Segments(ctx); err != nil || len(segs) != 4 || st.lists != 2 {
		t.Fatalf("after a roll: %v, %v, %d listings", segs, err, st.lists)
	}
}
