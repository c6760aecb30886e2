package stream

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/formats"
)

// Writer defaults.
const (
	// DefaultMaxGroupBytes is how many record bytes one group commit
	// gathers before it writes; a single larger batch is written alone.
	DefaultMaxGroupBytes = 8 << 20
	// DefaultGrowStep is how far the records blob grows at a time.
	DefaultGrowStep = 64 << 20
	// DefaultQueueLength is how many appends may wait for the next group
	// before Append blocks.
	DefaultQueueLength = 1024
	// DefaultOpTimeout bounds the storage calls of one group commit.
	DefaultOpTimeout = 60 * time.Second
	// DefaultSegmentSize is the largest page blob Azure allows (8 TiB)
	// less room for the producer table stored past the last records
	// (maxSnapshot), so that a stream stays one blob, as in the original,
	// unless a smaller size is set.
	DefaultSegmentSize = 8<<40 - maxSnapshot
	// MinSegmentSize is the smallest segment size a writer accepts.
	MinSegmentSize = 1 << 20
)

// WriterConfig tunes a Writer. Zero fields take the defaults.
type WriterConfig struct {
	// MaxGroupBytes caps the record bytes of one group commit.
	// Default DefaultMaxGroupBytes.
	MaxGroupBytes int
	// GrowStep is the step in which the records blob grows (rounded up to
	// whole pages). Default DefaultGrowStep.
	GrowStep int64
	// QueueLength is the number of appends that may wait for a group.
	// Default DefaultQueueLength.
	QueueLength int
	// Now returns the time put into message ids. Default time.Now.
	Now func() time.Time
	// OpTimeout bounds each group's storage calls, so that a hung storage
	// fails the group instead of holding the stream. Default
	// DefaultOpTimeout.
	OpTimeout time.Duration
	// Observer, if set, hears of every group commit and failure (for
	// metrics). It is called from the writer's goroutine, and from the
	// goroutine that reports a commit in flight, sometimes at once: keep
	// it quick and safe for concurrent use.
	Observer Observer
	// Deadline, if set, returns until when this writer may write: a
	// leader's lease, less a margin. A group is refused with
	// messagevault.ErrNotLeader once it has passed, and its storage calls
	// are cut off when it passes. Default: no deadline.
	Deadline func() time.Time
	// MaxProducers is how many producers the exactly-once table
	// remembers. Default DefaultMaxProducers.
	MaxProducers int
	// SegmentSize is the largest segment blob: the writer rolls to a new
	// segment before the active one would pass it. It must be a multiple
	// of PageSize, at least MinSegmentSize (see CheckSegmentSize).
	// Default DefaultSegmentSize.
	SegmentSize int64
}

// CheckSegmentSize reports an error unless size is a valid segment size:
// a multiple of PageSize (512) of at least MinSegmentSize (1 MiB).
func CheckSegmentSize(size int64) error {
	if size < MinSegmentSize || size%messagevault.PageSize != 0 {
		return fmt.Errorf("segment size %d: want a multiple of %d bytes of at least %d (1 MiB)", size, messagevault.PageSize, MinSegmentSize)
	}
	return nil
}

// Observer hears what a Writer does.
type Observer interface {
	// Committed reports a group made durable: how many appends it
	// answered, their messages and record bytes, and how long the storage
	// calls took.
	Committed(stream string, appends, messages, bytes int, took time.Duration)
	// Failed reports a group that failed, with the error its appends got.
	Failed(stream string, err error)
	// Duplicate reports a batch answered from the producer table
	// without being appended again.
	Duplicate(stream string)
	// Evicted reports producers forgotten by the producer table to make
	// room for newer ones.
	Evicted(stream string, n int)
	// Trimmed reports the bytes of the segments a trim removed.
	Trimmed(stream string, bytes int64)
}

// AppendResult is the answer to an append once it is durable.
type AppendResult struct {
	// Position is the stream's committed length after the append's group.
	Position int64
	// Offsets holds each message's record position, in order.
	Offsets []int64
	// Duplicate is set when the batch's producer sequence was applied
	// already: nothing was appended, and Offsets are those of the first
	// time.
	Duplicate bool
}

// idCounter is the process-local counter of message ids, seeded at random
// and incremented per id (formats/doc.go).
var idCounter = newIDCounter()

func newIDCounter() *atomic.Uint32 {
	c := new(atomic.Uint32)
	c.Store(rand.Uint32() >> 1) // leave room before the counter wraps
	return c
}

// request states, so that a cancelled append is either never written or
// waited for.
const (
	stateQueued int32 = iota
	stateTaken
	stateCancelled
)

type request struct {
	msgs  []messagevault.Message
	opts  AppendOptions
	size  int
	state atomic.Int32
	done  chan struct{}
	res   AppendResult
	err   error
	// skip marks a request answered without appending (a duplicate, a
	// refused condition); dupOf names the request of the same group it
	// repeats, whose offsets it answers with.
	skip  bool
	dupOf *request
	// query asks for the last sequence of opts.Producer instead of
	// appending; the answer goes to last and known.
	query bool
	last  uint64
	known bool
	// trim asks to remove the segments that end at or before before;
	// the stream's new start goes to res.Position.
	trim   bool
	before int64
}

