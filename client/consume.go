package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Handler processes one batch of a Consume loop: messages in stream
// order. Returning nil commits the cursor past the batch; an error makes
// Consume hand the same batch again after a backoff.
type Handler func(ctx context.Context, batch []ReadMessage) error

// ConsumeOption tunes Consume.
type ConsumeOption func(*consumeConfig)

type consumeConfig struct {
	batch    int
	fromEnd  bool
	maxDelay time.Duration
	onError  func(error)
}

// WithBatchSize sets how many messages a batch holds at most (default
// 100).
func WithBatchSize(n int) ConsumeOption { return func(c *consumeConfig) { c.batch = max(n, 1) } }

// FromEnd makes a cursor that does not exist yet start at the stream's
// end (new messages only) instead of its start.
func FromEnd() ConsumeOption { return func(c *consumeConfig) { c.fromEnd = true } }

// OnError is told of every error Consume retries (a failing handler,
// storage or the server failing), for logging.
func OnError(f func(error)) ConsumeOption { return func(c *consumeConfig) { c.onError = f } }

// commitTimeout bounds the commit of a handled batch, which is tried even
// after Consume's context ended.
const commitTimeout = 10 * time.Second

// ErrCursorTaken reports a cursor that someone else moved while Consume
// owned it: two consumers under one cursor name.
var ErrCursorTaken = errors.New("the cursor was moved by someone else (another consumer under the same name?)")

// Consume reads stream from cursor's position (its start, or its end with
// FromEnd, for a cursor that does not exist yet), straight from storage
// where it can (the server otherwise), hands batches to handler, and after
// each one the handler accepts moves the cursor past it, under If-Match
// of the cursor's last ETag. So processing is at-least-once: a consumer
// that stops before a commit sees that batch again, possibly with more
// messages after it. To make stream-to-stream processing exactly-once,
// append the output with WithSequence(producer, the batch's last Next),
// after dropping the messages whose Next is not above the producer's last
// sequence (LastSequence, read when the consumer starts, then the last
// sequence it appended): a batch handled again is then stored once. A
// message that cannot be read (a *MessageError) stops Consume with that
// error rather than skip it.
//
// It waits for new messages at the end of the stream, retries failures
// with a backoff (up to 5 s), and returns nil when ctx ends. It returns
// ErrCursorTaken if the cursor is moved by someone else, and the error of
// a request that cannot succeed (a missing claim, a trimmed position).
func (c *Client) Consume(ctx context.Context, stream, cursor string, handler Handler, opts ...ConsumeOption) error {
	cfg := consumeConfig{batch: 100, maxDelay: 5 * time.Second}
	for _, o := range opts {
		o(&cfg)
	}
	cur, err := c.startCursor(ctx, stream, cursor, cfg)
	if err != nil {
		return stopped(ctx, err)
	}
	r, err := c.Reader(ctx, stream)
	if err != nil {
		return stopped(ctx, err)
	}
	defer r.Close()
	delay := 100 * time.Millisecond
	// A position this loop moved the cursor to is a message boundary; one
	// it found (at the start, or set by someone else meanwhile) may be
	// inside a split value, which the first read from it reports.
	checked := int64(-1)
	retry := func(err error) bool {
		if cfg.onError != nil {
			cfg.onError(err)
		}
		t := time.NewTimer(delay)
		defer t.Stop()
		delay = min(delay*2, cfg.maxDelay)
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		}
	}
	for ctx.Err() == nil {
		batch, err := c.nextBatch(ctx, r, cur.Position, cfg.batch, cur.Position != checked)
		if err != nil {
			if permanent(err) || !retry(err) {
				return stopped(ctx, err)
			}
			continue
		}
		checked = cur.Position
		if len(batch) == 0 {
			r.wait(ctx, cur.Position)
			continue
		}
		if err := handler(ctx, batch); err != nil {
			if !retry(fmt.Errorf("handler: %w", err)) {
				return nil
			}
			continue
		}
		next := batch[len(batch)-1].Next
		for {
			// The batch is handled: its commit is tried even if ctx ended
			// meanwhile, for a while.
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), commitTimeout)
			set, err := c.SetCursor(cctx, stream, cursor, next, cur.ETag)
			cancel()
			if err == nil {
				cur, checked = set, next
				break
			}
			var e *Error
			if errors.As(err, &e) && e.Status == http.StatusPreconditionFailed {
				// A commit whose answer was lost may have landed: then
				// the cursor is where this one put it.
				if now, gerr := c.GetCursor(ctx, stream, cursor); gerr == nil && now.Position == next {
					cur, checked = now, next
					break
				}
				return fmt.Errorf("consume %q with cursor %q: %w", stream, cursor, ErrCursorTaken)
			}
			if permanent(err) || !retry(err) {
				return stopped(ctx, err)
			}
		}
		delay = 100 * time.Millisecond
	}
	return nil
}

// startCursor reads the cursor, creating it where the consumer starts if
// there is none.
func (c *Client) startCursor(ctx context.Context, stream, cursor string, cfg consumeConfig) (Cursor, error) {
	cur, err := c.GetCursor(ctx, stream, cursor)
	var e *Error
	if !errors.As(err, &e) || e.Status != http.StatusNotFound || e.Type != "not-found" {
		return cur, err
	}
	r, err := c.Reader(ctx, stream)
	if err != nil {
		return Cursor{}, err
	}
	defer r.Close()
	var from int64
	if cfg.fromEnd {
		from, err = r.Position(ctx)
	} else {
		from, err = r.Start(ctx)
	}
	if err != nil {
		return Cursor{}, err
	}
	return c.SetCursor(ctx, stream, cursor, from, "")
}

// nextBatch reads up to n whole messages from pos, without waiting.
func (c *Client) nextBatch(ctx context.Context, r *Reader, pos int64, n int, check bool) ([]ReadMessage, error) {
	var batch []ReadMessage
	for m, err := range r.messages(ctx, pos, -1, check) {
		if err != nil {
			return nil, err
		}
		m.Key, m.Value = bytes.Clone(m.Key), bytes.Clone(m.Value)
		batch = append(batch, m)
		if len(batch) == n {
			break
		}
	}
	return batch, nil
}

// permanent reports an error that retrying cannot fix.
func permanent(err error) bool {
	var e *Error
	if errors.As(err, &e) {
		return !e.Retryable()
	}
	return !transientRead(err)
}

// stopped returns nil for an error that only says ctx ended.
func stopped(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}
