package auth

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// Throttle slows down the guessing of passwords, per client address and
// per user name, for every listener of a process (HTTP and Kafka share
// one):
// the first FreeFailures wrong passwords cost nothing more; after them,
// each check waits for a backoff that doubles with every failure, up to
// MaxBackoff, and a request inside the backoff gets 429 with Retry-After
// without a password check. A user whose password was verified recently
// is let in at once (auth.Users.Cached), so a guesser cannot lock out a
// working client; a user name's failures are forgotten at its next
// success, an address's only with time.
const (
	FreeFailures = 5
	BaseBackoff  = 250 * time.Millisecond
	MaxBackoff   = 15 * time.Second
	// forgetAfter drops the failures of a key not seen for this long.
	forgetAfter = 15 * time.Minute
	// maxThrottled bounds the keys remembered; past it, expired ones are
	// swept, and new user names are not tracked (their address still is).
	maxThrottled = 100_000
)

// Throttle counts recent authentication failures by key. It is safe for
// concurrent use.
type Throttle struct {
	mu   sync.Mutex
	keys map[string]*failures
}

type failures struct {
	n    int
	last time.Time
}

// NewThrottle returns a Throttle that remembers no failures.
func NewThrottle() *Throttle { return &Throttle{keys: map[string]*failures{}} }

// ThrottleKeys returns the keys of a client's address (host:port, as
// net.Conn and http.Request give it) and of a user name.
func ThrottleKeys(remote, user string) (addr, name string) {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	return "addr " + host, "user " + user
}

func backoff(n int) time.Duration {
	if n < FreeFailures {
		return 0
	}
	d := BaseBackoff
	for i := FreeFailures; i < n && d < MaxBackoff; i++ {
		d *= 2
	}
	return min(d, MaxBackoff)
}

// Wait returns how long the keys must still wait before another check
// (0: none).
func (t *Throttle) Wait(now time.Time, keys ...string) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	var longest time.Duration
	for _, k := range keys {
		if f := t.keys[k]; f != nil {
			longest = max(longest, f.last.Add(backoff(f.n)).Sub(now))
		}
	}
	return longest
}

// Failed records a failed check for the keys.
func (t *Throttle) Failed(now time.Time, keys ...string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.keys) >= maxThrottled {
		for k, f := range t.keys {
			if now.Sub(f.last) > forgetAfter {
				delete(t.keys, k)
			}
		}
	}
	for _, k := range keys {
		f := t.keys[k]
		if f == nil || now.Sub(f.last) > forgetAfter {
			if len(t.keys) >= maxThrottled && k[:4] == "user" {
				continue
			}
			f = &failures{}
			t.keys[k] = f
		}
		f.n++
		f.last = now
	}
}

// Succeeded forgets a key's failures.
func (t *Throttle) Succeeded(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.keys, key)
}

// ThrottledError refuses a password check inside a backoff: Wait is how
// long is left.
type ThrottledError struct{ Wait time.Duration }

func (e *ThrottledError) Error() string {
	return fmt.Sprintf("too many failed sign-ins from this address or for this user: retry in %v", e.Wait.Round(time.Millisecond))
}

// Check runs a full (bcrypt) password check of name for a client at
// remote (host:port), unless the client's address or the user name is
// inside a backoff after failed checks: then it fails with a
// *ThrottledError without checking. A wrong password counts against both
// keys, a right one forgets the name's failures; ErrBusy (too many checks
// at once) counts against neither.
func (t *Throttle) Check(u *Users, remote, name, password string) (Principal, error) {
	addr, user := ThrottleKeys(remote, name)
	if wait := t.Wait(time.Now(), addr, user); wait > 0 {
		return Principal{}, &ThrottledError{Wait: wait}
	}
	p, err := u.Authenticate(name, password)
	switch {
	case errors.Is(err, ErrBusy):
	case err != nil:
		t.Failed(time.Now(), addr, user)
	default:
		t.Succeeded(user)
	}
	return p, err
}
