// Package segment owns the chain of segments a stream's records are stored
// in: their names, which segment holds a position, and Reader, the one
// reader of the chain that every backend and read grant uses.
//
// A stream is a chain of segment blobs (files locally), each named by the
// position of its first record, zero-padded to at least 12 digits:
// "000000000000.b7" first, the name the original's layout reserved. A
// record never straddles two segments, so every segment's name is a
// record start. Byte 0 of a segment's blob is position Base(start), the
// start of the page that holds its first record, so that pages line up
// with the stream's pages; the bytes before start in that first page are
// not part of the segment (the writer fills them with the end of the
// previous segment's last page).
//
// The committed position record (messagevault.Extent) names the active
// segment and the first stored position; the chain is every stored
// segment between the two. Segments outside it are left over by a crash
// (a roll never committed, a trim that did not finish removing) and are
// never read.
package segment

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/messagevault/messagevault"
)

// Suffix ends every segment's name.
const Suffix = ".b7"

// Name returns the blob or file name of the segment that starts at start.
func Name(start int64) string { return fmt.Sprintf("%012d%s", start, Suffix) }

// Parse returns the start of the segment named name, and false if name is
// not a segment's name.
func Parse(name string) (int64, bool) {
	digits, ok := strings.CutSuffix(name, Suffix)
	if !ok || len(digits) < 12 {
		return 0, false
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || Name(n) != name {
		return 0, false
	}
	return n, true
}

// Base returns the position of byte 0 of the blob of the segment that
// starts at start: the start of the page holding start.
func Base(start int64) int64 { return start - start%messagevault.PageSize }

// Chain returns, sorted, the segments of present (any order, duplicates
// allowed) that belong to the stream whose committed extent is e: those
// from e.Start to e.Segment. It fails if the active segment is not
// present.
func Chain(present []int64, e messagevault.Extent) ([]int64, error) {
	var chain []int64
	for _, s := range present {
		if s >= e.Start && s <= e.Segment {
			chain = append(chain, s)
		}
	}
	slices.Sort(chain)
	chain = slices.Compact(chain)
	if len(chain) == 0 && e == (messagevault.Extent{}) {
		// A new stream whose first segment is being created.
		return []int64{0}, nil
	}
	if len(chain) == 0 || chain[len(chain)-1] != e.Segment {
		return nil, fmt.Errorf("the active segment %s is missing: %w", Name(e.Segment), messagevault.ErrCorrupt)
	}
	if chain[0] != e.Start {
		return nil, fmt.Errorf("the first stored segment %s is missing: %w", Name(e.Start), messagevault.ErrCorrupt)
	}
	return chain, nil
}

// Leftovers returns the segments of present that are not in the chain of
// e: garbage a crash left behind, for a writer to remove.
func Leftovers(present []int64, e messagevault.Extent) []int64 {
	var out []int64
	for _, s := range present {
		if s < e.Start || s > e.Segment {
			out = append(out, s)
		}
	}
	return out
}

// Find returns the index in chain (sorted, not empty) of the segment that
// holds position off: the last one that starts at or before it (0 if off
// is before them all).
func Find(chain []int64, off int64) int {
	i, found := slices.BinarySearch(chain, off)
	if found {
		return i
	}
	return max(i-1, 0)
}
