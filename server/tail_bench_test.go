package server_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/file"
	"github.com/messagevault/messagevault/vault"
)

// BenchmarkTailLatency measures, at 100 messages per second on the file
// backend (durable appends), the time from the start of a publish to the
// moment a reader of the stream's server-sent events has the message:
// the append, its group commit (two fdatasyncs), the wake-up of the tail
// and the event's way over HTTP on loopback. It reports the median, p99
// and max in ms; b.N is the number of messages.
func BenchmarkTailLatency(b *testing.B) {
	ctx := context.Background()
	store, err := file.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	v := vault.New(store, vault.Config{})
	defer func() { v.Close(); store.Close() }()
	srv := serveOverHTTP(b, v, "tail:write")
	if _, err := v.Append(ctx, "tail", []messagevault.Message{messagevault.NewMessage([]byte("k"), []byte("first"), 0)}); err != nil {
		b.Fatal(err)
	}
	req, err := http.NewRequestWithContext(ctx, "GET", srv.URL+"/streams/tail/events", nil)
	if err != nil {
		b.Fatal(err)
	}
	req.SetBasicAuth("ann", "pw")
	resp, err := srv.Client().Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	got := make(chan int, 1)
	go func() {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if data, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				var m struct{ Value string }
				if json.Unmarshal([]byte(data), &m) == nil {
					n, _ := strconv.Atoi(m.Value)
					got <- n
				}
			}
		}
		close(got)
	}()
	body := func(i int) string { return `[{"key":"k","value":"` + strconv.Itoa(i) + `"}]` }
	publish := func(i int) {
		req, _ := http.NewRequest("POST", srv.URL+"/streams/tail/messages", strings.NewReader(body(i)))
		req.Header.Set("Content-Type", "application/json")
		req.SetBasicAuth("ann", "pw")
		resp, err := srv.Client().Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			b.Errorf("publish %d: %v %v", i, resp, err)
			return
		}
		resp.Body.Close()
	}
	publish(-1) // the first check of the password costs a bcrypt
	if <-got != -1 {
		b.Fatal("the tail missed the warm-up message")
	}
	var lats []time.Duration
	next := time.Now()
	for i := 0; b.Loop(); i++ {
		time.Sleep(time.Until(next))
		next = next.Add(10 * time.Millisecond)
		start := time.Now()
		go publish(i)
		if n, ok := <-got; !ok || n != i {
			b.Fatalf("the tail gave %d (%v), want %d", n, ok, i)
		}
		lats = append(lats, time.Since(start))
	}
	slices.Sort(lats)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(lats[len(lats)/2]), "ms/p50")
	b.ReportMetric(ms(lats[min(len(lats)*99/100, len(lats)-1)]), "ms/p99")
	b.ReportMetric(ms(lats[len(lats)-1]), "ms/max")
}
