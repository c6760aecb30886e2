package file

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/internal/atomicfile"
)

// CursorsDir is the folder of a stream's cursors, one file each, named
// after the cursor with CursorSuffix.
const (
	CursorsDir   = "cursors"
	CursorSuffix = ".cur"
)

var _ messagevault.Cursors = (*Storage)(nil)

// cursorFile is a cursor file's contents.
type cursorFile struct {
	Position int64  `json:"Position"`
	ETag     string `json:"ETag"`
}

// cursorPath returns the file of stream's cursor name in data directory
// dir.
func cursorPath(dir, stream, name string) (string, error) {
	if err := messagevault.CheckStreamName(stream); err != nil {
		return "", err
	}
	if err := messagevault.CheckCursorName(name); err != nil {
		return "", err
	}
	return filepath.Join(dir, stream, CursorsDir, name+CursorSuffix), nil
}

func (s *Storage) cursorPath(stream, name string) (string, error) {
	return cursorPath(s.dir, stream, name)
}

func readCursorFile(path, name string) (messagevault.Cursor, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if isNotExist(err) {
			return messagevault.Cursor{}, fmt.Errorf("cursor %q: %w", name, messagevault.ErrCursorNotFound)
		}
		return messagevault.Cursor{}, fmt.Errorf("read cursor %q: %w", name, err)
	}
	var c cursorFile
	if err := json.Unmarshal(data, &c); err != nil || c.ETag == "" {
		return messagevault.Cursor{}, fmt.Errorf("cursor %q: %s is not a cursor file: %w", name, path, messagevault.ErrCorrupt)
	}
	return messagevault.Cursor{Name: name, Position: c.Position, ETag: c.ETag}, nil
}

// ReadCursor reads the cursor's file.
func (s *Storage) ReadCursor(ctx context.Context, stream, name string) (messagevault.Cursor, error) {
	return readCursor(s.dir, stream, name)
}

func readCursor(dir, stream, name string) (messagevault.Cursor, error) {
	path, err := cursorPath(dir, stream, name)
	if err != nil {
		return messagevault.Cursor{}, err
	}
	return readCursorFile(path, name)
}

// WriteCursor replaces the cursor's file (crash-safely: a new file, synced,
// renamed over the old one), under the storage's lock for its
// compare-and-swap: this process owns the directory.
func (s *Storage) WriteCursor(ctx context.Context, stream, name string, pos int64, ifMatch string) (messagevault.Cursor, error) {
	path, err := s.cursorPath(stream, name)
	if err != nil {
		return messagevault.Cursor{}, err
	}
	s.cursorMu.Lock()
	defer s.cursorMu.Unlock()
	if ifMatch != "" {
		cur, err := readCursorFile(path, name)
		if errors.Is(err, messagevault.ErrCursorNotFound) {
			return messagevault.Cursor{}, fmt.Errorf("cursor %q: there is none to match %s: %w", name, ifMatch, messagevault.ErrCursorChanged)
		}
		if err != nil {
			return messagevault.Cursor{}, err
		}
		if cur.ETag != ifMatch {
			return messagevault.Cursor{}, fmt.Errorf("cursor %q: its ETag is %s, not %s: %w", name, cur.ETag, ifMatch, messagevault.ErrCursorChanged)
		}
	}
	// The stream must be there: a cursor never recreates a stream's
	// folder (one deleted meanwhile, say).
	if _, err := os.Stat(filepath.Join(s.StreamDir(stream), PositionFile)); err != nil {
		if isNotExist(err) {
			return messagevault.Cursor{}, fmt.Errorf("write cursor %q: %w", name, messagevault.ErrStreamNotFound)
		}
		return messagevault.Cursor{}, fmt.Errorf("write cursor %q: %w", name, err)
	}
	if err := os.Mkdir(filepath.Dir(path), DirMode); err == nil {
		if err := syncDir(s.StreamDir(stream)); err != nil {
			return messagevault.Cursor{}, fmt.Errorf("write cursor %q: %w", name, err)
		}
	} else if !os.IsExist(err) {
		return messagevault.Cursor{}, fmt.Errorf("write cursor %q: %w", name, err)
	}
	var b [8]byte
	rand.Read(b[:])
	c := cursorFile{Position: pos, ETag: hex.EncodeToString(b[:])}
	data, _ := json.Marshal(c)
	if err := atomicfile.Write(path, append(data, '\n'), FileMode); err != nil {
		return messagevault.Cursor{}, fmt.Errorf("write cursor %q: %w", name, err)
	}
	return messagevault.Cursor{Name: name, Position: pos, ETag: c.ETag}, nil
}

// DeleteCursor removes the cursor's file.
func (s *Storage) DeleteCursor(ctx context.Context, stream, name string) error {
	path, err := s.cursorPath(stream, name)
	if err != nil {
		return err
	}
	s.cursorMu.Lock()
	defer s.cursorMu.Unlock()
	if err := os.Remove(path); err != nil {
		if isNotExist(err) {
			return fmt.Errorf("cursor %q: %w", name, messagevault.ErrCursorNotFound)
		}
		return fmt.Errorf("delete cursor %q: %w", name, err)
	}
	return syncDir(filepath.Dir(path))
}

// ListCursors reads every cursor file of the stream.
func (s *Storage) ListCursors(ctx context.Context, stream string) ([]messagevault.Cursor, error) {
	return listCursors(s.dir, stream)
}

func listCursors(data, stream string) ([]messagevault.Cursor, error) {
	if err := messagevault.CheckStreamName(stream); err != nil {
		return nil, err
	}
	dir := filepath.Join(data, stream, CursorsDir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		if isNotExist(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("list cursors: %w", err)
	}
	var out []messagevault.Cursor
	for _, e := range entries {
		// atomicfile's temporary files do not end with the suffix.
		name, ok := strings.CutSuffix(e.Name(), CursorSuffix)
		if !ok || !e.Type().IsRegular() || messagevault.CheckCursorName(name) != nil {
			continue
		}
		c, err := readCursorFile(filepath.Join(dir, e.Name()), name)
		if err != nil {
			if errors.Is(err, messagevault.ErrCursorNotFound) {
				continue // deleted meanwhile
			}
			return nil, err
		}
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b messagevault.Cursor) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

var _ messagevault.Cursors = (*ReadOnly)(nil)

// ReadCursor reads the cursor's file.
func (r *ReadOnly) ReadCursor(ctx context.Context, stream, name string) (messagevault.Cursor, error) {
	return readCursor(r.dir, stream, name)
}

// ListCursors reads every cursor file of the stream.
func (r *ReadOnly) ListCursors(ctx context.Context, stream string) ([]messagevault.Cursor, error) {
	return listCursors(r.dir, stream)
}

// WriteCursor refuses: only the process that holds the directory's lock
// writes cursors (their compare-and-swap holds within one process).
func (r *ReadOnly) WriteCursor(ctx context.Context, stream, name string, pos int64, ifMatch string) (messagevault.Cursor, error) {
	return messagevault.Cursor{}, fmt.Errorf("write cursor %q: this process does not hold the data directory: %w", name, messagevault.ErrNotLeader)
}

// DeleteCursor refuses, as WriteCursor does.
func (r *ReadOnly) DeleteCursor(ctx context.Context, stream, name string) error {
	return fmt.Errorf("delete cursor %q: this process does not hold the data directory: %w", name, messagevault.ErrNotLeader)
}
