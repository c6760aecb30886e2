package e2e_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/internal/mvtest"
)

// inflightBytes reads messagevault_publish_inflight_bytes.
func inflightBytes(t *testing.T, s *mvtest.Server) int64 {
	t.Helper()
	_, m, _ := do(t, s.Request("GET", "/metrics", admin, adminPass, nil, ""))
	for _, line := range strings.Split(string(m), "\n") {
		if v, ok := strings.CutPrefix(line, "messagevault_publish_inflight_bytes "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return int64(f)
		}
	}
	t.Fatal("no messagevault_publish_inflight_bytes")
	return 0
}

// openBody starts a publish as user that declares a body of declared
// bytes and sends sent of them.
func openBody(t *testing.T, s *mvtest.Server, user, pass, stream string, declared int, sent []byte) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", hostPort(s))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "POST /streams/%s HTTP/1.1\r\nHost: x\r\nAuthorization: Basic %s\r\nContent-Length: %d\r\nContent-Type: application/octet-stream\r\n\r\n",
		stream, basic(user, pass), declared)
	conn.Write(sent)
	return conn
}

// TestOneWriterCannotStarveOthers: a user who may write one stream opens
// many publishes that declare large bodies and send (almost) nothing. They
// hold only what they sent, so everyone else's publishes go through; and
// one user's publishes together cannot take more than its share of the
// in-flight budget.
func TestOneWriterCannotStarveOthers(t *testing.T) {
	dir := t.TempDir()
	users := usersWithAdmin(t, dir)
	users.Add(context.Background(), "narrow", "narrow-pw", "narrow:write")
	// A 4 MB budget, bodies up to 1 MB: a user's share is 1 MB.
	s := mvtest.Start(t, dir, nil, "--max-body", "1000000", "--max-inflight", "4000000", "--read-timeout", "60s")
	publish(t, s, "narrow", []messagevault.Message{msg("k", "warm up")}) // as admin
	var msgs []messagevault.Message
	for i := 0; i < 15; i++ {
		msgs = append(msgs, msg("k", strings.Repeat("x", 60000)))
	}
	big := transfer(t, msgs) // about 900 kB
	// Eight bodies of the largest size, declared: under the old rule
	// (reserve what is declared) four of them took the whole budget.
	for i := 0; i < 8; i++ {
		openBody(t, s, "narrow", "narrow-pw", "narrow", 1000000, big[:10])
	}
	deadline := time.Now().Add(30 * time.Second)
	for inflightBytes(t, s) < 80 { // each has sent 10 bytes, past a bcrypt check
		if time.Now().After(deadline) {
			t.Fatal("the eight publishes never started reading their bodies")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if held := inflightBytes(t, s); held > 1000 {
		t.Fatalf("eight publishes that sent 10 bytes each hold %d bytes", held)
	}
	status, body, _ := do(t, s.Request("POST", "/streams/others", admin, adminPass, transfer(t, []messagevault.Message{msg("k", "not starved")}), ""))
	if status != http.StatusOK {
		t.Fatalf("another user's publish while the narrow writer holds eight bodies open: %d %s", status, body)
	}

	// The narrow user sends one body almost whole: it holds most of its
	// share, and a second body of its own is refused, while others still
	// publish.
	first := openBody(t, s, "narrow", "narrow-pw", "narrow", len(big), big[:len(big)-1])
	for inflightBytes(t, s) < int64(len(big))-1 {
		if time.Now().After(deadline) {
			t.Fatal("the first body was never reserved")
		}
		time.Sleep(50 * time.Millisecond)
	}
	second := openBody(t, s, "narrow", "narrow-pw", "narrow", len(big), big)
	second.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(second), nil)
	if err != nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("a second body past the user's share: %v %v", resp, err)
	}
	status, body, _ = do(t, s.Request("POST", "/streams/others", admin, adminPass, transfer(t, []messagevault.Message{msg("k", "still not starved")}), ""))
	if status != http.StatusOK {
		t.Fatalf("another user's publish while the narrow writer holds its share: %d %s", status, body)
	}
	first.Write(big[len(big)-1:])
	first.SetReadDeadline(time.Now().Add(30 * time.Second))
	if resp, err := http.ReadResponse(bufio.NewReader(first), nil); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("the first body, finished: %v %v", resp, err)
	}
}
