package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/client"
	"github.com/messagevault/messagevault/internal/mvtest"
)

// loseFirstAnswer delivers every request, but throws away the answer to
// the first publish: the batch is stored, the client hears an error.
type loseFirstAnswer struct{ lost atomic.Bool }

func (l *loseFirstAnswer) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err == nil && req.Method == http.MethodPost && l.lost.CompareAndSwap(false, true) {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return nil, errors.New("connection reset by the test")
	}
	return resp, err
}

func TestRetryAfterALostAnswerIsStoredOnce(t *testing.T) {
	s := mvtest.Start(t, t.TempDir(), nil)
	ctx := context.Background()
	lossy := &loseFirstAnswer{}
	c := newClient(s, client.WithHTTPClient(&http.Client{Transport: lossy}))
	res, err := c.Publish(ctx, "once", []client.Message{{Value: []byte("only once")}})
	if err != nil {
		t.Fatal(err)
	}
	if !lossy.lost.Load() || !res.Duplicate {
		t.Fatalf("lost %v, duplicate %v: the retry should have been answered as a duplicate", lossy.lost.Load(), res.Duplicate)
	}
	if _, err := c.Publish(ctx, "once", []client.Message{{Value: []byte("next")}}); err != nil {
		t.Fatal(err)
	}
	r, err := newClient(s).Reader(ctx, "once")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range collect(t, r, 0) {
		got = append(got, string(m.Value))
	}
	if strings.Join(got, ",") != "only once,next" {
		t.Fatalf("stream holds %q", got)
	}
	// Without sequences the same loss stores the batch twice: the old
	// at-least-once contract, still there for those who ask for it.
	lossy2 := &loseFirstAnswer{}
	plain := newClient(s, client.WithHTTPClient(&http.Client{Transport: lossy2}), client.WithoutSequences())
	if _, err := plain.Publish(ctx, "twice", []client.Message{{Value: []byte("v")}}); err != nil {
		t.Fatal(err)
	}
	r2, err := newClient(s).Reader(ctx, "twice")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(collect(t, r2, 0)); n != 2 {
		t.Fatalf("without sequences the stream holds %d copies, want 2", n)
	}
}

func TestNamedProducerResumes(t *testing.T) {
	s := mvtest.Start(t, t.TempDir(), nil)
	ctx := context.Background()
	a := newClient(s, client.WithProducer("job-7"))
	for i := 0; i < 3; i++ {
		if _, err := a.Publish(ctx, "named", []client.Message{{Value: []byte("a")}}); err != nil {
			t.Fatal(err)
		}
	}
	seq, known, err := a.LastSequence(ctx, "named", "job-7")
	if err != nil || !known || seq != 3 {
		t.Fatalf("LastSequence = %d, %v, %v; want 3", seq, known, err)
	}
	// A restarted process with the same id continues after 3: its first
	// batch is new, not taken for a retry of sequence 1.
	b := newClient(s, client.WithProducer("job-7"))
	res, err := b.Publish(ctx, "named", []client.Message{{Value: []byte("b")}})
	if err != nil || res.Duplicate {
		t.Fatalf("restarted producer: %+v, %v", res, err)
	}
	if seq, _, _ := b.LastSequence(ctx, "named", "job-7"); seq != 4 {
		t.Fatalf("last sequence %d, want 4", seq)
	}
	if _, known, err := b.LastSequence(ctx, "nowhere", "job-7"); known || err != nil {
		t.Fatalf("LastSequence on a stream that does not exist: %v, %v", known, err)
	}
}

func TestExpectPosition(t *testing.T) {
	s := mvtest.Start(t, t.TempDir(), nil)
	ctx := context.Background()
	c := newClient(s)
	first, err := c.Publish(ctx, "cond", []client.Message{{Value: []byte("1")}}, client.ExpectPosition(0))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Publish(ctx, "cond", []client.Message{{Value: []byte("2")}}, client.ExpectPosition(0))
	if pos, ok := client.IsPositionMismatch(err); !ok || pos != first.Position {
		t.Fatalf("stale expectation: %v; want 412 with position %d", err, first.Position)
	}
	if _, err := c.Publish(ctx, "cond", []client.Message{{Value: []byte("2")}}, client.ExpectPosition(first.Position)); err != nil {
		t.Fatal(err)
	}
}

