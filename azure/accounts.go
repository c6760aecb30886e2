package azure

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/messagevault/messagevault"
)

var (
	_ messagevault.Storage = (*Accounts)(nil)
	_ messagevault.Granter = (*Accounts)(nil)
)

// Accounts spreads streams over several storage accounts, as the original
// did: chosen streams live in their own accounts, every other stream in the
// default one. The users file and the leader lease stay in the default
// account.
type Accounts struct {
	def     *Storage
	streams map[string]*Storage
}

// NewAccounts returns the storage of def plus overrides, which maps stream
// names to the accounts that hold them.
func NewAccounts(def *Storage, overrides map[string]*Storage) *Accounts {
	return &Accounts{def: def, streams: overrides}
}

// ParseStreamAccount parses a --stream-account value, "stream=connection
// string", into its normalized stream name and connection string.
func ParseStreamAccount(v string) (string, string, error) {
	name, cs, ok := strings.Cut(v, "=")
	if !ok || cs == "" {
		return "", "", fmt.Errorf("stream account %q: want <stream>=<connection string>", v)
	}
	n, err := messagevault.NormalizeStreamName(name)
	if err != nil {
		return "", "", fmt.Errorf("stream account: %w", err)
	}
	return n, cs, nil
}

// Default returns the default account.
func (a *Accounts) Default() *Storage { return a.def }

func (a *Accounts) of(stream string) *Storage {
	if s := a.streams[stream]; s != nil {
		return s
	}
	return a.def
}

// OpenWriter opens stream in its account.
func (a *Accounts) OpenWriter(ctx context.Context, stream string) (messagevault.PageWriter, error) {
	return a.of(stream).OpenWriter(ctx, stream)
}

// OpenReader opens stream in its account.
func (a *Accounts) OpenReader(ctx context.Context, stream string) (messagevault.PageReader, error) {
	return a.of(stream).OpenReader(ctx, stream)
}

// ReadGrant returns a read grant from stream's account.
func (a *Accounts) ReadGrant(ctx context.Context, stream string, ttl time.Duration) (string, error) {
	return a.of(stream).ReadGrant(ctx, stream, ttl)
}

// DeleteStream deletes stream in its account.
func (a *Accounts) DeleteStream(ctx context.Context, stream string) error {
	return a.of(stream).DeleteStream(ctx, stream)
}

// RevokeGrants revokes stream's grants in its account.
func (a *Accounts) RevokeGrants(ctx context.Context, stream string) error {
	return a.of(stream).RevokeGrants(ctx, stream)
}

// Streams lists the default account's streams (but those mapped
// elsewhere) and the mapped streams that exist in their accounts.
func (a *Accounts) Streams(ctx context.Context) ([]string, error) {
	names, err := a.def.Streams(ctx)
	if err != nil {
		return nil, err
	}
	names = slices.DeleteFunc(names, func(n string) bool { return a.streams[n] != nil && a.streams[n] != a.def })
	for n, s := range a.streams {
		if s == a.def {
			continue
		}
		if _, err := s.OpenReader(ctx, n); err == nil {
			names = append(names, n)
		} else if !errors.Is(err, messagevault.ErrStreamNotFound) {
			return nil, err
		}
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}

// Close closes every account.
func (a *Accounts) Close() error {
	errs := []error{a.def.Close()}
	for _, s := range a.streams {
		if s != a.def {
			errs = append(errs, s.Close())
		}
	}
	return errors.Join(errs...)
}

var _ messagevault.Cursors = (*Accounts)(nil)

// ReadCursor reads the cursor in the stream's account.
func (a *Accounts) ReadCursor(ctx context.Context, stream, name string) (messagevault.Cursor, error) {
	return a.of(stream).ReadCursor(ctx, stream, name)
}

// WriteCursor writes the cursor in the stream's account.
func (a *Accounts) WriteCursor(ctx context.Context, stream, name string, pos int64, ifMatch string) (messagevault.Cursor, error) {
	return a.of(stream).WriteCursor(ctx, stream, name, pos, ifMatch)
}

// DeleteCursor deletes the cursor in the stream's account.
func (a *Accounts) DeleteCursor(ctx context.Context, stream, name string) error {
	return a.of(stream).DeleteCursor(ctx, stream, name)
}

// ListCursors lists the stream's cursors in its account.
func (a *Accounts) ListCursors(ctx context.Context, stream string) ([]messagevault.Cursor, error) {
	return a.of(stream).ListCursors(ctx, stream)
}

// CursorGrant grants the cursor in the stream's account.
func (a *Accounts) CursorGrant(ctx context.Context, stream, name string, ttl time.Duration) (string, error) {
	return a.of(stream).CursorGrant(ctx, stream, name, ttl)
}
