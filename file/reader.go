package file

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/messagevault/messagevault"
)

var _ messagevault.PageReader = (*reader)(nil)

// reader is the read-only view of one stream directory.
type reader struct {
	dir      string
	records  *os.File
	position *os.File
	closed   bool
}

// OpenStreamReader opens the stream stored in dir (a directory holding
// position.c7 and 000000000000.b7) for reading, without taking any lock:
// this is what a consumer does with a file:// read grant. It returns an
// error wrapping messagevault.ErrStreamNotFound if dir holds no stream.
func OpenStreamReader(dir string) (messagevault.PageReader, error) {
	position, err := os.Open(filepath.Join(dir, PositionFile))
	if err != nil {
		if isNotExist(err) {
			return nil, fmt.Errorf("%s: %w", dir, messagevault.ErrStreamNotFound)
		}
		return nil, err
	}
	records, err := os.Open(filepath.Join(dir, RecordsFile))
	if err != nil {
		position.Close()
		if isNotExist(err) {
			return nil, fmt.Errorf("%s: %w", dir, messagevault.ErrStreamNotFound)
		}
		return nil, err
	}
	return &reader{dir: dir, records: records, position: position}, nil
}

func (r *reader) Position(ctx context.Context) (int64, error) {
	if r.closed {
		return 0, messagevault.ErrClosed
	}
	// pread is not atomic against a concurrent pwrite of the same bytes:
	// read until two reads agree.
	prev, err := r.readPosition()
	for i := 0; err == nil && i < 10; i++ {
		var pos int64
		if pos, err = r.readPosition(); err == nil && pos == prev {
			if pos < 0 {
				return 0, fmt.Errorf("read %s: negative position %d: %w", r.position.Name(), pos, messagevault.ErrCorrupt)
			}
			return pos, nil
		}
		prev = pos
	}
	if err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("read %s: the position keeps changing under the reader", r.position.Name())
}

func (r *reader) readPosition() (int64, error) {
	var b [8]byte
	n, err := r.position.ReadAt(b[:], 0)
	if n < 8 {
		if n == 0 && errors.Is(err, io.EOF) {
			return 0, nil // created, never committed
		}
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		return 0, fmt.Errorf("read %s: %d of 8 bytes: %w", r.position.Name(), n, err)
	}
	return int64(binary.LittleEndian.Uint64(b[:])), nil
}

func (r *reader) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if r.closed {
		return 0, messagevault.ErrClosed
	}
	n, err := r.records.ReadAt(p, off)
	if err != nil && !errors.Is(err, io.EOF) {
		err = fmt.Errorf("read %d bytes at %d of %s: %w", len(p), off, r.records.Name(), err)
	}
	return n, err
}

func (r *reader) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	return errors.Join(r.records.Close(), r.position.Close())
}
