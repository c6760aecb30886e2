package formats

import (
	"crypto/md5"
	"encoding/binary"
	"fmt"

	"github.com/messagevault/messagevault"
)

// Transfer layout constants.
const (
	// TransferHeaderSize is the version byte and the count.
	TransferHeaderSize = 3
	// TransferMessageOverhead is a message's bytes besides key and value.
	TransferMessageOverhead = 1 + 1 + 2 + 4
	// TransferTrailerSize is the MD5 at the end of a body.
	TransferTrailerSize = md5.Size
)

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
	dst = append(dst, Version)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(msgs)))
	for i := range msgs {
		m := &msgs[i]
		dst = append(dst, m.Attributes, byte(len(m.Key)))
		dst = append(dst, m.Key...)
		dst = binary.LittleEndian.AppendUint16(dst, uint16(len(m.Value)))
		dst = append(dst, m.Value...)
		dst = binary.LittleEndian.AppendUint32(dst, m.CRC)
	}
	sum := md5.Sum(dst[start:])
	return append(dst, sum[:]...), nil
}

// DecodeTransfer checks a whole transfer body and appends its messages to
// dst, as views into body. It checks, in order: the version, the count, every
// length against the body, that nothing follows the last message but the
// MD5, the MD5, and every message's crc. On any error it returns dst
// unchanged and an error that says what is wrong and at which byte, so a
// publish is rejected whole.
func DecodeTransfer(body []byte, dst []messagevault.Message) ([]messagevault.Message, error) {
	start := len(dst)
	fail := func(err error) ([]messagevault.Message, error) {
		clear(dst[start:]) // drop views into a rejected body
		return dst[:start], err
	}
	if len(body) < TransferHeaderSize+TransferTrailerSize {
		return fail(fmt.Errorf("%w: body is %d bytes, the smallest is %d (version, count, md5)",
			ErrTruncated, len(body), TransferHeaderSize+TransferTrailerSize))
	}
	if body[0] != Version {
		return fail(fmt.Errorf("%w 0x%02x at byte 0 (want 0x01)", ErrVersion, body[0]))
	}
	count := int(binary.LittleEndian.Uint16(body[1:3]))
	if count == 0 {
		return fail(fmt.Errorf("%w: count is 0 at byte 1, a batch needs at least one message", ErrCount))
	}
	end := len(body) - TransferTrailerSize
	p := TransferHeaderSize
	for i := 0; i < count; i++ {
		if p == end {
			return fail(fmt.Errorf("%w: count says %d messages but the body holds %d", ErrCount, count, i))
		}
		if end-p < 2 {
			return fail(fmt.Errorf("%w: message %d at byte %d: header needs 2 bytes, %d left before the md5", ErrTruncated, i, p, end-p))
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
			return fail(fmt.Errorf("%w: message %d at byte %d: value of %d bytes and crc overrun the body (%d bytes left before the md5)", ErrTruncated, i, p, v, end-q))
		}
		value := body[q : q+v : q+v]
		q += v
		crc := binary.LittleEndian.Uint32(body[q:])
		dst = append(dst, messagevault.Message{Attributes: attr, Key: key, Value: value, CRC: crc})
		p = q + 4
	}
	if p != end {
		return fail(fmt.Errorf("%w: count says %d messages but %d bytes follow the last one before the md5", ErrCount, count, end-p))
	}
	if sum := md5.Sum(body[:end]); string(sum[:]) != string(body[end:]) {
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
