package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/formats"
	"github.com/messagevault/messagevault/formats/lz4stream"
)

// Message is one application message: a key (usually its type, at most
// 255 bytes) and a value of any size.
type Message struct {
	Key   []byte
	Value []byte
}

// Result is the answer to a publish.
type Result struct {
	// Position is the stream's committed length after the publish.
	Position int64
	// Offsets holds the position of each message's first record.
	Offsets []int64
	// Duplicate is set when the server had stored this batch already (a
	// retry whose first answer was lost): it was not stored again, and
	// Offsets are those of the first time.
	Duplicate bool
}

// EncodedSize returns how many records m takes once split, and at most
// how many bytes they take in a publish body (before compression, which
// only makes a value smaller, but for LZ4Stream's few bytes per MiB,
// counted here). A batch's body is the sum over its messages plus
// formats.TransferHeaderSize and formats.TransferTrailerSize: callers
// group messages under a server's body limit with it.
func EncodedSize(m Message) (records, bytes int) {
	records = max(1, (len(m.Value)+messagevault.MaxValueSize-1)/messagevault.MaxValueSize)
	chunks := (len(m.Value) + lz4stream.BlockSize - 1) / lz4stream.BlockSize
	// An LZ4Stream chunk's header is at most 3 varints of 5 bytes; the
	// extra bytes may need one more record.
	extra := 15 * chunks
	if (len(m.Value)+extra+messagevault.MaxValueSize-1)/messagevault.MaxValueSize > records {
		records++
	}
	return records, records*(formats.TransferMessageOverhead+len(m.Key)) + len(m.Value) + extra
}

// records turns messages into v1 records: compressed as asked, split into
// chunks of at most MaxValueSize bytes. It returns the records and, for
// each message, the index of its first record.
func records(msgs []Message, compress compression) ([]messagevault.Message, []int, error) {
	var out []messagevault.Message
	first := make([]int, len(msgs))
	for i, m := range msgs {
		if len(m.Key) > messagevault.MaxKeySize {
			return nil, nil, fmt.Errorf("message %d: key is %d bytes, the limit is %d", i, len(m.Key), messagevault.MaxKeySize)
		}
		value, attr := compress.apply(m.Value)
		first[i] = len(out)
		for {
			n := min(len(value), messagevault.MaxValueSize)
			a := attr
			if n < len(value) {
				a |= messagevault.AttrContinued
			}
			out = append(out, messagevault.NewMessage(m.Key, value[:n], a))
			value = value[n:]
			if len(value) == 0 {
				break
			}
		}
	}
	return out, first, nil
}

// refusedV2 reports a refusal that a server from before v2 bodies may
// give one: a 400 (it names the version byte, or, for a small body, a
// length under v1's smallest) or a 415.
func refusedV2(err error) bool {
	var e *Error
	return errors.As(err, &e) && (e.Status == http.StatusBadRequest || e.Status == http.StatusUnsupportedMediaType)
}

// bodyPool keeps transfer bodies between publishes.
var bodyPool = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

