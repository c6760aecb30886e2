package client

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/pierrec/lz4/v4"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/formats/lz4stream"
)

// compression is how Publish compresses values.
type compression int

const (
	compressNone   compression = iota
	compressFrame              // LZ4 frames, when that makes a value smaller
	compressStream             // lz4net's LZ4Stream, always (the original C# client's way)
)

// minCompress is the smallest value compressFrame tries to compress.
const minCompress = 64

// apply compresses value as c says and returns it with its attributes.
func (c compression) apply(value []byte) ([]byte, byte) {
	switch c {
	case compressFrame:
		if len(value) > minCompress {
			if z, err := compressFrameLZ4(value); err == nil && len(z) < len(value) {
				return z, messagevault.AttrLZ4
			}
		}
	case compressStream:
		return lz4stream.Encode(nil, value), messagevault.AttrLZ4
	}
	return value, 0
}

func compressFrameLZ4(v []byte) ([]byte, error) {
	var buf bytes.Buffer
	w := lz4.NewWriter(&buf)
	if _, err := w.Write(v); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// LZ4 frame magic numbers: a frame, and the range of skippable frames
// (which a frame reader passes over).
const (
	frameMagic        = 0x184D2204
	skippableMagic    = 0x184D2A50
	skippableMagicTop = 0x184D2A5F
)

// isLZ4Frame tells an LZ4 frame from an LZ4Stream value. A frame starts
// with its 4-byte magic number, whose first byte (0x04, or 0x5X for a
// skippable frame) cannot start an LZ4Stream value: there it would be the
// first chunk's flags, where only bits 0 and 1 may be set.
func isLZ4Frame(v []byte) bool {
	if len(v) < 4 {
		return false
	}
	m := binary.LittleEndian.Uint32(v)
	return m == frameMagic || (m >= skippableMagic && m <= skippableMagicTop)
}

// decompressLZ4 decompresses a value flagged LZ4, an LZ4 frame (this
// package's WithCompression) or an LZ4Stream value (the original C#
// client, and WithLZ4Stream), to at most limit bytes.
func decompressLZ4(v []byte, limit int) ([]byte, error) {
	if !isLZ4Frame(v) {
		out, err := lz4stream.Decode(v, limit)
		if errors.Is(err, lz4stream.ErrCorrupt) {
			return nil, fmt.Errorf("neither an LZ4 frame nor an LZ4Stream value: %w", err)
		}
		return out, err
	}
	out, err := io.ReadAll(io.LimitReader(lz4.NewReader(bytes.NewReader(v)), int64(limit)+1))
	if err != nil {
		return nil, fmt.Errorf("LZ4 frame: %w", err)
	}
	if len(out) > limit {
		return nil, fmt.Errorf("decompresses to more than the reader's limit of %d bytes", limit)
	}
	return out, nil
}
