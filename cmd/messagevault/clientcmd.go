package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/azure"
	"github.com/messagevault/messagevault/client"
	"github.com/messagevault/messagevault/formats"
	"github.com/messagevault/messagevault/server"
)

// Environment variables of the client commands.
const (
	URLEnv      = "MESSAGEVAULT_URL"
	UserEnv     = "MESSAGEVAULT_USER"
	PasswordEnv = "MESSAGEVAULT_PASSWORD"
	// TokenEnv holds a bearer token, used instead of a user and password.
	TokenEnv = "MESSAGEVAULT_TOKEN"
	// CACertEnv names a PEM file of CA certificates to trust (--cacert).
	CACertEnv = "MESSAGEVAULT_CACERT"
)

// conn holds the server flags shared by the client commands.
type conn struct {
	url, user, password string
	retryFor            time.Duration
	caCert              string
	insecure            bool
	tls                 *tls.Config // from --cacert or --insecure; nil: the system's
}

// DefaultRetryFor is how long the CLI keeps retrying a request that fails
// with 429, 5xx or a connection error: several times a failover (about 3 s
// on Azure, 15 s at worst when heartbeats cannot be written).
const DefaultRetryFor = 60 * time.Second

func (c *conn) flags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&c.url, "url", envOr(URLEnv, client.DefaultURL), "server URL (env "+URLEnv+")")
	if f.Lookup("user") == nil { // tokens create --user names the token's user
		f.StringVar(&c.user, "user", os.Getenv(UserEnv), "user name (env "+UserEnv+")")
	}
	// The password's default is not shown in --help: it would print the
	// environment's secret. It is read from the environment when used.
	f.StringVar(&c.password, "password", "", "password (default $"+PasswordEnv+", which is better: a flag shows in the process list)")
	f.DurationVar(&c.retryFor, "retry-for", DefaultRetryFor, "keep retrying a request that fails with 429, 5xx or a connection error for this long (0: do not retry); a refused connection before the server has answered once fails at once")
	f.StringVar(&c.caCert, "cacert", os.Getenv(CACertEnv), "PEM file of CA certificates to trust besides the system's, for a server with a private certificate (env "+CACertEnv+")")
	f.BoolVar(&c.insecure, "insecure", false, "do not verify the server's TLS certificate (DANGEROUS: anyone on the path can read and change the traffic; for tests only)")
	// A malformed --url or --cacert is a usage error at once, not a
	// connection error retried for --retry-for.
	cmd.PreRunE = func(*cobra.Command, []string) error {
		if err := c.checkURL(); err != nil {
			return err
		}
		return c.loadTLS()
	}
}

// loadTLS builds the TLS settings of --cacert and --insecure.
func (c *conn) loadTLS() error {
	if c.insecure {
		fmt.Fprintln(os.Stderr, "messagevault: WARNING: --insecure: the server's certificate is not checked; anyone on the network path can read and change this traffic")
		c.tls = &tls.Config{InsecureSkipVerify: true}
		return nil
	}
	if c.caCert == "" {
		return nil
	}
	pem, err := os.ReadFile(c.caCert)
	if err != nil {
		return usageError("--cacert: %v", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return usageError("--cacert %s: no PEM certificate in it", c.caCert)
	}
	c.tls = &tls.Config{RootCAs: pool}
	return nil
}

// checkURL reports a --url that is not an http:// or https:// URL with a
// host.
func (c *conn) checkURL() error {
	u, err := url.Parse(c.url)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usageError("--url %q is not a server URL: give http://host:port or https://host:port", c.url)
	}
	return nil
}

func (c *conn) client(opts ...client.Option) *client.Client {
	password, user := c.password, c.user
	if password == "" {
		password = os.Getenv(PasswordEnv)
	}
	if user == "" {
		user = os.Getenv(UserEnv)
	}
	if token := os.Getenv(TokenEnv); token != "" && c.password == "" {
		opts = append(opts, client.WithToken(token))
	}
	base := []client.Option{client.WithRetryFor(c.retryFor), client.WithGrantReader(azure.GrantReader{}), client.WithFailFast(true)}
	if c.tls != nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = c.tls
		base = append(base, client.WithHTTPClient(&http.Client{Timeout: client.DefaultTimeout, Transport: tr}))
	}
	return client.New(c.url, user, password, append(base, opts...)...)
}

