package file

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/messagevault/messagevault"
)

var _ messagevault.PageWriter = (*writer)(nil)

// writer is the PageWriter of one stream directory.
type writer struct {
	reader
	size    int64
	pbuf    [8]byte
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

func openWriter(dir, parent string) (*writer, error) {
	if err := os.Mkdir(dir, DirMode); err != nil && !os.IsExist(err) {
		return nil, err
	}
	records, err := os.OpenFile(filepath.Join(dir, RecordsFile), os.O_RDWR|os.O_CREATE, FileMode)
	if err != nil {
		return nil, err
	}
	position, err := os.OpenFile(filepath.Join(dir, PositionFile), os.O_RDWR|os.O_CREATE, FileMode)
	if err != nil {
		records.Close()
		return nil, err
	}
	w := &writer{reader: reader{dir: dir, records: records, position: position}}
	fail := func(err error) (*writer, error) {
		records.Close()
		position.Close()
		return nil, err
	}
	st, err := position.Stat()
	if err != nil {
		return fail(err)
	}
	if st.Size() < 8 {
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
	// Make the stream's files and directory durable, whether this call
	// created them or an earlier process did and crashed before it could.
	if err := syncDir(dir); err != nil {
		return fail(err)
	}
	if err := syncDir(parent); err != nil {
		return fail(err)
	}
	st, err = records.Stat()
	if err != nil {
		return fail(err)
	}
	w.size = st.Size() &^ (messagevault.PageSize - 1)
	return w, nil
}

func (w *writer) Size(ctx context.Context) (int64, error) {
	if w.closed {
		return 0, messagevault.ErrClosed
	}
	return w.size, nil
}

func (w *writer) Grow(ctx context.Context, size int64) error {
	if w.closed {
		return messagevault.ErrClosed
	}
	if err := messagevault.CheckGrow(size); err != nil {
		return err
	}
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
	if err := messagevault.CheckPages(off, len(p), w.size); err != nil {
		return err
	}
	// A write that outlives ctx may still land later, with whatever p
	// then holds; call refuses every other call until it has, so nothing
	// written after it can be overwritten by it.
	return w.call(ctx, "write pages", func() error {
		if _, err := w.records.WriteAt(p, off); err != nil {
			return fmt.Errorf("write pages: %w", err)
		}
		return nil
	})
}

func (w *writer) Flush(ctx context.Context) error {
	if w.closed {
		return messagevault.ErrClosed
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
	st, err := w.position.Stat()
	if err != nil {
		return nil, fmt.Errorf("read state slot %d: %w", slot, err)
	}
	n := min(st.Size()-off, StateSlotSize)
	if n <= 0 {
		return nil, nil
	}
	b := make([]byte, n)
	if k, err := w.position.ReadAt(b, off); int64(k) < n {
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
	return w.call(ctx, "write state", func() error {
		if _, err := w.position.WriteAt(p, off); err != nil {
			return fmt.Errorf("write state slot %d: %w", slot, err)
		}
		return nil
	})
}

// Refence makes the position on disk durable, since the writer is about
// to reload and trust it; the file backend's calls are synchronous, so no
// earlier request can still be in flight.
func (w *writer) Refence(ctx context.Context) error {
	if w.closed {
		return messagevault.ErrClosed
	}
	return w.sync(ctx, w.position)
}

func (w *writer) CommitPosition(ctx context.Context, pos int64) error {
	if w.closed {
		return messagevault.ErrClosed
	}
	if pos < 0 || pos > w.size {
		return fmt.Errorf("commit position %d: blob is %d bytes: %w", pos, w.size, messagevault.ErrOutOfRange)
	}
	binary.LittleEndian.PutUint64(w.pbuf[:], uint64(pos))
	buf := w.pbuf // the call may outlive this one
	err := w.call(ctx, "write position", func() error {
		if _, err := w.position.WriteAt(buf[:], 0); err != nil {
			return fmt.Errorf("write position: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return w.sync(ctx, w.position)
}

func (w *writer) Close() error {
	if w.closed {
		return nil
	}
	err := w.reader.Close()
	if w.release != nil {
		w.release()
	}
	return err
}
