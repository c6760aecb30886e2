package vault_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/mem"
	"github.com/messagevault/messagevault/stream"
	"github.com/messagevault/messagevault/vault"
)

func msgs(n int) []messagevault.Message {
	out := make([]messagevault.Message, n)
	for i := range out {
		out[i] = messagevault.NewMessage([]byte("k"), []byte(fmt.Sprint(i)), 0)
	}
	return out
}

func TestAppendOpensStreamsAndLists(t *testing.T) {
	ctx := context.Background()
	v := vault.New(mem.New(), vault.Config{})
	defer v.Close()
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := v.Append(ctx, fmt.Sprintf("Stream-%d", i%4), msgs(3)); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	infos, err := v.Streams(ctx)
	if err != nil || len(infos) != 4 {
		t.Fatalf("Streams = %v, %v", infos, err)
	}
	for _, in := range infos {
		if in.Position != 5*3*int64(25+1+1) {
			t.Fatalf("%s at %d", in.Name, in.Position)
		}
	}
	if _, err := v.Append(ctx, "../etc", msgs(1)); !errors.Is(err, messagevault.ErrInvalidStreamName) {
		t.Fatalf("bad name: %v", err)
	}
}

func TestIdleWritersAreClosed(t *testing.T) {
	ctx := context.Background()
	v := vault.New(mem.New(), vault.Config{IdleTimeout: 50 * time.Millisecond})
	defer v.Close()
	if _, err := v.Append(ctx, "idle", msgs(1)); err != nil {
		t.Fatal(err)
	}
	if v.OpenWriters() != 1 {
		t.Fatalf("%d writers open", v.OpenWriters())
	}
	deadline := time.Now().Add(10 * time.Second)
	for v.OpenWriters() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("idle writer never closed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The stream reopens on the next append and continues at its position.
	res, err := v.Append(ctx, "idle", msgs(1))
	if err != nil || res.Offsets[0] != 27 {
		t.Fatalf("append after idle close: %+v, %v", res, err)
	}
}

func TestStoppedWriterIsReplaced(t *testing.T) {
	ctx := context.Background()
	s := mem.New()
	v := vault.New(s, vault.Config{})
	defer v.Close()
	if _, err := v.Append(ctx, "crashy", msgs(1)); err != nil {
		t.Fatal(err)
	}
	// Storage "restarts" under the writer: its storage writer is dead.
	s.Crash()
	if _, err := v.Append(ctx, "crashy", msgs(1)); !errors.Is(err, messagevault.ErrClosed) {
		t.Fatalf("append on a dead storage writer: %v", err)
	}
	// The vault retires it and opens a fresh one.
	res, err := v.Append(ctx, "crashy", msgs(1))
	if err != nil || res.Offsets[0] != 27 {
		t.Fatalf("append after replacement: %+v, %v", res, err)
	}
}

func TestWaitIsWokenByCommit(t *testing.T) {
	ctx := context.Background()
	v := vault.New(mem.New(), vault.Config{})
	defer v.Close()
	res, err := v.Append(ctx, "wake", msgs(1))
	if err != nil {
		t.Fatal(err)
	}
	// Wait blocks at res.Position until the next commit, which closes
	// the channel Committed returned before it: wait on that channel
	// too, so the append below happens while Wait holds the same one.
	_, changed, ok := v.Committed("wake")
	if !ok {
		t.Fatal("the vault's own stream has no committed position")
	}
	woke := make(chan struct{})
	go func() {
		v.Wait(ctx, "wake", res.Position, time.Hour)
		close(woke)
	}()
	select {
	case <-woke:
		t.Fatal("Wait returned before any commit")
	default:
	}
	if _, err := v.Append(ctx, "wake", msgs(1)); err != nil {
		t.Fatal(err)
	}
	<-changed
	select {
	case <-woke:
	case <-time.After(30 * time.Second):
		t.Fatal("Wait was not woken by the commit")
	}
	v.Close()
	if _, err := v.Append(ctx, "wake", msgs(1)); !errors.Is(err, messagevault.ErrClosed) {
		t.Fatalf("append after Close: %v", err)
	}
}

// A node whose leadership has lapsed never opens a writer: opening one
// takes the stream over (new ETags on Azure), which would fence the real
// leader.
func TestNoWriterOpensPastTheDeadline(t *testing.T) {
	ctx := context.Background()
	s := mem.New()
	past := func() time.Time { return time.Now().Add(-time.Second) }
	v := vault.New(s, vault.Config{Writer: stream.WriterConfig{Deadline: past}})
	defer v.Close()
	if _, err := v.Append(ctx, "lapsed", msgs(1)); !errors.Is(err, messagevault.ErrNotLeader) {
		t.Fatalf("append past the deadline: %v; want ErrNotLeader", err)
	}
	if names, err := s.Streams(ctx); err != nil || len(names) != 0 {
		t.Fatalf("storage holds %v (%v): a writer was opened", names, err)
	}
}

// TestDeleteWhileAppending: a delete in the middle of appends from several
// producers neither deadlocks nor loses the vault: every append succeeds
// (before the delete, written and deleted with the stream; after, into the
// new stream) or fails with ErrClosed (taken by the writer as it closed),
// and the stream left holds exactly the appends acknowledged after the
// delete, from position 0.
func TestDeleteWhileAppending(t *testing.T) {
	ctx := context.Background()
	s := mem.New()
	v := vault.New(s, vault.Config{})
	defer v.Close()
	if _, err := v.Append(ctx, "busy", msgs(1)); err != nil {
		t.Fatal(err)
	}
	var deleted atomic.Bool
	var after atomic.Int64 // messages acknowledged after the delete returned
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				was := deleted.Load()
				_, err := v.Append(ctx, "busy", msgs(2))
				switch {
				case err == nil && was:
					after.Add(2)
				case err == nil:
				case errors.Is(err, messagevault.ErrClosed):
				default:
					t.Errorf("append during a delete: %v", err)
					return
				}
			}
		}()
	}
	time.Sleep(20 * time.Millisecond) // appends under way (not waited on: the delete must work at any point)
	if err := v.DeleteStream(ctx, "busy"); err != nil {
		t.Fatal(err)
	}
	deleted.Store(true)
	time.Sleep(20 * time.Millisecond)
	close(stop)
	wg.Wait()
	if err := v.DeleteStream(ctx, "never"); !errors.Is(err, messagevault.ErrStreamNotFound) {
		t.Fatalf("delete of no stream: %v", err)
	}
	r, closeReader, err := v.Reader(ctx, "busy", stream.ReaderConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer closeReader()
	n := int64(0)
	first := int64(-1)
	for rec, err := range r.Records(ctx, 0, -1) {
		if err != nil {
			t.Fatal(err)
		}
		if first < 0 {
			first = rec.Offset
		}
		n++
	}
	// Appends that were in flight as the delete returned may land in the
	// new stream without being counted: at least the counted ones are
	// there, from 0.
	if n < after.Load() || (n > 0 && first != 0) {
		t.Fatalf("the stream after the delete holds %d records from %d; %d were acknowledged after it", n, first, after.Load())
	}
}

