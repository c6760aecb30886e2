package server

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/auth"
	"github.com/messagevault/messagevault/formats"
	"github.com/messagevault/messagevault/stream"
)

// readChunk is the range a server-side read fetches at a time: enough for
// a few largest records, small enough that many readers and tails at once
// cost little memory.
const readChunk = 256 << 10

// The JSON body of GET /streams/{stream}/messages is
// {"Stream": ..., "Position": ..., "Messages": [jsonRecord...], "Next": ...},
// encoded as it is written (see handleRead).

// jsonRecord is one message as the read routes show it. Value holds the
// value when it is UTF-8 text and not compressed; otherwise ValueBase64
// holds it.
type jsonRecord struct {
	Offset      int64  `json:"Offset"`
	Next        int64  `json:"Next"`
	ID          string `json:"Id"`
	Time        string `json:"Time"`
	Attributes  byte   `json:"Attributes"`
	Key         string `json:"Key"`
	Value       string `json:"Value,omitempty"`
	ValueBase64 string `json:"ValueBase64,omitempty"`
}

func toJSONRecord(rec formats.Record) jsonRecord {
	j := jsonRecord{
		Offset:     rec.Offset,
		Next:       rec.Offset + int64(rec.Size()),
		ID:         rec.ID.String(),
		Time:       rec.ID.Time().Format(time.RFC3339Nano),
		Attributes: rec.Attributes,
		Key:        string(rec.Key),
	}
	if rec.Attributes&messagevault.AttrLZ4 == 0 && utf8.Valid(rec.Value) {
		j.Value = string(rec.Value)
	} else {
		j.ValueBase64 = base64.StdEncoding.EncodeToString(rec.Value)
	}
	return j
}

// readParams are the query parameters of the read routes.
type readParams struct {
	from    int64
	hasFrom bool // from was given; without it a read starts at the stream's Start
	limit   int
	wait    time.Duration
	raw     bool
	// msgStart (message_start=1) asks for X-Messagevault-Message-Start.
	msgStart bool
	// since, if set, starts the read at the first record at or after
	// this time instead of from.
	since    time.Time
	hasSince bool
}

func parseReadParams(r *http.Request) (readParams, error) {
	q := r.URL.Query()
	p := readParams{limit: DefaultReadLimit}
	if v := q.Get("from"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return p, badRequest("from=%q: want a position, a whole number of bytes from 0", v)
		}
		p.from, p.hasFrom = n, true
	}
	limit := q.Get("limit")
	p.msgStart = q.Get("message_start") == "1"
	if v := q.Get("wait"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 || math.IsNaN(f) || f > MaxWait.Seconds() {
			return p, badRequest("wait=%q: want seconds from 0 to %d", v, int(MaxWait.Seconds()))
		}
		p.wait = time.Duration(f * float64(time.Second))
	}
	if v := q.Get("since"); v != "" {
		// An offset's "+" sent unencoded arrives as a space.
		t, err := time.Parse(time.RFC3339Nano, strings.ReplaceAll(v, " ", "+"))
		if err != nil {
			return p, badRequest("since=%q: want a time in RFC 3339, such as 2026-12-04T05:00:00Z or 2026-12-04T06:00:00.250+01:00", v)
		}
		if q.Get("from") != "" {
			return p, badRequest("from and since: give one")
		}
		p.since, p.hasSince = t, true
	}
	switch f := q.Get("format"); f {
	case "", "json":
		p.raw = f == "" && strings.Contains(r.Header.Get("Accept"), "application/octet-stream")
	case "raw":
		p.raw = true
	default:
		return p, badRequest("format=%q: want json or raw", f)
	}
	if limit != "" {
		most := MaxReadLimit
		if p.raw {
			most = MaxRawReadLimit
		}
		n, err := strconv.Atoi(limit)
		if err != nil || n < 1 || n > most {
			return p, badRequest("limit=%q: want a number of messages from 1 to %d", limit, most)
		}
		p.limit = n
	}
	return p, nil
}

