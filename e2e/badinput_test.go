package e2e_test

import (
	"context"
	"crypto/md5"
	"encoding/binary"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/auth"
	"github.com/messagevault/messagevault/internal/mvtest"
)

// resum rewrites the MD5 of a transfer body after a test changed it, so
// that one fault at a time is tested.
func resum(body []byte) []byte {
	sum := md5.Sum(body[:len(body)-16])
	copy(body[len(body)-16:], sum[:])
	return body
}

func TestBadInputIsRejectedWhole(t *testing.T) {
	dir := t.TempDir()
	users, err := auth.Open(context.Background(), auth.NewFileSource(dir+"/auth.json"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := users.Add(context.Background(), "admin", adminPass, "all:write"); err != nil {
		t.Fatal(err)
	}
	if err := users.Add(context.Background(), "reader", "reader-pass", "all:read"); err != nil {
		t.Fatal(err)
	}
	if err := users.Add(context.Background(), "other", "other-pass", "other:write"); err != nil {
		t.Fatal(err)
	}
	s := mvtest.Start(t, dir, nil, "--max-body", "100000")
	before := publish(t, s, "orders", []messagevault.Message{msg("k", "v")}).Position

	good := func() []byte {
		return transfer(t, []messagevault.Message{msg("a", "one"), msg("b", "two"), msg("c", "three")})
	}
	// Byte offsets in good(): 0 version, 1-2 count, 3 attr, 4 key len, 5 key,
	// 6-7 value len, 8.. value "one", 11-14 crc, then message 2 at 15.
	type tc struct {
		name   string
		stream string
		user   string
		pass   string
		body   func() []byte
		ctype  string
		status int
		typ    string
		says   string
	}
	tests := []tc{
		{"truncated body", "orders", admin, adminPass, func() []byte { b := good(); return b[:20] }, "", 400, "bad-request", "truncated"},
		{"unknown attribute bits", "orders", admin, adminPass, func() []byte {
			return transfer(t, []messagevault.Message{msg("a", "one"), messagevault.NewMessage([]byte("b"), []byte("two"), 0x04)})
		}, "", 400, "bad-request", "message 1: attributes 0x04"},
		{"last record to be continued", "orders", admin, adminPass, func() []byte {
			return transfer(t, []messagevault.Message{msg("a", "one"), messagevault.NewMessage([]byte("b"), []byte("two"), messagevault.AttrContinued)})
		}, "", 400, "bad-request", "flagged to be continued"},
		{"truncated in a message", "orders", admin, adminPass, func() []byte { b := good(); return resum(append(b[:18], b[len(b)-16:]...)) }, "", 400, "bad-request", "message 1"},
		{"wrong md5", "orders", admin, adminPass, func() []byte { b := good(); b[len(b)-1] ^= 1; return b }, "", 400, "bad-request", "md5"},
		{"wrong crc", "orders", admin, adminPass, func() []byte { b := good(); b[11] ^= 1; return resum(b) }, "", 400, "bad-request", "message 0 stores crc"},
		{"count above the body", "orders", admin, adminPass, func() []byte { b := good(); binary.LittleEndian.PutUint16(b[1:], 4); return resum(b) }, "", 400, "bad-request", "count says 4"},
		{"count below the body", "orders", admin, adminPass, func() []byte { b := good(); binary.LittleEndian.PutUint16(b[1:], 2); return resum(b) }, "", 400, "bad-request", "count says 2"},
		{"value length past the body", "orders", admin, adminPass, func() []byte { b := good(); binary.LittleEndian.PutUint16(b[6:], 60000); return resum(b) }, "", 400, "bad-request", "overrun"},
		{"empty batch", "orders", admin, adminPass, func() []byte { return resum([]byte{1, 0, 0, 15: 0, 18: 0}) }, "", 400, "bad-request", "count is 0"},
		{"unknown version", "orders", admin, adminPass, func() []byte { b := good(); b[0] = 3; return resum(b) }, "", 400, "bad-request", "version 0x03"},
		{"empty body", "orders", admin, adminPass, func() []byte { return nil }, "", 400, "bad-request", "truncated"},
		{"body over the limit", "orders", admin, adminPass, func() []byte {
			return transfer(t, []messagevault.Message{msg("k", strings.Repeat("x", 60000)), msg("k", strings.Repeat("x", 60000))})
		}, "", 413, "too-large", "over this server's limit of 100000 bytes (serve --max-body)"},
		{"JSON without content type", "orders", admin, adminPass, func() []byte { return []byte(`[{"key":"k","value":"v"}]`) }, "", 400, "bad-request", "looks like JSON"},
		{"JSON key over 255 bytes", "orders", admin, adminPass, func() []byte { return []byte(`[{"key":"` + strings.Repeat("k", 256) + `","value":"v"}]`) }, "application/json", 400, "bad-request", "key is 256 bytes"},
		{"JSON value over 65535 bytes", "orders", admin, adminPass, func() []byte { return []byte(`[{"key":"k","value":"` + strings.Repeat("v", 65536) + `"}]`) }, "application/json", 400, "bad-request", "value is 65536 bytes"},
		{"JSON empty array", "orders", admin, adminPass, func() []byte { return []byte(`[]`) }, "application/json", 400, "bad-request", "empty batch"},
		{"JSON bad base64", "orders", admin, adminPass, func() []byte { return []byte(`[{"key":"k","value_base64":"!!"}]`) }, "application/json", 400, "bad-request", "value_base64"},
		{"JSON both values", "orders", admin, adminPass, func() []byte { return []byte(`[{"key":"k","value":"a","value_base64":"YQ=="}]`) }, "application/json", 400, "bad-request", "not both"},
		{"JSON unknown field", "orders", admin, adminPass, func() []byte { return []byte(`[{"key":"k","valu":"a"}]`) }, "application/json", 400, "bad-request", "unknown field"},
		{"JSON not JSON", "orders", admin, adminPass, func() []byte { return []byte(`[{"key":`) }, "application/json", 400, "bad-request", "JSON body"},
		{"stream name starts with -", "-xy", admin, adminPass, good, "", 400, "bad-request", "start and end"},
		{"stream name with --", "x--y", admin, adminPass, good, "", 400, "bad-request", `"--"`},
		{"stream name of 61 characters", strings.Repeat("x", 61), admin, adminPass, good, "", 400, "bad-request", "is 61"},
		{"stream name ../etc", "..%2Fetc", admin, adminPass, good, "", 400, "bad-request", "not one of"},
		{"no credentials", "orders", "", "", good, "", 401, "unauthorized", "credentials required"},
		{"wrong password", "orders", admin, "wrong", good, "", 401, "unauthorized", "wrong user name or password"},
		{"unknown user", "orders", "nobody", "x", good, "", 401, "unauthorized", "wrong user name or password"},
		{"reader cannot write", "orders", "reader", "reader-pass", good, "", 403, "forbidden", `"orders:write"`},
		{"claim for another stream", "orders", "other", "other-pass", good, "", 403, "forbidden", `"orders:write"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body, h := do(t, s.Request("POST", "/streams/"+tt.stream, tt.user, tt.pass, tt.body(), tt.ctype))
			var e apiError
			if err := json.Unmarshal(body, &e); err != nil {
				t.Fatalf("%d %q: not a JSON error: %v", status, body, err)
			}
			if status != tt.status || e.Type != tt.typ || !strings.Contains(e.Error, tt.says) {
				t.Fatalf("got %d %s %q; want %d %s saying %q", status, e.Type, e.Error, tt.status, tt.typ, tt.says)
			}
			if status == http.StatusUnauthorized && h.Get("WWW-Authenticate") == "" {
				t.Fatal("401 without WWW-Authenticate")
			}
			if got := position(t, s, "orders"); got != before {
				t.Fatalf("position moved from %d to %d", before, got)
			}
		})
	}
	// The other stream's writer can write its own stream, and nothing else
	// was created along the way.
	status, body, _ := do(t, s.Request("POST", "/streams/other", "other", "other-pass", good(), ""))
	if status != http.StatusOK {
		t.Fatalf("other:write to other: %d %s", status, body)
	}
	status, body, _ = do(t, s.Request("GET", "/streams", admin, adminPass, nil, ""))
	if status != 200 || strings.Count(string(body), `"Name"`) != 2 {
		t.Fatalf("streams after bad input: %s", body)
	}
}
