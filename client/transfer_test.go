package client_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/messagevault/messagevault/client"
	"github.com/messagevault/messagevault/formats"
	"github.com/messagevault/messagevault/internal/mvtest"
)

// TestPublishSendsV2Bodies: the client sends v2 transfer bodies (CRC-32C)
// to a server of this project, and the server stores them.
func TestPublishSendsV2Bodies(t *testing.T) {
	s := mvtest.Start(t, t.TempDir(), nil)
	var seen []string
	var mu sync.Mutex
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		if r.Method == http.MethodPost {
			seen = append(seen, r.Header.Get("Content-Type"))
		}
		mu.Unlock()
		req, _ := http.NewRequestWithContext(r.Context(), r.Method, s.URL+r.URL.RequestURI(), r.Body)
		req.Header = r.Header.Clone()
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	}))
	defer proxy.Close()
	c := client.New(proxy.URL, "admin", mvtest.AdminPassword)
	if _, err := c.Publish(context.Background(), "v2", []client.Message{{Value: []byte("crc32c")}}); err != nil {
		t.Fatal(err)
	}
	if len(seen) == 0 || seen[len(seen)-1] != formats.TransferV2ContentType {
		t.Fatalf("publish Content-Types %q, want %s", seen, formats.TransferV2ContentType)
	}
}

// TestPublishFallsBackToV1: a server that refuses v2 bodies (one from
// before them) gets the same batch, with the same sequence, as a v1 body,
// and every later publish is v1 at once.
func TestPublishFallsBackToV1(t *testing.T) {
	type got = struct {
		version byte
		seq     string
	}
	var mu sync.Mutex
	var posts []got
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(map[string]any{"Producer": "p", "Sequence": 0})
			return
		}
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		posts = append(posts, got{body[0], r.Header.Get(client.SequenceHeader)})
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		// As a server from before v2 bodies checks: the length first
		// (a small v2 body is shorter than any v1 body), then the version.
		if len(body) < 19 {
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(map[string]string{"Error": fmt.Sprintf("transfer body: truncated: body is %d bytes, the smallest is 19 (version, count, md5)", len(body)), "Type": "bad-request"})
			return
		}
		if body[0] != 1 {
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(map[string]string{"Error": "transfer body: unknown format version 0x02 at byte 0 (want 0x01)", "Type": "bad-request"})
			return
		}
		msgs, err := formats.DecodeTransfer(body, nil)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(map[string]string{"Error": err.Error(), "Type": "bad-request"})
			return
		}
		offsets := make([]int64, len(msgs))
		json.NewEncoder(w).Encode(map[string]any{"Position": 100, "Offsets": offsets})
	}))
	defer srv.Close()
	for _, value := range []string{"v", "a value long enough for a v2 body of more than 19 bytes"} {
		posts = nil
		c := client.New(srv.URL, "u", "p")
		for range 2 {
			if _, err := c.Publish(context.Background(), "old", []client.Message{{Value: []byte(value)}}); err != nil {
				t.Fatalf("value %q: %v", value, err)
			}
		}
		checkFallback(t, posts)
	}
}

func checkFallback(t *testing.T, posts []struct {
	version byte
	seq     string
}) {
	t.Helper()
	if len(posts) != 3 || posts[0].version != 2 || posts[1].version != 1 || posts[1].seq != posts[0].seq || posts[2].version != 1 || posts[2].seq == posts[1].seq {
		t.Fatalf("posts %+v: want v2, then v1 with the same sequence, then v1 with the next", posts)
	}
}