// handleRead serves GET /streams/{stream}/messages?from=&limit=&wait=&format=:
// up to limit messages from position from, and the position to continue
// from. With wait, a read at the end of the stream waits up to that many
// seconds for the next commit (a long poll, woken by the append itself).
func (s *Server) handleRead(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	rr, ok := s.openRead(w, r, ctx, false)
	if !ok {
		return
	}
	defer rr.close()
	name, p, reader, pos := rr.name, rr.p, rr.reader, rr.pos
	if p.from == pos && p.wait > 0 {
		wctx, cancel := context.WithTimeout(ctx, p.wait)
		wctx, cancelShutdown := s.untilShutdown(wctx)
		var err error
		for pos == p.from && wctx.Err() == nil {
			s.vault.Load().Wait(wctx, name, pos, stream.DefaultPollInterval)
			if pos, err = reader.Position(ctx); err != nil {
				break
			}
		}
		cancelShutdown()
		cancel()
		if err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	rc := http.NewResponseController(w)
	rc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
	w.Header().Set(StartHeader, strconv.FormatInt(rr.start, 10))
	if p.msgStart && p.hasFrom && p.from > rr.start && p.from < pos {
		// A read that starts inside a value split into records says
		// where that message starts, so no reader takes its rest for a
		// whole value.
		if ms, err := reader.MessageStart(ctx, p.from); err == nil && ms < p.from {
			w.Header().Set(MessageStartHeader, strconv.FormatInt(ms, 10))
		}
	}
	if p.raw {
		s.writeRaw(w, r, reader, name, p, pos)
		return
	}
	// The answer is encoded as it is written: a client that does not read
	// it holds a buffer, not the whole answer (values of control
	// characters grow six times in JSON). Next comes last, once known.
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	out := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(out)
	next := p.from
	n, size := 0, 0
	started := false
	for rec, err := range reader.Records(ctx, p.from, pos) {
		if err != nil {
			if !started {
				s.writeError(w, r, err)
				return
			}
			// The status is sent: cut the answer off, so the client
			// sees a broken body, not a short read that looks whole.
			s.log.Error("read failed after the answer began", "id", requestID(ctx), "stream", name, "err", err)
			panic(http.ErrAbortHandler)
		}
		if n == p.limit || (n > 0 && size+rec.Size() > MaxReadBytes) {
			break
		}
		if !started {
			started = true
			w.WriteHeader(http.StatusOK)
			fmt.Fprintf(out, `{"Stream":%s,"Position":%d,"Messages":[`, jsonString(name), pos)
		} else {
			out.WriteByte(',')
		}
		enc.Encode(toJSONRecord(rec)) // its newline is JSON whitespace
		n++
		size += rec.Size()
		next = rec.Offset + int64(rec.Size())
	}
	if !started {
		w.WriteHeader(http.StatusOK)
		fmt.Fprintf(out, `{"Stream":%s,"Position":%d,"Messages":[`, jsonString(name), pos)
	}
	fmt.Fprintf(out, "],\"Next\":%d}\n", next)
	out.Flush()
}

// readRequest is a read route's request once its prologue passed.
type readRequest struct {
	name   string
	p      readParams
	reader *stream.Reader
	pos    int64 // the committed position when it was opened
	start  int64 // the first stored position then
	close  func()
}

// StartHeader is the read answers' header that gives the stream's first
// stored position (0 until it is trimmed).
const StartHeader = "X-Messagevault-Start"

// MessageStartHeader is set on a read answer whose from is a record start
// inside a value split into records (the record before it is flagged "to
// be continued"): it gives the offset of that message's first record.
const MessageStartHeader = "X-Messagevault-Message-Start"

// openRead is the prologue the read routes share: the stream and the
// claim to read it, the query (and, for events, Last-Event-ID), a slot
// among reads or among tails and long-polls, a reader, and from checked
// against the committed position. ctx bounds the reader. When it returns
// false the answer is written; otherwise call close when done.
func (s *Server) openRead(w http.ResponseWriter, r *http.Request, ctx context.Context, events bool) (*readRequest, bool) {
	name, ok := s.streamFor(w, r, false)
	if !ok {
		return nil, false
	}
	p, err := parseReadParams(r)
	if err != nil {
		s.writeError(w, r, err)
		return nil, false
	}
	if id := r.Header.Get("Last-Event-ID"); events && id != "" {
		n, err := strconv.ParseInt(id, 10, 64)
		if err != nil || n < 0 {
			s.writeError(w, r, badRequest("Last-Event-ID %q: want a position", id))
			return nil, false
		}
		p.from, p.hasFrom, p.hasSince = n, true, false // a reconnect resumes where it stopped
	}
	slots, limit, what := &s.reads, s.cfg.MaxReads, "reads"
	if events || p.wait > 0 {
		slots, limit, what = &s.tails, s.cfg.MaxTails, "tails and long-polls"
	}
	if !take(slots, limit) {
		s.writeError(w, r, fmt.Errorf("%w: %d %s are being served (limit %d); retry shortly", errBusy, limit, what, limit))
		return nil, false
	}
	reader, closeReader, err := s.reader(ctx, name)
	if events && errors.Is(err, messagevault.ErrStreamNotFound) && p.from == 0 {
		// A stream not written yet: its event stream waits for it.
		return &readRequest{name: name, p: p, close: func() { slots.Add(-1) }}, true
	}
	if err != nil {
		slots.Add(-1)
		s.writeError(w, r, err)
		return nil, false
	}
	rr := &readRequest{name: name, p: p, reader: reader, close: func() { closeReader(); slots.Add(-1) }}
	if p.hasSince {
		rr.p.from, err = reader.FindTime(ctx, p.since)
		p.from = rr.p.from
	}
	if err != nil {
		rr.close()
		s.writeError(w, r, err)
		return nil, false
	}
	var e messagevault.Extent
	if e, err = reader.Extent(ctx); err == nil {
		rr.pos, rr.start = e.Position, e.Start
		switch {
		case events && !p.hasFrom && !p.hasSince:
			// An event stream without from follows the tail.
			p.from, rr.p.from = e.Position, e.Position
		case !p.hasFrom && !p.hasSince && p.from < e.Start:
			// No from: the oldest record still stored.
			p.from, rr.p.from = e.Start, e.Start
		case p.from < e.Start:
			err = &messagevault.TrimmedError{Offset: p.from, Start: e.Start}
		case p.from > rr.pos:
			err = badRequest("from=%d is past the stream's position %d", p.from, rr.pos)
		}
	}
	if err == nil && events && p.from < rr.pos {
		// An event stream answers 200 before its first event: check
		// that from is a record's start while an error can still be
		// the answer.
		for _, ferr := range reader.Records(ctx, p.from, rr.pos) {
			err = ferr
			break
		}
	}
	if err != nil {
		rr.close()
		s.writeError(w, r, err)
		return nil, false
	}
	return rr, true
}

// userOf returns the name of the request's user ("" before
// authentication).
func userOf(r *http.Request) string {
	if u, ok := r.Context().Value(keyUser).(*string); ok {
		return *u
	}
	return ""
}

// recheckClaims calls revoke once the request's user no longer exists or
// may no longer read stream, checking every ClaimRecheck until ctx ends.
// (A forwarded request's principal is not a user of this file: the
// cluster credential is not rechecked.)
func (s *Server) recheckClaims(ctx context.Context, r *http.Request, stream string, revoke func()) {
	name := userOf(r)
	if name == "" || strings.HasPrefix(name, ClusterUser+" ") {
		return
	}
	t := time.NewTicker(s.cfg.ClaimRecheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p, ok := s.cfg.Users.Lookup(name)
		if id, isToken := auth.TokenID(name); isToken {
			p, ok = s.cfg.Users.TokenPrincipal(id)
		}
		if !ok || !p.CanRead(stream) {
			s.log.Info("ending an event stream: its user was removed or lost the claim", "id", requestID(ctx), "user", name, "stream", stream)
			revoke()
			return
		}
	}
}

// take takes one of limit slots, or reports that none is free.
func take(slots *atomic.Int32, limit int) bool {
	if slots.Add(1) > int32(limit) {
		slots.Add(-1)
		return false
	}
	return true
}

// rawBuffer is how much of a raw answer is kept in memory, from the pass
// that checks its records, to send after its headers; the rest is read
// from storage a second time and sent as stored.
const rawBuffer = 1 << 20

// writeRaw answers a read in the raw format: the records' bytes, after
// headers that say where the answer ends (X-Messagevault-Next), so the
// range is found first, by a pass that checks every record (so that an
// error can still be the answer). Its first rawBuffer bytes are kept from
// that pass; the rest is streamed from storage as stored.
func (s *Server) writeRaw(w http.ResponseWriter, r *http.Request, reader *stream.Reader, name string, p readParams, pos int64) {
	ctx := r.Context()
	bp := rawPool.Get().(*[]byte)
	defer rawPool.Put(bp)
	kept := (*bp)[:0]
	next := p.from
	n, size := 0, 0
	for rec, err := range reader.Records(ctx, p.from, pos) {
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		if n == p.limit || (n > 0 && size+rec.Size() > MaxReadBytes) {
			break
		}
		if size == len(kept) && len(kept)+rec.Size() <= cap(kept) {
			kept, _ = formats.AppendRecord(kept, rec.ID, rec.Message())
		}
		n++
		size += rec.Size()
		next = rec.Offset + int64(rec.Size())
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", strconv.Itoa(size))
	h.Set("X-Messagevault-Position", strconv.FormatInt(pos, 10))
	h.Set("X-Messagevault-Next", strconv.FormatInt(next, 10))
	h.Set("X-Messagevault-Count", strconv.Itoa(n))
	w.WriteHeader(http.StatusOK)
	if _, err := w.Write(kept); err != nil {
		return // the client went away
	}
	if err := reader.WriteRange(ctx, w, p.from+int64(len(kept)), next, (*bp)[:cap(*bp)]); err != nil {
		s.log.Error("raw read failed after the answer began", "id", requestID(ctx), "stream", name, "err", err)
		panic(http.ErrAbortHandler)
	}
}

// rawPool keeps the buffers of raw answers.
var rawPool = sync.Pool{New: func() any { b := make([]byte, 0, rawBuffer); return &b }}

// jsonString encodes s as a JSON string.
func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// missingPoll is how often an event stream looks for its stream while it
// has not been written yet.
const missingPoll = time.Second

// handleEvents serves GET /streams/{stream}/events?from=: a server-sent
// events tail. Each message is an event "message" whose id is the position
// after it, so a client that reconnects with Last-Event-ID resumes exactly
// where it stopped. It is woken by the append itself; an idle tail sends a
// keep-alive comment every KeepAliveInterval.
func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := s.untilShutdown(r.Context())
	defer cancel()
	// An event stream ends after MaxTailDuration, and as soon as its user
	// is removed or loses the claim to read the stream.
	ctx, cancelTail := context.WithTimeout(ctx, s.cfg.MaxTailDuration)
	defer cancelTail()
	rr, ok := s.openRead(w, r, ctx, true)
	if !ok {
		return
	}
	defer func() { rr.close() }() // rr.close changes once a missing stream appears
	name := rr.name
	var revoked atomic.Bool
	go s.recheckClaims(ctx, r, name, func() { revoked.Store(true); cancelTail() })
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	out := &eventBuffer{w: w}
	rc.Flush()
	lastWrite := time.Now()
	flush := func() {
		if out.Buffered() > 0 {
			// A client that does not take what it is sent is cut off.
			rc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout))
			out.Flush()
			rc.Flush()
			lastWrite = time.Now()
		}
	}
	enc := json.NewEncoder(out)
	writeErr := func(msg, typ string) {
		out.WriteString("event: error\ndata: ")
		enc.Encode(apiError{Error: msg, Type: typ})
		out.WriteString("\n")
	}
	// Catch up to the committed position and send; then wait for the next
	// commit, sending a keep-alive when nothing went out for
	// KeepAliveInterval.
	pos := rr.p.from
	// The position the stream starts from, as an event id without an
	// event: a client that reconnects before its first event resumes
	// there (EventSource's Last-Event-ID) instead of at a later end.
	out.WriteString("id: " + strconv.FormatInt(pos, 10) + "\n\n")
	flush()
	for rr.reader == nil {
		// The stream has not been written yet: wait for it, keeping the
		// connection alive, and send it from its first record.
		reader, closeReader, err := s.reader(ctx, name)
		if err == nil {
			release := rr.close
			rr.reader, rr.close = reader, func() { closeReader(); release() }
			break
		}
		if !errors.Is(err, messagevault.ErrStreamNotFound) || ctx.Err() != nil {
			switch {
			case revoked.Load():
				writeErr(forbidden(userOf(r), name+":read").Error()+" (no longer)", "forbidden")
			case ctx.Err() == nil:
				_, typ := classify(err)
				writeErr(err.Error(), typ)
			}
			flush()
			return
		}
		if time.Since(lastWrite) >= KeepAliveInterval {
			out.WriteString(": keep-alive\n\n")
			flush()
		}
		s.vault.Load().Wait(ctx, name, 0, missingPoll)
	}
	for {
		var failed error
		for rec, err := range rr.reader.Records(ctx, pos, -1) {
			if err != nil {
				failed = err
				break
			}
			j := toJSONRecord(rec)
			rc.SetWriteDeadline(time.Now().Add(s.cfg.WriteTimeout)) // for the buffer's own flushes
			out.WriteString("id: ")
			out.WriteString(strconv.FormatInt(j.Next, 10))
			out.WriteString("\nevent: message\ndata: ")
			enc.Encode(j) // ends with a newline
			out.WriteString("\n")
			pos = j.Next
		}
		if failed == nil {
			failed = ctx.Err()
		}
		if errors.Is(failed, messagevault.ErrNotRecordStart) && pos != rr.p.from {
			// A position this loop reached by itself: damage, not a
			// client's mistake.
			failed = fmt.Errorf("%w: %w", messagevault.ErrCorrupt, failed)
		}
		switch {
		case failed == nil:
		case revoked.Load():
			writeErr(forbidden(userOf(r), name+":read").Error()+" (no longer)", "forbidden")
		case ctx.Err() == nil && !errors.Is(failed, context.Canceled):
			_, typ := classify(failed)
			writeErr(failed.Error(), typ)
			s.log.Error("event stream failed", "id", requestID(r.Context()), "stream", name, "err", failed)
		}
		if failed != nil {
			break
		}
		flush()
		idle := time.Since(lastWrite)
		if idle >= KeepAliveInterval {
			out.WriteString(": keep-alive\n\n")
			flush()
			idle = 0
		}
		wctx, wcancel := context.WithTimeout(ctx, KeepAliveInterval-idle)
		s.vault.Load().Wait(wctx, name, pos, min(KeepAliveInterval, time.Second))
		wcancel()
	}
	flush()
}

