package kafka

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

// The codecs of a record batch's attributes (bits 0-2), as Kafka numbers
// them.
const (
	codecNone   = 0
	codecGzip   = 1
	codecSnappy = 2
	codecLZ4    = 3
	codecZstd   = 4
)

// MaxDecompressed bounds what one produce request's records may take
// once decoded, their decompressed bytes and a cost per record, so that a
// small request cannot claim unbounded memory.
const MaxDecompressed = 64 << 20

// errTooBig reports a batch that decompresses past its bound.
var errTooBig = fmt.Errorf("decompresses to more than %d bytes", MaxDecompressed)

// zstdDecoder decodes zstd frames; DecodeAll is safe for concurrent use.
var zstdDecoder = sync.OnceValue(func() *zstd.Decoder {
	d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(MaxDecompressed))
	if err != nil {
		panic(err) // only for invalid options
	}
	return d
})

// xerialMagic starts snappy data in the framing of the Java client's
// xerial library (older Java producers), rather than one raw block.
var xerialMagic = []byte{0x82, 'S', 'N', 'A', 'P', 'P', 'Y', 0}

// decompress expands b, compressed with codec, to at most limit bytes.
func decompress(codec int, b []byte, limit int) ([]byte, error) {
	switch codec {
	case codecGzip:
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		return readLimited("gzip", zr, limit)
	case codecSnappy:
		if bytes.HasPrefix(b, xerialMagic) {
			return unxerial(b, limit)
		}
		return snappyBlock(b, nil, limit)
	case codecLZ4:
		return readLimited("lz4", lz4.NewReader(bytes.NewReader(b)), limit)
	case codecZstd:
		out, err := zstdDecoder().DecodeAll(b, nil)
		if errors.Is(err, zstd.ErrDecoderSizeExceeded) {
			return nil, fmt.Errorf("zstd: %w", errTooBig)
		}
		if err != nil {
			return nil, fmt.Errorf("zstd: %w", err)
		}
		if len(out) > limit {
			return nil, fmt.Errorf("zstd: %w", errTooBig)
		}
		return out, nil
	}
	return nil, fmt.Errorf("unknown compression codec %d", codec)
}

// readLimited reads r to its end, failing past limit bytes.
func readLimited(codec string, r io.Reader, limit int) ([]byte, error) {
	out, err := io.ReadAll(io.LimitReader(r, int64(limit)+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", codec, err)
	}
	if len(out) > limit {
		return nil, fmt.Errorf("%s: %w", codec, errTooBig)
	}
	return out, nil
}

// snappyBlock appends the decoding of one raw snappy block to dst.
func snappyBlock(b, dst []byte, limit int) ([]byte, error) {
	n, err := s2.DecodedLen(b)
	if err != nil {
		return nil, fmt.Errorf("snappy: %w", err)
	}
	if len(dst)+n > limit {
		return nil, fmt.Errorf("snappy: %w", errTooBig)
	}
	out, err := s2.Decode(nil, b)
	if err != nil {
		return nil, fmt.Errorf("snappy: %w", err)
	}
	return append(dst, out...), nil
}

// unxerial decodes xerial framing: the magic, two int32 versions, then
// blocks, each an int32 length and a raw snappy block.
func unxerial(b []byte, limit int) ([]byte, error) {
	b = b[len(xerialMagic):]
	if len(b) < 8 {
		return nil, errors.New("snappy: truncated xerial header")
	}
	b = b[8:]
	var out []byte
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, errors.New("snappy: truncated xerial block")
		}
		n := int(binary.BigEndian.Uint32(b))
		b = b[4:]
		if n < 0 || n > len(b) {
			return nil, errors.New("snappy: xerial block length out of bounds")
		}
		var err error
		if out, err = snappyBlock(b[:n], out, limit); err != nil {
			return nil, err
		}
		b = b[n:]
	}
	return out, nil
}
