package vault_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
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
