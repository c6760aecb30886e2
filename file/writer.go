package file

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"golang.org/x/sys/unix"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/segment"
)

var _ messagevault.PageWriter = (*writer)(nil)

// writer is the PageWriter of one stream directory. It reads through a
// segment.Reader of its own store, and writes the active segment's file.
type writer struct {
	*segment.Reader
	st      *store
	ext     messagevault.Extent // as last committed (or loaded)
	active  int64               // the active segment's start: ext.Segment, or a newer roll
	records *handle             // the active segment's file
	size    int64               // its size
	dirty   []*handle           // earlier segments written since the last Flush
	index   *handle             // the time index, once written
	pbuf    [extentSize]byte
	closed  bool
	slot    bool // holds a write slot of the open-file bound (begin)
	release func()

	// busy is closed when a call that outlived its context returns;
	// until then every call fails at once (a stuck disk).
	busy      chan struct{}
	busySince time.Time
}

// begin takes a write slot of the storage's open-file bound before a
// write that leaves a file to sync, unless the writer holds one already.
func (w *writer) begin(ctx context.Context) error {
	if w.slot {
		return nil
	}
	if err := w.st.open.beginWrite(ctx); err != nil {
		return err
	}
	w.slot = true
	return nil
}

// settle gives the write slot back once everything the writer wrote is
// synced.
func (w *writer) settle() {
	if !w.slot || len(w.dirty) > 0 || (w.records != nil && w.records.isDirty()) || w.st.position.isDirty() {
		return
	}
	w.st.open.endWrite()
	w.slot = false
}

// giveBack gives the write slot back when a call fails: the files it
// left unsynced stay open (a file with unsynced writes is never closed to
// make room), but a writer whose group failed must not hold a slot until
// its stream's next append or idle close while other writers wait.
func (w *writer) giveBack(err *error) {
	if *err != nil && w.slot {
		w.st.open.endWrite()
		w.slot = false
	}
}

// fdatasync is the system call, a variable so that tests can model a disk
// that stops answering.
var fdatasync = unix.Fdatasync

// call runs fn, a system call that may block on a stuck disk, and waits
// for it no longer than ctx allows. A call that outlives ctx is left to
// finish on its own; until it does, every later call fails at once, so a
// stuck disk turns into prompt errors (503s) instead of hung publishes.
func (w *writer) call(ctx context.Context, what string, fn func() error) error {
	if w.busy != nil {
		select {
		case <-w.busy:
			w.busy = nil
		default:
			return fmt.Errorf("%s: the disk has not answered an earlier call for %v: %w", what, time.Since(w.busySince).Round(time.Millisecond), context.DeadlineExceeded)
		}
	}
	done := make(chan error, 1)
	finished := make(chan struct{})
	go func() {
		done <- fn()
		close(finished)
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		w.busy, w.busySince = finished, time.Now()
		return fmt.Errorf("%s: the disk did not answer in time: %w", what, ctx.Err())
	}
}

// sync makes h's data durable, bounded by ctx.
func (w *writer) sync(ctx context.Context, h *handle) error {
	return w.call(ctx, "fdatasync "+h.Name(), func() error { return syncHandle(h) })
}

// syncHandle fdatasyncs h.
func syncHandle(h *handle) error {
	return h.sync(func(f *os.File) error {
		if err := fdatasync(int(f.Fd())); err != nil {
			return fmt.Errorf("fdatasync %s: %w", f.Name(), err)
		}
		return nil
	})
}

func openWriter(ctx context.Context, dir, parent string, open *openFiles) (*writer, error) {
	if err := os.Mkdir(dir, DirMode); err != nil && !os.IsExist(err) {
		return nil, err
	}
	position, err := open.openHandle(filepath.Join(dir, PositionFile), os.O_RDWR|os.O_CREATE, FileMode)
	if err != nil {
		return nil, err
	}
	st := newStore(dir, open, position)
	w := &writer{Reader: segment.NewReader(st), st: st}
	fail := func(err error) (*writer, error) {
		if w.records != nil {
			w.records.Close()
		}
		st.Close()
		if w.slot {
			open.endWrite()
		}
		return nil, err
	}
	if err := w.begin(ctx); err != nil {
		return fail(err)
	}
	err = position.write(func(f *os.File) error {
		info, err := f.Stat()
		if err != nil {
			return err
		}
		if info.Size() < 8 {
			// A new stream, or one whose position file was created but
			// never written: position 0.
			_, err = f.WriteAt(make([]byte, 8), 0)
		}
		return err
	})
	if err != nil {
		return fail(err)
	}
	// Whatever position is there is made durable before it is served: an
	// earlier process may have died between writing it and its fdatasync,
	// and an OS crash could still roll it back.
	if err := syncHandle(position); err != nil {
		return fail(err)
	}
	if err := w.load(ctx); err != nil {
		return fail(err)
	}
	// Make the stream's files and directory durable, whether this call
	// created them or an earlier process did and crashed before it could.
	// The write slot taken above is held until then, which bounds the
	// streams opening at once, and their descriptors.
	if err := open.syncDir(dir); err != nil {
		return fail(err)
	}
	if err := open.syncDir(parent); err != nil {
		return fail(err)
	}
	w.settle()
	return w, nil
}