// Writer appends to one stream. Appends are strictly ordered; concurrent
// appends are grouped into one page write, one flush and one position
// commit, and each is answered only once its group is durable. A Writer is
// safe for concurrent use.
type Writer struct {
	name  string
	pages messagevault.PageWriter
	cfg   WriterConfig

	reqs    chan *request
	closing chan struct{}
	done    chan struct{}
	once    sync.Once

	mu        sync.Mutex
	committed int64
	notify    chan struct{}
	fatal     error // set once the writer can no longer write
	closeErr  error

	// Owned by the loop goroutine.
	tail    *Tail // committed position, last page, staged records
	recover bool  // reload the tail from storage before the next group
	lastMs  int64 // id time of the last group: ids never go back in time

	index     indexWriter    // the time index's end
	producers *producerTable // exactly-once table as of pos
	slot      int            // state slot holding the table as of pos, or -1
	snap      []byte         // reused snapshot buffer
	inGroup   map[string]*request
	// pipelined is set when pages is a messagevault.CommitStarter: it
	// can write the next group's pages while a commit is in flight.
	pipelined bool
	// inflight is the group whose position commit is in flight. Its
	// commit's callback answers it if it lands; finish, if it failed.
	inflight *flight
	// indexing is the time index write in flight, on a pipelined
	// storage; waitIndex takes its outcome.
	indexing *indexWrite
}

// flight is one group from the moment it is taken until it is answered.
type flight struct {
	group  []*request
	start  time.Time
	end    int64              // the position its commit records
	done   chan struct{}      // closed once its commit's outcome is in err; nil: no commit started
	err    error              // the commit's outcome; a group that committed is answered already
	cancel context.CancelFunc // of the storage calls' context, which the commit outlives
}