func TestRetryForBoundsTheRetries(t *testing.T) {
	dead := client.New("http://127.0.0.1:1", "u", "p", client.WithRetries(1000, 20*time.Millisecond, 100*time.Millisecond), client.WithRetryFor(time.Second))
	start := time.Now()
	_, err := dead.Publish(context.Background(), "abc", []client.Message{{Value: []byte("v")}})
	took := time.Since(start)
	if err == nil || took < 800*time.Millisecond || took > 10*time.Second {
		t.Fatalf("publish to nowhere with a 1 s retry budget: %v after %v", err, took)
	}
}

// TestFollowPastTheEndFailsAtOnce: following from past the end is an
// out-of-range error at once, directly and through the server.
func TestFollowPastTheEndFailsAtOnce(t *testing.T) {
	s := mvtest.Start(t, t.TempDir(), nil)
	ctx := context.Background()
	res, err := newClient(s).Publish(ctx, "follow-end", []client.Message{{Value: []byte("v")}})
	if err != nil {
		t.Fatal(err)
	}
	for _, opts := range [][]client.Option{nil, {client.WithServerReads()}} {
		r, err := newClient(s, opts...).Reader(ctx, "follow-end")
		if err != nil {
			t.Fatal(err)
		}
		fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		for _, err := range r.Follow(fctx, res.Position+1000) {
			if !errors.Is(err, messagevault.ErrOutOfRange) {
				t.Fatalf("follow past the end: %v; want ErrOutOfRange at once", err)
			}
			break
		}
		cancel()
		r.Close()
	}
}

// TestCancelledAddIsNeverSent: an Add whose context ends before its batch
// is cut is withdrawn; a caller that then reuses its buffer stores exactly
// what it meant, once.
func TestCancelledAddIsNeverSent(t *testing.T) {
	s := mvtest.Start(t, t.TempDir(), nil)
	ctx := context.Background()
	p := newClient(s).NewBufferedPublisher(ctx, "withdrawn", time.Hour, 0, 0)
	buf := []byte("first")
	cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	if _, err := p.Add(cctx, client.Message{Value: buf}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Add with an ending context: %v", err)
	}
	cancel()
	copy(buf, "other")
	done := make(chan error, 1)
	go func() { _, err := p.Add(ctx, client.Message{Value: buf}); done <- err }()
	for waiting := true; waiting; {
		p.Flush() // the linger is an hour: flush until the Add is answered
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			waiting = false
		case <-time.After(20 * time.Millisecond):
		}
	}
	p.Close()
	r, err := newClient(s).Reader(ctx, "withdrawn")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var got []string
	for _, m := range collect(t, r, 0) {
		got = append(got, string(m.Value))
	}
	if strings.Join(got, ",") != "other" {
		t.Fatalf("stream holds %q; want only \"other\"", got)
	}
}

// TestBadMessageFailsAlone: a message that can never be published fails
// its own Add at once; the others of its batch are stored.
func TestBadMessageFailsAlone(t *testing.T) {
	s := mvtest.Start(t, t.TempDir(), nil)
	ctx := context.Background()
	p := newClient(s).NewBufferedPublisher(ctx, "alone", 50*time.Millisecond, 0, 0)
	defer p.Close()
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i, key := range []string{"ok", strings.Repeat("k", 300), "fine"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = p.Add(ctx, client.Message{Key: []byte(key), Value: []byte("v")})
		}()
	}
	wg.Wait()
	if errs[0] != nil || errs[2] != nil || errs[1] == nil || !strings.Contains(errs[1].Error(), "key is 300 bytes") {
		t.Fatalf("errors %v", errs)
	}
}

// TestAddHonoursItsContextWhenTheQueueIsFull: with the sender stuck on an
// unreachable server, an Add that finds the queue full returns when its
// context ends.
func TestAddHonoursItsContextWhenTheQueueIsFull(t *testing.T) {
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	dead := client.New("http://127.0.0.1:1", "u", "p", client.WithRetries(1_000_000, time.Second, time.Second), client.WithRetryFor(time.Hour))
	p := dead.NewBufferedPublisher(ctx, "stuck", time.Millisecond, 0, 1)
	for i := 0; i < 40; i++ { // more than the sender and its queue hold
		go p.Add(context.Background(), client.Message{Value: []byte("v")})
	}
	time.Sleep(200 * time.Millisecond)
	actx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := p.Add(actx, client.Message{Value: []byte("late")}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Add on a full queue: %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("Add on a full queue returned after %v", took)
	}
}