// load reads the committed extent, removes the segments a crash left
// outside the chain, and opens the active segment's file (creating the
// first one of a new stream).
func (w *writer) load(ctx context.Context) error {
	w.Forget()
	e, err := w.st.Extent(ctx)
	if err != nil {
		return err
	}
	present, err := listSegments(w.st.dir)
	if err != nil {
		return err
	}
	if left := segment.Leftovers(present, e); len(left) > 0 {
		for _, s := range left {
			if err := os.Remove(filepath.Join(w.st.dir, segment.Name(s))); err != nil && !isNotExist(err) {
				return fmt.Errorf("remove a leftover segment: %w", err)
			}
		}
		if err := w.st.open.syncDir(w.st.dir); err != nil {
			return err
		}
	}
	flags := os.O_RDWR
	if e.Segment == 0 {
		flags |= os.O_CREATE
	}
	f, err := w.st.open.openHandle(filepath.Join(w.st.dir, segment.Name(e.Segment)), flags, FileMode)
	if err != nil {
		if isNotExist(err) {
			return fmt.Errorf("the active segment %s is missing: %w", segment.Name(e.Segment), messagevault.ErrCorrupt)
		}
		return err
	}
	var info os.FileInfo
	if err := f.read(func(f *os.File) (err error) {
		info, err = f.Stat()
		return err
	}); err != nil {
		f.Close()
		return err
	}
	if w.records != nil {
		w.records.Close()
	}
	for _, d := range w.dirty {
		d.Close()
	}
	w.records, w.dirty = f, nil
	// A file whose size is not whole pages was copied by the original's
	// MessageCopier, which writes exactly the committed bytes. Its last
	// page counts as whole: its missing end is zeros to a reader, and the
	// next write of that page pads it.
	w.size = (info.Size() + messagevault.PageSize - 1) &^ (messagevault.PageSize - 1)
	w.ext, w.active = e, e.Segment
	return nil
}

// base is the position of byte 0 of the active segment's file.
func (w *writer) base() int64 { return segment.Base(w.active) }

func (w *writer) Size(ctx context.Context) (int64, error) {
	if w.closed {
		return 0, messagevault.ErrClosed
	}
	return w.base() + w.size, nil
}

func (w *writer) Grow(ctx context.Context, size int64) error {
	if w.closed {
		return messagevault.ErrClosed
	}
	if err := messagevault.CheckGrow(size); err != nil {
		return err
	}
	size -= w.base()
	if size <= w.size {
		return nil
	}
	// Only the size changes: the fdatasync of the pages written next
	// makes it durable, through whichever descriptor of the file.
	if err := w.records.writeHint(func(f *os.File) error { return f.Truncate(size) }); err != nil {
		return fmt.Errorf("grow %s to %d: %w", w.records.Name(), size, err)
	}
	w.size = size
	return nil
}

func (w *writer) WritePages(ctx context.Context, off int64, p []byte) (err error) {
	defer w.giveBack(&err)
	if w.closed {
		return messagevault.ErrClosed
	}
	if off < w.base() {
		return fmt.Errorf("write at %d: before the active segment %s: %w", off, segment.Name(w.active), messagevault.ErrOutOfRange)
	}
	off -= w.base()
	if err := messagevault.CheckPages(off, len(p), w.size); err != nil {
		return err
	}
	if err := w.begin(ctx); err != nil {
		return fmt.Errorf("write pages: %w", err)
	}
	f := w.records
	// A write that outlives ctx may still land later, with whatever p
	// then holds; call refuses every other call until it has, so nothing
	// written after it can be overwritten by it.
	return w.call(ctx, "write pages", func() error {
		return f.write(func(f *os.File) error {
			if _, err := f.WriteAt(p, off); err != nil {
				return fmt.Errorf("write pages: %w", err)
			}
			return nil
		})
	})
}

