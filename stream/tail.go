package stream

import (
	"context"
	"fmt"
	"io"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/formats"
)

// Tail is the appending end of a page log, and the one home of the steps
// of an append: records are staged after the committed part of the last
// page; Commit pads them to whole pages, grows the records blob in
// GrowStep steps, writes the pages, flushes, commits the new position, and
// carries the new partial last page over to the next append. Writer and
// the client's mirror both append through it. A Tail is not safe for
// concurrent use.
type Tail struct {
	pages    messagevault.PageWriter
	growStep int64
	keep     int // largest buffer kept between commits

	pos  int64  // committed position
	size int64  // size of the records blob
	buf  []byte // buf[:pos%PageSize]: the committed part of the last page; then staged bytes
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

// Load reads the committed position, the records blob's size and the
// committed part of the last page from storage, dropping staged bytes.
func (t *Tail) Load(ctx context.Context) error {
	pos, err := t.pages.Position(ctx)
	if err != nil {
		return fmt.Errorf("read position: %w", err)
	}
	size, err := t.pages.Size(ctx)
	if err != nil {
		return fmt.Errorf("read size: %w", err)
	}
	if pos > size {
		return fmt.Errorf("committed position %d is past the records blob (%d bytes): %w", pos, size, messagevault.ErrCorrupt)
	}
	tail := int(pos % messagevault.PageSize)
	if cap(t.buf) < messagevault.PageSize {
		t.buf = make([]byte, 0, 64<<10)
	}
	t.buf = t.buf[:tail]
	if tail > 0 {
		if n, err := t.pages.ReadAt(ctx, t.buf, pos-int64(tail)); n < tail {
			if err == nil {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("preload tail page at %d: %w", pos-int64(tail), err)
		}
	}
	t.pos, t.size = pos, size
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
	return off, nil
}

// Discard drops the staged records.
func (t *Tail) Discard() { t.buf = t.buf[:t.pos%messagevault.PageSize] }

// Commit makes the staged records durable and the stream's position their
// end. extra, if any, is written in the same page write past the records
// (past the position, so it is not part of the stream); beforeFlush, if
// set, runs after the page write and before the flush. On error the
// staged records are dropped and what storage holds is unknown: Load
// before appending again.
func (t *Tail) Commit(ctx context.Context, extra []byte, beforeFlush func(context.Context) error) error {
	end := t.End()
	if end == t.pos && extra == nil {
		return nil
	}
	base := t.base()
	t.buf = padPage(t.buf)
	if extra != nil {
		t.buf = padPage(append(t.buf, extra...))
	}
	if err := t.write(ctx, base, end, beforeFlush); err != nil {
		t.Discard()
		return err
	}
	newBase := end - end%messagevault.PageSize
	k := copy(t.buf, t.buf[newBase-base:end-base])
	t.buf = t.buf[:k]
	if t.keep > 0 && cap(t.buf) > t.keep {
		t.buf = append(make([]byte, 0, 64<<10), t.buf...)
	}
	t.pos = end
	return nil
}

func (t *Tail) write(ctx context.Context, base, end int64, beforeFlush func(context.Context) error) error {
	if need := base + int64(len(t.buf)); need > t.size {
		grow := roundUpTo(need, t.growStep)
		if err := t.pages.Grow(ctx, grow); err != nil {
			return fmt.Errorf("grow records to %d bytes: %w", grow, err)
		}
		t.size = grow
	}
	if err := t.pages.WritePages(ctx, base, t.buf); err != nil {
		return fmt.Errorf("write %d bytes at %d: %w", len(t.buf), base, err)
	}
	if beforeFlush != nil {
		if err := beforeFlush(ctx); err != nil {
			return err
		}
	}
	if err := t.pages.Flush(ctx); err != nil {
		return fmt.Errorf("flush: %w", err)
	}
	if err := t.pages.CommitPosition(ctx, end); err != nil {
		return fmt.Errorf("commit position %d: %w", end, err)
	}
	return nil
}

// padPage pads b with zeros to whole pages.
func padPage(b []byte) []byte {
	n := len(b)
	return append(b, make([]byte, int(roundUp(int64(n)))-n)...)
}
