package stream_test

import (
	"context"
	"encoding/binary"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/formats"
	"github.com/messagevault/messagevault/mem"
	"github.com/messagevault/messagevault/stream"
)

// countingPages counts a PageReader's record reads.
type countingPages struct {
	messagevault.PageReader
	reads atomic.Int64
}

func (c *countingPages) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	c.reads.Add(1)
	return c.PageReader.ReadAt(ctx, p, off)
}

// scanFor is FindTime the slow way: the first record at or after t.
func scanFor(t *testing.T, pages messagevault.PageReader, at time.Time) int64 {
	t.Helper()
	ctx := context.Background()
	r := stream.NewReader("test", pages, stream.ReaderConfig{})
	e, err := r.Extent(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := formats.MillisSinceEpoch(at)
	for rec, err := range r.Records(ctx, e.Start, e.Position) {
		if err != nil {
			t.Fatal(err)
		}
		if int64(rec.ID.Millis()) >= want {
			return rec.Offset
		}
	}
	return e.Position
}

// clockedWriter appends groups of about 64 KB whose ids are one second
// apart, from t0, until the position passes until; it returns the clock.
func clockedWriter(t *testing.T, s *mem.Storage, t0 time.Time, until int64) (*stream.Writer, *atomic.Int64) {
	t.Helper()
	var now atomic.Int64
	now.Store(t0.UnixNano())
	pw, err := s.OpenWriter(context.Background(), "test")
	if err != nil {
		t.Fatal(err)
	}
	w := openWriter(t, pw, stream.WriterConfig{Now: func() time.Time { return time.Unix(0, now.Load()) }})
	for seq := 0; w.Position() < until; seq += 40 {
		if _, err := w.Append(context.Background(), batch(seq, 40)); err != nil {
			t.Fatal(err)
		}
		now.Add(int64(time.Second))
	}
	return w, &now
}

// indexEntries decodes the time index of stream "test".
func indexEntries(t *testing.T, r messagevault.PageReader) [][2]int64 {
	t.Helper()
	b := make([]byte, 1<<20)
	n, _ := r.ReadIndex(context.Background(), b, 0)
	var out [][2]int64
	for k := 0; k+16 <= n; k += 16 {
		ms := int64(binary.LittleEndian.Uint64(b[k+8:]))
		if ms == 0 {
			break
		}
		out = append(out, [2]int64{int64(binary.LittleEndian.Uint64(b[k:])), ms})
	}
	return out
}

// TestTimeIndex: the writer keeps an entry about every IndexInterval
// bytes, each naming a record and its time; FindTime answers as a full
// scan does, with fewer reads than without the index.
func TestTimeIndex(t *testing.T) {
	ctx := context.Background()
	s := mem.New()
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	w, _ := clockedWriter(t, s, t0, 8<<20)
	pos := w.Position()
	r := memReader(t, s)
	entries := indexEntries(t, r)
	if n := len(entries); int64(n) < pos/stream.IndexInterval || int64(n) > pos/stream.IndexInterval+1 {
		t.Fatalf("%d index entries for %d bytes", n, pos)
	}
	for i, e := range entries {
		if e[0] < int64(i)*stream.IndexInterval || i > 0 && e[0] <= entries[i-1][0] {
			t.Fatalf("entry %d at %d is out of place", i, e[0])
		}
		var head [18]byte
		r.ReadAt(ctx, head[:], e[0])
		var id formats.ID
		copy(id[:], head[2:])
		if id.Offset() != e[0] || int64(id.Millis()) != e[1] {
			t.Fatalf("entry %d (%d, %d) does not name its record", i, e[0], e[1])
		}
	}
	groups := int(pos / (40 * 800))
	with := &countingPages{PageReader: r}
	rd := stream.NewReader("test", with, stream.ReaderConfig{})
	for k := 0; k < 20; k++ {
		at := t0.Add(time.Duration(k*groups/20)*time.Second + 300*time.Millisecond)
		got, err := rd.FindTime(ctx, at)
		if err != nil {
			t.Fatal(err)
		}
		if want := scanFor(t, r, at); got != want {
			t.Fatalf("FindTime(%v) = %d, a scan says %d", at, got, want)
		}
	}
	// The same lookups with the index erased.
	erased := &countingPages{PageReader: &noIndex{r}}
	rd = stream.NewReader("test", erased, stream.ReaderConfig{})
	for k := 0; k < 20; k++ {
		at := t0.Add(time.Duration(k*groups/20)*time.Second + 300*time.Millisecond)
		if _, err := rd.FindTime(ctx, at); err != nil {
			t.Fatal(err)
		}
	}
	if with.reads.Load() >= erased.reads.Load() {
		t.Fatalf("lookups read %d times with the index, %d without", with.reads.Load(), erased.reads.Load())
	}
	t.Logf("20 lookups in %d bytes: %d reads with the index, %d without", pos, with.reads.Load(), erased.reads.Load())
}

// noIndex hides a stream's time index.
type noIndex struct{ messagevault.PageReader }

func (noIndex) ReadIndex(context.Context, []byte, int64) (int, error) { return 0, errEOF }

// TestTimeIndexHintsAreChecked: entries that do not match the records
// (garbage, a late write of a fenced writer) are not believed, and the
// writer clears entries left for records that were never committed.
func TestTimeIndexHintsAreChecked(t *testing.T) {
	ctx := context.Background()
	s := mem.New()
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	w, now := clockedWriter(t, s, t0, 4<<20)
	// A group whose commit fails leaves index entries for records that
	// were never committed; a crash follows.
	s.FailNextCommit(nil)
	w.Append(ctx, batch(1<<20, 2000))
	s.Crash()
	w.Close()
	pw, err := s.OpenWriter(ctx, "test")
	if err != nil {
		t.Fatal(err)
	}
	w = openWriter(t, pw, stream.WriterConfig{Now: func() time.Time { return time.Unix(0, now.Load()) }})
	r := memReader(t, s)
	for _, e := range indexEntries(t, r) {
		if e[0] >= w.Position() {
			t.Fatalf("an index entry at %d, past the committed position %d, survived the reopening", e[0], w.Position())
		}
	}
	// Garbage over the whole index: plausible entries that lie.
	lies := make([]byte, 4*messagevault.PageSize)
	for k := 0; k < len(lies); k += 16 {
		binary.LittleEndian.PutUint64(lies[k:], uint64(k/16)*4096+7)
		binary.LittleEndian.PutUint64(lies[k+8:], uint64(formats.MillisSinceEpoch(t0))+uint64(k/16)*1000)
	}
	if err := pw.WriteIndex(ctx, 0, lies); err != nil {
		t.Fatal(err)
	}
	rd := stream.NewReader("test", r, stream.ReaderConfig{})
	for k := 0; k < 10; k++ {
		at := t0.Add(time.Duration(k*7)*time.Second + 500*time.Millisecond)
		got, err := rd.FindTime(ctx, at)
		if err != nil {
			t.Fatal(err)
		}
		if want := scanFor(t, r, at); got != want {
			t.Fatalf("FindTime(%v) with a lying index = %d, a scan says %d", at, got, want)
		}
	}
}

var errEOF = io.EOF

// TestTimeIndexBisectsItsPages: on an index of many pages (made small
// here), a lookup bisects them and answers as a scan does, with few reads
// of the index.
func TestTimeIndexBisectsItsPages(t *testing.T) {
	defer stream.SetIndexPage(512)() // 32 entries a page
	ctx := context.Background()
	s := mem.New()
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	w, _ := clockedWriter(t, s, t0, 100<<20)
	r := memReader(t, s)
	if n := len(indexEntries(t, r)); n < 90 {
		t.Fatalf("%d index entries: not several pages", n)
	}
	groups := int(w.Position() / (40 * 800))
	counted := &countIndexReads{PageReader: r}
	rd := stream.NewReader("test", counted, stream.ReaderConfig{})
	for k := 0; k <= 20; k++ {
		at := t0.Add(time.Duration(k*groups/20)*time.Second + 300*time.Millisecond)
		got, err := rd.FindTime(ctx, at)
		if err != nil {
			t.Fatal(err)
		}
		if want := scanFor(t, r, at); got != want {
			t.Fatalf("FindTime(%v) = %d, a scan says %d", at, got, want)
		}
	}
	if n := counted.index.Load(); n > 21*8 {
		t.Fatalf("21 lookups read the index %d times: not a bisection", n)
	}
}

// countIndexReads counts reads of the time index.
type countIndexReads struct {
	messagevault.PageReader
	index atomic.Int64
}

func (c *countIndexReads) ReadIndex(ctx context.Context, p []byte, off int64) (int, error) {
	c.index.Add(1)
	return c.PageReader.ReadIndex(ctx, p, off)
}
