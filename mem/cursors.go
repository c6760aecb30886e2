package mem

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"github.com/messagevault/messagevault"
)

var _ messagevault.Cursors = (*Storage)(nil)

// cursorsOf returns stream's cursors, creating the map (s.mu held).
func (s *Storage) cursorsOf(stream string) map[string]messagevault.Cursor {
	if s.cursors == nil {
		s.cursors = map[string]map[string]messagevault.Cursor{}
	}
	if s.cursors[stream] == nil {
		s.cursors[stream] = map[string]messagevault.Cursor{}
	}
	return s.cursors[stream]
}

// ReadCursor returns the cursor.
func (s *Storage) ReadCursor(ctx context.Context, stream, name string) (messagevault.Cursor, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.cursorsOf(stream)[name]
	if !ok {
		return messagevault.Cursor{}, fmt.Errorf("cursor %q: %w", name, messagevault.ErrCursorNotFound)
	}
	return c, nil
}

// WriteCursor sets the cursor, under If-Match of ifMatch if set.
func (s *Storage) WriteCursor(ctx context.Context, stream, name string, pos int64, ifMatch string) (messagevault.Cursor, error) {
	if err := messagevault.CheckCursorName(name); err != nil {
		return messagevault.Cursor{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cs := s.cursorsOf(stream)
	if ifMatch != "" {
		cur, ok := cs[name]
		switch {
		case !ok:
			return messagevault.Cursor{}, fmt.Errorf("cursor %q: there is none to match: %w", name, messagevault.ErrCursorChanged)
		case cur.ETag != ifMatch:
			return messagevault.Cursor{}, fmt.Errorf("cursor %q: %w", name, messagevault.ErrCursorChanged)
		}
	}
	var b [8]byte
	rand.Read(b[:])
	c := messagevault.Cursor{Name: name, Position: pos, ETag: hex.EncodeToString(b[:])}
	cs[name] = c
	return c, nil
}

// DeleteCursor removes the cursor.
func (s *Storage) DeleteCursor(ctx context.Context, stream, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cs := s.cursorsOf(stream)
	if _, ok := cs[name]; !ok {
		return fmt.Errorf("cursor %q: %w", name, messagevault.ErrCursorNotFound)
	}
	delete(cs, name)
	return nil
}

// ListCursors returns the stream's cursors by name.
func (s *Storage) ListCursors(ctx context.Context, stream string) ([]messagevault.Cursor, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []messagevault.Cursor
	for _, c := range s.cursorsOf(stream) {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b messagevault.Cursor) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}
