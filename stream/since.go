package stream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/formats"
)

// Finding records by position alone. A record written at position p
// starts with the version byte and an id that carries p (bytes 8..13 of
// the record): a reader that lands anywhere can find the next record by
// looking for that header, and confirms it by the record's checksum and
// by walking on: the records after it must follow back to back, each
// naming its own position, across the rest of what was read. A message
// value can hold bytes that look like records naming their positions (a
// publisher can make them); such a chain breaks where the value ends,
// unless its last record ends exactly where the real one does, which
// takes forging the real record's checksum.

// probeWindow is what a probe reads: enough for a largest record that
// starts anywhere in its first half.
const probeWindow = 2 * formats.MaxRecordSize

// FindTime returns the position of the first record whose id time is at
// or after t, or the committed position if there is none: where a read
// "since t" starts. Ids carry milliseconds and never go back in time
// along a stream (see Writer). The time index (see IndexInterval) brings
// the search down to about IndexInterval bytes, reading only the entries
// written since the reader's last lookup; where the index has no entries
// (a stream written before it), the segments stand in for it: each
// starts with a record (a segment's name is its first record's
// position), so it bisects the segments by their first records' times,
// one small read each. Then it bisects by position, reading one window
// per probe: about log2(range/128 KiB) windows, then at most one window
// record by record. A trimmed stream is searched from its Start.
func (r *Reader) FindTime(ctx context.Context, t time.Time) (int64, error) {
	e, err := r.Extent(ctx)
	if err != nil {
		return 0, err
	}
	pos := e.Position
	segs, err := r.pages.Segments(ctx)
	if err != nil {
		return 0, fmt.Errorf("stream %q: %w", r.name, err)
	}
	want := formats.MillisSinceEpoch(t)
	// lo is a record start (or pos) before which every record is older
	// than t; ans is the earliest record start known to be at or after
	// t (or pos); no record start in [hi, ans) is older than t.
	lo, hi, err := r.indexBounds(ctx, e, want)
	if err != nil {
		return 0, err
	}
	ans := hi
	// certain is a record start for certain at or before lo: the stream's
	// start or a segment's (an index entry is checked by its header only).
	certain := e.Start
	for _, s := range segs {
		if s <= lo {
			certain = max(certain, s)
		}
	}
	segs = slices.DeleteFunc(segs, func(s int64) bool { return s <= lo || s >= hi })
	head := make([]byte, 18)
	for i, j := 0, len(segs); i < j; {
		// Invariant: the segments before i start older than t; those
		// from j on start at or after it.
		m := i + (j-i)/2
		if segs[m] >= pos || segs[m] < e.Start {
			j = m
			continue
		}
		if _, err := r.pages.ReadAt(ctx, head, segs[m]); err != nil {
			return 0, fmt.Errorf("stream %q: read the first record of segment %d: %w", r.name, segs[m], err)
		}
		var id formats.ID
		copy(id[:], head[2:18])
		if !namesPosition(head, segs[m]) {
			return 0, r.corrupt(segs[m], fmt.Errorf("segment %d does not start with its record", segs[m]))
		}
		if int64(id.Millis()) >= want {
			j = m
			ans, hi = segs[m], segs[m]
		} else {
			i = m + 1
			lo = max(lo, segs[m])
			certain = max(certain, segs[m])
		}
	}
	start := certain
	buf := make([]byte, probeWindow)
	for hi-lo > probeWindow {
		mid := lo + (hi-lo)/2
		rec, at, found, err := r.recordFrom(ctx, buf, mid, hi, pos)
		switch {
		case err != nil:
			return 0, err
		case !found:
			hi = mid
		case int64(rec.ID.Millis()) >= want:
			ans, hi = at, at
		default:
			lo = at + int64(rec.Size())
		}
	}
	at, err := r.scanTime(ctx, lo, ans, want)
	if err != nil && lo != start && ctx.Err() == nil {
		// lo was reached by probing: if the records do not follow from
		// there, do not report damage that may not be; scan from the
		// segment's start, which is a record's for certain.
		at, err = r.scanTime(ctx, start, ans, want)
	}
	return at, err
}

// scanTime returns the first record in [from, to) whose id time is at or
// after want (milliseconds since the id epoch), or to.
func (r *Reader) scanTime(ctx context.Context, from, to, want int64) (int64, error) {
	for rec, err := range r.Records(ctx, from, to) {
		if err != nil {
			return 0, err
		}
		if int64(rec.ID.Millis()) >= want {
			return rec.Offset, nil
		}
	}
	return to, nil
}

