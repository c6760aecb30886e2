package lz4stream_test

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/messagevault/messagevault/formats/lz4stream"
	"github.com/messagevault/messagevault/internal/hexfile"
)

const limit = 64 << 20

func golden(t testing.TB, name string) []byte {
	t.Helper()
	b, err := hexfile.Parse(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestGoldenDecode decodes values written by hand from the format's
// description.
func TestGoldenDecode(t *testing.T) {
	for _, g := range []struct {
		file string
		want string
	}{
		{"stored.hex", "hello"},
		{"compressed.hex", strings.Repeat("abc", 10) + "-end!"},
		{"two_chunks.hex", strings.Repeat("a", 300) + "xyz"},
	} {
		t.Run(g.file, func(t *testing.T) {
			got, err := lz4stream.Decode(golden(t, g.file), limit)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != g.want {
				t.Fatalf("decoded %q, want %q", got, g.want)
			}
		})
	}
}

func TestEmpty(t *testing.T) {
	if got := lz4stream.Encode(nil, nil); len(got) != 0 {
		t.Fatalf("empty input encodes to %x, want no chunks", got)
	}
	got, err := lz4stream.Decode(nil, limit)
	if err != nil || got == nil || len(got) != 0 {
		t.Fatalf("no chunks decode to %q, %v; want an empty value", got, err)
	}
}

// TestEncodeLayout checks the chunks Encode writes against the format: a
// chunk per BlockSize of input, incompressible blocks stored as they are.
func TestEncodeLayout(t *testing.T) {
	// Stored: random bytes do not compress.
	src := make([]byte, 1000)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range src {
		src[i] = byte(rng.Uint32())
	}
	got := lz4stream.Encode(nil, src)
	want := append([]byte{0x00, 0xe8, 0x07}, src...) // 1000 = 0x68 | 0x07<<7
	if !bytes.Equal(got, want) {
		t.Fatalf("incompressible input: header % x, want % x", got[:3], want[:3])
	}

	// Compressed, in blocks: 2.5 MiB of text.
	src = bytes.Repeat([]byte("message vault "), (5<<20)/2/14)
	enc := lz4stream.Encode(nil, src)
	if len(enc) >= len(src)/10 {
		t.Fatalf("%d bytes of text encoded to %d", len(src), len(enc))
	}
	var origs []int
	for pos := 0; pos < len(enc); {
		flags, n := uvarint(t, enc[pos:])
		pos += n
		if flags != 1 {
			t.Fatalf("chunk %d: flags %d, want 1 (compressed)", len(origs), flags)
		}
		orig, n := uvarint(t, enc[pos:])
		pos += n
		comp, n := uvarint(t, enc[pos:])
		pos += n + comp
		origs = append(origs, orig)
	}
	if len(origs) != 3 || origs[0] != lz4stream.BlockSize || origs[1] != lz4stream.BlockSize || origs[0]+origs[1]+origs[2] != len(src) {
		t.Fatalf("chunk lengths %v for %d bytes, want two of %d and the rest", origs, len(src), lz4stream.BlockSize)
	}
	dec, err := lz4stream.Decode(enc, limit)
	if err != nil || !bytes.Equal(dec, src) {
		t.Fatalf("round trip: %v, equal %v", err, bytes.Equal(dec, src))
	}
}

// uvarint reads a varint as the format describes it, independently of the
// package.
func uvarint(t *testing.T, b []byte) (int, int) {
	t.Helper()
	v, shift := 0, 0
	for i, c := range b {
		v |= int(c&0x7f) << shift
		shift += 7
		if c&0x80 == 0 {
			return v, i + 1
		}
	}
	t.Fatal("truncated varint")
	return 0, 0
}

func TestDecodeRefuses(t *testing.T) {
	compressed := golden(t, "compressed.hex")
	for _, c := range []struct {
		name string
		in   []byte
		want string
	}{
		{"passes", []byte{0x05, 0x01, 0x01, 0x00}, "bits the format does not define"},
		{"truncated data", compressed[:len(compressed)-1], "needs 13 bytes of data, 12 are left"},
		{"compressed longer than original", []byte{0x01, 0x02, 0x03, 0, 0, 0}, "more than the original length"},
		{"varint cut", []byte{0x00, 0x80}, "ends inside a varint"},
		{"varint too long", append([]byte{0x00}, bytes.Repeat([]byte{0xff}, 11)...), "longer than 10 bytes"},
		{"length past int32", []byte{0x00, 0x80, 0x80, 0x80, 0x80, 0x08}, "more than a chunk can hold"},
		{"bad block", []byte{0x01, 0x05, 0x02, 0xf0, 0x61}, "LZ4 block"},
		{"impossible ratio", []byte{0x01, 0x80, 0x80, 0x04, 0x01, 0x00}, "cannot decompress to"},
		{"short block", []byte{0x01, 0x24, 0x0d, 0x3f, 0x61, 0x62, 0x63, 0x03, 0x00, 0x08, 0x50, 0x2d, 0x65, 0x6e, 0x64, 0x21}, "LZ4 block"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := lz4stream.Decode(c.in, limit)
			if err == nil || !errors.Is(err, lz4stream.ErrCorrupt) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Decode(% x) = %v, want ErrCorrupt saying %q", c.in, err, c.want)
			}
		})
	}
}

// TestDecodeLimit checks that a small value claiming a huge output is
// refused before anything is allocated for it.
func TestDecodeLimit(t *testing.T) {
	enc := lz4stream.Encode(nil, bytes.Repeat([]byte{'z'}, 3<<20))
	if _, err := lz4stream.Decode(enc, 2<<20); err == nil || !strings.Contains(err.Error(), "more than the limit of 2097152 bytes") {
		t.Fatalf("3 MiB value under a 2 MiB limit: %v", err)
	}
	bomb := []byte{0x01, 0xff, 0xff, 0xff, 0xff, 0x07, 0x01, 0x00} // claims 2 GiB - 1
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 10 {
		if _, err := lz4stream.Decode(bomb, limit); err == nil {
			t.Fatal("a bomb decoded")
		}
	}
	runtime.ReadMemStats(&after)
	if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
		t.Fatalf("ten bombs' headers allocated %d bytes", n)
	}
}

func FuzzDecode(f *testing.F) {
	for _, name := range []string{"stored.hex", "compressed.hex", "two_chunks.hex"} {
		f.Add(golden(f, name))
	}
	f.Add(lz4stream.Encode(nil, bytes.Repeat([]byte("fuzz "), 1000)))
	f.Fuzz(func(t *testing.T, in []byte) {
		out, err := lz4stream.Decode(in, 1<<20)
		if err != nil {
			return
		}
		again, err := lz4stream.Decode(lz4stream.Encode(nil, out), 1<<20)
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("re-encoding a decoded value: %v", err)
		}
	})
}
