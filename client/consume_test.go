package client_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/messagevault/messagevault/client"
	"github.com/messagevault/messagevault/internal/mvtest"
)

// TestConsumeResumesExactlyOnceDownstream: a consumer that stops in the
// middle of a batch (after writing its output, before the cursor moved)
// resumes from its cursor without losing a message; the batch it handles
// again is stored once downstream, thanks to sequences derived from the
// input offsets; and the cursor ends at the stream's position.
func TestConsumeResumesExactlyOnceDownstream(t *testing.T) {
	s := mvtest.Start(t, t.TempDir(), nil)
	c := newClient(s)
	ctx := context.Background()
	const total = 500
	for b := 0; b < total; b += 50 {
		var msgs []client.Message
		for i := b; i < b+50; i++ {
			msgs = append(msgs, client.Message{Key: []byte("k"), Value: []byte(fmt.Sprintf("in-%04d", i))})
		}
		if _, err := c.Publish(ctx, "input", msgs); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	seen := map[string]int{}
	project := func(batch []client.ReadMessage) error {
		out := make([]client.Message, len(batch))
		for i, m := range batch {
			out[i] = client.Message{Key: m.Key, Value: append([]byte("out-"), m.Value...)}
		}
		_, err := c.Publish(ctx, "output", out, client.WithSequence("projector", uint64(batch[len(batch)-1].Next)))
		mu.Lock()
		for _, m := range batch {
			seen[string(m.Value)]++
		}
		mu.Unlock()
		return err
	}
	// The first run dies in its third batch: output written, cursor not
	// moved.
	run1, stop1 := context.WithCancel(ctx)
	batches := 0
	err := c.Consume(run1, "input", "projector", func(ctx context.Context, batch []client.ReadMessage) error {
		if err := project(batch); err != nil {
			return err
		}
		if batches++; batches == 3 {
			stop1()
			return errors.New("crashed before the commit")
		}
		return nil
	}, client.WithBatchSize(40))
	if err != nil {
		t.Fatalf("the first run: %v", err)
	}
	if cur, err := c.GetCursor(ctx, "input", "projector"); err != nil || cur.Position == 0 {
		t.Fatalf("the cursor after the first run: %+v, %v", cur, err)
	}
	// The second run goes on from the cursor, to the end.
	run2, stop2 := context.WithCancel(ctx)
	defer stop2()
	done := make(chan error, 1)
	go func() {
		done <- c.Consume(run2, "input", "projector", func(ctx context.Context, batch []client.ReadMessage) error {
			if err := project(batch); err != nil {
				return err
			}
			mu.Lock()
			all := len(seen) == total
			mu.Unlock()
			if all {
				go stop2()
			}
			return nil
		}, client.WithBatchSize(40))
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("the second run did not see every message: %d of %d", len(seen), total)
	}
	again := 0
	for v, n := range seen {
		if n > 1 {
			again++
		}
		if n > 2 {
			t.Fatalf("%s handled %d times", v, n)
		}
	}
	if again != 40 {
		t.Fatalf("%d messages were handled twice; want the 40 of the batch the first run died in", again)
	}
	// Downstream: each input message once, in order.
	r, err := c.Reader(ctx, "output")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	i := 0
	for m, err := range r.Messages(ctx, 0, -1) {
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("out-in-%04d", i); string(m.Value) != want {
			t.Fatalf("output message %d is %q, want %q", i, m.Value, want)
		}
		i++
	}
	if i != total {
		t.Fatalf("the output holds %d messages, want %d", i, total)
	}
	in, _ := c.Reader(ctx, "input")
	defer in.Close()
	pos, _ := in.Position(ctx)
	if cur, err := c.GetCursor(ctx, "input", "projector"); err != nil || cur.Position != pos || cur.Lag != 0 {
		t.Fatalf("the cursor at the end: %+v, %v; want position %d", cur, err, pos)
	}
}

// TestConsumeStopsWhenTheCursorIsTaken: a second consumer under the same
// cursor name makes the first stop with ErrCursorTaken instead of both
// moving it.
func TestConsumeStopsWhenTheCursorIsTaken(t *testing.T) {
	s := mvtest.Start(t, t.TempDir(), nil)
	c := newClient(s)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := c.Publish(ctx, "shared", []client.Message{{Key: []byte("k"), Value: []byte("one")}}); err != nil {
		t.Fatal(err)
	}
	err := c.Consume(ctx, "shared", "twice", func(ctx context.Context, batch []client.ReadMessage) error {
		// Someone else moves the cursor while this batch is handled.
		_, err := c.SetCursor(ctx, "shared", "twice", 0, "")
		return err
	})
	if !errors.Is(err, client.ErrCursorTaken) {
		t.Fatalf("Consume: %v, want ErrCursorTaken", err)
	}
}
