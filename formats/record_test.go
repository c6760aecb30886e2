package formats_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/formats"
)

// goldenRecord returns a fresh copy of testdata/record_key_value.hex:
// key "contract-a" (10 bytes) and value "hello, vault" (12 bytes), 47 bytes.
// Its key length is at byte 18, value length at 29, crc at 43.
func goldenRecord(t testing.TB) []byte { return readHex(t, "record_key_value.hex") }

func TestDecodeRecordTruncated(t *testing.T) {
	for _, g := range recordGoldens {
		t.Run(g.file, func(t *testing.T) {
			b := readHex(t, g.file)
			for cut := range len(b) {
				// A copy of exactly cut bytes, so that reading past it
				// would fail under the race detector or -d=checkptr.
				in := bytes.Clone(b[:cut])
				r, n, err := formats.DecodeRecord(in)
				if err != formats.ErrTruncated {
					t.Fatalf("cut at %d of %d: err = %v, want the bare ErrTruncated", cut, len(b), err)
				}
				if n != 0 {
					t.Fatalf("cut at %d: n = %d, want 0", cut, n)
				}
				_ = r
			}
		})
	}
}

func TestDecodeRecordErrors(t *testing.T) {
	tests := []struct {
		name     string
		mutate   func(b []byte) []byte
		wantErr  error
		wantText []string // substrings of the error text: what and where
	}{
		{
			name:    "empty input",
			mutate:  func(b []byte) []byte { return nil },
			wantErr: formats.ErrTruncated,
		},
		{
			name:    "version 0x00 is no record",
			mutate:  func(b []byte) []byte { b[0] = 0x00; return b },
			wantErr: formats.ErrNoRecord,
		},
		{
			name:    "zero padding of a page is no record",
			mutate:  func(b []byte) []byte { return make([]byte, messagevault.PageSize) },
			wantErr: formats.ErrNoRecord,
		},
		{
			name:    "single zero byte is no record",
			mutate:  func(b []byte) []byte { return []byte{0} },
			wantErr: formats.ErrNoRecord,
		},
		{
			name:     "version 0x02",
			mutate:   func(b []byte) []byte { b[0] = 0x02; return b },
			wantErr:  formats.ErrVersion,
			wantText: []string{"0x02", "byte 0"},
		},
		{
			name:     "version 0xff",
			mutate:   func(b []byte) []byte { b[0] = 0xff; return b },
			wantErr:  formats.ErrVersion,
			wantText: []string{"0xff", "byte 0"},
		},
		{
			name:     "version checked before length",
			mutate:   func(b []byte) []byte { return []byte{0x07} },
			wantErr:  formats.ErrVersion,
			wantText: []string{"0x07", "byte 0"},
		},
		{
			name:    "key length overruns input",
			mutate:  func(b []byte) []byte { b[18] = 0xff; return b },
			wantErr: formats.ErrTruncated,
		},
		{
			name:    "key length overruns into value length",
			mutate:  func(b []byte) []byte { b[18] = byte(len(b) - 19 - 1); return b },
			wantErr: formats.ErrTruncated,
		},
		{
			name:    "value length overruns input",
			mutate:  func(b []byte) []byte { binary.LittleEndian.PutUint16(b[29:], 0xffff); return b },
			wantErr: formats.ErrTruncated,
		},
		{
			name:    "value length overruns crc by one byte",
			mutate:  func(b []byte) []byte { binary.LittleEndian.PutUint16(b[29:], 12+1); return b },
			wantErr: formats.ErrTruncated,
		},
		{
			name:     "crc wrong",
			mutate:   func(b []byte) []byte { b[43] ^= 0x01; return b },
			wantErr:  formats.ErrCRC,
			wantText: []string{"crc", "byte 43", "0x3f6694ef", "0x3f6694ee"},
		},
		{
			name:     "attributes changed",
			mutate:   func(b []byte) []byte { b[1] = messagevault.AttrLZ4; return b },
			wantErr:  formats.ErrCRC,
			wantText: []string{"crc", "byte 43"},
		},
		{
			name:     "key byte flipped",
			mutate:   func(b []byte) []byte { b[19] ^= 0x20; return b },
			wantErr:  formats.ErrCRC,
			wantText: []string{"crc", "byte 43"},
		},
		{
			name:     "value byte flipped",
			mutate:   func(b []byte) []byte { b[40] ^= 0x80; return b },
			wantErr:  formats.ErrCRC,
			wantText: []string{"crc", "byte 43"},
		},
		{
			name: "lengths re-split the same bytes",
			// Key of 9 bytes "contract-", value length at bytes 28..29
			// says 13, value "\x00hello, vault": same record length, same
			// crc position, different key and value.
			mutate: func(b []byte) []byte {
				b[18] = 9
				binary.LittleEndian.PutUint16(b[28:], 13)
				return b
			},
			wantErr:  formats.ErrCRC,
			wantText: []string{"crc", "byte"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := tt.mutate(goldenRecord(t))
			_, n, err := formats.DecodeRecord(in)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if n != 0 {
				t.Errorf("n = %d on error, want 0", n)
			}
			for _, s := range tt.wantText {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
		})
	}
}

// TestDecodeRecordTrailingBytes checks that bytes after a record are left
// for the next decode: in a stream, they are the next record.
func TestDecodeRecordTrailingBytes(t *testing.T) {
	rec := goldenRecord(t)
	for _, tail := range [][]byte{{0x01}, {0x00}, {0xff, 0xff}, bytes.Repeat([]byte{0xaa}, 100), rec} {
		in := append(bytes.Clone(rec), tail...)
		r, n, err := formats.DecodeRecord(in)
		if err != nil {
			t.Fatalf("tail %s: %v", clip(tail), err)
		}
		if n != len(rec) {
			t.Errorf("tail %s: n = %d, want %d", clip(tail), n, len(rec))
		}
		if string(r.Value) != "hello, vault" {
			t.Errorf("tail %s: value %q", clip(tail), r.Value)
		}
		if cap(r.Key) != len(r.Key) || cap(r.Value) != len(r.Value) {
			t.Errorf("key and value views must be capped so an append cannot overwrite the input: cap %d/%d", cap(r.Key), cap(r.Value))
		}
	}
}

// TestDecodeRecordIDNotInCRC documents a property of v1: the crc covers the
// attributes, key and value, not the id.
func TestDecodeRecordIDNotInCRC(t *testing.T) {
	b := goldenRecord(t)
	b[2] ^= 0xff
	r, _, err := formats.DecodeRecord(b)
	if err != nil {
		t.Fatalf("DecodeRecord with a changed id: %v (v1's crc does not cover the id)", err)
	}
	if r.ID.Millis() == 0x0123456789ab {
		t.Errorf("id not decoded from the input")
	}
}

func TestDecodeRecordViews(t *testing.T) {
	b := goldenRecord(t)
	r, _, err := formats.DecodeRecord(b)
	if err != nil {
		t.Fatal(err)
	}
	b[19] = 'C'
	b[21+10] = 'H'
	if string(r.Key) != "Contract-a" || string(r.Value) != "Hello, vault" {
		t.Errorf("key %q value %q: want views into the input", r.Key, r.Value)
	}
}

func TestAppendRecordTooLarge(t *testing.T) {
	id := formats.NewID(1, 2, 3)
	tests := []struct {
		name       string
		key, value int
		wantErr    error
	}{
		{"max key and value", messagevault.MaxKeySize, messagevault.MaxValueSize, nil},
		{"key 256", messagevault.MaxKeySize + 1, 0, formats.ErrTooLarge},
		{"value 65536", 0, messagevault.MaxValueSize + 1, formats.ErrTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := messagevault.NewMessage(make([]byte, tt.key), make([]byte, tt.value), 0)
			dst := []byte("prefix")
			out, err := formats.AppendRecord(dst, id, m)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				if string(out) != "prefix" {
					t.Errorf("dst changed on error: %q", clip(out))
				}
				if !strings.Contains(err.Error(), "limit") {
					t.Errorf("error %q does not say the limit", err)
				}
				return
			}
			if got := len(out) - len(dst); got != formats.MaxRecordSize {
				t.Errorf("record is %d bytes, want MaxRecordSize %d", got, formats.MaxRecordSize)
			}
			r, n, err := formats.DecodeRecord(out[len(dst):])
			if err != nil || n != formats.MaxRecordSize || len(r.Key) != tt.key || len(r.Value) != tt.value {
				t.Errorf("DecodeRecord: n %d key %d value %d err %v", n, len(r.Key), len(r.Value), err)
			}
		})
	}
}