// OpenWriter opens the log of stream on pages: it reads the committed
// position, preloads the partial tail page and starts the writer's loop.
// The Writer owns pages from then on and closes it in Close. name is used
// in errors only.
func OpenWriter(ctx context.Context, name string, pages messagevault.PageWriter, cfg WriterConfig) (*Writer, error) {
	if cfg.MaxGroupBytes <= 0 {
		cfg.MaxGroupBytes = DefaultMaxGroupBytes
	}
	if cfg.GrowStep <= 0 {
		cfg.GrowStep = DefaultGrowStep
	}
	if cfg.QueueLength <= 0 {
		cfg.QueueLength = DefaultQueueLength
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.OpTimeout <= 0 {
		cfg.OpTimeout = DefaultOpTimeout
	}
	if cfg.SegmentSize == 0 {
		cfg.SegmentSize = DefaultSegmentSize
	}
	if err := CheckSegmentSize(cfg.SegmentSize); err != nil {
		return nil, fmt.Errorf("open stream %q: %w", name, err)
	}
	w := &Writer{
		name:    name,
		pages:   pages,
		cfg:     cfg,
		reqs:    make(chan *request, cfg.QueueLength),
		closing: make(chan struct{}),
		done:    make(chan struct{}),
		notify:  make(chan struct{}),
	}
	w.slot = -1
	_, w.pipelined = pages.(messagevault.CommitStarter)
	w.tail = NewTail(pages, cfg.GrowStep, 2*cfg.MaxGroupBytes)
	w.tail.SetSegmentSize(cfg.SegmentSize)
	if err := w.load(ctx); err != nil {
		return nil, fmt.Errorf("open stream %q: %w", name, err)
	}
	w.committed = w.tail.Position()
	go w.loop()
	return w, nil
}

// load reads the tail (committed position, last page) and the producer
// table from storage.
func (w *Writer) load(ctx context.Context) error {
	w.waitIndex()
	if err := w.tail.Load(ctx); err != nil {
		return err
	}
	if err := w.loadProducers(ctx, w.tail.Position(), w.tail.Size()); err != nil {
		return err
	}
	if err := w.index.load(ctx, w.pages, w.tail.Position()); err != nil {
		// The index holds hints: without it the writer writes none
		// until its next load, and lookups bisect by records.
		w.index = indexWriter{off: true}
	}
	// Ids never go back in time along the stream, even when this
	// writer's clock is behind the last one's (another node, a clock
	// step): reads "since a time" bisect on them. Storage that fails
	// fails the open (it is retried); a damaged last record leaves that
	// to the clock.
	last, ok, err := LastRecord(ctx, w.pages, w.tail.Position())
	switch {
	case err == nil && ok:
		w.lastMs = max(w.lastMs, int64(last.ID.Millis()))
	case err != nil && !errors.Is(err, messagevault.ErrCorrupt):
		return fmt.Errorf("read the last record's time: %w", err)
	}
	w.recover = false
	return nil
}

// loadProducers finds the newest snapshot of the producer table that
// describes the committed stream (see snapshotMagic) among the two state
// slots and the copy the last group wrote past its records; a snapshot
// whose group was never committed fails its check and is ignored. When
// only the copy past the records has the newest table (a crash kept the
// position but lost the slot), it is saved to a slot at once, before the
// next group's pages overwrite it.
func (w *Writer) loadProducers(ctx context.Context, pos, size int64) error {
	w.producers, w.slot = newProducerTable(w.cfg.MaxProducers), -1
	best := int64(-1)
	var bestBytes []byte
	check := func(b []byte, slot int) error {
		if len(b) == 0 {
			return nil
		}
		t, s, err := decodeSnapshot(b, w.cfg.MaxProducers)
		if err != nil || s.pos > pos || s.pos <= best || s.lastOff < 0 || s.lastOff+2+int64(len(s.lastID)) > s.pos {
			return nil // torn, or for a group that was never committed
		}
		var id formats.ID
		if n, err := w.pages.ReadAt(ctx, id[:], s.lastOff+2); n < len(id) {
			if err == nil {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("check producer table: read record at %d: %w", s.lastOff, err)
		}
		if id != s.lastID {
			return nil
		}
		w.producers, w.slot, best, bestBytes = t, slot, s.pos, b
		return nil
	}
	for slot := range 2 {
		b, err := readSnapshot(func(p []byte, off int64) (int, error) { return w.pages.ReadState(ctx, slot, p, off) }, math.MaxInt64)
		if err != nil {
			return fmt.Errorf("read producer table from state slot %d: %w", slot, err)
		}
		if err := check(b, slot); err != nil {
			return err
		}
	}
	slotBest := w.slot
	if off := roundUp(pos); off < size {
		// The copy the last group wrote past its records.
		b, err := readSnapshot(func(p []byte, o int64) (int, error) { return w.pages.ReadAt(ctx, p, off+o) }, size-off)
		if err != nil {
			return fmt.Errorf("read producer table at %d: %w", off, err)
		}
		if err := check(b, -1); err != nil {
			return err
		}
	}
	if w.slot == -1 && best >= 0 {
		slot := 1 - max(slotBest, 0)
		if err := w.pages.WriteState(ctx, slot, bestBytes); err != nil {
			return fmt.Errorf("save producer table: %w", err)
		}
		if err := w.pages.Flush(ctx); err != nil {
			return fmt.Errorf("save producer table: %w", err)
		}
		if err := w.pages.CommitPosition(ctx, pos); err != nil {
			return fmt.Errorf("save producer table: %w", err)
		}
		w.slot = slot
	}
	return nil
}

// readSnapshot reads a snapshot through readAt, which reads from its
// start and holds at most limit bytes: its header first, then as many
// bytes as the header says. It returns nil if there is none (too short,
// no magic, a length out of bounds): a torn or never written one.
func readSnapshot(readAt func(p []byte, off int64) (int, error), limit int64) ([]byte, error) {
	head := make([]byte, snapshotHeader)
	if int64(len(head)) > limit {
		return nil, nil
	}
	if n, err := readAt(head, 0); n < len(head) {
		if err == nil || errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, err
	}
	n := int64(binary.LittleEndian.Uint32(head[4:]))
	if string(head[:4]) != snapshotMagic || n < snapshotHeader || n > maxSnapshot || n > limit {
		return nil, nil
	}
	b := make([]byte, n)
	copy(b, head)
	if k, err := readAt(b[len(head):], int64(len(head))); int64(k) < n-int64(len(head)) {
		if err == nil || errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, err
	}
	return b, nil
}

// LastSequence returns the last sequence the stream applied for producer,
// and false if it remembers none (a new producer, or one forgotten).
// It waits for the writer's current group.
func (w *Writer) LastSequence(ctx context.Context, producer string) (uint64, bool, error) {
	r := &request{opts: AppendOptions{Producer: producer}, done: make(chan struct{}), query: true}
	if err := w.ask(ctx, r); err != nil {
		return 0, false, err
	}
	return r.last, r.known, nil
}

// Trim removes the stream's whole segments that end at or before
// position before (never the active one) and returns the stream's first
// stored position after it. A before past the committed position fails
// with an error wrapping messagevault.ErrOutOfRange. The trim is durable
// when it returns; a reader then gets a *messagevault.TrimmedError below
// the new start.
func (w *Writer) Trim(ctx context.Context, before int64) (int64, error) {
	r := &request{done: make(chan struct{}), trim: true, before: before}
	if err := w.ask(ctx, r); err != nil {
		return 0, err
	}
	return r.res.Position, nil
}

// ask hands r, a request that appends nothing, to the writer's loop and
// waits for its answer.
func (w *Writer) ask(ctx context.Context, r *request) error {
	if err := w.Err(); err != nil {
		return err
	}
	select {
	case w.reqs <- r:
	case <-ctx.Done():
		return ctx.Err()
	case <-w.closing:
		return fmt.Errorf("stream %q: %w", w.name, messagevault.ErrClosed)
	}
	select {
	case <-r.done:
	case <-ctx.Done():
		if r.state.CompareAndSwap(stateQueued, stateCancelled) {
			return ctx.Err()
		}
		<-r.done
	}
	return r.err
}

// Append validates msgs, appends them as one contiguous run of records and
// returns once they are durable. If any message is invalid nothing is
// appended and the error wraps messagevault.ErrInvalidMessage (or
// ErrEmptyBatch). Append may keep references to msgs until it returns.
//
// If ctx ends before the batch is taken into a group, Append returns
// ctx.Err() and the batch is never written. Once taken, Append waits for the
// group's outcome. A storage error then means the outcome is unknown, as
// with any remote log: the batch may be stored in full (a commit that landed
// but reported failure); it is never stored in part.
func (w *Writer) Append(ctx context.Context, msgs []messagevault.Message) (AppendResult, error) {
	return w.AppendWith(ctx, msgs, AppendOptions{})
}

// AppendWith is Append under the conditions of opts: exactly-once by
// producer sequence, and an expected position.
func (w *Writer) AppendWith(ctx context.Context, msgs []messagevault.Message, opts AppendOptions) (AppendResult, error) {
	for i := range msgs {
		if err := msgs[i].Validate(); err != nil {
			return AppendResult{}, fmt.Errorf("append to %q: message %d: %w", w.name, i, err)
		}
	}
	return w.AppendChecked(ctx, msgs, opts)
}

// AppendChecked is AppendWith for messages the caller has already
// validated (formats.DecodeTransfer checks sizes and checksums): it skips
// the crc pass. Sizes are still checked, so no message can make a bad
// record.
func (w *Writer) AppendChecked(ctx context.Context, msgs []messagevault.Message, opts AppendOptions) (AppendResult, error) {
	if opts.Producer != "" && !ValidProducer(opts.Producer) {
		return AppendResult{}, fmt.Errorf("append to %q: producer id %q: %w: want 1 to %d of A-Z a-z 0-9 . _ : -", w.name, opts.Producer, messagevault.ErrInvalidMessage, MaxProducerLen)
	}
	if len(msgs) == 0 {
		return AppendResult{}, fmt.Errorf("append to %q: %w", w.name, messagevault.ErrEmptyBatch)
	}
	size := 0
	for i := range msgs {
		if len(msgs[i].Key) > messagevault.MaxKeySize || len(msgs[i].Value) > messagevault.MaxValueSize {
			return AppendResult{}, fmt.Errorf("append to %q: message %d: %w: key %d bytes, value %d bytes", w.name, i, messagevault.ErrInvalidMessage, len(msgs[i].Key), len(msgs[i].Value))
		}
		size += formats.RecordSize(len(msgs[i].Key), len(msgs[i].Value))
	}
	if err := w.Err(); err != nil {
		return AppendResult{}, err
	}
	r := &request{msgs: msgs, opts: opts, size: size, done: make(chan struct{})}
	select {
	case w.reqs <- r:
	case <-ctx.Done():
		return AppendResult{}, ctx.Err()
	case <-w.closing:
		return AppendResult{}, fmt.Errorf("append to %q: %w", w.name, messagevault.ErrClosed)
	}
	if opts.Queued != nil {
		opts.Queued()
	}
	select {
	case <-r.done:
		return r.res, r.err
	case <-ctx.Done():
		if r.state.CompareAndSwap(stateQueued, stateCancelled) {
			return AppendResult{}, ctx.Err()
		}
	case <-w.done:
		if r.state.CompareAndSwap(stateQueued, stateCancelled) {
			return AppendResult{}, fmt.Errorf("append to %q: %w", w.name, messagevault.ErrClosed)
		}
	}
	<-r.done
	return r.res, r.err
}

// Position returns the committed position: the stream's length.
func (w *Writer) Position() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.committed
}

// Queued returns how many appends wait for the next group: the depth of
// the writer's queue, for metrics and back-pressure.
func (w *Writer) Queued() int { return len(w.reqs) }

// Committed returns the committed position and a channel that is closed at
// the next commit, or when the writer closes (after Close it is always
// closed; check Err). Tail followers wait on it instead of polling.
func (w *Writer) Committed() (int64, <-chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.committed, w.notify
}

// Err returns the error that stopped the writer for good (for example
// messagevault.ErrFenced), or nil while it can write.
func (w *Writer) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.fatal
}

