package stream

import (
	"container/list"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"regexp"

	"github.com/messagevault/messagevault/formats"
)

// Limits of the producer table that makes publishes exactly-once.
const (
	// SequencesPerProducer is how many of a producer's latest applied
	// sequences the table remembers, so that a retry of any of them is
	// answered as a duplicate.
	SequencesPerProducer = 32
	// DefaultMaxProducers is how many producers a stream remembers before
	// it forgets the least recently used one.
	DefaultMaxProducers = 1000
	// MaxProducerLen is the longest producer id.
	MaxProducerLen = 64
)

var producerRE = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,64}$`)

// ValidProducer reports whether id is a valid producer id: 1 to 64 of
// A-Z, a-z, 0-9, '.', '_', ':' and '-'.
func ValidProducer(id string) bool { return producerRE.MatchString(id) }

// AppendOptions are the conditions of one append.
type AppendOptions struct {
	// Producer and Sequence name the batch for exactly-once publishing:
	// a batch whose (Producer, Sequence) the stream has applied already
	// is answered as the first time (AppendResult.Duplicate set) and not
	// appended again. Sequences increase per producer; gaps are allowed.
	// An empty Producer publishes without this check.
	Producer string
	Sequence uint64
	// Follows, with Producer, makes a new batch conditional: it fails
	// with messagevault.ErrSequenceGap, appending nothing, unless the
	// producer's last applied sequence is Previous when the batch's turn
	// comes. A producer that queues a batch before the one before it is
	// durable sets it, so that the second is never stored if the first
	// failed. A duplicate is answered as without it.
	Follows  bool
	Previous uint64
	// ExpectPosition, when Expect is set, makes the append conditional:
	// it fails with messagevault.ErrPositionMismatch, appending nothing,
	// unless the stream's position is exactly ExpectPosition when the
	// batch's turn comes in its group.
	Expect         bool
	ExpectPosition int64
	// Queued, if set, is called once the batch holds its place in the
	// stream's order (batches queued later are written after it), before
	// the append returns. A caller that pipelines appends starts the next
	// one then. It is not called when the append fails before that.
	Queued func()
}

// PositionMismatchError is the error of a conditional append whose
// expected position was not the stream's; it wraps
// messagevault.ErrPositionMismatch.
type PositionMismatchError struct {
	Expected, Position int64
	Err                error
}

func (e *PositionMismatchError) Error() string {
	return fmt.Sprintf("expected position %d, but the stream is at %d: %v", e.Expected, e.Position, e.Err)
}

func (e *PositionMismatchError) Unwrap() error { return e.Err }

// applied is one batch a producer had applied: its sequence, where its
// records start and end, and how many records it has.
type applied struct {
	seq        uint64
	start, end int64
	count      uint32
}

// producer is what the table remembers of one producer.
type producer struct {
	id     string
	recent []applied // oldest first, at most SequencesPerProducer
	elem   *list.Element
}

func (p *producer) last() uint64 { return p.recent[len(p.recent)-1].seq }

// find returns the remembered batch with sequence seq.
func (p *producer) find(seq uint64) (applied, bool) {
	for _, a := range p.recent {
		if a.seq == seq {
			return a, true
		}
	}
	return applied{}, false
}

// producerTable remembers the latest sequences of the latest producers of
// one stream, least recently used first.
type producerTable struct {
	max     int
	byID    map[string]*producer
	lru     list.List // of *producer, least recently used at the front
	evicted int       // producers forgotten since the table was made
}

func newProducerTable(max int) *producerTable {
	if max <= 0 {
		max = DefaultMaxProducers
	}
	return &producerTable{max: max, byID: map[string]*producer{}}
}

// verdict is what the table says of a (producer, sequence).
type verdict int

const (
	verdictNew verdict = iota
	verdictDuplicate
	verdictTooOld
)

// check tells whether seq of id is new, a duplicate (with the batch it
// repeats) or too old to tell.
func (t *producerTable) check(id string, seq uint64) (verdict, applied) {
	p := t.byID[id]
	if p == nil || seq > p.last() {
		return verdictNew, applied{}
	}
	if a, ok := p.find(seq); ok {
		return verdictDuplicate, a
	}
	return verdictTooOld, applied{}
}

// last returns the last applied sequence of id.
func (t *producerTable) last(id string) (uint64, bool) {
	if p := t.byID[id]; p != nil {
		return p.last(), true
	}
	return 0, false
}

// add records a newly applied batch of id (seq above its last), making id
// the most recently used producer and forgetting the least recently used
// one beyond the table's size.
func (t *producerTable) add(id string, a applied) {
	p := t.byID[id]
	if p == nil {
		p = &producer{id: id}
		p.elem = t.lru.PushBack(p)
		t.byID[id] = p
		for len(t.byID) > t.max {
			old := t.lru.Remove(t.lru.Front()).(*producer)
			delete(t.byID, old.id)
			t.evicted++
		}
	} else {
		t.lru.MoveToBack(p.elem)
	}
	if len(p.recent) == SequencesPerProducer {
		p.recent = append(p.recent[:0], p.recent[1:]...)
	}
	p.recent = append(p.recent, a)
}

// Snapshot format of the producer table, as stored in a writer-state slot:
//
//	magic "MVP1", length of the whole snapshot (u32), crc32-IEEE of the
//	bytes from pos to the end (u32), pos, lastOff (int64 each), lastID
//	(16 bytes), producer count (u32), per producer, least recently used
//	first: id length (u8), id, entry count (u8), per entry oldest first:
//	seq (u64), start, end (int64), record count (u32). Integers are
//	little-endian. Bytes after the length are ignored: a slot may keep
//	stale bytes from a longer snapshot (the file backend overwrites in
//	place, which keeps its fdatasync to the data).
//
// pos is the position the snapshot describes; lastOff and lastID name the
// last record of the group that wrote it. A snapshot is believed only if
// that record is in the committed stream at lastOff with that id: a
// snapshot written for a group whose commit never landed fails the check
// (its record was never committed there, or was overwritten by another
// group's record with another id).
const snapshotMagic = "MVP1"

// snapshotHeader is the size of a snapshot's fixed part; maxSnapshot
// bounds a whole snapshot (DefaultMaxProducers of the longest ids, with
// every entry, take under 1 MiB).
const (
	snapshotHeader = 4 + 4 + 4 + 8 + 8 + 16 + 4
	maxSnapshot    = 64 << 20
)

// snapshot is the table as of one group.
type snapshot struct {
	pos, lastOff int64
	lastID       formats.ID
}

var errBadSnapshot = errors.New("bad producer snapshot")

func (t *producerTable) encode(dst []byte, s snapshot) []byte {
	dst = append(dst[:0], snapshotMagic...)
	dst = append(dst, 0, 0, 0, 0, 0, 0, 0, 0)
	dst = binary.LittleEndian.AppendUint64(dst, uint64(s.pos))
	dst = binary.LittleEndian.AppendUint64(dst, uint64(s.lastOff))
	dst = append(dst, s.lastID[:]...)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(t.byID)))
	for e := t.lru.Front(); e != nil; e = e.Next() {
		p := e.Value.(*producer)
		dst = append(dst, byte(len(p.id)))
		dst = append(dst, p.id...)
		dst = append(dst, byte(len(p.recent)))
		for _, a := range p.recent {
			dst = binary.LittleEndian.AppendUint64(dst, a.seq)
			dst = binary.LittleEndian.AppendUint64(dst, uint64(a.start))
			dst = binary.LittleEndian.AppendUint64(dst, uint64(a.end))
			dst = binary.LittleEndian.AppendUint32(dst, a.count)
		}
	}
	binary.LittleEndian.PutUint32(dst[4:8], uint32(len(dst)))
	binary.LittleEndian.PutUint32(dst[8:12], crc32.ChecksumIEEE(dst[12:]))
	return dst
}

// decodeSnapshot parses b into a table of at most max producers.
func decodeSnapshot(b []byte, max int) (*producerTable, snapshot, error) {
	var s snapshot
	const head = snapshotHeader
	if len(b) < head || string(b[:4]) != snapshotMagic {
		return nil, s, fmt.Errorf("%w: no header", errBadSnapshot)
	}
	if n := binary.LittleEndian.Uint32(b[4:]); n < head || int64(n) > int64(len(b)) {
		return nil, s, fmt.Errorf("%w: length %d of %d bytes", errBadSnapshot, n, len(b))
	} else {
		b = b[:n]
	}
	if crc32.ChecksumIEEE(b[12:]) != binary.LittleEndian.Uint32(b[8:12]) {
		return nil, s, fmt.Errorf("%w: checksum mismatch", errBadSnapshot)
	}
	s.pos = int64(binary.LittleEndian.Uint64(b[12:]))
	s.lastOff = int64(binary.LittleEndian.Uint64(b[20:]))
	copy(s.lastID[:], b[28:44])
	n := int(binary.LittleEndian.Uint32(b[44:]))
	b = b[head:]
	t := newProducerTable(max)
	for i := 0; i < n; i++ {
		if len(b) < 1 || len(b) < 2+int(b[0]) {
			return nil, s, fmt.Errorf("%w: producer %d cut short", errBadSnapshot, i)
		}
		id := string(b[1 : 1+b[0]])
		b = b[1+len(id):]
		k := int(b[0])
		b = b[1:]
		if k == 0 || k > SequencesPerProducer || len(b) < k*28 {
			return nil, s, fmt.Errorf("%w: producer %q has %d entries", errBadSnapshot, id, k)
		}
		for j := 0; j < k; j++ {
			t.add(id, applied{
				seq:   binary.LittleEndian.Uint64(b),
				start: int64(binary.LittleEndian.Uint64(b[8:])),
				end:   int64(binary.LittleEndian.Uint64(b[16:])),
				count: binary.LittleEndian.Uint32(b[24:]),
			})
			b = b[28:]
		}
	}
	t.evicted = 0
	return t, s, nil
}
