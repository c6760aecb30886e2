package client

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/messagevault/messagevault"
)

// Defaults of a Client.
const (
	// DefaultURL is where a server listens by default.
	DefaultURL = "http://127.0.0.1:8001"
	// DefaultMaxRetries is how often a failed publish is retried.
	DefaultMaxRetries = 8
	// DefaultRetryDelay is the first backoff; it doubles up to
	// DefaultMaxRetryDelay, with jitter.
	DefaultRetryDelay    = 100 * time.Millisecond
	DefaultMaxRetryDelay = 5 * time.Second
)

// Client talks to one MessageVault server.
type Client struct {
	url       string
	user      string
	password  string
	token     string // a bearer token, used instead of user and password
	http      *http.Client
	retries   int
	delay     time.Duration
	maxDelay  time.Duration
	compress  compression
	viaServer bool
	grants    GrantReader // opens http(s) grants; nil: read those through the server
	producers *producers
	retryFor  time.Duration // if > 0, retry for this long instead of retries times
	reached   atomic.Bool   // the server has answered a request of this client
	failFast  bool          // see WithFailFast
	// transferV1 makes publishes send v1 transfer bodies (MD5): set by
	// WithTransferV1, or once the server refused a v2 body.
	transferV1 atomic.Bool
	// transferV2OK: the server has taken a v2 body; its 400s are about
	// the batch, not the format.
	transferV2OK atomic.Bool
	// rawLimit10k: the server takes at most 10,000 records per raw read
	// (one from before raw reads were cut by bytes only).
	rawLimit10k atomic.Bool
}

// Option configures a Client.
type Option func(*Client)

// DefaultTimeout bounds each request of the default HTTP client.
const DefaultTimeout = 2 * time.Minute

// WithHTTPClient sets the HTTP client (for example, to trust a private
// CA). Default: one with a timeout of DefaultTimeout.
func WithHTTPClient(h *http.Client) Option { return func(c *Client) { c.http = h } }

// WithRetries sets how often a publish is retried (default
// DefaultMaxRetries) and the first and largest backoff (defaults
// DefaultRetryDelay and DefaultMaxRetryDelay).
func WithRetries(n int, first, largest time.Duration) Option {
	return func(c *Client) { c.retries, c.delay, c.maxDelay = n, first, largest }
}

// WithRetryFor makes a failing request (429, 5xx, connection error) be
// retried until d has passed since its first try, however many tries that
// takes, instead of a number of times; d of 0 turns retries off. The
// backoff is as WithRetries sets it. Use it to span a failover.
func WithRetryFor(d time.Duration) Option {
	return func(c *Client) {
		c.retryFor = d
		if d <= 0 {
			c.retries, c.retryFor = 0, 0
		}
	}
}

// WithFailFast makes a request fail at once, with a hint, when nothing
// listens at the server's URL (connection refused) or its host name does
// not resolve, as long as the server has not answered this client yet:
// for a command-line tool that is a wrong URL or a server not started, not
// something to wait out. Once the server has answered, such errors are a
// restart or a failover, and are retried as always. Default: off (a
// service that starts before its server waits for it).
func WithFailFast(on bool) Option { return func(c *Client) { c.failFast = on } }

// WithTransferV1 makes Publish send v1 transfer bodies, with an MD5 of the
// body, as the original MessageVault's clients do, instead of v2 bodies
// (a CRC-32C, which costs a small part of an MD5). Use it with a server
// that takes only v1, such as the original's; a server of this project
// from before v2 is detected by its refusal, and v1 used from then on.
func WithTransferV1() Option { return func(c *Client) { c.transferV1.Store(true) } }

// WithToken authenticates with a bearer token (made with CreateToken or
// "messagevault tokens create") instead of the user name and password.
func WithToken(token string) Option { return func(c *Client) { c.token = token } }

// WithCompression makes Publish compress values with LZ4 (as LZ4 frames)
// when that makes them smaller. Default: off. Readers of this package
// decompress them; consumers built on the original C# client cannot (see
// WithLZ4Stream).
func WithCompression(on bool) Option {
	return func(c *Client) {
		c.compress = compressNone
		if on {
			c.compress = compressFrame
		}
	}
}

// WithLZ4Stream makes Publish write every value in lz4net's LZ4Stream
// format with the LZ4 attribute, as the original MessageVault's C# client
// does. Use it when consumers built on that client read the stream: they
// decompress every value they read that way, so they can read nothing
// else. Every value is compressed, even one that does not get smaller
// (by a few bytes per MiB at most). Readers of this package decompress
// both formats. It replaces WithCompression; off turns compression off.
func WithLZ4Stream(on bool) Option {
	return func(c *Client) {
		c.compress = compressNone
		if on {
			c.compress = compressStream
		}
	}
}

