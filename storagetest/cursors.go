package storagetest

import (
	"context"
	"errors"
	"testing"

	"github.com/messagevault/messagevault"
)

// testCursors: cursors are created, read, changed only under the ETag
// they were read with, listed by name, deleted; and kept per stream.
func testCursors(t *testing.T, s messagevault.Storage) {
	cs, ok := s.(messagevault.Cursors)
	if !ok {
		t.Skip("this storage keeps no cursors")
	}
	ctx := context.Background()
	w := mustWriter(t, s, "consumed")
	w.Close()
	if _, err := cs.ReadCursor(ctx, "consumed", "reports"); !errors.Is(err, messagevault.ErrCursorNotFound) {
		t.Fatalf("an unknown cursor: %v, want ErrCursorNotFound", err)
	}
	if _, err := cs.WriteCursor(ctx, "consumed", "reports", 10, "nope"); !errors.Is(err, messagevault.ErrCursorChanged) {
		t.Fatalf("If-Match on no cursor: %v, want ErrCursorChanged", err)
	}
	a, err := cs.WriteCursor(ctx, "consumed", "reports", 100, "")
	if err != nil || a.Position != 100 || a.ETag == "" || a.Name != "reports" {
		t.Fatalf("create: %+v, %v", a, err)
	}
	b, err := cs.WriteCursor(ctx, "consumed", "reports", 200, a.ETag)
	if err != nil || b.Position != 200 || b.ETag == a.ETag {
		t.Fatalf("a write under the current ETag: %+v, %v", b, err)
	}
	if _, err := cs.WriteCursor(ctx, "consumed", "reports", 300, a.ETag); !errors.Is(err, messagevault.ErrCursorChanged) {
		t.Fatalf("a write under a stale ETag: %v, want ErrCursorChanged", err)
	}
	got, err := cs.ReadCursor(ctx, "consumed", "reports")
	if err != nil || got != b {
		t.Fatalf("read back: %+v, %v; want %+v", got, err, b)
	}
	if _, err := cs.WriteCursor(ctx, "consumed", "exports.v2", 0, ""); err != nil {
		t.Fatal(err)
	}
	list, err := cs.ListCursors(ctx, "consumed")
	if err != nil || len(list) != 2 || list[0].Name != "exports.v2" || list[1] != b {
		t.Fatalf("list: %+v, %v", list, err)
	}
	if other, err := cs.ListCursors(ctx, "other"); err != nil || len(other) != 0 {
		t.Fatalf("the cursors of a stream without any: %+v, %v", other, err)
	}
	if err := cs.DeleteCursor(ctx, "consumed", "reports"); err != nil {
		t.Fatal(err)
	}
	if err := cs.DeleteCursor(ctx, "consumed", "reports"); !errors.Is(err, messagevault.ErrCursorNotFound) {
		t.Fatalf("delete twice: %v, want ErrCursorNotFound", err)
	}
	if list, err := cs.ListCursors(ctx, "consumed"); err != nil || len(list) != 1 {
		t.Fatalf("list after a delete: %+v, %v", list, err)
	}
}
