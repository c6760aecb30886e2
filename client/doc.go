// Package client is MessageVault's Go client: publish messages to a server,
// read and follow streams straight from storage with a read grant, and
// mirror a stream into a local directory.
//
// Messages here are whole application messages: a value larger than a
// record's 65,535 bytes is split into records flagged "to be continued"
// (attribute bit 1) and reassembled by the reader. With WithCompression a
// value is LZ4-compressed (an LZ4 frame; attribute bit 0 on each of its
// records) when that makes it smaller; with WithLZ4Stream every value is
// written in lz4net's LZ4Stream format, as the original C# client writes
// and reads them. The reader decompresses both, telling them apart by the
// LZ4 frame's magic number.
//
// Publishing retries with exponential backoff on 429, 503 and connection
// errors, within the caller's context. A retry after an error whose outcome
// is unknown (a 5xx, a dropped connection) can store a batch twice: readers
// that need exactly-once deduplicate on their own keys.
//
// Reading goes straight to storage through the server's read grant: a
// file:// URL for the local backend, a container SAS URL for Azure, renewed
// without the caller noticing when it expires. Azure grants are opened by a
// GrantReader given with WithGrantReader (azure.GrantReader), so that this
// package builds without the Azure SDK. When storage cannot be reached, or
// there is no GrantReader for the grant, the reader falls back to the
// server's read route.
package client
