package messagevault

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Cursor is a consumer's durable position in a stream: where a module that
// reads the stream resumes. Cursors live in storage beside the stream, and
// each is changed by compare-and-swap on its ETag, so two instances of a
// module cannot silently overwrite each other.
type Cursor struct {
	// Name is the cursor's name: 1 to 64 of a-z, 0-9, '.', '_' and '-'.
	Name string
	// Position is where its consumer resumes: a record's start, at most
	// the stream's committed position.
	Position int64
	// ETag names this version of the cursor: a write under If-Match of
	// it succeeds only if nobody wrote since.
	ETag string
}

// Cursor errors.
var (
	// ErrCursorNotFound reports a cursor that does not exist.
	ErrCursorNotFound = errors.New("cursor not found")
	// ErrCursorChanged reports a conditional cursor write whose ETag is
	// no longer the cursor's: someone wrote it since.
	ErrCursorChanged = errors.New("cursor changed since (ETag mismatch)")
	// ErrInvalidCursorName reports a name outside CheckCursorName's rules.
	ErrInvalidCursorName = errors.New("invalid cursor name")
	// ErrNoCursors reports a storage that keeps no cursors.
	ErrNoCursors = errors.New("this storage keeps no cursors")
	// ErrNoCursorGrants reports a storage whose cursors cannot be granted
	// to consumers (a local cursor is a file the server's process owns:
	// consumers commit it through the server).
	ErrNoCursorGrants = errors.New("this storage hands out no cursor grants: commit cursors through the server")
)

// MaxCursorName is the longest cursor name.
const MaxCursorName = 64

// CheckCursorName reports an error wrapping ErrInvalidCursorName unless
// name is 1 to MaxCursorName of a-z, 0-9, '.', '_' and '-', and not "."
// or ".." (names become file names).
func CheckCursorName(name string) error {
	ok := len(name) >= 1 && len(name) <= MaxCursorName && name != "." && name != ".."
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			ok = false
		}
	}
	if !ok {
		return fmt.Errorf("%w %q: want 1 to %d of a-z, 0-9, '.', '_' and '-'", ErrInvalidCursorName, name, MaxCursorName)
	}
	return nil
}

// CursorGranter is implemented by storages that hand out cursor grants: a
// URL from which a consumer can read and write its one cursor without the
// server (a blob SAS on Azure).
type CursorGranter interface {
	// CursorGrant returns a URL that reads and writes stream's cursor
	// name and nothing else, valid for about ttl.
	CursorGrant(ctx context.Context, stream, name string, ttl time.Duration) (string, error)
}

// Cursors is implemented by storages that keep consumer cursors. The
// stream name must be normalized and the cursor name checked
// (CheckCursorName); the storage does not check that the stream exists.
type Cursors interface {
	// ReadCursor returns the cursor, or an error wrapping
	// ErrCursorNotFound.
	ReadCursor(ctx context.Context, stream, name string) (Cursor, error)

	// WriteCursor sets the cursor's position and returns its new
	// version. With ifMatch set, it writes only if the cursor exists and
	// its ETag is ifMatch, and fails with an error wrapping
	// ErrCursorChanged if not; without, it creates or overwrites.
	WriteCursor(ctx context.Context, stream, name string, pos int64, ifMatch string) (Cursor, error)

	// DeleteCursor removes the cursor; a cursor that does not exist is
	// an error wrapping ErrCursorNotFound.
	DeleteCursor(ctx context.Context, stream, name string) error

	// ListCursors returns the stream's cursors, sorted by name.
	ListCursors(ctx context.Context, stream string) ([]Cursor, error)
}
