package file

import (
	"context"
	"encoding/binary"
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
		// written: position 0, made durable before anything else.
		if _, err := position.WriteAt(make([]byte, 8), 0); err != nil {
			return fail(err)
		}
		if err := position.Sync(); err != nil {
			return fail(err)
		}
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
	if w.release != nil {
		w.release()
	}
	return err
}
