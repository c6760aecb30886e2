package server_test

// httptest-level tests of the HTTP handlers: the error answers of every
// class of error, the in-flight publish budget, Last-Event-ID resume of
// event streams, and the forwarding of writes from a follower to its
// leader.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/auth"
	"github.com/messagevault/messagevault/formats"
	"github.com/messagevault/messagevault/mem"
	"github.com/messagevault/messagevault/server"
	"github.com/messagevault/messagevault/stream"
	"github.com/messagevault/messagevault/vault"
)

// testPassword is the password of every user the tests add.
const testPassword = "pw"

// usersWith opens an empty users file holding the given users (name to
// claims), each with testPassword; it is closed when the test ends.
func usersWith(t *testing.T, claims map[string][]string) *auth.Users {
	t.Helper()
	users := newUsers(t)
	t.Cleanup(func() { users.Close() })
	for name, c := range claims {
		if err := users.Add(context.Background(), name, testPassword, c...); err != nil {
			t.Fatalf("add user %q: %v", name, err)
		}
	}
	return users
}

// startServer returns server.New(cfg), closed when the test ends.
func startServer(t *testing.T, cfg server.Config) *server.Server {
	t.Helper()
	s := server.New(cfg)
	t.Cleanup(func() { s.Close() })
	return s
}

// call is one request made with httptest.NewRecorder.
type call struct {
	method, path string
	// user authenticates with Basic auth and testPassword (password, if
	// set, instead); "" sends no credentials.
	user, password string
	body           string
	// chunked sends the body without a Content-Length.
	chunked     bool
	contentType string
	header      map[string]string
}

// serve makes the request c to h and returns the answer.
func serve(t *testing.T, h http.Handler, c call) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(c.method, c.path, strings.NewReader(c.body))
	if c.chunked {
		req.ContentLength = -1
	}
	if c.user != "" {
		pw := testPassword
		if c.password != "" {
			pw = c.password
		}
		req.SetBasicAuth(c.user, pw)
	}
	if c.contentType != "" {
		req.Header.Set("Content-Type", c.contentType)
	}
	for k, v := range c.header {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

// errorAnswer is the JSON body of an error answer.
type errorAnswer struct {
	Error string `json:"Error"`
	Type  string `json:"Type"`
}

// decodeError decodes body as an error answer: a JSON object of exactly
// the fields Error and Type (and, with extra, those fields too).
func decodeError(t *testing.T, body []byte, extra ...string) errorAnswer {
	t.Helper()
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		t.Fatalf("error answer %q is not a JSON object: %v", body, err)
	}
	want := append([]string{"Error", "Type"}, extra...)
	if len(fields) != len(want) {
		t.Errorf("error answer %s: want exactly the fields %v", body, want)
	}
	for _, f := range want {
		if _, ok := fields[f]; !ok {
			t.Errorf("error answer %s has no field %q", body, f)
		}
	}
	var e errorAnswer
	if err := json.Unmarshal(body, &e); err != nil {
		t.Fatalf("error answer %q: %v", body, err)
	}
	return e
}

