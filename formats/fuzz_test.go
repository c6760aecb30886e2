package formats_test

import (
	"bytes"
	"crypto/md5"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"testing"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/formats"
)

// Random bytes almost never carry a valid crc or MD5, so each fuzz target
// also decodes a "sealed" copy of its input, with the crcs and the MD5
// rewritten to match, which lets the fuzzer reach the success paths of the
// decoders. The sealers walk the input by the tables of doc.go, independently of
// the decoders.

// sealRecord returns a copy of b with the crc of its first record rewritten
// to match, or false if b does not hold a whole v1 record.
func sealRecord(b []byte) ([]byte, bool) {
	if len(b) < 21 || b[0] != formats.Version {
		return nil, false
	}
	k := int(b[18])
	if len(b) < 21+k {
		return nil, false
	}
	v := int(binary.LittleEndian.Uint16(b[19+k:]))
	end := 25 + k + v
	if len(b) < end {
		return nil, false
	}
	out := bytes.Clone(b)
	crc := messagevault.Checksum(out[1], out[19:19+k], out[21+k:21+k+v])
	binary.LittleEndian.PutUint32(out[end-4:], crc)
	return out, true
}

// sealTransfer returns a copy of body with the crc of every message that
// fits rewritten to match, then the MD5; false if body is too short to
// hold a header and an MD5.
func sealTransfer(body []byte) ([]byte, bool) {
	trailer := md5.Size
	if len(body) > 0 && body[0] == formats.TransferV2 {
		trailer = formats.TransferV2TrailerSize
	}
	if len(body) < formats.TransferHeaderSize+trailer {
		return nil, false
	}
	out := bytes.Clone(body)
	end := len(out) - trailer
	count := int(binary.LittleEndian.Uint16(out[1:]))
	p := formats.TransferHeaderSize
	for range count {
		if end-p < 4 {
			break
		}
		k := int(out[p+1])
		if end-p < 4+k {
			break
		}
		v := int(binary.LittleEndian.Uint16(out[p+2+k:]))
		q := p + 4 + k + v
		if end-q < 4 {
			break
		}
		crc := messagevault.Checksum(out[p], out[p+2:p+2+k], out[p+4+k:q])
		binary.LittleEndian.PutUint32(out[q:], crc)
		p = q + 4
	}
	if trailer == formats.TransferV2TrailerSize {
		binary.LittleEndian.PutUint32(out[end:], crc32.Checksum(out[:end], crc32.MakeTable(crc32.Castagnoli)))
		return out, true
	}
	sum := md5.Sum(out[:end])
	copy(out[end:], sum[:])
	return out, true
}

func FuzzDecodeRecord(f *testing.F) {
	for _, g := range recordGoldens {
		b := readHex(f, g.file)
		if len(b) > 1000 {
			// The 65572-byte record is covered by the unit tests; as a
			// seed it slows every mutation and minimisation down.
			continue
		}
		f.Add(b)
		for _, cut := range []int{0, 1, 18, 19, 20, 21, len(b) - 5, len(b) - 4, len(b) - 1} {
			if cut >= 0 && cut < len(b) {
				f.Add(bytes.Clone(b[:cut]))
			}
		}
		for _, i := range []int{0, 1, 18, len(b) - 1} {
			c := bytes.Clone(b)
			c[i] ^= 0xff
			f.Add(c)
		}
		f.Add(append(bytes.Clone(b), b...))
		f.Add(append(bytes.Clone(b), make([]byte, 10)...))
	}
	f.Add([]byte{})
	f.Add([]byte{0x00})
	f.Add([]byte{0x02})

	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecodeRecord(t, data)
		if sealed, ok := sealRecord(data); ok {
			checkDecodeRecord(t, sealed)
		}
	})
}

