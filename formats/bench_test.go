package formats_test

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/formats"
)

const (
	benchValueSize = 100
	benchBatch     = 1000
)

func benchMessage() messagevault.Message {
	return messagevault.NewMessage([]byte("contract-a"), bytes.Repeat([]byte{'v'}, benchValueSize), 0)
}

func benchBatchMessages() []messagevault.Message {
	rng := rand.New(rand.NewPCG(11, 12))
	msgs := make([]messagevault.Message, benchBatch)
	for i := range msgs {
		value := make([]byte, benchValueSize)
		for j := range value {
			value[j] = byte(rng.Uint32())
		}
		msgs[i] = messagevault.NewMessage([]byte("contract-a"), value, 0)
	}
	return msgs
}

func BenchmarkAppendRecord(b *testing.B) {
	m := benchMessage()
	id := formats.NewID(0x0123456789ab, 0x1f4, 7)
	dst := make([]byte, 0, formats.MaxRecordSize)
	b.SetBytes(int64(formats.RecordSize(len(m.Key), len(m.Value))))
	b.ReportAllocs()
	for b.Loop() {
		dst, _ = formats.AppendRecord(dst[:0], id, m)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/msg")
}

func BenchmarkDecodeRecord(b *testing.B) {
	rec, err := formats.AppendRecord(nil, formats.NewID(0x0123456789ab, 0x1f4, 7), benchMessage())
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(rec)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := formats.DecodeRecord(rec); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/msg")
}

// The transfer benchmarks run v1 (MD5) and v2 (CRC-32C) bodies side by
// side: -bench 'Transfer/' compares them in one run.
var transferVersions = []struct {
	name   string
	append func([]byte, []messagevault.Message) ([]byte, error)
}{{"v1-md5", formats.AppendTransfer}, {"v2-crc32c", formats.AppendTransferV2}}

func BenchmarkAppendTransfer(b *testing.B) {
	for _, v := range transferVersions {
		b.Run(v.name, func(b *testing.B) {
			msgs := benchBatchMessages()
			dst := make([]byte, 0, formats.TransferSize(msgs))
			b.SetBytes(int64(formats.TransferSize(msgs)))
			b.ReportAllocs()
			for b.Loop() {
				dst, _ = v.append(dst[:0], msgs)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/benchBatch, "ns/msg")
		})
	}
}

func BenchmarkDecodeTransfer(b *testing.B) {
	for _, v := range transferVersions {
		b.Run(v.name, func(b *testing.B) { benchDecodeTransfer(b, v.append) })
	}
}

func benchDecodeTransfer(b *testing.B, appendTransfer func([]byte, []messagevault.Message) ([]byte, error)) {
	msgs := benchBatchMessages()
	body, err := appendTransfer(nil, msgs)
	if err != nil {
		b.Fatal(err)
	}
	dst := make([]messagevault.Message, 0, len(msgs))
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if dst, err = formats.DecodeTransfer(body, dst[:0]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/benchBatch, "ns/msg")
}
