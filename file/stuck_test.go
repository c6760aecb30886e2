package file

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestStuckDiskFailsPromptly: an fdatasync that never returns makes Flush
// fail when its context ends, and every later call fail at once, until
// the disk answers again.
func TestStuckDiskFailsPromptly(t *testing.T) {
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	pw, err := s.OpenWriter(ctx, "stuck")
	if err != nil {
		t.Fatal(err)
	}
	defer pw.Close()
	release := make(chan struct{})
	real := fdatasync
	fdatasync = func(fd int) error {
		<-release
		return real(fd)
	}
	defer func() { fdatasync = real }()

	tctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := pw.Flush(tctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Flush on a stuck disk: %v; want a deadline error", err)
	}
	if err := pw.CommitPosition(ctx, 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("CommitPosition while the disk is stuck: %v; want an immediate deadline error", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("the calls took %v", took)
	}
	close(release)
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := pw.CommitPosition(ctx, 0)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the disk answers again, yet: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestLoadedPositionIsMadeDurable: a writer opened on a stream whose
// position.c7 is already written (by a process that may have died before
// its fdatasync) syncs it before serving it.
func TestLoadedPositionIsMadeDurable(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	pw, err := s.OpenWriter(ctx, "loaded")
	if err != nil {
		t.Fatal(err)
	}
	if err := pw.Grow(ctx, 512); err != nil {
		t.Fatal(err)
	}
	if err := pw.CommitPosition(ctx, 100); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	synced := map[string]bool{}
	real := fdatasync
	fdatasync = func(fd int) error {
		if name, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd)); err == nil {
			synced[filepath.Base(name)] = true
		}
		return real(fd)
	}
	defer func() { fdatasync = real }()
	pw, err = s.OpenWriter(ctx, "loaded")
	if err != nil {
		t.Fatal(err)
	}
	defer pw.Close()
	if !synced[PositionFile] {
		t.Fatalf("opening a writer synced %v, not %s", synced, PositionFile)
	}
}
