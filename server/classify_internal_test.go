package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/auth"
	"github.com/messagevault/messagevault/formats"
)

// TestClassify: every error class of errors.go gets its status and type,
// bare and wrapped in context (fmt.Errorf %w, errors.Join), including the
// classes no request of the handler tests reaches (throttled, busy
// password checks, a stale producer sequence, timeouts); when an error
// wraps two classes, the one classify lists first wins (stored bytes that
// fail their checks are corrupt, not a bad request); anything unknown is a
// 500 storage failure.
func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		name   string
		err    error
		status int
		typ    string
	}{
		{"corrupt", messagevault.ErrCorrupt, 500, "corrupt"},
		{"corrupt before a format error", fmt.Errorf("record at 4096: %w: %w", messagevault.ErrCorrupt, formats.ErrCRC), 500, "corrupt"},
		{"no credentials", errNoCredentials, 401, "unauthorized"},
		{"wrong password", auth.ErrUnauthenticated, 401, "unauthorized"},
		{"media type", errMediaType, 415, "unsupported-media-type"},
		{"cross-site", errCrossSite, 403, "forbidden"},
		{"throttled", &throttledError{wait: 2 * time.Second}, 429, "throttled"},
		{"password checks busy", auth.ErrBusy, 429, "busy"},
		{"forbidden", forbidden("u", "orders:write"), 403, "forbidden"},
		{"too large", &http.MaxBytesError{Limit: 10}, 413, "too-large"},
		{"budget busy", errBusy, 429, "busy"},
		{"invalid stream name", messagevault.ErrInvalidStreamName, 400, "bad-request"},
		{"a read from inside a record", messagevault.ErrNotRecordStart, 400, "bad-request"},
		{"invalid message", messagevault.ErrInvalidMessage, 400, "bad-request"},
		{"empty batch", messagevault.ErrEmptyBatch, 400, "bad-request"},
		{"truncated", formats.ErrTruncated, 400, "bad-request"},
		{"version", formats.ErrVersion, 400, "bad-request"},
		{"crc", formats.ErrCRC, 400, "bad-request"},
		{"md5", formats.ErrMD5, 400, "bad-request"},
		{"count", formats.ErrCount, 400, "bad-request"},
		{"format too large", formats.ErrTooLarge, 400, "bad-request"},
		{"bad request", badRequest("limit=%q", "0"), 400, "bad-request"},
		{"sequence too old", messagevault.ErrSequenceTooOld, 409, "sequence-too-old"},
		{"position mismatch", messagevault.ErrPositionMismatch, 412, "position-mismatch"},
		{"out of range", messagevault.ErrOutOfRange, 400, "out-of-range"},
		{"stream not found", messagevault.ErrStreamNotFound, 404, "not-found"},
		{"user not found", auth.ErrUserNotFound, 404, "not-found"},
		{"token not found", auth.ErrTokenNotFound, 404, "not-found"},
		{"user exists", auth.ErrUserExists, 409, "exists"},
		{"invalid user", auth.ErrInvalidUser, 400, "bad-request"},
		{"invalid claim", auth.ErrInvalidClaim, 400, "bad-request"},
		{"not the leader here", errNotLeaderHere, 503, "not-leader"},
		{"closed", messagevault.ErrClosed, 503, "unavailable"},
		{"locked", messagevault.ErrLocked, 503, "unavailable"},
		{"fenced", messagevault.ErrFenced, 503, "unavailable"},
		{"not leader", messagevault.ErrNotLeader, 503, "unavailable"},
		{"no leader", errNoLeader, 503, "unavailable"},
		{"no grants", errNoGrants, 501, "not-implemented"},
		{"not revocable", messagevault.ErrNotRevocable, 501, "not-implemented"},
		{"canceled", context.Canceled, 503, "timeout"},
		{"deadline", context.DeadlineExceeded, 503, "timeout"},
		{"fenced before a timeout", errors.Join(context.DeadlineExceeded, messagevault.ErrFenced), 503, "unavailable"},
		{"forbidden before not found", errors.Join(messagevault.ErrStreamNotFound, auth.ErrForbidden), 403, "forbidden"},
		{"unknown", errors.New("disk on fire"), 500, "storage"},
		{"a system error", syscall.ENOSPC, 500, "storage"},
	} {
		for _, err := range []error{tc.err, fmt.Errorf("context: %w", tc.err), errors.Join(errors.New("first"), tc.err)} {
			if status, typ := classify(err); status != tc.status || typ != tc.typ {
				t.Errorf("%s: classify(%q) = %d %q, want %d %q", tc.name, err, status, typ, tc.status, tc.typ)
			}
		}
	}
}

// TestThrottledRetryAfter: a throttled answer's Retry-After is the
// backoff left, rounded up to whole seconds (other 429s and 503s say 1).
func TestThrottledRetryAfter(t *testing.T) {
	s := New(Config{})
	t.Cleanup(func() { s.Close() })
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&throttledError{wait: 2500 * time.Millisecond}, "3"},
		{&throttledError{wait: 15 * time.Second}, "15"},
		{fmt.Errorf("%w: retry shortly", errBusy), "1"},
		{messagevault.ErrFenced, "1"},
	} {
		rec := httptest.NewRecorder()
		s.writeError(rec, httptest.NewRequest(http.MethodGet, "/streams", nil), tc.err)
		if got := rec.Header().Get("Retry-After"); got != tc.want {
			t.Errorf("%v: Retry-After %q, want %q", tc.err, got, tc.want)
		}
	}
}
