package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/auth"
	"github.com/messagevault/messagevault/formats"
	"github.com/messagevault/messagevault/internal/redact"
)

// Errors of the HTTP layer itself.
var (
	errNoCredentials = errors.New("credentials required: send a user name and password (HTTP Basic) or a bearer token")
	errBusy          = errors.New("server busy")
	errBadRequest    = errors.New("bad request")
	errNoGrants      = errors.New("this storage cannot hand out read grants")
	errNoLeader      = errors.New("no leader is known: retry shortly")
	// errLeaderSilent: the leader is known but did not answer a forwarded
	// write (the details go to the log, not to the client).
	errLeaderSilent = errors.New("the leader did not answer the forwarded write: retry shortly")
	// errNoForwarding: a follower without the cluster secret cannot
	// forward writes; that lasts until its configuration changes.
	errNoForwarding = errors.New("this node does not forward writes (it has no cluster secret)")
	errMediaType    = errors.New("unsupported content type")
	errCrossSite    = errors.New("cross-site request refused")
	// errNotLeaderHere refuses a write forwarded to a node that does not
	// lead: it touched nothing, so the follower may send it elsewhere.
	errNotLeaderHere = errors.New("this node does not lead (the write was not applied): retry shortly")
)

// typeBeingDeleted is the error type of a write to a stream deleted
// moments ago whose storage is still being removed (Azure).
const typeBeingDeleted = "being-deleted"

// typeNotLeader is the error type of a write refused, untouched, by a node
// that does not lead.
const typeNotLeader = "not-leader"

// apiError is the JSON body of every error answer, as the original sends
// it.
type apiError struct {
	Error string `json:"Error"`
	Type  string `json:"Type"`
	// Start is where a trimmed stream now starts (410 only).
	Start *int64 `json:"Start,omitempty"`
	// MaxBody is the largest publish body the server accepts (413 to a
	// publish only).
	MaxBody *int64 `json:"MaxBody,omitempty"`
}

// MaxBodyHeader, on a 413 answer to a publish, is the largest publish
// body in bytes that the server accepts (serve --max-body), so that a
// client can regroup its messages.
const MaxBodyHeader = "X-Messagevault-Max-Body"

// bodyTooLargeError is a publish body over the server's limit.
type bodyTooLargeError struct {
	size  int64 // the declared size; -1 if unknown (a chunked body)
	limit int64
}

func (e *bodyTooLargeError) Error() string {
	if e.size < 0 {
		return fmt.Sprintf("the publish body is over this server's limit of %d bytes (serve --max-body); publish fewer or smaller messages at a time", e.limit)
	}
	return fmt.Sprintf("the publish body is %d bytes, over this server's limit of %d bytes (serve --max-body); publish fewer or smaller messages at a time", e.size, e.limit)
}

func forbidden(user, claim string) error {
	return fmt.Errorf("%w: user %q needs the claim %q", auth.ErrForbidden, user, claim)
}

func badRequest(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errBadRequest, fmt.Sprintf(format, args...))
}

// classify maps an error to its HTTP status and type: the one place where
// errors become answers.
func classify(err error) (int, string) {
	var tooLarge *http.MaxBytesError
	switch {
	case errors.Is(err, messagevault.ErrCorrupt):
		// Before the format errors it wraps: stored bytes that fail their
		// checks are the server's problem, not the client's.
		return http.StatusInternalServerError, "corrupt"
	case errors.Is(err, errNoCredentials), errors.Is(err, auth.ErrUnauthenticated):
		return http.StatusUnauthorized, "unauthorized"
	case errors.Is(err, errMediaType):
		return http.StatusUnsupportedMediaType, "unsupported-media-type"
	case errors.Is(err, errCrossSite):
		return http.StatusForbidden, "forbidden"
	case errors.As(err, new(*throttledError)):
		return http.StatusTooManyRequests, "throttled"
	case errors.Is(err, auth.ErrBusy):
		return http.StatusTooManyRequests, "busy"
	case errors.Is(err, auth.ErrForbidden):
		return http.StatusForbidden, "forbidden"
	case errors.As(err, &tooLarge), errors.As(err, new(*bodyTooLargeError)):
		return http.StatusRequestEntityTooLarge, "too-large"
	case errors.Is(err, errBusy):
		return http.StatusTooManyRequests, "busy"
	case errors.Is(err, messagevault.ErrInvalidStreamName),
		errors.Is(err, messagevault.ErrInvalidMessage),
		errors.Is(err, messagevault.ErrEmptyBatch),
		errors.Is(err, formats.ErrTruncated),
		errors.Is(err, formats.ErrVersion),
		errors.Is(err, formats.ErrCRC),
		errors.Is(err, formats.ErrMD5),
		errors.Is(err, formats.ErrCount),
		errors.Is(err, formats.ErrTooLarge),
		errors.Is(err, messagevault.ErrNotRecordStart),
		errors.Is(err, errBadRequest):
		return http.StatusBadRequest, "bad-request"
	case errors.Is(err, messagevault.ErrCursorChanged):
		return http.StatusPreconditionFailed, "cursor-changed"
	case errors.Is(err, messagevault.ErrInvalidCursorName):
		return http.StatusBadRequest, "bad-request"
	case errors.Is(err, messagevault.ErrCursorNotFound):
		return http.StatusNotFound, "not-found"
	case errors.Is(err, messagevault.ErrNoCursors), errors.Is(err, messagevault.ErrNoCursorGrants):
		return http.StatusNotImplemented, "not-implemented"
	case errors.Is(err, messagevault.ErrTrimmed):
		return http.StatusGone, "trimmed"
	case errors.Is(err, messagevault.ErrSequenceTooOld):
		return http.StatusConflict, "sequence-too-old"
	case errors.Is(err, messagevault.ErrPositionMismatch):
		return http.StatusPreconditionFailed, "position-mismatch"
	case errors.Is(err, messagevault.ErrOutOfRange):
		return http.StatusBadRequest, "out-of-range"
	case errors.Is(err, messagevault.ErrStreamNotFound), errors.Is(err, auth.ErrUserNotFound), errors.Is(err, auth.ErrTokenNotFound):
		return http.StatusNotFound, "not-found"
	case errors.Is(err, auth.ErrUserExists):
		return http.StatusConflict, "exists"
	case errors.Is(err, auth.ErrInvalidUser), errors.Is(err, auth.ErrInvalidClaim):
		return http.StatusBadRequest, "bad-request"
	case errors.Is(err, errNotLeaderHere):
		return http.StatusServiceUnavailable, typeNotLeader
	case errors.Is(err, messagevault.ErrClosed), errors.Is(err, messagevault.ErrLocked), errors.Is(err, messagevault.ErrFenced),
		errors.Is(err, messagevault.ErrNotLeader), errors.Is(err, errNoLeader), errors.Is(err, errLeaderSilent), errors.Is(err, errNoForwarding):
		return http.StatusServiceUnavailable, "unavailable"
	case errors.Is(err, messagevault.ErrStreamBeingDeleted):
		return http.StatusConflict, typeBeingDeleted
	case errors.Is(err, errNoGrants), errors.Is(err, messagevault.ErrNotRevocable), errors.Is(err, messagevault.ErrNotDeletable):
		return http.StatusNotImplemented, "not-implemented"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, "timeout"
	default:
		return http.StatusInternalServerError, "storage"
	}
}