// Close stops accepting appends, writes every append already queued,
// answers them, and closes the storage writer.
func (w *Writer) Close() error {
	w.once.Do(func() { close(w.closing) })
	<-w.done
	return w.closeErr
}

func (w *Writer) loop() {
	defer func() {
		w.waitIndex()
		err := w.pages.Close()
		w.mu.Lock()
		w.closeErr = err
		if w.fatal == nil {
			w.fatal = fmt.Errorf("stream %q: %w", w.name, messagevault.ErrClosed)
		}
		close(w.notify) // left closed: nothing will commit any more
		w.mu.Unlock()
		close(w.done)
	}()
	for {
		var committed <-chan struct{}
		if w.inflight != nil {
			committed = w.inflight.done
		}
		select {
		case first := <-w.reqs:
			w.commit(w.gather([]*request{first}, first.size))
		case <-committed:
			w.finish()
		case <-w.closing:
			// Drain: everything queued before Close is written.
			for {
				group := w.gather(nil, 0)
				if len(group) == 0 {
					w.finish()
					w.settle()
					return
				}
				w.commit(group)
			}
		}
	}
}

// gather adds queued requests to group, without waiting, until the group
// holds MaxGroupBytes of records or the queue is empty.
func (w *Writer) gather(group []*request, bytes int) []*request {
	for bytes < w.cfg.MaxGroupBytes {
		select {
		case r := <-w.reqs:
			group = append(group, r)
			bytes += r.size
		default:
			return group
		}
	}
	return group
}

