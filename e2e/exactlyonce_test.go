package e2e_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/internal/mvtest"
)

// publishWith posts msgs with extra headers and returns status, body and
// answer headers.
func publishWith(t *testing.T, s *mvtest.Server, path string, body []byte, ctype string, hdr map[string]string) (int, []byte, http.Header) {
	t.Helper()
	req := s.Request("POST", path, admin, adminPass, body, ctype)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	return do(t, req)
}

func seqHeaders(producer string, seq int) map[string]string {
	return map[string]string{"MessageVault-Producer": producer, "MessageVault-Sequence": strconv.Itoa(seq)}
}

func TestExactlyOncePublish(t *testing.T) {
	s := mvtest.Start(t, t.TempDir(), nil)
	body := transfer(t, []messagevault.Message{msg("k", "one"), msg("k", "two")})
	const bin = "application/octet-stream"

	status, out, h := publishWith(t, s, "/streams/exact", body, bin, seqHeaders("p-1", 5))
	if status != 200 || h.Get("MessageVault-Duplicate") != "" {
		t.Fatalf("first publish: %d %s, duplicate header %q", status, out, h.Get("MessageVault-Duplicate"))
	}
	var first publishAnswer
	if err := json.Unmarshal(out, &first); err != nil {
		t.Fatal(err)
	}
	// The retry, on the binary and on the JSON route: nothing appended.
	for _, route := range []struct{ path, ctype string }{{"/streams/exact", bin}, {"/streams/exact/messages", "application/json"}} {
		b := body
		if route.ctype == "application/json" {
			b = []byte(`[{"key": "k", "value": "other bytes"}]`)
		}
		status, out, h = publishWith(t, s, route.path, b, route.ctype, seqHeaders("p-1", 5))
		var again publishAnswer
		if err := json.Unmarshal(out, &again); err != nil || status != 200 {
			t.Fatalf("retry on %s: %d %s", route.path, status, out)
		}
		if h.Get("MessageVault-Duplicate") != "true" || !slices.Equal(again.Offsets, first.Offsets) || again.Position < first.Position {
			t.Fatalf("retry on %s answered %s with duplicate header %q; first answer %+v", route.path, out, h.Get("MessageVault-Duplicate"), first)
		}
	}
	if got := values(readDirect(t, s, "exact")); strings.Join(got, ",") != "k=one,k=two" {
		t.Fatalf("stream holds %v", got)
	}

	// Remembered: the last 32 sequences. Older ones are refused with 409.
	for seq := 6; seq <= 40; seq++ {
		if status, out, _ := publishWith(t, s, "/streams/exact", transfer(t, []messagevault.Message{msg("k", strconv.Itoa(seq))}), bin, seqHeaders("p-1", seq)); status != 200 {
			t.Fatalf("sequence %d: %d %s", seq, status, out)
		}
	}
	before := position(t, s, "exact")
	status, out, _ = publishWith(t, s, "/streams/exact", body, bin, seqHeaders("p-1", 5))
	var e apiError
	mustDecode(t, out, &e)
	if status != http.StatusConflict || e.Type != "sequence-too-old" || !strings.Contains(e.Error, "40") {
		t.Fatalf("forgotten sequence: %d %s", status, out)
	}
	// The last applied sequence, for a producer that restarts.
	_, out, _ = do(t, s.Request("GET", "/streams/exact/producers/p-1", admin, adminPass, nil, ""))
	var last struct {
		Sequence uint64
		Known    bool
	}
	if err := json.Unmarshal(out, &last); err != nil || last.Sequence != 40 || !last.Known {
		t.Fatalf("GET producers: %s", out)
	}

	// Conditional append.
	status, out, _ = publishWith(t, s, "/streams/exact", body, bin, map[string]string{"MessageVault-Expected-Position": "0"})
	var mismatch struct {
		Error, Type string
		Position    int64
	}
	mustDecode(t, out, &mismatch)
	if status != http.StatusPreconditionFailed || mismatch.Type != "position-mismatch" || mismatch.Position != before {
		t.Fatalf("stale expected position: %d %s; want 412 with Position %d", status, out, before)
	}
	if status, out, _ := publishWith(t, s, "/streams/exact", body, bin, map[string]string{"MessageVault-Expected-Position": strconv.FormatInt(before, 10)}); status != 200 {
		t.Fatalf("right expected position: %d %s", status, out)
	}
	after := position(t, s, "exact")

	// Bad headers: 400 naming the header; nothing appended.
	for _, bad := range []struct {
		hdr   map[string]string
		names string
	}{
		{map[string]string{"MessageVault-Producer": "p"}, "MessageVault-Sequence"},
		{map[string]string{"MessageVault-Sequence": "1"}, "MessageVault-Producer"},
		{map[string]string{"MessageVault-Producer": "has space", "MessageVault-Sequence": "1"}, "MessageVault-Producer"},
		{map[string]string{"MessageVault-Producer": strings.Repeat("p", 65), "MessageVault-Sequence": "1"}, "MessageVault-Producer"},
		{map[string]string{"MessageVault-Producer": "p", "MessageVault-Sequence": "-1"}, "MessageVault-Sequence"},
		{map[string]string{"MessageVault-Producer": "p", "MessageVault-Sequence": "18446744073709551616"}, "MessageVault-Sequence"},
		{map[string]string{"MessageVault-Expected-Position": "abc"}, "MessageVault-Expected-Position"},
		{map[string]string{"MessageVault-Expected-Position": "-5"}, "MessageVault-Expected-Position"},
	} {
		status, out, _ := publishWith(t, s, "/streams/exact", body, bin, bad.hdr)
		if status != http.StatusBadRequest || !strings.Contains(string(out), bad.names) {
			t.Fatalf("headers %v: %d %s; want 400 naming %s", bad.hdr, status, out, bad.names)
		}
	}
	if got := position(t, s, "exact"); got != after {
		t.Fatalf("bad headers moved the position from %d to %d", after, got)
	}
}
