// Package mem is an in-memory backend for tests, with fault injection: fail
// the next write, tear the next write in half, fail the next flush or
// commit, and crash (lose every write not yet flushed).
//
// It models storage the way the stream writer must assume it behaves:
// WritePages lands in a volatile view that readers see at once, Flush makes
// it durable, CommitPosition is atomic and durable, and Crash rolls every
// unflushed write back and invalidates the open writers.
package mem

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/messagevault/messagevault"
)

// ErrInjected is the error returned by an injected fault.
var ErrInjected = errors.New("mem: injected fault")

var (
	_ messagevault.Storage = (*Storage)(nil)
	_ messagevault.Deleter = (*Storage)(nil)
)

// Storage is an in-memory Storage. The zero value is not usable; call New.
type Storage struct {
	mu      sync.Mutex
	streams map[string]*blob
	closed  bool

	failWrite  error
	tearWrite  bool
	failFlush  error
	failCommit error
	lostCommit error // the next commit lands, then reports this error
	loseState  bool  // the next WriteState reports success and keeps nothing

	// counters, for tests that check group commit
	writes, flushes, commits int
}

type blob struct {
	data    []byte // volatile contents; len(data) is the blob size
	undo    []undo // what unflushed writes overwrote, oldest first
	pos     int64
	durPos  int64 // the position as last made durable
	writer  *writer
	version int // bumped by Crash: writers of older versions are dead

	state    [2][]byte // writer-state slots as written
	durState [2][]byte // as last flushed
}

type undo struct {
	off  int64
	old  []byte
	size int // the blob size before the write
}

// New returns an empty in-memory storage.
func New() *Storage { return &Storage{streams: map[string]*blob{}} }

// FailNextWrite makes the next WritePages (of any stream) fail with err,
// writing nothing. A nil err means ErrInjected.
func (s *Storage) FailNextWrite(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failWrite = orInjected(err)
}

// TearNextWrite makes the next WritePages write only the first half of its
// bytes (not page-aligned) and then fail with ErrInjected, as a crash in the
// middle of the write would leave it.
func (s *Storage) TearNextWrite() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tearWrite = true
}

// FailNextFlush makes the next Flush fail with err (nil means ErrInjected).
// The unflushed writes stay volatile: a later Crash rolls them back.
func (s *Storage) FailNextFlush(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failFlush = orInjected(err)
}

// FailNextCommit makes the next CommitPosition fail with err (nil means
// ErrInjected), leaving the position unchanged.
func (s *Storage) FailNextCommit(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failCommit = orInjected(err)
}

// LandNextCommitFailing makes the next CommitPosition record the position
// and then fail with err (nil means ErrInjected), as a commit whose answer
// is lost does. The position it recorded is volatile: a Crash before the
// next successful commit rolls it back.
func (s *Storage) LandNextCommitFailing(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lostCommit = orInjected(err)
}

// LoseNextState makes the next WriteState report success without keeping
// anything, as a power loss that kept the position but not a state write
// made just before it.
func (s *Storage) LoseNextState() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.loseState = true
}

// Crash simulates a power loss: every write not yet flushed is rolled back
// (newest first), every open writer is invalidated (its methods return
// messagevault.ErrClosed) and the stream locks are released, so that a new
// writer can be opened as after a restart. Pending faults are cleared.
func (s *Storage) Crash() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, b := range s.streams {
		for i := len(b.undo) - 1; i >= 0; i-- {
			u := b.undo[i]
			copy(b.data[u.off:], u.old)
			b.data = b.data[:u.size]
		}
		b.undo = nil
		b.pos = b.durPos
		b.state = b.durState
		b.writer = nil
		b.version++
	}
	s.failWrite, s.tearWrite, s.failFlush, s.failCommit, s.lostCommit, s.loseState = nil, false, nil, nil, nil, false
}

// Counts returns how many WritePages, Flush and CommitPosition calls have
// succeeded so far, over all streams.
func (s *Storage) Counts() (writes, flushes, commits int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writes, s.flushes, s.commits
}

// Bytes returns a copy of stream's records blob, garbage past the position
// included, or nil if the stream does not exist.
func (s *Storage) Bytes(stream string) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b := s.streams[stream]; b != nil {
		return slices.Clone(b.data)
	}
	return nil
}

// Corrupt XORs the byte at off of stream's records blob with mask, for
// tests of corruption detection.
func (s *Storage) Corrupt(stream string, off int64, mask byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b := s.streams[stream]; b != nil && off < int64(len(b.data)) {
		b.data[off] ^= mask
	}
}

// OpenWriter opens stream for writing, creating it if needed.
func (s *Storage) OpenWriter(ctx context.Context, stream string) (messagevault.PageWriter, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("open writer %q: %w", stream, messagevault.ErrClosed)
	}
	b := s.streams[stream]
	if b == nil {
		b = &blob{}
		s.streams[stream] = b
	}
	if b.writer != nil {
		return nil, fmt.Errorf("open writer %q: a writer is already open: %w", stream, messagevault.ErrLocked)
	}
	w := &writer{reader: reader{s: s, b: b}, version: b.version}
	b.writer = w
	return w, nil
}

// OpenReader opens stream for reading.
func (s *Storage) OpenReader(ctx context.Context, stream string) (messagevault.PageReader, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.streams[stream]
	if b == nil {
		return nil, fmt.Errorf("open reader %q: %w", stream, messagevault.ErrStreamNotFound)
	}
	return &reader{s: s, b: b}, nil
}