// TestNoDeletePastTheDeadline: a node whose leadership has lapsed does not
// delete (the new leader may be writing the stream); a delete is bounded
// by the deadline.
func TestNoDeletePastTheDeadline(t *testing.T) {
	ctx := context.Background()
	s := mem.New()
	var lapsed atomic.Bool
	deadline := func() time.Time {
		if lapsed.Load() {
			return time.Now().Add(-time.Second)
		}
		return time.Now().Add(time.Hour)
	}
	v := vault.New(s, vault.Config{Writer: stream.WriterConfig{Deadline: deadline}})
	defer v.Close()
	if _, err := v.Append(ctx, "kept", msgs(1)); err != nil {
		t.Fatal(err)
	}
	lapsed.Store(true)
	if err := v.DeleteStream(ctx, "kept"); !errors.Is(err, messagevault.ErrNotLeader) {
		t.Fatalf("delete past the deadline: %v; want ErrNotLeader", err)
	}
	if names, err := s.Streams(ctx); err != nil || len(names) != 1 {
		t.Fatalf("storage holds %v (%v) after a refused delete", names, err)
	}
}

// CreateStream makes an empty stream that lists and reads at position 0,
// once: a second creation, or one of a written stream, reports false.
func TestCreateStream(t *testing.T) {
	ctx := context.Background()
	v := vault.New(mem.New(), vault.Config{})
	defer v.Close()
	if created, err := v.CreateStream(ctx, "made"); err != nil || !created {
		t.Fatalf("create: %v, %v", created, err)
	}
	infos, err := v.Streams(ctx)
	if err != nil || len(infos) != 1 || infos[0].Name != "made" || infos[0].Position != 0 {
		t.Fatalf("Streams = %v, %v", infos, err)
	}
	if created, err := v.CreateStream(ctx, "made"); err != nil || created {
		t.Fatalf("create again: %v, %v; want false", created, err)
	}
	if _, err := v.Append(ctx, "written", msgs(1)); err != nil {
		t.Fatal(err)
	}
	if created, err := v.CreateStream(ctx, "written"); err != nil || created {
		t.Fatalf("create a written stream: %v, %v; want false", created, err)
	}
	if _, err := v.CreateStream(ctx, "../bad"); !errors.Is(err, messagevault.ErrInvalidStreamName) {
		t.Fatalf("create ../bad: %v", err)
	}
}