// wantError checks that rec is an error answer of status and type typ
// whose message contains msg, with the headers its status calls for.
func wantError(t *testing.T, rec *httptest.ResponseRecorder, status int, typ, msg string) errorAnswer {
	t.Helper()
	if rec.Code != status {
		t.Fatalf("status %d, want %d; body %s", rec.Code, status, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json; charset=utf-8" {
		t.Errorf("Content-Type %q, want application/json; charset=utf-8", ct)
	}
	var extra []string
	if status == http.StatusRequestEntityTooLarge {
		extra = []string{"MaxBody"} // the limit, to regroup by
		if rec.Header().Get(server.MaxBodyHeader) == "" {
			t.Errorf("a 413 without %s", server.MaxBodyHeader)
		}
	}
	e := decodeError(t, rec.Body.Bytes(), extra...)
	if e.Type != typ {
		t.Errorf("Type %q, want %q (Error %q)", e.Type, typ, e.Error)
	}
	if !strings.Contains(e.Error, msg) {
		t.Errorf("Error %q does not contain %q", e.Error, msg)
	}
	switch status {
	case http.StatusUnauthorized:
		if got := rec.Header().Get("WWW-Authenticate"); !strings.HasPrefix(got, "Basic ") {
			t.Errorf("a 401 with WWW-Authenticate %q", got)
		}
	case http.StatusMethodNotAllowed:
		if got := rec.Header().Get("Allow"); got == "" || !strings.Contains(msg, got) {
			t.Errorf("a 405 with Allow %q (the message says %q)", got, msg)
		}
	case http.StatusTooManyRequests, http.StatusServiceUnavailable:
		if got := rec.Header().Get("Retry-After"); got != "1" {
			t.Errorf("a %d with Retry-After %q, want 1", status, got)
		}
	}
	if status >= 500 {
		// Server-side failures name the request, for the log.
		if id := rec.Header().Get("X-Request-Id"); id == "" || !strings.HasSuffix(e.Error, " (request "+id+")") {
			t.Errorf("a %d whose Error %q does not end with its request id %q", status, e.Error, id)
		}
	}
	return e
}

// publishAnswer is the body of a successful publish.
type publishAnswer struct {
	Position int64   `json:"Position"`
	Offsets  []int64 `json:"Offsets"`
}

// publishOne publishes one message through h as user and returns the
// stream's position after it.
func publishOne(t *testing.T, h http.Handler, streamName, user, key, value string) publishAnswer {
	t.Helper()
	body, err := json.Marshal([]map[string]string{{"key": key, "value": value}})
	if err != nil {
		t.Fatal(err)
	}
	rec := serve(t, h, call{method: "POST", path: "/streams/" + streamName + "/messages", user: user, body: string(body), contentType: "application/json"})
	if rec.Code != http.StatusOK {
		t.Fatalf("publish %s=%s to %s: %d %s", key, value, streamName, rec.Code, rec.Body)
	}
	var ans publishAnswer
	if err := json.Unmarshal(rec.Body.Bytes(), &ans); err != nil {
		t.Fatalf("publish answer %q: %v", rec.Body, err)
	}
	if len(ans.Offsets) != 1 || ans.Offsets[0] >= ans.Position {
		t.Fatalf("publish answer %+v: want one offset before the position", ans)
	}
	return ans
}

// TestErrorAnswersForRequests: every class of error a client's request can
// cause, sent through the handler, gets its status and a JSON answer
// {"Error", "Type"} of its type whose message says what was wrong (a bad
// query parameter is named): 400 bad-request, 401 with WWW-Authenticate,
// 403, 404, 409, 412 (with the stream's position), 413 (declared and
// chunked bodies), 415, and 501 for grants the memory backend cannot give
// or revoke.
func TestErrorAnswersForRequests(t *testing.T) {
	users := usersWith(t, map[string][]string{
		"writer": {"orders:write"},
		"reader": {"orders:read"},
		"admin":  {"all:write"},
		"nobody": nil,
	})
	v := memVault(t)
	res, err := v.Append(context.Background(), "orders", []messagevault.Message{
		messagevault.NewMessage([]byte("k1"), []byte("v1"), 0),
		messagevault.NewMessage([]byte("k2"), []byte("v2"), 0),
	})
	if err != nil {
		t.Fatal(err)
	}
	pos := res.Position
	if pos <= 0 {
		t.Fatalf("position %d after an append", pos)
	}
	h := startServer(t, server.Config{Vault: v, Users: users, MaxBodyBytes: 1024})
	tooLarge := `[{"key":"k","value":"` + strings.Repeat("x", 2000) + `"}]`
	past := strconv.FormatInt(pos+1, 10)

	for _, tc := range []struct {
		name   string
		c      call
		status int
		typ    string
		msg    string
	}{
		// 404
		{"read of a stream never written", call{method: "GET", path: "/streams/nowhere/messages", user: "admin"}, 404, "not-found", `stream "nowhere" has never been written`},
		{"events from inside a stream never written", call{method: "GET", path: "/streams/nowhere/events?from=5", user: "admin"}, 404, "not-found", `stream "nowhere" has never been written`},
		{"unknown route", call{method: "GET", path: "/nothing/here", user: "admin"}, 404, "not-found", "no route GET /nothing/here"},
		{"known route, wrong method", call{method: "PUT", path: "/streams/orders/messages", user: "admin"}, 405, "method-not-allowed", "PUT is not a method of /streams/orders/messages: it takes GET, HEAD, POST, DELETE"},
		{"a JSON object as a value", call{method: "POST", path: "/streams/orders/messages", user: "writer", body: `[{"key":"k","value":{"a":1}}]`, contentType: "application/json"}, 400, "bad-request", "message 0: value must be a string, not a JSON object"},
		{"removing an unknown user", call{method: "DELETE", path: "/users/ghost", user: "admin"}, 404, "not-found", "user not found"},
		// 400: the query
		{"from=-1", call{method: "GET", path: "/streams/orders/messages?from=-1", user: "reader"}, 400, "bad-request", `from="-1"`},
		{"from=abc", call{method: "GET", path: "/streams/orders/messages?from=abc", user: "reader"}, 400, "bad-request", `from="abc"`},
		{"limit=0", call{method: "GET", path: "/streams/orders/messages?limit=0", user: "reader"}, 400, "bad-request", `limit="0"`},
		{"limit past the most", call{method: "GET", path: fmt.Sprintf("/streams/orders/messages?limit=%d", server.MaxReadLimit+1), user: "reader"}, 400, "bad-request", fmt.Sprintf(`limit="%d"`, server.MaxReadLimit+1)},
		{"wait=abc", call{method: "GET", path: "/streams/orders/messages?wait=abc", user: "reader"}, 400, "bad-request", `wait="abc"`},
		{"wait=NaN", call{method: "GET", path: "/streams/orders/messages?wait=NaN", user: "reader"}, 400, "bad-request", `wait="NaN"`},
		{"wait past MaxWait", call{method: "GET", path: "/streams/orders/messages?wait=61", user: "reader"}, 400, "bad-request", `wait="61"`},
		{"format=xml", call{method: "GET", path: "/streams/orders/messages?format=xml", user: "reader"}, 400, "bad-request", `format="xml"`},
		{"from past the position", call{method: "GET", path: "/streams/orders/messages?from=" + past, user: "reader"}, 400, "bad-request", fmt.Sprintf("from=%s is past the stream's position %d", past, pos)},
		{"events from past the position", call{method: "GET", path: "/streams/orders/events?from=" + past, user: "reader"}, 400, "bad-request", fmt.Sprintf("from=%s is past the stream's position %d", past, pos)},
		// 400: names and bodies
		{"invalid stream name", call{method: "GET", path: "/streams/bad_name/messages", user: "admin"}, 400, "bad-request", "invalid stream name"},
		{"the reserved stream name", call{method: "POST", path: "/streams/sys/messages", user: "admin", body: `[{"key":"k","value":"v"}]`, contentType: "application/json"}, 400, "bad-request", `"sys" is reserved`},
		{"JSON that is not messages", call{method: "POST", path: "/streams/orders/messages", user: "writer", body: `[{"key":"k","val":"v"}]`, contentType: "application/json"}, 400, "bad-request", "JSON body: message 0"},
		{"an empty batch", call{method: "POST", path: "/streams/orders/messages", user: "writer", body: `[]`, contentType: "application/json"}, 400, "bad-request", "empty batch"},
		{"a transfer body that is not one", call{method: "POST", path: "/streams/orders", user: "writer", body: "not a transfer body"}, 400, "bad-request", "transfer body"},
		{"a producer without a sequence", call{method: "POST", path: "/streams/orders/messages", user: "writer", body: `[{"key":"k","value":"v"}]`, contentType: "application/json", header: map[string]string{server.ProducerHeader: "p1"}}, 400, "bad-request", "go together"},
		{"a bad expected position", call{method: "POST", path: "/streams/orders/messages", user: "writer", body: `[{"key":"k","value":"v"}]`, contentType: "application/json", header: map[string]string{server.ExpectedPositionHeader: "-3"}}, 400, "bad-request", server.ExpectedPositionHeader + `: "-3"`},
		{"a bad producer id", call{method: "GET", path: "/streams/orders/producers/no%20spaces", user: "writer"}, 400, "bad-request", `"no spaces" is not a producer id`},
		{"an invalid claim", call{method: "POST", path: "/users", user: "admin", body: `{"Name":"carol","Password":"secret-pw","Claims":["orders:delete"]}`, contentType: "application/json"}, 400, "bad-request", "invalid claim"},
		// 401
		{"no credentials", call{method: "GET", path: "/streams/orders/messages"}, 401, "unauthorized", "credentials required"},
		{"a wrong password", call{method: "GET", path: "/streams/orders/messages", user: "reader", password: "wrong"}, 401, "unauthorized", "wrong user name or password"},
		{"an unknown bearer token", call{method: "GET", path: "/streams/orders/messages", header: map[string]string{"Authorization": "Bearer mvt_nope_nope"}}, 401, "unauthorized", "wrong user name or password"},
		// 403
		{"publish without the write claim", call{method: "POST", path: "/streams/orders/messages", user: "reader", body: `[{"key":"k","value":"v"}]`, contentType: "application/json"}, 403, "forbidden", `user "reader" needs the claim "orders:write"`},
		{"read without a claim", call{method: "GET", path: "/streams/orders/messages", user: "nobody"}, 403, "forbidden", `user "nobody" needs the claim "orders:read"`},
		{"read of another stream", call{method: "GET", path: "/streams/payments/messages", user: "writer"}, 403, "forbidden", `user "writer" needs the claim "payments:read"`},
		{"revoking grants without all:write", call{method: "DELETE", path: "/streams/orders/grants", user: "writer"}, 403, "forbidden", `needs the claim "all:write"`},
		{"metrics without all:read", call{method: "GET", path: "/metrics", user: "reader"}, 403, "forbidden", `needs the claim "all:read"`},
		{"a cross-site write", call{method: "POST", path: "/streams/orders/messages", user: "writer", body: `[{"key":"k","value":"v"}]`, contentType: "application/json", header: map[string]string{"Origin": "https://evil.example"}}, 403, "forbidden", "cross-site request refused"},
		// 409
		{"adding a user that exists", call{method: "POST", path: "/users", user: "admin", body: `{"Name":"reader","Password":"another-pw"}`, contentType: "application/json"}, 409, "exists", "the user exists"},
		// 413
		{"a body declared too large", call{method: "POST", path: "/streams/orders/messages", user: "writer", body: tooLarge, contentType: "application/json"}, 413, "too-large", "over this server's limit of 1024 bytes (serve --max-body)"},
		{"a chunked body too large", call{method: "POST", path: "/streams/orders/messages", user: "writer", body: tooLarge, chunked: true, contentType: "application/json"}, 413, "too-large", "over this server's limit of 1024 bytes (serve --max-body)"},
		{"a transfer body too large", call{method: "POST", path: "/streams/orders", user: "writer", body: tooLarge, chunked: true}, 413, "too-large", "over this server's limit of 1024 bytes (serve --max-body)"},
		// 415
		{"a JSON publish as text/plain", call{method: "POST", path: "/streams/orders/messages", user: "writer", body: `[{"key":"k","value":"v"}]`, contentType: "text/plain"}, 415, "unsupported-media-type", "Content-Type: application/json"},
		// 501
		{"revoking grants on the memory backend", call{method: "DELETE", path: "/streams/orders/grants", user: "admin"}, 501, "not-implemented", "cannot be revoked"},
		{"a read grant from the memory backend", call{method: "GET", path: "/streams/orders", user: "reader"}, 501, "not-implemented", "cannot hand out read grants"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantError(t, serve(t, h, tc.c), tc.status, tc.typ, tc.msg)
		})
	}

	t.Run("expected position mismatch", func(t *testing.T) {
		rec := serve(t, h, call{method: "POST", path: "/streams/orders/messages", user: "writer", body: `[{"key":"k","value":"v"}]`, contentType: "application/json",
			header: map[string]string{server.ExpectedPositionHeader: strconv.FormatInt(pos+4096, 10)}})
		if rec.Code != http.StatusPreconditionFailed {
			t.Fatalf("status %d, want 412; body %s", rec.Code, rec.Body)
		}
		e := decodeError(t, rec.Body.Bytes(), "Position")
		var got struct{ Position int64 }
		if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
			t.Fatal(err)
		}
		if e.Type != "position-mismatch" || got.Position != pos {
			t.Fatalf("412 answer %s: want type position-mismatch and the position %d", rec.Body, pos)
		}
	})

	// None of the refused requests changed the stream.
	rec := serve(t, h, call{method: "GET", path: "/streams/orders/messages", user: "reader"})
	var read struct {
		Position int64
		Messages []struct{ Key, Value string }
		Next     int64
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &read); err != nil {
		t.Fatalf("read %d %q: %v", rec.Code, rec.Body, err)
	}
	if rec.Code != http.StatusOK || read.Position != pos || len(read.Messages) != 2 || read.Next != pos {
		t.Fatalf("after the refused requests the stream reads %d %s, want its 2 messages up to %d", rec.Code, rec.Body, pos)
	}
}

