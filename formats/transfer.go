package formats

import (
	"crypto/md5"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"slices"

	"github.com/messagevault/messagevault"
)

// Transfer layout constants.
const (
	// TransferHeaderSize is the version byte and the count.
	TransferHeaderSize = 3
	// TransferMessageOverhead is a message's bytes besides key and value.
	TransferMessageOverhead = 1 + 1 + 2 + 4
	// TransferTrailerSize is the MD5 at the end of a v1 body.
	TransferTrailerSize = md5.Size
	// TransferV2 is the version byte of a v2 body: the v1 layout with a
	// CRC-32C of the body instead of its MD5, which costs a small part of
	// an MD5 (CRC-32C is computed by the processor).
	TransferV2 = 0x02
	// TransferV2TrailerSize is the CRC-32C at the end of a v2 body.
	TransferV2TrailerSize = 4
	// TransferV2ContentType is the media type of a v2 body.
	TransferV2ContentType = "application/vnd.messagevault.transfer-v2"
)

// castagnoli is the CRC-32C table (hardware-accelerated on amd64 and arm64).
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// TransferSize returns the length of a transfer body holding msgs.
func TransferSize(msgs []messagevault.Message) int {
	n := TransferHeaderSize + TransferTrailerSize
	for i := range msgs {
		n += TransferMessageOverhead + len(msgs[i].Key) + len(msgs[i].Value)
	}
	return n
}

// AppendTransfer appends the v1 transfer body of msgs to dst, MD5 included,
// and returns the extended slice. It writes each message's CRC as given. It
// returns an error, and dst unchanged, if msgs is empty, holds more than
// messagevault.MaxBatchCount messages, or a key or value is too large.
func AppendTransfer(dst []byte, msgs []messagevault.Message) ([]byte, error) {
	return appendTransfer(dst, msgs, Version)
}

// AppendTransferV2 appends the v2 transfer body of msgs to dst: as
// AppendTransfer, with version byte TransferV2 and a CRC-32C trailer.
func AppendTransferV2(dst []byte, msgs []messagevault.Message) ([]byte, error) {
	return appendTransfer(dst, msgs, TransferV2)
}

func appendTransfer(dst []byte, msgs []messagevault.Message, version byte) ([]byte, error) {
	if len(msgs) == 0 || len(msgs) > messagevault.MaxBatchCount {
		return dst, fmt.Errorf("%w: %d messages (want 1..%d)", ErrCount, len(msgs), messagevault.MaxBatchCount)
	}
	for i := range msgs {
		if len(msgs[i].Key) > messagevault.MaxKeySize || len(msgs[i].Value) > messagevault.MaxValueSize {
			return dst, fmt.Errorf("%w: message %d has a key of %d bytes (limit %d) and a value of %d bytes (limit %d)",
				ErrTooLarge, i, len(msgs[i].Key), messagevault.MaxKeySize, len(msgs[i].Value), messagevault.MaxValueSize)
		}
	}
	start := len(dst)
	dst = append(dst, version)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(msgs)))
	for i := range msgs {
		m := &msgs[i]
		dst = append(dst, m.Attributes, byte(len(m.Key)))
		dst = append(dst, m.Key...)
		dst = binary.LittleEndian.AppendUint16(dst, uint16(len(m.Value)))
		dst = append(dst, m.Value...)
		dst = binary.LittleEndian.AppendUint32(dst, m.CRC)
	}
	if version == TransferV2 {
		return binary.LittleEndian.AppendUint32(dst, crc32.Checksum(dst[start:], castagnoli)), nil
	}
	sum := md5.Sum(dst[start:])
	return append(dst, sum[:]...), nil
}

