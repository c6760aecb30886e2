package messagevault

import (
	"context"
	"fmt"
	"time"
)

// Storage holds streams: a local directory, an in-memory fake, an Azure
// storage account. Each stream is a records blob (pages of PageSize bytes)
// and a committed position.
//
// Implementations must be safe for concurrent use.
type Storage interface {
	// OpenWriter opens stream for writing, creating its blobs if needed.
	// The name must already be normalized (NormalizeStreamName). A Storage
	// hands out at most one open PageWriter per stream; a second OpenWriter
	// for the same stream fails with ErrLocked until the first is closed.
	OpenWriter(ctx context.Context, stream string) (PageWriter, error)

	// OpenReader opens stream for reading. It returns an error wrapping
	// ErrStreamNotFound if the stream has never been created.
	OpenReader(ctx context.Context, stream string) (PageReader, error)

	// Streams lists the names of every stream, sorted.
	Streams(ctx context.Context) ([]string, error)

	// Close releases the storage (for the file backend, the directory lock).
	// Open writers and readers must be closed first.
	Close() error
}

// Extent is what a stream's committed position record holds: its length,
// the first position still stored, and where its last segment starts.
// The writer commits all three at once; a read grant reads them.
type Extent struct {
	// Position is the committed length in bytes.
	Position int64
	// Start is the first position still stored: 0 until the stream is
	// trimmed, then the start of its oldest remaining segment.
	Start int64
	// Segment is the start of the active (last) segment.
	Segment int64
}

// PageReader is the read-only view of one stream that consumers need: the
// committed extent and byte ranges of the records. It is all that a read
// grant (a SAS URL, a file:// URL) gives.
//
// A stream's records are stored in a chain of segments (package segment),
// each a blob named by the position of its first record; a PageReader
// hides the chain: offsets are stream positions.
type PageReader interface {
	// Position returns the stream's committed length in bytes. Bytes at or
	// past it are not part of the stream.
	Position(ctx context.Context) (int64, error)

	// Extent returns the committed position record: the position, the
	// first stored position and the active segment's start.
	Extent(ctx context.Context) (Extent, error)

	// Segments returns the starts of the stream's stored segments, oldest
	// first, as of a fresh Extent.
	Segments(ctx context.Context) ([]int64, error)

	// ReadAt reads len(p) bytes of the records starting at off. It
	// returns fewer bytes only together with an error; past the end of the
	// last segment's blob that error is io.EOF. Callers must not read past
	// Position: bytes there are garbage. A read below the stream's Start
	// fails with a *TrimmedError.
	ReadAt(ctx context.Context, p []byte, off int64) (int, error)

	// ReadIndex reads len(p) bytes of the stream's time index (package
	// stream keeps it) from byte off. It returns fewer bytes only with an
	// error, io.EOF past the end; a stream without an index reads as
	// empty (io.EOF).
	ReadIndex(ctx context.Context, p []byte, off int64) (int, error)

	// Close releases the reader.
	Close() error
}

// PageWriter is what the stream writer needs from storage. Only one
// PageWriter per stream exists at a time; methods are called from one
// goroutine at a time, except as CommitStarter allows.
//
// Size, Grow and WritePages act on the active segment, in stream
// positions: byte 0 of a segment's blob is position
// segment.Base(start), the page that holds its first record, so pages
// line up with the stream's pages.
type PageWriter interface {
	PageReader

	// Size returns the position where the active segment's blob ends, a
	// multiple of PageSize.
	Size(ctx context.Context) (int64, error)

	// Grow makes the active segment's blob reach at least position size
	// (a multiple of PageSize). It never shrinks the blob; new bytes read
	// as zeros.
	Grow(ctx context.Context, size int64) error

	// WritePages writes p at off in the active segment. Both off and
	// len(p) must be multiples of PageSize, and [off, off+len(p)) must
	// lie within the active segment's blob, or it returns an error
	// wrapping ErrOutOfRange and writes nothing. The bytes are not durable
	// until Flush returns; a write can be torn by a crash.
	WritePages(ctx context.Context, off int64, p []byte) error

	// Roll starts a new, empty segment at start, a record boundary past
	// the active segment's start, and makes it the active one: the next
	// Grow and WritePages act on it. It is part of the stream once the
	// next CommitPosition returns; until then a crash leaves it behind as
	// garbage that the next writer removes. A segment left behind by an
	// earlier roll that was never committed is replaced.
	Roll(ctx context.Context, start int64) error

	// Trim makes start, the start of a stored segment no later than the
	// active one, the stream's first stored position: it durably records
	// it with the committed position, then removes the segments before
	// it. A crash between the two leaves segments that no reader looks at
	// and the next writer removes.
	Trim(ctx context.Context, start int64) error

	// WriteIndex writes p at byte off of the stream's time index, growing
	// it as needed; off and len(p) are multiples of PageSize. Index
	// writes are neither fenced nor flushed: the index holds hints that
	// readers check against the records before they use one.
	WriteIndex(ctx context.Context, off int64, p []byte) error

	// Flush makes every completed WritePages durable, in every segment
	// written since the last Flush (fdatasync locally; a no-op where
	// storage acknowledges only durable writes).
	Flush(ctx context.Context) error

	// CommitPosition durably records pos as the stream's committed length,
	// together with the active segment and the stream's start (Extent).
	// It returns an error wrapping ErrFenced if another writer has changed
	// the stream since this PageWriter was opened or last committed (only
	// its own open and commits set that condition; Position does not); the
	// writer must then stop. An error other than ErrFenced leaves the
	// outcome unknown: the position may have been recorded.
	CommitPosition(ctx context.Context, pos int64) error

	// ReadState reads len(p) bytes of writer-state slot 0 or 1 from
	// byte off, as ReadAt does: fewer only with an error, io.EOF past
	// the end of what the slot holds. A slot never written reads as
	// io.EOF at once, or as zeros where a backend lays slots out in one
	// file (the file backend, once slot 1 is written).
	// What was last written comes first; a backend may leave stale bytes
	// after it (the file backend overwrites in place), so callers frame
	// their data, and read its header before the rest. The stream writer
	// keeps its producer table there; readers of the v1 layout never
	// look at it.
	ReadState(ctx context.Context, slot int, p []byte, off int64) (int, error)

	// WriteState replaces the contents of state slot 0 or 1 with p. Like
	// WritePages it is conditional on this writer still owning the
	// stream. It is durable once the next CommitPosition returns (a
	// backend may keep a small state with the position, and commit both
	// in one request); a crash can leave the slot torn, or as it was, so
	// callers must check what they read back.
	WriteState(ctx context.Context, slot int, p []byte) error

	// Refence is called after an error whose outcome is unknown, before
	// the writer reloads the position: when it returns, no request this
	// PageWriter sent earlier can still land (on Azure the blobs get new
	// ETags and the active segment a new sequence number, so a late
	// page write or commit fails its condition; index writes, which are
	// hints, are not fenced), the
	// position it will read is durable, and the active segment is the
	// committed one again (a roll that was not committed is undone). It
	// returns an error wrapping ErrFenced if another writer has taken the
	// stream.
	Refence(ctx context.Context) error
}

