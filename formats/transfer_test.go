package formats_test

import (
	"bytes"
	"crypto/md5"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/formats"
)

// goldenTransfer returns a fresh copy of testdata/transfer_three.hex. Its
// layout, byte offsets in the body:
//
//	0       version
//	1..2    count 3
//	3       message 0: attr 3, key length 4, key 5..14, value length 15..16, value 17..21, crc 22..25
//	26      message 1: attr 26, key length 27, value length 28..29, value 30..33, crc 34..37
//	38      message 2: attr 38, key length 39, key 40, value length 41..42, crc 43..46
//	47..62  md5
func goldenTransfer(t testing.TB) []byte { return readHex(t, transferGolden.file) }

// reseal rewrites the MD5 at the end of body to match the bytes before it,
// so that a test can target one fault at a time.
func reseal(body []byte) []byte {
	end := len(body) - md5.Size
	sum := md5.Sum(body[:end])
	copy(body[end:], sum[:])
	return body
}

// decodeKeepsDst calls DecodeTransfer with a dst that already holds two
// messages and has spare capacity, and checks the contract on error: dst
// comes back with the same length and the same first elements.
func decodeKeepsDst(t *testing.T, body []byte) ([]messagevault.Message, error) {
	t.Helper()
	prior := []messagevault.Message{
		messagevault.NewMessage([]byte("p0"), []byte("v0"), 0),
		messagevault.NewMessage([]byte("p1"), []byte("v1"), 1),
	}
	dst := make([]messagevault.Message, 2, 8)
	copy(dst, prior)
	out, err := formats.DecodeTransfer(body, dst)
	for i := range prior {
		if i >= len(out) || !equalMessage(out[i], prior[i]) {
			t.Fatalf("DecodeTransfer changed dst[%d]", i)
		}
	}
	if err != nil {
		if len(out) != len(prior) {
			t.Fatalf("DecodeTransfer returned dst of length %d on error, want %d (unchanged); err %v", len(out), len(prior), err)
		}
		return nil, err
	}
	return out[len(prior):], nil
}

func TestDecodeTransferTruncated(t *testing.T) {
	body := goldenTransfer(t)
	for cut := range len(body) {
		in := bytes.Clone(body[:cut])
		_, err := decodeKeepsDst(t, in)
		if !errors.Is(err, formats.ErrTruncated) && !errors.Is(err, formats.ErrCount) && !errors.Is(err, formats.ErrMD5) {
			t.Errorf("cut at %d of %d: err = %v, want ErrTruncated, ErrCount or ErrMD5", cut, len(body), err)
		}
	}
}

// TestDecodeTransferTruncatedResealed cuts the messages at every length and
// appends a valid MD5 of what is left, so that only the length checks can
// catch the cut.
func TestDecodeTransferTruncatedResealed(t *testing.T) {
	body := goldenTransfer(t)
	end := len(body) - md5.Size
	for cut := formats.TransferHeaderSize; cut < end; cut++ {
		in := reseal(append(bytes.Clone(body[:cut]), make([]byte, md5.Size)...))
		_, err := decodeKeepsDst(t, in)
		switch {
		case errors.Is(err, formats.ErrTruncated):
			if !strings.Contains(err.Error(), "message ") || !strings.Contains(err.Error(), "byte ") {
				t.Errorf("cut at %d: error %q does not name the message and byte", cut, err)
			}
		case errors.Is(err, formats.ErrCount):
		default:
			t.Errorf("cut at %d: err = %v, want ErrTruncated or ErrCount", cut, err)
		}
	}
}