// faultStorage is a messagevault.Storage that fails the calls it is told
// to, and otherwise passes them to the storage it wraps.
type faultStorage struct {
	messagevault.Storage
	mu                              sync.Mutex
	openWriter, openReader, streams error
}

func (f *faultStorage) fail(openWriter, openReader, streams error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.openWriter, f.openReader, f.streams = openWriter, openReader, streams
}

func (f *faultStorage) errs() (openWriter, openReader, streams error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.openWriter, f.openReader, f.streams
}

func (f *faultStorage) OpenWriter(ctx context.Context, name string) (messagevault.PageWriter, error) {
	if err, _, _ := f.errs(); err != nil {
		return nil, err
	}
	return f.Storage.OpenWriter(ctx, name)
}

func (f *faultStorage) OpenReader(ctx context.Context, name string) (messagevault.PageReader, error) {
	if _, err, _ := f.errs(); err != nil {
		return nil, err
	}
	return f.Storage.OpenReader(ctx, name)
}

func (f *faultStorage) Streams(ctx context.Context) ([]string, error) {
	if _, _, err := f.errs(); err != nil {
		return nil, err
	}
	return f.Storage.Streams(ctx)
}

// TestErrorAnswersForStorageFailures: failures of the storage and of the
// writer reach the client as 500 "storage" (naming no path of the
// server's, only the system's reason when there is one), 500 "corrupt",
// and 503 "unavailable" with Retry-After (fenced, locked, closed, no
// longer the leader); every 5xx message is one line ending with the
// request id.
func TestErrorAnswersForStorageFailures(t *testing.T) {
	users := usersWith(t, map[string][]string{"admin": {"all:write"}})
	store := mem.New()
	faults := &faultStorage{Storage: store}
	v := vault.New(faults, vault.Config{})
	t.Cleanup(func() { v.Close() })
	h := startServer(t, server.Config{Vault: v, Users: users})
	publish := call{method: "POST", path: "/streams/orders/messages", user: "admin", body: `[{"key":"k","value":"v"}]`, contentType: "application/json"}
	read := call{method: "GET", path: "/streams/orders/messages", user: "admin"}
	publishOne(t, h, "orders", "admin", "k", "v") // the stream exists; its writer is open

	for _, tc := range []struct {
		name                           string
		openWriter, openReader, listed error
		c                              call
		status                         int
		typ, msg                       string
		hidden                         string // must not be in the answer
	}{
		{"a storage error names no path", fmt.Errorf("open /var/lib/mv/secret/orders: disk on fire\nretry 1 of 3"), nil, nil,
			call{method: "POST", path: "/streams/fresh/messages", user: "admin", body: `[{"key":"k","value":"v"}]`, contentType: "application/json"},
			500, "storage", "storage failed; the server's log has the details (request ", "/var/lib/mv"},
		{"a system error names its reason", fmt.Errorf("write /var/lib/mv/orders: %w", syscall.ENOSPC), nil, nil,
			call{method: "POST", path: "/streams/fresh/messages", user: "admin", body: `[{"key":"k","value":"v"}]`, contentType: "application/json"},
			500, "storage", "storage failed: no space left on device; the server's log has the details", "/var/lib/mv"},
		{"a fenced writer", fmt.Errorf("open writer %q: %w\nSDK request dump", "fresh", messagevault.ErrFenced), nil, nil,
			call{method: "POST", path: "/streams/fresh/messages", user: "admin", body: `[{"key":"k","value":"v"}]`, contentType: "application/json"},
			503, "unavailable", `open writer "fresh": writer fenced: another writer owns the stream (request `, "SDK request dump"},
		{"a locked stream", fmt.Errorf("open writer: %w", messagevault.ErrLocked), nil, nil,
			call{method: "POST", path: "/streams/fresh/messages", user: "admin", body: `[{"key":"k","value":"v"}]`, contentType: "application/json"},
			503, "unavailable", "storage is locked by another writer", ""},
		{"a corrupt stream", nil, fmt.Errorf("open reader: %w", messagevault.ErrCorrupt), nil, read,
			500, "corrupt", "corrupt stream", ""},
		{"a failed read", nil, errors.New("GET https://acct.blob.core.windows.net/orders?sig=SECRET: 500"), nil, read,
			500, "storage", "storage failed; the server's log has the details", "SECRET"},
		{"a failed listing", nil, nil, errors.New("list /var/lib/mv: input/output error"),
			call{method: "GET", path: "/streams", user: "admin"},
			500, "storage", "storage failed; the server's log has the details", "/var/lib/mv"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			faults.fail(tc.openWriter, tc.openReader, tc.listed)
			defer faults.fail(nil, nil, nil)
			rec := serve(t, h, tc.c)
			e := wantError(t, rec, tc.status, tc.typ, tc.msg)
			if strings.Contains(e.Error, "\n") || (tc.hidden != "" && strings.Contains(rec.Body.String(), tc.hidden)) {
				t.Fatalf("the answer %s shows more than it should (%q)", rec.Body, tc.hidden)
			}
		})
	}

	t.Run("a commit fenced by another writer", func(t *testing.T) {
		store.FailNextCommit(fmt.Errorf("commit: %w", messagevault.ErrFenced))
		wantError(t, serve(t, h, publish), 503, "unavailable", "writer fenced")
		// The vault opens a fresh writer for the next publish.
		publishOne(t, h, "orders", "admin", "k", "after the fence")
	})

	t.Run("a vault no longer leading", func(t *testing.T) {
		past := vault.New(store, vault.Config{Writer: stream.WriterConfig{Deadline: func() time.Time { return time.Now().Add(-time.Second) }}})
		t.Cleanup(func() { past.Close() })
		h := startServer(t, server.Config{Vault: past, Users: users})
		wantError(t, serve(t, h, publish), 503, "unavailable", "not the leader")
	})

	t.Run("a closed vault", func(t *testing.T) {
		closed := vault.New(store, vault.Config{})
		if err := closed.Close(); err != nil {
			t.Fatal(err)
		}
		h := startServer(t, server.Config{Vault: closed, Users: users})
		wantError(t, serve(t, h, publish), 503, "unavailable", "closed")
	})
}

// gauge returns the value of the gauge name gathered from reg.
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			if ms := mf.GetMetric(); len(ms) == 1 {
				return ms[0].GetGauge().GetValue()
			}
			t.Fatalf("%s: %d series", name, len(mf.GetMetric()))
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// waitInflight polls the server's in-flight publish bytes until they are
// want, failing after 10 s.
func waitInflight(t *testing.T, reg *prometheus.Registry, want int64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for {
		got := gauge(t, reg, "messagevault_publish_inflight_bytes")
		if got == float64(want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("in-flight publish bytes are %v after 10 s, want %d", got, want)
		}
		<-tick.C
	}
}

// heldPublish is a JSON publish whose body is sent through a pipe, so that
// its bytes stay reserved until the test finishes it.
type heldPublish struct {
	pw     *io.PipeWriter
	answer chan heldAnswer
}

type heldAnswer struct {
	status int
	body   []byte
	err    error
}

// holdPublish starts a JSON publish of one message to url as user, sends
// the first part of its body and waits until the server holds it.
func holdPublish(t *testing.T, url, user string, reg *prometheus.Registry) (*heldPublish, string) {
	t.Helper()
	pr, pw := io.Pipe()
	t.Cleanup(func() { pw.CloseWithError(errors.New("the test ended")) })
	req, err := http.NewRequest(http.MethodPost, url, pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.SetBasicAuth(user, testPassword)
	hp := &heldPublish{pw: pw, answer: make(chan heldAnswer, 1)}
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			hp.answer <- heldAnswer{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		hp.answer <- heldAnswer{status: resp.StatusCode, body: b, err: err}
	}()
	first := `[{"key":"held","value":"` + strings.Repeat("h", 60)
	if _, err := io.WriteString(pw, first); err != nil {
		t.Fatalf("send the first part of the held body: %v", err)
	}
	// A JSON body reserves three times its bytes.
	waitInflight(t, reg, 3*int64(len(first)))
	return hp, first
}

// finish sends the rest of the held body and returns the answer.
func (hp *heldPublish) finish(t *testing.T) heldAnswer {
	t.Helper()
	if _, err := io.WriteString(hp.pw, `"}]`); err != nil {
		t.Fatalf("send the rest of the held body: %v", err)
	}
	if err := hp.pw.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case a := <-hp.answer:
		if a.err != nil {
			t.Fatalf("the held publish: %v", a.err)
		}
		return a
	case <-time.After(10 * time.Second):
		t.Fatal("no answer to the held publish 10 s after its body ended")
		return heldAnswer{}
	}
}

