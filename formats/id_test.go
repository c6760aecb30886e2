package formats_test

import (
	"bytes"
	"cmp"
	"math/rand/v2"
	"regexp"
	"slices"
	"testing"
	"time"

	"github.com/messagevault/messagevault/formats"
)

func TestNewID(t *testing.T) {
	tests := []struct {
		name    string
		ms      int64
		offset  int64
		counter uint32
		bytes   [16]byte
		str     string
		// wantMs and wantOffset are the fields read back (48-bit truncated).
		wantMs, wantOffset int64
	}{
		{
			name: "doc example", ms: 0x0123456789ab, offset: 0x1f4, counter: 7,
			bytes:  [16]byte{0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0, 0, 0, 0, 0x01, 0xf4, 0, 0, 0, 0x07},
			str:    "0123456789ab-0000000001f4-00000007",
			wantMs: 0x0123456789ab, wantOffset: 0x1f4,
		},
		{
			name:  "zero",
			bytes: [16]byte{},
			str:   "000000000000-000000000000-00000000",
		},
		{
			name: "all fields at their maximum", ms: 1<<48 - 1, offset: formats.MaxIDOffset, counter: 0xffffffff,
			bytes:  [16]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
			str:    "ffffffffffff-ffffffffffff-ffffffff",
			wantMs: 1<<48 - 1, wantOffset: formats.MaxIDOffset,
		},
		{
			name: "ms and offset truncated to 48 bits", ms: 1<<48 | 5, offset: 3<<48 | 0x10, counter: 0x01020304,
			bytes:  [16]byte{0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0x10, 1, 2, 3, 4},
			str:    "000000000005-000000000010-01020304",
			wantMs: 5, wantOffset: 0x10,
		},
		{
			name: "big-endian, each byte distinct", ms: 0x0a0b0c0d0e0f, offset: 0x101112131415, counter: 0x16171819,
			bytes:  [16]byte{0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19},
			str:    "0a0b0c0d0e0f-101112131415-16171819",
			wantMs: 0x0a0b0c0d0e0f, wantOffset: 0x101112131415,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := formats.NewID(tt.ms, tt.offset, tt.counter)
			if [16]byte(id) != tt.bytes {
				t.Errorf("bytes %x, want %x", id[:], tt.bytes[:])
			}
			if got := id.String(); got != tt.str {
				t.Errorf("String = %q, want %q", got, tt.str)
			}
			if got := id.Millis(); got != tt.wantMs {
				t.Errorf("Millis = %#x, want %#x", got, tt.wantMs)
			}
			if got := id.Offset(); got != tt.wantOffset {
				t.Errorf("Offset = %#x, want %#x", got, tt.wantOffset)
			}
			if got := id.Counter(); got != tt.counter {
				t.Errorf("Counter = %#x, want %#x", got, tt.counter)
			}
		})
	}
}

var idStringRE = regexp.MustCompile(`^[0-9a-f]{12}-[0-9a-f]{12}-[0-9a-f]{8}$`)

func TestIDStringFormat(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	for range 1000 {
		id := randID(rng)
		s := id.String()
		if !idStringRE.MatchString(s) {
			t.Fatalf("String = %q, want 12 hex, '-', 12 hex, '-', 8 hex", s)
		}
	}
}

func TestIDTime(t *testing.T) {
	if !formats.IDEpoch.Equal(time.Date(2010, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("IDEpoch = %v, want 2010-01-01T00:00:00Z", formats.IDEpoch)
	}
	tests := []struct {
		name string
		ms   int64
		want time.Time
	}{
		{"epoch", 0, time.Date(2010, 1, 1, 0, 0, 0, 0, time.UTC)},
		{"1.5 s", 1500, time.Date(2010, 1, 1, 0, 0, 1, 500_000_000, time.UTC)},
		{"one day", 86_400_000, time.Date(2010, 1, 2, 0, 0, 0, 0, time.UTC)},
		// 2015-06-01T12:34:56.789Z: 1977 days and 12:34:56.789 after the epoch.
		{"2015", 1977*86_400_000 + (12*3600+34*60+56)*1000 + 789, time.Date(2015, 6, 1, 12, 34, 56, 789_000_000, time.UTC)},
		{"doc example", 0x0123456789ab, time.Date(2010, 1, 1, 0, 0, 0, 0, time.UTC).Add(0x0123456789ab * time.Millisecond)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := formats.NewID(tt.ms, 0, 0)
			got := id.Time()
			if !got.Equal(tt.want) {
				t.Errorf("Time = %v, want %v", got, tt.want)
			}
			if got.Location() != time.UTC {
				t.Errorf("Time location %v, want UTC", got.Location())
			}
			if ms := formats.MillisSinceEpoch(tt.want); ms != tt.ms {
				t.Errorf("MillisSinceEpoch(%v) = %d, want %d", tt.want, ms, tt.ms)
			}
		})
	}
	// Sub-millisecond precision is dropped.
	if ms := formats.MillisSinceEpoch(formats.IDEpoch.Add(1999 * time.Microsecond)); ms != 1 {
		t.Errorf("MillisSinceEpoch(epoch+1.999ms) = %d, want 1", ms)
	}
	// A time in another zone is the same instant.
	loc := time.FixedZone("UTC+2", 2*3600)
	if ms := formats.MillisSinceEpoch(time.Date(2010, 1, 1, 2, 0, 0, 0, loc)); ms != 0 {
		t.Errorf("MillisSinceEpoch(epoch in UTC+2) = %d, want 0", ms)
	}
}

// TestIDSortOrder checks that ids sort bytewise by time, then offset, then
// counter.
func TestIDSortOrder(t *testing.T) {
	type fields struct {
		ms, offset int64
		counter    uint32
	}
	rng := rand.New(rand.NewPCG(9, 10))
	var fs []fields
	for range 2000 {
		// Few distinct times and offsets, so that ties are common.
		fs = append(fs, fields{
			ms:      pick(rng, []int64{0, 1, 255, 256, 1 << 40, 1<<48 - 1}),
			offset:  pick(rng, []int64{0, 1, 0x1f4, 1 << 32, formats.MaxIDOffset}),
			counter: pick(rng, []uint32{0, 1, 0xff, 0x100, 0xffffffff}),
		})
	}
	ids := make([]formats.ID, len(fs))
	for i, f := range fs {
		ids[i] = formats.NewID(f.ms, f.offset, f.counter)
	}
	slices.SortFunc(fs, func(a, b fields) int {
		return cmp.Or(cmp.Compare(a.ms, b.ms), cmp.Compare(a.offset, b.offset), cmp.Compare(a.counter, b.counter))
	})
	slices.SortFunc(ids, func(a, b formats.ID) int { return bytes.Compare(a[:], b[:]) })
	for i := range ids {
		if ids[i].Millis() != fs[i].ms || ids[i].Offset() != fs[i].offset || ids[i].Counter() != fs[i].counter {
			t.Fatalf("at %d: bytewise order gives %s, field order gives ms %#x offset %#x counter %#x",
				i, ids[i], fs[i].ms, fs[i].offset, fs[i].counter)
		}
	}
	// The string form sorts the same way.
	if !slices.IsSortedFunc(ids, func(a, b formats.ID) int { return cmp.Compare(a.String(), b.String()) }) {
		t.Errorf("id strings do not sort like the ids")
	}
}

func pick[T any](rng *rand.Rand, xs []T) T { return xs[rng.IntN(len(xs))] }
