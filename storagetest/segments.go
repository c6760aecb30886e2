package storagetest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/segment"
)

// testRollAndReadAcross: after a roll, writes go to the new segment, whose
// blob starts at the page of its start; the commit names it; a reader
// opened before reads across the boundary, each position from its own
// segment; the chain and extent say so.
func testRollAndReadAcross(t *testing.T, s messagevault.Storage) {
	ctx := context.Background()
	w := mustWriter(t, s, "rolling")
	r := mustReader(t, s, "rolling")
	first := pages(4, 1)
	if err := w.Grow(ctx, 4*page); err != nil {
		t.Fatal(err)
	}
	if err := w.WritePages(ctx, 0, first); err != nil {
		t.Fatal(err)
	}
	start := int64(3*page + 100) // inside the 4th page, as a record boundary is
	if err := w.Roll(ctx, start); err != nil {
		t.Fatal(err)
	}
	if size, err := w.Size(ctx); err != nil || size != 3*page {
		t.Fatalf("Size after a roll = %d, %v; want %d (the new blob starts at the page of its start)", size, err, 3*page)
	}
	if err := w.WritePages(ctx, 0, first[:page]); !errors.Is(err, messagevault.ErrOutOfRange) {
		t.Fatalf("a write before the active segment: %v, want ErrOutOfRange", err)
	}
	second := pages(3, 2)
	if err := w.Grow(ctx, 6*page); err != nil {
		t.Fatal(err)
	}
	if err := w.WritePages(ctx, 3*page, second); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.CommitPosition(ctx, 5*page); err != nil {
		t.Fatal(err)
	}
	e, err := r.Extent(ctx)
	if err != nil || e != (messagevault.Extent{Position: 5 * page, Segment: start}) {
		t.Fatalf("Extent after a roll = %+v, %v", e, err)
	}
	if segs, err := r.Segments(ctx); err != nil || len(segs) != 2 || segs[0] != 0 || segs[1] != start {
		t.Fatalf("Segments = %v, %v; want [0 %d]", segs, err, start)
	}
	got := readAll(t, r, 0, 5*page)
	want := append(append([]byte{}, first[:start]...), second[start-3*page:2*page]...)
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("byte %d read across the segments: %d, want %d (from the %s segment)", i, got[i], want[i], map[bool]string{true: "first", false: "second"}[int64(i) < start])
		}
	}
}

// testUncommittedRoll: a roll that was never committed is undone by
// Refence and by the next writer, and its segment is never read.
func testUncommittedRoll(t *testing.T, s messagevault.Storage) {
	ctx := context.Background()
	w := mustWriter(t, s, "undone")
	if err := w.Grow(ctx, 2*page); err != nil {
		t.Fatal(err)
	}
	if err := w.WritePages(ctx, 0, pages(2, 5)); err != nil {
		t.Fatal(err)
	}
	if err := w.CommitPosition(ctx, 2*page); err != nil {
		t.Fatal(err)
	}
	if err := w.Roll(ctx, 2*page); err != nil {
		t.Fatal(err)
	}
	if err := w.Grow(ctx, 3*page); err != nil {
		t.Fatal(err)
	}
	if err := w.WritePages(ctx, 2*page, pages(1, 6)); err != nil {
		t.Fatal(err)
	}
	if err := w.Refence(ctx); err != nil {
		t.Fatal(err)
	}
	if size, err := w.Size(ctx); err != nil || size < 2*page {
		t.Fatalf("Size after Refence = %d, %v: not the first segment's", size, err)
	}
	if e, err := w.Extent(ctx); err != nil || e.Segment != 0 || e.Position != 2*page {
		t.Fatalf("Extent after an uncommitted roll = %+v, %v", e, err)
	}
	// Rolled again, elsewhere: the leftover must not enter the chain.
	if err := w.Roll(ctx, 2*page-10); err != nil {
		t.Fatal(err)
	}
	if err := w.Grow(ctx, 4*page); err != nil {
		t.Fatal(err)
	}
	if err := w.WritePages(ctx, page, pages(3, 7)); err != nil {
		t.Fatal(err)
	}
	if err := w.CommitPosition(ctx, 3*page); err != nil {
		t.Fatal(err)
	}
	r := mustReader(t, s, "undone")
	if segs, err := r.Segments(ctx); err != nil || len(segs) != 2 || segs[1] != 2*page-10 {
		t.Fatalf("Segments = %v, %v; want [0 %d]", segs, err, 2*page-10)
	}
}

