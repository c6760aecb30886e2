package vault_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/mem"
	"github.com/messagevault/messagevault/stream"
	"github.com/messagevault/messagevault/vault"
)

// bigMsgs returns n messages of about 10 KB.
func bigMsgs(n int) []messagevault.Message {
	out := make([]messagevault.Message, n)
	for i := range out {
		out[i] = messagevault.NewMessage([]byte("k"), make([]byte, 10000), 0)
	}
	return out
}

// fill appends until the stream's position reaches until.
func fill(t *testing.T, v *vault.Vault, name string, until int64) stream.AppendResult {
	t.Helper()
	var res stream.AppendResult
	for res.Position < until {
		var err error
		if res, err = v.Append(context.Background(), name, bigMsgs(20)); err != nil {
			t.Fatal(err)
		}
	}
	return res
}

func extentOf(t *testing.T, s messagevault.Storage, name string) (messagevault.Extent, []int64) {
	t.Helper()
	pr, err := s.OpenReader(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	e, err := pr.Extent(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	segs, err := pr.Segments(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return e, segs
}

// TestRetentionBytes: a stream keeps at least Retention.Bytes of its
// newest bytes, and less than that plus a segment; the active segment is
// never removed; what goes is counted.
func TestRetentionBytes(t *testing.T) {
	ctx := context.Background()
	s := mem.New()
	obs := &trimCounter{}
	v := vault.New(s, vault.Config{
		Writer:    stream.WriterConfig{SegmentSize: stream.MinSegmentSize, Observer: obs},
		Retention: vault.Retention{Bytes: 2 << 20, Every: time.Hour},
	})
	defer v.Close()
	fill(t, v, "kept", 6<<20)
	if err := v.ApplyRetention(ctx, time.Now()); err != nil {
		t.Fatal(err)
	}
	e, segs := extentOf(t, s, "kept")
	kept := e.Position - e.Start
	if kept < 2<<20 || kept >= 2<<20+stream.MinSegmentSize || segs[0] != e.Start {
		t.Fatalf("after retention: extent %+v (%d bytes kept), segments %v", e, kept, segs)
	}
	if got := obs.bytes.Load(); got != e.Start {
		t.Fatalf("removed bytes counted %d, want %d", got, e.Start)
	}
	// A stream inside the limit keeps everything.
	fill(t, v, "small", 1<<20)
	if err := v.ApplyRetention(ctx, time.Now()); err != nil {
		t.Fatal(err)
	}
	if e, _ := extentOf(t, s, "small"); e.Start != 0 {
		t.Fatalf("a stream within the limit was trimmed to %d", e.Start)
	}
}

// TestRetentionAge: a segment goes once its newest record is older than
// Retention.Age; the first segment kept holds a record younger than it.
func TestRetentionAge(t *testing.T) {
	ctx := context.Background()
	s := mem.New()
	var now atomic.Int64
	t0 := time.Now().Add(-10 * time.Hour)
	now.Store(t0.UnixNano())
	v := vault.New(s, vault.Config{
		Writer:    stream.WriterConfig{SegmentSize: stream.MinSegmentSize, Now: func() time.Time { return time.Unix(0, now.Load()) }},
		Retention: vault.Retention{Age: 30 * time.Minute, Every: time.Hour},
	})
	defer v.Close()
	old := fill(t, v, "aged", 3<<20)
	now.Store(t0.Add(time.Hour).UnixNano())
	young, err := v.Append(ctx, "aged", bigMsgs(1))
	if err != nil {
		t.Fatal(err)
	}
	fill(t, v, "aged", young.Position+(2<<20))
	// Within the age: nothing goes.
	if err := v.ApplyRetention(ctx, t0.Add(20*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if e, _ := extentOf(t, s, "aged"); e.Start != 0 {
		t.Fatalf("trimmed to %d while every record was within the age", e.Start)
	}
	if err := v.ApplyRetention(ctx, t0.Add(time.Hour+time.Minute)); err != nil {
		t.Fatal(err)
	}
	e, segs := extentOf(t, s, "aged")
	if e.Start == 0 || e.Start > young.Offsets[0] || e.Start < old.Offsets[0]-stream.MinSegmentSize {
		t.Fatalf("after retention by age: start %d; the old records end at %d, the young start at %d (segments %v)", e.Start, old.Position, young.Offsets[0], segs)
	}
}

// TestTrimMissingStream: trimming a stream never written is not found, and
// does not create it.
func TestTrimMissingStream(t *testing.T) {
	s := mem.New()
	v := vault.New(s, vault.Config{})
	defer v.Close()
	if _, err := v.Trim(context.Background(), "nothing", 0); !errors.Is(err, messagevault.ErrStreamNotFound) {
		t.Fatalf("trim of a missing stream: %v", err)
	}
	if names, _ := s.Streams(context.Background()); len(names) != 0 {
		t.Fatalf("a trim created streams %v", names)
	}
}

type trimCounter struct{ bytes atomic.Int64 }

func (c *trimCounter) Committed(string, int, int, int, time.Duration) {}
func (c *trimCounter) Failed(string, error)                           {}
func (c *trimCounter) Duplicate(string)                               {}
func (c *trimCounter) Evicted(string, int)                            {}
func (c *trimCounter) Trimmed(_ string, n int64)                      { c.bytes.Add(n) }