// commit writes one group. Its requests are answered once its position
// is committed: at once, or, when the commit is in flight, by the
// commit's callback (or by finish, if it fails). Groups are answered in
// order.
func (w *Writer) commit(group []*request) {
	// Take the requests whose callers are still waiting.
	taken := group[:0]
	for _, r := range group {
		if r.state.CompareAndSwap(stateQueued, stateTaken) {
			taken = append(taken, r)
		}
	}
	if len(taken) == 0 {
		return
	}
	f := &flight{group: taken, start: time.Now()}
	err := w.write(f)
	if err == nil && f.done != nil {
		w.inflight = f
		select {
		case <-f.done: // committed already: a storage without CommitStarter
			w.finish()
		default:
		}
		return
	}
	// The group before answers first. This one was answered from the
	// state that group left, so it fails with it.
	if perr := w.finish(); perr != nil && err == nil {
		err = perr
	}
	w.answer(f, err)
}

// finish waits for the commit in flight, if any, answers its group, and
// returns its error: a group staged after it depends on it, and fails
// with it.
func (w *Writer) finish() error {
	f := w.inflight
	if f == nil {
		return nil
	}
	w.inflight = nil
	<-f.done
	f.cancel()
	if f.err == nil {
		return nil // answered when it committed
	}
	err := w.fail(fmt.Errorf("append to %q: %w", w.name, f.err))
	w.answer(f, err)
	return err
}

// answer reports f's outcome to the observer and answers its requests.
func (w *Writer) answer(f *flight, err error) {
	taken := f.group
	if o := w.cfg.Observer; o != nil {
		if err != nil {
			o.Failed(w.name, err)
		} else {
			msgs, bytes := 0, 0
			for _, r := range taken {
				if r.res.Duplicate {
					o.Duplicate(w.name)
				}
				if !r.skip {
					msgs += len(r.msgs)
					bytes += r.size
				}
			}
			if msgs > 0 {
				o.Committed(w.name, len(taken), msgs, bytes, time.Since(f.start))
			}
		}
	}
	for _, r := range taken {
		if err != nil && !r.trim {
			// A trim in the group has its own answer: it is done (or
			// failed) whatever becomes of the appends.
			r.res, r.err = AppendResult{}, err
		} else if r.dupOf != nil {
			r.res.Offsets, r.res.Position = slices.Clone(r.dupOf.res.Offsets), r.dupOf.res.Position
		}
		close(r.done)
	}
}

