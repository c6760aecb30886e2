package e2e_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/azure"
	"github.com/messagevault/messagevault/internal/azurite"
	"github.com/messagevault/messagevault/internal/mvtest"
)

// TestCursors: consumer cursors through a real server, on the local
// backend and on Azurite: set, read with lag, compare-and-swap on the
// ETag, list, delete, the read claim, bad input refused without a change,
// the lag metric, the CLI, and a restart that keeps them.
func TestCursors(t *testing.T) {
	t.Run("local", func(t *testing.T) {
		dir := t.TempDir()
		s := mvtest.Start(t, dir, nil)
		cursorsSuite(t, s, func() *mvtest.Server {
			s.Signal(syscall.SIGTERM)
			s.Wait(30 * time.Second)
			return mvtest.Start(t, dir, nil)
		})
	})
	t.Run("azure", func(t *testing.T) {
		az := azurite.Start(t)
		s := startAzure(t, az)
		cursorsSuite(t, s, func() *mvtest.Server {
			s.Signal(syscall.SIGTERM)
			s.Wait(30 * time.Second)
			return startAzure(t, az)
		})
	})
}

func cursorsSuite(t *testing.T, s *mvtest.Server, restart func() *mvtest.Server) {
	ans := publish(t, s, "consumed", []messagevault.Message{msg("k", "one"), msg("k", "two"), msg("k", "three")})
	publish(t, s, "elsewhere", []messagevault.Message{msg("k", "x")})
	pos := ans.Position
	second := ans.Offsets[1]
	put := func(user, pass, path, body, ifMatch string) (int, []byte, http.Header) {
		req := s.Request("PUT", path, user, pass, []byte(body), "application/json")
		if ifMatch != "" {
			req.Header.Set("If-Match", ifMatch)
		}
		return do(t, req)
	}
	status, body, hdr := put(admin, adminPass, "/streams/consumed/cursors/reports", `{"Position": `+strconv.FormatInt(second, 10)+`}`, "")
	var c struct {
		Name          string
		Position, Lag int64
	}
	mustDecode(t, body, &c)
	etag := hdr.Get("ETag")
	if status != http.StatusOK || c.Name != "reports" || c.Position != second || !strings.HasPrefix(etag, `"`) {
		t.Fatalf("PUT a cursor: %d %s (ETag %q)", status, body, etag)
	}
	status, body, hdr = do(t, s.Request("GET", "/streams/consumed/cursors/reports", admin, adminPass, nil, ""))
	mustDecode(t, body, &c)
	if status != http.StatusOK || c.Position != second || c.Lag != pos-second || hdr.Get("ETag") != etag {
		t.Fatalf("GET the cursor: %d %s %q", status, body, hdr.Get("ETag"))
	}
	// Bad input: clear 4xx, nothing changed.
	for _, tc := range []struct {
		path, body, ifMatch string
		status              int
		says                string
	}{
		{"/streams/consumed/cursors/reports", `{"Position": 0}`, `"stale"`, http.StatusPreconditionFailed, "ETag"},
		{"/streams/consumed/cursors/reports", `{"Position": 3}`, "", http.StatusBadRequest, "not a message's start"},
		{"/streams/consumed/cursors/reports", `{"Position": ` + strconv.FormatInt(pos+1, 10) + `}`, "", http.StatusBadRequest, "past the stream's committed position"},
		{"/streams/consumed/cursors/reports", `{"Position": -1}`, "", http.StatusBadRequest, "Position"},
		{"/streams/consumed/cursors/reports", `{"Pos": 0}`, "", http.StatusBadRequest, "Position"},
		{"/streams/consumed/cursors/Bad!", `{"Position": 0}`, "", http.StatusBadRequest, "cursor name"},
		{"/streams/consumed/cursors/" + strings.Repeat("a", 65), `{"Position": 0}`, "", http.StatusBadRequest, "cursor name"},
		{"/streams/never-written/cursors/reports", `{"Position": 0}`, "", http.StatusNotFound, "never-written"},
	} {
		status, body, _ := put(admin, adminPass, tc.path, tc.body, tc.ifMatch)
		if status != tc.status || !strings.Contains(string(body), tc.says) {
			t.Fatalf("PUT %s %s (If-Match %q): %d %s; want %d naming %q", tc.path, tc.body, tc.ifMatch, status, body, tc.status, tc.says)
		}
	}
	status, body, hdr = do(t, s.Request("GET", "/streams/consumed/cursors/reports", admin, adminPass, nil, ""))
	mustDecode(t, body, &c)
	if c.Position != second || hdr.Get("ETag") != etag {
		t.Fatalf("a refused PUT changed the cursor: %s %q", body, hdr.Get("ETag"))
	}
	// Compare-and-swap: the current ETag wins once.
	status, body, hdr = put(admin, adminPass, "/streams/consumed/cursors/reports", `{"Position": `+strconv.FormatInt(pos, 10)+`}`, etag)
	if status != http.StatusOK || hdr.Get("ETag") == etag {
		t.Fatalf("PUT under the current ETag: %d %s", status, body)
	}
	if status, body, _ = put(admin, adminPass, "/streams/consumed/cursors/reports", `{"Position": 0}`, etag); status != http.StatusPreconditionFailed {
		t.Fatalf("the second PUT under the same ETag: %d %s", status, body)
	}
	// The read claim covers cursors; another stream's does not.
	for _, u := range []string{`{"Name":"reader","Password":"reader-pw-123","Claims":["consumed:read"]}`, `{"Name":"other","Password":"other-pw-123","Claims":["elsewhere:read"]}`} {
		if status, body, _ := do(t, s.Request("POST", "/users", admin, adminPass, []byte(u), "application/json")); status != http.StatusOK && status != http.StatusCreated {
			t.Fatalf("add user: %d %s", status, body)
		}
	}
	if status, body, _ := put("reader", "reader-pw-123", "/streams/consumed/cursors/exports", `{"Position": 0}`, ""); status != http.StatusOK {
		t.Fatalf("a reader sets a cursor: %d %s", status, body)
	}
	if status, body, _ := do(t, s.Request("GET", "/streams/consumed/cursors", "other", "other-pw-123", nil, "")); status != http.StatusForbidden || !strings.Contains(string(body), "consumed:read") {
		t.Fatalf("another stream's reader lists the cursors: %d %s", status, body)
	}
	status, body, _ = do(t, s.Request("GET", "/streams/consumed/cursors", "reader", "reader-pw-123", nil, ""))
	var list []struct {
		Name          string
		Position, Lag int64
	}
	if err := json.Unmarshal(body, &list); err != nil || status != http.StatusOK || len(list) != 2 || list[0].Name != "exports" || list[0].Lag != pos || list[1].Name != "reports" || list[1].Lag != 0 {
		t.Fatalf("list: %d %s", status, body)
	}
	// The lag metric.
	status, body, _ = do(t, s.Request("GET", "/metrics", admin, adminPass, nil, ""))
	if want := `messagevault_cursor_lag_bytes{cursor="exports",stream="consumed"} ` + strconv.FormatInt(pos, 10); status != http.StatusOK || !strings.Contains(string(body), want) {
		t.Fatalf("metrics lack %q", want)
	}
	// The CLI.
	if out := mustCLI(t, s, "", "cursors", "set", "consumed", "cli", "--position", strconv.FormatInt(second, 10)); !strings.HasPrefix(out, "cli\t"+strconv.FormatInt(second, 10)+"\t") {
		t.Fatalf("cursors set: %q", out)
	}
	if out := mustCLI(t, s, "", "cursors", "list", "consumed"); strings.Count(out, "\n") != 3 || !strings.Contains(out, "cli\t"+strconv.FormatInt(second, 10)+"\t"+strconv.FormatInt(pos-second, 10)+"\t") {
		t.Fatalf("cursors list:\n%s", out)
	}
	if out, errs, code := cli(t, s, "", "cursors", "set", "consumed", "cli"); code != 2 || !strings.Contains(errs, "--position") {
		t.Fatalf("cursors set without --position: %d %s %s", code, out, errs)
	}
	// read --cursor --commit: from the cursor (the start for a new one),
	// then moved past what was printed; the next read prints nothing.
	if out := mustCLI(t, s, "", "read", "consumed", "--cursor", "job", "--commit"); strings.Count(out, "\n") != 3 || !strings.Contains(out, "three") {
		t.Fatalf("read --cursor --commit:\n%s", out)
	}
	if out := mustCLI(t, s, "", "cursors", "get", "consumed", "job"); !strings.HasPrefix(out, "job\t"+strconv.FormatInt(pos, 10)+"\t0\t") {
		t.Fatalf("the cursor after read --commit: %q", out)
	}
	publish(t, s, "consumed", []messagevault.Message{msg("k", "four")})
	if out := mustCLI(t, s, "", "read", "consumed", "--cursor", "job", "--commit"); strings.TrimSpace(out) != strconv.FormatInt(pos, 10)+"\tk\tfour" {
		t.Fatalf("the second read --cursor --commit: %q", out)
	}
	if out, errs, code := cli(t, s, "", "read", "consumed", "--commit"); code != 2 || !strings.Contains(errs, "--cursor") {
		t.Fatalf("read --commit without --cursor: %d %s %s", code, out, errs)
	}
	end := pos + recordSize("k", "four")
	if out := mustCLI(t, s, "", "cursors", "delete", "consumed", "cli"); !strings.Contains(out, "deleted cursor cli") {
		t.Fatalf("cursors delete: %q", out)
	}
	if status, body, _ := do(t, s.Request("DELETE", "/streams/consumed/cursors/exports", admin, adminPass, nil, "")); status != http.StatusNoContent {
		t.Fatalf("DELETE a cursor: %d %s", status, body)
	}
	if status, body, _ := do(t, s.Request("GET", "/streams/consumed/cursors/exports", admin, adminPass, nil, "")); status != http.StatusNotFound {
		t.Fatalf("GET a deleted cursor: %d %s", status, body)
	}
	// A restart keeps them.
	s = restart()
	status, body, _ = do(t, s.Request("GET", "/streams/consumed/cursors/reports", admin, adminPass, nil, ""))
	mustDecode(t, body, &c)
	if status != http.StatusOK || c.Position != pos || c.Lag != end-pos {
		t.Fatalf("the cursor after a restart: %d %s", status, body)
	}
}