// count says n things: "1 message", "2 messages". forms are the singular
// and, if adding "s" or "es" does not make the plural, the plural.
func count[N int | int64](n N, forms ...string) string {
	one, many := forms[0], forms[0]+"s"
	switch {
	case len(forms) > 1:
		many = forms[1]
	case strings.HasSuffix(one, "ch"), strings.HasSuffix(one, "sh"), strings.HasSuffix(one, "s"):
		many = one + "es"
	}
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// progress returns a progress callback drawing a bar on stderr when it is
// a terminal, and nil (no bar) in pipes.
func progress(stderr io.Writer, what string) (func(done, total int64), func()) {
	f, ok := stderr.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return nil, func() {}
	}
	var bar *progressbar.ProgressBar
	var base int64 // done at the first update: a resumed run's bar (and rate) counts from there
	update := func(done, total int64) {
		if bar == nil {
			base = done
			if done > 0 {
				what += fmt.Sprintf(" (resumed at %d)", done)
			}
			bar = progressbar.NewOptions64(total-base, progressbar.OptionSetWriter(f), progressbar.OptionSetDescription(what),
				progressbar.OptionShowBytes(true), progressbar.OptionThrottle(100*time.Millisecond), progressbar.OptionClearOnFinish())
		}
		bar.ChangeMax64(total - base)
		bar.Set64(done - base)
	}
	return update, func() {
		if bar != nil {
			bar.Finish()
		}
	}
}

// PublishCommand publishes messages.
type PublishCommand struct {
	conn
	stdout, stderr io.Writer
	stdin          io.Reader
	key            string
	lines          bool
	files          []string
	lz4            bool
	lz4Stream      bool
	maxBody        int64 // the server's body limit as far as known
	batch          int
	linger         time.Duration
	producer       string
	expect         int64
}

// Command returns the cobra command.
func (c *PublishCommand) Command() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "publish STREAM [VALUE...]",
		Short: "Publish messages to a stream",
		Long: `Publish messages: each VALUE argument is one message; with --stdin each line
of standard input is one; with --file each file is one. Values over 64 KiB
are split into records and reassembled by readers; a message must fit in one
publish body (the server's limit, serve --max-body, 32 MiB by default).
Messages go out in batches of at most --batch messages whose bodies fit that
limit; a server with a smaller limit says so, and the batches are cut again.

With --stdin, lines go out every --batch lines or --linger after the first
unsent line, whichever comes first, so a quiet "tail -f" is published as it
comes. End of input, Ctrl-C (SIGINT) and SIGTERM send what is held before
exiting; if a publish finally fails, the error says how many lines were not
stored.

Every batch carries a producer id and sequence number, so a retried batch is
stored once. --producer names the producer (it then resumes its numbering
from the server); --expect-position publishes only if the stream's position
is exactly N (exit 1 with the current position otherwise).

--lz4 compresses values as LZ4 frames, when that makes them smaller. Use
--lz4-stream instead when consumers built on the original C# MessageVault
client read the stream: it writes every value in lz4net's LZ4Stream format,
the only one those consumers read. This CLI and the Go client read both.`,
		Example: `  messagevault publish orders '{"id": 1}' '{"id": 2}' --key order-placed
  tail -f app.log | messagevault publish logs --stdin
  messagevault publish blobs --file big.bin --lz4
  messagevault publish orders '{"id": 3}' --lz4-stream    # for C# consumers`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error { return c.Run(cmd.Context(), args[0], args[1:]) },
	}
	c.flags(cmd)
	f := cmd.Flags()
	f.StringVar(&c.key, "key", "", "key of every message (usually its type)")
	f.BoolVar(&c.lines, "stdin", false, "publish each line of standard input")
	f.StringArrayVar(&c.files, "file", nil, "publish the content of a file (repeatable)")
	f.BoolVar(&c.lz4, "lz4", false, "compress values with LZ4 when it makes them smaller")
	f.BoolVar(&c.lz4Stream, "lz4-stream", false, "write every value in lz4net's LZ4Stream format, for consumers using the original C# client")
	f.IntVar(&c.batch, "batch", 1000, "largest number of messages per publish request (fewer when their bytes would pass the server's body limit)")
	f.DurationVar(&c.linger, "linger", 200*time.Millisecond, "with --stdin, the longest a line waits before it is sent")
	f.StringVar(&c.producer, "producer", "", "producer id (1 to 64 of A-Z a-z 0-9 . _ : -); default a random one")
	f.Int64Var(&c.expect, "expect-position", -1, "publish only if the stream's position is exactly this (one batch only)")
	return cmd
}

