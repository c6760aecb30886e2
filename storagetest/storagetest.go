// Package storagetest is the conformance suite that every
// messagevault.Storage backend must pass: file, mem, and azure against
// Azurite. A backend's test calls Run with a function that returns a fresh,
// empty storage.
package storagetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/messagevault/messagevault"
)

// NewStorage returns a fresh, empty storage for one subtest. It registers
// its own cleanup with t.
type NewStorage func(t *testing.T) messagevault.Storage

const page = messagevault.PageSize

// Run runs the conformance suite against storages made by newStorage.
func Run(t *testing.T, newStorage NewStorage) {
	tests := []struct {
		name string
		fn   func(*testing.T, messagevault.Storage)
	}{
		{"NewStreamIsEmpty", testNewStreamIsEmpty},
		{"ReaderOfUnknownStream", testReaderOfUnknownStream},
		{"GrowNeverShrinks", testGrowNeverShrinks},
		{"WritePagesChecksAlignmentAndSize", testWritePagesChecks},
		{"WriteReadRoundTrip", testWriteReadRoundTrip},
		{"ReadPastEnd", testReadPastEnd},
		{"CommitPosition", testCommitPosition},
		{"OneWriterPerStream", testOneWriterPerStream},
		{"ReopenKeepsData", testReopenKeepsData},
		{"StreamsListed", testStreamsListed},
		{"LargeWrite", testLargeWrite},
		{"ConcurrentReaders", testConcurrentReaders},
		{"StateSlots", testStateSlots},
		{"Refence", testRefence},
		{"DeleteStream", testDeleteStream},
		{"RollAndReadAcross", testRollAndReadAcross},
		{"UncommittedRoll", testUncommittedRoll},
		{"Trim", testTrim},
		{"TimeIndex", testTimeIndex},
		{"Cursors", testCursors},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fn(t, newStorage(t))
		})
	}
}