func (w *writer) Roll(ctx context.Context, start int64) error {
	if w.closed {
		return messagevault.ErrClosed
	}
	if start <= w.active {
		return fmt.Errorf("roll to a segment at %d: not past the active one at %d: %w", start, w.active, messagevault.ErrOutOfRange)
	}
	// Segments past the active one are left over by a roll that was
	// never committed: they must not sit inside the chain.
	present, err := listSegments(w.st.dir)
	if err != nil {
		return fmt.Errorf("roll: %w", err)
	}
	for _, s := range present {
		if s > w.active && s != start {
			if err := os.Remove(filepath.Join(w.st.dir, segment.Name(s))); err != nil && !isNotExist(err) {
				return fmt.Errorf("roll: remove a leftover segment: %w", err)
			}
		}
	}
	f, err := w.st.open.openHandle(filepath.Join(w.st.dir, segment.Name(start)), os.O_RDWR|os.O_CREATE|os.O_TRUNC, FileMode)
	if err != nil {
		return fmt.Errorf("roll: %w", err)
	}
	if err := w.st.open.syncDir(w.st.dir); err != nil {
		f.Close()
		return fmt.Errorf("roll: %w", err)
	}
	w.dirty = append(w.dirty, w.records)
	w.records, w.active, w.size = f, start, 0
	return nil
}

// WriteIndex writes the time index file, creating it; it is not synced:
// its entries are hints.
func (w *writer) WriteIndex(ctx context.Context, off int64, p []byte) error {
	if w.closed {
		return messagevault.ErrClosed
	}
	if off < 0 || off%messagevault.PageSize != 0 || len(p)%messagevault.PageSize != 0 {
		return fmt.Errorf("write %d bytes of the time index at %d: not page-aligned: %w", len(p), off, messagevault.ErrOutOfRange)
	}
	if w.index == nil {
		f, err := w.st.open.openHandle(filepath.Join(w.st.dir, IndexFile), os.O_RDWR|os.O_CREATE, FileMode)
		if err != nil {
			return fmt.Errorf("open the time index: %w", err)
		}
		w.index = f
	}
	h := w.index
	return w.call(ctx, "write the time index", func() error {
		return h.writeHint(func(f *os.File) error {
			if _, err := f.WriteAt(p, off); err != nil {
				return fmt.Errorf("write the time index: %w", err)
			}
			return nil
		})
	})
}

func (w *writer) Flush(ctx context.Context) (err error) {
	defer w.giveBack(&err)
	if w.closed {
		return messagevault.ErrClosed
	}
	for len(w.dirty) > 0 {
		if err := w.sync(ctx, w.dirty[0]); err != nil {
			return err
		}
		w.dirty[0].Close()
		w.dirty = w.dirty[1:]
	}
	if err := w.sync(ctx, w.records); err != nil {
		return err
	}
	w.settle()
	return nil
}

// State slots live in position.c7 after its first 8 bytes (the v1
// position, all that readers look at): slot i at StateOffset +
// i*StateSlotSize. They share the position's fdatasync, so a state write
// costs no flush of its own; it is durable once the next CommitPosition
// returns.
const (
	StateOffset   = 4096
	StateSlotSize = 4 << 20
)

func stateOffset(slot int) (int64, error) {
	if slot != 0 && slot != 1 {
		return 0, fmt.Errorf("state slot %d: %w", slot, messagevault.ErrOutOfRange)
	}
	return StateOffset + int64(slot)*StateSlotSize, nil
}

func (w *writer) ReadState(ctx context.Context, slot int, p []byte, off int64) (int, error) {
	if w.closed {
		return 0, messagevault.ErrClosed
	}
	base, err := stateOffset(slot)
	if err != nil {
		return 0, err
	}
	if off < 0 || off >= StateSlotSize {
		return 0, io.EOF
	}
	want := p[:min(int64(len(p)), StateSlotSize-off)]
	var n int
	err = w.st.position.read(func(f *os.File) (err error) {
		n, err = f.ReadAt(want, base+off)
		return err
	})
	if err == nil && n < len(p) {
		err = io.EOF // the slot ends
	}
	if err != nil && !errors.Is(err, io.EOF) {
		err = fmt.Errorf("read state slot %d: %w", slot, err)
	}
	return n, err
}

