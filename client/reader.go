package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"iter"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/file"
	"github.com/messagevault/messagevault/formats"
	"github.com/messagevault/messagevault/stream"
)

// ReadMessage is a message read back, reassembled and decompressed.
type ReadMessage struct {
	// Offset is the position of the message's first record; Next the
	// position after its last one (where to continue from).
	Offset, Next int64
	// ID is the id of the message's first record.
	ID    formats.ID
	Key   []byte
	Value []byte
}

// source is what a Reader reads records from: storage (stream.Reader) or
// the server's read route.
type source interface {
	Position(ctx context.Context) (int64, error)
	Extent(ctx context.Context) (messagevault.Extent, error)
	Records(ctx context.Context, from, to int64) iter.Seq2[formats.Record, error]
	FindTime(ctx context.Context, t time.Time) (int64, error)
	// MessageStart returns where the message holding the record at at
	// starts: at, unless at is inside a value split into records.
	MessageStart(ctx context.Context, at int64) (int64, error)
}

// Reader reads one stream.
type Reader struct {
	c      *Client // nil when reading a directory without a server
	stream string
	src    source
	closer func() error
	// ViaServer is true when storage could not be reached and the reader
	// falls back to the server's read route.
	ViaServer bool
	// PollInterval is how often Follow reads the position when it cannot
	// long-poll the server. Default 200 ms.
	PollInterval time.Duration
	// MaxValueBytes bounds a message's value once reassembled and
	// decompressed; a larger one is a MessageError (an LZ4 bomb cannot
	// exhaust the reader's memory). Default DefaultMaxValueBytes.
	MaxValueBytes int
	// RetryFor bounds how long Follow retries reads that fail for a
	// reason that may pass (storage or the server unreachable, a 5xx):
	// 0 takes the client's retry budget (60 s, or WithRetryFor), a
	// negative value retries for ever.
	RetryFor time.Duration
	// OnRetry, if set, is called from Follow when reads start failing,
	// with the error, and when they work again, with nil.
	OnRetry func(err error)
}

// streamPoll is how often Follow looks for a stream that does not exist
// yet, unless PollInterval is shorter.
const streamPoll = time.Second

// DefaultMaxValueBytes is a Reader's default MaxValueBytes.
const DefaultMaxValueBytes = 256 << 20

// MessageError is a message that cannot be read back, while the stream
// around it can: its chain of records flagged "to be continued" breaks off
// (the next record belongs to another message, or the stream ends), its
// value flagged LZ4 does not decompress, or it is larger than
// MaxValueBytes. Messages and Follow yield it with the message's Offset
// and Next, and go on with the next message if the caller does: a reader
// can report it and skip it (or resume from Next).
type MessageError struct {
	Stream       string
	Offset, Next int64
	Err          error
}

func (e *MessageError) Error() string {
	return fmt.Sprintf("stream %q: the message at %d cannot be read (the next one starts at %d): %v", e.Stream, e.Offset, e.Next, e.Err)
}

// Unwrap returns what was wrong with the message.
func (e *MessageError) Unwrap() error { return e.Err }

// Reader opens stream for reading straight from storage, through a read
// grant it asks the server for (and renews when it expires). When storage
// cannot be reached with the grant it falls back to the server's read
// route.
func (c *Client) Reader(ctx context.Context, name string) (*Reader, error) {
	r := &Reader{c: c, stream: name}
	if c.viaServer {
		r.src, r.ViaServer = &serverSource{c: c, stream: name}, true
		return r, nil
	}
	grant, err := c.Grant(ctx, name)
	if err != nil {
		return nil, err
	}
	pr, err := c.openGrant(ctx, grant, func(ctx context.Context) (string, error) { return c.Grant(ctx, name) })
	if err != nil {
		r.src, r.ViaServer = &serverSource{c: c, stream: name}, true
		return r, nil
	}
	r.src, r.closer = stream.NewReader(name, pr, stream.ReaderConfig{}), pr.Close
	return r, nil
}

