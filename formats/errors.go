package formats

import "errors"

// Errors returned by the decoders, wrapped with where the problem is. Test
// them with errors.Is.
var (
	// ErrTruncated reports input that ends inside a record or body. The
	// record decoder returns it unwrapped, so that a reader can fetch more
	// bytes without paying for an error value.
	ErrTruncated = errors.New("truncated")
	// ErrNoRecord reports a version byte of 0x00: no record here.
	ErrNoRecord = errors.New("no record (version byte 0x00)")
	// ErrVersion reports an unknown version byte (records: 0x01;
	// transfer bodies: 0x01 or 0x02).
	ErrVersion = errors.New("unknown format version")
	// ErrCRC reports a record whose crc does not match its attributes, key
	// and value.
	ErrCRC = errors.New("crc mismatch")
	// ErrMD5 reports a transfer body whose MD5 (v1) or CRC-32C (v2) does
	// not match.
	ErrMD5 = errors.New("md5 mismatch")
	// ErrCount reports a transfer count of zero, or a count that disagrees
	// with the body.
	ErrCount = errors.New("bad message count")
	// ErrTooLarge reports a key or value over the format's limits on
	// encode.
	ErrTooLarge = errors.New("too large")
)
