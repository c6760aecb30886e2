package file

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
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
	records *os.File            // the active segment's file
	size    int64               // its size
	dirty   []*os.File          // earlier segments written since the last Flush
	index   *os.File            // the time index, once written
	pbuf    [extentSize]byte
	closed  bool
	release func()

	// busy is closed when a call that outlived its context returns;
	// until then every call fails at once (a stuck disk).
	busy      chan struct{}
	busySince time.Time
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

// sync makes f's data durable, bounded by ctx.
func (w *writer) sync(ctx context.Context, f *os.File) error {
	return w.call(ctx, "fdatasync "+f.Name(), func() error {
		if err := fdatasync(int(f.Fd())); err != nil {
			return fmt.Errorf("fdatasync %s: %w", f.Name(), err)
		}
		return nil
	})
}

func openWriter(ctx context.Context, dir, parent string) (*writer, error) {
	if err := os.Mkdir(dir, DirMode); err != nil && !os.IsExist(err) {
		return nil, err
	}
	position, err := os.OpenFile(filepath.Join(dir, PositionFile), os.O_RDWR|os.O_CREATE, FileMode)
	if err != nil {
		return nil, err
	}
	st := &store{dir: dir, position: position, files: map[int64]*os.File{}}
	w := &writer{Reader: segment.NewReader(st), st: st}
	fail := func(err error) (*writer, error) {
		if w.records != nil {
			w.records.Close()
		}
		st.Close()
		return nil, err
	}
	info, err := position.Stat()
	if err != nil {
		return fail(err)
	}
	if info.Size() < 8 {
		// A new stream, or one whose position file was created but never
		// written: position 0.
		if _, err := position.WriteAt(make([]byte, 8), 0); err != nil {
			return fail(err)
		}
	}
	// Whatever position is there is made durable before it is served: an
	// earlier process may have died between writing it and its fdatasync,
	// and an OS crash could still roll it back.
	if err := fdatasync(int(position.Fd())); err != nil {
		return fail(fmt.Errorf("fdatasync %s: %w", position.Name(), err))
	}
	if err := w.load(ctx); err != nil {
		return fail(err)
	}
	// Make the stream's files and directory durable, whether this call
	// created them or an earlier process did and crashed before it could.
	if err := syncDir(dir); err != nil {
		return fail(err)
	}
	if err := syncDir(parent); err != nil {
		return fail(err)
	}
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
		if err := syncDir(w.st.dir); err != nil {
			return err
		}
	}
	flags := os.O_RDWR
	if e.Segment == 0 {
		flags |= os.O_CREATE
	}
	f, err := os.OpenFile(filepath.Join(w.st.dir, segment.Name(e.Segment)), flags, FileMode)
	if err != nil {
		if isNotExist(err) {
			return fmt.Errorf("the active segment %s is missing: %w", segment.Name(e.Segment), messagevault.ErrCorrupt)
		}
		return err
	}
	info, err := f.Stat()
	if err != nil {
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
	if err := w.records.Truncate(size); err != nil {
		return fmt.Errorf("grow %s to %d: %w", w.records.Name(), size, err)
	}
	w.size = size
	return nil
}

func (w *writer) WritePages(ctx context.Context, off int64, p []byte) error {
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
	f := w.records
	// A write that outlives ctx may still land later, with whatever p
	// then holds; call refuses every other call until it has, so nothing
	// written after it can be overwritten by it.
	return w.call(ctx, "write pages", func() error {
		if _, err := f.WriteAt(p, off); err != nil {
			return fmt.Errorf("write pages: %w", err)
		}
		return nil
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
	f, err := os.OpenFile(filepath.Join(w.st.dir, segment.Name(start)), os.O_RDWR|os.O_CREATE|os.O_TRUNC, FileMode)
	if err != nil {
		return fmt.Errorf("roll: %w", err)
	}
	if err := syncDir(w.st.dir); err != nil {
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
		f, err := os.OpenFile(filepath.Join(w.st.dir, IndexFile), os.O_RDWR|os.O_CREATE, FileMode)
		if err != nil {
			return fmt.Errorf("open the time index: %w", err)
		}
		w.index = f
	}
	f := w.index
	return w.call(ctx, "write the time index", func() error {
		if _, err := f.WriteAt(p, off); err != nil {
			return fmt.Errorf("write the time index: %w", err)
		}
		return nil
	})
}

func (w *writer) Flush(ctx context.Context) error {
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
	return w.sync(ctx, w.records)
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

func (w *writer) ReadState(ctx context.Context, slot int) ([]byte, error) {
	if w.closed {
		return nil, messagevault.ErrClosed
	}
	off, err := stateOffset(slot)
	if err != nil {
		return nil, err
	}
	info, err := w.st.position.Stat()
	if err != nil {
		return nil, fmt.Errorf("read state slot %d: %w", slot, err)
	}
	n := min(info.Size()-off, StateSlotSize)
	if n <= 0 {
		return nil, nil
	}
	b := make([]byte, n)
	if k, err := w.st.position.ReadAt(b, off); int64(k) < n {
		return nil, fmt.Errorf("read state slot %d: %w", slot, err)
	}
	return b, nil
}

func (w *writer) WriteState(ctx context.Context, slot int, p []byte) error {
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
	// Overwritten in place, never shrunk: the caller frames its data
	// (stale bytes may follow it). p must not change until this returns:
	// a call that outlives ctx holds every later call back until it ends.
	position := w.st.position
	return w.call(ctx, "write state", func() error {
		if _, err := position.WriteAt(p, off); err != nil {
			return fmt.Errorf("write state slot %d: %w", slot, err)
		}
		return nil
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
	return w.load(ctx)
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
	position := w.st.position
	err := w.call(ctx, "write position", func() error {
		if _, err := position.WriteAt(buf[:n], 0); err != nil {
			return fmt.Errorf("write position: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return w.sync(ctx, position)
}

func (w *writer) CommitPosition(ctx context.Context, pos int64) error {
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

func (w *writer) Trim(ctx context.Context, start int64) error {
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
	return syncDir(w.st.dir)
}

func (w *writer) Close() error {
	if w.closed {
		return nil
	}
	w.closed = true
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
