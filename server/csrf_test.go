package server_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/messagevault/messagevault/server"
)

// TestCrossSiteWritesAreRefused: a page on another site cannot make a
// browser publish with the credentials it keeps for the server: a JSON
// publish must be application/json (which a page cannot send cross-site
// without the server's consent), and a write that a browser marks as
// cross-site (Sec-Fetch-Site, Origin) is refused. Reads, and clients that
// are not browsers, are unaffected.
func TestCrossSiteWritesAreRefused(t *testing.T) {
	users := newUsers(t)
	users.Add(context.Background(), "u", "p", "all:write")
	v := memVault(t)
	h := server.New(server.Config{Vault: v, Users: users})
	defer h.Close()
	json := `[{"key":"k","value":"v"}]`
	for _, tc := range []struct {
		name, method, path, contentType string
		headers                         map[string]string
		want                            int
	}{
		{"curl -d (a form body)", "POST", "/streams/csrf/messages", "application/x-www-form-urlencoded", nil, http.StatusUnsupportedMediaType},
		{"text/plain from another site", "POST", "/streams/csrf/messages", "text/plain", map[string]string{"Origin": "https://evil.example"}, http.StatusForbidden},
		{"JSON marked cross-site", "POST", "/streams/csrf/messages", "application/json", map[string]string{"Sec-Fetch-Site": "cross-site"}, http.StatusForbidden},
		{"JSON from another origin", "POST", "/streams/csrf/messages", "application/json", map[string]string{"Origin": "https://evil.example"}, http.StatusForbidden},
		{"binary from another origin", "POST", "/streams/csrf", "", map[string]string{"Origin": "null"}, http.StatusForbidden},
		{"JSON from a client", "POST", "/streams/csrf/messages", "application/json; charset=utf-8", nil, http.StatusOK},
		{"JSON from the server's own page", "POST", "/streams/csrf/messages", "application/json", map[string]string{"Origin": "http://mv.example:8001", "Sec-Fetch-Site": "same-origin"}, http.StatusOK},
		{"a read from another site", "GET", "/streams/csrf/messages?from=0", "", map[string]string{"Sec-Fetch-Site": "cross-site"}, http.StatusOK},
	} {
		var body *strings.Reader
		if tc.method == "POST" {
			body = strings.NewReader(json)
		} else {
			body = strings.NewReader("")
		}
		req := httptest.NewRequest(tc.method, "http://mv.example:8001"+tc.path, body)
		req.SetBasicAuth("u", "p")
		if tc.contentType != "" {
			req.Header.Set("Content-Type", tc.contentType)
		}
		for k, v := range tc.headers {
			req.Header.Set(k, v)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, rec.Code, strings.TrimSpace(rec.Body.String()), tc.want)
		}
	}
}
