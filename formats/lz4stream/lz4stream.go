// Package lz4stream reads and writes LZ4Stream, the chunked compression
// format of the .NET library lz4net. The original MessageVault's C# client
// compresses every value it publishes with it and decompresses every value
// it reads with it, so values meant for those consumers must be written in
// this format rather than as LZ4 frames.
//
// A value is a sequence of chunks, each holding up to one block of the
// uncompressed input (lz4net's default block is 1 MiB). A chunk is:
//
//	varint  flags              bit 0: compressed; bit 1: written by the
//	                           high-compression encoder (informational);
//	                           bits 2 and up must be zero
//	varint  original length    bytes the chunk decompresses to
//	varint  compressed length  only when bit 0 is set; at most the
//	                           original length
//	bytes   data               an LZ4 block (the raw block format, no
//	                           frame) when compressed, else the bytes
//	                           themselves
//
// A varint holds 7 bits per byte, least significant group first, with the
// high bit set on every byte but the last. An empty input is written as no
// chunks at all, so an empty compressed value is zero bytes long.
package lz4stream

import (
	"errors"
	"fmt"
	"math"

	"github.com/pierrec/lz4/v4"
)

// BlockSize is the largest chunk Encode writes: lz4net's default block,
// which the original client uses.
const BlockSize = 1 << 20

const (
	flagCompressed = 0x01
	flagHigh       = 0x02
	knownFlags     = flagCompressed | flagHigh
	maxVarintBytes = 10  // lz4net reads at most 64 bits' worth of groups
	maxRatio       = 255 // LZ4 expands a block at most about this much
)

// ErrCorrupt is wrapped by every error Decode returns for input that is
// not a well-formed LZ4Stream.
var ErrCorrupt = errors.New("corrupt LZ4Stream value")

// Encode compresses src into LZ4Stream chunks of at most BlockSize input
// bytes each. A block that does not get smaller is stored uncompressed, as
// lz4net does, so the output is at most a few bytes per block larger than
// src. The output is appended to dst, which may be nil.
func Encode(dst, src []byte) []byte {
	var c lz4.Compressor
	buf := make([]byte, min(len(src), BlockSize))
	for len(src) > 0 {
		block := src[:min(len(src), BlockSize)]
		src = src[len(block):]
		n, err := c.CompressBlock(block, buf[:len(block)])
		if err != nil || n == 0 || n >= len(block) {
			dst = appendVarint(dst, 0)
			dst = appendVarint(dst, uint64(len(block)))
			dst = append(dst, block...)
			continue
		}
		dst = appendVarint(dst, flagCompressed)
		dst = appendVarint(dst, uint64(len(block)))
		dst = appendVarint(dst, uint64(n))
		dst = append(dst, buf[:n]...)
	}
	return dst
}

// Decode decompresses an LZ4Stream value. It refuses, without allocating
// them, values that would decompress to more than limit bytes, so a small
// malicious value cannot exhaust memory. Errors for malformed input wrap
// ErrCorrupt and name the chunk and byte where the problem is.
func Decode(src []byte, limit int) ([]byte, error) {
	var out []byte
	for pos, chunk := 0, 0; pos < len(src); chunk++ {
		start := pos
		fail := func(format string, args ...any) error {
			return fmt.Errorf("%w: chunk %d at byte %d: %s", ErrCorrupt, chunk, start, fmt.Sprintf(format, args...))
		}
		flags, n, err := readVarint(src[pos:])
		if err != nil {
			return nil, fail("flags: %v", err)
		}
		pos += n
		if flags&^knownFlags != 0 {
			return nil, fail("flags 0x%x have bits the format does not define", flags)
		}
		orig, n, err := readVarint(src[pos:])
		if err != nil {
			return nil, fail("original length: %v", err)
		}
		pos += n
		stored := orig
		if flags&flagCompressed != 0 {
			if stored, n, err = readVarint(src[pos:]); err != nil {
				return nil, fail("compressed length: %v", err)
			}
			pos += n
			if stored > orig {
				return nil, fail("compressed length %d is more than the original length %d", stored, orig)
			}
			if orig > maxRatio*stored+16 {
				// LZ4 cannot expand that much: refused before the
				// output is allocated.
				return nil, fail("%d bytes cannot decompress to %d", stored, orig)
			}
		}
		if stored > uint64(len(src)-pos) {
			return nil, fail("needs %d bytes of data, %d are left", stored, len(src)-pos)
		}
		if orig > uint64(limit-len(out)) {
			return nil, fmt.Errorf("decompresses to more than the limit of %d bytes", limit)
		}
		data := src[pos : pos+int(stored)]
		pos += int(stored)
		if flags&flagCompressed == 0 || orig == 0 {
			out = append(out, data...)
			continue
		}
		at := len(out)
		out = append(out, make([]byte, orig)...)
		got, err := lz4.UncompressBlock(data, out[at:])
		if err != nil {
			return nil, fail("LZ4 block: %v", err)
		}
		if uint64(got) != orig {
			return nil, fail("LZ4 block decompresses to %d bytes, the chunk says %d", got, orig)
		}
	}
	if out == nil {
		out = []byte{}
	}
	return out, nil
}

// appendVarint appends v in LZ4Stream's varint encoding.
func appendVarint(dst []byte, v uint64) []byte {
	for v >= 0x80 {
		dst = append(dst, byte(v)|0x80)
		v >>= 7
	}
	return append(dst, byte(v))
}

// readVarint reads one varint from the start of b, returning it and its
// length. Lengths past what a .NET int holds are refused, as lz4net cannot
// have written them.
func readVarint(b []byte) (uint64, int, error) {
	var v uint64
	for i := 0; i < len(b) && i < maxVarintBytes; i++ {
		v |= uint64(b[i]&0x7f) << (7 * i)
		if b[i]&0x80 == 0 {
			if v > math.MaxInt32 {
				return 0, 0, fmt.Errorf("%d is more than a chunk can hold", v)
			}
			return v, i + 1, nil
		}
	}
	if len(b) < maxVarintBytes {
		return 0, 0, errors.New("the value ends inside a varint")
	}
	return 0, 0, errors.New("a varint longer than 10 bytes")
}
