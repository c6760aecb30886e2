package stream

import (
	"context"
	"fmt"
	"io"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/formats"
	"github.com/messagevault/messagevault/segment"
)

// Tail is the appending end of a page log, and the one home of the steps
// of an append: records are staged after the committed part of the last
// page; Commit pads them to whole pages, rolls to a new segment where the
// active one would pass the segment size, grows the segment's blob in
// GrowStep steps, writes the pages, flushes, commits the new position, and
// carries the new partial last page over to the next append. Writer and
// the client's mirror both append through it. A Tail is not safe for
// concurrent use.
type Tail struct {
	pages    messagevault.PageWriter
	growStep int64
	keep     int   // largest buffer kept between commits
	segSize  int64 // largest segment blob; 0: no limit

	pos    int64   // committed position
	active int64   // start of the active segment
	size   int64   // position where the active segment's blob ends
	buf    []byte  // buf[:pos%PageSize]: the committed part of the last page; then staged bytes
	ends   []int64 // the end of each staged record, when segSize is set
}

// NewTail returns the tail of pages; call Load before anything else.
// growStep (rounded up to whole pages; DefaultGrowStep if not positive) is
// how far the records blob grows at a time; keep bounds the buffer kept
// between commits (a larger one, from a large commit, is let go).
func NewTail(pages messagevault.PageWriter, growStep int64, keep int) *Tail {
	if growStep <= 0 {
		growStep = DefaultGrowStep
	}
	return &Tail{pages: pages, growStep: roundUp(growStep), keep: keep}
}

// SetSegmentSize makes Commit roll to a new segment before the active
// one's blob would pass size bytes (0: never). A segment holds at least
// one record; the producer table a Writer stores past its last records
// may take its blob past size.
func (t *Tail) SetSegmentSize(size int64) { t.segSize = size }

