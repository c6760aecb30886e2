package client_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/client"
	"github.com/messagevault/messagevault/file"
	"github.com/messagevault/messagevault/internal/mvtest"
)

// TestMirrorOfATrimmedStream: a stream in 1 MiB segments, trimmed, is
// mirrored from its start: the mirror starts where the source does, holds
// the same records, verifies, and goes on from there on the next run.
func TestMirrorOfATrimmedStream(t *testing.T) {
	s := mvtest.Start(t, t.TempDir(), nil, "--segment-size", "1MiB")
	ctx := context.Background()
	c := newClient(s)
	publish := func(from, n int) {
		var msgs []client.Message
		for i := from; i < from+n; i++ {
			msgs = append(msgs, client.Message{Key: []byte("k"), Value: bytes.Repeat([]byte{byte(i)}, 5000)})
		}
		if _, err := c.Publish(ctx, "trimmed", msgs); err != nil {
			t.Fatal(err)
		}
	}
	for b := 0; b < 8; b++ {
		publish(b*100, 100)
	}
	start, err := c.Trim(ctx, "trimmed", 2<<20)
	if err != nil || start == 0 || start > 2<<20 {
		t.Fatalf("trim: start %d, %v", start, err)
	}
	r, err := c.Reader(ctx, "trimmed")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	mirror := t.TempDir()
	pos, err := r.Mirror(ctx, mirror, nil)
	if err != nil {
		t.Fatal(err)
	}
	m, err := client.OpenDir(mirror, "trimmed")
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if got, err := m.Start(ctx); err != nil || got != start {
		t.Fatalf("the mirror starts at %d (%v), the source at %d", got, err, start)
	}
	res, err := m.Verify(ctx, nil)
	if err != nil || res.Position != pos || res.Start != start {
		t.Fatalf("verify the mirror: %+v, %v", res, err)
	}
	same := func() {
		t.Helper()
		var a, b []client.ReadMessage
		for msg, err := range r.Messages(ctx, start, -1) {
			if err != nil {
				t.Fatal(err)
			}
			a = append(a, msg)
		}
		for msg, err := range m.Messages(ctx, start, -1) {
			if err != nil {
				t.Fatal(err)
			}
			b = append(b, msg)
		}
		if len(a) != len(b) || len(a) == 0 {
			t.Fatalf("source %d messages, mirror %d", len(a), len(b))
		}
		for i := range a {
			if a[i].Offset != b[i].Offset || !bytes.Equal(a[i].Value, b[i].Value) {
				t.Fatalf("message %d differs: source at %d, mirror at %d", i, a[i].Offset, b[i].Offset)
			}
		}
	}
	same()
	for _, err := range m.Messages(ctx, 0, -1) {
		if !errors.Is(err, messagevault.ErrTrimmed) {
			t.Fatalf("a read of the mirror below its start: %v, want ErrTrimmed", err)
		}
		break
	}
	publish(800, 100)
	if _, err := r.Mirror(ctx, mirror, nil); err != nil {
		t.Fatal(err)
	}
	same()

	// A first run cut off between committing its start and removing the
	// first segment is finished by the next run.
	half := t.TempDir()
	store, err := file.Open(half)
	if err != nil {
		t.Fatal(err)
	}
	pw, err := store.OpenWriter(ctx, "trimmed")
	if err != nil {
		t.Fatal(err)
	}
	if err := pw.Roll(ctx, start); err != nil {
		t.Fatal(err)
	}
	if err := pw.Grow(ctx, start-start%512+512); err != nil {
		t.Fatal(err)
	}
	if err := pw.CommitPosition(ctx, start); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	store.Close()
	if _, err := r.Mirror(ctx, half, nil); err != nil {
		t.Fatalf("the mirror after a cut-off start: %v", err)
	}
	m2, err := client.OpenDir(half, "trimmed")
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	if res, err := m2.Verify(ctx, nil); err != nil || res.Start != start || res.Records == 0 {
		t.Fatalf("verify the finished mirror: %+v, %v", res, err)
	}
}
