package server

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/formats"
	"github.com/messagevault/messagevault/stream"
)

// BodyReadTimeout bounds the time a client takes to send a publish body.
const BodyReadTimeout = 2 * time.Minute

// Pools of publish buffers. Buffers over poolMax are left to the garbage
// collector so that one large publish does not pin memory.
const poolMax = 4 << 20

var (
	// New buffers start empty and grow to what a publish needs: thousands
	// of small publishes at once (one per stream) must not cost 64 KiB
	// each.
	bodyPool = sync.Pool{New: func() any { return new([]byte) }}
	msgsPool = sync.Pool{New: func() any { return new([]messagevault.Message) }}
)

type decodeFunc func(body []byte, dst []messagevault.Message) ([]messagevault.Message, error)

// handlePublish serves POST /streams/{stream}: the v1 transfer format, or
// JSON when the Content-Type says so.
func (s *Server) handlePublish(w http.ResponseWriter, r *http.Request) {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt == "application/json" {
		s.publish(w, r, decodeJSON)
		return
	}
	s.publish(w, r, decodeTransfer)
}

// isJSON reports whether a publish carries JSON: its route or its
// Content-Type says so.
func isJSON(r *http.Request) bool {
	if strings.HasSuffix(r.URL.Path, "/messages") {
		return true
	}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return mt == "application/json"
}

// handlePublishJSON serves POST /streams/{stream}/messages: always JSON,
// sent as application/json. (A web page can make a browser send a
// cross-site text/plain or form body with the user's cached credentials
// without asking; application/json it cannot, without the server's
// consent.)
func (s *Server) handlePublishJSON(w http.ResponseWriter, r *http.Request) {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		s.writeError(w, r, fmt.Errorf("%w: a JSON publish needs Content-Type: application/json (got %q); with curl, add -H 'Content-Type: application/json'", errMediaType, r.Header.Get("Content-Type")))
		return
	}
	s.publish(w, r, decodeJSON)
}

// Request and answer headers of exactly-once and conditional publishes.
const (
	ProducerHeader         = "MessageVault-Producer"
	SequenceHeader         = "MessageVault-Sequence"
	ExpectedPositionHeader = "MessageVault-Expected-Position"
	DuplicateHeader        = "MessageVault-Duplicate"
)

// appendOptions reads the exactly-once and conditional headers of a
// publish.
func appendOptions(r *http.Request) (stream.AppendOptions, error) {
	var o stream.AppendOptions
	producer, seq := r.Header.Values(ProducerHeader), r.Header.Values(SequenceHeader)
	hasP, hasS := len(producer) > 0, len(seq) > 0
	switch {
	case hasP != hasS:
		return o, badRequest("%s and %s go together: give both or neither", ProducerHeader, SequenceHeader)
	case hasP:
		if len(producer) != 1 || !stream.ValidProducer(producer[0]) {
			return o, badRequest("%s: %q is not a producer id (1 to %d of A-Z a-z 0-9 . _ : -)", ProducerHeader, strings.Join(producer, ","), stream.MaxProducerLen)
		}
		n, err := strconv.ParseUint(strings.Join(seq, ","), 10, 64)
		if err != nil || len(seq) != 1 {
			return o, badRequest("%s: %q is not a sequence number (a decimal from 0 to %d)", SequenceHeader, strings.Join(seq, ","), uint64(math.MaxUint64))
		}
		o.Producer, o.Sequence = producer[0], n
	}
	if v := r.Header.Values(ExpectedPositionHeader); len(v) > 0 {
		n, err := strconv.ParseInt(strings.Join(v, ","), 10, 64)
		if err != nil || n < 0 || len(v) != 1 {
			return o, badRequest("%s: %q is not a position (a decimal byte count, 0 or more)", ExpectedPositionHeader, strings.Join(v, ","))
		}
		o.Expect, o.ExpectPosition = true, n
	}
	return o, nil
}