// reader opens a reader of stream name: through the vault while this node
// writes (clamped to its committed position), from storage otherwise. Its
// callers wait for new records in the vault's Wait.
func (s *Server) reader(ctx context.Context, name string) (*stream.Reader, func() error, error) {
	cfg := stream.ReaderConfig{ChunkSize: readChunk}
	if v := s.vault.Load(); v != nil {
		return v.Reader(ctx, name, cfg)
	}
	pr, err := s.cfg.Storage.OpenReader(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	return stream.NewReader(name, pr, cfg), pr.Close, nil
}

// eventBufferPool holds the write buffers of event streams.
var eventBufferPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, eventBufferSize) }}

// eventBufferSize is an event stream's write buffer: big enough that a
// catch-up sends in large writes, small enough that thousands of tails
// woken by one commit at once hold little.
const eventBufferSize = 16 << 10

// eventBuffer buffers an event stream's writes to w in a buffer
// that it takes from a pool at the first write after a flush and gives
// back at the flush: a stream waiting for its next record (most of them,
// most of the time) holds no buffer, so that thousands of tails cost
// little memory.
type eventBuffer struct {
	w   io.Writer
	buf *bufio.Writer
}

func (b *eventBuffer) get() *bufio.Writer {
	if b.buf == nil {
		b.buf = eventBufferPool.Get().(*bufio.Writer)
		b.buf.Reset(b.w)
	}
	return b.buf
}

// Write buffers p.
func (b *eventBuffer) Write(p []byte) (int, error) { return b.get().Write(p) }

// WriteString buffers s.
func (b *eventBuffer) WriteString(s string) (int, error) { return b.get().WriteString(s) }

// Buffered returns how many bytes wait for Flush.
func (b *eventBuffer) Buffered() int {
	if b.buf == nil {
		return 0
	}
	return b.buf.Buffered()
}

// Flush writes what is buffered and gives the buffer back.
func (b *eventBuffer) Flush() error {
	if b.buf == nil {
		return nil
	}
	err := b.buf.Flush()
	b.buf.Reset(nil)
	eventBufferPool.Put(b.buf)
	b.buf = nil
	return err
}
