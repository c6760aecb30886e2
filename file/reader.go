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

// store is the segment.Store of one stream directory. Its files are
// handles of the storage's open files, which bounds how many are open.
type store struct {
	dir      string
	open     *openFiles
	position *handle

	mu     sync.Mutex
	index  *handle           // the time index, once opened
	segs   map[int64]*handle // segment files, by start (at most maxOpenSegments)
	order  []int64           // their starts, oldest opened first
	closed bool
}

// newStore returns the store of dir whose position file is position.
func newStore(dir string, open *openFiles, position *handle) *store {
	return &store{dir: dir, open: open, position: position, segs: map[int64]*handle{}}
}

// maxOpenSegments bounds the segment handles one reader keeps: a long
// reader of a stream of many segments lets the oldest go as it goes.
const maxOpenSegments = 4

var _ segment.Store = (*store)(nil)

// OpenStreamReader opens the stream stored in dir (a directory holding
// position.c7 and its segment files, 000000000000.b7 first) for reading,
// without taking any lock: this is what a consumer does with a file://
// read grant. It returns an error wrapping messagevault.ErrStreamNotFound
// if dir holds no stream.
func OpenStreamReader(dir string) (messagevault.PageReader, error) {
	return openStreamReader(dir, unbounded)
}

// openStreamReader opens the stream in dir for reading through open.
func openStreamReader(dir string, open *openFiles) (messagevault.PageReader, error) {
	position, err := open.openHandle(filepath.Join(dir, PositionFile), os.O_RDONLY, 0)
	if err != nil {
		if isNotExist(err) {
			return nil, fmt.Errorf("%s: %w", dir, messagevault.ErrStreamNotFound)
		}
		return nil, err
	}
	return segment.NewReader(newStore(dir, open, position)), nil
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
	var n int
	err := s.position.read(func(f *os.File) (err error) {
		n, err = f.ReadAt(b[:], 0)
		return err
	})
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
	for st, h := range s.segs {
		if st < start {
			h.Close()
			delete(s.segs, st)
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

// file returns the handle of the segment that starts at start.
func (s *store) file(start int64) (*handle, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, messagevault.ErrClosed
	}
	if h := s.segs[start]; h != nil {
		return h, nil
	}
	h, err := s.open.openHandle(filepath.Join(s.dir, segment.Name(start)), os.O_RDONLY, 0)
	if err != nil {
		if isNotExist(err) {
			return nil, fmt.Errorf("segment %s of %s: %w", segment.Name(start), s.dir, messagevault.ErrStreamNotFound)
		}
		return nil, err
	}
	if len(s.order) >= maxOpenSegments {
		// A concurrent read may be about to use it: a closed handle
		// fails with os.ErrClosed, which ReadSegment retries.
		old := s.order[0]
		s.order = s.order[1:]
		s.segs[old].Close()
		delete(s.segs, old)
	}
	s.segs[start] = h
	s.order = append(s.order, start)
	return h, nil
}

func (s *store) ReadSegment(ctx context.Context, start int64, p []byte, off int64) (int, error) {
	for try := 0; ; try++ {
		h, err := s.file(start)
		if err != nil {
			return 0, err
		}
		var n int
		err = h.read(func(f *os.File) (err error) {
			n, err = f.ReadAt(p, off)
			return err
		})
		if errors.Is(err, os.ErrClosed) && try < 3 {
			continue // let go by another read making room, or a trim
		}
		if isNotExist(err) {
			// Opened again after the segment was removed (a trim).
			err = fmt.Errorf("segment %s of %s: %w", segment.Name(start), s.dir, messagevault.ErrStreamNotFound)
		} else if err != nil && !errors.Is(err, io.EOF) {
			err = fmt.Errorf("read %d bytes at %d of %s: %w", len(p), off, h.Name(), err)
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
		h, err := s.open.openHandle(filepath.Join(s.dir, IndexFile), os.O_RDONLY, 0)
		if err != nil {
			s.mu.Unlock()
			if isNotExist(err) {
				return 0, io.EOF
			}
			return 0, err
		}
		s.index = h
	}
	h := s.index
	s.mu.Unlock()
	var n int
	err := h.read(func(f *os.File) (err error) {
		n, err = f.ReadAt(p, off)
		return err
	})
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
	for _, h := range s.segs {
		errs = append(errs, h.Close())
	}
	s.segs = nil
	return errors.Join(errs...)
}