func checkDecodeRecord(t *testing.T, data []byte) {
	r, n, err := formats.DecodeRecord(data)
	if err != nil {
		if n != 0 {
			t.Fatalf("n = %d with error %v", n, err)
		}
		if errors.Is(err, formats.ErrTruncated) && err != formats.ErrTruncated {
			t.Fatalf("ErrTruncated wrapped (%v): the record decoder returns it bare", err)
		}
		if !errors.Is(err, formats.ErrTruncated) && !errors.Is(err, formats.ErrNoRecord) &&
			!errors.Is(err, formats.ErrVersion) && !errors.Is(err, formats.ErrCRC) {
			t.Fatalf("unexpected error %v", err)
		}
		return
	}
	if n < formats.RecordOverhead || n > len(data) || n > formats.MaxRecordSize {
		t.Fatalf("n = %d for input of %d bytes", n, len(data))
	}
	if n != r.Size() {
		t.Fatalf("n = %d, Record.Size = %d", n, r.Size())
	}
	again, err := formats.AppendRecord(nil, r.ID, r.Message())
	if err != nil {
		t.Fatalf("AppendRecord of a decoded record: %v", err)
	}
	if !bytes.Equal(again, data[:n]) {
		t.Fatalf("re-encoded record differs at byte %d\n got %s\nwant %s", firstDiff(again, data[:n]), clip(again), clip(data[:n]))
	}
	if err := r.Message().Validate(); err != nil {
		t.Fatalf("decoded record does not validate: %v", err)
	}
	// The record alone decodes the same; one byte less is truncated.
	if _, n2, err := formats.DecodeRecord(data[:n:n]); err != nil || n2 != n {
		t.Fatalf("record alone: n %d, err %v", n2, err)
	}
	if _, _, err := formats.DecodeRecord(data[: n-1 : n-1]); err != formats.ErrTruncated {
		t.Fatalf("record minus one byte: err %v, want ErrTruncated", err)
	}
}

func FuzzDecodeTransfer(f *testing.F) {
	body := readHex(f, transferGolden.file)
	f.Add(body)
	for _, cut := range []int{0, 3, 18, 19, 25, 26, 46, 47, len(body) - 1} {
		f.Add(bytes.Clone(body[:cut]))
	}
	for _, i := range []int{0, 1, 2, 4, 27, 34, 41, len(body) - 1} {
		c := bytes.Clone(body)
		c[i] ^= 0xff
		f.Add(c)
		if s, ok := sealTransfer(c); ok {
			f.Add(s)
		}
	}
	f.Add(append(bytes.Clone(body), 0))
	rec := readHex(f, "record_key_value.hex")
	f.Add(rec)
	for _, n := range []int{1, 2, 17} {
		msgs := make([]messagevault.Message, n)
		for i := range msgs {
			msgs[i] = messagevault.NewMessage(rec[:i%5], rec[i:], byte(i))
		}
		b, err := formats.AppendTransfer(nil, msgs)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		if b, err = formats.AppendTransferV2(nil, msgs); err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add(readHex(f, "transfer_three_v2.hex"))

	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecodeTransfer(t, data)
		if sealed, ok := sealTransfer(data); ok {
			checkDecodeTransfer(t, sealed)
		}
	})
}

func checkDecodeTransfer(t *testing.T, data []byte) {
	prior := messagevault.NewMessage([]byte("prior"), nil, 0)
	dst := []messagevault.Message{prior}
	out, err := formats.DecodeTransfer(data, dst)
	if len(out) < 1 || !equalMessage(out[0], prior) {
		t.Fatalf("DecodeTransfer lost or changed dst[0]")
	}
	if err != nil {
		if len(out) != 1 {
			t.Fatalf("dst length %d on error %v, want 1", len(out), err)
		}
		if !errors.Is(err, formats.ErrTruncated) && !errors.Is(err, formats.ErrVersion) && !errors.Is(err, formats.ErrCount) &&
			!errors.Is(err, formats.ErrMD5) && !errors.Is(err, formats.ErrCRC) {
			t.Fatalf("unexpected error %v", err)
		}
		return
	}
	msgs := out[1:]
	if want := int(binary.LittleEndian.Uint16(data[1:])); len(msgs) != want || want == 0 {
		t.Fatalf("%d messages, header count %d", len(msgs), want)
	}
	for i, m := range msgs {
		if err := m.Validate(); err != nil {
			t.Fatalf("message %d does not validate: %v", i, err)
		}
	}
	appendTransfer, size := formats.AppendTransfer, formats.TransferSize(msgs)
	if data[0] == formats.TransferV2 {
		appendTransfer, size = formats.AppendTransferV2, size-formats.TransferTrailerSize+formats.TransferV2TrailerSize
	}
	if size != len(data) {
		t.Fatalf("size %d, body %d bytes", size, len(data))
	}
	again, err := appendTransfer(nil, msgs)
	if err != nil {
		t.Fatalf("AppendTransfer of decoded messages: %v", err)
	}
	if !bytes.Equal(again, data) {
		t.Fatalf("re-encoded body differs at byte %d\n got %s\nwant %s", firstDiff(again, data), clip(again), clip(data))
	}
}
