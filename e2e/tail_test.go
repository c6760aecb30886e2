package e2e_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/internal/mvtest"
)

func TestLongPollIsWokenByTheAppend(t *testing.T) {
	s := mvtest.Start(t, t.TempDir(), nil)
	pos := publish(t, s, "events", []messagevault.Message{msg("k", "first")}).Position

	// A long poll at the end of the stream waits...
	type result struct {
		status int
		body   []byte
		took   time.Duration
	}
	done := make(chan result, 1)
	go func() {
		start := time.Now()
		status, body, _ := do(t, s.Request("GET", fmt.Sprintf("/streams/events/messages?from=%d&wait=30", pos), admin, adminPass, nil, ""))
		done <- result{status, body, time.Since(start)}
	}()
	select {
	case r := <-done:
		t.Fatalf("long poll answered before any append: %d %s", r.status, r.body)
	case <-time.After(300 * time.Millisecond):
	}
	// ...and the append itself wakes it, long before the wait ends.
	publish(t, s, "events", []messagevault.Message{msg("k", "second")})
	r := <-done
	if r.status != http.StatusOK || !strings.Contains(string(r.body), `"Value":"second"`) {
		t.Fatalf("long poll: %d %s", r.status, r.body)
	}
	if r.took > 20*time.Second {
		t.Fatalf("long poll took %v: not woken by the append", r.took)
	}
	// With nothing new, the wait ends empty, pointing at the same place.
	var page struct {
		Position, Next int64
		Messages       []any
	}
	status, body, _ := do(t, s.Request("GET", "/streams/events/messages?wait=0.2&from="+strconv.FormatInt(pos+recordSize("k", "second"), 10), admin, adminPass, nil, ""))
	mustDecode(t, body, &page)
	if status != http.StatusOK || len(page.Messages) != 0 || page.Next != page.Position {
		t.Fatalf("long poll with nothing new: %d %s", status, body)
	}
	// A position past the end is an error, not a wait.
	status, body, _ = do(t, s.Request("GET", fmt.Sprintf("/streams/events/messages?from=%d&wait=0.2", pos*10), admin, adminPass, nil, ""))
	if status != http.StatusBadRequest || !strings.Contains(string(body), "past the stream's position") {
		t.Fatalf("read past the position: %d %s", status, body)
	}
}

// sseEvent is one server-sent event.
type sseEvent struct {
	id, event, data string
}

func readEvents(t *testing.T, sc *bufio.Scanner, n int) []sseEvent {
	t.Helper()
	var out []sseEvent
	var cur sseEvent
	for len(out) < n && sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if cur.event != "" {
				out = append(out, cur)
			}
			cur = sseEvent{}
		case strings.HasPrefix(line, "id: "):
			cur.id = line[4:]
		case strings.HasPrefix(line, "event: "):
			cur.event = line[7:]
		case strings.HasPrefix(line, "data: "):
			cur.data = line[6:]
		}
	}
	if len(out) < n {
		t.Fatalf("got %d events, want %d: %v", len(out), n, sc.Err())
	}
	return out
}

func TestServerSentEventsTail(t *testing.T) {
	s := mvtest.Start(t, t.TempDir(), nil)
	publish(t, s, "feed", []messagevault.Message{msg("k", "m0"), msg("k", "m1")})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req := s.Request("GET", "/streams/feed/events?from=0", admin, adminPass, nil, "").WithContext(ctx)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	evs := readEvents(t, sc, 2)
	publish(t, s, "feed", []messagevault.Message{msg("k", "m2")})
	evs = append(evs, readEvents(t, sc, 1)...)
	for i, ev := range evs {
		var m struct {
			Value  string
			Offset int64
			Next   int64
		}
		if err := json.Unmarshal([]byte(ev.data), &m); err != nil {
			t.Fatal(err)
		}
		if ev.event != "message" || m.Value != fmt.Sprintf("m%d", i) || ev.id != strconv.FormatInt(m.Next, 10) {
			t.Fatalf("event %d: %+v", i, ev)
		}
	}
	cancel()

	// Reconnecting with Last-Event-ID resumes after the last event seen.
	publish(t, s, "feed", []messagevault.Message{msg("k", "m3")})
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	req = s.Request("GET", "/streams/feed/events", admin, adminPass, nil, "").WithContext(ctx2)
	req.Header.Set("Last-Event-ID", evs[1].id)
	resp2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp2.Body.Close()
	sc = bufio.NewScanner(resp2.Body)
	evs = readEvents(t, sc, 2)
	if !strings.Contains(evs[0].data, `"Value":"m2"`) || !strings.Contains(evs[1].data, `"Value":"m3"`) {
		t.Fatalf("resumed events: %+v", evs)
	}
}
