package stream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"sync"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/formats"
)

// Reader defaults.
const (
	// DefaultChunkSize is how many bytes a reader fetches from storage at
	// a time.
	DefaultChunkSize = 4 << 20
	// DefaultPollInterval is how often Follow reads the position while it
	// waits for new records and has no Wake function.
	DefaultPollInterval = 100 * time.Millisecond
)

// ReaderConfig tunes a Reader. Zero fields take the defaults.
type ReaderConfig struct {
	// ChunkSize is the size of each range read; at least one whole
	// record (formats.MaxRecordSize). Default DefaultChunkSize.
	ChunkSize int
	// PollInterval is how often Follow polls the position.
	// Default DefaultPollInterval.
	PollInterval time.Duration
	// Wake, if set, is called by Follow instead of sleeping PollInterval:
	// it returns when the position may have moved past pos (or ctx ends).
	// A server passes the writer's commit notification here.
	Wake func(ctx context.Context, pos int64)
}

// Reader iterates the records of one stream. It reads the committed
// position first and never returns a byte past it. A Reader is safe for
// concurrent use; each iteration has its own buffer.
type Reader struct {
	name  string
	pages messagevault.PageReader
	cfg   ReaderConfig
}

// NewReader returns a reader of the stream behind pages; name is used in
// errors only. The caller keeps ownership of pages.
func NewReader(name string, pages messagevault.PageReader, cfg ReaderConfig) *Reader {
	if cfg.ChunkSize < formats.MaxRecordSize {
		if cfg.ChunkSize <= 0 {
			cfg.ChunkSize = DefaultChunkSize
		} else {
			cfg.ChunkSize = formats.MaxRecordSize
		}
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	return &Reader{name: name, pages: pages, cfg: cfg}
}

// Position returns the stream's committed position.
func (r *Reader) Position(ctx context.Context) (int64, error) {
	pos, err := r.pages.Position(ctx)
	if err != nil {
		return 0, fmt.Errorf("stream %q: read position: %w", r.name, err)
	}
	return pos, nil
}

// Extent returns the stream's committed extent: its position, first
// stored position (Start) and active segment.
func (r *Reader) Extent(ctx context.Context) (messagevault.Extent, error) {
	e, err := r.pages.Extent(ctx)
	if err != nil {
		return e, fmt.Errorf("stream %q: read position: %w", r.name, err)
	}
	return e, nil
}

// Records iterates the records that start at from (a record boundary, 0 for
// the start) and end at or before to. The committed position is read once
// at the start; a negative to, or one past it, means that position. Each record's Key and Value are views
// valid only until the next iteration step. Every record's version, crc and
// id position are checked; the first error is yielded (with a zero record)
// and ends the iteration. Errors about stored bytes wrap
// messagevault.ErrCorrupt and say at which position; a from inside a
// record (no record starts there) is messagevault.ErrNotRecordStart.
func (r *Reader) Records(ctx context.Context, from, to int64) iter.Seq2[formats.Record, error] {
	return func(yield func(formats.Record, error) bool) {
		pos, err := r.Position(ctx)
		if err != nil {
			yield(formats.Record{}, err)
			return
		}
		if to < 0 || to > pos {
			to = pos
		}
		if from < 0 || from > to {
			yield(formats.Record{}, fmt.Errorf("stream %q: read from %d: the stream's committed position is %d: %w", r.name, from, to, messagevault.ErrOutOfRange))
			return
		}
		n := min(int64(r.cfg.ChunkSize), max(to-from, 0))
		if n < int64(r.cfg.ChunkSize) {
			r.scan(ctx, make([]byte, n), from, to, true, yield)
			return
		}
		// A full chunk comes from a pool: a scan is often short, and
		// clearing a fresh 4 MiB buffer each time costs as much as the
		// crc checks of a few MiB of records.
		bp := chunkPool(r.cfg.ChunkSize).Get().(*[]byte)
		defer chunkPool(r.cfg.ChunkSize).Put(bp)
		r.scan(ctx, *bp, from, to, true, yield)
	}
}

// chunkPools holds a pool of scan buffers per chunk size.
var chunkPools sync.Map // int -> *sync.Pool

// chunkPool returns the pool of scan buffers of size bytes.
func chunkPool(size int) *sync.Pool {
	if p, ok := chunkPools.Load(size); ok {
		return p.(*sync.Pool)
	}
	p, _ := chunkPools.LoadOrStore(size, &sync.Pool{New: func() any { b := make([]byte, size); return &b }})
	return p.(*sync.Pool)
}

// scan decodes the records in [from, to) using buf as its window. It
// returns the position after the last record yielded, and false if the
// iteration must end (the consumer stopped, or an error was yielded).
//
// asked says that from is the caller's position rather than one the
// reader reached by itself: a first record that fails there, and does not
// even carry its own position in its id, means from is inside a record
// (ErrNotRecordStart) rather than a damaged record.
func (r *Reader) scan(ctx context.Context, buf []byte, from, to int64, asked bool, yield func(formats.Record, error) bool) (next int64, ok bool) {
	off := from // stream position of buf[0]
	n, p := 0, 0
	var short error // a read that came back short: the records after what it got cannot be read
	for off+int64(p) < to {
		rec, size, err := formats.DecodeRecord(buf[p:n])
		if err == formats.ErrTruncated {
			at := off + int64(p)
			if off+int64(n) >= to {
				yield(formats.Record{}, r.bad(ctx, at, asked && at == from, buf[p:n], fmt.Errorf("record runs past the committed position %d: %w", to, formats.ErrTruncated)))
				return at, false
			}
			if short != nil {
				// The records before the short read were yielded; this one
				// is the first that cannot be read.
				end := off + int64(n)
				if errors.Is(short, io.EOF) {
					yield(formats.Record{}, r.corrupt(at, fmt.Errorf("the stored records end at byte %d, before the committed position %d: %d bytes are readable", end, to, end)))
				} else {
					yield(formats.Record{}, fmt.Errorf("stream %q: read at %d: %w", r.name, end, short))
				}
				return at, false
			}
			if err := ctx.Err(); err != nil {
				yield(formats.Record{}, err)
				return at, false
			}
			n = copy(buf, buf[p:n])
			off, p = at, 0
			want := int(min(int64(len(buf)), to-off))
			got, err := r.pages.ReadAt(ctx, buf[n:want], off+int64(n))
			if got < want-n {
				if err == nil {
					err = io.ErrUnexpectedEOF
				}
				short = err
			}
			n += got
			continue
		}
		at := off + int64(p)
		if err != nil {
			yield(formats.Record{}, r.bad(ctx, at, asked && at == from, buf[p:n], err))
			return at, false
		}
		if got := rec.ID.Offset(); got != at {
			yield(formats.Record{}, r.bad(ctx, at, asked && at == from, buf[p:n], fmt.Errorf("record id carries position %d: not a record boundary", got)))
			return at, false
		}
		rec.Offset = at
		p += size
		if !yield(rec, nil) {
			return off + int64(p), false
		}
	}
	return off + int64(p), true
}

// bad reports the record at at that failed with err: ErrCorrupt, unless
// at is the caller's starting position (first) and b, the bytes there, do
// not begin with a record header naming at (version 1, then an id carrying
// the position), which a record written there always does: then the
// caller asked to start inside a record.
func (r *Reader) bad(ctx context.Context, at int64, first bool, b []byte, err error) error {
	if first && at != 0 && !startsRecordAt(b, at) {
		nearest := ""
		if prev, next, ok := r.Around(ctx, at); ok {
			nearest = fmt.Sprintf("; the nearest record starts are %d and %d", prev, next)
		}
		return fmt.Errorf("stream %q: no record starts at %d%s (positions are byte offsets: read from 0, or from a position a read returned, a record's offset or the position after one): %w", r.name, at, nearest, messagevault.ErrNotRecordStart)
	}
	return r.corrupt(at, err)
}

// Around returns, for a position inside a record, the start of that
// record and that of the next one (or the committed position); ok is
// false when they cannot be found.
func (r *Reader) Around(ctx context.Context, at int64) (prev, next int64, ok bool) {
	pos, err := r.Position(ctx)
	if err != nil || at >= pos {
		return 0, 0, false
	}
	limit := min(at+formats.MaxRecordSize+1, pos)
	buf := make([]byte, min(limit+formats.MaxRecordSize, pos)-at)
	next = pos
	rec, _, found, err := r.recordFrom(ctx, buf, at, limit, pos)
	if err != nil {
		return 0, 0, false
	}
	if found {
		next = rec.Offset
	}
	last, found, err := LastRecord(ctx, r.pages, next)
	if err != nil || !found || last.Offset > at {
		return 0, 0, false
	}
	return last.Offset, next, true
}

// startsRecordAt reports whether b may begin with the header of a record
// written at position at; false only when it certainly does not.
func startsRecordAt(b []byte, at int64) bool {
	if len(b) == 0 {
		return true
	}
	if b[0] != formats.Version {
		return false
	}
	if len(b) < 18 {
		return true
	}
	var id formats.ID
	copy(id[:], b[2:18])
	return id.Offset() == at
}

func (r *Reader) corrupt(at int64, err error) error {
	return fmt.Errorf("stream %q: record at %d: %w: %w", r.name, at, messagevault.ErrCorrupt, err)
}

// WriteRange writes the stored bytes of [from, to), a range of whole
// records that Records has checked, to w, as they are in storage: for
// answers that hand records on unchanged, without decoding and encoding
// them again. buf is the copy buffer (its length is the read size).
func (r *Reader) WriteRange(ctx context.Context, w io.Writer, from, to int64, buf []byte) error {
	for from < to {
		n := int(min(int64(len(buf)), to-from))
		got, err := r.pages.ReadAt(ctx, buf[:n], from)
		if got < n {
			if err == nil || errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("stream %q: read at %d: %w", r.name, from, err)
		}
		if _, err := w.Write(buf[:n]); err != nil {
			return err
		}
		from += int64(n)
	}
	return nil
}

// Follow iterates records from from, as Records does, and then waits for
// new ones: it polls the committed position (or calls Wake) and yields each
// record as soon as it is committed. It ends when ctx ends (yielding
// ctx.Err()) or at the first error.
func (r *Reader) Follow(ctx context.Context, from int64) iter.Seq2[formats.Record, error] {
	return func(yield func(formats.Record, error) bool) {
		var buf []byte
		pos := from
		for {
			end, err := r.Position(ctx)
			if err != nil {
				yield(formats.Record{}, err)
				return
			}
			if pos > end {
				yield(formats.Record{}, fmt.Errorf("stream %q: follow from %d: the stream's committed position is %d: %w", r.name, pos, end, messagevault.ErrOutOfRange))
				return
			}
			if end > pos {
				if buf == nil {
					buf = make([]byte, r.cfg.ChunkSize)
				}
				next, ok := r.scan(ctx, buf, pos, end, pos == from, yield)
				if !ok {
					return
				}
				pos = next
				continue
			}
			if r.cfg.Wake != nil {
				r.cfg.Wake(ctx, pos)
			} else {
				t := time.NewTimer(r.cfg.PollInterval)
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
				}
			}
			if err := ctx.Err(); err != nil {
				yield(formats.Record{}, err)
				return
			}
		}
	}
}
