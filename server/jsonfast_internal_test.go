package server

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/auth"
	"github.com/messagevault/messagevault/file"
	"github.com/messagevault/messagevault/vault"
)

// checkSameAsFull checks the fast JSON decoder against encoding/json on
// body: whatever the fast one accepts, the full one accepts and decodes
// to the same messages.
func checkSameAsFull(t *testing.T, body []byte) bool {
	t.Helper()
	fast, ok := decodeJSONFast(body, nil)
	if !ok {
		return false
	}
	full, err := decodeJSONFull(body, nil)
	if err != nil {
		t.Fatalf("the fast decoder took %q, which encoding/json refuses: %v", body, err)
	}
	if len(fast) != len(full) {
		t.Fatalf("%q: %d messages fast, %d full", body, len(fast), len(full))
	}
	for i := range fast {
		if !bytes.Equal(fast[i].Key, full[i].Key) || !bytes.Equal(fast[i].Value, full[i].Value) || fast[i].CRC != full[i].CRC || fast[i].Attributes != full[i].Attributes {
			t.Fatalf("%q: message %d differs: %q=%q fast, %q=%q full", body, i, fast[i].Key, fast[i].Value, full[i].Key, full[i].Value)
		}
	}
	return true
}

func TestDecodeJSONFast(t *testing.T) {
	for _, c := range []struct {
		body string
		fast bool // the fast path takes it
	}{
		{`[{"key":"k","value":"v"}]`, true},
		{` [ { "value" : "v" , "key" : "k" } , {"key":"","value":""} ] `, true},
		{"[\n\t{\"key\":\"ключ\",\"value\":\"значение ✓\"}\r\n]", true},
		{`[{"key":"k","value":"a\"b"}]`, false},                             // an escape
		{`[{"key":"k","value":"v","value":"w"}]`, false},                    // a member twice
		{`[{"Key":"k","value":"v"}]`, false},                                // another spelling (encoding/json takes it)
		{`[{"key":"k","value_base64":"dg=="}]`, false},                      // base64
		{`[{"key":"k"}]`, false},                                            // no value
		{`[{"key":"k","value":"v"},]`, false},                               // a trailing comma
		{`{"key":"k","value":"v"}`, false},                                  // one object
		{`[]`, false},                                                       // empty
		{"[{\"key\":\"k\",\"value\":\"\xff\"}]", false},                     // not UTF-8
		{"[{\"key\":\"k\",\"value\":\"a\tb\"}]", false},                     // a control character
		{`[{"key":"k","value":"v"}] x`, false},                              // trailing data
		{`[{"key":"` + strings.Repeat("k", 256) + `","value":"v"}]`, false}, // key too long
	} {
		if got := checkSameAsFull(t, []byte(c.body)); got != c.fast {
			t.Errorf("%q: fast path %v, want %v", c.body, got, c.fast)
		}
	}
	// Random bodies of the usual shape, with strings of every kind.
	rng := rand.New(rand.NewPCG(7, 8))
	pieces := []string{"a", "é", "✓", `\"`, `\\`, `\n`, `\u00e9`, "\x01", "\xc3", " ", "0", "\t"}
	str := func() string {
		var b strings.Builder
		for range rng.IntN(6) {
			b.WriteString(pieces[rng.IntN(len(pieces))])
		}
		return b.String()
	}
	took := 0
	for range 3000 {
		var b strings.Builder
		b.WriteString("[")
		for i := range 1 + rng.IntN(4) {
			if i > 0 {
				b.WriteString(",")
			}
			b.WriteString(`{"key":"` + str() + `","value":"` + str() + `"}`)
		}
		b.WriteString("]")
		if checkSameAsFull(t, []byte(b.String())) {
			took++
		}
	}
	if took < 30 { // most random strings have an escape or a byte the fast path leaves to encoding/json
		t.Fatalf("the fast path took only %d of 3,000 bodies", took)
	}
}

func FuzzDecodeJSONFast(f *testing.F) {
	f.Add([]byte(`[{"key":"k","value":"v"}]`))
	f.Add([]byte(` [ { "value" : "✓" , "key" : "" } ] `))
	f.Add([]byte(`[{"key":"k","value":"v"},{"key":"k2","value":"` + strconv.Itoa(12345) + `"}]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		checkSameAsFull(t, body)
	})
}

func BenchmarkDecodeJSON(b *testing.B) {
	var sb strings.Builder
	sb.WriteString("[")
	for i := range 1000 {
		if i > 0 {
			sb.WriteString(",")
		}
		sb.WriteString(`{"key":"message` + strconv.Itoa(i) + `","value":"` + strings.Repeat("v", 100) + `"}`)
	}
	sb.WriteString("]")
	body := []byte(sb.String())
	for _, c := range []struct {
		name   string
		decode func([]byte, []messagevault.Message) ([]messagevault.Message, error)
	}{{"fast", decodeJSON}, {"encoding-json", decodeJSONFull}} {
		b.Run(c.name, func(b *testing.B) {
			var dst []messagevault.Message
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				var err error
				if dst, err = c.decode(body, dst[:0]); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1000, "ns/msg")
		})
	}
}

// BenchmarkPublishJSON: 4 clients publish JSON bodies of 1,000 messages
// of 100 bytes over HTTP on loopback to a server on the file backend
// (durable appends), with the fast JSON path and without it, side by
// side. msgs/s is over all clients.
func BenchmarkPublishJSON(b *testing.B) {
	for _, fast := range []bool{true, false} {
		name := "fast"
		if !fast {
			name = "encoding-json"
		}
		b.Run(name, func(b *testing.B) {
			defer func(was bool) { jsonFastPath = was }(jsonFastPath)
			jsonFastPath = fast
			benchPublishJSON(b)
		})
	}
}

func benchPublishJSON(b *testing.B) {
	ctx := context.Background()
	store, err := file.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	v := vault.New(store, vault.Config{})
	defer func() { v.Close(); store.Close() }()
	users, err := auth.Open(ctx, auth.NewFileSource(filepath.Join(b.TempDir(), "auth.json")), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer users.Close()
	if err := users.Add(ctx, "ann", "pw", "all:write"); err != nil {
		b.Fatal(err)
	}
	api := New(Config{Vault: v, Users: users})
	defer api.Close()
	srv := httptest.NewServer(api)
	defer srv.Close()
	var sb strings.Builder
	sb.WriteString("[")
	for i := range 1000 {
		if i > 0 {
			sb.WriteString(",")
		}
		sb.WriteString(`{"key":"message` + strconv.Itoa(i) + `","value":"` + strings.Repeat("v", 100) + `"}`)
	}
	sb.WriteString("]")
	body := sb.String()
	post := func() {
		req, _ := http.NewRequest("POST", srv.URL+"/streams/json/messages", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.SetBasicAuth("ann", "pw")
		resp, err := srv.Client().Do(req)
		if err != nil {
			b.Error(err)
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Errorf("publish: %d", resp.StatusCode)
		}
	}
	post() // the password's bcrypt, once
	var next atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				post()
			}
		})
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)*1000/time.Since(start).Seconds(), "msgs/s")
}
