package e2e_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/internal/mvtest"
)

// hostPort returns the server's address for a raw connection.
func hostPort(s *mvtest.Server) string { return strings.TrimPrefix(s.URL, "http://") }

// closedWithin sends raw on a new connection and reports how long the
// server took to close it (reading whatever it answers).
func closedWithin(t *testing.T, s *mvtest.Server, raw string, limit time.Duration) (time.Duration, string) {
	t.Helper()
	conn, err := net.Dial("tcp", hostPort(s))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(start.Add(limit))
	answer, err := io.ReadAll(conn)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("%q: the connection is still open after %v (answer so far %q)", raw, limit, answer)
	}
	return time.Since(start), string(answer)
}

// TestSlowClientsAreCutOff: a request that declares a body and never sends
// it, with or without credentials, on any route, cannot hold a
// connection past --read-timeout; a chunked GET neither. Long-polls are
// not cut by it. Beyond --max-connections, connections wait to be
// accepted.
func TestSlowClientsAreCutOff(t *testing.T) {
	s := mvtest.Start(t, t.TempDir(), nil, "--read-timeout", "2s", "--max-connections", "20")
	for _, raw := range []string{
		"POST /streams/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc",
		"POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc",
		"GET /streams HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabc",
	} {
		took, answer := closedWithin(t, s, raw, 15*time.Second)
		t.Logf("%q: closed after %v, answer %.40q", strings.SplitN(raw, "\r\n", 2)[0], took.Round(time.Millisecond), answer)
	}

	// A long-poll outlives the read timeout: it is woken by the append.
	publish(t, s, "slow", []messagevault.Message{msg("k", "first")})
	pos := position(t, s, "slow")
	woke := make(chan int, 1)
	go func() {
		req := s.Request("GET", fmt.Sprintf("/streams/slow/messages?from=%d&wait=10", pos), admin, adminPass, nil, "")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			woke <- 0
			return
		}
		resp.Body.Close()
		woke <- resp.StatusCode
	}()
	time.Sleep(4 * time.Second)
	publish(t, s, "slow", []messagevault.Message{msg("k", "second")})
	if code := <-woke; code != http.StatusOK {
		t.Fatalf("a long-poll longer than the read timeout: %d", code)
	}

	// 20 connections that send nothing fill the server; the 21st waits
	// until one of them goes (well before the 10 s in which the server
	// would drop an idle one itself).
	http.DefaultClient.CloseIdleConnections() // they would count too
	time.Sleep(200 * time.Millisecond)
	var idle []net.Conn
	for i := 0; i < 20; i++ {
		c, err := net.Dial("tcp", hostPort(s))
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
		defer c.Close()
	}
	time.Sleep(200 * time.Millisecond)
	c, err := net.Dial("tcp", hostPort(s))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(time.Second))
	br := bufio.NewReader(c)
	if _, err := br.ReadString('\n'); err == nil {
		t.Fatal("a 21st connection was served while 20 were open")
	}
	idle[0].Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "HTTP/1.1 200") {
		t.Fatalf("after one connection closed: %q %v", line, err)
	}
}
