package server_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/auth"
	"github.com/messagevault/messagevault/formats"
	"github.com/messagevault/messagevault/mem"
	"github.com/messagevault/messagevault/server"
	"github.com/messagevault/messagevault/stream"
	"github.com/messagevault/messagevault/vault"
)

// FuzzPublish sends arbitrary bodies to the publish routes of a real
// handler. Whatever the body: the answer is 200 or a 4xx (never a 5xx);
// a refused body changes nothing; an accepted one leaves a stream whose
// every record verifies.
func FuzzPublish(f *testing.F) {
	good, _ := formats.AppendTransfer(nil, []messagevault.Message{
		messagevault.NewMessage([]byte("k"), []byte("value"), 0),
		messagevault.NewMessage(nil, nil, messagevault.AttrContinued),
	})
	f.Add(good, false)
	f.Add(good[:len(good)-3], false)
	f.Add([]byte(`[{"key":"a","value":"b"}]`), true)
	f.Add([]byte(`{"key":"a","value_base64":"AAEC"}`), true)
	f.Add([]byte{1, 0, 0}, false)
	f.Add([]byte{}, true)

	store := mem.New()
	users, err := auth.Open(context.Background(), auth.NewFileSource(filepath.Join(f.TempDir(), "auth.json")), nil)
	if err != nil {
		f.Fatal(err)
	}
	users.Add(context.Background(), "u", "p", "all:write")
	v := vault.New(store, vault.Config{})
	h := server.New(server.Config{Vault: v, Users: users, MaxBodyBytes: 1 << 20})
	f.Cleanup(func() { h.Close(); v.Close() })

	f.Fuzz(func(t *testing.T, body []byte, asJSON bool) {
		ctx := context.Background()
		before := position(t, store)
		path := "/streams/fuzzed"
		if asJSON {
			path += "/messages"
		}
		req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
		req.SetBasicAuth("u", "p")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch {
		case rec.Code == http.StatusOK:
			pr, err := store.OpenReader(ctx, "fuzzed")
			if err != nil {
				t.Fatal(err)
			}
			for _, err := range stream.NewReader("fuzzed", pr, stream.ReaderConfig{}).Records(ctx, 0, -1) {
				if err != nil {
					t.Fatalf("accepted body %x left a bad stream: %v", body, err)
				}
			}
			pr.Close()
		case rec.Code >= 400 && rec.Code < 500:
			if after := position(t, store); after != before {
				t.Fatalf("refused body %x (%d) moved the position from %d to %d", body, rec.Code, before, after)
			}
			if !bytes.Contains(rec.Body.Bytes(), []byte(`"Error"`)) {
				t.Fatalf("refusal without a JSON error: %s", rec.Body.Bytes())
			}
		default:
			t.Fatalf("body %x: answer %d %s", body, rec.Code, rec.Body.Bytes())
		}
	})
}

func position(t *testing.T, s *mem.Storage) int64 {
	pr, err := s.OpenReader(context.Background(), "fuzzed")
	if err != nil {
		return 0
	}
	defer pr.Close()
	pos, err := pr.Position(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return pos
}

// FuzzAuthorization sends arbitrary Authorization headers: the answer is
// always 401 (or 200 for the one right credential, 429 once throttled),
// never a panic or a 5xx.
func FuzzAuthorization(f *testing.F) {
	users, err := auth.Open(context.Background(), auth.NewFileSource(filepath.Join(f.TempDir(), "auth.json")), nil)
	if err != nil {
		f.Fatal(err)
	}
	users.Add(context.Background(), "u", "p", "all:read")
	v := vault.New(mem.New(), vault.Config{})
	h := server.New(server.Config{Vault: v, Users: users})
	f.Cleanup(func() { h.Close(); v.Close() })
	for _, seed := range []string{"Basic dTpw", "Basic dTpx", "Basic", "Basic =", "Bearer abc", "basic dTpw", "Basic dTo=", "Basic Ojo=", "Basic " + strings.Repeat("A", 300), "Basic\x00dTpw"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, header string) {
		req := httptest.NewRequest(http.MethodGet, "/streams", nil)
		req.Header.Set("Authorization", header)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusOK, http.StatusUnauthorized, http.StatusTooManyRequests:
		default:
			t.Fatalf("Authorization %q: %d %s", header, rec.Code, rec.Body)
		}
	})
}
