// Package file is the embedded default backend: streams in a local
// directory, in the v1 layout (docs/DESIGN.md, "Local directory").
//
//	<dir>/<stream>/000000000000.b7   records, grown in large sparse steps
//	<dir>/<stream>/position.c7       8 bytes: little-endian int64 committed length
//	<dir>/.lock                      held with flock by the owning process
//
// One process owns a directory: Open takes an exclusive, non-blocking flock
// on <dir>/.lock and fails at once, naming the directory and the owner's
// pid, if another process holds it. Consumers read without the lock
// (OpenStreamReader), as they would read Azure with a read-only grant.
//
// Durability: Flush is fdatasync of the records file; CommitPosition writes
// the 8 position bytes in place (one sector, so the write is atomic) and
// fdatasyncs the position file. New files and directories are fsynced into
// their parent directory before a writer is handed out.
//
// Open files: a Storage keeps at most Options.MaxOpenFiles stream files
// open, for all its writers and readers (handles.go): idle files are
// closed least recently used first and opened again when needed; files
// with unsynced writes stay open until synced.
package file
