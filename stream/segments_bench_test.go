package stream_test

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/file"
	"github.com/messagevault/messagevault/stream"
)

// BenchmarkSegmentedRead reads a whole stream of MV_BENCH_SEGMENTED_BYTES
// (default 2 GiB) of 4 KiB messages on local disk back through
// stream.Reader, side by side: stored in one segment, and in segments of
// a 51st of it (at least 50 segments). Each iteration reads every record
// (checking each one's crc); the figure to compare is MB/s. The streams
// are written once, outside the timer (that takes a minute).
func BenchmarkSegmentedRead(b *testing.B) {
	total := int64(2 << 30)
	if v := os.Getenv("MV_BENCH_SEGMENTED_BYTES"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			b.Fatalf("MV_BENCH_SEGMENTED_BYTES=%q: %v", v, err)
		}
		total = n
	}
	segSize := max(stream.MinSegmentSize, (total/51)&^(messagevault.PageSize-1))
	for _, tc := range []struct {
		name    string
		segSize int64
	}{{"segments=1", 0}, {fmt.Sprintf("segments=%d", total/segSize+1), segSize}} {
		b.Run(tc.name, func(b *testing.B) {
			ctx := context.Background()
			s, err := file.Open(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			pw, err := s.OpenWriter(ctx, "bench")
			if err != nil {
				b.Fatal(err)
			}
			w, err := stream.OpenWriter(ctx, "bench", pw, stream.WriterConfig{SegmentSize: tc.segSize})
			if err != nil {
				b.Fatal(err)
			}
			msgs := make([]messagevault.Message, 256)
			for i := range msgs {
				msgs[i] = messagevault.NewMessage([]byte("k"), make([]byte, 4096), 0)
			}
			for w.Position() < total {
				if _, err := w.Append(ctx, msgs); err != nil {
					b.Fatal(err)
				}
			}
			pos := w.Position()
			if err := w.Close(); err != nil {
				b.Fatal(err)
			}
			pr, err := s.OpenReader(ctx, "bench")
			if err != nil {
				b.Fatal(err)
			}
			defer pr.Close()
			segs, err := pr.Segments(ctx)
			if err != nil {
				b.Fatal(err)
			}
			r := stream.NewReader("bench", pr, stream.ReaderConfig{})
			b.SetBytes(pos)
			b.ResetTimer()
			for range b.N {
				n := 0
				for _, err := range r.Records(ctx, 0, pos) {
					if err != nil {
						b.Fatal(err)
					}
					n++
				}
				if n == 0 {
					b.Fatal("no records")
				}
			}
			b.ReportMetric(float64(len(segs)), "segments")
		})
	}
}

// BenchmarkFindTimeReads counts the storage reads of a FindTime lookup
// (the round trips it would cost on Azure) on a 256 MiB stream of 1-KB
// messages on local disk whose ids span 1,000 s, side by side: with the
// writer's time index, and with the index hidden (a stream written before
// it). The figure to compare is reads/op.
func BenchmarkFindTimeReads(b *testing.B) {
	ctx := context.Background()
	s, err := file.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	pw, err := s.OpenWriter(ctx, "bench")
	if err != nil {
		b.Fatal(err)
	}
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	var now atomic.Int64
	now.Store(t0.UnixNano())
	w, err := stream.OpenWriter(ctx, "bench", pw, stream.WriterConfig{Now: func() time.Time { return time.Unix(0, now.Load()) }})
	if err != nil {
		b.Fatal(err)
	}
	msgs := benchBatch(1000)
	const total = 256 << 20
	for w.Position() < total {
		if _, err := w.Append(ctx, msgs); err != nil {
			b.Fatal(err)
		}
		now.Add(int64(1000 * time.Second / (total / (1000 * 135))))
	}
	w.Close()
	for _, tc := range []struct {
		name  string
		index bool
	}{{"index", true}, {"no-index", false}} {
		b.Run(tc.name, func(b *testing.B) {
			pr, err := s.OpenReader(ctx, "bench")
			if err != nil {
				b.Fatal(err)
			}
			defer pr.Close()
			var pages messagevault.PageReader = pr
			if !tc.index {
				pages = hideIndex{pr}
			}
			counted := &countReads{PageReader: pages}
			r := stream.NewReader("bench", counted, stream.ReaderConfig{})
			rnd := rand.New(rand.NewPCG(1, 2))
			b.ResetTimer()
			for range b.N {
				at := t0.Add(time.Duration(rnd.Int64N(int64(1000 * time.Second))))
				if _, err := r.FindTime(ctx, at); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(counted.reads.Load())/float64(b.N), "reads/op")
		})
	}
}

// hideIndex hides a stream's time index.
type hideIndex struct{ messagevault.PageReader }

func (hideIndex) ReadIndex(context.Context, []byte, int64) (int, error) { return 0, io.EOF }

// countReads counts the reads of records and of the index.
type countReads struct {
	messagevault.PageReader
	reads atomic.Int64
}

func (c *countReads) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	c.reads.Add(1)
	return c.PageReader.ReadAt(ctx, p, off)
}

func (c *countReads) ReadIndex(ctx context.Context, p []byte, off int64) (int, error) {
	c.reads.Add(1)
	return c.PageReader.ReadIndex(ctx, p, off)
}
