package kafka

import (
	"encoding/binary"
	"hash/crc32"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// batchOf encodes a v2 record batch of the given key/value pairs, with a
// correct CRC-32C; change may alter the batch before the CRC is set.
func batchOf(pairs [][2]string, change func(*kmsg.RecordBatch)) []byte {
	var recs []byte
	for i, p := range pairs {
		r := kmsg.Record{OffsetDelta: int32(i), Key: []byte(p[0]), Value: []byte(p[1])}
		body := r.AppendTo(nil)[1:] // without the placeholder length
		recs = binary.AppendVarint(recs, int64(len(body)))
		recs = append(recs, body...)
	}
	b := kmsg.RecordBatch{Magic: 2, ProducerID: -1, ProducerEpoch: -1, FirstSequence: -1, LastOffsetDelta: int32(len(pairs) - 1), NumRecords: int32(len(pairs)), Records: recs}
	if change != nil {
		change(&b)
	}
	out := b.AppendTo(nil)
	binary.BigEndian.PutUint32(out[8:], uint32(len(out)-12))
	binary.BigEndian.PutUint32(out[17:], crc32.Checksum(out[21:], castagnoli))
	return out
}

func TestDecodeBatches(t *testing.T) {
	two := append(batchOf([][2]string{{"k1", "v1"}, {"", "v2"}}, nil), batchOf([][2]string{{"k3", "v3"}}, nil)...)
	msgs, code, msg := decodeBatches(two)
	if code != 0 || len(msgs) != 3 || string(msgs[0].Key) != "k1" || string(msgs[1].Value) != "v2" || string(msgs[2].Key) != "k3" {
		t.Fatalf("two batches: %d messages, code %d %q", len(msgs), code, msg)
	}
	for _, tc := range []struct {
		name string
		b    []byte
		code int16
		says string
	}{
		{"crc", func() []byte { b := batchOf([][2]string{{"k", "v"}}, nil); b[len(b)-1] ^= 1; return b }(), kerr.CorruptMessage.Code, "CRC"},
		{"truncated", batchOf([][2]string{{"k", "v"}}, nil)[:40], kerr.CorruptMessage.Code, "length"},
		{"compressed", batchOf([][2]string{{"k", "v"}}, func(b *kmsg.RecordBatch) { b.Attributes = 2 }), kerr.UnsupportedCompressionType.Code, "without compression"},
		{"idempotent", batchOf([][2]string{{"k", "v"}}, func(b *kmsg.RecordBatch) { b.ProducerID = 7 }), kerr.InvalidRecord.Code, "idempotent"},
		{"more records than sent", batchOf([][2]string{{"k", "v"}}, func(b *kmsg.RecordBatch) { b.NumRecords = 2 }), kerr.CorruptMessage.Code, "truncated record"},
		{"empty", nil, kerr.InvalidRecord.Code, "no records"},
	} {
		msgs, code, msg := decodeBatches(tc.b)
		if code != tc.code || msgs != nil || !strings.Contains(msg, tc.says) {
			t.Errorf("%s: %d messages, code %d %q; want code %d saying %q", tc.name, len(msgs), code, msg, tc.code, tc.says)
		}
	}
}

// legacyOf encodes one message of the older formats (magic 1).
func legacyOf(key, value string) []byte {
	body := []byte{1, 0}                          // magic, attributes
	body = binary.BigEndian.AppendUint64(body, 0) // timestamp
	body = binary.BigEndian.AppendUint32(body, uint32(len(key)))
	body = append(body, key...)
	body = binary.BigEndian.AppendUint32(body, uint32(len(value)))
	body = append(body, value...)
	out := binary.BigEndian.AppendUint64(nil, 0) // offset
	out = binary.BigEndian.AppendUint32(out, uint32(4+len(body)))
	out = binary.BigEndian.AppendUint32(out, crc32.ChecksumIEEE(body))
	return append(out, body...)
}

func TestDecodeLegacyMessages(t *testing.T) {
	msgs, code, msg := decodeBatches(append(legacyOf("a", "one"), legacyOf("b", "two")...))
	if code != 0 || len(msgs) != 2 || string(msgs[0].Key) != "a" || string(msgs[1].Value) != "two" {
		t.Fatalf("two messages: %d, code %d %q", len(msgs), code, msg)
	}
	bad := legacyOf("a", "one")
	bad[len(bad)-1] ^= 1
	if _, code, msg := decodeBatches(bad); code != kerr.CorruptMessage.Code || !strings.Contains(msg, "CRC") {
		t.Fatalf("a changed message: code %d %q", code, msg)
	}
}

// A message of the older formats too short to hold its fields is refused
// as corrupt, whatever its length says (it must not panic the listener).
func TestDecodeShortLegacyMessages(t *testing.T) {
	for size := 5; size <= 14; size++ {
		b := binary.BigEndian.AppendUint64(nil, 0)
		b = binary.BigEndian.AppendUint32(b, uint32(size))
		b = append(b, make([]byte, size)...)
		b[16] = 1 // magic 1
		binary.BigEndian.PutUint32(b[12:], crc32.ChecksumIEEE(b[16:]))
		if _, code, msg := decodeBatches(b); code != kerr.CorruptMessage.Code {
			t.Errorf("a message of %d bytes: code %d %q; want CORRUPT_MESSAGE", size, code, msg)
		}
	}
}

// FuzzDecodeBatches: no produce body makes the decoder panic, and what it
// takes is a non-empty list of messages.
func FuzzDecodeBatches(f *testing.F) {
	f.Add(batchOf([][2]string{{"k", "v"}, {"", "value"}}, nil))
	f.Add(legacyOf("a", "one"))
	f.Add(append(legacyOf("a", "one"), batchOf([][2]string{{"k", "v"}}, nil)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		msgs, code, msg := decodeBatches(b)
		if code == 0 && len(msgs) == 0 {
			t.Fatal("no error and no messages")
		}
		if code != 0 && (msgs != nil || msg == "") {
			t.Fatalf("code %d with %d messages and message %q", code, len(msgs), msg)
		}
	})
}