// DecodeTransfer checks a whole transfer body, v1 or v2, and appends its
// messages to dst, as views into body. It checks, in order: the version,
// the count, every length against the body, that nothing follows the last
// message but the trailer, the trailer (MD5, or CRC-32C in v2), and every
// message's crc. On any error it returns dst
// unchanged and an error that says what is wrong and at which byte, so a
// publish is rejected whole.
func DecodeTransfer(body []byte, dst []messagevault.Message) ([]messagevault.Message, error) {
	start := len(dst)
	fail := func(err error) ([]messagevault.Message, error) {
		clear(dst[start:]) // drop views into a rejected body
		return dst[:start], err
	}
	if len(body) == 0 {
		return fail(fmt.Errorf("%w: body is 0 bytes, the smallest is %d (version, count, md5)", ErrTruncated, TransferHeaderSize+TransferTrailerSize))
	}
	trailer, sumName := TransferTrailerSize, "md5"
	switch body[0] {
	case Version:
	case TransferV2:
		trailer, sumName = TransferV2TrailerSize, "crc32c"
	default:
		return fail(fmt.Errorf("%w 0x%02x at byte 0 (want 0x01, or 0x02 for a v2 body)", ErrVersion, body[0]))
	}
	if len(body) < TransferHeaderSize+trailer {
		return fail(fmt.Errorf("%w: body is %d bytes, the smallest is %d (version, count, %s)",
			ErrTruncated, len(body), TransferHeaderSize+trailer, sumName))
	}
	count := int(binary.LittleEndian.Uint16(body[1:3]))
	if count == 0 {
		return fail(fmt.Errorf("%w: count is 0 at byte 1, a batch needs at least one message", ErrCount))
	}
	end := len(body) - trailer
	p := TransferHeaderSize
	// Room for the messages, as many as the body can hold (each takes 4
	// bytes at least), so that a lying count allocates nothing large.
	dst = slices.Grow(dst, min(count, (end-p)/4))
	for i := 0; i < count; i++ {
		if p == end {
			return fail(fmt.Errorf("%w: count says %d messages but the body holds %d", ErrCount, count, i))
		}
		if end-p < 2 {
			return fail(fmt.Errorf("%w: message %d at byte %d: header needs 2 bytes, %d left before the %s", ErrTruncated, i, p, end-p, sumName))
		}
		attr, k := body[p], int(body[p+1])
		q := p + 2
		if end-q < k+2 {
			return fail(fmt.Errorf("%w: message %d at byte %d: key of %d bytes and value length overrun the body", ErrTruncated, i, p, k))
		}
		key := body[q : q+k : q+k]
		q += k
		v := int(binary.LittleEndian.Uint16(body[q:]))
		q += 2
		if end-q < v+4 {
			return fail(fmt.Errorf("%w: message %d at byte %d: value of %d bytes and crc overrun the body (%d bytes left before the %s)", ErrTruncated, i, p, v, end-q, sumName))
		}
		value := body[q : q+v : q+v]
		q += v
		crc := binary.LittleEndian.Uint32(body[q:])
		dst = append(dst, messagevault.Message{Attributes: attr, Key: key, Value: value, CRC: crc})
		p = q + 4
	}
	if p != end {
		return fail(fmt.Errorf("%w: count says %d messages but %d bytes follow the last one before the %s", ErrCount, count, end-p, sumName))
	}
	if trailer == TransferV2TrailerSize {
		if got, want := binary.LittleEndian.Uint32(body[end:]), crc32.Checksum(body[:end], castagnoli); got != want {
			return fail(fmt.Errorf("%w: body of %d bytes: crc32c at byte %d is %#08x, the body gives %#08x", ErrMD5, len(body), end, got, want))
		}
	} else if sum := md5.Sum(body[:end]); string(sum[:]) != string(body[end:]) {
		return fail(fmt.Errorf("%w: body of %d bytes: md5 at byte %d is %x, the body gives %x", ErrMD5, len(body), end, body[end:], sum))
	}
	msgs := dst[start:]
	for i := range msgs {
		m := &msgs[i]
		if want := messagevault.Checksum(m.Attributes, m.Key, m.Value); want != m.CRC {
			return fail(fmt.Errorf("%w: message %d stores crc %#08x, its content gives %#08x", ErrCRC, i, m.CRC, want))
		}
	}
	return dst, nil
}