// write stages f's group and writes it. It returns with the group's
// position commit in flight (f.done set), or done, or with nothing to
// commit (f.done nil).
func (w *Writer) write(f *flight) (err error) {
	group := f.group
	if err := w.Err(); err != nil {
		return err
	}
	for _, r := range group {
		if r.trim || r.query {
			// A trim commits the position itself, and a query answers
			// what is durable: both wait for the commit in flight.
			w.finish()
			break
		}
	}
	if w.recover {
		// Every commit in flight is answered before recovery.
		w.finish()
	}
	if err := w.Err(); err != nil {
		return err
	}
	ctx, cancel, err := w.opContext()
	if err != nil {
		return err
	}
	defer func() {
		if f.done == nil || err != nil {
			cancel()
		}
	}()
	if w.recover {
		if err := w.resolve(ctx); err != nil {
			return err
		}
	}
	evicted := w.producers.evicted
	defer func() {
		clear(w.inGroup)
		if err != nil {
			// The table may hold this group's sequences: reload it
			// (and the rest) from storage before the next group.
			w.recover = true
		} else if n := w.producers.evicted - evicted; n > 0 && w.cfg.Observer != nil {
			w.cfg.Observer.Evicted(w.name, n)
		}
	}()
	pos := w.tail.Position()
	ms := max(formats.MillisSinceEpoch(w.cfg.Now()), w.lastMs)
	w.lastMs = ms
	var (
		lastOff  int64 = -1
		lastID   formats.ID
		withSeqs bool
	)
	for _, r := range group {
		if r.query {
			r.skip = true
			r.last, r.known = w.producers.last(r.opts.Producer)
			continue
		}
		if r.trim {
			r.skip = true
			if r.res.Position, r.err = w.trim(ctx, r.before); r.err != nil && w.Err() != nil {
				w.tail.Discard()
				return r.err
			}
			continue
		}
		if r.opts.Producer != "" {
			skip, err := w.checkSequence(ctx, r)
			if err != nil {
				w.tail.Discard()
				return err
			}
			if skip {
				continue
			}
		}
		if cur := w.tail.End(); r.opts.Expect && r.opts.ExpectPosition != cur {
			r.skip = true
			r.err = fmt.Errorf("append to %q: %w", w.name, &PositionMismatchError{Expected: r.opts.ExpectPosition, Position: cur, Err: messagevault.ErrPositionMismatch})
			continue
		}
		r.res.Offsets = make([]int64, len(r.msgs))
		for i := range r.msgs {
			cur := w.tail.End()
			if cur > formats.MaxIDOffset {
				w.tail.Discard()
				return fmt.Errorf("append to %q: stream reached the largest position an id can hold: %w", w.name, messagevault.ErrOutOfRange)
			}
			id := formats.NewID(ms, cur, idCounter.Add(1))
			if _, err := w.tail.AppendRecord(id, r.msgs[i]); err != nil {
				w.tail.Discard()
				return fmt.Errorf("append to %q: %w", w.name, err)
			}
			r.res.Offsets[i] = cur
			lastOff, lastID = cur, id
			w.index.note(cur, ms)
		}
		if p := r.opts.Producer; p != "" {
			withSeqs = true
			w.producers.add(p, applied{seq: r.opts.Sequence, start: r.res.Offsets[0], end: w.tail.End(), count: uint32(len(r.msgs))})
			if w.inGroup == nil {
				w.inGroup = map[string]*request{}
			}
			w.inGroup[seqKey(p, r.opts.Sequence)] = r
		}
	}
	end := w.tail.End()
	for _, r := range group {
		if r.skip && !r.trim && r.res.Position < pos {
			r.res.Position = pos
		}
	}
	if lastOff < 0 {
		return nil // nothing to append: every request was answered as is
	}
	var extra []byte
	slot := w.slot
	var saveSlot func(context.Context) error
	if withSeqs {
		// The table as of end rides in the same page write, past the
		// group's records (bytes past the position are not part of the
		// stream): it is durable with the records, so a crash that
		// keeps the position but loses the state slot written below
		// still finds it (see loadProducers).
		w.snap = w.producers.encode(w.snap, snapshot{pos: end, lastOff: lastOff, lastID: lastID})
		extra = w.snap
		// And to the state slot that does not hold the table as of pos,
		// durable with the commit at the latest: the next group's pages
		// overwrite the copy past the records.
		slot = 1 - max(w.slot, 0)
		saveSlot = func(ctx context.Context) error {
			if err := w.pages.WriteState(ctx, slot, w.snap); err != nil {
				return fmt.Errorf("write producer table: %w", err)
			}
			return nil
		}
	}
	beforeFlush := func(ctx context.Context) error {
		// The pages are written. The table goes to the slot that holds
		// the table as of the end of the group before the previous one,
		// which may be overwritten only once the previous group is
		// committed: if its commit failed, this group fails too.
		if err := w.finish(); err != nil {
			return fmt.Errorf("an earlier group failed: %w", err)
		}
		if saveSlot != nil {
			if err := saveSlot(ctx); err != nil {
				return err
			}
		}
		// The index holds hints: a failed index write fails nothing.
		// On a pipelined storage it runs beside the commit and the
		// next group's pages, and nothing waits for it but the next
		// index write.
		if !w.pipelined {
			w.index.write(ctx, w.pages)
			return nil
		}
		w.waitIndex()
		if iw := w.index.prepare(); iw != nil {
			w.indexing = iw
			// Not cancelled with the group, but bounded by the same
			// deadline (the leader's lease included).
			ictx := context.WithoutCancel(ctx)
			if d, ok := ctx.Deadline(); ok {
				var cancel context.CancelFunc
				ictx, cancel = context.WithDeadline(ictx, d)
				go func() {
					iw.send(ictx, w.pages)
					cancel()
				}()
			} else {
				go iw.send(ictx, w.pages)
			}
		}
		return nil
	}
	startCommit := func(ctx context.Context, pos int64) error {
		f.done, f.end, f.cancel = make(chan struct{}), pos, cancel
		messagevault.StartCommit(ctx, w.pages, pos, func(err error) {
			// A group that committed is answered at once, even while
			// this writer's goroutine writes the next group's pages;
			// commits land one after another, so answers stay in
			// order. A failure is left to finish, which recovers.
			f.err = err
			if err == nil {
				w.publish(f.end)
				w.answer(f, nil)
			}
			close(f.done)
		})
		return nil
	}
	// The answers, before the commit starts: it may answer at once. A
	// group that fails is answered with its error instead.
	for _, r := range group {
		if !r.skip || r.dupOf != nil {
			r.res.Position = end
		}
	}
	if err := w.tail.CommitWith(ctx, extra, beforeFlush, startCommit); err != nil {
		return w.fail(fmt.Errorf("append to %q: %w", w.name, err))
	}
	// In flight or durable: the position is published once it is.
	w.slot = slot
	return nil
}