// Run publishes.
func (c *PublishCommand) Run(ctx context.Context, stream string, values []string) error {
	if c.batch <= 0 || c.batch > messagevault.MaxBatchCount {
		return usageError("--batch must be 1 to %d", messagevault.MaxBatchCount)
	}
	if c.linger <= 0 {
		return usageError("--linger must be positive")
	}
	if c.lz4 && c.lz4Stream {
		return usageError("--lz4 and --lz4-stream are two ways to compress: give one")
	}
	var msgs []client.Message
	key := []byte(c.key)
	for _, v := range values {
		msgs = append(msgs, client.Message{Key: key, Value: []byte(v)})
	}
	for _, name := range c.files {
		b, err := os.ReadFile(name)
		if err != nil {
			return err
		}
		msgs = append(msgs, client.Message{Key: key, Value: b})
	}
	opts := []client.Option{client.WithCompression(c.lz4)}
	if c.lz4Stream {
		opts = []client.Option{client.WithLZ4Stream(true)}
	}
	if c.producer != "" {
		opts = append(opts, client.WithProducer(c.producer))
	}
	cl := c.client(opts...)
	var popts []client.PublishOption
	if c.expect >= 0 {
		popts = append(popts, client.ExpectPosition(c.expect))
	}
	total, sent := 0, 0
	var last client.Result
	send := func(ctx context.Context, batch []client.Message) error {
		if len(batch) == 0 {
			return nil
		}
		if len(popts) > 0 && sent > 0 {
			return usageError("--expect-position publishes one batch; %d messages need more (raise --batch)", total+len(batch))
		}
		res, err := cl.Publish(ctx, stream, batch, popts...)
		if err != nil {
			if pos, ok := client.IsPositionMismatch(err); ok {
				return fmt.Errorf("not published: the stream is at position %d, not %d", pos, c.expect)
			}
			return err
		}
		last = res
		total += len(batch)
		sent++
		return nil
	}
	c.maxBody = server.DefaultMaxBodyBytes
	if c.lines {
		if err := c.publishLines(ctx, key, msgs, send); err != nil {
			return err
		}
	} else {
		if len(msgs) == 0 {
			return usageError("nothing to publish: give values, --stdin or --file")
		}
		if err := c.sendAll(ctx, &msgs, send); err != nil {
			return err
		}
	}
	renamed := ""
	if name, err := messagevault.NormalizeStreamName(stream); err == nil && name != stream {
		stream, renamed = name, " (stream names are lower case)"
	}
	fmt.Fprintf(c.stdout, "published %s to %s%s in %s; position %d\n", count(total, "message"), stream, renamed, count(sent, "batch"), last.Position)
	return nil
}

// sendAll publishes *msgs in batches of at most --batch messages whose
// bodies fit the server's limit, taking each batch off *msgs once it is
// stored. The limit is taken to be the server's default until a 413 names
// a smaller one; the refused batch (nothing of it stored) is then cut
// again.
func (c *PublishCommand) sendAll(ctx context.Context, msgs *[]client.Message, send func(context.Context, []client.Message) error) error {
	for len(*msgs) > 0 {
		n, err := c.fit(*msgs)
		if err != nil {
			return err
		}
		if c.expect >= 0 && n < len(*msgs) {
			// A conditional publish is one batch, or nothing.
			return usageError("--expect-position publishes one batch, and these %s need more (at most --batch messages, in at most %d bytes)", count(len(*msgs), "message"), c.maxBody)
		}
		err = send(ctx, (*msgs)[:n])
		if limit, ok := client.IsTooLarge(err); ok && limit > 0 && limit < c.maxBody {
			c.maxBody = limit
			continue
		}
		if err != nil {
			return err
		}
		*msgs = (*msgs)[n:]
	}
	return nil
}

// fit returns how many messages from the start of msgs make one batch:
// at most --batch of them, of at most messagevault.MaxBatchCount records,
// in a body of at most c.maxBody bytes.
func (c *PublishCommand) fit(msgs []client.Message) (int, error) {
	body, records := formats.TransferHeaderSize+formats.TransferTrailerSize, 0
	for i, m := range msgs {
		r, b := client.EncodedSize(m)
		if i == c.batch || records+r > messagevault.MaxBatchCount || int64(body+b) > c.maxBody {
			if i == 0 && (c.lz4 || c.lz4Stream) {
				// Compressed, it may fit: sent alone, a 413 says if not.
				return 1, nil
			}
			if i == 0 {
				return 0, fmt.Errorf("a message of %d bytes does not fit in one publish: the server accepts bodies of at most %d bytes (serve --max-body)", len(m.Value), c.maxBody)
			}
			return i, nil
		}
		body, records = body+b, records+r
	}
	return len(msgs), nil
}

// flushTimeout bounds the last publish after Ctrl-C or SIGTERM.
const flushTimeout = 30 * time.Second

// drainQuiet is how long publish --stdin keeps reading, after Ctrl-C or
// SIGTERM, lines already written to its input.
const drainQuiet = 100 * time.Millisecond