// postJSON publishes body to url as user over HTTP.
func postJSON(t *testing.T, url, user, body string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.SetBasicAuth(user, testPassword)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// checkBusy checks a 429 answer of the publish budget.
func checkBusy(t *testing.T, resp *http.Response, body []byte, msgs ...string) {
	t.Helper()
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("status %d, want 429; body %s", resp.StatusCode, body)
	}
	if got := resp.Header.Get("Retry-After"); got != "1" {
		t.Errorf("a 429 with Retry-After %q, want 1", got)
	}
	e := decodeError(t, body)
	for _, msg := range append(msgs, "retry shortly") {
		if e.Type != "busy" || !strings.Contains(e.Error, msg) {
			t.Fatalf("429 answer %s: want type busy and a message containing %q", body, msg)
		}
	}
}

// TestPublishBudget: while one publish holds bytes of the server's
// in-flight budget (Config.MaxInflightBytes), a publish that would pass
// the budget, from any user, is answered 429 busy with Retry-After and a
// message giving the limit; once the held publish completes, its bytes are
// released and the same publish succeeds.
func TestPublishBudget(t *testing.T) {
	users := usersWith(t, map[string][]string{"alice": {"all:write"}, "bob": {"all:write"}})
	reg := prometheus.NewRegistry()
	h := startServer(t, server.Config{Vault: memVault(t), Users: users, MaxInflightBytes: 1000, Registry: reg})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	url := srv.URL + "/streams/budget/messages"

	held, first := holdPublish(t, url, "alice", reg)
	// 3 × 300 bytes more would pass the 1000 of the budget.
	big := `[{"key":"big","value":"` + strings.Repeat("b", 300) + `"}]`
	for _, user := range []string{"bob", "alice"} {
		resp, body := postJSON(t, url, user, big)
		// (The count is what was reserved when the publish was refused:
		// at least the held bytes.)
		checkBusy(t, resp, body, "server busy: ", "bytes of publishes are in flight (limit 1000)")
	}
	// A refused publish gives back what it reserved.
	waitInflight(t, reg, 3*int64(len(first)))

	a := held.finish(t)
	var ans publishAnswer
	if err := json.Unmarshal(a.body, &ans); err != nil || a.status != http.StatusOK || len(ans.Offsets) != 1 {
		t.Fatalf("the held publish: %d %s (%v)", a.status, a.body, err)
	}
	// The handler released the bytes before the answer was sent.
	if got := gauge(t, reg, "messagevault_publish_inflight_bytes"); got != 0 {
		t.Fatalf("%v bytes in flight after the held publish was answered", got)
	}
	resp, body := postJSON(t, url, "bob", big)
	var after publishAnswer
	if err := json.Unmarshal(body, &after); err != nil || resp.StatusCode != http.StatusOK || after.Position <= ans.Position {
		t.Fatalf("a publish after the budget was released: %d %s (%v)", resp.StatusCode, body, err)
	}
}

// TestPublishUserShare: within a budget with room to spare, one user's
// publishes may hold only its share (a quarter of MaxInflightBytes, at
// least MaxBodyBytes): past it that user gets 429 busy naming the share,
// while another user's publish goes through; the share is given back when
// the held publish completes.
func TestPublishUserShare(t *testing.T) {
	users := usersWith(t, map[string][]string{"alice": {"all:write"}, "bob": {"all:write"}})
	reg := prometheus.NewRegistry()
	// The share: max(4000/4, 500) = 1000 bytes.
	h := startServer(t, server.Config{Vault: memVault(t), Users: users, MaxInflightBytes: 4000, MaxBodyBytes: 500, Registry: reg})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	url := srv.URL + "/streams/share/messages"

	held, _ := holdPublish(t, url, "alice", reg)
	body300 := `[{"key":"s","value":"` + strings.Repeat("s", 270) + `"}]`
	resp, body := postJSON(t, url, "alice", body300)
	checkBusy(t, resp, body, `server busy: user "alice" has `, "bytes of publishes in flight, its share of the server's budget is 1000")
	if resp, body := postJSON(t, url, "bob", body300); resp.StatusCode != http.StatusOK {
		t.Fatalf("another user's publish while alice's share is full: %d %s", resp.StatusCode, body)
	}
	if a := held.finish(t); a.status != http.StatusOK {
		t.Fatalf("the held publish: %d %s", a.status, a.body)
	}
	if resp, body := postJSON(t, url, "alice", body300); resp.StatusCode != http.StatusOK {
		t.Fatalf("alice's publish after her share was released: %d %s", resp.StatusCode, body)
	}
}

// sseEvent is one server-sent event.
type sseEvent struct{ id, event, data string }

// readEvent reads the next event of an event stream, skipping comments.
func readEvent(t *testing.T, rd *bufio.Reader) sseEvent {
	t.Helper()
	var ev sseEvent
	for {
		line, err := rd.ReadString('\n')
		if err != nil {
			t.Fatalf("reading the event stream: %v (event so far %+v)", err, ev)
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case line == "":
			if ev.event != "" || ev.data != "" {
				return ev
			}
			ev = sseEvent{} // an id alone (where the stream starts) dispatches no event
		case strings.HasPrefix(line, ":"):
		case strings.HasPrefix(line, "id: "):
			ev.id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "event: "):
			ev.event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			ev.data += strings.TrimPrefix(line, "data: ")
		default:
			t.Fatalf("unexpected line %q in the event stream", line)
		}
	}
}

// eventRecord is the data of an event "message".
type eventRecord struct {
	Offset, Next int64
	Key, Value   string
}

// checkMessageEvent checks that ev is the event of the message key=value
// stored from offset to next.
func checkMessageEvent(t *testing.T, ev sseEvent, offset, next int64, key, value string) {
	t.Helper()
	if ev.event != "message" || ev.id != strconv.FormatInt(next, 10) {
		t.Fatalf("event %+v: want event message with id %d", ev, next)
	}
	var rec eventRecord
	if err := json.Unmarshal([]byte(ev.data), &rec); err != nil {
		t.Fatalf("event data %q: %v", ev.data, err)
	}
	if rec != (eventRecord{Offset: offset, Next: next, Key: key, Value: value}) {
		t.Fatalf("event data %+v, want %s=%s from %d to %d", rec, key, value, offset, next)
	}
}

