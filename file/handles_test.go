package file

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/messagevault/messagevault"
)

// appendPage writes one page of b at the stream's position and commits it,
// as the stream writer does: grow, write, flush, commit.
func appendPage(t *testing.T, w messagevault.PageWriter, b byte) {
	t.Helper()
	ctx := context.Background()
	pos, err := w.Position(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Grow(ctx, pos+messagevault.PageSize); err != nil {
		t.Fatal(err)
	}
	if err := w.WritePages(ctx, pos, bytes.Repeat([]byte{b}, messagevault.PageSize)); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.CommitPosition(ctx, pos+messagevault.PageSize); err != nil {
		t.Fatal(err)
	}
}

// twoWriters opens writers of streams a and b on a storage with a bound
// of 4 open files, so one write slot, and grows each by a page (which
// takes no slot). They close when the test ends.
func twoWriters(t *testing.T) (a, b messagevault.PageWriter) {
	t.Helper()
	s, err := OpenWith(t.TempDir(), Options{MaxOpenFiles: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx := context.Background()
	for _, name := range []string{"a", "b"} {
		w, err := s.OpenWriter(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { w.Close() }) // before the storage's Close: cleanups run last first
		if err := w.Grow(ctx, messagevault.PageSize); err != nil {
			t.Fatal(err)
		}
		if a == nil {
			a = w
		} else {
			b = w
		}
	}
	return a, b
}

// Many writers and readers, all kept open, stay within the bound: the
// least recently used idle file is closed and opened again on its next
// use, and reads find what was written.
func TestOpenFilesStayWithinTheBound(t *testing.T) {
	const bound, streams, rounds = 6, 20, 3
	s, err := OpenWith(t.TempDir(), Options{MaxOpenFiles: bound})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	var ws []messagevault.PageWriter
	var rs []messagevault.PageReader
	for i := range streams {
		w, err := s.OpenWriter(ctx, fmt.Sprintf("s%02d", i))
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		ws = append(ws, w)
	}
	for r := range rounds {
		for i, w := range ws {
			appendPage(t, w, byte(r*streams+i))
		}
	}
	for i := range streams {
		rd, err := s.OpenReader(ctx, fmt.Sprintf("s%02d", i))
		if err != nil {
			t.Fatal(err)
		}
		defer rd.Close()
		rs = append(rs, rd)
	}
	for pass := range 2 {
		for i, rd := range rs {
			if pos, err := rd.Position(ctx); err != nil || pos != rounds*messagevault.PageSize {
				t.Fatalf("pass %d, stream %d: position %d, %v", pass, i, pos, err)
			}
			p := make([]byte, rounds*messagevault.PageSize)
			if _, err := rd.ReadAt(ctx, p, 0); err != nil {
				t.Fatalf("pass %d, stream %d: %v", pass, i, err)
			}
			for r := range rounds {
				if want := byte(r*streams + i); p[r*messagevault.PageSize] != want || p[(r+1)*messagevault.PageSize-1] != want {
					t.Fatalf("pass %d, stream %d, page %d: %d, want %d", pass, i, r, p[r*messagevault.PageSize], want)
				}
			}
		}
	}
	now, peak := s.OpenFiles()
	if peak > bound || now > bound {
		t.Fatalf("open files: %d now, %d at most; the bound is %d", now, peak, bound)
	}
	if peak < bound {
		t.Fatalf("at most %d files were open: the test never reached the bound of %d", peak, bound)
	}
}

// A file with writes not yet synced is not closed to make room: it stays
// open until its sync, so that the sync is the one that sees any write
// error. Then it may go.
func TestUnsyncedFilesStayOpen(t *testing.T) {
	o := newOpenFiles(2)
	dir := t.TempDir()
	open := func(name string) *handle {
		h, err := o.openHandle(dir+"/"+name, os.O_RDWR|os.O_CREATE, FileMode)
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	dirty := open("dirty")
	if err := dirty.write(func(f *os.File) error { _, err := f.WriteAt([]byte("x"), 0); return err }); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		h := open(fmt.Sprint("other", i))
		if err := h.read(func(*os.File) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	o.mu.Lock()
	stillOpen := dirty.f != nil
	o.mu.Unlock()
	if !stillOpen {
		t.Fatal("a file with an unsynced write was closed to make room")
	}
	if err := dirty.sync(func(f *os.File) error { return f.Sync() }); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		h := open(fmt.Sprint("more", i))
		if err := h.read(func(*os.File) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	o.mu.Lock()
	stillOpen = dirty.f != nil
	o.mu.Unlock()
	if stillOpen {
		t.Fatal("a synced, idle, least recently used file was kept open past the bound")
	}
	// Opened again on its next use, with what was written.
	var b [1]byte
	if err := dirty.read(func(f *os.File) error { _, err := f.ReadAt(b[:], 0); return err }); err != nil || b[0] != 'x' {
		t.Fatalf("read after reopening: %q, %v", b, err)
	}
	if err := dirty.Close(); err != nil {
		t.Fatal(err)
	}
	if err := dirty.read(func(*os.File) error { return nil }); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("use after Close: %v; want os.ErrClosed", err)
	}
}

// A writer waits for a write slot while others hold them all (here, one
// slot for a bound of 4), no longer than its context allows, and gets one
// once a holder's writes are synced and committed.
func TestWritersWaitForAWriteSlot(t *testing.T) {
	ctx := context.Background()
	a, b := twoWriters(t)
	if err := a.WritePages(ctx, 0, make([]byte, messagevault.PageSize)); err != nil { // a holds the slot now
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := b.WritePages(short, 0, make([]byte, messagevault.PageSize)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("b wrote while a held the only write slot: %v", err)
	}
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.CommitPosition(ctx, messagevault.PageSize); err != nil {
		t.Fatal(err)
	}
	appendPage(t, b, 7) // the slot is free again
	appendPage(t, a, 8)
}

// Readers on many goroutines share a bound of 3 open files: files are
// closed after one reader and opened again by another all the time, and
// every read still finds what was written.
func TestConcurrentReadsWithFewOpenFiles(t *testing.T) {
	s, err := OpenWith(t.TempDir(), Options{MaxOpenFiles: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	const streams = 4
	var rs []messagevault.PageReader
	for i := range streams {
		w, err := s.OpenWriter(ctx, fmt.Sprintf("r%d", i))
		if err != nil {
			t.Fatal(err)
		}
		appendPage(t, w, byte(i+1))
		w.Close()
		r, err := s.OpenReader(ctx, fmt.Sprintf("r%d", i))
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		rs = append(rs, r)
	}
	errs := make(chan error, 8)
	for g := range 8 {
		go func() {
			p := make([]byte, messagevault.PageSize)
			for k := range 200 {
				i := (g + k) % streams
				if _, err := rs[i].ReadAt(ctx, p, 0); err != nil {
					errs <- fmt.Errorf("stream %d: %w", i, err)
					return
				}
				if p[0] != byte(i+1) || p[len(p)-1] != byte(i+1) {
					errs <- fmt.Errorf("stream %d reads %d", i, p[0])
					return
				}
			}
			errs <- nil
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// A file in use is not closed: for a moment each of the 8 readers may
	// hold one past the bound. Once they are done, the bound holds.
	if now, peak := s.OpenFiles(); now > 3 || peak > 3+8 {
		t.Fatalf("open files: %d now, %d at most; the bound is 3, with 8 readers", now, peak)
	}
}

// A reader of a stream deleted and written again under its name never
// reads the new stream's files as its own when its files were closed to
// make room: opened again, they are other files, and it reports the
// stream gone.
func TestReopenedFilesAreTheSameFiles(t *testing.T) {
	s, err := OpenWith(t.TempDir(), Options{MaxOpenFiles: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	w, err := s.OpenWriter(ctx, "d")
	if err != nil {
		t.Fatal(err)
	}
	appendPage(t, w, 1)
	w.Close()
	r, err := s.OpenReader(ctx, "d")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	p := make([]byte, messagevault.PageSize)
	if _, err := r.ReadAt(ctx, p, 0); err != nil || p[0] != 1 {
		t.Fatalf("read before the delete: %d, %v", p[0], err)
	}
	if err := s.DeleteStream(ctx, "d"); err != nil {
		t.Fatal(err)
	}
	w, err = s.OpenWriter(ctx, "d")
	if err != nil {
		t.Fatal(err)
	}
	appendPage(t, w, 2)
	w.Close()
	for i := range 4 { // more files than the bound: the reader's are closed
		w, err := s.OpenWriter(ctx, fmt.Sprint("other", i))
		if err != nil {
			t.Fatal(err)
		}
		appendPage(t, w, 3)
		w.Close()
	}
	n, err := r.ReadAt(ctx, p, 0)
	if n > 0 && p[0] == 2 {
		t.Fatal("the old reader read the new stream's records")
	}
	if !errors.Is(err, messagevault.ErrStreamNotFound) {
		t.Fatalf("read after the delete: %d bytes, %v; want ErrStreamNotFound", n, err)
	}
}

// A writer whose call fails gives its write slot back at once, rather
// than holding it until its stream's next append or idle close.
func TestAFailedWriteGivesItsSlotBack(t *testing.T) {
	ctx := context.Background()
	a, b := twoWriters(t)
	if err := a.WritePages(ctx, 0, make([]byte, messagevault.PageSize)); err != nil { // a holds the slot
		t.Fatal(err)
	}
	old := fdatasync
	fdatasync = func(int) error { return errors.New("EIO, as a failing disk gives") }
	err := a.Flush(ctx)
	fdatasync = old
	if err == nil {
		t.Fatal("Flush succeeded with a failing fdatasync")
	}
	short, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := b.WritePages(short, 0, make([]byte, messagevault.PageSize)); err != nil {
		t.Fatalf("b could not write after a's failed flush: %v", err)
	}
}
