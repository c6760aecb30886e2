// Package kafka is MessageVault's Kafka-protocol gateway: a listener that
// speaks Kafka's wire protocol, so that any Kafka client can produce to
// and consume from MessageVault's streams. A topic is a stream with one
// partition, 0; a record's Kafka offset is its MessageVault offset, its
// byte position in the stream. Clients sign in with SASL/PLAIN as
// MessageVault users, and their claims apply. The requests and responses
// are encoded and decoded by franz-go's kmsg, generated from Kafka's own
// message schemas; this package frames them, pipelines a connection's
// produce requests, and maps them onto the vault: produce (every codec,
// idempotent producers) in produce.go and producers.go, fetch and offsets
// by time in fetch.go, the consumer-group coordinator in groups.go with
// its offsets as cursors in offsets.go, topics in topics.go. docs/KAFKA.md
// is the user's account of it.
package kafka

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
	"golang.org/x/sync/semaphore"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/auth"
	"github.com/messagevault/messagevault/vault"
)

// Limits of a connection.
const (
	// MaxRequestBytes bounds one request's size.
	MaxRequestBytes = 64 << 20
	// MaxSignInBytes bounds a request's size before SASL succeeds.
	MaxSignInBytes = 64 << 10
	// IdleTimeout closes a connection that sends nothing for this long
	// (Kafka's connections.max.idle.ms is 10 minutes too).
	IdleTimeout = 10 * time.Minute
)

// Config sets up a Server.
type Config struct {
	// Vault returns the vault of the streams while this node leads, and
	// nil otherwise (a produce then answers NOT_LEADER_OR_FOLLOWER).
	Vault func() *vault.Vault
	// Storage is read by fetches on a node that does not lead (whose
	// Vault is nil).
	Storage messagevault.Storage
	// Users checks SASL/PLAIN credentials and gives the claims.
	Users *auth.Users
	// Throttle slows down password guessing: share the HTTP server's, so
	// that failures on either listener count for both. Default: a new
	// one.
	Throttle *auth.Throttle
	// Advertise is the host and port this listener is reached at, given
	// to clients as the only broker's address. Default: the listening
	// address.
	Advertise string
	// DropHeaders drops the headers of produced records, which
	// MessageVault's records cannot hold, instead of refusing the
	// records; Registry's messagevault_kafka_headers_dropped_total counts
	// the records whose headers were dropped.
	DropHeaders bool
	// Registry, if set, takes the gateway's metrics.
	Registry prometheus.Registerer
	// Logger logs connections' errors. Default: slog.Default().
	Logger *slog.Logger
}

