package formats_test

// The golden files in testdata/*.hex are derived by hand from the tables of
// doc.go's record and transfer sections, one field per line with a comment
// naming it, so that a reader can check them against the specification line
// by line. Their crc32 and MD5 values were computed independently of this
// package, with python3's zlib.crc32 and hashlib.md5, and written into the
// files. They are never regenerated from our encoder: if a golden test
// fails, the encoder or decoder is wrong, or the specification changed and
// the file must be derived again by hand.
//
// File syntax: hex digits, two per byte, whitespace ignored; '#' starts a
// comment that runs to the end of the line; a line
//
//	rule: N bytes, byte i = i % M
//
// stands for N bytes whose i-th byte is i % M (for values too long to
// write out).

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/formats"
	"github.com/messagevault/messagevault/internal/hexfile"
)

// readHex parses a golden .hex file of testdata into bytes.
func readHex(t testing.TB, name string) []byte {
	t.Helper()
	b, err := hexfile.Parse(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// recordGoldens are the record goldens with the fields each file states in
// its comments. CRC is the file's hand-computed value.
var recordGoldens = []struct {
	file       string
	id         formats.ID
	idString   string
	attributes byte
	key        []byte
	value      []byte
	crc        uint32
}{
	{
		file:     "record_key_value.hex",
		id:       formats.NewID(0x0123456789ab, 0x1f4, 7),
		idString: "0123456789ab-0000000001f4-00000007",
		key:      []byte("contract-a"),
		value:    []byte("hello, vault"),
		crc:      0x3f6694ee,
	},
	{
		file:     "record_empty_value.hex",
		id:       formats.NewID(0x0123456789ab, 0x223, 8),
		idString: "0123456789ab-000000000223-00000008",
		key:      []byte("contract-b"),
		value:    []byte{},
		crc:      0x9c83ef0c,
	},
	{
		file:     "record_empty.hex",
		id:       formats.ID{},
		idString: "000000000000-000000000000-00000000",
		key:      []byte{},
		value:    []byte{},
		crc:      0,
	},
	{
		file:       "record_max_value.hex",
		id:         formats.NewID(0x0123456789ac, 0x246, 9),
		idString:   "0123456789ac-000000000246-00000009",
		attributes: messagevault.AttrContinued,
		key:        []byte("contract-big"),
		value:      hexfile.RuleBytes(65535, 251),
		crc:        0x750702fc,
	},
}

// transferGolden is testdata/transfer_three.hex and the messages it states.
var transferGolden = struct {
	file string
	msgs []messagevault.Message
	md5  string
}{
	file: "transfer_three.hex",
	msgs: []messagevault.Message{
		{Attributes: 0, Key: []byte("contract-a"), Value: []byte("hello"), CRC: 0x339a1830},
		{Attributes: messagevault.AttrLZ4, Key: []byte{}, Value: []byte{0xde, 0xad, 0xbe, 0xef}, CRC: 0x7c9ca35b},
		{Attributes: messagevault.AttrLZ4 | messagevault.AttrContinued, Key: []byte("k"), Value: []byte{}, CRC: 0x0862575e},
	},
	md5: "03bde4df48aab8c985eedd6f746848bb",
}

func TestGoldenRecord(t *testing.T) {
	for _, g := range recordGoldens {
		t.Run(g.file, func(t *testing.T) {
			want := readHex(t, g.file)
			m := messagevault.Message{Attributes: g.attributes, Key: g.key, Value: g.value, CRC: g.crc}

			// The hand-computed crc agrees with the checksum function.
			if got := messagevault.Checksum(g.attributes, g.key, g.value); got != g.crc {
				t.Errorf("Checksum = %#08x, golden says %#08x", got, g.crc)
			}
			if got := g.id.String(); got != g.idString {
				t.Errorf("id String = %q, golden says %q", got, g.idString)
			}
			if got, want := len(want), formats.RecordSize(len(g.key), len(g.value)); got != want {
				t.Errorf("golden is %d bytes, RecordSize says %d", got, want)
			}

			// Encoder: exactly the golden bytes.
			got, err := formats.AppendRecord(nil, g.id, m)
			if err != nil {
				t.Fatalf("AppendRecord: %v", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("AppendRecord differs from golden at byte %d\n got %s\nwant %s",
					firstDiff(got, want), clip(got), clip(want))
			}

			// Decoder: the fields the golden states.
			r, n, err := formats.DecodeRecord(want)
			if err != nil {
				t.Fatalf("DecodeRecord: %v", err)
			}
			if n != len(want) {
				t.Errorf("DecodeRecord n = %d, want %d", n, len(want))
			}
			if r.ID != g.id || r.Attributes != g.attributes || r.CRC != g.crc ||
				!bytes.Equal(r.Key, g.key) || !bytes.Equal(r.Value, g.value) {
				t.Errorf("DecodeRecord = {attr %#x id %s key %q value %d bytes crc %#08x}, want {attr %#x id %s key %q value %d bytes crc %#08x}",
					r.Attributes, r.ID, r.Key, len(r.Value), r.CRC, g.attributes, g.id, g.key, len(g.value), g.crc)
			}
			if r.Size() != len(want) {
				t.Errorf("Record.Size = %d, want %d", r.Size(), len(want))
			}
		})
	}
}

// TestGoldenStream checks records packed back to back, as in a stream,
// followed by the zero padding of the last page.
func TestGoldenStream(t *testing.T) {
	var stream []byte
	files := []string{"record_key_value.hex", "record_empty_value.hex", "record_max_value.hex"}
	for _, f := range files {
		stream = append(stream, readHex(t, f)...)
	}
	// The ids of the goldens carry their positions in this stream, from 0x1f4.
	const base = 0x1f4
	pad := messagevault.PageSize - (base+len(stream))%messagevault.PageSize
	stream = append(stream, make([]byte, pad)...)

	p := 0
	for i, f := range files {
		var key []byte
		for _, g := range recordGoldens {
			if g.file == f {
				key = g.key
			}
		}
		r, n, err := formats.DecodeRecord(stream[p:])
		if err != nil {
			t.Fatalf("record %d at byte %d: %v", i, p, err)
		}
		if got := r.ID.Offset(); got != int64(base+p) {
			t.Errorf("record %d: id offset %#x, but it is at stream position %#x", i, got, base+p)
		}
		if !bytes.Equal(r.Key, key) {
			t.Errorf("record %d: key %q, want %q", i, r.Key, key)
		}
		p += n
	}
	if _, _, err := formats.DecodeRecord(stream[p:]); err != formats.ErrNoRecord {
		t.Errorf("after the last record: err = %v, want ErrNoRecord", err)
	}
}

func TestGoldenTransfer(t *testing.T) {
	g := transferGolden
	want := readHex(t, g.file)

	if got := hex.EncodeToString(want[len(want)-16:]); got != g.md5 {
		t.Errorf("golden md5 bytes %s, its comment says %s", got, g.md5)
	}
	for i, m := range g.msgs {
		if err := m.Validate(); err != nil {
			t.Errorf("golden message %d: %v", i, err)
		}
	}
	if got := formats.TransferSize(g.msgs); got != len(want) {
		t.Errorf("TransferSize = %d, golden is %d bytes", got, len(want))
	}

	got, err := formats.AppendTransfer(nil, g.msgs)
	if err != nil {
		t.Fatalf("AppendTransfer: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("AppendTransfer differs from golden at byte %d\n got %x\nwant %x", firstDiff(got, want), got, want)
	}

	msgs, err := formats.DecodeTransfer(want, nil)
	if err != nil {
		t.Fatalf("DecodeTransfer: %v", err)
	}
	if len(msgs) != len(g.msgs) {
		t.Fatalf("DecodeTransfer returned %d messages, want %d", len(msgs), len(g.msgs))
	}
	for i := range msgs {
		if !equalMessage(msgs[i], g.msgs[i]) {
			t.Errorf("message %d = %s, want %s", i, fmtMessage(msgs[i]), fmtMessage(g.msgs[i]))
		}
	}
}

// TestGoldenTransferV2: the v2 body of the same three messages, its
// CRC-32C computed outside this package.
func TestGoldenTransferV2(t *testing.T) {
	g := transferGolden
	want := readHex(t, "transfer_three_v2.hex")
	got, err := formats.AppendTransferV2(nil, g.msgs)
	if err != nil {
		t.Fatalf("AppendTransferV2: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("AppendTransferV2 differs from golden at byte %d\n got %x\nwant %x", firstDiff(got, want), got, want)
	}
	if len(want) != formats.TransferSize(g.msgs)-formats.TransferTrailerSize+formats.TransferV2TrailerSize {
		t.Errorf("v2 golden is %d bytes", len(want))
	}
	msgs, err := formats.DecodeTransfer(want, nil)
	if err != nil || len(msgs) != len(g.msgs) {
		t.Fatalf("DecodeTransfer: %d messages, %v", len(msgs), err)
	}
	for i := range msgs {
		if !equalMessage(msgs[i], g.msgs[i]) {
			t.Errorf("message %d = %s, want %s", i, fmtMessage(msgs[i]), fmtMessage(g.msgs[i]))
		}
	}
	bad := bytes.Clone(want)
	bad[5] ^= 1
	if _, err := formats.DecodeTransfer(bad, nil); !errors.Is(err, formats.ErrMD5) || !strings.Contains(err.Error(), "crc32c") {
		t.Errorf("a changed v2 body: %v, want a crc32c mismatch", err)
	}
}

// equalMessage compares messages, treating nil and empty slices as equal.
func equalMessage(a, b messagevault.Message) bool {
	return a.Attributes == b.Attributes && a.CRC == b.CRC && bytes.Equal(a.Key, b.Key) && bytes.Equal(a.Value, b.Value)
}

func fmtMessage(m messagevault.Message) string {
	return fmt.Sprintf("{attr %#x key %q value %s crc %#08x}", m.Attributes, m.Key, clip(m.Value), m.CRC)
}

// firstDiff returns the index of the first byte where a and b differ.
func firstDiff(a, b []byte) int {
	n := min(len(a), len(b))
	for i := range n {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}

// clip formats b in hex, shortened if long.
func clip(b []byte) string {
	if len(b) > 64 {
		return fmt.Sprintf("%x... (%d bytes)", b[:64], len(b))
	}
	return fmt.Sprintf("%x", b)
}
