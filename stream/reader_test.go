package stream_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/formats"
	"github.com/messagevault/messagevault/mem"
	"github.com/messagevault/messagevault/stream"
)

func TestRecordsStraddleChunks(t *testing.T) {
	ctx := context.Background()
	s := mem.New()
	w := openMem(t, s, stream.WriterConfig{})
	const total = 400 // includes values of 65,526+ bytes (every 97th)
	for seq := 0; seq < total; seq += 40 {
		if _, err := w.Append(ctx, batch(seq, 40)); err != nil {
			t.Fatal(err)
		}
	}
	// The smallest chunk holds one largest record; records straddle every
	// chunk boundary.
	for _, chunk := range []int{formats.MaxRecordSize, 100_000, 1 << 20} {
		r := stream.NewReader("test", memReader(t, s), stream.ReaderConfig{ChunkSize: chunk})
		n := 0
		for rec, err := range r.Records(ctx, 0, -1) {
			if err != nil {
				t.Fatalf("chunk %d: %v", chunk, err)
			}
			if seq, err := seqOf(rec); err != nil || seq != n {
				t.Fatalf("chunk %d: record %d: seq %d, %v", chunk, n, seq, err)
			}
			n++
		}
		if n != total {
			t.Fatalf("chunk %d: read %d records, want %d", chunk, n, total)
		}
	}
	// A range from the middle, ending before the position.
	res, err := w.Append(ctx, batch(total, 3))
	if err != nil {
		t.Fatal(err)
	}
	r := stream.NewReader("test", memReader(t, s), stream.ReaderConfig{})
	n := 0
	for rec, err := range r.Records(ctx, res.Offsets[1], res.Offsets[2]) {
		if err != nil {
			t.Fatal(err)
		}
		if seq, _ := seqOf(rec); seq != total+1 {
			t.Fatalf("range read gave message %d, want %d", seq, total+1)
		}
		n++
	}
	if n != 1 {
		t.Fatalf("range read gave %d records, want 1", n)
	}
}

func TestNeverReadsPastPosition(t *testing.T) {
	ctx := context.Background()
	s := mem.New()
	w := openMem(t, s, stream.WriterConfig{GrowStep: 1 << 20})
	if _, err := w.Append(ctx, batch(0, 10)); err != nil {
		t.Fatal(err)
	}
	pos := w.Position()
	// A failed commit leaves fully written, valid records past the
	// position: exactly what a reader must not return.
	s.FailNextCommit(nil)
	if _, err := w.Append(ctx, batch(10, 10)); err == nil {
		t.Fatal("Append succeeded with a failing commit")
	}
	if raw := s.Bytes("test"); !strings.Contains(string(raw[pos:]), "seq=00000010|") {
		t.Fatal("test setup: the uncommitted records are not in storage")
	}
	r := stream.NewReader("test", memReader(t, s), stream.ReaderConfig{})
	n := 0
	for rec, err := range r.Records(ctx, 0, -1) {
		if err != nil {
			t.Fatal(err)
		}
		if rec.Offset >= pos {
			t.Fatalf("reader returned a record at %d, past the committed position %d", rec.Offset, pos)
		}
		n++
	}
	if n != 10 {
		t.Fatalf("read %d records, want 10", n)
	}
	// An explicit end past the position is clamped to it.
	n = 0
	for rec, err := range r.Records(ctx, 0, pos+100_000) {
		if err != nil {
			t.Fatalf("reading to past the position: %v", err)
		}
		if rec.Offset >= pos {
			t.Fatalf("Records(0, pos+100000) returned an uncommitted record at %d", rec.Offset)
		}
		n++
	}
	if n != 10 {
		t.Fatalf("read %d records, want 10", n)
	}
}

func TestCorruptionIsReportedWithPosition(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name  string
		field int64 // byte within the second record
		want  error
	}{
		{"version", 0, formats.ErrVersion},
		{"attributes", 1, formats.ErrCRC},
		{"id position", 10, messagevault.ErrCorrupt},
		{"value", 30, formats.ErrCRC},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := mem.New()
			w := openMem(t, s, stream.WriterConfig{})
			res, err := w.Append(ctx, batch(0, 3))
			if err != nil {
				t.Fatal(err)
			}
			at := res.Offsets[1]
			s.Corrupt("test", at+tt.field, 0x40)
			r := stream.NewReader("test", memReader(t, s), stream.ReaderConfig{})
			var got error
			n := 0
			for _, err := range r.Records(ctx, 0, -1) {
				if err != nil {
					got = err
					break
				}
				n++
			}
			if n != 1 || !errors.Is(got, tt.want) || !errors.Is(got, messagevault.ErrCorrupt) {
				t.Fatalf("after %d records: %v; want %v and ErrCorrupt", n, got, tt.want)
			}
			if !strings.Contains(got.Error(), "at "+strconv.FormatInt(at, 10)) {
				t.Fatalf("error %q does not name the position %d", got, at)
			}
		})
	}
}

