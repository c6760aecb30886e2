package azure_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/azure"
	"github.com/messagevault/messagevault/internal/azurite"
	"github.com/messagevault/messagevault/segment"
)

// TestFencedWriterLeavesNewerSegments: a writer that was taken over and
// has not noticed yet (a paused process) cannot remove or empty the
// segments the newer writer rolled to and committed: its roll stops with
// ErrFenced, and every committed byte stays.
func TestFencedWriterLeavesNewerSegments(t *testing.T) {
	ctx := context.Background()
	az := azurite.Start(t)
	const page = messagevault.PageSize
	old, err := open(t, az, azure.Config{}).OpenWriter(ctx, "zombie")
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	time.Sleep(1100 * time.Millisecond) // the newer writer's changes come a second later
	newer, err := open(t, az, azure.Config{}).OpenWriter(ctx, "zombie")
	if err != nil {
		t.Fatal(err)
	}
	defer newer.Close()
	data := make([]byte, 2*page)
	for i := range data {
		data[i] = byte(i)
	}
	if err := newer.Grow(ctx, 2*page); err != nil {
		t.Fatal(err)
	}
	if err := newer.WritePages(ctx, 0, data); err != nil {
		t.Fatal(err)
	}
	if err := newer.Roll(ctx, 2*page); err != nil {
		t.Fatal(err)
	}
	if err := newer.Grow(ctx, 4*page); err != nil {
		t.Fatal(err)
	}
	if err := newer.WritePages(ctx, 2*page, data); err != nil {
		t.Fatal(err)
	}
	if err := newer.CommitPosition(ctx, 4*page); err != nil {
		t.Fatal(err)
	}
	// The old writer rolls elsewhere, and at the newer one's segment.
	for _, at := range []int64{page, 2 * page} {
		if err := old.Roll(ctx, at); !errors.Is(err, messagevault.ErrFenced) {
			t.Fatalf("a fenced writer's roll to %d: %v, want ErrFenced", at, err)
		}
	}
	r, err := open(t, az, azure.Config{}).OpenReader(ctx, "zombie")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	segs, err := r.Segments(ctx)
	if err != nil || len(segs) != 2 || segs[1] != 2*page {
		t.Fatalf("segments after the fenced roll: %v, %v", segs, err)
	}
	got := make([]byte, 4*page)
	if n, err := r.ReadAt(ctx, got, 0); n != len(got) || err != nil {
		t.Fatalf("read the committed stream: %d, %v", n, err)
	}
	for i := range got {
		if got[i] != data[i%(2*page)] {
			t.Fatalf("byte %d of %s changed", i, segment.Name(segs[i/(2*page)]))
		}
	}
}