// trim removes the segments that end at or before before, and returns
// the stream's first stored position. A storage error that fences the
// writer stops it.
func (w *Writer) trim(ctx context.Context, before int64) (int64, error) {
	if pos := w.tail.Position(); before > pos {
		return 0, fmt.Errorf("trim %q before %d: %w: the stream's position is %d", w.name, before, messagevault.ErrOutOfRange, pos)
	}
	e, err := w.pages.Extent(ctx)
	if err != nil {
		return 0, w.failTrim(fmt.Errorf("trim %q: %w", w.name, err))
	}
	segs, err := w.pages.Segments(ctx)
	if err != nil {
		return 0, w.failTrim(fmt.Errorf("trim %q: %w", w.name, err))
	}
	start := e.Start
	for _, s := range segs {
		if s <= before {
			start = max(start, s)
		}
	}
	if start <= e.Start {
		return e.Start, nil
	}
	if err := w.pages.Trim(ctx, start); err != nil {
		return 0, w.failTrim(fmt.Errorf("trim %q before %d: %w", w.name, before, err))
	}
	if o := w.cfg.Observer; o != nil {
		o.Trimmed(w.name, start-e.Start)
	}
	return start, nil
}

// failTrim stops the writer for good if err says another writer owns the
// stream; other errors leave the stream as it was or trimmed, both
// consistent, and fail only the trim.
func (w *Writer) failTrim(err error) error {
	if errors.Is(err, messagevault.ErrFenced) || errors.Is(err, messagevault.ErrClosed) {
		return w.fail(err)
	}
	// The outcome is unknown (the new start may be recorded): the next
	// group refences and reloads first, as after a failed group.
	w.recover = true
	return err
}

