package server_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/messagevault/messagevault/auth"
	"github.com/messagevault/messagevault/file"
	"github.com/messagevault/messagevault/server"
	"github.com/messagevault/messagevault/vault"
)

// TestAnswersLeakNothing: an error answer names no path of the server's
// (a 404 used to show the data directory), and the request id is always
// the server's own, whatever id the client sends.
func TestAnswersLeakNothing(t *testing.T) {
	dir := t.TempDir()
	store, err := file.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	users, err := auth.Open(context.Background(), auth.NewFileSource(filepath.Join(dir, "auth.json")), nil)
	if err != nil {
		t.Fatal(err)
	}
	users.Add(context.Background(), "u", "p", "all:read")
	v := vault.New(store, vault.Config{})
	defer v.Close()
	h := server.New(server.Config{Vault: v, Users: users})
	defer h.Close()
	serverID := regexp.MustCompile(`^[0-9a-f]{16}$`)
	seen := map[string]bool{}
	for _, clientID := range []string{"", "abc", "0123456789abcdef", "0123456789abcdef", "bad id\x01"} {
		req := httptest.NewRequest(http.MethodGet, "/streams/nowhere/messages?from=0", nil)
		req.SetBasicAuth("u", "p")
		if clientID != "" {
			req.Header.Set("X-Request-Id", clientID)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusNotFound || strings.Contains(rec.Body.String(), dir) || !strings.Contains(rec.Body.String(), `stream \"nowhere\" has never been written`) {
			t.Fatalf("404: %d %s", rec.Code, rec.Body)
		}
		id := rec.Header().Get("X-Request-Id")
		if !serverID.MatchString(id) || seen[id] || id == clientID {
			t.Fatalf("client id %q gave request id %q (seen before: %v)", clientID, id, seen[id])
		}
		seen[id] = true
	}
}