func TestFollowTail(t *testing.T) {
	for _, mode := range []string{"poll", "wake"} {
		t.Run(mode, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			s := mem.New()
			w := openMem(t, s, stream.WriterConfig{})
			cfg := stream.ReaderConfig{PollInterval: 5 * time.Millisecond}
			if mode == "wake" {
				cfg.PollInterval = time.Hour // only a wake-up can deliver
				cfg.Wake = func(ctx context.Context, pos int64) {
					cur, changed := w.Committed()
					if cur > pos {
						return
					}
					select {
					case <-changed:
					case <-ctx.Done():
					}
				}
			}
			if _, err := w.Append(ctx, batch(0, 5)); err != nil {
				t.Fatal(err)
			}
			const total = 200
			go func() {
				for seq := 5; seq < total; seq += 5 {
					if _, err := w.Append(ctx, batch(seq, 5)); err != nil {
						t.Error(err)
						return
					}
					time.Sleep(time.Millisecond)
				}
			}()
			r := stream.NewReader("test", memReader(t, s), cfg)
			n := 0
			for rec, err := range r.Follow(ctx, 0) {
				if err != nil {
					t.Fatalf("after %d records: %v", n, err)
				}
				if seq, err := seqOf(rec); err != nil || seq != n {
					t.Fatalf("record %d: %d, %v", n, seq, err)
				}
				if n++; n == total {
					break
				}
			}
			// Follow ends with ctx.
			cctx, ccancel := context.WithCancel(ctx)
			ccancel()
			for _, err := range r.Follow(cctx, w.Position()) {
				if !errors.Is(err, context.Canceled) {
					t.Fatalf("Follow with a cancelled context: %v", err)
				}
			}
		})
	}
}

// TestStartInsideARecord: a range that starts inside a record (a position
// no reader was given) is the caller's mistake, ErrNotRecordStart, not a
// corrupt stream; a damaged record at a true record start, asked for
// directly, is still ErrCorrupt.
func TestStartInsideARecord(t *testing.T) {
	ctx := context.Background()
	s := mem.New()
	w := openMem(t, s, stream.WriterConfig{})
	res, err := w.Append(ctx, batch(0, 3))
	if err != nil {
		t.Fatal(err)
	}
	r := stream.NewReader("test", memReader(t, s), stream.ReaderConfig{})
	first := func(from int64) error {
		for _, err := range r.Records(ctx, from, -1) {
			return err
		}
		return nil
	}
	for _, from := range []int64{1, 2, 17, res.Offsets[1] - 1, res.Offsets[1] + 5, res.Offsets[2] + 20} {
		err := first(from)
		if !errors.Is(err, messagevault.ErrNotRecordStart) || errors.Is(err, messagevault.ErrCorrupt) {
			t.Errorf("from %d: %v; want ErrNotRecordStart, not ErrCorrupt", from, err)
		}
	}
	for _, from := range res.Offsets {
		if err := first(from); err != nil {
			t.Errorf("from the record start %d: %v", from, err)
		}
	}
	// Following from inside a record is the same mistake.
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for _, err := range r.Follow(fctx, res.Offsets[1]+3) {
		if !errors.Is(err, messagevault.ErrNotRecordStart) {
			t.Errorf("follow from inside a record: %v", err)
		}
		break
	}
	// The value of the second record damaged: read from its start, it is
	// a corrupt record, not a wrong position.
	s.Corrupt("test", res.Offsets[1]+30, 0x40)
	if err := first(res.Offsets[1]); !errors.Is(err, messagevault.ErrCorrupt) || errors.Is(err, messagevault.ErrNotRecordStart) {
		t.Errorf("a damaged record read from its start: %v; want ErrCorrupt", err)
	}
}