// GrantReader opens the storage behind a read grant that names a remote
// store by an http or https URL: an Azure container SAS. The azure package
// has one, azure.GrantReader, kept out of this package so that a client
// that does not read Azure directly does not build the Azure SDK in.
type GrantReader interface {
	// OpenGrant opens the stream behind grant; renew, if set, returns a
	// new grant when this one expires.
	OpenGrant(ctx context.Context, grant string, renew func(context.Context) (string, error)) (messagevault.PageReader, error)
}

// WithGrantReader makes readers open http and https grants with g (for
// Azure: client.WithGrantReader(azure.GrantReader{})). Without one, a
// reader handed such a grant reads through the server's read route
// (Reader.ViaServer). file:// grants need nothing.
func WithGrantReader(g GrantReader) Option { return func(c *Client) { c.grants = g } }

// WithServerReads makes readers read through the server instead of
// storage, for consumers that cannot reach storage. Default: storage first,
// the server when storage cannot be reached.
func WithServerReads() Option { return func(c *Client) { c.viaServer = true } }

// New returns a client of the server at serverURL (DefaultURL if empty)
// that authenticates as user with password.
func New(serverURL, user, password string, opts ...Option) *Client {
	if serverURL == "" {
		serverURL = DefaultURL
	}
	c := &Client{
		url: strings.TrimRight(serverURL, "/"), user: user, password: password,
		http:    &http.Client{Timeout: DefaultTimeout},
		retries: DefaultMaxRetries, delay: DefaultRetryDelay, maxDelay: DefaultMaxRetryDelay,
	}
	for _, o := range opts {
		o(c)
	}
	if c.producers == nil {
		c.producers = newProducers("", 0)
	}
	return c
}

// URL returns the server's URL.
func (c *Client) URL() string { return c.url }

// Error is an error answer of the server.
type Error struct {
	// Status is the HTTP status code.
	Status int
	// Type and Message are the server's "Type" and "Error".
	Type    string
	Message string
	// Position is the stream's position when a conditional publish
	// (ExpectPosition) was refused with 412.
	Position int64
	// Start is where a trimmed stream now starts, when a read below it
	// was refused with 410.
	Start int64
	// MaxBody is the server's largest publish body in bytes, when a
	// publish was refused with 413 (see IsTooLarge).
	MaxBody int64
}

// Unwrap makes a 410 answer (a read below a trimmed stream's start)
// errors.Is messagevault.ErrTrimmed, as the same read from storage is.
func (e *Error) Unwrap() error {
	if e.Status == http.StatusGone {
		return messagevault.ErrTrimmed
	}
	return nil
}

func (e *Error) Error() string {
	return fmt.Sprintf("server answered %d %s: %s", e.Status, e.Type, e.Message)
}

// Retryable reports whether the same request may succeed later: 429 and
// 5xx, but not the permanent ones (501 not implemented, 500 corrupt
// stream), which a retry would only repeat.
func (e *Error) Retryable() bool {
	if e.Status == http.StatusNotImplemented || e.Status == http.StatusInternalServerError && e.Type == "corrupt" {
		return false
	}
	return e.Status == http.StatusTooManyRequests || e.Status >= 500
}

// do sends one request and decodes a JSON answer into out.
func (c *Client) do(ctx context.Context, method, path string, body []byte, contentType string, out any) (http.Header, error) {
	return c.doWith(ctx, method, path, body, contentType, nil, out)
}

// doWith is do with extra request headers.
func (c *Client) doWith(ctx context.Context, method, path string, body []byte, contentType string, hdr http.Header, out any) (http.Header, error) {
	ctx, cancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(ctx, method, c.url+path, nil)
	if err != nil {
		cancel()
		return nil, err
	}
	if body != nil {
		// The transport may still be sending the body after Do returns
		// (a server that answers 413 or 429 before reading it): body, a
		// pooled buffer in Publish, must not be reused before the
		// transport has closed it.
		b := newSentBody(body)
		req.Body, req.ContentLength = b, int64(len(body))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
		defer b.wait()
	}
	// Runs before wait: a body still being sent once the answer is read
	// (the server answered early and neither reads nor closes) is cut
	// off with its connection, so wait cannot hang.
	defer cancel()
	for k, v := range hdr {
		req.Header[k] = v
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	} else if c.user != "" {
		req.SetBasicAuth(c.user, c.password)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		if hint := c.hopeless(err); hint != "" && ctx.Err() == nil {
			return nil, &hopelessError{err: err, hint: hint}
		}
		return nil, err
	}
	c.reached.Store(true)
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error, Type              string
			Position, Start, MaxBody int64
		}
		if json.Unmarshal(data, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(data))
		}
		return resp.Header, &Error{Status: resp.StatusCode, Type: e.Type, Message: e.Error, Position: e.Position, Start: e.Start, MaxBody: e.MaxBody}
	}
	if out != nil {
		if raw, ok := out.(*[]byte); ok {
			*raw = data
		} else if pa, ok := out.(*publishAnswer); ok && pa.fast(data) {
			// the usual publish answer, parsed without reflection
		} else if err := json.Unmarshal(data, out); err != nil {
			return nil, fmt.Errorf("%s %s: unexpected answer: %w", method, path, err)
		}
	}
	return resp.Header, nil
}

