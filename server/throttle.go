package server

import (
	"fmt"
	"time"
)

// throttledError refuses a check inside a backoff.
type throttledError struct{ wait time.Duration }

func (e *throttledError) Error() string {
	return fmt.Sprintf("too many failed logins from this address or for this user: retry in %v", e.wait.Round(time.Millisecond))
}

// retryAfter is the Retry-After value for it, in whole seconds.
func (e *throttledError) retryAfter() string {
	return fmt.Sprint(int((e.wait + time.Second - 1) / time.Second))
}
