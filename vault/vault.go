// Package vault owns the streams of one storage: it opens a stream's writer
// on first use, routes appends to it, hands out readers, lists streams with
// their positions, closes writers that have been idle a while, and drains
// everything on Close. It is what the HTTP server and the in-process bench
// stand on.
package vault

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/stream"
)

// openTimeout bounds opening a stream's writer.
const openTimeout = time.Minute

// DefaultIdleTimeout is how long a stream's writer stays open without
// appends before it is closed and its buffers released.
const DefaultIdleTimeout = 2 * time.Minute

// Config tunes a Vault. Zero fields take the defaults.
type Config struct {
	// Writer configures each stream's writer.
	Writer stream.WriterConfig
	// Reader configures readers handed out by Reader (its Wake is
	// ignored: followers wait in Wait).
	Reader stream.ReaderConfig
	// IdleTimeout closes writers idle for this long. Default
	// DefaultIdleTimeout; negative keeps writers open.
	IdleTimeout time.Duration
	// Logger receives the vault's logs. Default: discard.
	Logger *slog.Logger
	// Retention removes old segments in the background. Default: none.
	Retention Retention
}

// Vault is the set of streams of one storage.
type Vault struct {
	storage messagevault.Storage
	cfg     Config
	log     *slog.Logger

	mu      sync.Mutex
	writers map[string]*entry
	closed  bool

	stop chan struct{}
	wg   sync.WaitGroup
}

type entry struct {
	ready chan struct{} // closed once w or err is set
	w     *stream.Writer
	err   error
	last  time.Time // last use, under Vault.mu
	users int       // appends in progress, under Vault.mu
	// closing is set, under Vault.mu, while the writer is being closed
	// and closed when it is; the entry then leaves the map.
	closing chan struct{}
}

// StreamInfo describes one stream.
type StreamInfo struct {
	Name string
	// Position is the committed position: the stream's length.
	Position int64
	// Start is the first position still stored (0 until trimmed).
	Start int64
}

// New returns a vault over storage and starts its idle sweeper.
func New(storage messagevault.Storage, cfg Config) *Vault {
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	v := &Vault{storage: storage, cfg: cfg, log: cfg.Logger, writers: map[string]*entry{}, stop: make(chan struct{})}
	if cfg.IdleTimeout > 0 {
		v.wg.Add(1)
		go v.sweep()
	}
	if cfg.Retention.On() {
		v.wg.Add(1)
		go v.retain()
	}
	return v
}

// Storage returns the vault's storage.
func (v *Vault) Storage() messagevault.Storage { return v.storage }