// sentBody is a request body that tells when the transport is done with
// it.
type sentBody struct {
	*bytes.Reader
	once   sync.Once
	closed chan struct{}
}

func newSentBody(b []byte) *sentBody {
	return &sentBody{Reader: bytes.NewReader(b), closed: make(chan struct{})}
}

// Close is called by the transport once it no longer reads the body.
func (b *sentBody) Close() error {
	b.once.Do(func() { close(b.closed) })
	return nil
}

// wait returns once the transport has closed the body, which it always
// does (net/http: RoundTrip must close the body, even on errors), at the
// latest when the connection fails or is closed.
func (b *sentBody) wait() { <-b.closed }

// retry runs op until it succeeds, fails for good, or ctx ends.
func (c *Client) retry(ctx context.Context, op func() error) error {
	delay := c.delay
	start := time.Now()
	for attempt := 0; ; attempt++ {
		err := op()
		if err == nil || !retryable(err) || ctx.Err() != nil {
			return err
		}
		if c.retryFor > 0 && time.Since(start)+delay/2 > c.retryFor || c.retryFor == 0 && attempt >= c.retries {
			return err
		}
		sleep := delay/2 + time.Duration(rand.Int64N(int64(delay)))
		t := time.NewTimer(sleep)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
		delay = min(delay*2, c.maxDelay)
	}
}

// hopeless returns, for a connection error that retrying will not fix, a
// hint for the user; "" for any other error. A certificate that is not
// trusted, or a plain-HTTP answer to HTTPS, stays so. With WithFailFast,
// nothing listening at the URL, or a host name that does not resolve, is
// taken as the user's mistake until the server has answered once: after
// that it is a server restarting or failing over, and worth retrying.
func (c *Client) hopeless(err error) string {
	var ue *url.Error
	if !errors.As(err, &ue) {
		return ""
	}
	var cert *tls.CertificateVerificationError
	var header tls.RecordHeaderError
	var dns *net.DNSError
	switch {
	case errors.As(err, &cert), errors.As(err, new(x509.UnknownAuthorityError)), errors.As(err, new(x509.HostnameError)), errors.As(err, new(x509.CertificateInvalidError)):
		return "the server's certificate is not trusted for this host name: trust its CA (the CLI's --cacert), or check the URL"
	case errors.As(err, &header):
		return "the server does not speak TLS: use an http:// URL"
	case !c.failFast || c.reached.Load():
		return ""
	case errors.Is(err, syscall.ECONNREFUSED):
		return "is the server running at " + c.url + "?"
	case errors.As(err, &dns) && dns.IsNotFound:
		return "no such host: check the URL " + c.url
	}
	return ""
}

// hopelessError is a connection error that retrying will not fix, with
// a hint for the user.
type hopelessError struct {
	err  error
	hint string
}

func (e *hopelessError) Error() string { return e.err.Error() + " (" + e.hint + ")" }
func (e *hopelessError) Unwrap() error { return e.err }

func retryable(err error) bool {
	var e *Error
	if errors.As(err, &e) {
		return e.Retryable()
	}
	if errors.As(err, new(*hopelessError)) {
		return false
	}
	var ue *url.Error
	return errors.As(err, &ue) && !errors.Is(err, context.Canceled) // connection refused, reset, timeout
}

// StreamInfo is one stream of the listing.
type StreamInfo struct {
	Name string
	// Position is the stream's length.
	Position int64
	// Start is its first stored position (0 until trimmed).
	Start int64
}

// Streams lists the streams the user may read.
func (c *Client) Streams(ctx context.Context) ([]StreamInfo, error) {
	var ans struct{ Streams []StreamInfo }
	if _, err := c.do(ctx, http.MethodGet, "/streams", nil, "", &ans); err != nil {
		return nil, fmt.Errorf("list streams: %w", err)
	}
	return ans.Streams, nil
}