// randMessage returns a valid message with random attributes (0..3), a key
// of 0..maxKey bytes and a value of 0..maxValue bytes.
func randMessage(rng *rand.Rand, maxKey, maxValue int) messagevault.Message {
	key := make([]byte, rng.IntN(maxKey+1))
	value := make([]byte, rng.IntN(maxValue+1))
	for i := range key {
		key[i] = byte(rng.Uint32())
	}
	for i := range value {
		value[i] = byte(rng.Uint32())
	}
	return messagevault.NewMessage(key, value, byte(rng.IntN(4)))
}

func randID(rng *rand.Rand) formats.ID {
	return formats.NewID(rng.Int64N(1<<48), rng.Int64N(1<<48), rng.Uint32())
}

func TestRecordRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var stream []byte
	type written struct {
		id  formats.ID
		m   messagevault.Message
		pos int
	}
	var all []written
	for i := range 500 {
		maxValue := 300
		if i%50 == 0 {
			maxValue = messagevault.MaxValueSize
		}
		m := randMessage(rng, messagevault.MaxKeySize, maxValue)
		id := randID(rng)
		pos := len(stream)
		var err error
		stream, err = formats.AppendRecord(stream, id, m)
		if err != nil {
			t.Fatalf("AppendRecord %d: %v", i, err)
		}
		if got, want := len(stream)-pos, formats.RecordSize(len(m.Key), len(m.Value)); got != want {
			t.Fatalf("record %d is %d bytes, RecordSize says %d", i, got, want)
		}
		all = append(all, written{id, m, pos})
	}
	// Zero padding, as at the end of a page in storage.
	stream = append(stream, make([]byte, 100)...)

	p := 0
	for i, w := range all {
		if p != w.pos {
			t.Fatalf("record %d: decoder at byte %d, written at %d", i, p, w.pos)
		}
		r, n, err := formats.DecodeRecord(stream[p:])
		if err != nil {
			t.Fatalf("record %d at byte %d: %v", i, p, err)
		}
		if r.ID != w.id {
			t.Errorf("record %d: id %s, want %s", i, r.ID, w.id)
		}
		if got := r.Message(); !equalMessage(got, w.m) {
			t.Errorf("record %d: %s, want %s", i, fmtMessage(got), fmtMessage(w.m))
		}
		if n != r.Size() {
			t.Errorf("record %d: n %d, Size %d", i, n, r.Size())
		}
		if r.Offset != 0 {
			t.Errorf("record %d: Offset %d, the decoder leaves it to the caller", i, r.Offset)
		}
		p += n
	}
	if _, _, err := formats.DecodeRecord(stream[p:]); err != formats.ErrNoRecord {
		t.Errorf("after the last record: %v, want ErrNoRecord", err)
	}
}

