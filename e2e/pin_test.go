package e2e_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/internal/mvtest"
)

// metric reads one unlabelled metric from /metrics.
func metric(t *testing.T, s *mvtest.Server, name string) float64 {
	t.Helper()
	_, m, _ := do(t, s.Request("GET", "/metrics", admin, adminPass, nil, ""))
	for _, line := range strings.Split(string(m), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// TestReadersCannotPinMemory: clients that ask for large answers and never
// read them hold a buffer each, not their answers (values of control
// characters grow six times in JSON), and are cut off after
// --write-timeout; reads and tails beyond --max-reads and --max-tails get
// 429.
func TestReadersCannotPinMemory(t *testing.T) {
	s := mvtest.Start(t, t.TempDir(), nil, "--write-timeout", "3s", "--max-reads", "4", "--max-tails", "2")
	for b := 0; b < 10; b++ {
		var msgs []messagevault.Message
		for i := 0; i < 10; i++ {
			msgs = append(msgs, msg("k", strings.Repeat("\x01", 60000)))
		}
		publish(t, s, "pin", msgs)
	}
	// A raw answer past what the server keeps in memory (1 MiB) is read
	// twice from storage and is still the stream's bytes.
	status, raw, hdr := do(t, s.Request("GET", "/streams/pin/messages?from=0&limit=100&format=raw", admin, adminPass, nil, ""))
	next, _ := strconv.Atoi(hdr.Get("X-Messagevault-Next"))
	stored, err := os.ReadFile(filepath.Join(s.DataDir, "pin", "000000000000.b7"))
	if err != nil {
		t.Fatal(err)
	}
	if status != http.StatusOK || len(raw) != next || next < 2<<20 || !bytes.Equal(raw, stored[:next]) {
		t.Fatalf("raw read: %d, %d bytes, Next %d", status, len(raw), next)
	}
	before := metric(t, s, "go_memstats_heap_inuse_bytes")
	var conns []net.Conn
	for i := 0; i < 4; i++ {
		c, err := net.Dial("tcp", hostPort(s))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET /streams/pin/messages?from=0&limit=100 HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Basic %s\r\n\r\n", basic(admin, adminPass))
		conns = append(conns, c)
	}
	time.Sleep(time.Second)
	held := metric(t, s, "go_memstats_heap_inuse_bytes") - before
	t.Logf("four stalled readers of 36 MB answers: heap grew by %.1f MB", held/1e6)
	if held > 40e6 {
		t.Fatalf("four stalled readers hold %.0f MB of heap", held/1e6)
	}
	// The four hold every read slot: a fifth read waits for none, it is
	// refused.
	status, body, h := do(t, s.Request("GET", "/streams/pin/messages?from=0&limit=1", admin, adminPass, nil, ""))
	if status != http.StatusTooManyRequests || h.Get("Retry-After") == "" {
		t.Fatalf("a read past --max-reads: %d %s", status, body)
	}
	// Past the write timeout, the stalled answers are cut off: what the
	// sockets hold arrives, then the end, without the answer's last chunk.
	time.Sleep(3 * time.Second)
	for i, c := range conns {
		c.SetReadDeadline(time.Now().Add(20 * time.Second))
		got, err := io.ReadAll(c)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			s.Signal(syscall.SIGQUIT)
			time.Sleep(2 * time.Second)
			t.Fatalf("reader %d: still connected 20 s on, with %d bytes", i, len(got))
		}
		if strings.HasSuffix(string(got), "\r\n0\r\n\r\n") {
			t.Fatalf("reader %d got its whole answer (%d bytes)", i, len(got))
		}
	}
	// Tails: two are served, the third is refused.
	for i := 0; i < 2; i++ {
		resp, err := http.DefaultClient.Do(s.Request("GET", "/streams/pin/events?from=0", admin, adminPass, nil, ""))
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("tail %d: %v %v", i, resp, err)
		}
		defer resp.Body.Close()
	}
	status, body, _ = do(t, s.Request("GET", "/streams/pin/events?from=0", admin, adminPass, nil, ""))
	if status != http.StatusTooManyRequests || !strings.Contains(string(body), "tails") {
		t.Fatalf("a tail past --max-tails: %d %s", status, body)
	}
	status, body, _ = do(t, s.Request("GET", "/streams/pin/messages?from=0&wait=1", admin, adminPass, nil, ""))
	if status != http.StatusTooManyRequests {
		t.Fatalf("a long-poll past --max-tails: %d %s", status, body)
	}
}
