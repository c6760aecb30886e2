// Package e2e_test runs the built messagevault binary on loopback and
// checks it from outside, as producers and consumers would.
package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/auth"
	"github.com/messagevault/messagevault/file"
	"github.com/messagevault/messagevault/formats"
	"github.com/messagevault/messagevault/internal/mvtest"
	"github.com/messagevault/messagevault/stream"
)

const admin = "admin"

var adminPass = mvtest.AdminPassword

// do sends req and returns the status and body.
func do(t *testing.T, req *http.Request) (int, []byte, http.Header) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body, resp.Header
}

type publishAnswer struct {
	Position int64
	Offsets  []int64
}

type apiError struct {
	Error string
	Type  string
}

// transfer encodes msgs as a v1 transfer body.
func transfer(t *testing.T, msgs []messagevault.Message) []byte {
	t.Helper()
	body, err := formats.AppendTransfer(nil, msgs)
	if err != nil {
		t.Fatal(err)
	}
	return body
}

func msg(key, value string) messagevault.Message {
	return messagevault.NewMessage([]byte(key), []byte(value), 0)
}

// publish posts msgs in the transfer format as admin and returns the answer.
func publish(t *testing.T, s *mvtest.Server, stream string, msgs []messagevault.Message) publishAnswer {
	t.Helper()
	status, body, _ := do(t, s.Request("POST", "/streams/"+stream, admin, adminPass, transfer(t, msgs), "application/octet-stream"))
	if status != http.StatusOK {
		t.Fatalf("publish to %s: %d %s", stream, status, body)
	}
	var ans publishAnswer
	if err := json.Unmarshal(body, &ans); err != nil {
		t.Fatalf("publish answer %q: %v", body, err)
	}
	return ans
}

// position returns a stream's committed position as the listing shows it
// (0 for a stream that does not exist).
func position(t *testing.T, s *mvtest.Server, name string) int64 {
	t.Helper()
	status, body, _ := do(t, s.Request("GET", "/streams", admin, adminPass, nil, ""))
	if status != http.StatusOK {
		t.Fatalf("GET /streams: %d %s", status, body)
	}
	var ans struct {
		Streams []struct {
			Name     string
			Position int64
		}
	}
	if err := json.Unmarshal(body, &ans); err != nil {
		t.Fatal(err)
	}
	for _, st := range ans.Streams {
		if st.Name == name {
			return st.Position
		}
	}
	return 0
}

// readDirect reads every committed record of a stream from the read grant
// (a file:// URL), without the server, and returns copies of them.
func readDirect(t *testing.T, s *mvtest.Server, name string) []formats.Record {
	t.Helper()
	status, body, _ := do(t, s.Request("GET", "/streams/"+name, admin, adminPass, nil, ""))
	if status != http.StatusOK {
		t.Fatalf("GET /streams/%s: %d %s", name, status, body)
	}
	var grant struct{ Signature string }
	if err := json.Unmarshal(body, &grant); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(grant.Signature)
	if err != nil || u.Scheme != "file" {
		t.Fatalf("grant %q is not a file:// URL", grant.Signature)
	}
	pr, err := file.OpenStreamReader(u.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	var out []formats.Record
	r := stream.NewReader(name, pr, stream.ReaderConfig{})
	for rec, err := range r.Records(context.Background(), 0, -1) {
		if err != nil {
			t.Fatal(err)
		}
		rec.Key = append([]byte(nil), rec.Key...)
		rec.Value = append([]byte(nil), rec.Value...)
		out = append(out, rec)
	}
	return out
}

// recordSize is the stored size of a record: 25 bytes plus key and value.
func recordSize(key, value string) int64 { return int64(25 + len(key) + len(value)) }

func values(recs []formats.Record) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = fmt.Sprintf("%s=%s", r.Key, r.Value)
	}
	return out
}

var httpClient = &http.Client{Timeout: 30 * time.Second}

// usersWithAdmin opens the users file of data directory dir, with the
// user admin (all:write, adminPass) in it, for tests that add their own
// users before the server starts.
func usersWithAdmin(t *testing.T, dir string) *auth.Users {
	t.Helper()
	users, err := auth.Open(context.Background(), auth.NewFileSource(filepath.Join(dir, "auth.json")), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := users.Add(context.Background(), "admin", adminPass, "all:write"); err != nil {
		t.Fatal(err)
	}
	return users
}

// decode parses a JSON answer into v. A body that is not the JSON
// expected is an error of the test (reported with the body), and decode
// returns false; it is safe in a test's other goroutines.
func decode(t *testing.T, body []byte, v any) bool {
	t.Helper()
	if err := json.Unmarshal(body, v); err != nil {
		t.Errorf("the answer is not the JSON expected (%T): %v\n%.500s", v, err, body)
		return false
	}
	return true
}

// mustDecode is decode that stops the test; call it from the test's own
// goroutine.
func mustDecode(t *testing.T, body []byte, v any) {
	t.Helper()
	if !decode(t, body, v) {
		t.FailNow()
	}
}