// publishLines publishes standard input line by line: a batch goes out at
// --batch lines or --linger after its first line. At end of input, or
// when ctx ends (Ctrl-C, SIGTERM), what is held is sent before returning.
func (c *PublishCommand) publishLines(ctx context.Context, key []byte, held []client.Message, send func(context.Context, []client.Message) error) error {
	lines := make(chan []byte, c.batch)
	readErr := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(c.stdin)
		sc.Buffer(make([]byte, 64<<10), 64<<20)
		for sc.Scan() {
			lines <- append([]byte(nil), sc.Bytes()...)
		}
		readErr <- sc.Err()
		close(lines)
	}()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	flush := func(ctx context.Context) error {
		timer.Stop()
		if err := c.sendAll(ctx, &held, send); err != nil {
			return fmt.Errorf("%w (%d lines were not stored)", err, len(held))
		}
		return nil
	}
	final := func() error {
		// The caller's context has ended: the held lines still go out.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flushTimeout)
		defer cancel()
		return flush(fctx)
	}
	if len(held) > 0 {
		timer.Reset(c.linger)
	}
	// A publish under way when Ctrl-C comes is finished, not cut off;
	// the loop then sends the rest.
	sendCtx := context.WithoutCancel(ctx)
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				if err := flush(sendCtx); err != nil {
					return err
				}
				if err := <-readErr; err != nil {
					return fmt.Errorf("read standard input: %w", err)
				}
				return nil
			}
			if len(held) == 0 {
				timer.Reset(c.linger)
			}
			held = append(held, client.Message{Key: key, Value: line})
			if len(held) >= c.batch {
				if err := flush(sendCtx); err != nil {
					return err
				}
			}
		case <-timer.C:
			if err := flush(sendCtx); err != nil {
				return err
			}
		case <-ctx.Done():
			// Take the lines already written to the input (until it is
			// quiet for drainQuiet), then send everything held.
			quiet := time.NewTimer(drainQuiet)
		drain:
			for {
				select {
				case line, ok := <-lines:
					if !ok {
						break drain
					}
					held = append(held, client.Message{Key: key, Value: line})
					quiet.Reset(drainQuiet)
				case <-quiet.C:
					break drain
				}
			}
			return final()
		}
	}
}

// ReadCommand reads messages, or follows the tail.
type ReadCommand struct {
	conn
	stdout, stderr io.Writer
	tail           bool
	from           int64
	since          string
	limit          int
	format         string
	viaServer      bool
	fromSet        bool // --from was given
	cursor         string
	commit         bool
}

// Command returns the cobra command ("read", or "tail" to follow).
func (c *ReadCommand) Command() *cobra.Command {
	use, short, example := "read STREAM", "Read messages of a stream", `  messagevault read orders --from 0 --limit 10
  messagevault read orders --since 2026-12-04T05:00:00Z
  messagevault read orders --since 15m                 # what was published in the last 15 minutes
  messagevault read orders --format json | jq .
  messagevault read orders --format raw > orders.records`
	if c.tail {
		use, short, example = "tail STREAM", "Follow a stream: print messages as they are committed", `  messagevault tail orders              # from now on
  messagevault tail orders --from 0     # everything, then follow
  messagevault tail orders --since 1h   # the last hour, then follow`
	}
	cmd := &cobra.Command{
		Use:     use,
		Short:   short,
		Long:    short + `, straight from storage through a read grant (or through the server with --via-server). Formats: text (offset, key and value per line, tab-separated; backslash, tab, newline, other control characters and bytes that are not UTF-8 escaped as \\, \t, \n, \xHH), json (one JSON object per line; a key or value that is not UTF-8 as KeyBase64 or ValueBase64), raw (the records' bytes). A message that cannot be read (a broken chain of split records, a bad LZ4 value) is reported on stderr with its position and skipped; read then exits 1.`,
		Example: example,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch c.format {
			case "text", "json", "raw":
			default:
				return usageError("--format %q: want text, json or raw", c.format)
			}
			c.fromSet = cmd.Flags().Changed("from")
			if c.commit && c.cursor == "" {
				return usageError("--commit needs --cursor NAME")
			}
			if c.cursor != "" && (c.fromSet || c.since != "") {
				return usageError("--cursor starts where the cursor is: give it without --from and --since")
			}
			if c.commit && c.format == "raw" {
				return usageError("--commit works with --format text or json")
			}
			if c.fromSet && c.from < 0 && !(c.tail && c.from == -1) {
				if c.tail {
					return usageError("--from %d: give a position (0 or more, a byte offset a read printed), or -1 for the end", c.from)
				}
				return usageError("--from %d: give a position (0 or more, a byte offset a read printed)", c.from)
			}
			if c.limit < 0 {
				return usageError("--limit %d: give 0 for every message, or how many to print", c.limit)
			}
			if c.since != "" && c.fromSet {
				return usageError("--from and --since: give one")
			}
			if c.since != "" {
				if _, err := parseSince(c.since, time.Now()); err != nil {
					return err
				}
			}
			return c.Run(cmd.Context(), args[0])
		},
	}
	c.flags(cmd)
	f := cmd.Flags()
	def := int64(0)
	if c.tail {
		def = -1
	}
	f.Int64Var(&c.from, "from", def, "position to start from (a message's offset; read: default the stream's start, its oldest stored message; tail: -1 for the end)")
	if !c.tail {
		f.IntVar(&c.limit, "limit", 0, "at most this many messages (0: all)")
	} else {
		f.IntVar(&c.limit, "count", 0, "stop after this many messages (0: follow until interrupted)")
	}
	f.StringVar(&c.since, "since", "", "start at the first message published at or after this time: RFC 3339 (2026-12-04T05:00:00Z), or a duration ago (15m, 2h)")
	f.StringVar(&c.format, "format", "text", "output: text, json or raw")
	f.BoolVar(&c.viaServer, "via-server", false, "read through the server instead of storage")
	f.StringVar(&c.cursor, "cursor", "", "start where this consumer cursor is (the stream's start if it does not exist yet)")
	f.BoolVar(&c.commit, "commit", false, "with --cursor, move the cursor past what was printed (read: at the end; tail: every second and when interrupted)")
	return cmd
}