// TestEventsFollowTheTail: an event stream without from starts at the end
// (from=0 replays), and one of a stream not written yet waits for it and
// sends it from its first message.
func TestEventsFollowTheTail(t *testing.T) {
	users := usersWith(t, map[string][]string{"writer": {"all:write"}})
	h := startServer(t, server.Config{Vault: memVault(t), Users: users})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	t.Cleanup(func() { h.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	open := func(path string) *bufio.Reader {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.SetBasicAuth("writer", testPassword)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d", path, resp.StatusCode)
		}
		return bufio.NewReader(resp.Body)
	}

	waiting := open("/streams/later/events")
	first := publishOne(t, h, "later", "writer", "k1", "v1")
	checkMessageEvent(t, readEvent(t, waiting), 0, first.Position, "k1", "v1")

	tail := open("/streams/later/events")
	replay := open("/streams/later/events?from=0")
	second := publishOne(t, h, "later", "writer", "k2", "v2")
	checkMessageEvent(t, readEvent(t, tail), first.Position, second.Position, "k2", "v2")
	checkMessageEvent(t, readEvent(t, replay), 0, first.Position, "k1", "v1")
	checkMessageEvent(t, readEvent(t, replay), first.Position, second.Position, "k2", "v2")
	checkMessageEvent(t, readEvent(t, waiting), first.Position, second.Position, "k2", "v2")
}

// TestEventsResumeFromLastEventID: an event stream opened with
// Last-Event-ID (the id of the last event the client saw: the position
// after the 2nd message) starts with the 3rd message, whatever ?from=
// says, and goes on with messages published later; a Last-Event-ID that is
// not a position, or is past the stream's position, is answered 400.
func TestEventsResumeFromLastEventID(t *testing.T) {
	users := usersWith(t, map[string][]string{"writer": {"tail:write"}})
	h := startServer(t, server.Config{Vault: memVault(t), Users: users})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	t.Cleanup(func() { h.Close() }) // before srv.Close: ends the event streams
	var pubs []publishAnswer
	for i := 1; i <= 3; i++ {
		pubs = append(pubs, publishOne(t, h, "tail", "writer", fmt.Sprintf("k%d", i), fmt.Sprintf("v%d", i)))
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/streams/tail/events?from=0", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth("writer", testPassword)
	req.Header.Set("Last-Event-ID", strconv.FormatInt(pubs[1].Position, 10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("event stream: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	rd := bufio.NewReader(resp.Body)
	checkMessageEvent(t, readEvent(t, rd), pubs[1].Position, pubs[2].Position, "k3", "v3")
	fourth := publishOne(t, h, "tail", "writer", "k4", "v4")
	checkMessageEvent(t, readEvent(t, rd), pubs[2].Position, fourth.Position, "k4", "v4")

	for _, tc := range []struct{ id, msg string }{
		{"abc", `Last-Event-ID "abc": want a position`},
		{"-1", `Last-Event-ID "-1": want a position`},
		{"1.5", `Last-Event-ID "1.5": want a position`},
		{strconv.FormatInt(fourth.Position+1, 10), fmt.Sprintf("from=%d is past the stream's position %d", fourth.Position+1, fourth.Position)},
	} {
		rec := serve(t, h, call{method: "GET", path: "/streams/tail/events", user: "writer", header: map[string]string{"Last-Event-ID": tc.id}})
		wantError(t, rec, http.StatusBadRequest, "bad-request", tc.msg)
	}
}

// fakeNode is a server.Node that is a follower of the leader it is told.
type fakeNode struct {
	mu        sync.Mutex
	leader    string // what Leader returns
	next      string // what Refresh returns
	refreshes int
}

func (n *fakeNode) Role() string { return "follower" }

func (n *fakeNode) Leader() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.leader
}

func (n *fakeNode) Refresh(ctx context.Context) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.refreshes++
	return n.next
}

func (n *fakeNode) refreshed() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.refreshes
}

// forwardedRequest is what a fake leader received.
type forwardedRequest struct {
	method, path   string
	user, password string
	basic          bool
	header         http.Header
	body           []byte
	query          string
}

// fakeLeader records the requests it gets and answers them with answer.
type fakeLeader struct {
	*httptest.Server
	got chan forwardedRequest
}

func newFakeLeader(t *testing.T, answer http.HandlerFunc) *fakeLeader {
	t.Helper()
	fl := &fakeLeader{got: make(chan forwardedRequest, 16)}
	fl.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		user, password, ok := r.BasicAuth()
		fl.got <- forwardedRequest{r.Method, r.URL.Path, user, password, ok, r.Header.Clone(), body, r.URL.RawQuery}
		answer(w, r)
	}))
	t.Cleanup(fl.Close)
	return fl
}

// received returns the requests the leader got so far. (A follower
// answers after its leader did: no request is still on its way.)
func (fl *fakeLeader) received() []forwardedRequest {
	var out []forwardedRequest
	for {
		select {
		case r := <-fl.got:
			out = append(out, r)
		default:
			return out
		}
	}
}

// answerWith returns a handler answering status, with the header
// Content-Type: application/json, the headers extra and body.
func answerWith(status int, body string, extra map[string]string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		for k, v := range extra {
			w.Header().Set(k, v)
		}
		w.WriteHeader(status)
		io.WriteString(w, body)
	}
}

const (
	clusterSecret = "cluster-s3cret"
	followerURL   = "http://follower.example:8001"
)

// followerUsers returns the users of the followers: alice, who may write
// the stream orders, and reader, who may read it. (Followers of one test
// share them: each password is checked with bcrypt once.)
func followerUsers(t *testing.T) *auth.Users {
	t.Helper()
	return usersWith(t, map[string][]string{"alice": {"orders:write", "orders:trim"}, "reader": {"orders:read"}})
}

// newFollower returns a follower server of node, authenticating users.
func newFollower(t *testing.T, users *auth.Users, node server.Node, secret string) *server.Server {
	t.Helper()
	return startServer(t, server.Config{Storage: mem.New(), Node: node, ClusterSecret: secret, Self: followerURL, Users: users})
}

// checkForwarded checks that got is the one request forwarded for alice
// with the cluster credential and the follower's headers.
func checkForwarded(t *testing.T, got []forwardedRequest, method, path, body string) forwardedRequest {
	t.Helper()
	if len(got) != 1 {
		t.Fatalf("the leader got %d requests, want 1", len(got))
	}
	r := got[0]
	if r.method != method || r.path != path || string(r.body) != body {
		t.Errorf("the leader got %s %s %q, want %s %s %q", r.method, r.path, r.body, method, path, body)
	}
	if !r.basic || r.user != server.ClusterUser || r.password != clusterSecret {
		t.Errorf("the leader got credentials %q:%q (Basic: %v), want the cluster user %q and secret", r.user, r.password, r.basic, server.ClusterUser)
	}
	for k, want := range map[string]string{
		"X-Messagevault-Forwarded":     "1",
		"X-Messagevault-Forwarded-For": "alice",
		"X-Messagevault-Node":          followerURL,
	} {
		if got := r.header.Get(k); got != want {
			t.Errorf("the leader got %s: %q, want %q", k, got, want)
		}
	}
	return r
}