// openGrant opens the storage behind a read grant: a file:// URL of a
// stream folder, or an http(s) URL through the client's GrantReader
// (renew, if set, is asked for a new grant when it expires). Without a
// GrantReader such a grant is an error, and the reader falls back to the
// server.
func (c *Client) openGrant(ctx context.Context, grant string, renew func(context.Context) (string, error)) (messagevault.PageReader, error) {
	u, err := url.Parse(grant)
	if err != nil {
		return nil, fmt.Errorf("read grant: not a URL: %w", err)
	}
	switch u.Scheme {
	case "file":
		return file.OpenStreamReader(filepath.FromSlash(u.Path))
	case "http", "https":
		if c.grants == nil {
			return nil, fmt.Errorf("read grant on %s: no GrantReader for %s grants (see WithGrantReader)", u.Host, u.Scheme)
		}
		return c.grants.OpenGrant(ctx, grant, renew)
	default:
		return nil, fmt.Errorf("read grant: unknown scheme %q", u.Scheme)
	}
}

// OpenDir opens stream in a local data directory (or a mirror) for
// reading, without a server.
func OpenDir(dir, name string) (*Reader, error) {
	pr, err := file.OpenStreamReader(filepath.Join(dir, name))
	if err != nil {
		return nil, err
	}
	return &Reader{stream: name, src: stream.NewReader(name, pr, stream.ReaderConfig{}), closer: pr.Close}, nil
}

// Close releases the reader.
func (r *Reader) Close() error {
	if r.closer != nil {
		return r.closer()
	}
	return nil
}

// Position returns the stream's committed position.
func (r *Reader) Position(ctx context.Context) (int64, error) { return r.src.Position(ctx) }

// Start returns the stream's first stored position: 0 until it is
// trimmed, then the start of its oldest remaining segment. Reading below
// it fails with an error that is errors.Is messagevault.ErrTrimmed.
func (r *Reader) Start(ctx context.Context) (int64, error) {
	e, err := r.src.Extent(ctx)
	return e.Start, err
}

// Since returns the position of the first message written at or after t
// (by its id's time, in milliseconds), or the committed position if none
// was: where to read from to get what was published since t. It bisects
// the stream, so it is quick on a large one.
func (r *Reader) Since(ctx context.Context, t time.Time) (int64, error) {
	return r.src.FindTime(ctx, t)
}

// ReadSince iterates the messages written at or after t, up to the
// committed position: Messages from Since(t).
func (r *Reader) ReadSince(ctx context.Context, t time.Time) iter.Seq2[ReadMessage, error] {
	return func(yield func(ReadMessage, error) bool) {
		from, err := r.Since(ctx, t)
		if err != nil {
			yield(ReadMessage{}, err)
			return
		}
		for m, err := range r.Messages(ctx, from, -1) {
			if !yield(m, err) {
				return
			}
		}
	}
}

// Records iterates the raw records from position from to position to (a
// negative to: the committed position). Each record's slices are valid
// until the next step.
func (r *Reader) Records(ctx context.Context, from, to int64) iter.Seq2[formats.Record, error] {
	return r.src.Records(ctx, from, to)
}

// Messages iterates whole messages from position from (a message's Offset
// or Next, 0 for the start) to position to (negative: the committed
// position), reassembling split values and decompressing LZ4 ones. A
// message that cannot be read back is yielded as a *MessageError (with its
// Offset and Next set in the ReadMessage too), and the iteration goes on
// after it; any other error ends the iteration.
//
// Every record of a split message carries the message's key and LZ4 bit,
// as this library writes them: a record flagged "to be continued" followed
// by one with another key or bit, or by the end of the range, is a broken
// chain. So a range must end on a message boundary.
func (r *Reader) Messages(ctx context.Context, from, to int64) iter.Seq2[ReadMessage, error] {
	return r.messages(ctx, from, to, true)
}

