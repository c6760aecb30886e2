package metrics

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/messagevault/messagevault"
)

// cursors returns the wrapped storage's cursors, or an error wrapping
// messagevault.ErrNoCursors.
func (s *storage) cursors() (messagevault.Cursors, error) {
	c, ok := s.s.(messagevault.Cursors)
	if !ok {
		return nil, fmt.Errorf("cursors: %w", messagevault.ErrNoCursors)
	}
	return c, nil
}

// ReadCursor reads through the storage, timed.
func (s *storage) ReadCursor(ctx context.Context, stream, name string) (messagevault.Cursor, error) {
	c, err := s.cursors()
	if err != nil {
		return messagevault.Cursor{}, err
	}
	start := time.Now()
	cur, err := c.ReadCursor(ctx, stream, name)
	s.m.observe("read_cursor", start, ignoreNotFound(err))
	return cur, err
}

// WriteCursor writes through the storage, timed.
func (s *storage) WriteCursor(ctx context.Context, stream, name string, pos int64, ifMatch string) (messagevault.Cursor, error) {
	c, err := s.cursors()
	if err != nil {
		return messagevault.Cursor{}, err
	}
	start := time.Now()
	cur, err := c.WriteCursor(ctx, stream, name, pos, ifMatch)
	s.m.observe("write_cursor", start, ignoreNotFound(err))
	return cur, err
}

// DeleteCursor deletes through the storage, timed.
func (s *storage) DeleteCursor(ctx context.Context, stream, name string) error {
	c, err := s.cursors()
	if err != nil {
		return err
	}
	start := time.Now()
	err = c.DeleteCursor(ctx, stream, name)
	s.m.observe("delete_cursor", start, ignoreNotFound(err))
	return err
}

// ListCursors lists through the storage, timed.
func (s *storage) ListCursors(ctx context.Context, stream string) ([]messagevault.Cursor, error) {
	c, err := s.cursors()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	list, err := c.ListCursors(ctx, stream)
	s.m.observe("list_cursors", start, err)
	return list, err
}

// ignoreNotFound keeps a caller's mistakes (no such cursor, a stale
// ETag) out of the storage error counts.
func ignoreNotFound(err error) error {
	if errorsIsAny(err, messagevault.ErrCursorNotFound, messagevault.ErrCursorChanged, messagevault.ErrStreamNotFound) {
		return nil
	}
	return err
}

func errorsIsAny(err error, targets ...error) bool {
	for _, t := range targets {
		if errors.Is(err, t) {
			return true
		}
	}
	return false
}