// Streams lists the streams, sorted.
func (s *Storage) Streams(ctx context.Context) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.streams))
	for n := range s.streams {
		names = append(names, n)
	}
	slices.Sort(names)
	return names, nil
}

// DeleteStream removes stream and its data (see messagevault.Deleter).
func (s *Storage) DeleteStream(ctx context.Context, stream string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.streams[stream]
	switch {
	case s.closed:
		return fmt.Errorf("delete %q: %w", stream, messagevault.ErrClosed)
	case b == nil:
		return fmt.Errorf("delete %q: %w", stream, messagevault.ErrStreamNotFound)
	case b.writer != nil:
		return fmt.Errorf("delete %q: its writer is open: %w", stream, messagevault.ErrLocked)
	}
	delete(s.streams, stream)
	return nil
}

// Close marks the storage closed; its data stays readable.
func (s *Storage) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

type reader struct {
	s      *Storage
	b      *blob
	closed bool
}

func (r *reader) Position(ctx context.Context) (int64, error) {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	if r.closed {
		return 0, messagevault.ErrClosed
	}
	return r.b.pos, nil
}

func (r *reader) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	if r.closed {
		return 0, messagevault.ErrClosed
	}
	if off < 0 {
		return 0, fmt.Errorf("read at %d: %w", off, messagevault.ErrOutOfRange)
	}
	if off >= int64(len(r.b.data)) {
		return 0, io.EOF
	}
	n := copy(p, r.b.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (r *reader) Close() error {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	r.closed = true
	return nil
}

type writer struct {
	reader
	version int
}

// alive reports ErrClosed for a closed writer or one that a Crash killed.
// Call with s.mu held.
func (w *writer) alive() error {
	if w.closed || w.version != w.b.version {
		return messagevault.ErrClosed
	}
	return nil
}

func (w *writer) Size(ctx context.Context) (int64, error) {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	if err := w.alive(); err != nil {
		return 0, err
	}
	return int64(len(w.b.data)), nil
}

func (w *writer) Grow(ctx context.Context, size int64) error {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	if err := w.alive(); err != nil {
		return err
	}
	if err := messagevault.CheckGrow(size); err != nil {
		return err
	}
	if size > int64(len(w.b.data)) {
		w.b.data = append(w.b.data, make([]byte, size-int64(len(w.b.data)))...)
	}
	return nil
}

func (w *writer) WritePages(ctx context.Context, off int64, p []byte) error {
	s := w.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := w.alive(); err != nil {
		return err
	}
	if err := messagevault.CheckPages(off, len(p), int64(len(w.b.data))); err != nil {
		return err
	}
	if err := s.failWrite; err != nil {
		s.failWrite = nil
		return fmt.Errorf("write pages: %w", err)
	}
	torn := s.tearWrite
	s.tearWrite = false
	if torn {
		p = p[:len(p)/2]
	}
	w.b.undo = append(w.b.undo, undo{off: off, old: slices.Clone(w.b.data[off : off+int64(len(p))]), size: len(w.b.data)})
	copy(w.b.data[off:], p)
	if torn {
		return fmt.Errorf("write pages: torn after %d bytes: %w", len(p), ErrInjected)
	}
	s.writes++
	return nil
}

func (w *writer) Flush(ctx context.Context) error {
	s := w.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := w.alive(); err != nil {
		return err
	}
	if err := s.failFlush; err != nil {
		s.failFlush = nil
		return fmt.Errorf("flush: %w", err)
	}
	w.b.undo = nil
	w.b.durState = w.b.state
	s.flushes++
	return nil
}

func (w *writer) ReadState(ctx context.Context, slot int) ([]byte, error) {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	if err := w.alive(); err != nil {
		return nil, err
	}
	if slot != 0 && slot != 1 {
		return nil, fmt.Errorf("read state slot %d: %w", slot, messagevault.ErrOutOfRange)
	}
	return slices.Clone(w.b.state[slot]), nil
}

func (w *writer) WriteState(ctx context.Context, slot int, p []byte) error {
	s := w.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := w.alive(); err != nil {
		return err
	}
	if slot != 0 && slot != 1 {
		return fmt.Errorf("write state slot %d: %w", slot, messagevault.ErrOutOfRange)
	}
	if err := s.failWrite; err != nil {
		s.failWrite = nil
		return fmt.Errorf("write state: %w", err)
	}
	if s.loseState {
		s.loseState = false
		return nil
	}
	w.b.state[slot] = slices.Clone(p)
	return nil
}

// Refence has nothing to cut off: mem's calls are synchronous.
func (w *writer) Refence(ctx context.Context) error {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	return w.alive()
}

func (w *writer) CommitPosition(ctx context.Context, pos int64) error {
	s := w.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := w.alive(); err != nil {
		return err
	}
	if err := s.failCommit; err != nil {
		s.failCommit = nil
		return fmt.Errorf("commit position: %w", err)
	}
	if pos < 0 || pos > int64(len(w.b.data)) {
		return fmt.Errorf("commit position %d: blob is %d bytes: %w", pos, len(w.b.data), messagevault.ErrOutOfRange)
	}
	w.b.pos = pos
	if err := s.lostCommit; err != nil {
		s.lostCommit = nil
		return fmt.Errorf("commit position: %w", err)
	}
	w.b.durPos = pos
	s.commits++
	return nil
}

func (w *writer) Close() error {
	s := w.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	if w.version == w.b.version && w.b.writer == w {
		w.b.writer = nil
	}
	return nil
}

func orInjected(err error) error {
	if err == nil {
		return ErrInjected
	}
	return err
}
