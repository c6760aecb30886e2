package stream

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/formats"
)

// The time index. Beside its segments a stream has a sparse index of
// record times, kept by the Writer and read with the same grant as the
// records (PageWriter.WriteIndex, PageReader.ReadIndex): 16-byte entries,
// the position of a record and its id's time (milliseconds since the id
// epoch), little-endian, in position order. An entry is written for the
// first record at or after every IndexInterval bytes of the stream. An
// entry whose time is 0 is empty.
//
// The index holds hints, not truth: its writes are neither fenced nor
// flushed, and a crash can leave entries for records that were never
// committed. A reader uses an entry only for a record the stream holds,
// and checks the record's header (its id names the position and carries
// the time) before relying on it; the Writer clears what lies past its
// last good entry when it opens. So a lost entry costs a lookup a little
// time, and a wrong one is never believed.
const (
	// IndexInterval is how many bytes of the stream lie between index
	// entries, at least.
	IndexInterval = 1 << 20
	indexEntry    = 16
	// indexClear is how many pages past its last good entry a Writer
	// clears when it opens: more than one group can have written.
	indexClear = 4
	// indexWriteTimeout bounds one index write within a group.
	indexWriteTimeout = 5 * time.Second
)

// indexEntryAt is one entry: a record's position and id time.
type indexEntryAt struct{ pos, ms int64 }

func decodeEntry(b []byte) indexEntryAt {
	return indexEntryAt{int64(binary.LittleEndian.Uint64(b)), int64(binary.LittleEndian.Uint64(b[8:]))}
}

// indexWriter is the Writer's end of the index: the entries it has, the
// page that holds the next one, and where the next entry is due.
type indexWriter struct {
	off   bool                        // the index could not be read: write none until the next load
	count int64                       // good entries in the index
	page  [messagevault.PageSize]byte // the page that holds entry count
	next  int64                       // the next entry is for the first record at or after this position
	clear int                         // pages past the current one still to clear
	add   []indexEntryAt              // entries of the group being written
}

// load finds the index's good entries for a stream committed up to pos:
// those whose positions rise and lie below pos, in one run from the
// first (it reads O(log n) entries), and clears what follows them.
func (x *indexWriter) load(ctx context.Context, pages messagevault.PageWriter, pos int64) error {
	x.off = false
	var b [indexEntry]byte
	prev := map[int64]indexEntryAt{}
	entry := func(k int64) (indexEntryAt, bool, error) {
		if e, ok := prev[k]; ok {
			return e, true, nil
		}
		n, err := pages.ReadIndex(ctx, b[:], k*indexEntry)
		if n < indexEntry {
			if err == nil || errors.Is(err, io.EOF) {
				return indexEntryAt{}, false, nil
			}
			return indexEntryAt{}, false, fmt.Errorf("read the time index: %w", err)
		}
		e := decodeEntry(b[:])
		prev[k] = e
		return e, true, nil
	}
	// good(k): entry k is there and fits. Entries are written in
	// position order, so good holds for a prefix.
	good := func(k int64) (bool, error) {
		e, ok, err := entry(k)
		if err != nil || !ok || e.ms <= 0 || e.pos < 0 || e.pos >= pos {
			return false, err
		}
		if k > 0 {
			p, _, err := entry(k - 1)
			if err != nil || p.pos >= e.pos {
				return false, err
			}
		}
		return true, nil
	}
	hi := int64(1)
	for {
		ok, err := good(hi - 1)
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		hi *= 2
	}
	lo := hi / 2 // good(lo-1) holds (or lo is 0); good(hi-1) does not
	for lo < hi-1 {
		mid := lo + (hi-lo)/2
		ok, err := good(mid - 1)
		if err != nil {
			return err
		}
		if ok {
			lo = mid
		} else {
			hi = mid
		}
	}
	if ok, err := good(lo); err != nil {
		return err
	} else if ok {
		lo++
	}
	x.count = lo
	clear(x.page[:])
	first := x.count * indexEntry / messagevault.PageSize * messagevault.PageSize
	if k := int(x.count*indexEntry - first); k > 0 {
		n, err := pages.ReadIndex(ctx, x.page[:k], first)
		if n < k {
			if err == nil || errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("read the time index: %w", err)
		}
	}
	x.next = 0
	if x.count > 0 {
		last, _, err := entry(x.count - 1)
		if err != nil {
			return err
		}
		x.next = (last.pos/IndexInterval + 1) * IndexInterval
	}
	if pos > 0 {
		// A stream written before the index (or whose entries were
		// lost) is indexed from where it is.
		x.next = max(x.next, ((pos-1)/IndexInterval+1)*IndexInterval)
	}
	x.add = x.add[:0]
	x.clear = 0
	// Entries past the good ones were left by a group that was never
	// committed: clear them now, before the position can pass them.
	if e, ok, err := entry(x.count); err != nil {
		return err
	} else if ok && e != (indexEntryAt{}) {
		x.clear = indexClear
		if err := x.write(ctx, pages); err != nil {
			return fmt.Errorf("clear the time index past its last good entry: %w", err)
		}
	}
	return nil
}

