// Package mem is an in-memory backend for tests, with fault injection: fail
// the next write, tear the next write in half, fail the next flush, commit
// or roll, and crash (lose every write not yet flushed).
//
// It models storage the way the stream writer must assume it behaves:
// WritePages lands in a volatile view that readers see at once, Flush makes
// it durable, CommitPosition and Trim are atomic and durable, a Roll's new
// segment exists at once (as a file whose directory was synced), and Crash
// rolls every unflushed write back and invalidates the open writers.
package mem

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/segment"
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
	failRoll   error
	lostCommit error // the next commit lands, then reports this error
	loseState  bool  // the next WriteState reports success and keeps nothing

	// counters, for tests that check group commit
	writes, flushes, commits int

	cursors map[string]map[string]messagevault.Cursor // stream -> name -> cursor
}

// blob is one stream: its segments and its position record.
type blob struct {
	segs    map[int64][]byte // segment start -> volatile contents (len is the blob size)
	undo    []undo           // what unflushed writes overwrote, oldest first
	ext     messagevault.Extent
	durExt  messagevault.Extent // the position record as last made durable
	writer  *writer
	version int // bumped by Crash: writers of older versions are dead

	state    [2][]byte // writer-state slots as written
	durState [2][]byte // as last flushed
	index    []byte    // the time index (hints: kept through crashes)
}

// dropSegment removes segment st and the undo records of its writes.
func (b *blob) dropSegment(st int64) {
	delete(b.segs, st)
	b.undo = slices.DeleteFunc(b.undo, func(u undo) bool { return u.seg == st })
}

type undo struct {
	seg  int64
	off  int64
	old  []byte
	size int // the segment's size before the write
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

// FailNextRoll makes the next Roll fail with err (nil means ErrInjected),
// creating no segment.
func (s *Storage) FailNextRoll(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failRoll = orInjected(err)
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
			data := b.segs[u.seg]
			copy(data[u.off:], u.old)
			b.segs[u.seg] = data[:u.size]
		}
		b.undo = nil
		b.ext = b.durExt
		b.state = b.durState
		b.writer = nil
		b.version++
	}
	s.failWrite, s.tearWrite, s.failFlush, s.failCommit, s.failRoll, s.lostCommit, s.loseState = nil, false, nil, nil, nil, nil, false
}

// Counts returns how many WritePages, Flush and CommitPosition calls have
// succeeded so far, over all streams.
func (s *Storage) Counts() (writes, flushes, commits int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writes, s.flushes, s.commits
}

// Bytes returns the stream's records, from its Start to the end of the
// active segment's blob (garbage past the position included), as one
// slice of stream positions: byte i is position Start+i.
func (s *Storage) Bytes(stream string) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.streams[stream]
	if b == nil {
		return nil
	}
	var out []byte
	starts := slices.Sorted(maps.Keys(b.segs))
	for i, st := range starts {
		if st < b.ext.Start || st > b.ext.Segment {
			continue
		}
		data := b.segs[st]
		from := st - segment.Base(st)
		to := int64(len(data))
		if i+1 < len(starts) && starts[i+1] <= b.ext.Segment {
			to = min(to, starts[i+1]-segment.Base(st))
		}
		if from < to {
			out = append(out, data[from:to]...)
		}
	}
	return out
}

// Corrupt XORs the byte at position off of stream with mask, for tests of
// damaged storage.
func (s *Storage) Corrupt(stream string, off int64, mask byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.streams[stream]
	if b == nil {
		return
	}
	chain, err := segment.Chain(slices.Collect(maps.Keys(b.segs)), b.ext)
	if err != nil {
		return
	}
	st := chain[segment.Find(chain, off)]
	if data := b.segs[st]; off-segment.Base(st) < int64(len(data)) {
		data[off-segment.Base(st)] ^= mask
	}
}

// OpenWriter opens the stream's writer, creating the stream if needed.
func (s *Storage) OpenWriter(ctx context.Context, stream string) (messagevault.PageWriter, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("open writer %q: %w", stream, messagevault.ErrClosed)
	}
	b := s.streams[stream]
	if b == nil {
		b = &blob{segs: map[int64][]byte{0: nil}}
		s.streams[stream] = b
	}
	if b.writer != nil {
		return nil, fmt.Errorf("open writer %q: a writer is already open: %w", stream, messagevault.ErrLocked)
	}
	w := &writer{store: store{s: s, b: b}, version: b.version}
	w.Reader = segment.NewReader(&w.store)
	w.load()
	b.writer = w
	return w, nil
}

// OpenReader opens a reader of the stream.
func (s *Storage) OpenReader(ctx context.Context, stream string) (messagevault.PageReader, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.streams[stream]
	if b == nil {
		return nil, fmt.Errorf("open reader %q: %w", stream, messagevault.ErrStreamNotFound)
	}
	return segment.NewReader(&store{s: s, b: b}), nil
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

// DeleteStream removes the stream at once.
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
	delete(s.cursors, stream)
	return nil
}

// Close marks the storage closed.
func (s *Storage) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

// store is the segment.Store of one stream.
type store struct {
	s      *Storage
	b      *blob
	closed bool
}

func (r *store) Extent(ctx context.Context) (messagevault.Extent, error) {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	if r.closed {
		return messagevault.Extent{}, messagevault.ErrClosed
	}
	return r.b.ext, nil
}

func (r *store) List(ctx context.Context) ([]int64, error) {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	if r.closed {
		return nil, messagevault.ErrClosed
	}
	return slices.Collect(maps.Keys(r.b.segs)), nil
}