func (w *writer) WriteState(ctx context.Context, slot int, p []byte) (err error) {
	defer w.giveBack(&err)
	if w.closed {
		return messagevault.ErrClosed
	}
	off, err := stateOffset(slot)
	if err != nil {
		return err
	}
	if len(p) > StateSlotSize {
		return fmt.Errorf("write state slot %d: %d bytes, the slot holds %d: %w", slot, len(p), StateSlotSize, messagevault.ErrOutOfRange)
	}
	if err := w.begin(ctx); err != nil {
		return fmt.Errorf("write state slot %d: %w", slot, err)
	}
	// Overwritten in place, never shrunk: the caller frames its data
	// (stale bytes may follow it). p must not change until this returns:
	// a call that outlives ctx holds every later call back until it ends.
	position := w.st.position
	return w.call(ctx, "write state", func() error {
		return position.write(func(f *os.File) error {
			if _, err := f.WriteAt(p, off); err != nil {
				return fmt.Errorf("write state slot %d: %w", slot, err)
			}
			return nil
		})
	})
}

// Refence makes the position on disk durable, since the writer is about
// to reload and trust it, and goes back to the committed active segment;
// the file backend's calls are synchronous, so no earlier request can
// still be in flight.
func (w *writer) Refence(ctx context.Context) error {
	if w.closed {
		return messagevault.ErrClosed
	}
	if err := w.sync(ctx, w.st.position); err != nil {
		return err
	}
	if err := w.load(ctx); err != nil {
		return err
	}
	w.settle()
	return nil
}

// writeExtent durably records e in the position file.
func (w *writer) writeExtent(ctx context.Context, e messagevault.Extent) error {
	binary.LittleEndian.PutUint64(w.pbuf[0:], uint64(e.Position))
	binary.LittleEndian.PutUint64(w.pbuf[segmentOffset:], uint64(e.Segment))
	binary.LittleEndian.PutUint64(w.pbuf[startOffset:], uint64(e.Start))
	buf := w.pbuf // the call may outlive this one
	n := extentSize
	if e.Segment == 0 && e.Start == 0 {
		n = 8 // a stream that never rolled or trimmed keeps the v1 file
	}
	if err := w.begin(ctx); err != nil {
		return fmt.Errorf("write position: %w", err)
	}
	position := w.st.position
	err := w.call(ctx, "write position", func() error {
		return position.write(func(f *os.File) error {
			if _, err := f.WriteAt(buf[:n], 0); err != nil {
				return fmt.Errorf("write position: %w", err)
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	if err := w.sync(ctx, position); err != nil {
		return err
	}
	w.settle()
	return nil
}

func (w *writer) CommitPosition(ctx context.Context, pos int64) (err error) {
	defer w.giveBack(&err)
	if w.closed {
		return messagevault.ErrClosed
	}
	if pos < w.active || pos > w.base()+w.size {
		return fmt.Errorf("commit position %d: the active segment holds %d to %d: %w", pos, w.active, w.base()+w.size, messagevault.ErrOutOfRange)
	}
	e := messagevault.Extent{Position: pos, Start: w.ext.Start, Segment: w.active}
	if err := w.writeExtent(ctx, e); err != nil {
		return err
	}
	w.ext = e
	return nil
}

func (w *writer) Trim(ctx context.Context, start int64) (err error) {
	defer w.giveBack(&err)
	if w.closed {
		return messagevault.ErrClosed
	}
	if start <= w.ext.Start || start > w.ext.Segment || w.active != w.ext.Segment {
		return fmt.Errorf("trim to %d: the stored segments are %d to %d: %w", start, w.ext.Start, w.ext.Segment, messagevault.ErrOutOfRange)
	}
	present, err := listSegments(w.st.dir)
	if err != nil {
		return fmt.Errorf("trim: %w", err)
	}
	if !slices.Contains(present, start) {
		return fmt.Errorf("trim to %d: no segment starts there: %w", start, messagevault.ErrOutOfRange)
	}
	e := w.ext
	e.Start = start
	if err := w.writeExtent(ctx, e); err != nil {
		return fmt.Errorf("trim: %w", err)
	}
	w.ext = e
	for _, s := range present {
		if s < start {
			if err := os.Remove(filepath.Join(w.st.dir, segment.Name(s))); err != nil && !isNotExist(err) {
				return fmt.Errorf("trim: remove %s: %w", segment.Name(s), err)
			}
		}
	}
	return w.st.open.syncDir(w.st.dir)
}

func (w *writer) Close() error {
	if w.closed {
		return nil
	}
	w.closed = true
	if w.slot {
		w.st.open.endWrite()
		w.slot = false
	}
	errs := []error{w.Reader.Close(), w.records.Close()}
	if w.index != nil {
		errs = append(errs, w.index.Close())
	}
	for _, d := range w.dirty {
		errs = append(errs, d.Close())
	}
	if w.release != nil {
		w.release()
	}
	return errors.Join(errs...)
}
