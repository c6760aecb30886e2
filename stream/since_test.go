package stream_test

import (
	"context"
	"math/rand/v2"
	"sync/atomic"
	"testing"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/formats"
	"github.com/messagevault/messagevault/mem"
	"github.com/messagevault/messagevault/stream"
)

// TestFindTime: on a stream of about 2 MiB written over 500 distinct
// milliseconds (several records per millisecond, values of random sizes up
// to 60 KB so that record starts fall anywhere), FindTime returns what a
// scan from the start finds: the first record at or after the time, 0
// before the first, the committed position after the last.
func TestFindTime(t *testing.T) {
	ctx := context.Background()
	s := mem.New()
	base := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	var now atomic.Int64
	w := openMem(t, s, stream.WriterConfig{Now: func() time.Time { return base.Add(time.Duration(now.Load()) * time.Millisecond) }})
	rng := rand.New(rand.NewPCG(1, 2))
	for ms := range 500 {
		now.Store(int64(ms * 3)) // every third millisecond
		var msgs []messagevault.Message
		for range 1 + rng.IntN(3) {
			v := make([]byte, rng.IntN(4000))
			if rng.IntN(50) == 0 {
				v = make([]byte, 60000)
			}
			for i := range v {
				v[i] = byte(rng.Uint32()) // values full of bytes that look like headers
			}
			msgs = append(msgs, messagevault.NewMessage([]byte("k"), v, 0))
		}
		if _, err := w.Append(ctx, msgs); err != nil {
			t.Fatal(err)
		}
	}
	r := stream.NewReader("test", memReader(t, s), stream.ReaderConfig{})
	pos, err := r.Position(ctx)
	if err != nil || pos < 2<<20 {
		t.Fatalf("position %d (%v): want a stream over 2 MiB", pos, err)
	}
	type rec struct {
		off int64
		ms  int64
	}
	var all []rec
	for x, err := range r.Records(ctx, 0, -1) {
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, rec{x.Offset, int64(x.ID.Millis())})
	}
	scan := func(ms int64) int64 {
		for _, x := range all {
			if x.ms >= ms {
				return x.off
			}
		}
		return pos
	}
	baseMs := formats.MillisSinceEpoch(base)
	for _, d := range []int64{-1000, -1, 0, 1, 2, 3, 4, 299, 300, 301, 749, 750, 1200, 1497, 1498, 1499, 5000} {
		at := base.Add(time.Duration(d) * time.Millisecond)
		got, err := r.FindTime(ctx, at)
		if err != nil {
			t.Fatalf("FindTime(base%+dms): %v", d, err)
		}
		if want := scan(baseMs + d); got != want {
			t.Errorf("FindTime(base%+dms) = %d, want %d", d, got, want)
		}
	}
	if got, err := r.FindTime(ctx, time.Time{}); err != nil || got != 0 {
		t.Errorf("FindTime(zero time) = %d, %v; want 0", got, err)
	}
}

// TestIDsNeverGoBackInTime: a writer whose clock is behind the last one's
// (another node, a clock stepped back) continues from the last record's
// time, so that reads by time stay right.
func TestIDsNeverGoBackInTime(t *testing.T) {
	ctx := context.Background()
	s := mem.New()
	ahead := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	w := openMem(t, s, stream.WriterConfig{Now: func() time.Time { return ahead }})
	if _, err := w.Append(ctx, batch(0, 2)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w = openMem(t, s, stream.WriterConfig{Now: func() time.Time { return ahead.Add(-time.Hour) }})
	if _, err := w.Append(ctx, batch(2, 1)); err != nil {
		t.Fatal(err)
	}
	var last time.Time
	for rec, err := range stream.NewReader("test", memReader(t, s), stream.ReaderConfig{}).Records(ctx, 0, -1) {
		if err != nil {
			t.Fatal(err)
		}
		if rec.ID.Time().Before(last) {
			t.Fatalf("record at %d has time %v, before the previous record's %v", rec.Offset, rec.ID.Time(), last)
		}
		last = rec.ID.Time()
	}
}

// TestFindTimeWithForgedRecords: a publisher whose values are chains of
// fake records, each naming its own position in the stream and carrying
// a time of its choosing (here the id epoch and the far future), does not
// make FindTime fail or answer otherwise than a scan from the start.
func TestFindTimeWithForgedRecords(t *testing.T) {
	ctx := context.Background()
	s := mem.New()
	base := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	var now atomic.Int64
	w := openMem(t, s, stream.WriterConfig{Now: func() time.Time { return base.Add(time.Duration(now.Load()) * time.Millisecond) }})
	key := []byte("k")
	for i := range 200 {
		now.Store(int64(i * 5))
		// The value starts 21+len(key) bytes into the record; it is filled
		// with fake records back to back, each naming where it lies.
		at := w.Position() + 21 + int64(len(key))
		var val []byte
		for len(val) < 30000 {
			fakeMs := int64(1)
			if i%2 == 1 {
				fakeMs = 1 << 40 // the far future
			}
			id := formats.NewID(fakeMs, at+int64(len(val)), 7)
			var err error
			if val, err = formats.AppendRecord(val, id, messagevault.NewMessage([]byte("fake"), make([]byte, 100), 0)); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := w.Append(ctx, []messagevault.Message{messagevault.NewMessage(key, val, 0)}); err != nil {
			t.Fatal(err)
		}
	}
	r := stream.NewReader("test", memReader(t, s), stream.ReaderConfig{})
	pos, _ := r.Position(ctx)
	var all []int64 // offsets, one record per millisecond step
	for rec, err := range r.Records(ctx, 0, -1) {
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, rec.Offset)
	}
	for _, d := range []int{-1, 0, 1, 4, 5, 6, 333, 500, 501, 995, 996} {
		want := pos
		if i := (d + 4) / 5; d <= 995 {
			want = all[max(i, 0)]
		}
		got, err := r.FindTime(ctx, base.Add(time.Duration(d)*time.Millisecond))
		if err != nil || got != want {
			t.Errorf("FindTime(base%+dms) = %d, %v; want %d", d, got, err, want)
		}
	}
	last, ok, err := stream.LastRecord(ctx, memReader(t, s), pos)
	if err != nil || !ok || last.Offset != all[len(all)-1] {
		t.Errorf("LastRecord = %d, %v, %v; want %d", last.Offset, ok, err, all[len(all)-1])
	}
}