// TestFollowerForwardsWrites: a follower forwards a publish (JSON route,
// the transfer route) and a producer lookup to the leader it knows, as the
// cluster user with the cluster secret, naming the user and itself,
// passing the body, the Content-Type and the MessageVault-* headers and
// its request id; it relays the leader's status, body, Content-Type,
// Retry-After and MessageVault-* headers, and nothing else. A user without
// the claim is refused by the follower, without a forward.
func TestFollowerForwardsWrites(t *testing.T) {
	users := followerUsers(t)
	answer := `{"Position":4096,"Offsets":[0]}` + "\n"
	leader := newFakeLeader(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			answerWith(http.StatusOK, `{"Stream":"orders","Producer":"p1","Sequence":7,"Known":true}`, nil)(w, r)
			return
		}
		if r.Method == http.MethodPut {
			answerWith(http.StatusOK, `{"Name":"jobs","Position":0}`, map[string]string{"ETag": `"e2"`})(w, r)
			return
		}
		answerWith(http.StatusOK, answer, map[string]string{server.DuplicateHeader: "true", "X-Leader-Private": "x"})(w, r)
	})
	node := &fakeNode{leader: leader.URL, next: leader.URL}
	h := newFollower(t, users, node, clusterSecret)

	t.Run("JSON publish", func(t *testing.T) {
		body := `[{"key":"k","value":"v"}]`
		rec := serve(t, h, call{method: "POST", path: "/streams/orders/messages", user: "alice", body: body, contentType: "application/json",
			header: map[string]string{server.ProducerHeader: "p1", server.SequenceHeader: "7", "X-Custom": "not forwarded"}})
		if rec.Code != http.StatusOK || rec.Body.String() != answer {
			t.Fatalf("the follower answered %d %q, want the leader's 200 %q", rec.Code, rec.Body, answer)
		}
		if rec.Header().Get(server.DuplicateHeader) != "true" || rec.Header().Get("X-Leader-Private") != "" || rec.Header().Get("Content-Type") != "application/json; charset=utf-8" {
			t.Fatalf("the follower relayed the headers %v", rec.Header())
		}
		r := checkForwarded(t, leader.received(), "POST", "/streams/orders/messages", body)
		for k, want := range map[string]string{
			"Content-Type":        "application/json",
			server.ProducerHeader: "p1",
			server.SequenceHeader: "7",
			"X-Request-Id":        rec.Header().Get("X-Request-Id"),
			"X-Custom":            "",
		} {
			if got := r.header.Get(k); got != want {
				t.Errorf("the leader got %s: %q, want %q", k, got, want)
			}
		}
	})

	t.Run("cursor PUT", func(t *testing.T) {
		body := `{"Position": 0}`
		rec := serve(t, h, call{method: "PUT", path: "/streams/orders/cursors/jobs", user: "alice", body: body, contentType: "application/json",
			header: map[string]string{"If-Match": `"e1"`}})
		if rec.Code != http.StatusOK || rec.Header().Get("ETag") != `"e2"` {
			t.Fatalf("the follower answered %d %q with ETag %q, want the leader's", rec.Code, rec.Body, rec.Header().Get("ETag"))
		}
		r := checkForwarded(t, leader.received(), "PUT", "/streams/orders/cursors/jobs", body)
		if got := r.header.Get("If-Match"); got != `"e1"` {
			t.Fatalf("the leader got If-Match %q: the compare-and-swap was lost", got)
		}
	})

	t.Run("trim", func(t *testing.T) {
		rec := serve(t, h, call{method: "DELETE", path: "/streams/orders/messages?before=4096", user: "alice"})
		if rec.Code != http.StatusOK {
			t.Fatalf("the follower answered %d %q", rec.Code, rec.Body)
		}
		if r := checkForwarded(t, leader.received(), "DELETE", "/streams/orders/messages", ""); r.query != "before=4096" {
			t.Fatalf("the leader got the query %q, want before=4096", r.query)
		}
	})

	t.Run("transfer publish", func(t *testing.T) {
		body, err := formats.AppendTransfer(nil, []messagevault.Message{messagevault.NewMessage([]byte("k"), []byte("v"), 0)})
		if err != nil {
			t.Fatal(err)
		}
		rec := serve(t, h, call{method: "POST", path: "/streams/orders", user: "alice", body: string(body), contentType: "application/octet-stream"})
		if rec.Code != http.StatusOK || rec.Body.String() != answer {
			t.Fatalf("the follower answered %d %q, want the leader's 200 %q", rec.Code, rec.Body, answer)
		}
		r := checkForwarded(t, leader.received(), "POST", "/streams/orders", string(body))
		if got := r.header.Get("Content-Type"); got != "application/octet-stream" {
			t.Errorf("the leader got Content-Type %q", got)
		}
	})

	t.Run("producer lookup", func(t *testing.T) {
		rec := serve(t, h, call{method: "GET", path: "/streams/orders/producers/p1", user: "alice"})
		var got struct {
			Sequence uint64
			Known    bool
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || rec.Code != http.StatusOK || got.Sequence != 7 || !got.Known {
			t.Fatalf("the follower answered %d %s (%v), want the leader's answer", rec.Code, rec.Body, err)
		}
		checkForwarded(t, leader.received(), "GET", "/streams/orders/producers/p1", "")
	})

	t.Run("the leader's refusal is relayed", func(t *testing.T) {
		refusal := `{"Error":"producer sequence too old","Type":"sequence-too-old"}` + "\n"
		conflict := newFakeLeader(t, answerWith(http.StatusConflict, refusal, nil))
		node := &fakeNode{leader: conflict.URL, next: conflict.URL}
		h := newFollower(t, users, node, clusterSecret)
		rec := serve(t, h, call{method: "POST", path: "/streams/orders/messages", user: "alice", body: `[{"key":"k","value":"v"}]`, contentType: "application/json"})
		if rec.Code != http.StatusConflict || rec.Body.String() != refusal {
			t.Fatalf("the follower answered %d %q, want the leader's 409 %q", rec.Code, rec.Body, refusal)
		}
		checkForwarded(t, conflict.received(), "POST", "/streams/orders/messages", `[{"key":"k","value":"v"}]`)
		if n := node.refreshed(); n != 0 {
			t.Fatalf("the follower looked for another leader (%d times) after an answer", n)
		}
	})

	t.Run("the follower checks the claim first", func(t *testing.T) {
		rec := serve(t, h, call{method: "POST", path: "/streams/orders/messages", user: "reader", body: `[{"key":"k","value":"v"}]`, contentType: "application/json"})
		wantError(t, rec, http.StatusForbidden, "forbidden", `user "reader" needs the claim "orders:write"`)
		if got := leader.received(); len(got) != 0 {
			t.Fatalf("a refused publish reached the leader: %+v", got)
		}
	})

	t.Run("the follower checks the body first", func(t *testing.T) {
		rec := serve(t, h, call{method: "POST", path: "/streams/orders/messages", user: "alice", body: `[]`, contentType: "application/json"})
		wantError(t, rec, http.StatusBadRequest, "bad-request", "empty batch")
		if got := leader.received(); len(got) != 0 {
			t.Fatalf("a refused publish reached the leader: %+v", got)
		}
	})
}

// notLeaderAnswer is what a node that does not lead answers a forwarded
// write.
const notLeaderAnswer = `{"Error":"this node does not lead (the write was not applied): retry shortly","Type":"not-leader"}` + "\n"

// deadURL returns the URL of a server that is no longer listening.
func deadURL(t *testing.T) string {
	t.Helper()
	dead := httptest.NewServer(http.NotFoundHandler())
	url := dead.URL
	dead.Close()
	return url
}

// TestFollowerFindsTheNewLeader: when the leader a follower knows proves
// that it did not apply a forwarded write (it answers 503 "not-leader", or
// takes no connection), the follower re-reads the published leader and
// sends the write to the new one, relaying its answer.
func TestFollowerFindsTheNewLeader(t *testing.T) {
	users := followerUsers(t)
	body := `[{"key":"k","value":"v"}]`
	answer := `{"Position":4096,"Offsets":[0]}` + "\n"
	for _, tc := range []struct {
		name string
		// old starts the old leader and returns its URL and how many
		// requests it got.
		old     func(t *testing.T) (url string, got func() int)
		oldGets int
	}{
		{"the old leader no longer leads", func(t *testing.T) (string, func() int) {
			old := newFakeLeader(t, answerWith(http.StatusServiceUnavailable, notLeaderAnswer, map[string]string{"Retry-After": "1"}))
			return old.URL, func() int { return len(old.received()) }
		}, 1},
		{"the old leader is unreachable", func(t *testing.T) (string, func() int) {
			return deadURL(t), func() int { return 0 }
		}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			oldURL, oldGot := tc.old(t)
			next := newFakeLeader(t, answerWith(http.StatusOK, answer, nil))
			node := &fakeNode{leader: oldURL, next: next.URL}
			h := newFollower(t, users, node, clusterSecret)
			rec := serve(t, h, call{method: "POST", path: "/streams/orders/messages", user: "alice", body: body, contentType: "application/json"})
			if rec.Code != http.StatusOK || rec.Body.String() != answer {
				t.Fatalf("the follower answered %d %q, want the new leader's 200 %q", rec.Code, rec.Body, answer)
			}
			if n := node.refreshed(); n != 1 {
				t.Errorf("the follower re-read the leader %d times, want 1", n)
			}
			if n := oldGot(); n != tc.oldGets {
				t.Errorf("the old leader got the write %d times, want %d", n, tc.oldGets)
			}
			checkForwarded(t, next.received(), "POST", "/streams/orders/messages", body)
		})
	}
}

// checkRelayed checks that rec is the leader's answer status and body,
// with its Content-Type and Retry-After.
func checkRelayed(t *testing.T, rec *httptest.ResponseRecorder, status int, body string) {
	t.Helper()
	if rec.Code != status || rec.Body.String() != body {
		t.Fatalf("the follower answered %d %q, want the leader's %d %q", rec.Code, rec.Body, status, body)
	}
	if ct, ra := rec.Header().Get("Content-Type"), rec.Header().Get("Retry-After"); ct != "application/json; charset=utf-8" || ra != "1" {
		t.Fatalf("the follower relayed Content-Type %q and Retry-After %q", ct, ra)
	}
}