// messages is Messages; check says to look whether from is inside a value
// split into records (from is the caller's, not a message boundary the
// reader reached by itself).
func (r *Reader) messages(ctx context.Context, from, to int64, check bool) iter.Seq2[ReadMessage, error] {
	return func(yield func(ReadMessage, error) bool) {
		// A read from inside a split value yields the rest of that value
		// as a MessageError, never as a cut value.
		inside := int64(-1)
		if check && from > 0 {
			if ms, err := r.src.MessageStart(ctx, from); err == nil && ms < from {
				inside = ms
			}
		}
		insideErr := func(next int64) bool {
			err := fmt.Errorf("the read starts at %d, inside a message split into records that starts at %d: read from %d for its whole value", from, inside, inside)
			return yield(ReadMessage{Offset: inside, Next: next}, &MessageError{Stream: r.stream, Offset: inside, Next: next, Err: err})
		}
		limit := r.MaxValueBytes
		if limit <= 0 {
			limit = DefaultMaxValueBytes
		}
		var cur ReadMessage
		var lz4 bool
		var bad error // what is wrong with cur, found while collecting it
		collecting := false
		// fail yields cur as a MessageError ending at next.
		fail := func(next int64, err error) bool {
			collecting = false
			m := ReadMessage{Offset: cur.Offset, Next: next, ID: cur.ID, Key: cur.Key}
			return yield(m, &MessageError{Stream: r.stream, Offset: cur.Offset, Next: next, Err: err})
		}
		end := from
		for rec, err := range r.src.Records(ctx, from, to) {
			if err != nil {
				yield(ReadMessage{}, err)
				return
			}
			end = rec.Offset + int64(rec.Size())
			if inside >= 0 {
				if rec.Attributes&messagevault.AttrContinued != 0 {
					continue
				}
				if !insideErr(end) {
					return
				}
				inside = -1
				continue
			}
			if collecting && (!bytes.Equal(rec.Key, cur.Key) || (rec.Attributes&messagevault.AttrLZ4 != 0) != lz4) {
				if !fail(rec.Offset, fmt.Errorf("broken chain: its last record is flagged \"to be continued\", but the record at %d belongs to another message", rec.Offset)) {
					return
				}
			}
			if !collecting {
				cur = ReadMessage{Offset: rec.Offset, ID: rec.ID, Key: append([]byte(nil), rec.Key...)}
				lz4 = rec.Attributes&messagevault.AttrLZ4 != 0
				bad = nil
				collecting = true
			}
			if bad == nil && len(cur.Value)+len(rec.Value) > limit {
				bad = fmt.Errorf("its value is larger than the reader's limit of %d bytes", limit)
				cur.Value = nil
			}
			if bad == nil {
				cur.Value = append(cur.Value, rec.Value...)
			}
			if rec.Attributes&messagevault.AttrContinued != 0 {
				continue
			}
			collecting = false
			cur.Next = end
			if bad != nil {
				if !fail(cur.Next, bad) {
					return
				}
				continue
			}
			if lz4 {
				v, err := decompressLZ4(cur.Value, limit)
				if err != nil {
					if !fail(cur.Next, fmt.Errorf("LZ4 value: %w", err)) {
						return
					}
					continue
				}
				cur.Value = v
			}
			if cur.Value == nil {
				cur.Value = []byte{}
			}
			if !yield(cur, nil) {
				return
			}
		}
		if inside >= 0 && end > from {
			insideErr(end)
		}
		if collecting {
			fail(end, errors.New("broken chain: the last record is flagged \"to be continued\", and nothing follows it"))
		}
	}
}

// Follow iterates whole messages from position from, then waits for new
// ones and yields them as they are committed, until ctx ends (it then
// yields ctx.Err()). It is woken by the server's long poll when the server
// is reachable, and polls the position otherwise. Resume after a restart
// from the Next of the last message handled.
//
// A storage or network error does not end it: it retries, and a reader
// that reads storage directly switches to the server's read route once
// storage has failed for FallbackAfter. It gives up (yielding the error)
// only when the failures last longer than the client's retry budget
// (WithRetryFor; 60 s by default), or on an error that retrying cannot
// cure: a corrupt stream, a position out of range, a refusal (4xx).
func (r *Reader) Follow(ctx context.Context, from int64) iter.Seq2[ReadMessage, error] {
	return func(yield func(ReadMessage, error) bool) {
		pos := from
		var trouble readTrouble
		for first := true; ; {
			end, err := r.src.Position(ctx)
			if errors.Is(err, messagevault.ErrStreamNotFound) && pos == 0 {
				// Not written yet: wait for its first message.
				trouble.reset(r)
				wait := streamPoll
				if r.PollInterval > 0 {
					wait = min(r.PollInterval, streamPoll)
				}
				r.sleep(ctx, wait)
				if err := ctx.Err(); err != nil {
					yield(ReadMessage{}, err)
					return
				}
				continue
			}
			if err != nil {
				if trouble.recover(ctx, r, err) {
					continue
				}
				if ctx.Err() != nil {
					err = ctx.Err()
				}
				yield(ReadMessage{}, err)
				return
			}
			if first && pos > end {
				// As stream.Reader.Follow: a position past the end is a
				// mistake, not something to wait for.
				yield(ReadMessage{}, fmt.Errorf("follow %q from %d: the stream ends at %d: %w", r.stream, pos, end, messagevault.ErrOutOfRange))
				return
			}
			first = false
			if end > pos {
				var failed error
				for m, err := range r.messages(ctx, pos, end, pos == from) {
					var bad *MessageError
					if err != nil && !errors.As(err, &bad) {
						failed = err
						break
					}
					pos = m.Next
					if !yield(m, err) {
						return
					}
				}
				if failed != nil {
					if trouble.recover(ctx, r, failed) {
						continue
					}
					yield(ReadMessage{}, failed)
					return
				}
				trouble.reset(r)
				continue
			}
			trouble.reset(r)
			r.wait(ctx, pos)
			if err := ctx.Err(); err != nil {
				yield(ReadMessage{}, err)
				return
			}
		}
	}
}