// CommitStarter is implemented by a PageWriter whose position commit
// can be in flight while the writer writes the next group's pages (on
// Azure, a commit is a request to another blob than the pages'). The
// stream writer then overlaps the two; a backend without it commits one
// group at a time.
type CommitStarter interface {
	// StartCommit checks pos as CommitPosition does and starts recording
	// it, and calls done with the outcome, as CommitPosition would return
	// it, exactly once: later from another goroutine, or before
	// StartCommit returns. ctx must stay live until done is called. A
	// state written before StartCommit is durable with this commit, as
	// with CommitPosition, even though the next group's pages may
	// overwrite the copy the stream writer keeps past the records before
	// done is called. Until done has been
	// called, the caller may call Size, Grow, WritePages, Flush and the
	// PageReader methods; every other call waits for the commit first.
	// A CommitStarter's WriteIndex may also run from another goroutine
	// while any other call but Close does (its writes are hints,
	// unfenced), one WriteIndex at a time.
	StartCommit(ctx context.Context, pos int64, done func(error))
}

// StartCommit starts committing pos on w: with w's StartCommit when it
// has one, else with CommitPosition, in which case done is called before
// StartCommit returns.
func StartCommit(ctx context.Context, w PageWriter, pos int64, done func(error)) {
	if c, ok := w.(CommitStarter); ok {
		c.StartCommit(ctx, pos, done)
		return
	}
	done(w.CommitPosition(ctx, pos))
}

// Granter is implemented by storages that hand out read-only grants: a URL
// from which a consumer can read one stream without the server (a container
// SAS URL on Azure, a file:// URL of the stream folder locally).
type Granter interface {
	// ReadGrant returns a read-only URL for stream, valid for about ttl
	// where the storage can limit it.
	ReadGrant(ctx context.Context, stream string, ttl time.Duration) (string, error)
}

// Revoker is implemented by storages whose read grants can be taken back.
type Revoker interface {
	// RevokeGrants invalidates every read grant of stream handed out so
	// far, at once; grants handed out later work. A storage that cannot
	// revoke its grants (file:// grants are paths) returns an error
	// wrapping ErrNotRevocable.
	RevokeGrants(ctx context.Context, stream string) error
}

// Deleter is implemented by storages whose streams can be deleted.
type Deleter interface {
	// DeleteStream removes stream and all its data. The stream leaves
	// Streams and OpenReader at once (readers already open may fail);
	// its space is freed within seconds. It fails with ErrLocked while a
	// writer of the stream is open, and with ErrStreamNotFound if there
	// is no such stream. A stream written after it is deleted starts
	// anew at position 0 (on Azure, once the deleted container is gone:
	// until then OpenWriter fails with ErrStreamBeingDeleted).
	DeleteStream(ctx context.Context, stream string) error
}

// CheckPages reports an error wrapping ErrOutOfRange unless a write of n
// bytes at off fits a blob of size bytes and both are multiples of
// PageSize: the WritePages contract, checked the same way by every backend.
func CheckPages(off int64, n int, size int64) error {
	if off < 0 || off%PageSize != 0 || n%PageSize != 0 {
		return fmt.Errorf("write %d bytes at %d: not page-aligned: %w", n, off, ErrOutOfRange)
	}
	if off+int64(n) > size {
		return fmt.Errorf("write %d bytes at %d: past the blob size %d: %w", n, off, size, ErrOutOfRange)
	}
	return nil
}

// CheckGrow reports an error wrapping ErrOutOfRange unless size is a
// multiple of PageSize: the Grow contract.
func CheckGrow(size int64) error {
	if size%PageSize != 0 {
		return fmt.Errorf("grow to %d: not a multiple of %d: %w", size, PageSize, ErrOutOfRange)
	}
	return nil
}