// testTrim: a trim records the new start with the position and removes
// the segments before it; reads below it fail with a TrimmedError; the
// extent survives a new writer.
func testTrim(t *testing.T, s messagevault.Storage) {
	ctx := context.Background()
	w := mustWriter(t, s, "trimmed")
	if err := w.Grow(ctx, 2*page); err != nil {
		t.Fatal(err)
	}
	if err := w.WritePages(ctx, 0, pages(2, 8)); err != nil {
		t.Fatal(err)
	}
	for i, st := range []int64{2 * page, 4 * page} {
		if err := w.Roll(ctx, st); err != nil {
			t.Fatal(err)
		}
		if err := w.Grow(ctx, st+2*page); err != nil {
			t.Fatal(err)
		}
		if err := w.WritePages(ctx, st, pages(2, uint64(9+i))); err != nil {
			t.Fatal(err)
		}
		if err := w.CommitPosition(ctx, st+2*page); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Trim(ctx, 3*page); !errors.Is(err, messagevault.ErrOutOfRange) {
		t.Fatalf("a trim where no segment starts: %v, want ErrOutOfRange", err)
	}
	if err := w.Trim(ctx, 6*page); !errors.Is(err, messagevault.ErrOutOfRange) {
		t.Fatalf("a trim past the active segment: %v, want ErrOutOfRange", err)
	}
	r := mustReader(t, s, "trimmed")
	readAll(t, r, 0, page) // a reader that read the first segment before
	if err := w.Trim(ctx, 2*page); err != nil {
		t.Fatal(err)
	}
	// Once a reader has read the extent again (as it does before each
	// read), below the start is an error. (Before, a local reader may
	// finish reading a file it has open.)
	if _, err := r.Position(ctx); err != nil {
		t.Fatal(err)
	}
	var te *messagevault.TrimmedError
	if _, err := r.ReadAt(ctx, make([]byte, 10), 100); !errors.As(err, &te) || te.Start != 2*page {
		t.Fatalf("a read below the start: %v, want a TrimmedError with start %d", err, 2*page)
	}
	if segs, err := r.Segments(ctx); err != nil || len(segs) != 2 || segs[0] != 2*page {
		t.Fatalf("Segments after a trim = %v, %v", segs, err)
	}
	readAll(t, r, 2*page, 4*page)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w2 := mustWriter(t, s, "trimmed")
	if e, err := w2.Extent(ctx); err != nil || e != (messagevault.Extent{Position: 6 * page, Start: 2 * page, Segment: 4 * page}) {
		t.Fatalf("Extent for a new writer = %+v, %v", e, err)
	}
	if size, err := w2.Size(ctx); err != nil || size != 6*page {
		t.Fatalf("Size for a new writer = %d, %v; want %d", size, err, 6*page)
	}
	if segment.Name(4*page) != "000000002048.b7" {
		t.Fatalf("segment name %q", segment.Name(4*page))
	}
}

// testTimeIndex: the time index reads back what was written, a stream
// without one reads as empty, and readers see it.
func testTimeIndex(t *testing.T, s messagevault.Storage) {
	ctx := context.Background()
	w := mustWriter(t, s, "indexed")
	if n, err := w.ReadIndex(ctx, make([]byte, 16), 0); n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("ReadIndex of a stream without an index = %d, %v; want io.EOF", n, err)
	}
	if err := w.WriteIndex(ctx, 100, make([]byte, page)); !errors.Is(err, messagevault.ErrOutOfRange) {
		t.Fatalf("an unaligned index write: %v, want ErrOutOfRange", err)
	}
	a, b := pages(1, 21), pages(2, 22)
	if err := w.WriteIndex(ctx, 0, a); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteIndex(ctx, 3*page, b); err != nil {
		t.Fatal(err)
	}
	r := mustReader(t, s, "indexed")
	got := make([]byte, 5*page)
	n, err := r.ReadIndex(ctx, got, 0)
	if n < 5*page && !errors.Is(err, io.EOF) {
		t.Fatalf("ReadIndex = %d, %v", n, err)
	}
	if n < 5*page {
		t.Fatalf("ReadIndex read %d of the %d bytes written", n, 5*page)
	}
	if !bytes.Equal(got[:page], a) || !bytes.Equal(got[3*page:5*page], b) || !bytes.Equal(got[page:3*page], make([]byte, 2*page)) {
		t.Fatal("the time index does not read back as written (the gap as zeros)")
	}
}
