package kafka

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
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
	b, code, msg := decodeBatches(two, false, budget())
	msgs := b.msgs
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
		{"not snappy", batchOf([][2]string{{"k", "v"}}, func(b *kmsg.RecordBatch) { b.Attributes = codecSnappy }), kerr.CorruptMessage.Code, "snappy"},
		{"unknown codec", batchOf([][2]string{{"k", "v"}}, func(b *kmsg.RecordBatch) { b.Attributes = 5 }), kerr.CorruptMessage.Code, "codec 5"},
		{"idempotent beside another", append(batchOf([][2]string{{"k", "v"}}, func(b *kmsg.RecordBatch) { b.ProducerID = 7 }), batchOf([][2]string{{"k", "v"}}, nil)...), kerr.InvalidRecord.Code, "alone"},
		{"transactional", batchOf([][2]string{{"k", "v"}}, func(b *kmsg.RecordBatch) { b.Attributes = 0x10 }), kerr.InvalidRecord.Code, "transactional"},
		{"headers", headerBatch(), kerr.InvalidRecord.Code, "--kafka-drop-headers"},
		{"more records than sent", batchOf([][2]string{{"k", "v"}}, func(b *kmsg.RecordBatch) { b.NumRecords = 2 }), kerr.CorruptMessage.Code, "truncated record"},
		{"empty", nil, kerr.InvalidRecord.Code, "no records"},
	} {
		b, code, msg := decodeBatches(tc.b, false, budget())
		if code != tc.code || b.msgs != nil || !strings.Contains(msg, tc.says) {
			t.Errorf("%s: %d messages, code %d %q; want code %d saying %q", tc.name, len(b.msgs), code, msg, tc.code, tc.says)
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
	b, code, msg := decodeBatches(append(legacyOf("a", "one"), legacyOf("b", "two")...), false, budget())
	msgs := b.msgs
	if code != 0 || len(msgs) != 2 || string(msgs[0].Key) != "a" || string(msgs[1].Value) != "two" {
		t.Fatalf("two messages: %d, code %d %q", len(msgs), code, msg)
	}
	bad := legacyOf("a", "one")
	bad[len(bad)-1] ^= 1
	if _, code, msg := decodeBatches(bad, false, budget()); code != kerr.CorruptMessage.Code || !strings.Contains(msg, "CRC") {
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
		if _, code, msg := decodeBatches(b, false, budget()); code != kerr.CorruptMessage.Code {
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
	for _, codec := range []int{codecGzip, codecSnappy, codecLZ4, codecZstd} {
		f.Add(batchOf([][2]string{{"k", "v"}, {"", "value"}}, func(b *kmsg.RecordBatch) {
			b.Attributes = int16(codec)
			b.Records = compressWith(f, codec, b.Records)
		}))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		out, code, msg := decodeBatches(b, false, budget())
		if code == 0 && len(out.msgs) == 0 {
			t.Fatal("no error and no messages")
		}
		if code != 0 && (out.msgs != nil || msg == "") {
			t.Fatalf("code %d with %d messages and message %q", code, len(out.msgs), msg)
		}
	})
}

// headerBatch is a batch of one record with a header.
func headerBatch() []byte {
	r := kmsg.Record{Key: []byte("k"), Value: []byte("v"), Headers: []kmsg.Header{{Key: "h", Value: []byte("x")}}}
	body := r.AppendTo(nil)[1:]
	recs := binary.AppendVarint(nil, int64(len(body)))
	recs = append(recs, body...)
	out := (&kmsg.RecordBatch{Magic: 2, ProducerID: -1, ProducerEpoch: -1, FirstSequence: -1, NumRecords: 1, Records: recs}).AppendTo(nil)
	binary.BigEndian.PutUint32(out[8:], uint32(len(out)-12))
	binary.BigEndian.PutUint32(out[17:], crc32.Checksum(out[21:], castagnoli))
	return out
}

// With dropHeaders, a record's headers are dropped and counted.
func TestDecodeDropsHeaders(t *testing.T) {
	b, code, msg := decodeBatches(headerBatch(), true, budget())
	if code != 0 || len(b.msgs) != 1 || string(b.msgs[0].Value) != "v" || b.headersDropped != 1 {
		t.Fatalf("code %d %q, %d messages, %d dropped", code, msg, len(b.msgs), b.headersDropped)
	}
}

// compressWith compresses b with a codec as Kafka clients do.
func compressWith(t testing.TB, codec int, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	switch codec {
	case codecGzip:
		w := gzip.NewWriter(&buf)
		w.Write(b)
		w.Close()
	case codecSnappy:
		return s2.EncodeSnappy(nil, b)
	case codecLZ4:
		w := lz4.NewWriter(&buf)
		w.Write(b)
		w.Close()
	case codecZstd:
		e, err := zstd.NewWriter(nil)
		if err != nil {
			t.Fatal(err)
		}
		return e.EncodeAll(b, nil)
	}
	return buf.Bytes()
}

// Batches compressed with each codec decode to their records; snappy in
// the xerial framing of older Java clients too.
func TestDecodeCompressedBatches(t *testing.T) {
	pairs := [][2]string{{"k1", strings.Repeat("a", 1000)}, {"", "v2"}, {"k3", "v3"}}
	xerial := func(b *kmsg.RecordBatch) {
		b.Attributes = codecSnappy
		framed := append([]byte{}, xerialMagic...)
		framed = binary.BigEndian.AppendUint64(framed, 1<<32|1) // versions
		half := len(b.Records) / 2
		for _, part := range [][]byte{b.Records[:half], b.Records[half:]} {
			block := s2.EncodeSnappy(nil, part)
			framed = binary.BigEndian.AppendUint32(framed, uint32(len(block)))
			framed = append(framed, block...)
		}
		b.Records = framed
	}
	cases := map[string]func(*kmsg.RecordBatch){"xerial snappy": xerial}
	for name, codec := range map[string]int{"gzip": codecGzip, "snappy": codecSnappy, "lz4": codecLZ4, "zstd": codecZstd} {
		cases[name] = func(b *kmsg.RecordBatch) {
			b.Attributes = int16(codec)
			b.Records = compressWith(t, codec, b.Records)
		}
	}
	for name, change := range cases {
		b, code, msg := decodeBatches(batchOf(pairs, change), false, budget())
		if code != 0 || len(b.msgs) != 3 || string(b.msgs[0].Value) != pairs[0][1] || string(b.msgs[2].Key) != "k3" {
			t.Errorf("%s: code %d %q, %d messages", name, code, msg, len(b.msgs))
		}
	}
}

// A batch that expands past its bound is refused.
func TestDecompressionBomb(t *testing.T) {
	huge := make([]byte, 1<<20)
	for _, codec := range []int{codecGzip, codecSnappy, codecLZ4, codecZstd} {
		_, err := decompress(codec, compressWith(t, codec, huge), 1<<19)
		if !errors.Is(err, errTooBig) {
			t.Errorf("codec %d: %v; want %v", codec, err, errTooBig)
		}
	}
}

// The bound on what a produce request's records expand to holds for the
// whole request, not for each partition in it.
func TestDecompressionBoundPerRequest(t *testing.T) {
	c := testConn(t)
	big := batchOf([][2]string{{"k", strings.Repeat("z", 40<<20)}}, func(b *kmsg.RecordBatch) {
		b.Attributes = codecZstd
		b.Records = compressWith(t, codecZstd, b.Records)
	})
	r := kmsg.NewPtrProduceRequest()
	r.Acks = -1
	for _, topic := range []string{"first", "second"} {
		r.Topics = append(r.Topics, kmsg.ProduceRequestTopic{Topic: topic, Partitions: []kmsg.ProduceRequestTopicPartition{{Partition: 0, Records: big}}})
	}
	resp, jobs, _ := c.prepareProduce(r)
	if len(jobs) != 1 || jobs[0].name != "first" {
		t.Fatalf("%d partitions to append; want only the first", len(jobs))
	}
	if p := resp.Topics[1].Partitions[0]; p.ErrorCode != kerr.CorruptMessage.Code || !strings.Contains(*p.ErrorMessage, "more than") {
		t.Fatalf("the second partition: %v %v", kerr.ErrorForCode(p.ErrorCode), p.ErrorMessage)
	}
}

// budget returns a fresh request's budget.
func budget() *int {
	b := MaxDecompressed
	return &b
}