// FallbackAfter is how long a following Reader retries storage that fails
// before it reads through the server instead.
const FallbackAfter = 2 * time.Second

// readTrouble is a run of failed reads while following.
type readTrouble struct {
	since time.Time // the first failure of the run; zero: none
	delay time.Duration
	told  bool // OnRetry was told of the failures
}

// reset ends a run of failures: a read worked.
func (t *readTrouble) reset(r *Reader) {
	if t.told && r.OnRetry != nil {
		r.OnRetry(nil)
	}
	*t = readTrouble{}
}

// recover decides, for the error err of a read while following, whether to
// go on: it waits before the next try, and switches r to the server once
// storage has failed for FallbackAfter. It returns false when err is not
// worth retrying or the failures have lasted past the retry budget.
func (t *readTrouble) recover(ctx context.Context, r *Reader, err error) bool {
	if ctx.Err() != nil || !transientRead(err) {
		return false
	}
	budget := 60 * time.Second
	if r.c != nil && r.c.retryFor > 0 {
		budget = r.c.retryFor
	}
	if r.RetryFor != 0 {
		budget = r.RetryFor
	}
	if t.since.IsZero() {
		t.since, t.delay = time.Now(), 100*time.Millisecond
		t.told = true
		if r.OnRetry != nil {
			r.OnRetry(err)
		}
	}
	if budget > 0 && time.Since(t.since) > budget {
		return false
	}
	if r.c != nil && !r.ViaServer && time.Since(t.since) >= FallbackAfter {
		r.src, r.ViaServer = &serverSource{c: r.c, stream: r.stream}, true
		t.since, t.delay = time.Now(), 100*time.Millisecond // a fresh budget for the server
		return true
	}
	timer := time.NewTimer(t.delay)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-timer.C:
	}
	t.delay = min(t.delay*2, 5*time.Second)
	return true
}

// poll is the reader's PollInterval or its default.
func (r *Reader) poll() time.Duration {
	if r.PollInterval > 0 {
		return r.PollInterval
	}
	return 200 * time.Millisecond
}

// sleep waits d or until ctx ends.
func (r *Reader) sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// transientRead reports a read error that may pass: storage or the network
// failing, not the stream or the request being wrong.
func transientRead(err error) bool {
	var bad *MessageError
	var e *Error
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, messagevault.ErrCorrupt),
		errors.Is(err, messagevault.ErrOutOfRange), errors.Is(err, messagevault.ErrStreamNotFound),
		errors.Is(err, messagevault.ErrNotRecordStart), errors.Is(err, messagevault.ErrTrimmed), errors.As(err, &bad),
		errors.As(err, new(*hopelessError)):
		return false
	case errors.As(err, &e):
		return e.Retryable()
	}
	return true
}

// wait returns when the stream may have moved past pos.
func (r *Reader) wait(ctx context.Context, pos int64) {
	if r.c != nil {
		start := time.Now()
		_, err := r.c.rawRecords(ctx, r.stream, pos, 1, 25*time.Second)
		if err == nil || time.Since(start) > time.Second {
			return
		}
	}
	r.sleep(ctx, r.poll())
}

// VerifyResult is what a full scan of a stream found.
type VerifyResult struct {
	Records  int64
	Position int64
	// Start is where the check began: the stream's first stored position.
	Start int64
}