// writeError answers err as JSON with its status, and logs server-side
// failures with the request id.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status, typ := classify(err)
	switch status {
	case http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", `Basic realm="MessageVault", charset="UTF-8"`)
	case http.StatusConflict:
		if typ == typeBeingDeleted {
			w.Header().Set("Retry-After", "10")
		}
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		w.Header().Set("Retry-After", "1")
		var te *throttledError
		if errors.As(err, &te) {
			w.Header().Set("Retry-After", te.retryAfter())
		}
	}
	if status >= 500 && r.Context().Err() == nil {
		if status == http.StatusServiceUnavailable {
			// Expected while leadership moves: one line a second, with
			// how many were left out, instead of one per request.
			if n, ok := s.noise.allow(time.Now()); ok {
				s.log.Warn("request failed", "id", requestID(r.Context()), "method", r.Method, "path", r.URL.Path, "status", status, "err", err, "similar_suppressed", n)
			}
		} else {
			s.log.Error("request failed", "id", requestID(r.Context()), "method", r.Method, "path", r.URL.Path, "status", status, "err", err)
		}
		s.metrics.recordError(err)
		s.status.failed(status, requestID(r.Context()), r.PathValue("stream"), err)
	}
	msg := redact.String(err.Error())
	switch typ {
	case "not-found":
		if errors.Is(err, messagevault.ErrStreamNotFound) {
			// Storage's own error names a path or a URL of the server's.
			msg = fmt.Sprintf("stream %q has never been written", r.PathValue("stream"))
		}
	case "storage":
		// The storage error can name the server's paths and URLs; it is
		// in the log under the request id. The system's own reason (no
		// space left, read-only file system) names neither.
		msg = "storage failed; the server's log has the details"
		var errno syscall.Errno
		if errors.As(err, &errno) {
			msg = "storage failed: " + errno.Error() + "; the server's log has the details"
		}
	}
	if status >= 500 {
		// Storage errors can run to many lines (the SDK's request dumps):
		// the client gets the first line and the request id; the log has
		// the rest.
		if i := strings.IndexByte(msg, '\n'); i >= 0 {
			msg = strings.TrimSpace(msg[:i])
		}
		if len(msg) > 300 {
			msg = msg[:300] + "..."
		}
		msg += " (request " + requestID(r.Context()) + ")"
	}
	ans := apiError{Error: msg, Type: typ}
	var te *messagevault.TrimmedError
	if errors.As(err, &te) {
		ans.Start = &te.Start
	}
	var big *bodyTooLargeError
	if errors.As(err, &big) {
		ans.MaxBody = &big.limit
		w.Header().Set(MaxBodyHeader, strconv.FormatInt(big.limit, 10))
	}
	writeJSON(w, status, ans)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.Encode(v)
}

// limiter lets one log line a second through and counts the rest.
type limiter struct {
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

// allow reports whether a line may be logged now, and how many were
// suppressed since the last one.
func (l *limiter) allow(now time.Time) (int, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.last) < time.Second {
		l.suppressed++
		return 0, false
	}
	n := l.suppressed
	l.last, l.suppressed = now, 0
	return n, true
}