func mustWriter(t *testing.T, s messagevault.Storage, stream string) messagevault.PageWriter {
	t.Helper()
	w, err := s.OpenWriter(context.Background(), stream)
	if err != nil {
		t.Fatalf("OpenWriter(%q): %v", stream, err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

func mustReader(t *testing.T, s messagevault.Storage, stream string) messagevault.PageReader {
	t.Helper()
	r, err := s.OpenReader(context.Background(), stream)
	if err != nil {
		t.Fatalf("OpenReader(%q): %v", stream, err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func pages(n int, seed uint64) []byte {
	b := make([]byte, n*page)
	r := rand.New(rand.NewPCG(seed, seed))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func readAll(t *testing.T, r messagevault.PageReader, off int64, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	got, err := r.ReadAt(context.Background(), b, off)
	if err != nil || got != n {
		t.Fatalf("ReadAt(%d bytes at %d) = %d, %v", n, off, got, err)
	}
	return b
}

func testNewStreamIsEmpty(t *testing.T, s messagevault.Storage) {
	ctx := context.Background()
	w := mustWriter(t, s, "fresh")
	pos, err := w.Position(ctx)
	if err != nil || pos != 0 {
		t.Fatalf("Position of a new stream = %d, %v; want 0", pos, err)
	}
	size, err := w.Size(ctx)
	if err != nil || size%page != 0 {
		t.Fatalf("Size of a new stream = %d, %v; want a multiple of %d", size, err, page)
	}
	r := mustReader(t, s, "fresh")
	if pos, err := r.Position(ctx); err != nil || pos != 0 {
		t.Fatalf("reader Position of a new stream = %d, %v; want 0", pos, err)
	}
}

func testReaderOfUnknownStream(t *testing.T, s messagevault.Storage) {
	_, err := s.OpenReader(context.Background(), "never-written")
	if !errors.Is(err, messagevault.ErrStreamNotFound) {
		t.Fatalf("OpenReader of an unknown stream: %v; want ErrStreamNotFound", err)
	}
}

func testGrowNeverShrinks(t *testing.T, s messagevault.Storage) {
	ctx := context.Background()
	w := mustWriter(t, s, "grow")
	if err := w.Grow(ctx, 8*page); err != nil {
		t.Fatal(err)
	}
	if size, _ := w.Size(ctx); size < 8*page {
		t.Fatalf("Size after Grow(8 pages) = %d", size)
	}
	if err := w.Grow(ctx, 2*page); err != nil {
		t.Fatal(err)
	}
	if size, _ := w.Size(ctx); size < 8*page {
		t.Fatalf("Size after Grow to less = %d; Grow must never shrink", size)
	}
	if err := w.Grow(ctx, 8*page+1); !errors.Is(err, messagevault.ErrOutOfRange) {
		t.Fatalf("Grow to an unaligned size: %v; want ErrOutOfRange", err)
	}
	// New bytes read as zeros.
	r := mustReader(t, s, "grow")
	if b := readAll(t, r, 0, 8*page); !bytes.Equal(b, make([]byte, 8*page)) {
		t.Fatal("grown bytes are not zero")
	}
}

func testWritePagesChecks(t *testing.T, s messagevault.Storage) {
	ctx := context.Background()
	w := mustWriter(t, s, "checks")
	if err := w.Grow(ctx, 4*page); err != nil {
		t.Fatal(err)
	}
	size, _ := w.Size(ctx)
	for _, tc := range []struct {
		name string
		off  int64
		n    int
	}{
		{"unaligned offset", 100, page},
		{"unaligned length", 0, page + 1},
		{"negative offset", -page, page},
		{"past the size", size, page},
		{"straddles the size", size - page, 2 * page},
	} {
		if err := w.WritePages(ctx, tc.off, make([]byte, tc.n)); !errors.Is(err, messagevault.ErrOutOfRange) {
			t.Errorf("%s: WritePages(%d bytes at %d) = %v; want ErrOutOfRange", tc.name, tc.n, tc.off, err)
		}
	}
	r := mustReader(t, s, "checks")
	if b := readAll(t, r, 0, 4*page); !bytes.Equal(b, make([]byte, 4*page)) {
		t.Fatal("a rejected write changed the blob")
	}
}

func testWriteReadRoundTrip(t *testing.T, s messagevault.Storage) {
	ctx := context.Background()
	w := mustWriter(t, s, "round-trip")
	if err := w.Grow(ctx, 16*page); err != nil {
		t.Fatal(err)
	}
	a, b := pages(3, 1), pages(2, 2)
	if err := w.WritePages(ctx, 0, a); err != nil {
		t.Fatal(err)
	}
	if err := w.WritePages(ctx, 5*page, b); err != nil {
		t.Fatal(err)
	}
	// Overwrite a page in the middle.
	c := pages(1, 3)
	if err := w.WritePages(ctx, page, c); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 7*page)
	copy(want, a)
	copy(want[page:], c)
	copy(want[5*page:], b)
	r := mustReader(t, s, "round-trip")
	if got := readAll(t, r, 0, len(want)); !bytes.Equal(got, want) {
		t.Fatal("reader does not see the written pages")
	}
	if got := readAll(t, w, 0, len(want)); !bytes.Equal(got, want) {
		t.Fatal("writer does not see the written pages")
	}
	// Unaligned reads are fine.
	if got := readAll(t, r, 700, 1000); !bytes.Equal(got, want[700:1700]) {
		t.Fatal("unaligned read differs")
	}
}

func testReadPastEnd(t *testing.T, s messagevault.Storage) {
	ctx := context.Background()
	w := mustWriter(t, s, "past-end")
	if err := w.Grow(ctx, 2*page); err != nil {
		t.Fatal(err)
	}
	size, _ := w.Size(ctx)
	buf := make([]byte, 2*page)
	n, err := w.ReadAt(ctx, buf, size-page)
	if n != page || !errors.Is(err, io.EOF) {
		t.Fatalf("ReadAt across the end = %d, %v; want %d, io.EOF", n, err, page)
	}
	n, err = w.ReadAt(ctx, buf, size+10*page)
	if n != 0 || !errors.Is(err, io.EOF) {
		t.Fatalf("ReadAt past the end = %d, %v; want 0, io.EOF", n, err)
	}
}

func testCommitPosition(t *testing.T, s messagevault.Storage) {
	ctx := context.Background()
	w := mustWriter(t, s, "commit")
	if err := w.Grow(ctx, 4*page); err != nil {
		t.Fatal(err)
	}
	if err := w.WritePages(ctx, 0, pages(2, 4)); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	r := mustReader(t, s, "commit")
	for _, pos := range []int64{1, 700, 2 * page} {
		if err := w.CommitPosition(ctx, pos); err != nil {
			t.Fatalf("CommitPosition(%d): %v", pos, err)
		}
		if got, err := w.Position(ctx); err != nil || got != pos {
			t.Fatalf("writer Position = %d, %v; want %d", got, err, pos)
		}
		if got, err := r.Position(ctx); err != nil || got != pos {
			t.Fatalf("reader Position = %d, %v; want %d", got, err, pos)
		}
	}
	size, _ := w.Size(ctx)
	if err := w.CommitPosition(ctx, size+page); !errors.Is(err, messagevault.ErrOutOfRange) {
		t.Fatalf("CommitPosition past the blob: %v; want ErrOutOfRange", err)
	}
	if got, _ := r.Position(ctx); got != 2*page {
		t.Fatalf("a rejected commit changed the position to %d", got)
	}
}

func testOneWriterPerStream(t *testing.T, s messagevault.Storage) {
	ctx := context.Background()
	w := mustWriter(t, s, "exclusive")
	if _, err := s.OpenWriter(ctx, "exclusive"); !errors.Is(err, messagevault.ErrLocked) {
		t.Fatalf("second OpenWriter: %v; want ErrLocked", err)
	}
	// Other streams are independent.
	mustWriter(t, s, "other")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w2, err := s.OpenWriter(ctx, "exclusive")
	if err != nil {
		t.Fatalf("OpenWriter after Close: %v", err)
	}
	w2.Close()
}

func testReopenKeepsData(t *testing.T, s messagevault.Storage) {
	ctx := context.Background()
	w, err := s.OpenWriter(ctx, "reopen")
	if err != nil {
		t.Fatal(err)
	}
	data := pages(3, 5)
	if err := w.Grow(ctx, 3*page); err != nil {
		t.Fatal(err)
	}
	if err := w.WritePages(ctx, 0, data); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.CommitPosition(ctx, 1234); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w = mustWriter(t, s, "reopen")
	if pos, err := w.Position(ctx); err != nil || pos != 1234 {
		t.Fatalf("Position after reopen = %d, %v; want 1234", pos, err)
	}
	if size, _ := w.Size(ctx); size < 3*page {
		t.Fatalf("Size after reopen = %d; want at least %d", size, 3*page)
	}
	if got := readAll(t, w, 0, len(data)); !bytes.Equal(got, data) {
		t.Fatal("data differs after reopen")
	}
}

func testStreamsListed(t *testing.T, s messagevault.Storage) {
	want := []string{"alpha", "beta-2", "gamma"}
	for _, n := range []string{"gamma", "alpha", "beta-2"} {
		mustWriter(t, s, n)
	}
	got, err := s.Streams(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("Streams = %v; want %v", got, want)
	}
}

func testLargeWrite(t *testing.T, s messagevault.Storage) {
	ctx := context.Background()
	w := mustWriter(t, s, "large")
	data := pages(5<<20/page+3, 6) // over Azure's 4 MiB per Put Page
	if err := w.Grow(ctx, int64(len(data))+page); err != nil {
		t.Fatal(err)
	}
	if err := w.WritePages(ctx, page, data); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.CommitPosition(ctx, int64(len(data))+page); err != nil {
		t.Fatal(err)
	}
	r := mustReader(t, s, "large")
	if got := readAll(t, r, page, len(data)); !bytes.Equal(got, data) {
		t.Fatal("large write reads back differently")
	}
}

func testConcurrentReaders(t *testing.T, s messagevault.Storage) {
	ctx := context.Background()
	w := mustWriter(t, s, "concurrent")
	const n = 32
	if err := w.Grow(ctx, n*page); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		r := mustReader(t, s, "concurrent")
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, page)
			for {
				pos, err := r.Position(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				if pos == 0 {
					continue
				}
				// A committed page always holds its page number.
				k := (pos / page) - 1
				if _, err := r.ReadAt(ctx, buf, k*page); err != nil {
					t.Error(err)
					return
				}
				if buf[0] != byte(k) {
					t.Errorf("committed page %d holds %d", k, buf[0])
					return
				}
				if pos == n*page {
					return // every reader sees the final position
				}
			}
		}()
	}
	for k := 0; k < n; k++ {
		p := bytes.Repeat([]byte{byte(k)}, page)
		if err := w.WritePages(ctx, int64(k)*page, p); err != nil {
			t.Fatal(err)
		}
		if err := w.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		if err := w.CommitPosition(ctx, int64(k+1)*page); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
}

// testStateSlots: the two writer-state slots start empty, hold what was
// last written to each, survive a reopen, and refuse other slot numbers.
func testStateSlots(t *testing.T, s messagevault.Storage) {
	ctx := context.Background()
	w := mustWriter(t, s, "state")
	for slot := range 2 {
		if b, err := readState(ctx, w, slot); err != nil || len(b) != 0 {
			t.Fatalf("new stream's slot %d: %q, %v; want empty", slot, b, err)
		}
	}
	if err := w.WriteState(ctx, 2, []byte("x")); !errors.Is(err, messagevault.ErrOutOfRange) {
		t.Fatalf("WriteState(2): %v; want ErrOutOfRange", err)
	}
	long := pages(3, 9)[:1000]
	big := pages(20, 7) // larger than a backend may keep with the position
	for _, step := range []struct {
		slot int
		p    []byte
	}{{0, long}, {1, big}, {1, []byte("one")}, {0, []byte("shorter")}} {
		if err := w.WriteState(ctx, step.slot, step.p); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.CommitPosition(ctx, 0); err != nil { // states are durable with it
		t.Fatal(err)
	}
	check := func(w messagevault.PageWriter) {
		t.Helper()
		for slot, want := range []string{"shorter", "one"} {
			if b, err := readState(ctx, w, slot); err != nil || !bytes.HasPrefix(b, []byte(want)) {
				t.Fatalf("slot %d: %q, %v; want %q", slot, b, err, want)
			}
			// A read from inside the slot, and one past what it holds.
			p := make([]byte, 2)
			if n, err := w.ReadState(ctx, slot, p, 1); n != 2 || err != nil || string(p) != want[1:3] {
				t.Fatalf("slot %d at 1: %q, %d, %v; want %q", slot, p, n, err, want[1:3])
			}
			if n, err := w.ReadState(ctx, slot, p, 8<<20); n != 0 || !errors.Is(err, io.EOF) {
				t.Fatalf("slot %d past its end: %d, %v; want 0, io.EOF", slot, n, err)
			}
		}
	}
	check(w)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w = mustWriter(t, s, "state")
	check(w)
	// A large state replaces a small one, and survives a reopen.
	if err := w.WriteState(ctx, 1, big); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.CommitPosition(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	w = mustWriter(t, s, "state")
	if b, err := readState(ctx, w, 1); err != nil || !bytes.HasPrefix(b, big) {
		t.Fatalf("slot 1 after a large state and a reopen: %d bytes, %v; want the %d written", len(b), err, len(big))
	}
	if b, err := readState(ctx, w, 0); err != nil || !bytes.HasPrefix(b, []byte("shorter")) {
		t.Fatalf("slot 0 after a reopen: %.20q, %v", b, err)
	}
}

// readState reads what slot holds, to its end (io.EOF).
func readState(ctx context.Context, w messagevault.PageWriter, slot int) ([]byte, error) {
	var out []byte
	buf := make([]byte, 100)
	for {
		n, err := w.ReadState(ctx, slot, buf, int64(len(out)))
		out = append(out, buf[:n]...)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
	}
}

// testRefence: a writer keeps writing after Refence, and what it had
// committed is still there.
func testRefence(t *testing.T, s messagevault.Storage) {
	ctx := context.Background()
	w := mustWriter(t, s, "refence")
	if err := w.Grow(ctx, 2*page); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteState(ctx, 0, []byte("s")); err != nil {
		t.Fatal(err)
	}
	if err := w.CommitPosition(ctx, 100); err != nil {
		t.Fatal(err)
	}
	if err := w.Refence(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.WritePages(ctx, page, pages(1, 3)); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteState(ctx, 0, []byte("t")); err != nil {
		t.Fatal(err)
	}
	if err := w.CommitPosition(ctx, page+10); err != nil {
		t.Fatal(err)
	}
	if pos, err := w.Position(ctx); err != nil || pos != page+10 {
		t.Fatalf("Position after Refence and a commit = %d, %v", pos, err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// testDeleteStream: a deleted stream leaves the listing and the readers at
// once, another stream is untouched, and writing the name again starts a
// new stream at 0. Deleting needs the writer closed, and a stream that
// exists. (Skipped for storages that cannot delete.)
func testDeleteStream(t *testing.T, s messagevault.Storage) {
	d, ok := s.(messagevault.Deleter)
	if !ok {
		t.Skip("this storage does not delete streams")
	}
	ctx := context.Background()
	keep := mustWriter(t, s, "kept")
	if err := keep.Grow(ctx, page); err != nil {
		t.Fatal(err)
	}
	if err := keep.CommitPosition(ctx, 100); err != nil {
		t.Fatal(err)
	}
	w, err := s.OpenWriter(ctx, "doomed")
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Grow(ctx, 2*page); err != nil {
		t.Fatal(err)
	}
	if err := w.WritePages(ctx, 0, pages(2, 9)); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.CommitPosition(ctx, 700); err != nil {
		t.Fatal(err)
	}
	if err := d.DeleteStream(ctx, "doomed"); !errors.Is(err, messagevault.ErrLocked) {
		t.Fatalf("delete with its writer open: %v; want ErrLocked", err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.DeleteStream(ctx, "doomed"); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if names, err := s.Streams(ctx); err != nil || fmt.Sprint(names) != "[kept]" {
		t.Fatalf("Streams after the delete = %v, %v; want [kept]", names, err)
	}
	if _, err := s.OpenReader(ctx, "doomed"); !errors.Is(err, messagevault.ErrStreamNotFound) {
		t.Fatalf("OpenReader of the deleted stream: %v; want ErrStreamNotFound", err)
	}
	if err := d.DeleteStream(ctx, "doomed"); !errors.Is(err, messagevault.ErrStreamNotFound) {
		t.Fatalf("delete again: %v; want ErrStreamNotFound", err)
	}
	if err := d.DeleteStream(ctx, "never-written"); !errors.Is(err, messagevault.ErrStreamNotFound) {
		t.Fatalf("delete of no stream: %v; want ErrStreamNotFound", err)
	}
	if pos, err := keep.Position(ctx); err != nil || pos != 100 {
		t.Fatalf("the other stream's position = %d, %v; want 100", pos, err)
	}
	// Written again (where the storage lets the name be used at once;
	// Azure refuses it for a while), the stream starts anew.
	again, err := s.OpenWriter(ctx, "doomed")
	if errors.Is(err, messagevault.ErrStreamBeingDeleted) {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if pos, err := again.Position(ctx); err != nil || pos != 0 {
		t.Fatalf("position of the stream written again = %d, %v; want 0", pos, err)
	}
}