// Publish appends msgs to stream as one batch (their records are
// contiguous) and returns once the server has made them durable. It
// retries on 429, 503 and connection errors until ctx ends. Every batch
// carries a producer id and sequence (see WithProducer), so a retry after
// a lost answer is not stored twice. opts make the publish conditional
// (ExpectPosition).
//
// An error other than an *Error with a 4xx Status leaves the outcome
// unknown: the batch may have been stored.
func (c *Client) Publish(ctx context.Context, stream string, msgs []Message, opts ...PublishOption) (Result, error) {
	var po publishOptions
	for _, o := range opts {
		o(&po)
	}
	recs, first, err := records(msgs, c.compress)
	if err != nil {
		return Result{}, fmt.Errorf("publish to %q: %w", stream, err)
	}
	if len(recs) > messagevault.MaxBatchCount {
		return Result{}, fmt.Errorf("publish to %q: %d records in one batch; the limit is %d (publish fewer messages at a time)", stream, len(recs), messagevault.MaxBatchCount)
	}
	bp := bodyPool.Get().(*[]byte)
	defer func() {
		if cap(*bp) <= 8<<20 {
			bodyPool.Put(bp)
		}
	}()
	if n := formats.TransferSize(recs); cap(*bp) < n {
		*bp = make([]byte, 0, n)
	}
	// A v2 body (CRC-32C instead of MD5) unless this server refused one.
	v1 := c.transferV1.Load()
	encode := formats.AppendTransferV2
	if v1 {
		encode = formats.AppendTransfer
	}
	body, err := encode((*bp)[:0], recs)
	if err != nil {
		return Result{}, fmt.Errorf("publish to %q: %w", stream, err)
	}
	*bp = body
	var (
		l   *lane
		seq uint64
	)
	if !c.producers.off && po.producer == "" {
		if l, err = c.producers.take(ctx); err != nil {
			return Result{}, fmt.Errorf("publish to %q: %w", stream, err)
		}
		defer c.producers.put(l)
		if seq, err = c.sequence(ctx, l, stream); err != nil {
			return Result{}, fmt.Errorf("publish to %q: %w", stream, err)
		}
	}
	hdr := seqHeaders(l, seq, po)
	var ans publishAnswer
	dup := false
	err = c.retry(ctx, func() error {
		contentType := formats.TransferV2ContentType
		if v1 {
			contentType = "application/octet-stream"
		}
		h, err := c.doWith(ctx, http.MethodPost, "/streams/"+url.PathEscape(stream), body, contentType, hdr, &ans)
		if !v1 && err == nil {
			c.transferV2OK.Store(true)
		}
		if !v1 && !c.transferV2OK.Load() && refusedV2(err) {
			// Perhaps a server from before v2 bodies: it refused the body
			// before applying anything (every 400 and 415 comes before
			// the append), so the same sequence goes again as v1, and v1
			// is kept if that works.
			v1Body, aerr := formats.AppendTransfer(make([]byte, 0, formats.TransferSize(recs)), recs)
			if aerr != nil {
				return aerr
			}
			h1, err1 := c.doWith(ctx, http.MethodPost, "/streams/"+url.PathEscape(stream), v1Body, "application/octet-stream", hdr, &ans)
			if err1 != nil {
				return err // the v1 body failed too: the first answer says why
			}
			c.transferV1.Store(true)
			v1, h, err = true, h1, nil
		}
		if err == nil {
			dup = h.Get(DuplicateHeader) == "true"
		}
		return err
	})
	if l != nil {
		// The sequence is used, whatever the outcome: a failed batch
		// leaves a gap, which the server allows.
		l.next[stream] = seq + 1
		var e *Error
		if errors.As(err, &e) && e.Status == http.StatusConflict {
			delete(l.next, stream) // out of step with the server: resume
		}
	}
	if err != nil {
		return Result{}, fmt.Errorf("publish to %q: %w", stream, err)
	}
	if len(ans.Offsets) != len(recs) {
		return Result{}, fmt.Errorf("publish to %q: the server answered %d offsets for %d records", stream, len(ans.Offsets), len(recs))
	}
	res := Result{Position: ans.Position, Offsets: make([]int64, len(msgs)), Duplicate: dup}
	for i, f := range first {
		res.Offsets[i] = ans.Offsets[f]
	}
	return res, nil
}

// Defaults of a BufferedPublisher.
const (
	DefaultLinger     = 5 * time.Millisecond
	DefaultBatchBytes = 1 << 20
	DefaultBatchCount = 1000
)