// note records that a record of id time ms starts at off, in a group
// being written.
func (x *indexWriter) note(off, ms int64) {
	if !x.off && off >= x.next {
		x.add = append(x.add, indexEntryAt{off, ms})
		x.next = (off/IndexInterval + 1) * IndexInterval
	}
}

// write writes the group's entries (and the pages to clear after a
// reload) with one WriteIndex. On error the entries are dropped: a lost
// entry is a hint less.
func (x *indexWriter) write(ctx context.Context, pages messagevault.PageWriter) error {
	iw := x.prepare()
	if iw == nil {
		return nil
	}
	iw.send(ctx, pages)
	x.apply(iw)
	return iw.err
}

// indexWrite is one WriteIndex of the group's entries, prepared by the
// Writer's goroutine; send may run on another while the Writer goes on,
// and apply then takes its outcome back.
type indexWrite struct {
	first int64  // the byte of the index buf starts at
	buf   []byte // whole pages: the current page, the new entries, pages to clear
	count int64  // good entries once it is written
	err   error
	done  chan struct{} // closed by send
}

// prepare takes the group's entries (and the pages to clear after a
// reload) into an indexWrite, or returns nil if there is nothing to
// write.
func (x *indexWriter) prepare() *indexWrite {
	if x.off || len(x.add) == 0 && x.clear == 0 {
		return nil
	}
	first := x.count * indexEntry / messagevault.PageSize * messagevault.PageSize
	buf := make([]byte, 0, messagevault.PageSize*(1+x.clear+len(x.add)*indexEntry/messagevault.PageSize+1))
	buf = append(buf, x.page[:x.count*indexEntry-first]...)
	for _, e := range x.add {
		buf = binary.LittleEndian.AppendUint64(buf, uint64(e.pos))
		buf = binary.LittleEndian.AppendUint64(buf, uint64(e.ms))
	}
	count := x.count + int64(len(x.add))
	buf = padPage(buf)
	buf = append(buf, make([]byte, x.clear*messagevault.PageSize)...)
	x.add = x.add[:0]
	return &indexWrite{first: first, buf: buf, count: count, done: make(chan struct{})}
}

// send writes iw: a hint is not worth a group, so a slow index write is
// cut short.
func (iw *indexWrite) send(ctx context.Context, pages messagevault.PageWriter) {
	ctx, cancel := context.WithTimeout(ctx, indexWriteTimeout)
	defer cancel()
	iw.err = pages.WriteIndex(ctx, iw.first, iw.buf)
	close(iw.done)
}

// apply takes the outcome of iw, once sent: on success its entries are
// the index's; on error they are dropped.
func (x *indexWriter) apply(iw *indexWrite) {
	if iw.err != nil {
		return
	}
	x.count, x.clear = iw.count, 0
	last := iw.count * indexEntry / messagevault.PageSize * messagevault.PageSize
	clear(x.page[:])
	copy(x.page[:], iw.buf[last-iw.first:iw.count*indexEntry-iw.first])
}

// indexPage is how much of the index a lookup reads at a time: 4,096
// entries, 4 GiB of stream. A lookup bisects the index by these pages.
// (A variable for tests, which make it small.)
var indexPage = 64 << 10

// indexPages reads pages of a stream's time index for one lookup, and
// keeps the good entries of those it read.
type indexPages struct {
	ctx   context.Context
	pages messagevault.PageReader
	pos   int64 // the committed position: entries at or past it are not believed
	read  map[int64][]indexEntryAt
}

