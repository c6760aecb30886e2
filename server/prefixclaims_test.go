package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/server"
)

// TestPrefixClaims: orders-*:read covers every stream whose name starts
// with orders-, and the listing shows the user those only.
func TestPrefixClaims(t *testing.T) {
	users := newUsers(t)
	if err := users.Add(context.Background(), "eu", "pw", "Orders-*:read"); err != nil {
		t.Fatal(err)
	}
	v := memVault(t)
	for _, name := range []string{"orders-eu", "orders-us", "orders", "billing"} {
		if _, err := v.Append(context.Background(), name, []messagevault.Message{messagevault.NewMessage(nil, []byte("v"), 0)}); err != nil {
			t.Fatal(err)
		}
	}
	h := server.New(server.Config{Vault: v, Users: users})
	defer h.Close()
	get := func(path string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.SetBasicAuth("eu", "pw")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	var list struct{ Streams []struct{ Name string } }
	json.Unmarshal(get("/streams").Body.Bytes(), &list)
	var names []string
	for _, s := range list.Streams {
		names = append(names, s.Name)
	}
	if len(names) != 2 || names[0] != "orders-eu" || names[1] != "orders-us" {
		t.Fatalf("listing for orders-*:read: %v", names)
	}
	for path, want := range map[string]int{
		"/streams/orders-us/messages?from=0": 200,
		"/streams/orders/messages?from=0":    403,
		"/streams/billing/messages?from=0":   403,
	} {
		if rec := get(path); rec.Code != want {
			t.Errorf("%s: %d, want %d", path, rec.Code, want)
		}
	}
	req := httptest.NewRequest(http.MethodPost, "/streams/orders-eu", nil)
	req.SetBasicAuth("eu", "pw")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusForbidden {
		t.Fatalf("publish with a read prefix claim: %d", rec.Code)
	}
}