// TestCursorGrant: on Azure a consumer gets a grant to its one cursor
// blob and commits there without the server, under the same ETag rules;
// the grant reads and writes nothing else, and revoking the stream's
// grants ends it. Locally the route answers 501.
func TestCursorGrant(t *testing.T) {
	t.Run("local", func(t *testing.T) {
		s := mvtest.Start(t, t.TempDir(), nil)
		publish(t, s, "consumed", []messagevault.Message{msg("k", "one")})
		status, body, _ := do(t, s.Request("GET", "/streams/consumed/cursors/reports/grant", admin, adminPass, nil, ""))
		if status != http.StatusNotImplemented || !strings.Contains(string(body), "through the server") {
			t.Fatalf("a local cursor grant: %d %s", status, body)
		}
	})
	t.Run("azure", func(t *testing.T) {
		ctx := context.Background()
		az := azurite.Start(t)
		s := startAzure(t, az)
		ans := publish(t, s, "consumed", []messagevault.Message{msg("k", "one"), msg("k", "two")})
		if status, body, _ := do(t, s.Request("PUT", "/streams/consumed/cursors/reports", admin, adminPass, []byte(`{"Position": 0}`), "application/json")); status != http.StatusOK {
			t.Fatalf("PUT: %d %s", status, body)
		}
		status, body, _ := do(t, s.Request("GET", "/streams/consumed/cursors/reports/grant", admin, adminPass, nil, ""))
		var g struct{ Signature string }
		mustDecode(t, body, &g)
		if status != http.StatusOK || !strings.Contains(g.Signature, "/mv-consumed/cursors/reports?") || !strings.Contains(g.Signature, "sig=") {
			t.Fatalf("cursor grant: %d %s", status, body)
		}
		cur, err := azure.ReadCursorAt(ctx, g.Signature, azure.Config{})
		if err != nil || cur.Position != 0 || cur.Name != "reports" {
			t.Fatalf("read through the grant: %+v, %v", cur, err)
		}
		set, err := azure.WriteCursorAt(ctx, g.Signature, ans.Offsets[1], cur.ETag, azure.Config{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := azure.WriteCursorAt(ctx, g.Signature, 0, cur.ETag, azure.Config{}); !errors.Is(err, messagevault.ErrCursorChanged) {
			t.Fatalf("a write through the grant under a stale ETag: %v", err)
		}
		status, body, hdr := do(t, s.Request("GET", "/streams/consumed/cursors/reports", admin, adminPass, nil, ""))
		var c struct{ Position int64 }
		mustDecode(t, body, &c)
		if status != http.StatusOK || c.Position != ans.Offsets[1] || strings.Trim(hdr.Get("ETag"), `"`) != set.ETag {
			t.Fatalf("the server after a direct commit: %d %s %q", status, body, hdr.Get("ETag"))
		}
		// The grant reads and writes nothing else.
		other := strings.Replace(g.Signature, "/cursors/reports?", "/cursors/exports?", 1)
		if _, err := azure.WriteCursorAt(ctx, other, 0, "", azure.Config{}); err == nil {
			t.Fatal("the grant wrote another cursor")
		}
		records := strings.Replace(g.Signature, "/cursors/reports?", "/000000000000.b7?", 1)
		for _, u := range []string{records, strings.Replace(g.Signature, "/cursors/reports?", "/position.c7?", 1)} {
			req, _ := http.NewRequest("GET", u, nil)
			req.Header.Set("x-ms-version", "2021-12-02")
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
				if resp.StatusCode != http.StatusForbidden {
					t.Fatalf("the grant read %s: %d", u, resp.StatusCode)
				}
			}
			req, _ = http.NewRequest("PUT", u, strings.NewReader("x"))
			req.Header.Set("x-ms-blob-type", "BlockBlob")
			req.Header.Set("x-ms-version", "2021-12-02")
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
				if resp.StatusCode != http.StatusForbidden {
					t.Fatalf("the grant wrote %s: %d", u, resp.StatusCode)
				}
			}
		}
		// Revoking the stream's grants ends it.
		if status, body, _ := do(t, s.Request("DELETE", "/streams/consumed/grants", admin, adminPass, nil, "")); status != http.StatusOK && status != http.StatusNoContent {
			t.Fatalf("revoke: %d %s", status, body)
		}
		if _, err := azure.ReadCursorAt(ctx, g.Signature, azure.Config{MaxRetries: -1}); err == nil {
			t.Fatal("the cursor grant still works after the stream's grants were revoked")
		}
	})
}