// parseSince reads --since: an RFC 3339 time, or a duration before now.
func parseSince(v string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(v); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, usageError("--since %q: want a time in RFC 3339 (2026-12-04T05:00:00Z) or a duration ago (15m, 2h)", v)
}

// Run reads.
func (c *ReadCommand) Run(ctx context.Context, stream string) error {
	var opts []client.Option
	if c.viaServer {
		opts = append(opts, client.WithServerReads())
	}
	// One client for the whole command: it remembers that the server
	// answered, so that a restart later is retried, not taken for a
	// wrong URL (WithFailFast), and it keeps its connections.
	cl := c.client(opts...)
	r, err := cl.Reader(ctx, stream)
	if err != nil {
		return err
	}
	defer r.Close()
	from := c.from
	if c.since != "" {
		t, err := parseSince(c.since, time.Now())
		if err != nil {
			return err
		}
		if from, err = r.Since(ctx, t); err != nil {
			return err
		}
	}
	if from < 0 {
		from, err = r.Position(ctx)
		if c.tail && errors.Is(err, messagevault.ErrStreamNotFound) {
			fmt.Fprintf(c.stderr, "messagevault: stream %s has not been written yet; waiting for its first message\n", stream)
			from, err = 0, nil
		}
		if err != nil {
			return err
		}
	}
	if c.tail {
		// A tail outlives servers and storage that come and go.
		r.RetryFor = -1
		r.OnRetry = func(err error) {
			if err != nil {
				fmt.Fprintf(c.stderr, "messagevault: reading failed (%v); retrying with backoff until it works (Ctrl-C to stop)\n", err)
			} else {
				fmt.Fprintf(c.stderr, "messagevault: reading again\n")
			}
		}
	}
	var cur client.Cursor
	switch {
	case c.cursor != "":
		cur, err = cl.GetCursor(ctx, stream, c.cursor)
		var e *client.Error
		if errors.As(err, &e) && e.Status == http.StatusNotFound && e.Type == "not-found" {
			cur, err = client.Cursor{Name: c.cursor}, nil
			cur.Position, err = r.Start(ctx)
		}
		if err != nil {
			return err
		}
		from = cur.Position
	case !c.fromSet && c.since == "" && !c.tail:
		// No --from: from the oldest message still stored.
		if from, err = r.Start(ctx); err != nil {
			return err
		}
	}
	done := from // the position after the last message printed
	var lastCommit time.Time
	commit := func(ctx context.Context) error {
		if !c.commit || done == cur.Position {
			return nil
		}
		set, err := cl.SetCursor(ctx, stream, c.cursor, done, cur.ETag)
		if err != nil {
			return fmt.Errorf("commit cursor %s at %d: %w", c.cursor, done, err)
		}
		cur, lastCommit = set, time.Now()
		return nil
	}
	out := bufio.NewWriter(c.stdout)
	if c.format == "raw" && !c.tail {
		return c.readRaw(ctx, out, r, from)
	}
	var it func(func(client.ReadMessage, error) bool)
	if c.tail {
		it = r.Follow(ctx, from)
	} else {
		it = r.Messages(ctx, from, -1)
	}
	n := 0
	var bad []*client.MessageError
	for m, err := range it {
		var me *client.MessageError
		if errors.As(err, &me) {
			// One unreadable message does not stop the reader: it is
			// reported where it is, with where to resume, and skipped.
			fmt.Fprintf(c.stderr, "messagevault: skipped: %v\n", me)
			bad = append(bad, me)
			continue
		}
		if err != nil {
			if c.tail && ctx.Err() != nil {
				// Interrupted: a normal end for tail.
				cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
				defer cancel()
				return commit(cctx)
			}
			return err
		}
		if err := c.print(out, r, m); err != nil {
			return err
		}
		if len(bad) == 0 {
			done = m.Next // never past a message that was skipped
		}
		if c.tail {
			if err := out.Flush(); err != nil {
				return fmt.Errorf("write the output: %w", err)
			}
			if time.Since(lastCommit) > time.Second {
				if err := commit(ctx); err != nil {
					return err
				}
			}
		}
		if n++; c.limit > 0 && n >= c.limit {
			break
		}
	}
	// A full disk or a closed pipe must not look like success: a backup
	// with `read > file` would be silently short.
	if err := out.Flush(); err != nil {
		return fmt.Errorf("write the output: %w", err)
	}
	if len(bad) > 0 {
		// The rest was read, but a backup must not look complete (and
		// the cursor does not move past what was skipped).
		return fmt.Errorf("%s could not be read (skipped); the first at %d (see above)", count(len(bad), "message"), bad[0].Offset)
	}
	return commit(ctx)
}

