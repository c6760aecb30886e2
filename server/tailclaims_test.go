package server_test

import (
	"bufio"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/server"
)

// openTail opens an event stream as user and returns its lines.
func openTail(t *testing.T, url, user string) <-chan string {
	t.Helper()
	req, _ := http.NewRequest("GET", url+"/streams/tailed/events?from=0", nil)
	req.SetBasicAuth(user, "pw")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("tail as %s: %v %v", user, resp, err)
	}
	lines := make(chan string, 100)
	go func() {
		defer resp.Body.Close()
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	return lines
}

// endsWithin reads lines until the stream ends, and returns them; it
// fails if the stream is still open after d.
func endsWithin(t *testing.T, lines <-chan string, d time.Duration) string {
	t.Helper()
	var all []string
	timeout := time.After(d)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				return strings.Join(all, "\n")
			}
			all = append(all, l)
		case <-timeout:
			t.Fatalf("the event stream is still open after %v: %q", d, all)
		}
	}
}

// TestTailsEndWhenTheUserGoes: a user removed, or stripped of the claim to
// read the stream, loses its event streams within ClaimRecheck, told why;
// and no event stream outlives MaxTailDuration.
func TestTailsEndWhenTheUserGoes(t *testing.T) {
	users := newUsers(t)
	users.Add(context.Background(), "removed", "pw", "tailed:read")
	users.Add(context.Background(), "revoked", "pw", "tailed:read")
	users.Add(context.Background(), "stays", "pw", "tailed:read")
	v := memVault(t)
	if _, err := v.Append(context.Background(), "tailed", []messagevault.Message{messagevault.NewMessage([]byte("k"), []byte("v"), 0)}); err != nil {
		t.Fatal(err)
	}
	h := server.New(server.Config{Vault: v, Users: users, ClaimRecheck: 100 * time.Millisecond, MaxTailDuration: 3 * time.Second})
	defer h.Close()
	srv := httptest.NewServer(h)
	defer srv.Close()
	// The remaining user's tail is timed from before its request, so that
	// a slow machine cannot make it look short.
	start := time.Now()
	stays := openTail(t, srv.URL, "stays")
	removed, revoked := openTail(t, srv.URL, "removed"), openTail(t, srv.URL, "revoked")
	users.Remove(context.Background(), "removed")
	users.Revoke(context.Background(), "revoked", "tailed:read")
	for _, l := range []<-chan string{removed, revoked} {
		if got := endsWithin(t, l, 2*time.Second); !strings.Contains(got, "event: error") || !strings.Contains(got, "forbidden") {
			t.Fatalf("a tail whose user lost the claim ended with %q", got)
		}
	}
	got := endsWithin(t, stays, 10*time.Second)
	if took := time.Since(start); took < 3*time.Second {
		t.Fatalf("the remaining user's tail ended after %v, before MaxTailDuration (3s): %q", took, got)
	}
	if strings.Contains(got, "forbidden") {
		t.Fatalf("the remaining user's tail was ended as forbidden: %q", got)
	}
}
