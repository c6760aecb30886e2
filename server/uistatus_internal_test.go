package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/messagevault/messagevault/auth"
	"github.com/messagevault/messagevault/mem"
	"github.com/messagevault/messagevault/vault"
)

// TestUIStatusShowsOnlyWhatTheUserMayRead: /ui/status needs a claim; a
// user sees the errors of its own streams only, and the cluster's node
// URLs, the server's throughput and errors about no one stream are for
// users who may read every stream.
func TestUIStatusShowsOnlyWhatTheUserMayRead(t *testing.T) {
	users, err := auth.Open(context.Background(), auth.NewFileSource(filepath.Join(t.TempDir(), "auth.json")), nil)
	if err != nil {
		t.Fatal(err)
	}
	users.Add(context.Background(), "ops", "pw", "all:read")
	users.Add(context.Background(), "orders", "pw", "orders:read")
	users.Add(context.Background(), "nobody", "pw")
	v := vault.New(mem.New(), vault.Config{})
	defer v.Close()
	s := New(Config{Vault: v, Users: users, Self: "http://10.0.0.7:8001"})
	defer s.Close()
	s.status.failed(500, "r1", "orders", errors.New("orders failed"))
	s.status.failed(500, "r2", "billing", errors.New("billing failed"))
	s.status.failed(500, "r3", "", errors.New("listing failed"))
	s.status.follower("http://10.0.0.8:8001")
	get := func(user string) (int, map[string]any) {
		req := httptest.NewRequest(http.MethodGet, "/ui/status", nil)
		req.SetBasicAuth(user, "pw")
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		var out map[string]any
		json.Unmarshal(rec.Body.Bytes(), &out)
		return rec.Code, out
	}
	if code, _ := get("nobody"); code != http.StatusForbidden {
		t.Fatalf("a user without claims: %d", code)
	}
	errorsOf := func(out map[string]any) (ids []string) {
		for _, e := range out["Errors"].([]any) {
			ids = append(ids, e.(map[string]any)["RequestID"].(string))
		}
		return ids
	}
	code, out := get("orders")
	raw, _ := json.Marshal(out)
	if code != http.StatusOK || len(errorsOf(out)) != 1 || errorsOf(out)[0] != "r1" || out["Leader"] != "" || out["Node"] != "" ||
		strings.Contains(string(raw), "10.0.0.7") || strings.Contains(string(raw), "10.0.0.8") {
		t.Fatalf("orders' reader sees %s", raw)
	}
	code, out = get("ops")
	raw, _ = json.Marshal(out)
	if code != http.StatusOK || len(errorsOf(out)) != 3 || !strings.Contains(string(raw), "10.0.0.8") {
		t.Fatalf("an all:read user sees %s", raw)
	}
}