// BufferedPublisher gathers messages into batches: a batch goes out when it
// holds BatchCount messages or BatchBytes bytes, or Linger after its first
// message. Add returns once the message's batch is durable.
type BufferedPublisher struct {
	c      *Client
	stream string
	// Linger, BatchBytes and BatchCount; zero takes the defaults.
	linger     time.Duration
	batchBytes int
	batchCount int

	mu      sync.Mutex
	pending []Message
	waiters []chan result
	size    int
	timer   *time.Timer
	ctx     context.Context
	queue   []batch       // cut batches, oldest first, for the one sender
	wake    chan struct{} // signals the sender (capacity 1)
	room    chan struct{} // closed and replaced when the queue shrinks
	done    chan struct{}
	closed  bool
}

// maxQueuedBatches bounds the batches cut but not yet sent: beyond it Add
// waits (within its context) for the sender.
const maxQueuedBatches = 16

type batch struct {
	msgs    []Message
	waiters []chan result
}

type result struct {
	offset int64
	err    error
}

// NewBufferedPublisher returns a buffered publisher to stream; zero limits
// take the defaults. Batches are sent with ctx.
func (c *Client) NewBufferedPublisher(ctx context.Context, stream string, linger time.Duration, batchBytes, batchCount int) *BufferedPublisher {
	if linger <= 0 {
		linger = DefaultLinger
	}
	if batchBytes <= 0 {
		batchBytes = DefaultBatchBytes
	}
	if batchCount <= 0 {
		batchCount = DefaultBatchCount
	}
	p := &BufferedPublisher{c: c, stream: stream, linger: linger, batchBytes: batchBytes, batchCount: batchCount, ctx: ctx,
		wake: make(chan struct{}, 1), room: make(chan struct{}), done: make(chan struct{})}
	go p.send()
	return p
}

// send publishes batches one after another, in the order they were cut.
func (p *BufferedPublisher) send() {
	defer close(p.done)
	for {
		p.mu.Lock()
		if len(p.queue) == 0 {
			closed := p.closed
			p.mu.Unlock()
			if closed {
				return
			}
			<-p.wake
			continue
		}
		b := p.queue[0]
		p.queue = p.queue[1:]
		close(p.room)
		p.room = make(chan struct{})
		p.mu.Unlock()
		res, err := p.c.Publish(p.ctx, p.stream, b.msgs)
		for i, w := range b.waiters {
			if err != nil {
				w <- result{err: err}
			} else {
				w <- result{offset: res.Offsets[i]}
			}
		}
	}
}

func (p *BufferedPublisher) signal() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Close sends what is pending and waits until every batch is answered.
func (p *BufferedPublisher) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.flushLocked()
	p.closed = true
	p.mu.Unlock()
	p.signal()
	<-p.done
}

// Add queues a copy of m and waits until its batch is durable; it returns
// the message's offset. If ctx ends while the message still waits for its
// batch to be cut, it is taken out and never sent, and Add returns
// ctx.Err(); once its batch is on its way, Add waits for the outcome and
// reports it, so that a message is never sent without its caller hearing
// how it went. A message that could never be published (a key over 255
// bytes, a value too large for one batch) fails alone, at once.
func (p *BufferedPublisher) Add(ctx context.Context, m Message) (int64, error) {
	if len(m.Key) > messagevault.MaxKeySize {
		return 0, fmt.Errorf("publish to %q: key is %d bytes, the limit is %d", p.stream, len(m.Key), messagevault.MaxKeySize)
	}
	if chunks := (len(m.Value) + messagevault.MaxValueSize - 1) / messagevault.MaxValueSize; chunks > messagevault.MaxBatchCount {
		return 0, fmt.Errorf("publish to %q: a value of %d bytes needs %d records; one batch holds %d", p.stream, len(m.Value), chunks, messagevault.MaxBatchCount)
	}
	m = Message{Key: bytes.Clone(m.Key), Value: bytes.Clone(m.Value)}
	if m.Key == nil {
		m.Key = []byte{}
	}
	if m.Value == nil {
		m.Value = []byte{}
	}
	ch := make(chan result, 1)
	p.mu.Lock()
	for len(p.queue) >= maxQueuedBatches && !p.closed {
		room := p.room
		p.mu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
		p.mu.Lock()
	}
	if p.closed {
		p.mu.Unlock()
		return 0, fmt.Errorf("publish to %q: the buffered publisher is closed", p.stream)
	}
	p.pending = append(p.pending, m)
	p.waiters = append(p.waiters, ch)
	p.size += len(m.Key) + len(m.Value)
	if len(p.pending) >= p.batchCount || p.size >= p.batchBytes {
		p.flushLocked()
	} else if p.timer == nil {
		p.timer = time.AfterFunc(p.linger, p.Flush)
	}
	p.mu.Unlock()
	select {
	case r := <-ch:
		return r.offset, r.err
	case <-ctx.Done():
	}
	// Still pending? Then it is withdrawn and never sent.
	p.mu.Lock()
	for i, w := range p.waiters {
		if w == ch {
			p.size -= len(p.pending[i].Key) + len(p.pending[i].Value)
			p.pending = append(p.pending[:i], p.pending[i+1:]...)
			p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
			p.mu.Unlock()
			return 0, ctx.Err()
		}
	}
	p.mu.Unlock()
	r := <-ch // on its way: its outcome is the answer
	return r.offset, r.err
}

