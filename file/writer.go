package file

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"

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
	if _, err := w.records.WriteAt(p, off); err != nil {
		return fmt.Errorf("write pages: %w", err)
	}
	return nil
}

func (w *writer) Flush(ctx context.Context) error {
	if w.closed {
		return messagevault.ErrClosed
	}
	if err := unix.Fdatasync(int(w.records.Fd())); err != nil {
		return fmt.Errorf("fdatasync %s: %w", w.records.Name(), err)
	}
	for i, f := range w.state {
		if !w.stateDirty[i] {
			continue
		}
		if err := unix.Fdatasync(int(f.Fd())); err != nil {
			return fmt.Errorf("fdatasync %s: %w", f.Name(), err)
		}
		w.stateDirty[i] = false
	}
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
	if _, err := f.WriteAt(p, 0); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := f.Truncate(int64(len(p))); err != nil {
		return fmt.Errorf("truncate %s: %w", name, err)
	}
	return nil
}

// Refence makes the position on disk durable, since the writer is about
// to reload and trust it; the file backend's calls are synchronous, so no
// earlier request can still be in flight.
func (w *writer) Refence(ctx context.Context) error {
	if w.closed {
		return messagevault.ErrClosed
	}
	if err := unix.Fdatasync(int(w.position.Fd())); err != nil {
		return fmt.Errorf("fdatasync %s: %w", w.position.Name(), err)
	}
	return nil
}

func (w *writer) CommitPosition(ctx context.Context, pos int64) error {
	if w.closed {
		return messagevault.ErrClosed
	}
	if pos < 0 || pos > w.size {
		return fmt.Errorf("commit position %d: blob is %d bytes: %w", pos, w.size, messagevault.ErrOutOfRange)
	}
	binary.LittleEndian.PutUint64(w.pbuf[:], uint64(pos))
	if _, err := w.position.WriteAt(w.pbuf[:], 0); err != nil {
		return fmt.Errorf("write position: %w", err)
	}
	if err := unix.Fdatasync(int(w.position.Fd())); err != nil {
		return fmt.Errorf("fdatasync %s: %w", w.position.Name(), err)
	}
	return nil
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