// recordFrom finds the first record that starts in [q, limit) (limit ≤
// pos, the committed position) and returns it with its position; found
// is false if none starts there.
func (r *Reader) recordFrom(ctx context.Context, buf []byte, q, limit, pos int64) (rec formats.Record, at int64, found bool, err error) {
	n := int(min(int64(len(buf)), pos-q))
	got, err := r.pages.ReadAt(ctx, buf[:n], q)
	if got < n {
		if err == nil || errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return rec, 0, false, fmt.Errorf("stream %q: read at %d: %w", r.name, q, err)
	}
	b := buf[:n]
	span := int(min(limit-q, formats.MaxRecordSize))
	for k := 0; k < span && k < n; k++ {
		if b[k] != formats.Version || k+18 > n {
			continue
		}
		if !namesPosition(b[k:], q+int64(k)) {
			continue
		}
		rec, size, err := formats.DecodeRecord(b[k:])
		if err != nil || q+int64(k+size) > pos {
			continue
		}
		if end, ok := walk(b, q, k); !ok || (end < n && q+int64(n) == pos) {
			continue // a chain that breaks, or stops short of the committed end
		}
		rec.Offset = q + int64(k)
		return rec, rec.Offset, true, nil
	}
	if limit-q > formats.MaxRecordSize {
		// Every position before the last record is at most one record
		// away from the next record's start.
		return rec, 0, false, r.corrupt(q, fmt.Errorf("no record starts in the %d bytes from here", span))
	}
	return rec, 0, false, nil
}

// namesPosition reports whether b starts with a record header naming
// position at.
func namesPosition(b []byte, at int64) bool {
	if len(b) < 18 || b[0] != formats.Version {
		return false
	}
	var id formats.ID
	copy(id[:], b[2:18])
	return id.Offset() == at
}

// walk decodes records back to back from b[k:] (b holds the stream from
// position base), each naming its own position. It returns where the
// walk ended in b, and false if a record there is not one (rather than
// cut off by the end of b).
func walk(b []byte, base int64, k int) (end int, ok bool) {
	for k < len(b) {
		if len(b)-k < 18 {
			return k, true // cut off
		}
		if !namesPosition(b[k:], base+int64(k)) {
			return k, false
		}
		_, size, err := formats.DecodeRecord(b[k:])
		if errors.Is(err, formats.ErrTruncated) {
			return k, true
		}
		if err != nil {
			return k, false
		}
		k += size
	}
	return k, true
}

// maxChain bounds how many records MessageStart walks back (64 MiB of
// parts), so that one request cannot make the server read far; a longer
// chain's start is reported as the earliest part found.
const maxChain = 1024

// MessageStart returns where the message holding position at starts: at
// itself, unless at is a record start inside a value split into records
// (the record before it is flagged "to be continued"), then the offset of
// the chain's first record. at must be a record start.
func (r *Reader) MessageStart(ctx context.Context, at int64) (int64, error) {
	for i := 0; i < maxChain && at > 0; i++ {
		last, found, err := LastRecord(ctx, r.pages, at)
		if err != nil {
			return 0, fmt.Errorf("stream %q: the message before %d: %w", r.name, at, err)
		}
		if !found || last.Attributes&messagevault.AttrContinued == 0 {
			break
		}
		at = last.Offset
	}
	return at, nil
}

// LastRecord returns the record that ends at pos, the committed position
// of pages, and where it starts: the record whose header names its own
// position and that decodes to end exactly there. pos 0 has none
// (found false), and neither has a pos no later than a trimmed stream's
// start.
func LastRecord(ctx context.Context, pages messagevault.PageReader, pos int64) (rec formats.Record, found bool, err error) {
	if pos == 0 {
		return rec, false, nil
	}
	from := max(0, pos-int64(formats.MaxRecordSize))
	b := make([]byte, pos-from)
	n, err := pages.ReadAt(ctx, b, from)
	if te := (*messagevault.TrimmedError)(nil); errors.As(err, &te) && te.Start > from {
		if te.Start >= pos {
			return rec, false, nil // nothing is stored before pos
		}
		// The stream starts after from (it was trimmed): a record starts
		// at its Start.
		b, from = b[te.Start-from:], te.Start
		n, err = pages.ReadAt(ctx, b, from)
	}
	if n < len(b) {
		if err == nil || errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return rec, false, fmt.Errorf("read the last record: %w", err)
	}
	// The first record start in b from which records follow back to back
	// up to pos exactly: its chain runs through the real records (see
	// walk), and its last record is the last one.
	for k := 0; k+formats.RecordOverhead <= len(b); k++ {
		if !namesPosition(b[k:], from+int64(k)) {
			continue
		}
		if end, ok := walk(b, from, k); !ok || end != len(b) {
			continue
		}
		for {
			rec, n, _ := formats.DecodeRecord(b[k:])
			if k+n == len(b) {
				rec.Offset = from + int64(k)
				return rec, true, nil
			}
			k += n
		}
	}
	return rec, false, fmt.Errorf("no record ends at the committed position %d: %w", pos, messagevault.ErrCorrupt)
}