// Verify reads every stored record of the stream (from its Start) up to its committed position and
// checks each one (version, crc, id position). The error names the first
// bad position. progress, if set, is called now and then with the bytes
// checked so far and the total.
func (r *Reader) Verify(ctx context.Context, progress func(done, total int64)) (VerifyResult, error) {
	e, err := r.src.Extent(ctx)
	if err != nil {
		return VerifyResult{}, err
	}
	pos := e.Position
	res := VerifyResult{Position: pos, Start: e.Start}
	var last time.Time
	for rec, err := range r.src.Records(ctx, e.Start, pos) {
		if err != nil {
			return res, err
		}
		res.Records++
		if progress != nil && time.Since(last) > 100*time.Millisecond {
			last = time.Now()
			progress(rec.Offset, pos)
		}
	}
	if progress != nil {
		progress(pos, pos)
	}
	return res, nil
}

// serverSource reads records through the server's read route.
type serverSource struct {
	c      *Client
	stream string
}

func (s *serverSource) Position(ctx context.Context) (int64, error) {
	e, err := s.Extent(ctx)
	return e.Position, err
}

// Extent reads the position and start from a read's headers (the active
// segment is not told: it is left 0).
func (s *serverSource) Extent(ctx context.Context) (messagevault.Extent, error) {
	a, err := s.c.rawRecords(ctx, s.stream, -1, 1, 0)
	return messagevault.Extent{Position: a.pos, Start: a.start}, err
}

// MessageStart asks the server (message_start=1) where the message
// holding the record at at starts.
func (s *serverSource) MessageStart(ctx context.Context, at int64) (int64, error) {
	path := fmt.Sprintf("/streams/%s/messages?format=raw&limit=1&from=%d&message_start=1", url.PathEscape(s.stream), at)
	var data []byte
	h, err := s.c.do(ctx, http.MethodGet, path, nil, "", &data)
	if err != nil {
		return 0, err
	}
	if v := h.Get("X-Messagevault-Message-Start"); v != "" {
		if n, err := strconv.ParseInt(v, 10, 64); err == nil && n < at {
			return n, nil
		}
	}
	return at, nil
}

// FindTime asks the server for the first record at or after t.
func (s *serverSource) FindTime(ctx context.Context, t time.Time) (int64, error) {
	path := fmt.Sprintf("/streams/%s/messages?format=raw&limit=1&since=%s", url.PathEscape(s.stream), url.QueryEscape(t.UTC().Format(time.RFC3339Nano)))
	var data []byte
	h, err := s.c.do(ctx, http.MethodGet, path, nil, "", &data)
	if err != nil {
		return 0, fmt.Errorf("find %v in %q: %w", t, s.stream, err)
	}
	next, err := strconv.ParseInt(h.Get("X-Messagevault-Next"), 10, 64)
	if err != nil || next < int64(len(data)) {
		return 0, fmt.Errorf("find %v in %q through the server: the answer has no valid X-Messagevault-Next header (%q)", t, s.stream, h.Get("X-Messagevault-Next"))
	}
	return next - int64(len(data)), nil
}

func (s *serverSource) Records(ctx context.Context, from, to int64) iter.Seq2[formats.Record, error] {
	return func(yield func(formats.Record, error) bool) {
		pos := from
		// The first answer asks for 1,000 records (a consumer's batch, a
		// read --limit need no more), each next one for twice as many, up
		// to what one answer holds (8 MiB).
		limit := 1000
		for to < 0 || pos < to {
			a, err := s.c.rawBatch(ctx, s.stream, pos, limit)
			limit *= 2
			data, next, end := a.data, a.next, a.pos
			if err != nil {
				yield(formats.Record{}, err)
				return
			}
			if to < 0 {
				to = end
			}
			if next == pos {
				return // nothing more
			}
			off := pos
			for len(data) > 0 && off < to {
				rec, n, err := formats.DecodeRecord(data)
				if err != nil {
					yield(formats.Record{}, fmt.Errorf("stream %q: record at %d from the server: %w: %w", s.stream, off, messagevault.ErrCorrupt, err))
					return
				}
				rec.Offset = off
				if !yield(rec, nil) {
					return
				}
				off += int64(n)
				data = data[n:]
			}
			pos = next
		}
	}
}
