package stream_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/file"
	"github.com/messagevault/messagevault/stream"
)

// benchBatch returns n messages with 100-byte values.
func benchBatch(n int) []messagevault.Message {
	msgs := make([]messagevault.Message, n)
	for i := range msgs {
		v := make([]byte, 100)
		for j := range v {
			v[j] = byte(i + j)
		}
		msgs[i] = messagevault.NewMessage([]byte(fmt.Sprintf("message%d", i)), v, 0)
	}
	return msgs
}

func openFileWriter(b *testing.B) (*file.Storage, *stream.Writer) {
	b.Helper()
	s, err := file.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	pw, err := s.OpenWriter(context.Background(), "bench")
	if err != nil {
		b.Fatal(err)
	}
	w, err := stream.OpenWriter(context.Background(), "bench", pw, stream.WriterConfig{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { w.Close(); s.Close() })
	return s, w
}

// BenchmarkAppend measures durable appends (fdatasync on) to the file
// backend: batches of 1,000 messages with 100-byte values, from 1 and from
// 4 concurrent producers (whose batches share group commits), without and
// with producer sequences (exactly-once), side by side.
func BenchmarkAppend(b *testing.B) {
	for _, producers := range []int{1, 4} {
		for _, seqs := range []bool{false, true} {
			b.Run(fmt.Sprintf("producers=%d/sequences=%v", producers, seqs), func(b *testing.B) {
				_, w := openFileWriter(b)
				msgs := benchBatch(1000)
				size := recordsSize(msgs)
				b.SetBytes(size)
				b.ReportAllocs()
				ctx := context.Background()
				var wg sync.WaitGroup
				work := make(chan struct{})
				for p := 0; p < producers; p++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						var opts stream.AppendOptions
						if seqs {
							opts.Producer = fmt.Sprintf("bench-%d", p)
						}
						for range work {
							opts.Sequence++
							if _, err := w.AppendWith(ctx, msgs, opts); err != nil {
								b.Error(err)
							}
						}
					}()
				}
				for b.Loop() {
					work <- struct{}{}
				}
				close(work)
				wg.Wait()
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(msgs)), "ns/msg")
				b.ReportMetric(float64(b.N*len(msgs))/b.Elapsed().Seconds(), "msgs/s")
			})
		}
	}
}

// BenchmarkAppendSmallBatches measures the latency-bound case: batches of
// 10 messages, one producer, one fdatasync pair per batch.
func BenchmarkAppendSmallBatches(b *testing.B) {
	_, w := openFileWriter(b)
	msgs := benchBatch(10)
	b.SetBytes(recordsSize(msgs))
	b.ReportAllocs()
	ctx := context.Background()
	for b.Loop() {
		if _, err := w.Append(ctx, msgs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/batch")
}

// BenchmarkRead measures a direct read of a file-backend stream of 100-byte
// messages: every record decoded and crc-checked.
func BenchmarkRead(b *testing.B) {
	s, w := openFileWriter(b)
	msgs := benchBatch(1000)
	ctx := context.Background()
	for i := 0; i < 200; i++ {
		if _, err := w.Append(ctx, msgs); err != nil {
			b.Fatal(err)
		}
	}
	pos := w.Position()
	pr, err := s.OpenReader(ctx, "bench")
	if err != nil {
		b.Fatal(err)
	}
	defer pr.Close()
	r := stream.NewReader("bench", pr, stream.ReaderConfig{})
	b.SetBytes(pos)
	b.ReportAllocs()
	n := 0
	for b.Loop() {
		for rec, err := range r.Records(ctx, 0, pos) {
			if err != nil {
				b.Fatal(err)
			}
			n += len(rec.Value) / 100
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/msg")
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "msgs/s")
}