// TestAppendRecordWritesCRCAsGiven checks that the encoder does not compute
// or fix the crc: a wrong crc is stored and the decoder catches it.
func TestAppendRecordWritesCRCAsGiven(t *testing.T) {
	m := messagevault.NewMessage([]byte("k"), []byte("v"), 0)
	m.CRC ^= 1
	b, err := formats.AppendRecord(nil, formats.ID{}, m)
	if err != nil {
		t.Fatal(err)
	}
	if got := binary.LittleEndian.Uint32(b[len(b)-4:]); got != m.CRC {
		t.Errorf("stored crc %#08x, want %#08x as given", got, m.CRC)
	}
	if _, _, err := formats.DecodeRecord(b); !errors.Is(err, formats.ErrCRC) {
		t.Errorf("DecodeRecord: %v, want ErrCRC", err)
	}
}

func TestRecordAllocs(t *testing.T) {
	rec := goldenRecord(t)
	big := readHex(t, "record_max_value.hex")
	cut := rec[:30]
	zeros := make([]byte, 2)
	var sink int
	cases := []struct {
		name string
		f    func()
	}{
		{"DecodeRecord valid", func() { _, n, _ := formats.DecodeRecord(rec); sink += n }},
		{"DecodeRecord valid max", func() { _, n, _ := formats.DecodeRecord(big); sink += n }},
		{"DecodeRecord truncated", func() { _, n, _ := formats.DecodeRecord(cut); sink += n }},
		{"DecodeRecord empty", func() { _, n, _ := formats.DecodeRecord(nil); sink += n }},
		{"DecodeRecord no record", func() { _, n, _ := formats.DecodeRecord(zeros); sink += n }},
	}
	m := messagevault.NewMessage([]byte("contract-a"), bytes.Repeat([]byte{'x'}, 100), 0)
	dst := make([]byte, 0, 4096)
	cases = append(cases, struct {
		name string
		f    func()
	}{"AppendRecord with capacity", func() {
		out, _ := formats.AppendRecord(dst[:0], formats.NewID(1, 2, 3), m)
		sink += len(out)
	}})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if a := testing.AllocsPerRun(100, c.f); a != 0 {
				t.Errorf("%v allocations per run, want 0", a)
			}
		})
	}
	_ = sink
}