// Flush sends what is pending now.
func (p *BufferedPublisher) Flush() {
	p.mu.Lock()
	p.flushLocked()
	p.mu.Unlock()
	p.signal()
}

// flushLocked cuts the pending messages into a batch for the sender.
func (p *BufferedPublisher) flushLocked() {
	if p.timer != nil {
		p.timer.Stop()
		p.timer = nil
	}
	if len(p.pending) == 0 || p.closed {
		return
	}
	p.queue = append(p.queue, batch{msgs: p.pending, waiters: p.waiters})
	p.pending, p.waiters, p.size = nil, nil, 0
	p.signal()
}

// publishAnswer is the server's answer to a publish. It decodes the
// answer's usual shape without reflection (a batch of thousands of offsets
// is common), and anything else with encoding/json.
type publishAnswer struct {
	Position int64
	Offsets  []int64
}

// UnmarshalJSON implements json.Unmarshaler.
func (a *publishAnswer) UnmarshalJSON(data []byte) error {
	if a.fast(data) {
		return nil
	}
	var slow struct {
		Position int64
		Offsets  []int64
	}
	if err := json.Unmarshal(data, &slow); err != nil {
		return err
	}
	a.Position, a.Offsets = slow.Position, slow.Offsets
	return nil
}

// fast parses exactly {"Position":N,"Offsets":[N,...]} with optional
// spaces; it reports false for anything else.
func (a *publishAnswer) fast(d []byte) bool {
	d = bytes.TrimSpace(d)
	const p1, p2 = `{"Position":`, `,"Offsets":[`
	if !bytes.HasPrefix(d, []byte(p1)) {
		return false
	}
	d = d[len(p1):]
	pos, n := parseInt(d)
	if n == 0 || !bytes.HasPrefix(d[n:], []byte(p2)) {
		return false
	}
	d = d[n+len(p2):]
	offs := make([]int64, 0, 1024)
	for len(d) > 0 && d[0] != ']' {
		v, n := parseInt(d)
		if n == 0 {
			return false
		}
		offs = append(offs, v)
		d = d[n:]
		if len(d) > 0 && d[0] == ',' {
			d = d[1:]
		}
	}
	if string(bytes.TrimSpace(d)) != "]}" {
		return false
	}
	a.Position, a.Offsets = pos, offs
	return true
}

// parseInt parses a non-negative decimal at the start of d.
func parseInt(d []byte) (int64, int) {
	var v int64
	i := 0
	for ; i < len(d) && d[i] >= '0' && d[i] <= '9' && i < 18; i++ {
		v = v*10 + int64(d[i]-'0')
	}
	return v, i
}
