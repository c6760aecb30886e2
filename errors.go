package messagevault

import (
	"errors"
	"fmt"
)

// Sentinel errors shared by every package. Wrap them with context
// (fmt.Errorf("append %q: %w", stream, err)) and test with errors.Is; the
// HTTP layer maps them to status codes in one place.
var (
	// ErrInvalidStreamName reports a stream name outside the rules of NormalizeStreamName.
	ErrInvalidStreamName = errors.New("invalid stream name")
	// ErrInvalidMessage reports a message that does not fit the v1 format
	// (key or value too long, wrong checksum).
	ErrInvalidMessage = errors.New("invalid message")
	// ErrEmptyBatch reports an append with no messages.
	ErrEmptyBatch = errors.New("empty batch")
	// ErrCorrupt reports stored bytes that are not a valid record inside the
	// committed range of a stream.
	ErrCorrupt = errors.New("corrupt stream")
	// ErrNotRecordStart reports a read asked to start at a position where
	// no record starts (inside one): the caller's mistake, not damage.
	// Reads start at 0 or at a position a reader was given (a record's
	// offset, or the position after one).
	ErrNotRecordStart = errors.New("no record starts at this position")
	// ErrStreamNotFound reports a stream that has never been written.
	ErrStreamNotFound = errors.New("stream not found")
	// ErrLocked reports storage that another process or writer owns.
	ErrLocked = errors.New("storage is locked by another writer")
	// ErrFenced reports a writer that lost its exclusive right to a stream
	// (another writer committed since); it must stop writing.
	ErrFenced = errors.New("writer fenced: another writer owns the stream")
	// ErrClosed reports use of a closed writer, reader or store.
	ErrClosed = errors.New("closed")
	// ErrNotLeader reports a write on a node that is not the leader, or
	// whose leadership may have lapsed.
	ErrNotLeader = errors.New("not the leader")
	// ErrNotRevocable reports grants that cannot be revoked: a file://
	// grant is a path, bounded only by file permissions.
	ErrNotRevocable = errors.New("this storage's read grants cannot be revoked")
	// ErrOutOfRange reports a read or write past the end of a blob, or an
	// offset or length that is not a multiple of PageSize where one must be.
	ErrOutOfRange = errors.New("out of range")
	// ErrSequenceTooOld reports a producer sequence that is not above the
	// producer's last applied one and is no longer remembered, so the
	// server cannot tell whether that batch was stored.
	ErrSequenceTooOld = errors.New("producer sequence too old")
	// ErrSequenceGap reports a batch appended on condition that it follow
	// a given sequence of its producer, whose last applied sequence is
	// another (the batch before it failed, or was never sent).
	ErrSequenceGap = errors.New("producer sequence does not follow the last applied one")
	// ErrPositionMismatch reports a conditional append whose expected
	// position is not the stream's position when the batch is appended.
	ErrPositionMismatch = errors.New("position mismatch")
	// ErrStreamBeingDeleted reports a write to a stream deleted moments
	// ago whose storage is still being removed (Azure refuses to create a
	// container under a name deleted within about the last 30 seconds).
	ErrStreamBeingDeleted = errors.New("the stream was deleted moments ago and its storage is still being removed")
	// ErrNotDeletable reports a storage whose streams cannot be deleted.
	ErrNotDeletable = errors.New("this storage cannot delete streams")
	// ErrTrimmed reports a read below a stream's first stored position:
	// those records were trimmed or removed by retention. It comes as a
	// *TrimmedError that says where the stream now starts.
	ErrTrimmed = errors.New("the records there were removed (trimmed)")
)

// TrimmedError reports a read at Offset, below the stream's Start.
type TrimmedError struct {
	Offset, Start int64
}

func (e *TrimmedError) Error() string {
	return fmt.Sprintf("position %d: %v: the stream now starts at %d", e.Offset, ErrTrimmed, e.Start)
}

// Unwrap makes errors.Is(err, ErrTrimmed) true.
func (e *TrimmedError) Unwrap() error { return ErrTrimmed }
