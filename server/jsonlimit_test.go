package server_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"

	"github.com/messagevault/messagevault/server"
)

// TestJSONPublishStopsAtTheMessageLimit: a JSON body of far more messages
// than one publish may hold is refused when the limit is passed, not after
// decoding all of them (a 30 MB body of empty messages once took 500 MB).
func TestJSONPublishStopsAtTheMessageLimit(t *testing.T) {
	users := newUsers(t)
	users.Add(context.Background(), "u", "p", "all:write")
	v := memVault(t)
	h := server.New(server.Config{Vault: v, Users: users})
	defer h.Close()
	const n = 400_000 // six times the limit
	body := []byte("[" + strings.Repeat(`{"key":"","value":""},`, n-1) + `{"key":"","value":""}]`)
	publish := func() *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodPost, "/streams/flood/messages", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.SetBasicAuth("u", "p")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	publish() // checks the password: bcrypt, and its cache, are not what is measured
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	rec := publish()
	runtime.ReadMemStats(&after)
	want := "the limit is 65535"
	if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), want) {
		t.Fatalf("%d messages in one JSON publish: %d %s", n, rec.Code, rec.Body)
	}
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("a %d-byte body of %d empty messages: %d MB allocated before the 400", len(body), n, allocated>>20)
	if allocated > 20*uint64(len(body)) || allocated > 64<<20 {
		t.Fatalf("%d MB allocated for a %d MB body", allocated>>20, len(body)>>20)
	}
}