// TestFollowerWithoutALeader: what a follower answers when the write
// cannot be applied through it. A leader that no longer leads, with no
// other one published within server.LeaderWait: its 503 "not-leader" is
// relayed. An unreachable leader, with no other one: 503 "unavailable"
// saying the leader did not answer (not that none is known, and not the
// dial error). No leader known: 503 "unavailable", no leader known. No
// cluster secret: 503 "unavailable" saying so, and where the leader is. A leader answering 503 for another
// reason (the write may have been applied): relayed at once, without
// looking for another leader. A write already forwarded once: 503
// "not-leader", not forwarded again.
func TestFollowerWithoutALeader(t *testing.T) {
	users := followerUsers(t)
	body := `[{"key":"k","value":"v"}]`
	publish := call{method: "POST", path: "/streams/orders/messages", user: "alice", body: body, contentType: "application/json"}

	t.Run("the leader no longer leads, and no other is published", func(t *testing.T) {
		old := newFakeLeader(t, answerWith(http.StatusServiceUnavailable, notLeaderAnswer, map[string]string{"Retry-After": "1"}))
		node := &fakeNode{leader: old.URL, next: old.URL}
		h := newFollower(t, users, node, clusterSecret)
		start := time.Now()
		rec := serve(t, h, publish)
		took := time.Since(start)
		checkRelayed(t, rec, http.StatusServiceUnavailable, notLeaderAnswer)
		if n := node.refreshed(); n < 2 || took < server.LeaderWait {
			t.Errorf("the follower re-read the leader %d times over %v, want it to keep looking for %v", n, took, server.LeaderWait)
		}
		checkForwarded(t, old.received(), "POST", "/streams/orders/messages", body)
	})

	t.Run("the leader is unreachable, and no other is published", func(t *testing.T) {
		dead := deadURL(t)
		node := &fakeNode{leader: dead, next: dead}
		h := newFollower(t, users, node, clusterSecret)
		rec := serve(t, h, publish)
		e := wantError(t, rec, http.StatusServiceUnavailable, "unavailable", "the leader did not answer the forwarded write: retry shortly")
		// The leader is known: the answer does not say otherwise, nor
		// show the dial error.
		if strings.Contains(e.Error, "no leader is known") || strings.Contains(e.Error, "dial") || strings.Contains(e.Error, "refused") {
			t.Errorf("the answer %q says no leader is known, or shows the dial error", e.Error)
		}
		if n := node.refreshed(); n < 2 {
			t.Errorf("the follower re-read the leader %d times, want it to keep looking", n)
		}
	})

	t.Run("no leader is known", func(t *testing.T) {
		node := &fakeNode{}
		h := newFollower(t, users, node, clusterSecret)
		start := time.Now()
		rec := serve(t, h, publish)
		took := time.Since(start)
		wantError(t, rec, http.StatusServiceUnavailable, "unavailable", "no leader is known")
		if n := node.refreshed(); n < 2 || took < server.LeaderWait {
			t.Errorf("the follower re-read the leader %d times over %v, want it to keep looking for %v", n, took, server.LeaderWait)
		}
	})

	t.Run("no cluster secret", func(t *testing.T) {
		leader := newFakeLeader(t, answerWith(http.StatusOK, `{"Position":4096,"Offsets":[0]}`, nil))
		node := &fakeNode{leader: leader.URL, next: leader.URL}
		h := newFollower(t, users, node, "")
		// Not a passing state to retry: a node set up without the cluster
		// secret; the answer says so and where the leader is.
		wantError(t, serve(t, h, publish), http.StatusServiceUnavailable, "unavailable", "this node does not forward writes (it has no cluster secret): send them to the leader at "+leader.URL)
		if got := leader.received(); len(got) != 0 {
			t.Fatalf("a follower without the cluster secret forwarded: %+v", got)
		}
	})

	t.Run("the leader is unavailable for another reason", func(t *testing.T) {
		busy := `{"Error":"writer fenced: another writer owns the stream (request 0123456789abcdef)","Type":"unavailable"}` + "\n"
		leader := newFakeLeader(t, answerWith(http.StatusServiceUnavailable, busy, map[string]string{"Retry-After": "1"}))
		other := newFakeLeader(t, answerWith(http.StatusOK, `{"Position":4096,"Offsets":[0]}`, nil))
		node := &fakeNode{leader: leader.URL, next: other.URL}
		h := newFollower(t, users, node, clusterSecret)
		rec := serve(t, h, publish)
		checkRelayed(t, rec, http.StatusServiceUnavailable, busy)
		if n, got := node.refreshed(), other.received(); n != 0 || len(got) != 0 {
			t.Fatalf("a write the leader may have applied was sent elsewhere (%d re-reads, %d requests)", n, len(got))
		}
		checkForwarded(t, leader.received(), "POST", "/streams/orders/messages", body)
	})

	t.Run("a write already forwarded once", func(t *testing.T) {
		leader := newFakeLeader(t, answerWith(http.StatusOK, `{"Position":4096,"Offsets":[0]}`, nil))
		node := &fakeNode{leader: leader.URL, next: leader.URL}
		h := newFollower(t, users, node, clusterSecret)
		c := publish
		c.header = map[string]string{"X-Messagevault-Forwarded": "1"}
		wantError(t, serve(t, h, c), http.StatusServiceUnavailable, "not-leader", "does not lead (the write was not applied)")
		if got := leader.received(); len(got) != 0 {
			t.Fatalf("a forwarded write was forwarded again: %+v", got)
		}
	})
}