// readRaw writes the records from position from in one pass over the
// stream (not one read per message), stopping after --limit whole
// messages.
func (c *ReadCommand) readRaw(ctx context.Context, out *bufio.Writer, r *client.Reader, from int64) error {
	n := 0
	var b []byte
	for rec, err := range r.Records(ctx, from, -1) {
		if err != nil {
			return err
		}
		b, _ = formats.AppendRecord(b[:0], rec.ID, rec.Message())
		if _, err := out.Write(b); err != nil {
			return fmt.Errorf("write the output: %w", err)
		}
		if rec.Attributes&messagevault.AttrContinued != 0 {
			continue // the message goes on in the next record
		}
		if n++; c.limit > 0 && n >= c.limit {
			break
		}
	}
	if err := out.Flush(); err != nil {
		return fmt.Errorf("write the output: %w", err)
	}
	return nil
}

func (c *ReadCommand) print(out *bufio.Writer, r *client.Reader, m client.ReadMessage) error {
	switch c.format {
	case "json":
		j := map[string]any{"Offset": m.Offset, "Next": m.Next, "Id": m.ID.String(), "Time": m.ID.Time().Format(time.RFC3339Nano)}
		if utf8.Valid(m.Key) {
			j["Key"] = string(m.Key)
		} else {
			j["KeyBase64"] = base64.StdEncoding.EncodeToString(m.Key)
		}
		if utf8.Valid(m.Value) {
			j["Value"] = string(m.Value)
		} else {
			j["ValueBase64"] = base64.StdEncoding.EncodeToString(m.Value)
		}
		b, _ := json.Marshal(j)
		if _, err := out.Write(append(b, '\n')); err != nil {
			return fmt.Errorf("write the output: %w", err)
		}
	case "raw":
		for rec, err := range r.Records(context.Background(), m.Offset, m.Next) {
			if err != nil {
				return err
			}
			b, _ := formatRecord(rec)
			if _, err := out.Write(b); err != nil {
				return fmt.Errorf("write the output: %w", err)
			}
		}
	default:
		if _, err := fmt.Fprintf(out, "%d\t%s\t%s\n", m.Offset, escapeText(m.Key), escapeText(m.Value)); err != nil {
			return fmt.Errorf("write the output: %w", err)
		}
	}
	return nil
}

// escapeText makes b one unambiguous field of a text line: a backslash is
// written as \\, a newline, carriage return or tab as \n, \r, \t, and
// any other control character, and every byte that is not valid UTF-8, as
// \xHH. Other text is written as it is.
func escapeText(b []byte) string {
	var sb strings.Builder
	for len(b) > 0 {
		r, size := utf8.DecodeRune(b)
		switch {
		case r == '\\':
			sb.WriteString(`\\`)
		case r == '\n':
			sb.WriteString(`\n`)
		case r == '\r':
			sb.WriteString(`\r`)
		case r == '\t':
			sb.WriteString(`\t`)
		case r == utf8.RuneError && size == 1, r < 0x20, r == 0x7f:
			fmt.Fprintf(&sb, `\x%02x`, b[0])
		default:
			sb.Write(b[:size])
		}
		b = b[size:]
	}
	return sb.String()
}

// GrantsCommand manages read grants.
type GrantsCommand struct {
	conn
	stdout io.Writer
}