// Grant returns a read grant for stream: a URL from which it can be read
// without the server.
func (c *Client) Grant(ctx context.Context, stream string) (string, error) {
	var ans struct{ Signature string }
	if _, err := c.do(ctx, http.MethodGet, "/streams/"+url.PathEscape(stream), nil, "", &ans); err != nil {
		return "", fmt.Errorf("read grant for %q: %w", stream, err)
	}
	return ans.Signature, nil
}

// RevokeGrants makes every read grant of stream handed out so far stop
// working (the user needs all:write). Readers of this library renew their
// grant and go on; others must ask for a new one.
func (c *Client) RevokeGrants(ctx context.Context, stream string) error {
	if _, err := c.do(ctx, http.MethodDelete, "/streams/"+url.PathEscape(stream)+"/grants", nil, "", nil); err != nil {
		return fmt.Errorf("revoke the grants of %q: %w", stream, err)
	}
	return nil
}

// DeleteStream removes stream and all its data (the user needs
// all:write). It is an Error with status 404 if there is no such stream.
func (c *Client) DeleteStream(ctx context.Context, stream string) error {
	if _, err := c.do(ctx, http.MethodDelete, "/streams/"+url.PathEscape(stream), nil, "", nil); err != nil {
		return fmt.Errorf("delete %q: %w", stream, err)
	}
	return nil
}

// Trim removes the stream's whole segments that end at or before
// position before (never the active one) and returns the stream's first
// stored position after it. It needs a trim claim on the stream (or
// all:write).
func (c *Client) Trim(ctx context.Context, stream string, before int64) (int64, error) {
	var ans struct{ Start int64 }
	if _, err := c.do(ctx, http.MethodDelete, fmt.Sprintf("/streams/%s/messages?before=%d", url.PathEscape(stream), before), nil, "", &ans); err != nil {
		return 0, fmt.Errorf("trim %q before %d: %w", stream, before, err)
	}
	return ans.Start, nil
}

// rawAnswer is a raw read through the server: the records' bytes, the
// position after them, the stream's position and its first stored
// position.
type rawAnswer struct {
	data             []byte
	next, pos, start int64
}

// Raw read batches: as many records as the server's byte limit allows
// (8 MiB), or 10,000 from a server that takes no more.
const (
	rawBatchLimit    = 1 << 20
	rawBatchLimitOld = 10000
)

// rawBatch reads up to limit records (at most rawBatchLimit) from
// position from through the server.
func (c *Client) rawBatch(ctx context.Context, stream string, from int64, limit int) (rawAnswer, error) {
	limit = min(limit, rawBatchLimit)
	if limit <= rawBatchLimitOld {
		return c.rawRecords(ctx, stream, from, limit, 0)
	}
	if !c.rawLimit10k.Load() {
		a, err := c.rawRecords(ctx, stream, from, limit, 0)
		var e *Error
		if !errors.As(err, &e) || e.Status != http.StatusBadRequest || !strings.Contains(e.Message, "limit=") {
			return a, err
		}
		c.rawLimit10k.Store(true)
	}
	return c.rawRecords(ctx, stream, from, rawBatchLimitOld, 0)
}

// rawRecords reads up to limit records from position from (the stream's
// Start if from is negative) through the server, with an optional
// long-poll wait.
func (c *Client) rawRecords(ctx context.Context, stream string, from int64, limit int, wait time.Duration) (rawAnswer, error) {
	path := fmt.Sprintf("/streams/%s/messages?format=raw&limit=%d", url.PathEscape(stream), limit)
	if from >= 0 {
		path += fmt.Sprintf("&from=%d", from)
	}
	if wait > 0 {
		path += fmt.Sprintf("&wait=%.3f", wait.Seconds())
	}
	var a rawAnswer
	h, err := c.do(ctx, http.MethodGet, path, nil, "", &a.data)
	var e *Error
	if errors.As(err, &e) && e.Status == http.StatusNotFound {
		// The read route's only 404: as from storage.
		return rawAnswer{}, fmt.Errorf("%w: %w", messagevault.ErrStreamNotFound, err)
	}
	if err != nil {
		return rawAnswer{}, err
	}
	for _, f := range []struct {
		header   string
		to       *int64
		optional bool
	}{{"X-Messagevault-Next", &a.next, false}, {"X-Messagevault-Position", &a.pos, false}, {"X-Messagevault-Start", &a.start, true}} {
		if f.optional && h.Get(f.header) == "" {
			continue // a server from before trimming: the stream starts at 0
		}
		if *f.to, err = strconv.ParseInt(h.Get(f.header), 10, 64); err != nil {
			return rawAnswer{}, fmt.Errorf("read %q through the server: the answer has no valid %s header (%q)", stream, f.header, h.Get(f.header))
		}
	}
	return a, nil
}