// TestForwardingBetweenRealServers: a real leader server accepts a write a
// real follower forwards with the cluster secret (for a user it does not
// know), and stores it; a follower that gets a forwarded write answers
// "not-leader", and the follower that sent it finds the leader; a request
// with the cluster user and a wrong secret is refused 401.
func TestForwardingBetweenRealServers(t *testing.T) {
	v := memVault(t)
	leaderUsers := usersWith(t, map[string][]string{"admin": {"all:write"}})
	leaderSrv := httptest.NewServer(startServer(t, server.Config{Vault: v, Users: leaderUsers, ClusterSecret: clusterSecret}))
	users := followerUsers(t)
	t.Cleanup(leaderSrv.Close)
	// Another follower, which thinks the first one leads.
	otherSrv := httptest.NewServer(newFollower(t, users, &fakeNode{leader: followerURL}, clusterSecret))
	t.Cleanup(otherSrv.Close)
	node := &fakeNode{leader: otherSrv.URL, next: leaderSrv.URL}
	h := newFollower(t, users, node, clusterSecret)

	body := `[{"key":"forwarded","value":"through two followers"}]`
	rec := serve(t, h, call{method: "POST", path: "/streams/orders/messages", user: "alice", body: body, contentType: "application/json"})
	var ans publishAnswer
	if err := json.Unmarshal(rec.Body.Bytes(), &ans); err != nil || rec.Code != http.StatusOK || len(ans.Offsets) != 1 {
		t.Fatalf("publish through the follower: %d %s (%v)", rec.Code, rec.Body, err)
	}
	if n := node.refreshed(); n != 1 {
		t.Errorf("the follower re-read the leader %d times, want 1", n)
	}

	req, err := http.NewRequest(http.MethodGet, leaderSrv.URL+"/streams/orders/messages", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth("admin", testPassword)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var read struct {
		Position int64
		Messages []struct{ Key, Value string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&read); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || read.Position != ans.Position || len(read.Messages) != 1 || read.Messages[0].Key != "forwarded" || read.Messages[0].Value != "through two followers" {
		t.Fatalf("the leader reads %d %+v, want the forwarded message", resp.StatusCode, read)
	}

	req, err = http.NewRequest(http.MethodPost, leaderSrv.URL+"/streams/orders/messages", bytes.NewReader([]byte(body)))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.SetBasicAuth(server.ClusterUser, "not the secret")
	resp2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp2.Body.Close()
	b, err := io.ReadAll(resp2.Body)
	if err != nil {
		t.Fatal(err)
	}
	if e := decodeError(t, b); resp2.StatusCode != http.StatusUnauthorized || e.Type != "unauthorized" {
		t.Fatalf("the cluster user with a wrong secret: %d %s", resp2.StatusCode, b)
	}
}

// TestReadFromInsideARecord: a read or an event stream asked to start at
// a position inside a record is a 400 naming the position, not a 500
// "corrupt" (which would be logged, counted and shown as a damaged
// stream).
func TestReadFromInsideARecord(t *testing.T) {
	users := usersWith(t, map[string][]string{"ann": {"orders:read", "orders:write"}})
	v := memVault(t)
	h := startServer(t, server.Config{Vault: v, Users: users})
	res, err := v.Append(context.Background(), "orders", []messagevault.Message{messagevault.NewMessage([]byte("k"), []byte("one"), 0), messagevault.NewMessage([]byte("k"), []byte("two"), 0)})
	if err != nil {
		t.Fatal(err)
	}
	inside := strconv.FormatInt(res.Offsets[1]+3, 10)
	for _, c := range []call{
		{method: "GET", path: "/streams/orders/messages?from=" + inside, user: "ann"},
		{method: "GET", path: "/streams/orders/messages?format=raw&from=" + inside, user: "ann"},
		{method: "GET", path: "/streams/orders/events", user: "ann", header: map[string]string{"Last-Event-ID": inside}},
		{method: "GET", path: "/streams/orders/events?from=" + inside, user: "ann"},
	} {
		wantError(t, serve(t, h, c), http.StatusBadRequest, "bad-request", "no record starts at "+inside+"; the nearest record starts are "+fmt.Sprint(res.Offsets[1])+" and "+fmt.Sprint(res.Position))
	}
	// Inside the first record: its start and the second's.
	wantError(t, serve(t, h, call{method: "GET", path: "/streams/orders/messages?from=5", user: "ann"}), http.StatusBadRequest, "bad-request", "no record starts at 5; the nearest record starts are 0 and "+fmt.Sprint(res.Offsets[1]))
	// From a record's start, the read works.
	rec := serve(t, h, call{method: "GET", path: "/streams/orders/messages?from=" + strconv.FormatInt(res.Offsets[1], 10), user: "ann"})
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"Value":"two"`) {
		t.Fatalf("read from a record start: %d %s", rec.Code, rec.Body)
	}
}

// TestDeleteStreamRoute: DELETE /streams/{s} on the leader removes the
// stream (gone from reads and listing; 404 after), for all:write only; a
// bad name is a 400; a follower forwards it to the leader as a write.
func TestDeleteStreamRoute(t *testing.T) {
	users := usersWith(t, map[string][]string{"alice": {"all:write"}, "bob": {"orders:write", "orders:read"}})
	v := memVault(t)
	h := startServer(t, server.Config{Vault: v, Users: users})
	if _, err := v.Append(context.Background(), "orders", []messagevault.Message{messagevault.NewMessage([]byte("k"), []byte("v"), 0)}); err != nil {
		t.Fatal(err)
	}
	wantError(t, serve(t, h, call{method: "DELETE", path: "/streams/orders", user: "bob"}), http.StatusForbidden, "forbidden", "all:write")
	wantError(t, serve(t, h, call{method: "DELETE", path: "/streams/bad..name", user: "alice"}), http.StatusBadRequest, "bad-request", "bad..name")
	rec := serve(t, h, call{method: "DELETE", path: "/streams/orders", user: "alice"})
	if rec.Code != http.StatusOK || rec.Body.String() != `{"Deleted":true,"Stream":"orders"}`+"\n" {
		t.Fatalf("delete: %d %s", rec.Code, rec.Body)
	}
	wantError(t, serve(t, h, call{method: "GET", path: "/streams/orders/messages", user: "bob"}), http.StatusNotFound, "not-found", "orders")
	wantError(t, serve(t, h, call{method: "DELETE", path: "/streams/orders", user: "alice"}), http.StatusNotFound, "not-found", "orders")
	if list := serve(t, h, call{method: "GET", path: "/streams", user: "alice"}); strings.Contains(list.Body.String(), `"orders"`) {
		t.Fatalf("the deleted stream is still listed: %s", list.Body)
	}
	// Written again: a new stream from 0.
	res, err := v.Append(context.Background(), "orders", []messagevault.Message{messagevault.NewMessage([]byte("k"), []byte("new"), 0)})
	if err != nil || res.Offsets[0] != 0 {
		t.Fatalf("append after the delete: %v at %v, want offset 0", err, res.Offsets)
	}

	leader := newFakeLeader(t, answerWith(http.StatusOK, `{"Deleted":true,"Stream":"orders"}`, nil))
	f := newFollower(t, users, &fakeNode{leader: leader.URL, next: leader.URL}, clusterSecret)
	checkRelayed200 := serve(t, f, call{method: "DELETE", path: "/streams/orders", user: "alice"})
	if checkRelayed200.Code != http.StatusOK || checkRelayed200.Body.String() != `{"Deleted":true,"Stream":"orders"}` {
		t.Fatalf("the follower answered %d %s", checkRelayed200.Code, checkRelayed200.Body)
	}
	checkForwarded(t, leader.received(), "DELETE", "/streams/orders", "")
}

// TestReadSince: ?since=<RFC 3339> starts a read or an event stream at the
// first message written at or after that time; a time after the last
// message gives no messages and Next at the position; a bad time, or since
// with from, is a 400.
func TestReadSince(t *testing.T) {
	users := usersWith(t, map[string][]string{"ann": {"orders:read"}})
	t0 := time.Date(2026, 12, 4, 5, 0, 0, 0, time.UTC)
	var clock atomic.Int64
	v := vault.New(mem.New(), vault.Config{Writer: stream.WriterConfig{Now: func() time.Time { return t0.Add(time.Duration(clock.Load())) }}})
	t.Cleanup(func() { v.Close() })
	h := startServer(t, server.Config{Vault: v, Users: users})
	var offsets []int64
	for i, value := range []string{"first", "second", "third"} {
		clock.Store(int64(i) * int64(time.Second))
		res, err := v.Append(context.Background(), "orders", []messagevault.Message{messagevault.NewMessage([]byte("k"), []byte(value), 0)})
		if err != nil {
			t.Fatal(err)
		}
		offsets = append(offsets, res.Offsets[0])
	}
	pos := v.Positions()["orders"]
	read := func(since string) (int, []string, int64) {
		t.Helper()
		rec := serve(t, h, call{method: "GET", path: "/streams/orders/messages?since=" + url.QueryEscape(since), user: "ann"})
		if rec.Code != http.StatusOK {
			t.Fatalf("since=%s: %d %s", since, rec.Code, rec.Body)
		}
		var ans struct {
			Messages []struct {
				Offset int64
				Value  string
			}
			Next int64
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &ans); err != nil {
			t.Fatal(err)
		}
		var values []string
		for _, m := range ans.Messages {
			values = append(values, m.Value)
		}
		first := int64(-1)
		if len(ans.Messages) > 0 {
			first = ans.Messages[0].Offset
		}
		return int(first), values, ans.Next
	}
	for _, tc := range []struct {
		since string
		want  string
		first int64
	}{
		{"2026-12-04T04:59:00Z", "first second third", offsets[0]},
		{"2026-12-04T05:00:00Z", "first second third", offsets[0]},
		{"2026-12-04T05:00:00.001Z", "second third", offsets[1]},
		{"2026-12-04T05:00:01Z", "second third", offsets[1]},
		{"2026-12-04T06:00:01.5+01:00", "third", offsets[2]},
	} {
		first, values, _ := read(tc.since)
		if strings.Join(values, " ") != tc.want || int64(first) != tc.first {
			t.Errorf("since=%s: %v from %d, want %s from %d", tc.since, values, first, tc.want, tc.first)
		}
	}
	// An offset's "+" sent unencoded (it arrives as a space).
	if rec := serve(t, h, call{method: "GET", path: "/streams/orders/messages?since=2026-12-04T06:00:01.5+01:00", user: "ann"}); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"Value":"third"`) || strings.Contains(rec.Body.String(), `"Value":"second"`) {
		t.Errorf("since with an unencoded +: %d %s", rec.Code, rec.Body)
	}
	if first, values, next := read("2026-12-04T05:00:03Z"); first != -1 || len(values) != 0 || next != pos {
		t.Errorf("since after the last message: %v from %d, Next %d; want none, Next %d", values, first, next, pos)
	}
	// The event stream starts there too.
	srv := httptest.NewServer(h)
	defer srv.Close()
	req, err := http.NewRequest("GET", srv.URL+"/streams/orders/events?since=2026-12-04T05:00:02Z", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth("ann", testPassword)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	// The first event is the third message (whose id is the position
	// after it); before it, an id alone gives where the stream starts.
	rd := bufio.NewReader(resp.Body)
	start, err := rd.ReadString('\n')
	ev := readEvent(t, rd)
	resp.Body.Close()
	if err != nil || ev.event != "message" || ev.id != strconv.FormatInt(pos, 10) || !strings.Contains(ev.data, `"Value":"third"`) || !strings.HasPrefix(start, "id: ") {
		t.Errorf("event stream since the third message: %q then %+v (%v), want the third message with id %d", start, ev, err, pos)
	}
	wantError(t, serve(t, h, call{method: "GET", path: "/streams/orders/messages?since=yesterday", user: "ann"}), http.StatusBadRequest, "bad-request", `since="yesterday"`)
	wantError(t, serve(t, h, call{method: "GET", path: "/streams/orders/messages?since=2026-12-04T05:00:00Z&from=0", user: "ann"}), http.StatusBadRequest, "bad-request", "from and since")
}
