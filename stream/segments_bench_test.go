package stream_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"

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