// Command returns the cobra command ("grants revoke STREAM").
func (c *GrantsCommand) Command() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "grants",
		Short: "Manage read grants (revoke)",
	}
	revoke := &cobra.Command{
		Use:   "revoke STREAM",
		Short: "Make every read grant of a stream handed out so far stop working (Azure; needs all:write)",
		Long: `Make every read grant of a stream handed out so far stop working, at once.
Readers that use this program or its Go library ask for a new grant and go on;
other readers must ask for one. Local file:// grants cannot be revoked.`,
		Example: "  messagevault grants revoke orders",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := c.client().RevokeGrants(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "revoked every read grant of %s\n", args[0])
			return nil
		},
	}
	c.flags(revoke)
	cmd.AddCommand(revoke)
	return cmd
}

// TokensCommand manages bearer tokens.
type TokensCommand struct {
	conn
	stdout  io.Writer
	forUser string
	claims  []string
	ttl     time.Duration
}

// Command returns the cobra command ("tokens create|list|revoke").
func (c *TokensCommand) Command() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tokens",
		Short: "Make, list and revoke bearer tokens",
		Long: `Bearer tokens let programs authenticate without a password: a client sends
"Authorization: Bearer <token>", and the CLI uses $` + TokenEnv + ` when it is set.
A token carries a part of its user's claims, expires, and can be revoked; it
never gives more than its user has now. Tokens are managed with a password
login: an administrator (all:write) for any user, a user for itself.`,
	}
	create := &cobra.Command{
		Use:     "create",
		Short:   "Make a token (printed once)",
		Example: "  messagevault tokens create --user ci --claims orders:write --ttl 24h",
		Args:    noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			t, err := c.client().CreateToken(cmd.Context(), c.forUser, c.claims, c.ttl)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "token %s for %s (%s), expires %s; shown once:\n%s\n", t.ID, t.User, strings.Join(t.Claims, " "), t.Expires.Format(time.RFC3339), t.Token)
			return nil
		},
	}
	create.Flags().StringVar(&c.forUser, "user", "", "the user the token acts for (default: the one logged in, $"+UserEnv+")")
	create.Flags().StringSliceVar(&c.claims, "claims", nil, "the claims the token carries, a part of the user's (comma-separated)")
	create.Flags().DurationVar(&c.ttl, "ttl", 24*time.Hour, "how long the token is valid")
	list := &cobra.Command{
		Use:   "list",
		Short: "List tokens (ids, users, claims, expiry; never the tokens)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ts, err := c.client().Tokens(cmd.Context(), c.forUser)
			if err != nil {
				return err
			}
			for _, t := range ts {
				fmt.Fprintf(c.stdout, "%s\t%s\t%s\texpires %s\n", t.ID, t.User, strings.Join(t.Claims, " "), t.Expires.Format(time.RFC3339))
			}
			return nil
		},
	}
	list.Flags().StringVar(&c.forUser, "user", "", "only this user's tokens (administrators; the login is $"+UserEnv+")")
	revoke := &cobra.Command{
		Use:     "revoke ID",
		Short:   "Revoke a token: it is refused from now on",
		Example: "  messagevault tokens revoke 3fa2b81c9d04",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := c.client().RevokeToken(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "revoked token %s\n", args[0])
			return nil
		},
	}
	for _, sub := range []*cobra.Command{create, list, revoke} {
		c.flags(sub)
		cmd.AddCommand(sub)
	}
	return cmd
}

// StreamsCommand lists the streams.
type StreamsCommand struct {
	conn
	stdout io.Writer
	asJSON bool
	yes    bool
}

// Command returns the cobra command.
func (c *StreamsCommand) Command() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "streams",
		Short:   "List the streams with their positions and starts (tab-separated: name, position, first stored position)",
		Example: "  messagevault streams\n  messagevault streams --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			list, err := c.client().Streams(cmd.Context())
			if err != nil {
				return err
			}
			if c.asJSON {
				b, _ := json.Marshal(list)
				fmt.Fprintln(c.stdout, string(b))
				return nil
			}
			for _, s := range list {
				fmt.Fprintf(c.stdout, "%s\t%d\t%d\n", s.Name, s.Position, s.Start)
			}
			return nil
		},
	}
	c.flags(cmd)
	cmd.Flags().BoolVar(&c.asJSON, "json", false, "print JSON")
	del := &cobra.Command{
		Use:   "delete STREAM --yes",
		Short: "Delete a stream and all its data (needs all:write)",
		Long: `Delete a stream and all its data, at once: it leaves the listing and the reads,
and its files (or its Azure container) are removed. It cannot be undone, so
--yes is required. Writing to the name again starts a new, empty stream (on
Azure, once Azure has finished removing the old container).`,
		Example: "  messagevault streams delete scratch --yes",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !c.yes {
				return usageError("deleting %s removes all its data and cannot be undone: add --yes", args[0])
			}
			if err := c.client().DeleteStream(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "deleted %s\n", args[0])
			return nil
		},
	}
	c.flags(del)
	del.Flags().BoolVar(&c.yes, "yes", false, "really delete")
	cmd.AddCommand(del)
	return cmd
}

