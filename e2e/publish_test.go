package e2e_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/formats"
	"github.com/messagevault/messagevault/internal/mvtest"
)

func TestPublishAndReadBack(t *testing.T) {
	s := mvtest.Start(t, t.TempDir(), nil)

	// Binary route: offsets and position follow the stored record sizes.
	batch := []messagevault.Message{msg("contract-a", "hello"), msg("", ""), msg("k", strings.Repeat("v", 1000))}
	ans := publish(t, s, "Orders", batch) // upper case folds to "orders"
	want := int64(0)
	for i, m := range batch {
		if ans.Offsets[i] != want {
			t.Fatalf("offset %d = %d, want %d", i, ans.Offsets[i], want)
		}
		want += recordSize(string(m.Key), string(m.Value))
	}
	if ans.Position != want {
		t.Fatalf("position = %d, want %d", ans.Position, want)
	}

	// JSON route, text and base64 values, on both JSON entry points.
	status, body, _ := do(t, s.Request("POST", "/streams/orders", admin, adminPass,
		[]byte(`[{"key":"j1","value":"text ✓"},{"key":"j2","value_base64":"AAEC/w=="}]`), "application/json"))
	if status != http.StatusOK {
		t.Fatalf("JSON publish: %d %s", status, body)
	}
	var jans publishAnswer
	mustDecode(t, body, &jans)
	if jans.Offsets[0] != want || jans.Position != want+recordSize("j1", "text ✓")+recordSize("j2", "\x00\x01\x02\xff") {
		t.Fatalf("JSON publish answer %s; want offsets from %d", body, want)
	}
	status, body, _ = do(t, s.Request("POST", "/streams/orders/messages", admin, adminPass, []byte(`{"key":"j3","value":"one object"}`), "application/json"))
	if status != http.StatusOK {
		t.Fatalf("JSON publish of one object: %d %s", status, body)
	}
	var one publishAnswer
	mustDecode(t, body, &one)
	if one.Offsets[0] != jans.Position {
		t.Fatalf("third publish starts at %d, want %d", one.Offsets[0], jans.Position)
	}
	wantValues := []string{"contract-a=hello", "=", "k=" + strings.Repeat("v", 1000), "j1=text ✓", "j2=\x00\x01\x02\xff", "j3=one object"}

	// Direct read from storage through the grant.
	recs := readDirect(t, s, "orders")
	if got := values(recs); fmt.Sprint(got) != fmt.Sprint(wantValues) {
		t.Fatalf("direct read: %q\nwant %q", got, wantValues)
	}
	for i, r := range recs {
		if r.ID.Offset() != r.Offset {
			t.Fatalf("record %d: id offset %d, record at %d", i, r.ID.Offset(), r.Offset)
		}
	}

	// Through the server, JSON, page by page.
	var got []string
	from := int64(0)
	for pages := 0; ; pages++ {
		status, body, _ := do(t, s.Request("GET", "/streams/orders/messages?limit=4&from="+strconv.FormatInt(from, 10), admin, adminPass, nil, ""))
		if status != http.StatusOK {
			t.Fatalf("read: %d %s", status, body)
		}
		var page struct {
			Position, Next int64
			Messages       []struct {
				Offset, Next int64
				ID           string `json:"Id"`
				Key, Value   string
				ValueBase64  string
				Attributes   byte
			}
		}
		mustDecode(t, body, &page)
		if len(page.Messages) == 0 {
			if page.Next != page.Position || from != one.Position {
				t.Fatalf("empty page at %d: %s", from, body)
			}
			break
		}
		for _, m := range page.Messages {
			v := m.Value
			if m.ValueBase64 != "" {
				v = string(mustB64(t, m.ValueBase64))
			}
			got = append(got, m.Key+"="+v)
		}
		from = page.Next
	}
	if fmt.Sprint(got) != fmt.Sprint(wantValues) {
		t.Fatalf("server read: %q\nwant %q", got, wantValues)
	}

	// Raw records through the server equal the stored bytes.
	status, raw, h := do(t, s.Request("GET", "/streams/orders/messages?format=raw&limit=100", admin, adminPass, nil, ""))
	if status != http.StatusOK || h.Get("X-Messagevault-Next") != strconv.FormatInt(one.Position, 10) {
		t.Fatalf("raw read: %d, next %q", status, h.Get("X-Messagevault-Next"))
	}
	var stored []byte
	for _, r := range recs {
		stored, _ = formats.AppendRecord(stored, r.ID, r.Message())
	}
	if !bytes.Equal(raw, stored) {
		t.Fatal("raw read differs from the records in storage")
	}
	for len(raw) > 0 {
		_, n, err := formats.DecodeRecord(raw)
		if err != nil {
			t.Fatal(err)
		}
		raw = raw[n:]
	}
}

func TestConcurrentPublishers(t *testing.T) {
	s := mvtest.Start(t, t.TempDir(), nil)
	const producers, batches, size = 6, 20, 50
	type res struct {
		producer int
		ans      publishAnswer
	}
	results := make(chan res, producers*batches)
	var wg sync.WaitGroup
	for p := 0; p < producers; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := 0; b < batches; b++ {
				msgs := make([]messagevault.Message, size)
				for i := range msgs {
					msgs[i] = msg(fmt.Sprintf("p%d", p), fmt.Sprintf("%d/%d/%d", p, b, i))
				}
				name := "shared"
				if b%5 == 4 {
					name = fmt.Sprintf("own-%d", p) // other streams run in parallel
				}
				status, body, _ := do(t, s.Request("POST", "/streams/"+name, admin, adminPass, transfer(t, msgs), ""))
				if status != http.StatusOK {
					t.Errorf("publish: %d %s", status, body)
					return
				}
				var a publishAnswer
				if !decode(t, body, &a) {
					return
				}
				if name == "shared" {
					results <- res{p, a}
				}
			}
		}()
	}
	wg.Wait()
	close(results)
	// Every message of the shared stream is stored once, each producer's in
	// order, and each batch contiguous.
	recs := readDirect(t, s, "shared")
	if want := producers * batches * 4 / 5 * size; len(recs) != want {
		t.Fatalf("shared stream holds %d messages, want %d", len(recs), want)
	}
	last := map[string]int{}
	for _, r := range recs {
		var p, b, i int
		fmt.Sscanf(string(r.Value), "%d/%d/%d", &p, &b, &i)
		k := string(r.Key)
		if seq := b*size + i; seq <= last[k]-1 {
			t.Fatalf("producer %d: message %d/%d stored after a later one", p, b, i)
		} else {
			last[k] = seq + 1
		}
	}
	for r := range results {
		for i := 1; i < len(r.ans.Offsets); i++ {
			if r.ans.Offsets[i] <= r.ans.Offsets[i-1] {
				t.Fatalf("producer %d: offsets not increasing: %v", r.producer, r.ans.Offsets)
			}
		}
	}
}

func mustB64(t *testing.T, s string) []byte {
	t.Helper()
	var out []byte
	if err := json.Unmarshal([]byte(`"`+s+`"`), &out); err != nil {
		t.Fatal(err)
	}
	return out
}
