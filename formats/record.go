package formats

import (
	"encoding/binary"
	"fmt"

	"github.com/messagevault/messagevault"
)

// Record layout constants.
const (
	// Version is the version byte of v1 records and transfer bodies.
	Version = 0x01
	// RecordOverhead is the size of a record with an empty key and value.
	RecordOverhead = 1 + 1 + 16 + 1 + 2 + 4
	// MaxRecordSize is the size of the largest possible record.
	MaxRecordSize = RecordOverhead + messagevault.MaxKeySize + messagevault.MaxValueSize
)

// Record is one decoded record. Key and Value are views into the decoder's
// input; copy them to keep them past the input's lifetime.
type Record struct {
	// Offset is the record's byte position in the stream. Decoders leave it
	// to the caller, which knows where the input came from.
	Offset     int64
	Attributes byte
	ID         ID
	Key        []byte
	Value      []byte
	CRC        uint32
}

// Size returns the record's encoded length in bytes.
func (r *Record) Size() int { return RecordSize(len(r.Key), len(r.Value)) }

// Message returns the record's attributes, key, value and crc as a Message
// (sharing the record's slices).
func (r *Record) Message() messagevault.Message {
	return messagevault.Message{Attributes: r.Attributes, Key: r.Key, Value: r.Value, CRC: r.CRC}
}

// RecordSize returns the encoded length of a record with the given key and
// value lengths.
func RecordSize(keyLen, valueLen int) int { return RecordOverhead + keyLen + valueLen }

// AppendRecord appends the v1 record of m with the given id to dst and
// returns the extended slice. It writes m.CRC as given: callers validate m
// first (messagevault.Message.Validate). It returns ErrTooLarge, and dst
// unchanged, if the key or value is over the limits.
func AppendRecord(dst []byte, id ID, m messagevault.Message) ([]byte, error) {
	if len(m.Key) > messagevault.MaxKeySize || len(m.Value) > messagevault.MaxValueSize {
		return dst, fmt.Errorf("%w: key %d bytes (limit %d), value %d bytes (limit %d)",
			ErrTooLarge, len(m.Key), messagevault.MaxKeySize, len(m.Value), messagevault.MaxValueSize)
	}
	dst = append(dst, Version, m.Attributes)
	dst = append(dst, id[:]...)
	dst = append(dst, byte(len(m.Key)))
	dst = append(dst, m.Key...)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(m.Value)))
	dst = append(dst, m.Value...)
	dst = binary.LittleEndian.AppendUint32(dst, m.CRC)
	return dst, nil
}

// DecodeRecord decodes the record at the start of b and returns it with its
// length. It checks the version byte and the crc. When b ends before the
// record does it returns the bare ErrTruncated (no allocation), so a reader
// can fetch more bytes and try again; other errors say what is wrong and at
// which byte of b.
func DecodeRecord(b []byte) (Record, int, error) {
	var r Record
	if len(b) < 1 {
		return r, 0, ErrTruncated
	}
	switch b[0] {
	case Version:
	case 0:
		return r, 0, ErrNoRecord
	default:
		return r, 0, fmt.Errorf("%w 0x%02x at byte 0 (want 0x01)", ErrVersion, b[0])
	}
	if len(b) < 19 {
		return r, 0, ErrTruncated
	}
	r.Attributes = b[1]
	copy(r.ID[:], b[2:18])
	k := int(b[18])
	if len(b) < 19+k+2 {
		return r, 0, ErrTruncated
	}
	r.Key = b[19 : 19+k : 19+k]
	v := int(binary.LittleEndian.Uint16(b[19+k:]))
	end := 21 + k + v + 4
	if len(b) < end {
		return r, 0, ErrTruncated
	}
	r.Value = b[21+k : 21+k+v : 21+k+v]
	r.CRC = binary.LittleEndian.Uint32(b[end-4:])
	if want := messagevault.Checksum(r.Attributes, r.Key, r.Value); want != r.CRC {
		return r, 0, fmt.Errorf("%w: crc at byte %d of a %d-byte record is %#08x, its attributes, key and value give %#08x",
			ErrCRC, end-4, end, r.CRC, want)
	}
	return r, end, nil
}
