package server_test

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"testing"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/file"
	"github.com/messagevault/messagevault/server"
	"github.com/messagevault/messagevault/vault"
)

// BenchmarkServerRead measures one reader reading a 64 MiB stream of
// 100-byte messages through the server (HTTP on loopback, file backend,
// page cache warm), answer after answer from Next to the end: raw answers
// of 1,000 records (what the Go client asked for before), raw answers cut
// only by the 8 MiB byte limit, and JSON answers of 10,000 messages. MB/s
// counts the stored record bytes.
func BenchmarkServerRead(b *testing.B) {
	ctx := context.Background()
	store, err := file.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	v := vault.New(store, vault.Config{})
	defer func() { v.Close(); store.Close() }()
	batch := make([]messagevault.Message, 1000)
	for i := range batch {
		val := make([]byte, 100)
		for j := range val {
			val[j] = byte('a' + (i+j)%26)
		}
		batch[i] = messagevault.NewMessage([]byte("key"), val, 0)
	}
	var pos int64
	for pos < 64<<20 {
		res, err := v.Append(ctx, "big", batch)
		if err != nil {
			b.Fatal(err)
		}
		pos = res.Position
	}
	srv := serveOverHTTP(b, v, "big:read")
	read := func(b *testing.B, query string) {
		for from := int64(0); from < pos; {
			req, err := http.NewRequest("GET", srv.URL+"/streams/big/messages?from="+strconv.FormatInt(from, 10)+query, nil)
			if err != nil {
				b.Fatal(err)
			}
			req.SetBasicAuth("ann", "pw")
			resp, err := srv.Client().Do(req)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.Copy(io.Discard, resp.Body); err != nil {
				b.Fatal(err)
			}
			resp.Body.Close()
			next, err := strconv.ParseInt(resp.Header.Get("X-Messagevault-Next"), 10, 64)
			if resp.StatusCode != http.StatusOK || (err != nil && query != "&limit=10000") {
				b.Fatalf("read from %d: %d %v", from, resp.StatusCode, err)
			}
			if err != nil { // JSON: the next position is in the body; step by what was asked
				next = from + 10000*int64(25+3+100)
			}
			from = next
		}
	}
	for _, c := range []struct{ name, query string }{
		{"raw-1000", "&format=raw&limit=1000"},
		{"raw-bytes", "&format=raw&limit=" + strconv.Itoa(server.MaxRawReadLimit)},
		{"json-10000", "&limit=10000"},
	} {
		b.Run(c.name, func(b *testing.B) {
			read(b, c.query) // warm the page cache and the password cache
			b.SetBytes(pos)
			for b.Loop() {
				read(b, c.query)
			}
		})
	}
}