// acquire returns the open writer of stream (opening it if needed) and
// marks it in use; release must follow.
func (v *Vault) acquire(ctx context.Context, name string) (*entry, error) {
	for {
		v.mu.Lock()
		if v.closed {
			v.mu.Unlock()
			return nil, fmt.Errorf("stream %q: %w", name, messagevault.ErrClosed)
		}
		e := v.writers[name]
		if e == nil {
			e = &entry{ready: make(chan struct{}), users: 1}
			v.writers[name] = e
			v.mu.Unlock()
			// Others may wait for this open: one caller giving up must
			// not fail them.
			octx, cancel := context.WithTimeout(context.WithoutCancel(ctx), openTimeout)
			e.w, e.err = v.open(octx, name)
			cancel()
			close(e.ready)
			if e.err != nil {
				v.mu.Lock()
				e.users--
				if v.writers[name] == e {
					delete(v.writers, name)
				}
				v.mu.Unlock()
				return nil, e.err
			}
			return e, nil
		}
		if e.closing != nil {
			// Being closed (idle, or stopped for good): wait, then open anew.
			closing := e.closing
			v.mu.Unlock()
			select {
			case <-closing:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		e.users++
		v.mu.Unlock()
		select {
		case <-e.ready:
		case <-ctx.Done():
			v.release(e)
			return nil, ctx.Err()
		}
		if e.err != nil {
			v.release(e)
			return nil, e.err
		}
		if e.w.Err() != nil {
			// The writer stopped for good (fenced, storage writer closed):
			// retire it and open a fresh one, which starts from what
			// storage holds.
			v.release(e)
			v.retire(name, e, false)
			continue
		}
		return e, nil
	}
}

// retire closes e's writer and removes it from the vault; appends that
// arrive meanwhile wait and then open a fresh writer. With onlyIdle it
// does so only if e is still unused and idle.
func (v *Vault) retire(name string, e *entry, onlyIdle bool) {
	v.mu.Lock()
	if e.closing != nil || v.writers[name] != e ||
		(onlyIdle && (e.users > 0 || time.Since(e.last) <= v.cfg.IdleTimeout)) {
		v.mu.Unlock()
		return
	}
	e.closing = make(chan struct{})
	v.mu.Unlock()
	if err := e.w.Close(); err != nil {
		v.log.Debug("closing stream writer", "stream", name, "err", err)
	}
	v.mu.Lock()
	if v.writers[name] == e {
		delete(v.writers, name)
	}
	close(e.closing)
	v.mu.Unlock()
}

func (v *Vault) release(e *entry) {
	v.mu.Lock()
	e.users--
	e.last = time.Now()
	v.mu.Unlock()
}

// whileLeading bounds ctx by the leader's deadline (Config.Writer's), and
// refuses with ErrNotLeader once it has passed: what changes a stream's
// storage must not happen on a node whose leadership has lapsed.
func (v *Vault) whileLeading(ctx context.Context, what string) (context.Context, context.CancelFunc, error) {
	d := v.cfg.Writer.Deadline
	if d == nil {
		return ctx, func() {}, nil
	}
	till := d()
	if !time.Now().Before(till) {
		return nil, nil, fmt.Errorf("%s: %w", what, messagevault.ErrNotLeader)
	}
	ctx, cancel := context.WithDeadline(ctx, till)
	return ctx, cancel, nil
}

func (v *Vault) open(ctx context.Context, name string) (*stream.Writer, error) {
	// Opening a writer takes the stream over (on Azure it gives the blobs
	// new ETags, fencing whoever wrote before): a node whose leadership
	// has lapsed must not, or it would fence the real leader.
	ctx, cancel, err := v.whileLeading(ctx, "open stream "+strconv.Quote(name))
	if err != nil {
		return nil, err
	}
	defer cancel()
	pw, err := v.storage.OpenWriter(ctx, name)
	if err != nil {
		return nil, err
	}
	w, err := stream.OpenWriter(ctx, name, pw, v.cfg.Writer)
	if err != nil {
		pw.Close()
		return nil, err
	}
	v.log.Debug("stream writer opened", "stream", name, "position", w.Position())
	return w, nil
}

// DeleteStream deletes stream name (normalized first) and its data. Its
// writer is closed first: appends it had already taken are written (and
// deleted with the stream). Appends that arrive meanwhile wait, and then
// start the stream anew at position 0. It fails with ErrNotDeletable on a
// storage that cannot delete, and ErrStreamNotFound for no such stream.
func (v *Vault) DeleteStream(ctx context.Context, name string) error {
	name, err := messagevault.NormalizeStreamName(name)
	if err != nil {
		return err
	}
	d, ok := v.storage.(messagevault.Deleter)
	if !ok {
		return fmt.Errorf("delete %q: %w", name, messagevault.ErrNotDeletable)
	}
	what := "delete " + strconv.Quote(name)
	ctx, cancel, err := v.whileLeading(ctx, what)
	if err != nil {
		return err
	}
	defer cancel()
	// hold stands in the writers' map while the stream is deleted: an
	// entry being closed, which appends wait for.
	hold := &entry{ready: make(chan struct{}), closing: make(chan struct{})}
	close(hold.ready)
	for placed := false; !placed; {
		v.mu.Lock()
		if v.closed {
			v.mu.Unlock()
			return fmt.Errorf("%s: %w", what, messagevault.ErrClosed)
		}
		e := v.writers[name]
		if e == nil {
			v.writers[name] = hold
			v.mu.Unlock()
			break
		}
		closing := e.closing
		v.mu.Unlock()
		if closing != nil {
			select {
			case <-closing:
			case <-ctx.Done():
				return ctx.Err()
			}
			continue
		}
		// An open (or opening) writer: put hold in its place, then close
		// it; appends waiting for it find hold.
		select {
		case <-e.ready:
		case <-ctx.Done():
			return ctx.Err()
		}
		v.mu.Lock()
		switch {
		case v.writers[name] != e || e.closing != nil:
		case e.err != nil:
			v.mu.Unlock()
			time.Sleep(time.Millisecond) // its opener is removing it
			continue
		default:
			e.closing = make(chan struct{})
			v.writers[name] = hold
			placed = true
		}
		v.mu.Unlock()
		if placed {
			if err := e.w.Close(); err != nil {
				v.log.Debug("closing stream writer", "stream", name, "err", err)
			}
			close(e.closing)
		}
	}
	defer func() {
		v.mu.Lock()
		if v.writers[name] == hold {
			delete(v.writers, name)
		}
		close(hold.closing)
		v.mu.Unlock()
	}()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if dl := v.cfg.Writer.Deadline; dl != nil && !time.Now().Before(dl()) {
		return fmt.Errorf("%s: %w", what, messagevault.ErrNotLeader) // lapsed while the writer closed
	}
	return d.DeleteStream(ctx, name)
}

// Append appends msgs to stream name (normalized first), creating the
// stream on first use, and returns once they are durable.
func (v *Vault) Append(ctx context.Context, name string, msgs []messagevault.Message) (stream.AppendResult, error) {
	return v.append(ctx, name, func(w *stream.Writer) (stream.AppendResult, error) {
		return w.AppendWith(ctx, msgs, stream.AppendOptions{})
	})
}

// CreateStream creates stream name (normalized first), empty, as its
// first append would, and reports whether it was new: false for a stream
// that storage already holds. Two creations at once may both report a
// new stream.
func (v *Vault) CreateStream(ctx context.Context, name string) (created bool, err error) {
	name, err = messagevault.NormalizeStreamName(name)
	if err != nil {
		return false, err
	}
	pr, err := v.storage.OpenReader(ctx, name)
	if err == nil {
		pr.Close()
		return false, nil
	}
	if !errors.Is(err, messagevault.ErrStreamNotFound) {
		return false, fmt.Errorf("create %q: %w", name, err)
	}
	_, err = v.append(ctx, name, func(*stream.Writer) (stream.AppendResult, error) { return stream.AppendResult{}, nil })
	return err == nil, err
}

// AppendChecked is Append under the conditions of opts, for messages
// whose sizes and checksums the caller has already checked
// (formats.DecodeTransfer does): it skips the second check.
func (v *Vault) AppendChecked(ctx context.Context, name string, msgs []messagevault.Message, opts stream.AppendOptions) (stream.AppendResult, error) {
	return v.append(ctx, name, func(w *stream.Writer) (stream.AppendResult, error) {
		return w.AppendChecked(ctx, msgs, opts)
	})
}

// LastSequence returns the last sequence stream name applied for
// producer, and false if it remembers none.
func (v *Vault) LastSequence(ctx context.Context, name, producer string) (seq uint64, known bool, err error) {
	_, err = v.append(ctx, name, func(w *stream.Writer) (stream.AppendResult, error) {
		var err error
		seq, known, err = w.LastSequence(ctx, producer)
		return stream.AppendResult{}, err
	})
	return seq, known, err
}

// Trim removes the whole segments of stream name that end at or before
// position before (never the active one) and returns the first position
// still stored. A stream never written fails with ErrStreamNotFound (it is
// not created), a before past the committed position with ErrOutOfRange.
func (v *Vault) Trim(ctx context.Context, name string, before int64) (int64, error) {
	name, err := messagevault.NormalizeStreamName(name)
	if err != nil {
		return 0, err
	}
	if before < 0 {
		return 0, fmt.Errorf("trim %q before %d: %w", name, before, messagevault.ErrOutOfRange)
	}
	pr, err := v.storage.OpenReader(ctx, name)
	if err != nil {
		return 0, err
	}
	pr.Close()
	var start int64
	_, err = v.append(ctx, name, func(w *stream.Writer) (stream.AppendResult, error) {
		var err error
		start, err = w.Trim(ctx, before)
		return stream.AppendResult{}, err
	})
	return start, err
}

// append runs do on stream name's writer, opening it if needed.
func (v *Vault) append(ctx context.Context, name string, do func(*stream.Writer) (stream.AppendResult, error)) (stream.AppendResult, error) {
	name, err := messagevault.NormalizeStreamName(name)
	if err != nil {
		return stream.AppendResult{}, err
	}
	e, err := v.acquire(ctx, name)
	if err != nil {
		return stream.AppendResult{}, err
	}
	defer v.release(e)
	return do(e.w)
}

// Committed returns the committed position of stream name and a channel
// closed at its next commit, if this vault has its writer open; ok is
// false otherwise.
func (v *Vault) Committed(name string) (pos int64, changed <-chan struct{}, ok bool) {
	v.mu.Lock()
	e := v.writers[name]
	if e != nil && e.closing != nil {
		e = nil
	}
	v.mu.Unlock()
	if e == nil {
		return 0, nil, false
	}
	select {
	case <-e.ready:
	default:
		return 0, nil, false
	}
	if e.err != nil || e.w.Err() != nil {
		return 0, nil, false // stopped (fenced, closed): storage knows better
	}
	pos, changed = e.w.Committed()
	return pos, changed, true
}

// Wait returns when stream name's committed position may have moved past
// pos, or when ctx ends. It is the one place readers wait for new
// records: a stream this vault writes wakes it at its next commit (or
// after 30 s, which only bounds the unexpected); for a stream written
// elsewhere, or on a nil Vault (a node that does not write), it returns
// after poll, for the caller to read the position again. Bound a wait by
// ctx's deadline.
func (v *Vault) Wait(ctx context.Context, name string, pos int64, poll time.Duration) {
	if v == nil {
		sleep(ctx, poll)
		return
	}
	if cur, changed, ok := v.Committed(name); ok {
		if cur > pos {
			return
		}
		// The channel closes at the next commit and when the writer
		// closes; the long timer only bounds the unexpected.
		t := time.NewTimer(max(poll, 30*time.Second))
		defer t.Stop()
		select {
		case <-changed:
		case <-ctx.Done():
		case <-t.C:
		}
		return
	}
	sleep(ctx, poll)
}

// sleep returns after d or when ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// Reader opens a reader of stream name; close releases it. cfg overrides
// the vault's reader configuration where its fields are set; without a Wake
// function, followers wait in Wait. It returns an
// error wrapping messagevault.ErrStreamNotFound for a stream never written.
//
// While this vault writes the stream, the reader sees the writer's
// committed position, never more: a position that storage already shows
// but whose fdatasync has not returned is not yet acknowledged.
func (v *Vault) Reader(ctx context.Context, name string, cfg stream.ReaderConfig) (r *stream.Reader, close func() error, err error) {
	name, err = messagevault.NormalizeStreamName(name)
	if err != nil {
		return nil, nil, err
	}
	pr, err := v.storage.OpenReader(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	if cfg.ChunkSize == 0 {
		cfg.ChunkSize = v.cfg.Reader.ChunkSize
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = v.cfg.Reader.PollInterval
	}
	if cfg.Wake == nil {
		poll := cfg.PollInterval
		if poll <= 0 {
			poll = stream.DefaultPollInterval
		}
		cfg.Wake = func(ctx context.Context, pos int64) { v.Wait(ctx, name, pos, poll) }
	}
	return stream.NewReader(name, committedReader{pr, v, name}, cfg), pr.Close, nil
}

// committedReader clamps a storage reader's position to the committed
// position of this vault's writer, when it has one open.
type committedReader struct {
	messagevault.PageReader
	v    *Vault
	name string
}

func (r committedReader) Position(ctx context.Context) (int64, error) {
	e, err := r.Extent(ctx)
	return e.Position, err
}

func (r committedReader) Extent(ctx context.Context) (messagevault.Extent, error) {
	e, err := r.PageReader.Extent(ctx)
	if err != nil {
		return e, err
	}
	if c, _, ok := r.v.Committed(r.name); ok && c < e.Position {
		e.Position = c
	}
	return e, nil
}

// Streams lists every stream with its committed position, sorted by name.
func (v *Vault) Streams(ctx context.Context) ([]StreamInfo, error) {
	return list(ctx, v.storage, v.Committed)
}

// List lists every stream of storage with its committed position, sorted
// by name, as a node that does not write sees them.
func List(ctx context.Context, storage messagevault.Storage) ([]StreamInfo, error) {
	return list(ctx, storage, func(string) (int64, <-chan struct{}, bool) { return 0, nil, false })
}

func list(ctx context.Context, storage messagevault.Storage, committed func(string) (int64, <-chan struct{}, bool)) ([]StreamInfo, error) {
	names, err := storage.Streams(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]StreamInfo, 0, len(names))
	for _, n := range names {
		pr, err := storage.OpenReader(ctx, n)
		if err != nil {
			if errors.Is(err, messagevault.ErrStreamNotFound) {
				continue
			}
			return nil, err
		}
		e, err := pr.Extent(ctx)
		pr.Close()
		if err != nil {
			return nil, fmt.Errorf("stream %q: %w", n, err)
		}
		info := StreamInfo{Name: n, Position: e.Position, Start: e.Start}
		if pos, _, ok := committed(n); ok && pos < e.Position {
			info.Position = pos
		}
		out = append(out, info)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Positions returns the committed positions of the streams whose writers
// are open.
func (v *Vault) Positions() map[string]int64 {
	v.mu.Lock()
	entries := make(map[string]*entry, len(v.writers))
	for n, e := range v.writers {
		entries[n] = e
	}
	v.mu.Unlock()
	out := make(map[string]int64, len(entries))
	for n := range entries {
		if pos, _, ok := v.Committed(n); ok {
			out[n] = pos
		}
	}
	return out
}

// OpenWriters returns how many stream writers are open.
func (v *Vault) OpenWriters() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.writers)
}

// sweep closes writers idle for longer than IdleTimeout.
func (v *Vault) sweep() {
	defer v.wg.Done()
	t := time.NewTicker(max(v.cfg.IdleTimeout/4, 10*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-v.stop:
			return
		case <-t.C:
		}
		var idle []*entry
		var names []string
		v.mu.Lock()
		for name, e := range v.writers {
			select {
			case <-e.ready:
			default:
				continue
			}
			if e.users == 0 && e.err == nil && e.closing == nil && time.Since(e.last) > v.cfg.IdleTimeout {
				idle = append(idle, e)
				names = append(names, name)
			}
		}
		v.mu.Unlock()
		for i, e := range idle {
			v.retire(names[i], e, true)
			v.log.Debug("idle stream writer closed", "stream", names[i])
		}
		if len(idle) > 0 {
			// Hand the closed writers' buffers back to the operating
			// system now, rather than whenever the runtime gets to it: an
			// idle server should look idle.
			debug.FreeOSMemory()
		}
	}
}

// Close stops accepting appends, drains and closes every writer (appends
// already queued are written and answered), and stops the sweeper. It does
// not close the storage.
func (v *Vault) Close() error {
	v.mu.Lock()
	if v.closed {
		v.mu.Unlock()
		return nil
	}
	v.closed = true
	entries := make([]*entry, 0, len(v.writers))
	for _, e := range v.writers {
		entries = append(entries, e)
	}
	v.writers = map[string]*entry{}
	v.mu.Unlock()
	close(v.stop)
	v.wg.Wait()
	var errs []error
	for _, e := range entries {
		<-e.ready
		if e.w != nil {
			errs = append(errs, e.w.Close())
		}
	}
	return errors.Join(errs...)
}