func (r *store) ReadSegment(ctx context.Context, start int64, p []byte, off int64) (int, error) {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	if r.closed {
		return 0, messagevault.ErrClosed
	}
	data, ok := r.b.segs[start]
	if !ok {
		return 0, fmt.Errorf("segment %s: %w", segment.Name(start), messagevault.ErrStreamNotFound)
	}
	if off >= int64(len(data)) {
		return 0, io.EOF
	}
	n := copy(p, data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (r *store) ReadIndex(ctx context.Context, p []byte, off int64) (int, error) {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	if r.closed {
		return 0, messagevault.ErrClosed
	}
	if off >= int64(len(r.b.index)) {
		return 0, io.EOF
	}
	n := copy(p, r.b.index[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (r *store) Close() error {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	r.closed = true
	return nil
}

// writer is the PageWriter of one stream.
type writer struct {
	*segment.Reader
	store
	version int
	active  int64 // the active segment: ext.Segment, or a newer roll
}

// load (with s.mu held or before the writer is shared) goes back to the
// committed active segment and removes the segments outside the chain.
func (w *writer) load() {
	w.active = w.b.ext.Segment
	for _, st := range segment.Leftovers(slices.Collect(maps.Keys(w.b.segs)), w.b.ext) {
		w.b.dropSegment(st)
	}
	if _, ok := w.b.segs[w.active]; !ok {
		w.b.segs[w.active] = nil
	}
}

// Extent reads the committed position record (through the reader, which
// follows the chain).
func (w *writer) Extent(ctx context.Context) (messagevault.Extent, error) {
	return w.Reader.Extent(ctx)
}

// ReadIndex reads the time index (through the reader).
func (w *writer) ReadIndex(ctx context.Context, p []byte, off int64) (int, error) {
	return w.Reader.ReadIndex(ctx, p, off)
}

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
	return segment.Base(w.active) + int64(len(w.b.segs[w.active])), nil
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
	data := w.b.segs[w.active]
	if size -= segment.Base(w.active); size > int64(len(data)) {
		w.b.segs[w.active] = append(data, make([]byte, size-int64(len(data)))...)
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
	data := w.b.segs[w.active]
	if off < segment.Base(w.active) {
		return fmt.Errorf("write at %d: before the active segment %s: %w", off, segment.Name(w.active), messagevault.ErrOutOfRange)
	}
	off -= segment.Base(w.active)
	if err := messagevault.CheckPages(off, len(p), int64(len(data))); err != nil {
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
	w.b.undo = append(w.b.undo, undo{seg: w.active, off: off, old: slices.Clone(data[off : off+int64(len(p))]), size: len(data)})
	copy(data[off:], p)
	if torn {
		return fmt.Errorf("write pages: torn after %d bytes: %w", len(p), ErrInjected)
	}
	s.writes++
	return nil
}

func (w *writer) Roll(ctx context.Context, start int64) error {
	s := w.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := w.alive(); err != nil {
		return err
	}
	if start <= w.active {
		return fmt.Errorf("roll to a segment at %d: not past the active one at %d: %w", start, w.active, messagevault.ErrOutOfRange)
	}
	if err := s.failRoll; err != nil {
		s.failRoll = nil
		return fmt.Errorf("roll: %w", err)
	}
	for st := range w.b.segs {
		if st > w.active {
			w.b.dropSegment(st) // left over by a roll never committed
		}
	}
	w.b.segs[start] = nil
	w.active = start
	return nil
}

func (w *writer) WriteIndex(ctx context.Context, off int64, p []byte) error {
	s := w.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := w.alive(); err != nil {
		return err
	}
	if off < 0 || off%messagevault.PageSize != 0 || len(p)%messagevault.PageSize != 0 {
		return fmt.Errorf("write %d bytes of the time index at %d: %w", len(p), off, messagevault.ErrOutOfRange)
	}
	if end := off + int64(len(p)); end > int64(len(w.b.index)) {
		w.b.index = append(w.b.index, make([]byte, end-int64(len(w.b.index)))...)
	}
	copy(w.b.index[off:], p)
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

func (w *writer) ReadState(ctx context.Context, slot int, p []byte, off int64) (int, error) {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	if err := w.alive(); err != nil {
		return 0, err
	}
	if slot != 0 && slot != 1 {
		return 0, fmt.Errorf("read state slot %d: %w", slot, messagevault.ErrOutOfRange)
	}
	if off < 0 {
		return 0, io.EOF
	}
	return bytes.NewReader(w.b.state[slot]).ReadAt(p, off)
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
// Refence goes back to the committed active segment.
func (w *writer) Refence(ctx context.Context) error {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	if err := w.alive(); err != nil {
		return err
	}
	w.load()
	w.Forget()
	return nil
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
	end := segment.Base(w.active) + int64(len(w.b.segs[w.active]))
	if pos < w.active || pos > end {
		return fmt.Errorf("commit position %d: the active segment holds %d to %d: %w", pos, w.active, end, messagevault.ErrOutOfRange)
	}
	w.b.ext = messagevault.Extent{Position: pos, Start: w.b.ext.Start, Segment: w.active}
	if err := s.lostCommit; err != nil {
		s.lostCommit = nil
		return fmt.Errorf("commit position: %w", err)
	}
	w.b.durExt = w.b.ext
	s.commits++
	return nil
}

func (w *writer) Trim(ctx context.Context, start int64) error {
	s := w.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := w.alive(); err != nil {
		return err
	}
	e := w.b.ext
	if _, ok := w.b.segs[start]; !ok || start <= e.Start || start > e.Segment || w.active != e.Segment {
		return fmt.Errorf("trim to %d: not a stored segment after the first (%d to %d): %w", start, e.Start, e.Segment, messagevault.ErrOutOfRange)
	}
	e.Start = start
	w.b.ext, w.b.durExt = e, e
	for st := range w.b.segs {
		if st < start {
			w.b.dropSegment(st)
		}
	}
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