func TestDecodeTransferErrors(t *testing.T) {
	tests := []struct {
		name     string
		mutate   func(b []byte) []byte
		wantErr  error
		wantText []string
	}{
		{
			name:     "empty body",
			mutate:   func(b []byte) []byte { return nil },
			wantErr:  formats.ErrTruncated,
			wantText: []string{"0 bytes"},
		},
		{
			name:     "shorter than header and md5",
			mutate:   func(b []byte) []byte { return b[:18] },
			wantErr:  formats.ErrTruncated,
			wantText: []string{"18 bytes"},
		},
		{
			name:     "version 0x00",
			mutate:   func(b []byte) []byte { b[0] = 0x00; return reseal(b) },
			wantErr:  formats.ErrVersion,
			wantText: []string{"0x00", "byte 0"},
		},
		{
			name:     "version 0x03",
			mutate:   func(b []byte) []byte { b[0] = 0x03; return reseal(b) },
			wantErr:  formats.ErrVersion,
			wantText: []string{"0x03", "byte 0"},
		},
		{
			name:     "count 0",
			mutate:   func(b []byte) []byte { binary.LittleEndian.PutUint16(b[1:], 0); return reseal(b) },
			wantErr:  formats.ErrCount,
			wantText: []string{"count", "byte 1"},
		},
		{
			name:     "count 0 with only header and md5",
			mutate:   func(b []byte) []byte { return reseal([]byte{1, 0, 0, 15: 0, 18: 0}) },
			wantErr:  formats.ErrCount,
			wantText: []string{"count", "byte 1"},
		},
		{
			name:     "count 4, three messages present",
			mutate:   func(b []byte) []byte { binary.LittleEndian.PutUint16(b[1:], 4); return reseal(b) },
			wantErr:  formats.ErrCount,
			wantText: []string{"4 messages", "holds 3"},
		},
		{
			name:     "count 65535, three messages present",
			mutate:   func(b []byte) []byte { binary.LittleEndian.PutUint16(b[1:], 65535); return reseal(b) },
			wantErr:  formats.ErrCount,
			wantText: []string{"65535 messages", "holds 3"},
		},
		{
			name:     "count 2, three messages present",
			mutate:   func(b []byte) []byte { binary.LittleEndian.PutUint16(b[1:], 2); return reseal(b) },
			wantErr:  formats.ErrCount,
			wantText: []string{"2 messages", "9 bytes follow"},
		},
		{
			name:     "count 1, three messages present",
			mutate:   func(b []byte) []byte { binary.LittleEndian.PutUint16(b[1:], 1); return reseal(b) },
			wantErr:  formats.ErrCount,
			wantText: []string{"1 messages", "21 bytes follow"},
		},
		{
			name:     "message 0 key length overruns body",
			mutate:   func(b []byte) []byte { b[4] = 0xff; return reseal(b) },
			wantErr:  formats.ErrTruncated,
			wantText: []string{"message 0", "byte 3"},
		},
		{
			name:     "message 1 key length overruns body",
			mutate:   func(b []byte) []byte { b[27] = 0xff; return reseal(b) },
			wantErr:  formats.ErrTruncated,
			wantText: []string{"message 1", "byte 26"},
		},
		{
			name:     "message 2 value length overruns body",
			mutate:   func(b []byte) []byte { binary.LittleEndian.PutUint16(b[41:], 0xffff); return reseal(b) },
			wantErr:  formats.ErrTruncated,
			wantText: []string{"message 2", "byte 38"},
		},
		{
			name: "message 2 value length overruns crc into md5",
			// The value would end where the crc starts; the crc would be
			// read from the md5.
			mutate:   func(b []byte) []byte { binary.LittleEndian.PutUint16(b[41:], 4); return reseal(b) },
			wantErr:  formats.ErrTruncated,
			wantText: []string{"message 2", "byte 38"},
		},
		{
			name: "message 0 value length one short",
			// The lengths still parse to three messages that end at the
			// md5 (message 1 starts a byte early with a 1-byte key), so
			// only the crc of message 0 catches it.
			mutate:   func(b []byte) []byte { binary.LittleEndian.PutUint16(b[15:], 4); return reseal(b) },
			wantErr:  formats.ErrCRC,
			wantText: []string{"message 0"},
		},
		{
			name:     "message 1 crc wrong",
			mutate:   func(b []byte) []byte { b[34] ^= 0x01; return reseal(b) },
			wantErr:  formats.ErrCRC,
			wantText: []string{"message 1", "0x7c9ca35a", "0x7c9ca35b"},
		},
		{
			name:     "message 0 value changed",
			mutate:   func(b []byte) []byte { b[17] = 'j'; return reseal(b) },
			wantErr:  formats.ErrCRC,
			wantText: []string{"message 0"},
		},
		{
			name:     "message 2 attributes changed",
			mutate:   func(b []byte) []byte { b[38] = 0; return reseal(b) },
			wantErr:  formats.ErrCRC,
			wantText: []string{"message 2"},
		},
		{
			name:     "message 1 crc wrong, md5 not resealed",
			mutate:   func(b []byte) []byte { b[34] ^= 0x01; return b },
			wantErr:  formats.ErrMD5, // the md5 is checked before the crcs
			wantText: []string{"md5", "byte 47"},
		},
		{
			name:     "md5 wrong",
			mutate:   func(b []byte) []byte { b[len(b)-1] ^= 0x80; return b },
			wantErr:  formats.ErrMD5,
			wantText: []string{"md5", "byte 47", "63 bytes"},
		},
		{
			name:     "md5 all zero",
			mutate:   func(b []byte) []byte { clear(b[47:]); return b },
			wantErr:  formats.ErrMD5,
			wantText: []string{"md5", "byte 47"},
		},
		{
			name:     "trailing byte after md5",
			mutate:   func(b []byte) []byte { return append(b, 0x00) },
			wantErr:  formats.ErrCount,
			wantText: []string{"1 bytes follow"},
		},
		{
			name:     "trailing md5 after md5",
			mutate:   func(b []byte) []byte { return append(b, b[47:]...) },
			wantErr:  formats.ErrCount,
			wantText: []string{"16 bytes follow"},
		},
		{
			name: "trailing garbage before a valid md5",
			mutate: func(b []byte) []byte {
				out := append(bytes.Clone(b[:47]), "garbage"...)
				return reseal(append(out, make([]byte, md5.Size)...))
			},
			wantErr:  formats.ErrCount,
			wantText: []string{"7 bytes follow"},
		},
		{
			name: "a whole fourth message not counted",
			mutate: func(b []byte) []byte {
				out := append(bytes.Clone(b[:47]), b[38:47]...)
				return reseal(append(out, make([]byte, md5.Size)...))
			},
			wantErr:  formats.ErrCount,
			wantText: []string{"3 messages", "9 bytes follow"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeKeepsDst(t, tt.mutate(goldenTransfer(t)))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			for _, s := range tt.wantText {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
			// Nil dst: nothing comes back.
			out, err := formats.DecodeTransfer(tt.mutate(goldenTransfer(t)), nil)
			if err == nil || len(out) != 0 {
				t.Errorf("DecodeTransfer(nil dst) = %d messages, %v", len(out), err)
			}
		})
	}
}

func TestDecodeTransferAppendsToDst(t *testing.T) {
	body := goldenTransfer(t)
	got, err := decodeKeepsDst(t, body)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(transferGolden.msgs) {
		t.Fatalf("%d messages, want %d", len(got), len(transferGolden.msgs))
	}
	for i := range got {
		if !equalMessage(got[i], transferGolden.msgs[i]) {
			t.Errorf("message %d = %s, want %s", i, fmtMessage(got[i]), fmtMessage(transferGolden.msgs[i]))
		}
	}
	// The messages are views into the body.
	body[5] = 'C'
	if string(got[0].Key) != "Contract-a" {
		t.Errorf("key %q: want a view into the body", got[0].Key)
	}
}

func TestAppendTransferErrors(t *testing.T) {
	ok := messagevault.NewMessage([]byte("k"), []byte("v"), 0)
	tests := []struct {
		name     string
		msgs     []messagevault.Message
		wantErr  error
		wantText []string
	}{
		{"no messages", nil, formats.ErrCount, []string{"0 messages"}},
		{"65536 messages", make([]messagevault.Message, messagevault.MaxBatchCount+1), formats.ErrCount, []string{"65536 messages"}},
		{"key too large", []messagevault.Message{ok, ok, {Key: make([]byte, 256)}}, formats.ErrTooLarge, []string{"message 2", "256"}},
		{"value too large", []messagevault.Message{{Value: make([]byte, 65536)}}, formats.ErrTooLarge, []string{"message 0", "65536"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := formats.AppendTransfer([]byte("prefix"), tt.msgs)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if string(out) != "prefix" {
				t.Errorf("dst changed on error: %s", clip(out))
			}
			for _, s := range tt.wantText {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
		})
	}
}

func TestTransferMaxCount(t *testing.T) {
	msgs := make([]messagevault.Message, messagevault.MaxBatchCount)
	body, err := formats.AppendTransfer(nil, msgs)
	if err != nil {
		t.Fatal(err)
	}
	if len(body) != formats.TransferSize(msgs) {
		t.Errorf("body %d bytes, TransferSize %d", len(body), formats.TransferSize(msgs))
	}
	if got := binary.LittleEndian.Uint16(body[1:]); got != 0xffff {
		t.Errorf("count %d, want 65535", got)
	}
	got, err := formats.DecodeTransfer(body, nil)
	if err != nil || len(got) != messagevault.MaxBatchCount {
		t.Fatalf("DecodeTransfer: %d messages, %v", len(got), err)
	}
}

func TestTransferRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var body []byte
	var dst []messagevault.Message
	for batch := range 200 {
		n := 1 + rng.IntN(50)
		maxValue := 500
		if batch%40 == 0 {
			maxValue = messagevault.MaxValueSize
		}
		msgs := make([]messagevault.Message, n)
		for i := range msgs {
			msgs[i] = randMessage(rng, messagevault.MaxKeySize, maxValue)
		}
		// Encode after a prefix, to check that the MD5 covers only this body.
		prefix := rng.IntN(3)
		var err error
		appendTransfer, size := formats.AppendTransfer, formats.TransferSize(msgs)
		if batch%2 == 1 {
			appendTransfer, size = formats.AppendTransferV2, size-formats.TransferTrailerSize+formats.TransferV2TrailerSize
		}
		body, err = appendTransfer(append(body[:0], make([]byte, prefix)...), msgs)
		if err != nil {
			t.Fatalf("batch %d: AppendTransfer: %v", batch, err)
		}
		body = body[prefix:]
		if len(body) != size {
			t.Fatalf("batch %d: body %d bytes, TransferSize %d", batch, len(body), formats.TransferSize(msgs))
		}
		dst, err = formats.DecodeTransfer(body, dst[:0])
		if err != nil {
			t.Fatalf("batch %d: DecodeTransfer: %v", batch, err)
		}
		if len(dst) != n {
			t.Fatalf("batch %d: %d messages, want %d", batch, len(dst), n)
		}
		for i := range dst {
			if !equalMessage(dst[i], msgs[i]) {
				t.Fatalf("batch %d message %d = %s, want %s", batch, i, fmtMessage(dst[i]), fmtMessage(msgs[i]))
			}
		}
	}
}

func TestTransferAllocs(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	msgs := make([]messagevault.Message, 100)
	for i := range msgs {
		msgs[i] = randMessage(rng, 20, 200)
	}
	body, err := formats.AppendTransfer(nil, msgs)
	if err != nil {
		t.Fatal(err)
	}
	dst := make([]messagevault.Message, 0, len(msgs))
	buf := make([]byte, 0, len(body))
	var sink int
	cases := []struct {
		name string
		f    func()
	}{
		{"DecodeTransfer into dst with capacity", func() {
			out, err := formats.DecodeTransfer(body, dst[:0])
			if err != nil {
				panic(err)
			}
			sink += len(out)
		}},
		{"AppendTransfer into buffer with capacity", func() {
			out, _ := formats.AppendTransfer(buf[:0], msgs)
			sink += len(out)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if a := testing.AllocsPerRun(100, c.f); a != 0 {
				t.Errorf("%v allocations per run, want 0", a)
			}
		})
	}
	_ = sink
}