// page returns the good entries of index page k (entries with a time,
// rising, below pos; the page ends at the first that is not).
func (x *indexPages) page(k int64) ([]indexEntryAt, error) {
	if e, ok := x.read[k]; ok {
		return e, nil
	}
	buf := make([]byte, indexPage)
	n, err := x.pages.ReadIndex(x.ctx, buf, k*int64(indexPage))
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read the time index: %w", err)
	}
	var out []indexEntryAt
	for i := 0; i+indexEntry <= n; i += indexEntry {
		e := decodeEntry(buf[i:])
		if e.ms <= 0 || e.pos < 0 || e.pos >= x.pos || len(out) > 0 && e.pos <= out[len(out)-1].pos {
			break
		}
		out = append(out, e)
	}
	x.read[k] = out
	return out, nil
}

// indexBounds narrows a lookup of time want in a stream of extent e with
// the index: it returns lo, a record start whose record is older than
// want (or e.Start), and hi, a record start whose record is at or after
// want (or e.Position). It bisects the index by pages, a few reads of 64
// KiB (one for a stream under 4 GiB), and checks each bound it takes from
// the index against the record's header first.
func (r *Reader) indexBounds(ctx context.Context, e messagevault.Extent, want int64) (lo, hi int64, err error) {
	lo, hi = e.Start, e.Position
	x := &indexPages{ctx: ctx, pages: r.pages, pos: e.Position, read: map[int64][]indexEntryAt{}}
	// before(k): page k starts with an entry older than want. Entries
	// rise in time along the stream, so before holds for a prefix of
	// the pages. Find the last page it holds for.
	before := func(k int64) (bool, error) {
		p, err := x.page(k)
		return err == nil && len(p) > 0 && p[0].ms < want, err
	}
	ok, err := before(0)
	if err != nil || !ok {
		if err == nil {
			hi, err = r.checkedHi(ctx, e, x, 0, 0, hi)
		}
		return lo, hi, err
	}
	// Exponential then binary search: before(last) holds, before(past)
	// does not.
	last, past := int64(0), int64(1)
	for {
		if full, err := x.page(last); err != nil {
			return lo, hi, err
		} else if len(full) < indexPage/indexEntry {
			past = last + 1 // a page that is not full is the last
			break
		}
		ok, err := before(past)
		if err != nil {
			return lo, hi, err
		}
		if !ok {
			break
		}
		last, past = past, past*2+1
	}
	for past-last > 1 {
		mid := last + (past-last)/2
		ok, err := before(mid)
		if err != nil {
			return lo, hi, err
		}
		if ok {
			last = mid
		} else {
			past = mid
		}
	}
	p, err := x.page(last)
	if err != nil {
		return lo, hi, err
	}
	i := sort.Search(len(p), func(i int) bool { return p[i].ms >= want })
	if ok, err := r.checkEntry(ctx, e, p[i-1]); err != nil {
		return e.Start, e.Position, err
	} else if ok {
		lo = p[i-1].pos
	}
	hi, err = r.checkedHi(ctx, e, x, last, i, hi)
	return lo, hi, err
}

// checkedHi returns the position of entry i of index page k (or the first
// of the next page, when i is past page k's end) if it checks out, or hi.
func (r *Reader) checkedHi(ctx context.Context, e messagevault.Extent, x *indexPages, k int64, i int, hi int64) (int64, error) {
	p, err := x.page(k)
	if err != nil {
		return hi, err
	}
	if i >= len(p) {
		if len(p) < indexPage/indexEntry {
			return hi, nil // the index ends there
		}
		if p, err = x.page(k + 1); err != nil || len(p) == 0 {
			return hi, err
		}
		i = 0
	}
	ok, err := r.checkEntry(ctx, e, p[i])
	if err != nil || !ok {
		return hi, err
	}
	return p[i].pos, nil
}

// checkEntry reports whether the record at an index entry's position is a
// stored record that names that position and carries the entry's time.
func (r *Reader) checkEntry(ctx context.Context, e messagevault.Extent, x indexEntryAt) (bool, error) {
	if x.pos < e.Start || x.pos >= e.Position {
		return false, nil
	}
	var head [18]byte
	if _, err := r.pages.ReadAt(ctx, head[:], x.pos); err != nil {
		return false, err
	}
	var id formats.ID
	copy(id[:], head[2:18])
	return namesPosition(head[:], x.pos) && int64(id.Millis()) == x.ms, nil
}
