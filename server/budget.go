package server

import (
	"fmt"
	"sync"
)

// The memory of publishes in flight is bounded twice: by the server's
// budget (Config.MaxInflightBytes) and, within it, by each user's share
// (a quarter of the budget, and at least one body of MaxBodyBytes), so
// that one user, however many connections it opens, cannot take the whole
// budget from the others. A publish reserves its bytes as they arrive, not
// at the size its Content-Length declares: a client that declares a large
// body and sends nothing holds nothing.

// userShare returns the most one user's publishes may hold at once.
func (s *Server) userShare() int64 {
	return max(s.cfg.MaxInflightBytes/4, s.cfg.MaxBodyBytes)
}

// reservation is what one publish holds of the budget.
type reservation struct {
	s      *Server
	user   string
	factor int64 // bytes reserved per body byte (JSON decodes into copies)
	held   int64
}

func (s *Server) newReservation(user string, factor int64) *reservation {
	return &reservation{s: s, user: user, factor: factor}
}

// grow reserves room for n more body bytes; it fails with errBusy when the
// server's budget or the user's share would be passed. A publish that is
// alone in holding the budget (or its user's share) may pass it, so that
// a body as large as MaxBodyBytes always fits.
func (r *reservation) grow(n int64) error {
	n *= r.factor
	s := r.s
	for {
		cur := s.inflight.Load()
		if cur-r.held > 0 && cur+n > s.cfg.MaxInflightBytes {
			return fmt.Errorf("%w: %d bytes of publishes are in flight (limit %d); retry shortly", errBusy, cur, s.cfg.MaxInflightBytes)
		}
		if s.inflight.CompareAndSwap(cur, cur+n) {
			break
		}
	}
	if err := s.shares.take(r.user, r.held, n, s.userShare()); err != nil {
		s.inflight.Add(-n)
		return err
	}
	r.held += n
	return nil
}

// release gives everything back.
func (r *reservation) release() {
	if r.held > 0 {
		r.s.inflight.Add(-r.held)
		r.s.shares.give(r.user, r.held)
		r.held = 0
	}
}

// shares counts the bytes each user's publishes hold.
type shares struct {
	mu   sync.Mutex
	held map[string]int64
}

// take adds n to user's bytes (of which mine are this publish's), unless
// that passes limit while other publishes of the user hold some.
func (sh *shares) take(user string, mine, n, limit int64) error {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	cur := sh.held[user]
	if cur-mine > 0 && cur+n > limit {
		return fmt.Errorf("%w: user %q has %d bytes of publishes in flight, its share of the server's budget is %d; retry shortly", errBusy, user, cur, limit)
	}
	if sh.held == nil {
		sh.held = map[string]int64{}
	}
	sh.held[user] = cur + n
	return nil
}

// give takes n off user's bytes.
func (sh *shares) give(user string, n int64) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.held[user] -= n; sh.held[user] <= 0 {
		delete(sh.held, user)
	}
}