// Server serves the Kafka protocol on one listener.
type Server struct {
	cfg  Config
	ln   net.Listener
	host string
	port int32

	seqs           sequences
	groups         coordinator
	headersDropped prometheus.Counter

	// ctx ends at Close: appends not yet taken are dropped. waitCtx ends
	// at Shutdown (or Close): requests that wait for news (fetches,
	// group joins) answer at once.
	ctx        context.Context
	cancel     context.CancelFunc
	waitCtx    context.Context
	cancelWait context.CancelFunc
	connWG     sync.WaitGroup // of the connections

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// New returns a Server that will serve on ln (see Serve).
func New(ln net.Listener, cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Throttle == nil {
		cfg.Throttle = auth.NewThrottle()
	}
	adv := cfg.Advertise
	if adv == "" {
		adv = ln.Addr().String()
	}
	host, port, err := net.SplitHostPort(adv)
	if err != nil {
		return nil, fmt.Errorf("kafka: advertised address %q: %w", adv, err)
	}
	p, err := strconv.ParseInt(port, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("kafka: advertised address %q: port: %w", adv, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	waitCtx, cancelWait := context.WithCancel(ctx)
	s := &Server{cfg: cfg, ln: ln, host: host, port: int32(p), ctx: ctx, cancel: cancel, waitCtx: waitCtx, cancelWait: cancelWait, conns: map[net.Conn]struct{}{}}
	if cfg.Registry != nil {
		s.headersDropped = prometheus.NewCounter(prometheus.CounterOpts{
			Name: "messagevault_kafka_headers_dropped_total",
			Help: "Records produced through the Kafka gateway whose headers were dropped (serve --kafka-drop-headers).",
		})
		if err := cfg.Registry.Register(s.headersDropped); err != nil {
			cancel()
			return nil, fmt.Errorf("kafka: register metrics: %w", err)
		}
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.groups.run(ctx)
	}()
	return s, nil
}

// Serve accepts connections until Close.
func (s *Server) Serve() error {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return nil
			}
			return fmt.Errorf("kafka: accept: %w", err)
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return nil
		}
		s.conns[c] = struct{}{}
		s.connWG.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.connWG.Done()
			s.serveConn(c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

// Shutdown stops accepting and reading requests, and lets the requests
// read finish and be answered (their appends become durable), until ctx
// ends; requests that wait for news (fetches, group joins) answer at
// once. Close must follow.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	s.cancelWait()
	err := s.ln.Close()
	for c := range s.conns {
		c.SetReadDeadline(time.Now()) // the reader stops; the answers in flight are still written
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		s.connWG.Wait()
		close(done)
	}()
	select {
	case <-done:
		return err
	case <-ctx.Done():
		return errors.Join(err, fmt.Errorf("kafka: shutdown: %w", ctx.Err()))
	}
}

// Close stops accepting, closes every connection and waits for their
// requests to end.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closed = true
	s.cancel()
	err := s.ln.Close()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.connWG.Wait()
	s.wg.Wait()
	return err
}

// conn is one client connection's state.
type conn struct {
	s        *Server
	c        net.Conn
	user     *auth.Principal     // nil until SASL succeeds
	mech     string              // the mechanism SaslHandshake chose
	rawSASL  bool                // SaslHandshake v0: the next frame is the bare PLAIN token
	clientID string              // of the request being served
	inflight *semaphore.Weighted // bytes of requests read and not yet answered
}

func (s *Server) serveConn(c net.Conn) {
	defer c.Close()
	defer s.recoverConn(c)
	cc := &conn{s: s, c: c}
	r := bufio.NewReaderSize(c, 64<<10)
	// Answers go out in the order of the requests, from their own
	// goroutine: a produce is answered once durable, and meanwhile the
	// next requests are read (see pipelined).
	replies := make(chan *reply, maxInFlight)
	inflight := semaphore.NewWeighted(MaxRequestBytes)
	cc.inflight = inflight
	written := make(chan struct{})
	go func() {
		defer close(written)
		s.writeReplies(c, replies, inflight)
	}()
	defer func() {
		close(replies)
		<-written
	}()
	for {
		limit := MaxSignInBytes
		if cc.user != nil {
			limit = MaxRequestBytes
		}
		c.SetReadDeadline(time.Now().Add(IdleTimeout))
		least := 8 // a request header
		if cc.rawSASL {
			least = 1
		}
		n, err := readSize(r, least, limit)
		if err == nil {
			if err = inflight.Acquire(s.ctx, int64(n)); err == nil {
				var frame []byte
				if frame, err = readBody(r, n); err == nil {
					if cc.rawSASL {
						err = cc.serveRawSASL(frame, replies)
					} else {
						err = cc.serveRequest(frame, replies)
					}
				}
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !errors.Is(err, context.Canceled) && s.waitCtx.Err() == nil {
				s.cfg.Logger.Info("kafka: connection closed", "remote", c.RemoteAddr().String(), "err", err)
			}
			return
		}
	}
}

// writeTimeout bounds the writing of one answer: a client that stops
// reading loses its connection.
const writeTimeout = time.Minute

// maxInFlight bounds the requests of a connection read before their
// answers are written (Kafka clients send at most 5 at once by default);
// their bytes are bounded by MaxRequestBytes.
const maxInFlight = 8

// reply is the answer to one request, ready once done is closed; a nil
// resp sends nothing (acks=0), unless raw: then an empty frame goes (the
// answer to a bare SASL token).
type reply struct {
	h    header
	resp kmsg.Response
	raw  bool
	size int // of the request, released from the in-flight bytes once answered
	done chan struct{}
}

// recoverConn turns a panic while serving c into the loss of c alone.
func (s *Server) recoverConn(c net.Conn) {
	if p := recover(); p != nil {
		s.cfg.Logger.Error("kafka: panic serving a connection, closed it", "remote", c.RemoteAddr().String(), "panic", fmt.Sprint(p))
		c.Close()
	}
}

// writeReplies writes each reply once it is ready, in order. After a
// failed (or panicking) write it closes the connection, and only waits
// for the rest, so that the reader never blocks on a full queue.
func (s *Server) writeReplies(c net.Conn, replies <-chan *reply, inflight *semaphore.Weighted) {
	w := bufio.NewWriterSize(c, 64<<10)
	failed := false
	for rp := range replies {
		<-rp.done
		if (rp.resp != nil || rp.raw) && !failed {
			failed = !s.writeReply(c, w, rp)
		}
		inflight.Release(int64(rp.size))
	}
}

// writeReply writes one reply; false, with the connection closed, if it
// could not.
func (s *Server) writeReply(c net.Conn, w *bufio.Writer, rp *reply) (ok bool) {
	defer func() {
		if p := recover(); p != nil {
			s.cfg.Logger.Error("kafka: panic writing an answer, closed the connection", "remote", c.RemoteAddr().String(), "panic", fmt.Sprint(p))
			c.Close()
			ok = false
		}
	}()
	c.SetWriteDeadline(time.Now().Add(writeTimeout))
	var err error
	if rp.raw {
		if _, err = w.Write([]byte{0, 0, 0, 0}); err == nil {
			err = w.Flush()
		}
	} else {
		err = writeResponse(w, rp.h, rp.resp)
	}
	if err != nil {
		c.Close()
		return false
	}
	return true
}

// serveRawSASL signs in with the bare PLAIN token that follows a
// SaslHandshake of version 0, and answers an empty frame; a failure
// closes the connection, as Kafka does.
func (cc *conn) serveRawSASL(token []byte, replies chan<- *reply) error {
	cc.rawSASL = false
	if msg := cc.signIn(token); msg != "" {
		return fmt.Errorf("SASL/PLAIN after a version 0 handshake: %s", msg)
	}
	rp := &reply{raw: true, size: len(token), done: make(chan struct{})}
	close(rp.done)
	replies <- rp
	return nil
}

// serveRequest decodes and serves one request, and queues its reply; an
// error closes the connection.
func (cc *conn) serveRequest(frame []byte, replies chan<- *reply) error {
	s := cc.s
	h, body, err := parseHeader(frame)
	if err != nil {
		return fmt.Errorf("bad request: %w", err)
	}
	rp := &reply{h: h, size: len(frame), done: make(chan struct{})}
	req := h.req
	if v := supported[kmsg.ApiVersions]; h.key == kmsg.ApiVersions.Int16() && h.version > v[1] {
		// A client newer than this listener: answer in version 0
		// with UNSUPPORTED_VERSION and the versions served, and it
		// asks again in one of them.
		resp := cc.apiVersions()
		resp.ErrorCode = kerr.UnsupportedVersion.Code
		rp.h.version = 0
		resp.SetVersion(0)
		rp.resp = resp
		close(rp.done)
		replies <- rp
		return nil
	}
	if err := req.ReadFrom(body); err != nil {
		return fmt.Errorf("%s v%d that does not decode: %w", kmsg.NameForKey(h.key), h.version, err)
	}
	cc.clientID = h.clientID
	if p, ok := req.(*kmsg.ProduceRequest); ok && cc.user != nil && p.Acks != 0 && cc.supports(req) {
		cc.pipelined(p, rp)
		replies <- rp
		return nil
	}
	ctx := s.waitCtx // a wait for news ends at Shutdown
	if _, ok := req.(*kmsg.ProduceRequest); ok {
		ctx = s.ctx // an append ends at Close only
	}
	resp, err := cc.handle(ctx, req)
	if err != nil {
		return fmt.Errorf("%s: %w", kmsg.NameForKey(h.key), err)
	}
	if resp != nil {
		resp.SetVersion(h.version)
	}
	rp.resp = resp
	close(rp.done)
	replies <- rp
	return nil
}

// readSize reads the size of the next request, least to limit bytes.
func readSize(r *bufio.Reader, least, limit int) (int, error) {
	var size [4]byte
	if _, err := io.ReadFull(r, size[:]); err != nil {
		return 0, err
	}
	n := int32(binary.BigEndian.Uint32(size[:]))
	if n < int32(least) || int(n) > limit {
		return 0, fmt.Errorf("request of %d bytes: want %d to %d", n, least, limit)
	}
	return int(n), nil
}

// readBody reads a request of n bytes.
func readBody(r *bufio.Reader, n int) ([]byte, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, err
	}
	return b, nil
}

// header is a request's header.
type header struct {
	key, version int16
	correlation  int32
	clientID     string
	req          kmsg.Request
}

// parseHeader reads a request header (v1, or v2 for flexible requests)
// and returns it with the request body.
func parseHeader(b []byte) (header, []byte, error) {
	var h header
	h.key = int16(binary.BigEndian.Uint16(b))
	h.version = int16(binary.BigEndian.Uint16(b[2:]))
	h.correlation = int32(binary.BigEndian.Uint32(b[4:]))
	b = b[8:]
	h.req = kmsg.RequestForKey(h.key)
	if h.req == nil {
		return h, nil, fmt.Errorf("unknown API key %d", h.key)
	}
	if h.version < 0 {
		return h, nil, fmt.Errorf("%s version %d", kmsg.NameForKey(h.key), h.version)
	}
	if v, ok := supported[kmsg.Key(h.key)]; !ok || h.version > v[1] && h.key != kmsg.ApiVersions.Int16() {
		return h, nil, fmt.Errorf("%s version %d: not served", kmsg.NameForKey(h.key), h.version)
	}
	h.req.SetVersion(h.version)
	if len(b) < 2 {
		return h, nil, errors.New("short header")
	}
	n := int16(binary.BigEndian.Uint16(b))
	b = b[2:]
	if n > 0 {
		if int(n) > len(b) {
			return h, nil, errors.New("short client id")
		}
		h.clientID = string(b[:n])
		b = b[n:]
	}
	if h.req.IsFlexible() {
		// Header tagged fields: a count, then (tag, size, bytes) each.
		count, k := binary.Uvarint(b)
		if k <= 0 {
			return h, nil, errors.New("bad header tags")
		}
		b = b[k:]
		for range count {
			_, k := binary.Uvarint(b)
			if k <= 0 {
				return h, nil, errors.New("bad header tag")
			}
			b = b[k:]
			size, k := binary.Uvarint(b)
			if k <= 0 || uint64(len(b)-k) < size {
				return h, nil, errors.New("bad header tag")
			}
			b = b[k+int(size):]
		}
	}
	return h, b, nil
}

// writeResponse frames resp for h: size, correlation id, the response
// header's tagged fields when flexible (ApiVersions always answers with
// header v0), then the body.
func writeResponse(w *bufio.Writer, h header, resp kmsg.Response) error {
	buf := make([]byte, 4, 256) // the size, set below
	buf = binary.BigEndian.AppendUint32(buf, uint32(h.correlation))
	if resp.IsFlexible() && h.key != kmsg.ApiVersions.Int16() {
		buf = append(buf, 0) // no tagged fields
	}
	buf = resp.AppendTo(buf)
	binary.BigEndian.PutUint32(buf, uint32(len(buf)-4))
	if _, err := w.Write(buf); err != nil {
		return err
	}
	return w.Flush()
}

// timeout is the deadline of one produce's appends.
const timeout = time.Minute