// Load reads the committed position, the active segment, the size of its
// blob and the committed part of the last page from storage, dropping
// staged bytes.
func (t *Tail) Load(ctx context.Context) error {
	e, err := t.pages.Extent(ctx)
	if err != nil {
		return fmt.Errorf("read position: %w", err)
	}
	pos := e.Position
	size, err := t.pages.Size(ctx)
	if err != nil {
		return fmt.Errorf("read size: %w", err)
	}
	if pos > size {
		return fmt.Errorf("committed position %d is past the records blob (to %d): %w", pos, size, messagevault.ErrCorrupt)
	}
	tail := int(pos % messagevault.PageSize)
	if cap(t.buf) < messagevault.PageSize {
		// Two pages: the buffer grows with the first appends, so that
		// thousands of streams with small appends stay small.
		t.buf = make([]byte, 0, 2*messagevault.PageSize)
	}
	t.buf = t.buf[:tail]
	t.ends = t.ends[:0]
	if from := max(pos-int64(tail), e.Segment); pos > from {
		// The committed part of the last page. In a segment's first page
		// the bytes before its start belong to the previous segment,
		// which a reader of this one does not look at: zeros do.
		k := int(from - (pos - int64(tail)))
		clear(t.buf[:k])
		if n, err := t.pages.ReadAt(ctx, t.buf[k:], from); n < tail-k {
			if err == nil {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("preload tail page at %d: %w", from, err)
		}
	}
	t.pos, t.size, t.active = pos, size, e.Segment
	return nil
}

// Position is the committed position.
func (t *Tail) Position() int64 { return t.pos }

// Size is the records blob's size as last grown or loaded.
func (t *Tail) Size() int64 { return t.size }

// base is where buf starts: the last page's offset.
func (t *Tail) base() int64 { return t.pos - t.pos%messagevault.PageSize }

// End is the position after the staged records: where the next one lands.
func (t *Tail) End() int64 { return t.base() + int64(len(t.buf)) }

// Staged is how many bytes are staged past the committed position.
func (t *Tail) Staged() int { return int(t.End() - t.pos) }

// AppendRecord stages one record and returns its offset.
func (t *Tail) AppendRecord(id formats.ID, m messagevault.Message) (int64, error) {
	off := t.End()
	b, err := formats.AppendRecord(t.buf, id, m)
	if err != nil {
		return 0, err
	}
	t.buf = b
	if t.segSize > 0 {
		t.ends = append(t.ends, t.End())
	}
	return off, nil
}

// Discard drops the staged records.
func (t *Tail) Discard() {
	t.buf = t.buf[:t.pos%messagevault.PageSize]
	t.ends = t.ends[:0]
}

// Commit makes the staged records durable and the stream's position their
// end. extra, if any, is written in the same page write past the records
// (past the position, so it is not part of the stream); beforeFlush, if
// set, runs after the page writes and before the flush. On error the
// staged records are dropped and what storage holds is unknown: Load
// (after the PageWriter's Refence) before appending again.
func (t *Tail) Commit(ctx context.Context, extra []byte, beforeFlush func(context.Context) error) error {
	return t.CommitWith(ctx, extra, beforeFlush, t.pages.CommitPosition)
}

// CommitWith is Commit with commit in place of the PageWriter's
// CommitPosition. A commit that only starts the position's commit (see
// messagevault.CommitStarter) leaves its outcome to the caller: the Tail
// goes on as if it landed, and if it did not, the caller must Load again
// (after Refence), as after any failed Commit.
func (t *Tail) CommitWith(ctx context.Context, extra []byte, beforeFlush func(context.Context) error, commit func(context.Context, int64) error) error {
	end := t.End()
	if end == t.pos && extra == nil {
		return nil
	}
	base := t.base()
	cuts := t.cuts()
	t.buf = padPage(t.buf)
	if extra != nil {
		t.buf = padPage(append(t.buf, extra...))
	}
	active, err := t.write(ctx, base, end, cuts, beforeFlush, commit)
	if err != nil {
		t.Discard()
		return err
	}
	newBase := end - end%messagevault.PageSize
	k := copy(t.buf, t.buf[newBase-base:end-base])
	t.buf = t.buf[:k]
	if t.keep > 0 && cap(t.buf) > t.keep {
		t.buf = append(make([]byte, 0, 64<<10), t.buf...)
	}
	t.ends = t.ends[:0]
	t.pos, t.active = end, active
	return nil
}

// cuts returns the record starts where the staged records roll to new
// segments: each segment's blob stays within segSize, and holds at least
// one record.
func (t *Tail) cuts() []int64 {
	if t.segSize <= 0 || roundUp(t.End()) <= segment.Base(t.active)+t.segSize {
		return nil
	}
	var cuts []int64
	start, limit := t.active, segment.Base(t.active)+t.segSize
	from := t.pos
	for _, end := range t.ends {
		if roundUp(end) > limit && from > start {
			cuts = append(cuts, from)
			start, limit = from, segment.Base(from)+t.segSize
		}
		from = end
	}
	return cuts
}

// write writes buf (which starts at position base) up to each cut in the
// segment it ends, rolling at each cut, then flushes and commits end. It
// returns the active segment after it.
func (t *Tail) write(ctx context.Context, base, end int64, cuts []int64, beforeFlush func(context.Context) error, commit func(context.Context, int64) error) (int64, error) {
	active, size, from := t.active, t.size, base
	put := func(to int64) error {
		if to > size {
			grow := roundUpTo(to, t.growStep)
			if t.segSize > 0 {
				grow = max(to, min(grow, segment.Base(active)+t.segSize))
			}
			if err := t.pages.Grow(ctx, grow); err != nil {
				return fmt.Errorf("grow %s to %d bytes: %w", segment.Name(active), grow-segment.Base(active), err)
			}
			size = grow
			t.size = grow
		}
		if to <= from {
			return nil // the page is written already: it holds the last committed records
		}
		if err := t.pages.WritePages(ctx, from, t.buf[from-base:to-base]); err != nil {
			return fmt.Errorf("write %d bytes at %d: %w", to-from, from, err)
		}
		return nil
	}
	for _, c := range cuts {
		if err := put(roundUp(c)); err != nil {
			return 0, err
		}
		if err := t.pages.Roll(ctx, c); err != nil {
			return 0, fmt.Errorf("roll to a new segment at %d: %w", c, err)
		}
		active, size, from = c, segment.Base(c), segment.Base(c)
		t.size = size
	}
	if err := put(base + int64(len(t.buf))); err != nil {
		return 0, err
	}
	if beforeFlush != nil {
		if err := beforeFlush(ctx); err != nil {
			return 0, err
		}
	}
	if err := t.pages.Flush(ctx); err != nil {
		return 0, fmt.Errorf("flush: %w", err)
	}
	if err := commit(ctx, end); err != nil {
		return 0, fmt.Errorf("commit position %d: %w", end, err)
	}
	return active, nil
}

// padPage pads b with zeros to whole pages.
func padPage(b []byte) []byte {
	n := len(b)
	return append(b, make([]byte, int(roundUp(int64(n)))-n)...)
}
