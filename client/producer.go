package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"sync"
)

// Headers of exactly-once and conditional publishes.
const (
	ProducerHeader         = "MessageVault-Producer"
	SequenceHeader         = "MessageVault-Sequence"
	ExpectedPositionHeader = "MessageVault-Expected-Position"
	DuplicateHeader        = "MessageVault-Duplicate"
)

// WithProducer names the client's producer: every publish carries this id
// and the next sequence number of the stream, which the client resumes
// from the server (GET /streams/{stream}/producers/{id}) on its first
// publish to a stream. A retried publish resends its sequence, so the
// server stores it once. One producer id is one ordered sequence:
// publishes of this client to one stream are sent one at a time. Use an id
// per producing process that outlives restarts (a host name, a job name).
//
// Without it the client numbers its batches under random producer ids, one
// per concurrent publish, so concurrent publishes still run in parallel.
func WithProducer(id string) Option {
	return func(c *Client) { c.producers = newProducers(id, 1) }
}

// WithoutSequences turns producer numbering off: publishes are then
// at-least-once (a retry after a lost answer may store a batch twice), as
// with the original's clients.
func WithoutSequences() Option {
	return func(c *Client) { c.producers = &producers{off: true} }
}

// PublishOption makes one publish conditional.
type PublishOption func(*publishOptions)

type publishOptions struct {
	expect   bool
	position int64
	// producer and seq, if producer is set, number this publish instead
	// of the client's lanes.
	producer string
	seq      uint64
}

// WithSequence numbers one publish explicitly: producer id and sequence,
// instead of the client's own numbering. A consumer that writes what it
// derives from one stream to another uses it to make that exactly-once:
// with a sequence derived from the input (the input batch's last Next,
// under a producer id of its own), and the messages at or below the
// producer's last sequence dropped first (see Consume), a batch handled
// again after a crash is stored once. The sequences of one producer id
// must rise.
func WithSequence(producer string, seq uint64) PublishOption {
	return func(o *publishOptions) { o.producer, o.seq = producer, seq }
}

// ExpectPosition makes a publish conditional: the server appends the batch
// only if the stream's position is exactly n when the batch's turn comes,
// and otherwise refuses it with an *Error of Status 412 whose Position is
// the stream's position. This is how an event-sourced writer appends only
// if nobody else did since it read the stream.
func ExpectPosition(n int64) PublishOption {
	return func(o *publishOptions) { o.expect, o.position = true, n }
}

// IsPositionMismatch reports whether err is the refusal of a conditional
// publish, and the stream's position it reported.
func IsPositionMismatch(err error) (int64, bool) {
	var e *Error
	if errors.As(err, &e) && e.Status == http.StatusPreconditionFailed {
		return e.Position, true
	}
	return 0, false
}

// IsTooLarge reports whether err is a publish refused because its body
// was over the server's limit (413), and that limit in bytes (0 if the
// server did not say). Nothing of such a publish was stored: its messages
// can be sent again in smaller batches (see EncodedSize).
func IsTooLarge(err error) (int64, bool) {
	var e *Error
	if errors.As(err, &e) && e.Status == http.StatusRequestEntityTooLarge {
		return e.MaxBody, true
	}
	return 0, false
}

// producers hands out the producer lanes of a client: a lane is a
// producer id with its next sequence per stream, used by one publish at a
// time so that its sequences reach the server in order.
type producers struct {
	off   bool
	named bool // a caller-set id: one lane, resumed from the server
	base  string
	max   int // 0: no limit (random ids)

	mu    sync.Mutex
	free  []*lane
	count int
	sem   chan struct{} // for a named producer: its one lane
}

type lane struct {
	id   string
	next map[string]uint64 // stream -> next sequence
}

func newProducers(id string, max int) *producers {
	p := &producers{base: id, max: max, named: id != ""}
	if !p.named {
		var b [8]byte
		rand.Read(b[:])
		p.base = "go-" + hex.EncodeToString(b[:])
	}
	if p.named {
		p.sem = make(chan struct{}, 1)
	}
	return p
}

// take returns a lane for one publish; put gives it back.
func (p *producers) take(ctx context.Context) (*lane, error) {
	if p.named {
		select {
		case p.sem <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if n := len(p.free); n > 0 {
		l := p.free[n-1]
		p.free = p.free[:n-1]
		return l, nil
	}
	id := p.base
	if !p.named {
		id = fmt.Sprintf("%s-%d", p.base, p.count)
	}
	p.count++
	return &lane{id: id, next: map[string]uint64{}}, nil
}

func (p *producers) put(l *lane) {
	p.mu.Lock()
	p.free = append(p.free, l)
	p.mu.Unlock()
	if p.named {
		<-p.sem
	}
}

// sequence returns the lane's next sequence for stream, asking the server
// for a named producer's last one on first use.
func (c *Client) sequence(ctx context.Context, l *lane, stream string) (uint64, error) {
	if seq, ok := l.next[stream]; ok {
		return seq, nil
	}
	seq := uint64(1)
	if c.producers.named {
		last, known, err := c.LastSequence(ctx, stream, l.id)
		if err != nil {
			return 0, err
		}
		if known {
			seq = last + 1
		}
	}
	l.next[stream] = seq
	return seq, nil
}

// LastSequence returns the last sequence stream applied for producer, and
// false if the stream remembers none (a new producer, or a stream that
// does not exist yet).
func (c *Client) LastSequence(ctx context.Context, stream, producer string) (uint64, bool, error) {
	var ans struct {
		Sequence uint64
		Known    bool
	}
	path := "/streams/" + url.PathEscape(stream) + "/producers/" + url.PathEscape(producer)
	err := c.retry(ctx, func() error {
		_, err := c.do(ctx, http.MethodGet, path, nil, "", &ans)
		return err
	})
	var e *Error
	if errors.As(err, &e) && e.Status == http.StatusNotFound && e.Type == "not-found" {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("last sequence of producer %q on %q: %w", producer, stream, err)
	}
	return ans.Sequence, ans.Known, nil
}

// seqHeaders returns the request headers of a publish.
func seqHeaders(l *lane, seq uint64, o publishOptions) http.Header {
	h := http.Header{}
	switch {
	case o.producer != "":
		h.Set(ProducerHeader, o.producer)
		h.Set(SequenceHeader, strconv.FormatUint(o.seq, 10))
	case l != nil:
		h.Set(ProducerHeader, l.id)
		h.Set(SequenceHeader, strconv.FormatUint(seq, 10))
	}
	if o.expect {
		h.Set(ExpectedPositionHeader, strconv.FormatInt(o.position, 10))
	}
	return h
}
