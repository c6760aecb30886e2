package formats

import (
	"encoding/binary"
	"encoding/hex"
	"time"
)

// IDEpoch is the zero time of message ids: 2010-01-01T00:00:00Z.
var IDEpoch = time.Date(2010, 1, 1, 0, 0, 0, 0, time.UTC)

// MaxIDOffset is the largest position a 6-byte id field can hold (256 TiB).
const MaxIDOffset = 1<<48 - 1

// ID is the 16-byte message id of the v1 record.
type ID [16]byte

// NewID builds an id from milliseconds since IDEpoch, the record's byte
// position and a counter. ms and offset are truncated to 48 bits.
func NewID(ms, offset int64, counter uint32) ID {
	var id ID
	putUint48(id[0:6], uint64(ms))
	putUint48(id[6:12], uint64(offset))
	binary.BigEndian.PutUint32(id[12:16], counter)
	return id
}

// Millis returns the id's milliseconds since IDEpoch.
func (id ID) Millis() int64 { return int64(uint48(id[0:6])) }

// Time returns the id's creation time in UTC.
func (id ID) Time() time.Time { return IDEpoch.Add(time.Duration(id.Millis()) * time.Millisecond) }

// Offset returns the byte position of the record the id was made for.
func (id ID) Offset() int64 { return int64(uint48(id[6:12])) }

// Counter returns the id's process-local counter.
func (id ID) Counter() uint32 { return binary.BigEndian.Uint32(id[12:16]) }

// String formats the id as the original does: 32 hex digits with dashes
// after the 12th and the 24th.
func (id ID) String() string {
	var b [34]byte
	hex.Encode(b[0:12], id[0:6])
	b[12] = '-'
	hex.Encode(b[13:25], id[6:12])
	b[25] = '-'
	hex.Encode(b[26:34], id[12:16])
	return string(b[:])
}

// MillisSinceEpoch converts t to milliseconds since IDEpoch; times before
// the epoch give 0.
func MillisSinceEpoch(t time.Time) int64 { return max(t.Sub(IDEpoch).Milliseconds(), 0) }

func putUint48(b []byte, v uint64) {
	_ = b[5]
	b[0] = byte(v >> 40)
	b[1] = byte(v >> 32)
	b[2] = byte(v >> 24)
	b[3] = byte(v >> 16)
	b[4] = byte(v >> 8)
	b[5] = byte(v)
}

func uint48(b []byte) uint64 {
	_ = b[5]
	return uint64(b[0])<<40 | uint64(b[1])<<32 | uint64(b[2])<<24 | uint64(b[3])<<16 | uint64(b[4])<<8 | uint64(b[5])
}
