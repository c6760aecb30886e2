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
	"sync"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/segment"
)

// The position file's first bytes: the committed position (all that
// readers of the v1 layout read), then the active segment's start and the
// stream's first stored position. A file of 8 bytes (v1) has both at 0.
const (
	extentSize    = 24
	segmentOffset = 8
	startOffset   = 16
)

// store is the segment.Store of one stream directory.
type store struct {
	dir      string
	position *os.File

	mu     sync.Mutex
	index  *os.File           // the time index, once opened
	files  map[int64]*os.File // open segment files, by start (at most maxOpenSegments)
	order  []int64            // their starts, oldest opened first
	closed bool
}

// maxOpenSegments bounds the segment files one reader keeps open: a long
// reader of a stream of many segments closes the oldest as it goes.
const maxOpenSegments = 4

var _ segment.Store = (*store)(nil)

// OpenStreamReader opens the stream stored in dir (a directory holding
// position.c7 and its segment files, 000000000000.b7 first) for reading,
// without taking any lock: this is what a consumer does with a file://
// read grant. It returns an error wrapping messagevault.ErrStreamNotFound
// if dir holds no stream.
func OpenStreamReader(dir string) (messagevault.PageReader, error) {
	position, err := os.Open(filepath.Join(dir, PositionFile))
	if err != nil {
		if isNotExist(err) {
			return nil, fmt.Errorf("%s: %w", dir, messagevault.ErrStreamNotFound)
		}
		return nil, err
	}
	return segment.NewReader(&store{dir: dir, position: position, files: map[int64]*os.File{}}), nil
}

func (s *store) Extent(ctx context.Context) (messagevault.Extent, error) {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return messagevault.Extent{}, messagevault.ErrClosed
	}
	// pread is not atomic against a concurrent pwrite of the same bytes:
	// read until two reads agree.
	prev, err := s.readExtent()
	for i := 0; err == nil && i < 10; i++ {
		var e messagevault.Extent
		if e, err = s.readExtent(); err == nil && e == prev {
			if e.Position < 0 || e.Start < 0 || e.Segment < e.Start || e.Segment > e.Position {
				return messagevault.Extent{}, fmt.Errorf("read %s: position %d, start %d, active segment %d do not fit: %w", s.position.Name(), e.Position, e.Start, e.Segment, messagevault.ErrCorrupt)
			}
			s.closeBefore(e.Start)
			return e, nil
		}
		prev = e
	}
	if err != nil {
		return messagevault.Extent{}, err
	}
	return messagevault.Extent{}, fmt.Errorf("read %s: the position keeps changing under the reader", s.position.Name())
}

func (s *store) readExtent() (messagevault.Extent, error) {
	var b [extentSize]byte
	n, err := s.position.ReadAt(b[:], 0)
	if n < 8 {
		if n == 0 && errors.Is(err, io.EOF) {
			return messagevault.Extent{}, nil // created, never committed
		}
		if err == nil || errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return messagevault.Extent{}, fmt.Errorf("read %s: %d of 8 bytes: %w", s.position.Name(), n, err)
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return messagevault.Extent{}, fmt.Errorf("read %s: %w", s.position.Name(), err)
	}
	return messagevault.Extent{
		Position: int64(binary.LittleEndian.Uint64(b[0:])),
		Segment:  int64(binary.LittleEndian.Uint64(b[segmentOffset:])),
		Start:    int64(binary.LittleEndian.Uint64(b[startOffset:])),
	}, nil
}

// closeBefore closes the files of segments trimmed away.
func (s *store) closeBefore(start int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for st, f := range s.files {
		if st < start {
			f.Close()
			delete(s.files, st)
		}
	}
	s.order = slices.DeleteFunc(s.order, func(st int64) bool { return st < start })
}

func (s *store) List(ctx context.Context) ([]int64, error) {
	return listSegments(s.dir)
}

// listSegments returns the starts of the segment files in dir.
func listSegments(dir string) ([]int64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		if isNotExist(err) {
			return nil, fmt.Errorf("%s: %w", dir, messagevault.ErrStreamNotFound)
		}
		return nil, err
	}
	var starts []int64
	for _, e := range entries {
		if st, ok := segment.Parse(e.Name()); ok && e.Type().IsRegular() {
			starts = append(starts, st)
		}
	}
	return starts, nil
}

// file returns the open file of the segment that starts at start.
func (s *store) file(start int64) (*os.File, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, messagevault.ErrClosed
	}
	if f := s.files[start]; f != nil {
		return f, nil
	}
	f, err := os.Open(filepath.Join(s.dir, segment.Name(start)))
	if err != nil {
		if isNotExist(err) {
			return nil, fmt.Errorf("segment %s of %s: %w", segment.Name(start), s.dir, messagevault.ErrStreamNotFound)
		}
		return nil, err
	}
	if len(s.order) >= maxOpenSegments {
		// A concurrent ReadAt may still use it: closed files fail their
		// reads with os.ErrClosed, which ReadSegment retries.
		old := s.order[0]
		s.order = s.order[1:]
		s.files[old].Close()
		delete(s.files, old)
	}
	s.files[start] = f
	s.order = append(s.order, start)
	return f, nil
}

func (s *store) ReadSegment(ctx context.Context, start int64, p []byte, off int64) (int, error) {
	for try := 0; ; try++ {
		f, err := s.file(start)
		if err != nil {
			return 0, err
		}
		n, err := f.ReadAt(p, off)
		if errors.Is(err, os.ErrClosed) && try < 3 {
			continue // closed by another read making room, or a trim
		}
		if err != nil && !errors.Is(err, io.EOF) {
			err = fmt.Errorf("read %d bytes at %d of %s: %w", len(p), off, f.Name(), err)
		}
		return n, err
	}
}

// ReadIndex reads the time index file (none: io.EOF).
func (s *store) ReadIndex(ctx context.Context, p []byte, off int64) (int, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return 0, messagevault.ErrClosed
	}
	if s.index == nil {
		f, err := os.Open(filepath.Join(s.dir, IndexFile))
		if err != nil {
			s.mu.Unlock()
			if isNotExist(err) {
				return 0, io.EOF
			}
			return 0, err
		}
		s.index = f
	}
	f := s.index
	s.mu.Unlock()
	n, err := f.ReadAt(p, off)
	if err != nil && !errors.Is(err, io.EOF) {
		err = fmt.Errorf("read the time index: %w", err)
	}
	return n, err
}

func (s *store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	errs := []error{s.position.Close()}
	if s.index != nil {
		errs = append(errs, s.index.Close())
	}
	for _, f := range s.files {
		errs = append(errs, f.Close())
	}
	s.files = nil
	return errors.Join(errs...)
}
