package file

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
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

	state      [2]*os.File // state slots, opened on first use
	stateDirty [2]bool     // written since the last Flush

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
	if err := os.Mkdir(dir, 0o755); err != nil && !os.IsExist(err) {
		return nil, err
	}
	records, err := os.OpenFile(filepath.Join(dir, RecordsFile), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	position, err := os.OpenFile(filepath.Join(dir, PositionFile), os.O_RDWR|os.O_CREATE, 0o644)
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
	if err := unix.Fdatasync(int(position.Fd())); err != nil {
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
	files := []*os.File{w.records}
	for i, f := range w.state {
		if w.stateDirty[i] {
			files = append(files, f)
		}
	}
	if len(files) == 1 {
		return w.sync(ctx, w.records)
	}
	// The records and the state slot are synced side by side: the disk
	// can serve both in one journal commit, so a group with producer
	// sequences costs about one fdatasync, not two.
	err := w.call(ctx, "fdatasync", func() error {
		errs := make([]error, len(files))
		var wg sync.WaitGroup
		for i, f := range files {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := fdatasync(int(f.Fd())); err != nil {
					errs[i] = fmt.Errorf("fdatasync %s: %w", f.Name(), err)
				}
			}()
		}
		wg.Wait()
		return errors.Join(errs...)
	})
	if err != nil {
		return err
	}
	w.stateDirty = [2]bool{}
	return nil
}

func stateFile(slot int) (string, error) {
	switch slot {
	case 0:
		return StateFile0, nil
	case 1:
		return StateFile1, nil
	}
	return "", fmt.Errorf("state slot %d: %w", slot, messagevault.ErrOutOfRange)
}

func (w *writer) ReadState(ctx context.Context, slot int) ([]byte, error) {
	if w.closed {
		return nil, messagevault.ErrClosed
	}
	name, err := stateFile(slot)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(w.dir, name))
	if err != nil {
		if os.IsNotExist(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	return b, nil
}

func (w *writer) WriteState(ctx context.Context, slot int, p []byte) error {
	if w.closed {
		return messagevault.ErrClosed
	}
	name, err := stateFile(slot)
	if err != nil {
		return err
	}
	f := w.state[slot]
	if f == nil {
		path := filepath.Join(w.dir, name)
		_, statErr := os.Stat(path)
		if f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644); err != nil {
			return fmt.Errorf("open %s: %w", name, err)
		}
		if os.IsNotExist(statErr) {
			// A new file's directory entry must be durable too.
			if err := syncDir(w.dir); err != nil {
				f.Close()
				return err
			}
		}
		w.state[slot] = f
	}
	w.stateDirty[slot] = true
	// Overwritten in place, never shrunk: the slot's blocks stay
	// allocated, so its fdatasync writes data only, with no journal
	// commit for a new size. The caller frames its data (stale bytes may
	// follow it).
	return w.call(ctx, "write "+name, func() error {
		if _, err := f.WriteAt(p, 0); err != nil {
			return fmt.Errorf("write %s: %w", name, err)
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
	for _, f := range w.state {
		if f != nil {
			err = errors.Join(err, f.Close())
		}
	}
	if w.release != nil {
		w.release()
	}
	return err
}