// opContext returns the context of one group's storage calls: bounded by
// OpTimeout and by the leader's deadline. It fails with ErrNotLeader once
// the deadline has passed.
func (w *Writer) opContext() (context.Context, context.CancelFunc, error) {
	deadline := time.Now().Add(w.cfg.OpTimeout)
	if w.cfg.Deadline != nil {
		d := w.cfg.Deadline()
		if !time.Now().Before(d) {
			return nil, nil, fmt.Errorf("append to %q: %w", w.name, messagevault.ErrNotLeader)
		}
		if d.Before(deadline) {
			deadline = d
		}
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	return ctx, cancel, nil
}

// checkSequence looks r's producer sequence up in the table. It returns
// true, with r answered, for a duplicate (same offsets as the first time)
// or a sequence too old to tell; false for a new batch. An error is a
// storage error reading a duplicate's offsets back.
func (w *Writer) checkSequence(ctx context.Context, r *request) (bool, error) {
	v, a := w.producers.check(r.opts.Producer, r.opts.Sequence)
	switch v {
	case verdictDuplicate:
		r.skip = true
		r.res.Duplicate = true
		if orig := w.inGroup[seqKey(r.opts.Producer, r.opts.Sequence)]; orig != nil {
			r.dupOf = orig
			return true, nil
		}
		if orig := w.inflightRequest(r.opts.Producer, r.opts.Sequence); orig != nil {
			// Applied by the group whose commit is in flight: its
			// offsets are known, and its records may lie in a segment
			// that is not part of the stream until that commit lands.
			// This group is answered after it, and fails if it fails.
			r.res.Offsets = slices.Clone(orig.res.Offsets)
			return true, nil
		}
		offsets, err := w.offsetsOf(ctx, a)
		if errors.Is(err, messagevault.ErrTrimmed) {
			// Applied, but its records are trimmed away: this request
			// alone is answered so (it was stored; its offsets are
			// gone), not the group.
			r.err = fmt.Errorf("append to %q: producer %q sequence %d was applied, but its records were trimmed since: %w", w.name, r.opts.Producer, r.opts.Sequence, err)
			return true, nil
		}
		if err != nil {
			return true, fmt.Errorf("append to %q: read back the offsets of producer %q sequence %d: %w", w.name, r.opts.Producer, r.opts.Sequence, err)
		}
		r.res.Offsets = offsets
		return true, nil
	case verdictTooOld:
		last, _ := w.producers.last(r.opts.Producer)
		r.skip = true
		r.err = fmt.Errorf("append to %q: producer %q sequence %d: %w: its last applied sequence is %d, and the stream no longer remembers whether %d was applied (it keeps the last %d per producer)",
			w.name, r.opts.Producer, r.opts.Sequence, messagevault.ErrSequenceTooOld, last, r.opts.Sequence, SequencesPerProducer)
		return true, nil
	}
	if r.opts.Follows {
		if last, known := w.producers.last(r.opts.Producer); !known || last != r.opts.Previous {
			r.skip = true
			was := "none"
			if known {
				was = fmt.Sprint(last)
			}
			r.err = fmt.Errorf("append to %q: producer %q sequence %d was to follow %d: %w (the last applied is %s)",
				w.name, r.opts.Producer, r.opts.Sequence, r.opts.Previous, messagevault.ErrSequenceGap, was)
			return true, nil
		}
	}
	return false, nil
}

// inflightRequest returns the request of the group in flight that
// appended producer's batch seq, or nil.
func (w *Writer) inflightRequest(producer string, seq uint64) *request {
	if w.inflight == nil {
		return nil
	}
	for _, r := range w.inflight.group {
		if !r.skip && r.opts.Producer == producer && r.opts.Sequence == seq {
			return r
		}
	}
	return nil
}

func seqKey(producer string, seq uint64) string { return fmt.Sprintf("%s\x00%d", producer, seq) }

// offsetsOf reads back the records of an applied batch and returns their
// offsets: the answer a duplicate gets.
func (w *Writer) offsetsOf(ctx context.Context, a applied) ([]int64, error) {
	b := make([]byte, a.end-a.start)
	if n, err := w.pages.ReadAt(ctx, b, a.start); n < len(b) {
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	offsets := make([]int64, 0, a.count)
	for off := 0; off < len(b); {
		_, n, err := formats.DecodeRecord(b[off:])
		if err != nil {
			return nil, fmt.Errorf("record at %d: %w", a.start+int64(off), err)
		}
		offsets = append(offsets, a.start+int64(off))
		off += n
	}
	if len(offsets) != int(a.count) {
		return nil, fmt.Errorf("found %d records where %d were applied: %w", len(offsets), a.count, messagevault.ErrCorrupt)
	}
	return offsets, nil
}

// resolve settles a group that failed with an unknown outcome: it cuts
// off every request of the failed group that may still land late
// (Refence), reloads the position, tail page and producer table from
// storage, and commits again a position that landed without being
// confirmed, so that nobody sees it before it is durable.
func (w *Writer) resolve(ctx context.Context) error {
	w.waitIndex() // the index write in flight lands before the reload
	before := w.Position()
	if err := w.pages.Refence(ctx); err != nil {
		return w.fail(fmt.Errorf("append to %q: recover after an earlier failure: %w", w.name, err))
	}
	if err := w.load(ctx); err != nil {
		return w.fail(fmt.Errorf("append to %q: recover after an earlier failure: %w", w.name, err))
	}
	if pos := w.tail.Position(); pos != before {
		if err := w.pages.CommitPosition(ctx, pos); err != nil {
			return w.fail(fmt.Errorf("append to %q: recommit position %d: %w", w.name, pos, err))
		}
		w.publish(pos)
	}
	return nil
}

// settle resolves, before the writer closes, a failed group left
// unresolved, so that a position that landed unconfirmed is confirmed (or
// found not to have landed) while this writer still owns the stream.
func (w *Writer) settle() {
	w.finish()
	if !w.recover || w.Err() != nil {
		return
	}
	ctx, cancel, err := w.opContext()
	if err != nil {
		return
	}
	defer cancel()
	w.resolve(ctx)
}

// waitIndex waits for the index write in flight, if any, and takes its
// outcome.
func (w *Writer) waitIndex() {
	if iw := w.indexing; iw != nil {
		<-iw.done
		w.index.apply(iw)
		w.indexing = nil
	}
}

// publish makes pos the committed position seen by Position and Committed,
// waking tail followers if it moved.
func (w *Writer) publish(pos int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if pos == w.committed {
		return
	}
	w.committed = pos
	close(w.notify)
	w.notify = make(chan struct{})
}

// fail handles a storage error in the middle of a group. Nothing of the
// group is acknowledged. A fenced or closed storage writer stops the Writer
// for good; any other error makes the next group reload the position and
// tail page from storage first, so that a half-done group (written pages,
// maybe even a committed position) is resolved by what storage holds.
func (w *Writer) fail(err error) error {
	w.tail.Discard()
	w.recover = true
	if errors.Is(err, messagevault.ErrFenced) || errors.Is(err, messagevault.ErrClosed) {
		w.mu.Lock()
		if w.fatal == nil {
			w.fatal = err
		}
		w.mu.Unlock()
	}
	return err
}

func roundUp(n int64) int64 { return roundUpTo(n, messagevault.PageSize) }

func roundUpTo(n, step int64) int64 { return (n + step - 1) / step * step }
