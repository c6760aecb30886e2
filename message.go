package messagevault

import (
	"fmt"
	"hash/crc32"
)

// Limits of the v1 formats (formats/doc.go).
const (
	// MaxKeySize is the largest key a record can hold.
	MaxKeySize = 255
	// MaxValueSize is the largest value a record can hold; larger payloads
	// are split client-side with the AttrContinued flag.
	MaxValueSize = 65535
	// MaxBatchCount is the largest number of messages in one publish.
	MaxBatchCount = 65535
	// PageSize is the unit of every storage write: Azure page blobs are
	// written in 512-byte pages, and the local backend keeps the same rule.
	PageSize = 512
)

// Record attribute bits (formats/doc.go).
const (
	// AttrLZ4 marks a value compressed with LZ4.
	AttrLZ4 byte = 1 << 0
	// AttrContinued marks a value that continues in the next record.
	AttrContinued byte = 1 << 1
)

// Message is one message as a producer sends it: attributes, key, value and
// the producer's checksum. Key and Value may alias a larger buffer (a request
// body, a read chunk); a Message never owns more than it points at.
type Message struct {
	// Attributes holds the AttrLZ4 and AttrContinued bits.
	Attributes byte
	// Key is usually the message type ("contract"), at most MaxKeySize bytes.
	Key []byte
	// Value is the payload, at most MaxValueSize bytes.
	Value []byte
	// CRC is attributes XOR crc32(key) XOR crc32(value), as computed by the
	// producer; see Checksum.
	CRC uint32
}

// NewMessage returns a message with its CRC computed. It does not check
// sizes; Validate does.
func NewMessage(key, value []byte, attributes byte) Message {
	return Message{Attributes: attributes, Key: key, Value: value, CRC: Checksum(attributes, key, value)}
}

// Checksum computes the v1 record checksum: the attribute byte XOR the
// CRC-32 (IEEE) of the key XOR the CRC-32 (IEEE) of the value.
func Checksum(attributes byte, key, value []byte) uint32 {
	return uint32(attributes) ^ crc32.ChecksumIEEE(key) ^ crc32.ChecksumIEEE(value)
}

// Validate reports whether m fits the v1 record format and carries the right
// checksum. The error wraps ErrInvalidMessage.
func (m Message) Validate() error {
	if len(m.Key) > MaxKeySize {
		return fmt.Errorf("%w: key is %d bytes, the limit is %d", ErrInvalidMessage, len(m.Key), MaxKeySize)
	}
	if len(m.Value) > MaxValueSize {
		return fmt.Errorf("%w: value is %d bytes, the limit is %d", ErrInvalidMessage, len(m.Value), MaxValueSize)
	}
	if want := Checksum(m.Attributes, m.Key, m.Value); want != m.CRC {
		return fmt.Errorf("%w: crc is %#08x, the key and value give %#08x", ErrInvalidMessage, m.CRC, want)
	}
	return nil
}
