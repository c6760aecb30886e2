package client

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"net/http/httptest"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/messagevault/messagevault/auth"
	"github.com/messagevault/messagevault/file"
	"github.com/messagevault/messagevault/formats"
	"github.com/messagevault/messagevault/server"
	"github.com/messagevault/messagevault/vault"
)

// flakySource fails every call while its failures last, as storage that
// is briefly unreachable does.
type flakySource struct {
	source
	failures atomic.Int32 // calls still to fail; negative: fail until set again
	calls    atomic.Int32
}

var errUnreachable = fmt.Errorf("read the position blob: %w", syscall.ECONNRESET)

func (f *flakySource) fail() bool {
	f.calls.Add(1)
	for {
		n := f.failures.Load()
		if n == 0 {
			return false
		}
		if n < 0 || f.failures.CompareAndSwap(n, n-1) {
			return true
		}
	}
}

func (f *flakySource) Position(ctx context.Context) (int64, error) {
	if f.fail() {
		return 0, errUnreachable
	}
	return f.source.Position(ctx)
}

func (f *flakySource) Records(ctx context.Context, from, to int64) iter.Seq2[formats.Record, error] {
	if f.fail() {
		return func(yield func(formats.Record, error) bool) { yield(formats.Record{}, errUnreachable) }
	}
	return f.source.Records(ctx, from, to)
}

// followServer runs a server in process on a directory, and a client of
// it.
func followServer(t *testing.T) *Client {
	t.Helper()
	dir := t.TempDir()
	store, err := file.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	users, err := auth.Open(context.Background(), auth.NewFileSource(filepath.Join(dir, "auth.json")), nil)
	if err != nil {
		t.Fatal(err)
	}
	users.Add(context.Background(), "admin", "secret", "all:write")
	v := vault.New(store, vault.Config{})
	api := server.New(server.Config{Vault: v, Users: users})
	srv := httptest.NewServer(api)
	t.Cleanup(func() { srv.Close(); api.Close(); v.Close(); store.Close() })
	return New(srv.URL, "admin", "secret")
}

func publishValues(t *testing.T, c *Client, values ...string) {
	t.Helper()
	var msgs []Message
	for _, v := range values {
		msgs = append(msgs, Message{Value: []byte(v)})
	}
	if _, err := c.Publish(context.Background(), "flaky", msgs); err != nil {
		t.Fatal(err)
	}
}

// follow collects n messages' values from Follow, failing on any error.
func follow(ctx context.Context, r *Reader, n int) ([]string, error) {
	var got []string
	for m, err := range r.Follow(ctx, 0) {
		if err != nil {
			return got, err
		}
		got = append(got, string(m.Value))
		if len(got) == n {
			break
		}
	}
	return got, nil
}

// A blip of storage errors does not end Follow: it retries, and reads on
// from storage.
func TestFollowRetriesAStorageBlip(t *testing.T) {
	c := followServer(t)
	publishValues(t, c, "one", "two")
	r, err := c.Reader(context.Background(), "flaky")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	flaky := &flakySource{source: r.src}
	flaky.failures.Store(3)
	r.src = flaky
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan []string)
	go func() {
		got, err := follow(ctx, r, 3)
		if err != nil {
			t.Errorf("follow ended: %v (after %v)", err, got)
		}
		done <- got
	}()
	time.Sleep(200 * time.Millisecond)
	publishValues(t, c, "three")
	if got := <-done; fmt.Sprint(got) != "[one two three]" {
		t.Fatalf("followed %v", got)
	}
	if r.ViaServer {
		t.Fatal("a blip of three failed reads switched the reader to the server")
	}
}

// Storage that stays unreachable makes Follow switch to the server's read
// route, and go on from where it was, without losing or repeating a
// message.
func TestFollowFallsBackToTheServer(t *testing.T) {
	c := followServer(t)
	publishValues(t, c, "one", "two")
	r, err := c.Reader(context.Background(), "flaky")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.ViaServer {
		t.Fatal("the reader starts on the server")
	}
	flaky := &flakySource{source: r.src}
	r.src = flaky
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var got []string
	for m, err := range r.Follow(ctx, 0) {
		if err != nil {
			t.Fatalf("follow ended: %v (after %v)", err, got)
		}
		got = append(got, string(m.Value))
		if len(got) == 2 {
			flaky.failures.Store(-1) // storage goes away for good
			go func() {
				time.Sleep(500 * time.Millisecond)
				publishValues(t, c, "three")
			}()
		}
		if len(got) == 3 {
			break
		}
	}
	if fmt.Sprint(got) != "[one two three]" || !r.ViaServer {
		t.Fatalf("followed %v, via the server: %v", got, r.ViaServer)
	}
}

// An error that retrying cannot cure ends Follow at once.
func TestFollowStopsOnAPermanentError(t *testing.T) {
	c := followServer(t)
	publishValues(t, c, "one")
	r, err := c.Reader(context.Background(), "flaky")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.src = &refusingSource{source: r.src}
	start := time.Now()
	_, err = follow(context.Background(), r, 2)
	var e *Error
	if !errors.As(err, &e) || e.Status != 403 || time.Since(start) > 5*time.Second {
		t.Fatalf("follow: %v after %v", err, time.Since(start))
	}
}

type refusingSource struct{ source }

func (refusingSource) Position(context.Context) (int64, error) {
	return 0, &Error{Status: 403, Type: "forbidden", Message: "no claim"}
}
