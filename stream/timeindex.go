package stream

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"

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
)

// indexEntryAt is one entry: a record's position and id time.
type indexEntryAt struct{ pos, ms int64 }

func decodeEntry(b []byte) indexEntryAt {
	return indexEntryAt{int64(binary.LittleEndian.Uint64(b)), int64(binary.LittleEndian.Uint64(b[8:]))}
}

// indexWriter is the Writer's end of the index: the entries it has, the
// page that holds the next one, and where the next entry is due.
type indexWriter struct {
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
	if off >= x.next {
		x.add = append(x.add, indexEntryAt{off, ms})
		x.next = (off/IndexInterval + 1) * IndexInterval
	}
}

// write writes the group's entries (and the pages to clear after a
// reload) with one WriteIndex. On error the entries are dropped: a lost
// entry is a hint less.
func (x *indexWriter) write(ctx context.Context, pages messagevault.PageWriter) error {
	if len(x.add) == 0 && x.clear == 0 {
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
	if err := pages.WriteIndex(ctx, first, buf); err != nil {
		return err
	}
	x.count, x.clear = count, 0
	last := count * indexEntry / messagevault.PageSize * messagevault.PageSize
	clear(x.page[:])
	copy(x.page[:], buf[last-first:count*indexEntry-first])
	return nil
}

// TimeIndexes remembers the time index entries readers have read, by
// stream, so that a lookup reads only the entries written since the last
// one. Readers of one storage share it (vault does). It is safe for
// concurrent use.
type TimeIndexes struct {
	mu sync.Mutex
	m  map[string]*cachedIndex
}

type cachedIndex struct {
	entries []indexEntryAt // good entries, rising positions
}

// Forget drops what is known of stream's index (a deleted stream).
func (t *TimeIndexes) Forget(stream string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.m, stream)
}

// indexReadChunk is how much of the index a lookup reads at once.
const indexReadChunk = 64 << 10

// entries returns the good entries of the index below pos, reading those
// written since the last call. A nil TimeIndexes reads them all.
func (t *TimeIndexes) entries(ctx context.Context, name string, pages messagevault.PageReader, pos int64) ([]indexEntryAt, error) {
	var c *cachedIndex
	if t != nil {
		t.mu.Lock()
		if t.m == nil {
			t.m = map[string]*cachedIndex{}
		}
		if c = t.m[name]; c == nil {
			c = &cachedIndex{}
			t.m[name] = c
		}
		got := c.entries
		t.mu.Unlock()
		if n := len(got); n > 0 && got[n-1].pos >= pos {
			// All that is known lies within the stream already read.
			return got[:sort.Search(n, func(i int) bool { return got[i].pos >= pos })], nil
		}
	}
	var known []indexEntryAt
	if c != nil {
		t.mu.Lock()
		known = c.entries
		t.mu.Unlock()
	}
	out := append([]indexEntryAt(nil), known...)
	buf := make([]byte, indexReadChunk)
	for off := int64(len(out)) * indexEntry; ; off += int64(len(buf)) {
		n, err := pages.ReadIndex(ctx, buf, off)
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("read the time index: %w", err)
		}
		stop := n < len(buf)
		for k := 0; k+indexEntry <= n; k += indexEntry {
			e := decodeEntry(buf[k:])
			if e.ms <= 0 || e.pos >= pos || len(out) > 0 && e.pos <= out[len(out)-1].pos {
				stop = true
				break
			}
			out = append(out, e)
		}
		if stop {
			break
		}
	}
	if c != nil {
		t.mu.Lock()
		if len(out) > len(c.entries) {
			c.entries = out
		}
		t.mu.Unlock()
	}
	return out, nil
}

// drop forgets name's entries: one did not match the records.
func (t *TimeIndexes) drop(name string) {
	if t != nil {
		t.Forget(name)
	}
}

// indexBounds narrows a lookup of time want in a stream of extent e with
// the index: it returns lo, a record start whose record is older than
// want (or e.Start), and hi, a record start whose record is at or after
// want (or e.Position). Each bound it takes from the index is checked
// against the record's header first.
func (r *Reader) indexBounds(ctx context.Context, e messagevault.Extent, want int64) (lo, hi int64, err error) {
	lo, hi = e.Start, e.Position
	entries, err := r.cfg.Index.entries(ctx, r.name, r.pages, e.Position)
	if err != nil {
		return lo, hi, err
	}
	i := sort.Search(len(entries), func(i int) bool { return entries[i].ms >= want })
	check := func(x indexEntryAt) (bool, error) {
		if x.pos < e.Start {
			return false, nil
		}
		var head [18]byte
		if _, err := r.pages.ReadAt(ctx, head[:], x.pos); err != nil {
			return false, err
		}
		var id formats.ID
		copy(id[:], head[2:18])
		if !namesPosition(head[:], x.pos) || int64(id.Millis()) != x.ms {
			r.cfg.Index.drop(r.name)
			return false, nil
		}
		return true, nil
	}
	if i > 0 {
		if ok, err := check(entries[i-1]); err != nil {
			return e.Start, e.Position, err
		} else if ok {
			lo = entries[i-1].pos
		}
	}
	if i < len(entries) {
		if ok, err := check(entries[i]); err != nil {
			return e.Start, e.Position, err
		} else if ok {
			hi = entries[i].pos
		}
	}
	return lo, hi, nil
}