// TrimCommand removes a stream's old segments.
type TrimCommand struct {
	conn
	stdout io.Writer
	before int64
}

// Command returns the cobra command.
func (c *TrimCommand) Command() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "trim STREAM --before POSITION",
		Short: "Remove a stream's old segments (needs STREAM:trim or all:write)",
		Long: `Remove the whole segments of a stream that end at or before POSITION, never the
one being written, and print the stream's new start: the first position still
stored (at most POSITION, unless the stream already started after it). Reads below it then fail with 410 Gone. A stream kept
in one segment (the default --segment-size of serve) has nothing to remove.`,
		Example: "  messagevault trim orders --before 1073741824",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("before") || c.before < 0 {
				return usageError("--before: give the position (a whole number of bytes from 0) to trim before")
			}
			start, err := c.client().Trim(cmd.Context(), args[0], c.before)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "%s starts at %d\n", args[0], start)
			return nil
		},
	}
	c.flags(cmd)
	cmd.Flags().Int64Var(&c.before, "before", 0, "remove the segments that end at or before this position")
	return cmd
}

// MirrorCommand copies a stream into a local directory.
type MirrorCommand struct {
	conn
	stdout, stderr io.Writer
	viaServer      bool
}

// Command returns the cobra command.
func (c *MirrorCommand) Command() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "mirror STREAM DIR",
		Short: "Copy a stream into a local directory, incrementally",
		Long: `Copy a stream into DIR/STREAM/ in the local layout (byte-identical records and
position), from where the last run stopped. Interrupt it at any time (Ctrl-C
keeps what was copied and exits 0); run it again to continue. The copy can be
read with "verify --dir" or served.`,
		Example: "  messagevault mirror orders ./mirror",
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			var opts []client.Option
			if c.viaServer {
				opts = append(opts, client.WithServerReads())
			}
			r, err := c.client(opts...).Reader(ctx, args[0])
			if err != nil {
				return err
			}
			defer r.Close()
			update, done := progress(c.stderr, "mirror "+args[0])
			pos, err := r.Mirror(ctx, args[1], update)
			done()
			if err != nil && ctx.Err() != nil {
				// Interrupted (Ctrl-C, SIGTERM): a normal end, as for
				// tail; what was copied is kept.
				fmt.Fprintf(c.stdout, "mirror of %s to %s interrupted at position %d; run it again to continue\n", args[0], args[1], pos)
				return nil
			}
			if err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, "mirrored %s to %s up to position %d\n", args[0], args[1], pos)
			return nil
		},
	}
	c.flags(cmd)
	cmd.Flags().BoolVar(&c.viaServer, "via-server", false, "read through the server instead of straight from storage")
	return cmd
}

// VerifyCommand checks every record of a stream.
type VerifyCommand struct {
	conn
	stdout, stderr io.Writer
	dir            string
}

// Command returns the cobra command.
func (c *VerifyCommand) Command() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "verify STREAM",
		Short: "Check every record of a stream",
		Long: `Read every record of a stream up to its committed position and check its
version, crc and position. Exits 1 and names the first bad position if one
fails. Reads through the server's grant, or a local data directory (or
mirror) with --dir.`,
		Example: "  messagevault verify orders\n  messagevault verify orders --dir ./data",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			var r *client.Reader
			var err error
			if c.dir != "" {
				r, err = client.OpenDir(c.dir, args[0])
			} else {
				r, err = c.client().Reader(ctx, args[0])
			}
			if err != nil {
				return err
			}
			defer r.Close()
			update, done := progress(c.stderr, "verify "+args[0])
			res, err := r.Verify(ctx, update)
			done()
			if err != nil {
				return fmt.Errorf("verify %s: %s good, then: %w", args[0], count(res.Records, "record"), err)
			}
			if res.Start > 0 {
				fmt.Fprintf(c.stdout, "%s: %s from its start %d (trimmed before), position %d: all good\n", args[0], count(res.Records, "record"), res.Start, res.Position)
				return nil
			}
			fmt.Fprintf(c.stdout, "%s: %s, position %d: all good\n", args[0], count(res.Records, "record"), res.Position)
			return nil
		},
	}
	c.flags(cmd)
	cmd.Flags().StringVar(&c.dir, "dir", "", "read a local data directory (or mirror) instead of asking a server")
	return cmd
}

func formatRecord(rec formats.Record) ([]byte, error) {
	return formats.AppendRecord(nil, rec.ID, rec.Message())
}
