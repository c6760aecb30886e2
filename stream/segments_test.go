package stream_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/file"
	"github.com/messagevault/messagevault/mem"
	"github.com/messagevault/messagevault/segment"
	"github.com/messagevault/messagevault/stream"
)

// segStorage is a storage under test with how to look at its segments.
type segStorage struct {
	name string
	open func(t *testing.T) messagevault.Storage
	// sizes returns the size of each segment blob, by start (nil: not
	// checked).
	sizes func(t *testing.T, s messagevault.Storage) map[int64]int64
}

func segStorages() []segStorage {
	return []segStorage{
		{name: "mem", open: func(*testing.T) messagevault.Storage { return mem.New() }},
		{name: "file", open: func(t *testing.T) messagevault.Storage {
			s, err := file.Open(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}, sizes: func(t *testing.T, s messagevault.Storage) map[int64]int64 {
			entries, err := os.ReadDir(s.(*file.Storage).StreamDir("test"))
			if err != nil {
				t.Fatal(err)
			}
			out := map[int64]int64{}
			for _, e := range entries {
				if st, ok := segment.Parse(e.Name()); ok {
					info, _ := e.Info()
					out[st] = info.Size()
				}
			}
			return out
		}},
	}
}

// appendSeqs appends seqMessages from next until the position passes
// until, and returns the next sequence number and every record offset.
func appendSeqs(t *testing.T, w *stream.Writer, next int, until int64, offsets map[int64]bool) int {
	t.Helper()
	for w.Position() < until {
		n := 1 + next%50
		res, err := w.Append(context.Background(), batch(next, n))
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range res.Offsets {
			offsets[o] = true
		}
		next += n
	}
	return next
}

// TestSegmentsRollAndReadBack: with 1 MiB segments a stream rolls to new
// segments named by their first record's position; no segment blob passes
// the size, no record straddles two, every record reads back through a
// reader opened before the rolls, and a reopened writer goes on in the
// last segment.
func TestSegmentsRollAndReadBack(t *testing.T) {
	for _, st := range segStorages() {
		t.Run(st.name, func(t *testing.T) {
			ctx := context.Background()
			s := st.open(t)
			cfg := stream.WriterConfig{SegmentSize: stream.MinSegmentSize, GrowStep: 256 << 10}
			pw, err := s.OpenWriter(ctx, "test")
			if err != nil {
				t.Fatal(err)
			}
			w, err := stream.OpenWriter(ctx, "test", pw, cfg)
			if err != nil {
				t.Fatal(err)
			}
			early, err := s.OpenReader(ctx, "test")
			if err != nil {
				t.Fatal(err)
			}
			defer early.Close()
			offsets := map[int64]bool{}
			next := appendSeqs(t, w, 0, 5<<20, offsets)
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			segs, err := early.Segments(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(segs) < 5 || segs[0] != 0 {
				t.Fatalf("segments %v: want at least 5, from 0", segs)
			}
			for _, sg := range segs[1:] {
				if !offsets[sg] {
					t.Fatalf("segment %s does not start at a record", segment.Name(sg))
				}
			}
			if st.sizes != nil {
				sizes := st.sizes(t, s)
				if len(sizes) != len(segs) {
					t.Fatalf("segment files %v, chain %v", sizes, segs)
				}
				for sg, size := range sizes {
					if size > stream.MinSegmentSize {
						t.Fatalf("segment %s is %d bytes, past the segment size", segment.Name(sg), size)
					}
				}
			}
			if n, _ := readSeqs(t, early); n != next {
				t.Fatalf("read %d messages back, appended %d", n, next)
			}
			// A new writer goes on from where the last one stopped.
			pw, err = s.OpenWriter(ctx, "test")
			if err != nil {
				t.Fatal(err)
			}
			w = openWriter(t, pw, cfg)
			next = appendSeqs(t, w, next, w.Position()+(2<<20), offsets)
			w.Close()
			if n, _ := readSeqs(t, early); n != next {
				t.Fatalf("read %d messages back after reopening, appended %d", n, next)
			}
		})
	}
}

func openWriter(t *testing.T, pw messagevault.PageWriter, cfg stream.WriterConfig) *stream.Writer {
	t.Helper()
	w, err := stream.OpenWriter(context.Background(), "test", pw, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

// TestTrimRemovesWholeSegments: a trim removes the segments that end at
// or before its position, never the active one; reads below the new start
// fail with a TrimmedError naming it; a position past the end is refused.
func TestTrimRemovesWholeSegments(t *testing.T) {
	for _, st := range segStorages() {
		t.Run(st.name, func(t *testing.T) {
			ctx := context.Background()
			s := st.open(t)
			pw, err := s.OpenWriter(ctx, "test")
			if err != nil {
				t.Fatal(err)
			}
			w := openWriter(t, pw, stream.WriterConfig{SegmentSize: stream.MinSegmentSize})
			offsets := map[int64]bool{}
			appendSeqs(t, w, 0, 4<<20, offsets)
			r, err := s.OpenReader(ctx, "test")
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			segs, err := r.Segments(ctx)
			if err != nil || len(segs) < 4 {
				t.Fatalf("segments %v, %v", segs, err)
			}
			if _, err := w.Trim(ctx, w.Position()+1); !errors.Is(err, messagevault.ErrOutOfRange) {
				t.Fatalf("trim past the position: %v, want ErrOutOfRange", err)
			}
			if start, err := w.Trim(ctx, segs[1]-1); err != nil || start != 0 {
				t.Fatalf("trim inside the first segment: start %d, %v; want 0 (nothing removed)", start, err)
			}
			start, err := w.Trim(ctx, segs[2]+10)
			if err != nil || start != segs[2] {
				t.Fatalf("trim before %d: start %d, %v; want %d", segs[2]+10, start, err, segs[2])
			}
			var te *messagevault.TrimmedError
			b := make([]byte, 100)
			if _, err := r.ReadAt(ctx, b, segs[1]); !errors.As(err, &te) || te.Start != segs[2] || !errors.Is(err, messagevault.ErrTrimmed) {
				t.Fatalf("read below the start: %v, want a TrimmedError with start %d", err, segs[2])
			}
			e, err := r.Extent(ctx)
			if err != nil || e.Start != segs[2] {
				t.Fatalf("extent %+v, %v: want start %d", e, err, segs[2])
			}
			// Records from the new start read back in order.
			rd := stream.NewReader("test", r, stream.ReaderConfig{})
			count := 0
			for rec, err := range rd.Records(ctx, e.Start, e.Position) {
				if err != nil {
					t.Fatal(err)
				}
				if _, err := seqOf(rec); err != nil {
					t.Fatal(err)
				}
				count++
			}
			if count == 0 {
				t.Fatal("nothing left after the trim")
			}
			// The active segment is never removed, whatever the position.
			start, err = w.Trim(ctx, w.Position())
			if err != nil || start != segs[len(segs)-1] {
				t.Fatalf("trim at the position: start %d, %v; want the active segment %d", start, err, segs[len(segs)-1])
			}
			if st.sizes != nil {
				if sizes := st.sizes(t, s); len(sizes) != 1 {
					t.Fatalf("segment files after trimming all but the active one: %v", sizes)
				}
			}
			// The stream goes on, and a new writer finds the start.
			appendSeqs(t, w, 1<<20, w.Position()+100, offsets)
			w.Close()
			pw, err = s.OpenWriter(ctx, "test")
			if err != nil {
				t.Fatal(err)
			}
			w2 := openWriter(t, pw, stream.WriterConfig{SegmentSize: stream.MinSegmentSize})
			if e, err := pw.Extent(ctx); err != nil || e.Start != start || e.Position != w2.Position() {
				t.Fatalf("reopened: extent %+v, %v; want start %d", e, err, start)
			}
		})
	}
}

// TestSegmentLeftoversAreRemoved: a segment file a crash left past the
// active one (a roll never committed) is removed by the next writer and
// never read.
func TestSegmentLeftoversAreRemoved(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := file.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	pw, err := s.OpenWriter(ctx, "test")
	if err != nil {
		t.Fatal(err)
	}
	w := openWriter(t, pw, stream.WriterConfig{})
	appendSeqs(t, w, 0, 1000, map[int64]bool{})
	w.Close()
	left := filepath.Join(s.StreamDir("test"), segment.Name(999999))
	if err := os.WriteFile(left, []byte("garbage"), 0o640); err != nil {
		t.Fatal(err)
	}
	r, err := s.OpenReader(ctx, "test")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if segs, err := r.Segments(ctx); err != nil || len(segs) != 1 {
		t.Fatalf("a reader's chain with a leftover: %v, %v", segs, err)
	}
	pw, err = s.OpenWriter(ctx, "test")
	if err != nil {
		t.Fatal(err)
	}
	openWriter(t, pw, stream.WriterConfig{}).Close()
	if _, err := os.Stat(left); !os.IsNotExist(err) {
		t.Fatalf("the leftover segment is still there: %v", err)
	}
}

// TestDuplicateOfATrimmedBatch: a producer's repeat of a batch whose
// records were trimmed away gets ErrTrimmed, alone; the writer goes on.
func TestDuplicateOfATrimmedBatch(t *testing.T) {
	ctx := context.Background()
	s := mem.New()
	pw, err := s.OpenWriter(ctx, "test")
	if err != nil {
		t.Fatal(err)
	}
	w := openWriter(t, pw, stream.WriterConfig{SegmentSize: stream.MinSegmentSize})
	first := stream.AppendOptions{Producer: "p", Sequence: 1}
	if _, err := w.AppendWith(ctx, batch(0, 3), first); err != nil {
		t.Fatal(err)
	}
	next := appendSeqs(t, w, 3, 3<<20, map[int64]bool{})
	if start, err := w.Trim(ctx, 2<<20); err != nil || start == 0 {
		t.Fatalf("trim: %d, %v", start, err)
	}
	if _, err := w.AppendWith(ctx, batch(0, 3), first); !errors.Is(err, messagevault.ErrTrimmed) {
		t.Fatalf("the repeat of a trimmed batch: %v, want ErrTrimmed", err)
	}
	if _, err := w.AppendWith(ctx, batch(next, 1), stream.AppendOptions{Producer: "p", Sequence: 2}); err != nil {
		t.Fatalf("the next batch after it: %v", err)
	}
}

// TestMemCrashAfterAnUndoneRoll: the mem backend forgets the writes of a
// segment it removes (a roll undone by Refence), so a crash before the
// next flush neither panics nor brings the segment back.
func TestMemCrashAfterAnUndoneRoll(t *testing.T) {
	ctx := context.Background()
	s := mem.New()
	pw, err := s.OpenWriter(ctx, "test")
	if err != nil {
		t.Fatal(err)
	}
	if err := pw.Grow(ctx, 1024); err != nil {
		t.Fatal(err)
	}
	if err := pw.CommitPosition(ctx, 1000); err != nil {
		t.Fatal(err)
	}
	if err := pw.Roll(ctx, 1000); err != nil {
		t.Fatal(err)
	}
	if err := pw.Grow(ctx, 2048); err != nil {
		t.Fatal(err)
	}
	if err := pw.WritePages(ctx, 512, make([]byte, 1024)); err != nil {
		t.Fatal(err)
	}
	if err := pw.Refence(ctx); err != nil {
		t.Fatal(err)
	}
	s.Crash()
	r, err := s.OpenReader(ctx, "test")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if segs, err := r.Segments(ctx); err != nil || len(segs) != 1 {
		t.Fatalf("segments after the crash: %v, %v", segs, err)
	}
}

// TestLocalReaderKeepsFewFilesOpen: a reader of a stream of many segments
// keeps only a few of their files open.
func TestLocalReaderKeepsFewFilesOpen(t *testing.T) {
	ctx := context.Background()
	s, err := file.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	pw, err := s.OpenWriter(ctx, "test")
	if err != nil {
		t.Fatal(err)
	}
	w := openWriter(t, pw, stream.WriterConfig{SegmentSize: stream.MinSegmentSize})
	appendSeqs(t, w, 0, 12<<20, map[int64]bool{})
	r, err := s.OpenReader(ctx, "test")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if n, _ := readSeqs(t, r); n == 0 {
		t.Fatal("nothing read")
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd:", err)
	}
	open := 0
	for _, fd := range fds {
		if target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); err == nil && filepath.Ext(target) == segment.Suffix {
			open++
		}
	}
	// The writer's active segment, plus the reader's few.
	if open > 6 {
		t.Fatalf("%d segment files open after reading 12 segments", open)
	}
}
