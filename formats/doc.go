// Package formats owns the bytes of MessageVault v1: the stored record, the
// 16-byte message id and the transfer format of a publish request. It is
// byte-compatible with the original MessageVault (C#, 2015).
//
// Encoders append to a caller's slice; decoders return views into the input
// (no allocation per record) and never panic on any input.
//
// # Record
//
// Records are packed back to back from stream position 0. Integers are
// little-endian, except the id.
//
//	offset  size  field
//	0       1     version, 0x01 (0x00 means "no record": end of data)
//	1       1     attributes: bit 0 LZ4-compressed value (an LZ4 frame, or
//	              lz4net's LZ4Stream as the original C# client writes it:
//	              package lz4stream), bit 1 to be continued
//	2       16    id (big-endian, see below)
//	18      1     key length K, 0..255
//	19      K     key
//	19+K    2     value length V, 0..65535 (uint16 LE)
//	21+K    V     value
//	21+K+V  4     crc (uint32 LE) = attributes ^ crc32(key) ^ crc32(value)
//
// crc32 is CRC-32/IEEE (the zip polynomial 0xEDB88320); the crc32 of an
// empty slice is 0, so a record with an empty key and value and no
// attributes has crc 0. A record is 25+K+V bytes: 25 at least, 65815 at
// most.
//
// # Id (16 bytes, big-endian)
//
//	bytes 0..5    milliseconds since 2010-01-01T00:00:00Z
//	bytes 6..11   the record's byte position in the stream
//	bytes 12..15  a process-local counter, seeded at random, +1 per id
//
// Ids therefore sort by time, then position. The original prints an id as
// 32 hex digits with dashes after the 12th and 24th:
// "0123456789ab-0000000001f4-00000007".
//
// # Transfer
//
// The body of POST /streams/{stream}:
//
//	u8   version = 1
//	u16  count, 1..65535 (LE)
//	count times:
//	  u8   attributes
//	  u8   key length K
//	  K    key
//	  u16  value length V (LE)
//	  V    value
//	  u32  crc (LE), as in the record
//	16   MD5 of every byte before it
//
// The body carries no id: the server assigns ids when it writes records.
//
// A v2 body (this implementation's own; Content-Type
// application/vnd.messagevault.transfer-v2) is the same with version = 2 and,
// instead of the MD5, a u32 (LE) CRC-32C (Castagnoli) of every byte before
// it: computed by the processor, it costs a small part of an MD5. The
// server takes both; the original's clients send v1.
package formats
