// Package stream is the log: the writer that appends batches of messages to
// one stream (strict order, group commit, durable before acknowledged,
// repair of a torn tail on open) and the reader that iterates its records
// (by range, or following the tail) from any storage backend.
//
// The writer keeps the partial last page of the stream in memory. Each
// group of appends is encoded after it into one buffer, padded to whole
// pages and written at the page that holds the committed position; then the
// pages are flushed and the new position is committed. Bytes past the
// committed position (a torn or unacknowledged write) are never read and
// are overwritten by the next group.
package stream