// TestPermanentErrorsAreNotRetried: 500 corrupt and 501 are answered once;
// a 503 is retried.
func TestPermanentErrorsAreNotRetried(t *testing.T) {
	for _, tc := range []struct {
		status int
		typ    string
		tries  int32
	}{{500, "corrupt", 1}, {501, "not-implemented", 1}, {503, "unavailable", 3}} {
		var tries atomic.Int32
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			tries.Add(1)
			w.WriteHeader(tc.status)
			fmt.Fprintf(w, `{"Error": "test", "Type": %q}`, tc.typ)
		}))
		c := client.New(srv.URL, "u", "p", client.WithRetries(2, time.Millisecond, time.Millisecond))
		if _, _, err := c.LastSequence(context.Background(), "abc", "p"); err == nil {
			t.Fatal("no error")
		}
		srv.Close()
		if got := tries.Load(); got != tc.tries {
			t.Fatalf("%d %s: %d tries, want %d", tc.status, tc.typ, got, tc.tries)
		}
	}
}

// TestMissingReadHeadersAreAnError: a raw read answer without its position
// headers is an error, not position 0.
func TestMissingReadHeadersAreAnError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/streams/abc" {
			w.WriteHeader(501) // no grant: the reader reads through the server
			fmt.Fprint(w, `{"Error": "no grants", "Type": "not-implemented"}`)
			return
		}
		w.Write(nil) // 200, no headers
	}))
	defer srv.Close()
	r, err := client.New(srv.URL, "u", "p", client.WithServerReads()).Reader(context.Background(), "abc")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, err := range r.Messages(context.Background(), 0, -1) {
		if err == nil || !strings.Contains(err.Error(), "X-Messagevault") {
			t.Fatalf("read without headers: %v", err)
		}
		return
	}
	t.Fatal("no error from a read without its headers")
}

// TestMirrorOfAnotherStreamIsRefused: a mirror folder of stream alpha,
// renamed by hand to beta and without its mark file, is not extended from
// stream beta.
func TestMirrorOfAnotherStreamIsRefused(t *testing.T) {
	s := mvtest.Start(t, t.TempDir(), nil)
	ctx := context.Background()
	c := newClient(s)
	for name, n := range map[string]int{"alpha": 3, "beta": 6} {
		for i := 0; i < n; i++ {
			if _, err := c.Publish(ctx, name, []client.Message{{Value: []byte(fmt.Sprintf("%s-%d", name, i))}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	mirror := t.TempDir()
	ra, err := c.Reader(ctx, "alpha")
	if err != nil {
		t.Fatal(err)
	}
	defer ra.Close()
	if _, err := ra.Mirror(ctx, mirror, nil); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(mirror, "alpha"), filepath.Join(mirror, "beta")); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(mirror, "beta", client.MirrorMarkFile))
	rb, err := c.Reader(ctx, "beta")
	if err != nil {
		t.Fatal(err)
	}
	defer rb.Close()
	if _, err := rb.Mirror(ctx, mirror, nil); err == nil || !strings.Contains(err.Error(), "another stream") {
		t.Fatalf("mirroring beta onto alpha's copy: %v", err)
	}
	// The genuine mirror without its mark still resumes.
	os.Remove(filepath.Join(mirror, "beta", "position.c7"))
	os.RemoveAll(filepath.Join(mirror, "beta"))
	if _, err := rb.Mirror(ctx, mirror, nil); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(mirror, "beta", client.MirrorMarkFile))
	if _, err := rb.Mirror(ctx, mirror, nil); err != nil {
		t.Fatalf("resuming a genuine mirror without its mark: %v", err)
	}
}

// TestPooledBodyIsNotReusedWhileSent: a server that answers 413 (or 429)
// before it has read the body leaves the HTTP transport still sending it
// when Publish returns; the body's buffer goes back to a pool only once the
// transport has closed it, so the next Publish cannot overwrite bytes still
// being sent (the race detector watches).
func TestPooledBodyIsNotReusedWhileSent(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusRequestEntityTooLarge) // without reading the body
		fmt.Fprint(w, `{"Error": "too large", "Type": "too-large"}`)
	}))
	defer srv.Close()
	c := client.New(srv.URL, "u", "p", client.WithoutSequences())
	big := make([]client.Message, 64)
	for i := range big {
		big[i] = client.Message{Value: bytes.Repeat([]byte{byte(i)}, 60000)}
	}
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				_, err := c.Publish(context.Background(), "abc", big)
				var e *client.Error
				if !errors.As(err, &e) || e.Status != http.StatusRequestEntityTooLarge {
					t.Errorf("publish: %v", err)
					return
				}
			}
		}()
	}
	wg.Wait()
}
