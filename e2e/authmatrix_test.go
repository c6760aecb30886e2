package e2e_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/internal/mvtest"
)

// TestAuthMatrix sends every route as nobody, with a wrong password, as a
// reader of the stream, as the writer of another stream and as an admin,
// and checks each answer.
func TestAuthMatrix(t *testing.T) {
	dir := t.TempDir()
	users := usersWithAdmin(t, dir)
	users.Add(context.Background(), "reader", "reader-pw", "orders:read")
	users.Add(context.Background(), "other", "other-pw", "billing:write")
	s := mvtest.Start(t, dir, nil)
	publish(t, s, "orders", []messagevault.Message{msg("k", "v")})
	publish(t, s, "billing", []messagevault.Message{msg("k", "v")})

	type who struct{ name, user, pass string }
	nobody, wrong, reader, other, adm := who{"nobody", "", ""}, who{"wrong password", "admin", "nope"},
		who{"reader", "reader", "reader-pw"}, who{"other stream's writer", "other", "other-pw"}, who{"admin", admin, adminPass}
	body := func() []byte { return transfer(t, []messagevault.Message{msg("k", "matrix")}) }
	json := []byte(`[{"key":"k","value":"matrix"}]`)
	routes := []struct {
		method, path string
		body         []byte
		want         map[string]int // by who.name
	}{
		{"GET", "/", nil, map[string]int{"nobody": 200, "wrong password": 200, "reader": 200, "other stream's writer": 200, "admin": 200}},
		{"GET", "/healthz", nil, map[string]int{"nobody": 200, "wrong password": 200, "reader": 200, "other stream's writer": 200, "admin": 200}},
		{"GET", "/readyz", nil, map[string]int{"nobody": 200, "wrong password": 200, "reader": 200, "other stream's writer": 200, "admin": 200}},
		{"GET", "/metrics", nil, map[string]int{"nobody": 401, "wrong password": 401, "reader": 403, "other stream's writer": 403, "admin": 200}},
		{"POST", "/streams/orders", body(), map[string]int{"nobody": 401, "wrong password": 401, "reader": 403, "other stream's writer": 403, "admin": 200}},
		{"POST", "/streams/orders/messages", json, map[string]int{"nobody": 401, "wrong password": 401, "reader": 403, "other stream's writer": 403, "admin": 200}},
		{"GET", "/streams/orders", nil, map[string]int{"nobody": 401, "wrong password": 401, "reader": 200, "other stream's writer": 403, "admin": 200}},
		{"GET", "/streams/orders/messages", nil, map[string]int{"nobody": 401, "wrong password": 401, "reader": 200, "other stream's writer": 403, "admin": 200}},
		{"GET", "/streams/orders/events", nil, map[string]int{"nobody": 401, "wrong password": 401, "reader": 200, "other stream's writer": 403, "admin": 200}},
		{"GET", "/streams/billing/messages", nil, map[string]int{"nobody": 401, "wrong password": 401, "reader": 403, "other stream's writer": 200, "admin": 200}},
		{"GET", "/streams/orders/producers/p1", nil, map[string]int{"nobody": 401, "wrong password": 401, "reader": 403, "other stream's writer": 403, "admin": 200}},
		{"DELETE", "/streams/orders/grants", nil, map[string]int{"nobody": 401, "wrong password": 401, "reader": 403, "other stream's writer": 403, "admin": 501}},
		{"GET", "/streams", nil, map[string]int{"nobody": 401, "wrong password": 401, "reader": 200, "other stream's writer": 200, "admin": 200}},
		{"GET", "/ui/", nil, map[string]int{"nobody": 401, "wrong password": 401, "reader": 200, "other stream's writer": 200, "admin": 200}},
		{"GET", "/ui/status", nil, map[string]int{"nobody": 401, "wrong password": 401, "reader": 200, "other stream's writer": 200, "admin": 200}},
		// The user routes, in an order that leaves the other users as they were.
		{"GET", "/users", nil, map[string]int{"nobody": 401, "wrong password": 401, "reader": 403, "other stream's writer": 403, "admin": 200}},
		{"POST", "/users", []byte(`{"Name": "matrix", "Password": "matrix-pw", "Claims": ["orders:read"]}`), map[string]int{"nobody": 401, "wrong password": 401, "reader": 403, "other stream's writer": 403, "admin": 201}},
		{"PUT", "/users/matrix/password", []byte(`{"Password": "new-pw"}`), map[string]int{"nobody": 401, "wrong password": 401, "reader": 403, "other stream's writer": 403, "admin": 200}},
		{"POST", "/users/matrix/claims", []byte(`{"Grant": ["billing:read"]}`), map[string]int{"nobody": 401, "wrong password": 401, "reader": 403, "other stream's writer": 403, "admin": 200}},
		{"DELETE", "/users/matrix", nil, map[string]int{"nobody": 401, "wrong password": 401, "reader": 403, "other stream's writer": 403, "admin": 200}},
		// Tokens: each user for itself, within its own claims.
		{"POST", "/tokens", []byte(`{"Claims": ["orders:read"], "TTL": "1h"}`), map[string]int{"nobody": 401, "wrong password": 401, "reader": 201, "other stream's writer": 400, "admin": 201}},
		{"GET", "/tokens", nil, map[string]int{"nobody": 401, "wrong password": 401, "reader": 200, "other stream's writer": 200, "admin": 200}},
		{"DELETE", "/tokens/000000000000", nil, map[string]int{"nobody": 401, "wrong password": 401, "reader": 404, "other stream's writer": 404, "admin": 404}},
	}
	checked := 0
	for _, rt := range routes {
		for _, w := range []who{nobody, wrong, reader, other, adm} {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			contentType := ""
			if strings.HasSuffix(rt.path, "/messages") && rt.method == "POST" || (strings.HasPrefix(rt.path, "/users") || strings.HasPrefix(rt.path, "/tokens")) && rt.body != nil {
				contentType = "application/json"
			}
			req := s.Request(rt.method, rt.path, w.user, w.pass, rt.body, contentType).WithContext(ctx)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				cancel()
				t.Fatalf("%s %s as %s: %v", rt.method, rt.path, w.name, err)
			}
			resp.Body.Close() // an event stream is cut here: its status is what counts
			cancel()
			// Wrong passwords from one address are throttled after a few:
			// 429 is then the refusal a wrong password gets.
			if w.name == wrong.name && resp.StatusCode == http.StatusTooManyRequests && rt.want[w.name] == http.StatusUnauthorized {
				checked++
				continue
			}
			if want := rt.want[w.name]; resp.StatusCode != want {
				t.Errorf("%s %s as %s: %d, want %d", rt.method, rt.path, w.name, resp.StatusCode, want)
			}
			checked++
		}
	}
	// The reader listing shows only its stream.
	_, b, _ := do(t, s.Request("GET", "/streams", "reader", "reader-pw", nil, ""))
	if len(b) == 0 || strings.Contains(string(b), `"billing"`) {
		t.Fatalf("reader's listing: %s", b)
	}
	t.Logf("AUTH MATRIX: %d route x principal checks", checked)
}