func (s *Server) publish(w http.ResponseWriter, r *http.Request, decode decodeFunc) {
	name, ok := s.streamFor(w, r, true)
	if !ok {
		return
	}
	opts, err := appendOptions(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	limit := s.cfg.MaxBodyBytes
	if r.ContentLength > limit {
		s.writeError(w, r, &bodyTooLargeError{size: r.ContentLength, limit: limit})
		return
	}
	factor := int64(1)
	if isJSON(r) {
		factor = 3 // decoded keys and values are copies, plus the decoder's
	}
	user := ""
	if u, ok := r.Context().Value(keyUser).(*string); ok {
		user = *u
	}
	budget := s.newReservation(user, factor)
	defer budget.release()

	// A client that trickles its body must not hold its reservation for
	// ever.
	http.NewResponseController(w).SetReadDeadline(time.Now().Add(BodyReadTimeout))
	bp := bodyPool.Get().(*[]byte)
	mp := msgsPool.Get().(*[]messagevault.Message)
	defer func() {
		if cap(*bp) <= poolMax {
			bodyPool.Put(bp)
		}
		if cap(*mp) <= 64<<10 {
			clear((*mp)[:cap(*mp)])
			msgsPool.Put(mp)
		}
	}()
	body, err := readBody(w, r, (*bp)[:0], limit, budget.grow)
	*bp = body[:0]
	if err != nil {
		if errors.As(err, new(*http.MaxBytesError)) {
			err = &bodyTooLargeError{size: -1, limit: limit}
		}
		s.writeError(w, r, err)
		return
	}
	// Read whole: the append is bounded by its own timeouts, not by how
	// long the body took.
	http.NewResponseController(w).SetReadDeadline(time.Time{})
	msgs, err := decode(body, (*mp)[:0])
	*mp = msgs[:0]
	if err == nil {
		err = checkAttributes(msgs)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	v := s.vault.Load()
	if v == nil {
		s.forward(w, r, body)
		return
	}
	start := time.Now()
	res, err := v.AppendChecked(r.Context(), name, msgs, opts)
	if err != nil {
		var mismatch *stream.PositionMismatchError
		if errors.As(err, &mismatch) {
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			w.WriteHeader(http.StatusPreconditionFailed)
			json.NewEncoder(w).Encode(struct {
				Error    string `json:"Error"`
				Type     string `json:"Type"`
				Position int64  `json:"Position"`
			}{err.Error(), "position-mismatch", mismatch.Position})
			return
		}
		s.writeError(w, r, err)
		return
	}
	if res.Duplicate {
		w.Header().Set(DuplicateHeader, "true")
	}
	if !res.Duplicate {
		s.metrics.appended(len(msgs), len(body))
		s.status.published1(name, len(msgs), time.Since(start))
	}
	// The answer by hand: a batch of thousands of offsets is common.
	out := make([]byte, 0, 32+12*len(res.Offsets))
	out = append(out, `{"Position":`...)
	out = strconv.AppendInt(out, res.Position, 10)
	out = append(out, `,"Offsets":[`...)
	for i, o := range res.Offsets {
		if i > 0 {
			out = append(out, ',')
		}
		out = strconv.AppendInt(out, o, 10)
	}
	out = append(out, "]}\n"...)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Write(out)
}

// bodyChunk is the most of a body read at once; its bytes are reserved
// as they arrive.
const bodyChunk = 256 << 10

// readBody reads the request body into buf, failing with
// *http.MaxBytesError past limit, and calling reserve for the bytes as
// they arrive (its error ends the read). buf grows with what arrives, not
// with what Content-Length declares.
func readBody(w http.ResponseWriter, r *http.Request, buf []byte, limit int64, reserve func(int64) error) ([]byte, error) {
	body := http.MaxBytesReader(w, r.Body, limit)
	want := r.ContentLength // -1: unknown
	for {
		if want >= 0 && int64(len(buf)) == want {
			return buf, nil
		}
		if len(buf) == cap(buf) {
			next := max(2*cap(buf), 64<<10)
			if want >= 0 {
				next = min(next, int(want))
			}
			grown := make([]byte, len(buf), next)
			copy(grown, buf)
			buf = grown
		}
		room := buf[len(buf):cap(buf)]
		if len(room) > bodyChunk {
			room = room[:bodyChunk]
		}
		n, err := body.Read(room)
		buf = buf[:len(buf)+n]
		if n > 0 {
			if err := reserve(int64(n)); err != nil {
				return buf[:0], err
			}
		}
		if err == io.EOF {
			if want >= 0 && int64(len(buf)) < want {
				return buf[:0], fmt.Errorf("%w: reading the body: %w", errBadRequest, io.ErrUnexpectedEOF)
			}
			return buf, nil
		}
		if err != nil {
			var tooLarge *http.MaxBytesError
			if errors.As(err, &tooLarge) {
				return buf[:0], err
			}
			return buf[:0], fmt.Errorf("%w: reading the body: %w", errBadRequest, err)
		}
	}
}

// decodeTransfer decodes a v1 transfer body, with a hint when the body is
// evidently JSON sent without its Content-Type.
func decodeTransfer(body []byte, dst []messagevault.Message) ([]messagevault.Message, error) {
	msgs, err := formats.DecodeTransfer(body, dst)
	if err != nil {
		if t := bytes.TrimSpace(body); len(t) > 0 && (t[0] == '[' || t[0] == '{') {
			return msgs, fmt.Errorf("%w (the body looks like JSON: send it with Content-Type: application/json, or POST it to /streams/{stream}/messages)", err)
		}
		return msgs, fmt.Errorf("transfer body: %w", err)
	}
	return msgs, nil
}

// jsonMessage is one message of a JSON publish: a key and either a UTF-8
// text value or a base64 value.
type jsonMessage struct {
	Key         string  `json:"key"`
	Value       *string `json:"value"`
	ValueBase64 *string `json:"value_base64"`
}

// decodeJSON decodes a JSON publish: an array of messages, or one message
// object. Keys and values are copied out of the body. The array is decoded
// one message at a time, each checked as it comes, so a body of too many
// messages stops at the limit instead of being decoded whole.
func decodeJSON(body []byte, dst []messagevault.Message) ([]messagevault.Message, error) {
	if jsonFastPath {
		if out, ok := decodeJSONFast(body, dst); ok {
			return out, nil
		}
	}
	return decodeJSONFull(body, dst)
}

// jsonFastPath turns decodeJSONFast on; a benchmark turns it off to
// compare.
var jsonFastPath = true

// decodeJSONFull is decodeJSON with encoding/json, for every shape of
// body, and the errors that say what is wrong with one.
func decodeJSONFull(body []byte, dst []messagevault.Message) ([]messagevault.Message, error) {
	t := bytes.TrimSpace(body)
	if len(t) == 0 {
		return dst, badRequest(`empty body: send a JSON array of {"key": ..., "value": ...}`)
	}
	const want = `(want an array of {"key": "...", "value": "..."} or {"key": "...", "value_base64": "..."})`
	dec := json.NewDecoder(bytes.NewReader(t))
	dec.DisallowUnknownFields()
	one := func(i int) error {
		var m jsonMessage
		if err := dec.Decode(&m); err != nil {
			var te *json.UnmarshalTypeError
			if errors.As(err, &te) && (te.Field == "key" || te.Field == "value" || te.Field == "value_base64") {
				return badRequest("JSON body: message %d: %s must be a string, not a JSON %s (send a JSON document as a string, bytes as value_base64)", i, te.Field, te.Value)
			}
			return badRequest("JSON body: message %d: %v %s", i, err, want)
		}
		msg, err := m.message(i)
		if err != nil {
			return err
		}
		dst = append(dst, msg)
		return nil
	}
	if t[0] == '{' {
		if err := one(0); err != nil {
			return dst, err
		}
	} else {
		if tok, err := dec.Token(); err != nil || tok != json.Delim('[') {
			return dst, badRequest("JSON body: not an array or an object %s", want)
		}
		for i := 0; dec.More(); i++ {
			if i == messagevault.MaxBatchCount {
				return dst, badRequest("more than %d messages in one publish; the limit is %d", i, messagevault.MaxBatchCount)
			}
			if err := one(i); err != nil {
				return dst, err
			}
		}
		if _, err := dec.Token(); err != nil {
			return dst, badRequest("JSON body: %v %s", err, want)
		}
		if len(dst) == 0 {
			return dst, fmt.Errorf("%w: the array holds no message", messagevault.ErrEmptyBatch)
		}
	}
	if dec.More() {
		return dst, badRequest("JSON body: unexpected data after the first value")
	}
	if _, err := dec.Token(); err != io.EOF {
		return dst, badRequest("JSON body: unexpected data after the first value")
	}
	return dst, nil
}

// message checks one decoded JSON message (the i-th) and makes it a
// Message.
func (m jsonMessage) message(i int) (messagevault.Message, error) {
	var value []byte
	switch {
	case m.Value != nil && m.ValueBase64 != nil:
		return messagevault.Message{}, badRequest(`message %d: give "value" or "value_base64", not both`, i)
	case m.Value != nil:
		value = []byte(*m.Value)
	case m.ValueBase64 != nil:
		v, err := base64.StdEncoding.DecodeString(*m.ValueBase64)
		if err != nil {
			return messagevault.Message{}, badRequest("message %d: value_base64: %v", i, err)
		}
		value = v
	default:
		return messagevault.Message{}, badRequest(`message %d: give "value" (text) or "value_base64" (an empty value is "value": "")`, i)
	}
	msg := messagevault.NewMessage([]byte(m.Key), value, 0)
	if err := msg.Validate(); err != nil {
		return messagevault.Message{}, fmt.Errorf("message %d: %w", i, err)
	}
	return msg, nil
}

// Headers of a forwarded write.
const (
	forwardedForHeader  = "X-Messagevault-Forwarded-For"
	forwardedHeader     = "X-Messagevault-Forwarded"
	forwardedNodeHeader = "X-Messagevault-Node"
)

// forward sends a publish that this follower has authenticated, authorized
// and checked to the leader, with the cluster credential, and relays the
// answer. When the leader it knows fails it in a way that proves the
// write was not applied (no connection, or a 503 "not-leader"), it looks
// up the published leader at once and sends the write to the new one.
// With no leader known, or a leader that is unreachable, it answers 503
// with Retry-After.
func (s *Server) forward(w http.ResponseWriter, r *http.Request, body []byte) {
	if r.Header.Get(forwardedHeader) != "" {
		// A forwarded write that reaches a non-leader is not forwarded
		// again: the cluster is changing leaders; the follower that sent
		// it looks for the new leader.
		s.writeError(w, r, errNotLeaderHere)
		return
	}
	leader := s.leader()
	if leader == "" {
		leader = s.newLeader(r.Context(), "")
	}
	if leader == "" {
		s.writeError(w, r, errNoLeader)
		return
	}
	if s.cfg.ClusterSecret == "" {
		s.writeError(w, r, fmt.Errorf("%w: send them to the leader at %s", errNoForwarding, leader))
		return
	}
	resp, err := s.forwardTo(r, leader, body)
	if unapplied(resp, err) {
		if next := s.newLeader(r.Context(), leader); next != "" {
			s.log.Info("the leader failed a forwarded write; sending it to the new leader", "id", requestID(r.Context()), "was", leader, "leader", next)
			if resp != nil {
				resp.Body.Close()
			}
			leader = next
			resp, err = s.forwardTo(r, leader, body)
		}
	}
	if err != nil {
		// The client learns that the leader did not answer; the log
		// says which leader, and why.
		var unknown x509.UnknownAuthorityError
		if errors.As(err, &unknown) {
			const why = "this node does not trust the leader's TLS certificate: give every node --cluster-ca with the CA that signed it"
			s.log.Error("forwarding a write: "+why, "id", requestID(r.Context()), "leader", leader, "err", err)
			s.writeError(w, r, fmt.Errorf("%w (%s)", errLeaderSilent, why))
			return
		}
		s.log.Warn("forwarding a write: the leader did not answer", "id", requestID(r.Context()), "leader", leader, "err", err)
		s.writeError(w, r, errLeaderSilent)
		return
	}
	defer resp.Body.Close()
	s.metrics.forwarded(resp.StatusCode)
	for _, h := range []string{"Content-Type", "Retry-After", "ETag"} {
		if v := resp.Header.Get(h); v != "" {
			w.Header().Set(h, v)
		}
	}
	for k, v := range resp.Header {
		if isMessageVaultHeader(k) {
			w.Header()[k] = v
		}
	}
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
}

// forwardTo sends the request r (body: its checked body, nil for none) to
// leader with the cluster credential. A 503 answer's body is read into
// memory, so that unapplied can look at its type and it can still be
// relayed.
func (s *Server) forwardTo(r *http.Request, leader string, body []byte) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	target := strings.TrimRight(leader, "/") + r.URL.Path
	if r.URL.RawQuery != "" {
		target += "?" + r.URL.RawQuery // a trim's before=
	}
	req, err := http.NewRequestWithContext(r.Context(), r.Method, target, rd)
	if err != nil {
		return nil, fmt.Errorf("leader endpoint %q: %w", leader, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", r.Header.Get("Content-Type"))
	}
	// A cursor's compare-and-swap travels with it.
	for _, h := range []string{"If-Match", "If-None-Match"} {
		if v := r.Header.Get(h); v != "" {
			req.Header.Set(h, v)
		}
	}
	for k, v := range r.Header {
		if isMessageVaultHeader(k) {
			req.Header[k] = v
		}
	}
	req.Header.Set(forwardedHeader, "1")
	if s.cfg.Self != "" {
		req.Header.Set(forwardedNodeHeader, s.cfg.Self)
	}
	req.Header.Set("X-Request-Id", requestID(r.Context()))
	if u, ok := r.Context().Value(keyUser).(*string); ok {
		req.Header.Set(forwardedForHeader, *u)
	}
	req.SetBasicAuth(ClusterUser, s.cfg.ClusterSecret)
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusServiceUnavailable {
		b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("read the leader's answer: %w", err)
		}
		resp.Body = io.NopCloser(bytes.NewReader(b))
	}
	return resp, nil
}

// unapplied reports a forward that certainly did not reach a leader's
// storage: the connection was never made, or the node answered that it
// does not lead. Only such a write may be sent to another leader without
// risk of storing it twice.
func unapplied(resp *http.Response, err error) bool {
	if err != nil {
		var op *net.OpError
		return errors.As(err, &op) && op.Op == "dial"
	}
	if resp.StatusCode != http.StatusServiceUnavailable {
		return false
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body = io.NopCloser(bytes.NewReader(b))
	var e apiError
	return json.Unmarshal(b, &e) == nil && e.Type == typeNotLeader
}

// isMessageVaultHeader reports a MessageVault-* header (canonical form),
// which a follower passes to the leader and back unchanged.
func isMessageVaultHeader(k string) bool { return strings.HasPrefix(k, "Messagevault-") }

// handleProducer serves GET /streams/{stream}/producers/{producer}: the
// last sequence the stream applied for a producer, so that a producer
// that restarts with its id resumes numbering after it.
func (s *Server) handleProducer(w http.ResponseWriter, r *http.Request) {
	name, ok := s.streamFor(w, r, true)
	if !ok {
		return
	}
	id := r.PathValue("producer")
	if !stream.ValidProducer(id) {
		s.writeError(w, r, badRequest("%q is not a producer id (1 to %d of A-Z a-z 0-9 . _ : -)", id, stream.MaxProducerLen))
		return
	}
	v := s.vault.Load()
	if v == nil {
		s.forward(w, r, nil)
		return
	}
	pr, err := s.cfg.Storage.OpenReader(r.Context(), name)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	pr.Close()
	seq, known, err := v.LastSequence(r.Context(), name, id)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Stream   string `json:"Stream"`
		Producer string `json:"Producer"`
		Sequence uint64 `json:"Sequence"`
		Known    bool   `json:"Known"`
	}{name, id, seq, known})
}

// knownAttributes are the attribute bits of the v1 record format.
const knownAttributes = messagevault.AttrLZ4 | messagevault.AttrContinued

// checkAttributes refuses a batch that readers could not read safely: a
// record with attribute bits the format does not define, or a batch whose
// last record says its value continues in the next record (readers would
// glue the next producer's message onto it).
func checkAttributes(msgs []messagevault.Message) error {
	for i, m := range msgs {
		if m.Attributes&^knownAttributes != 0 {
			return badRequest("message %d: attributes 0x%02x have bits the format does not define (0x01 LZ4, 0x02 to be continued)", i, m.Attributes)
		}
	}
	if n := len(msgs); n > 0 && msgs[n-1].Attributes&messagevault.AttrContinued != 0 {
		return badRequest("message %d, the batch's last, is flagged to be continued: the rest of its value must be in the same batch", n-1)
	}
	return nil
}
