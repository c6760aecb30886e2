package e2e_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/internal/azurite"
	"github.com/messagevault/messagevault/internal/faultproxy"
	"github.com/messagevault/messagevault/internal/mvtest"
)

// TestAzureStorageFaults puts a fault-injecting proxy between the server
// and Azurite and, under a publishing load, adds latency, answers 503 and
// 500, drops connections and stalls requests. The server acknowledges
// nothing it did not store, keeps answering, and recovers when the faults
// stop.
func TestAzureStorageFaults(t *testing.T) {
	az := azurite.Start(t)
	p, err := faultproxy.Start("http://127.0.0.1:" + az.Port)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	cs := strings.Replace(az.ConnectionString(), "http://127.0.0.1:"+az.Port, p.URL, 1)
	s := mvtest.Start(t, t.TempDir(), nil, "--azure="+cs)
	waitLeader(t, []*mvtest.Server{s}, 60*time.Second)

	var mu sync.Mutex
	var acked []string
	codes := map[int]int{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	hc := &http.Client{Timeout: 120 * time.Second}
	for pr := 0; pr < 3; pr++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := 0; ; b++ {
				select {
				case <-stop:
					return
				default:
				}
				var msgs []messagevault.Message
				for i := 0; i < 10; i++ {
					msgs = append(msgs, msg(fmt.Sprintf("p%d", pr), fmt.Sprintf("p%d-%06d-%d", pr, b, i)))
				}
				resp, err := hc.Do(s.Request("POST", "/streams/faulty", admin, adminPass, transfer(t, msgs), ""))
				if err != nil {
					t.Errorf("the server did not answer: %v", err)
					return
				}
				resp.Body.Close()
				mu.Lock()
				codes[resp.StatusCode]++
				if resp.StatusCode == 200 {
					for _, m := range msgs {
						acked = append(acked, string(m.Value))
					}
				}
				mu.Unlock()
				time.Sleep(10 * time.Millisecond)
			}
		}()
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	phase := func(name string, m faultproxy.Mode, delay time.Duration, status int, d time.Duration) {
		p.Set(m, delay, status)
		time.Sleep(d)
		t.Logf("%s for %v: %d acknowledged so far, faults injected %d", name, d, count(), p.Faults())
	}
	phase("healthy", faultproxy.Pass, 0, 0, 2*time.Second)
	phase("latency 300 ms", faultproxy.Latency, 300*time.Millisecond, 0, 3*time.Second)
	phase("503 answers", faultproxy.Error, 0, 503, 5*time.Second)
	phase("500 answers", faultproxy.Error, 0, 500, 5*time.Second)
	phase("dropped connections", faultproxy.Drop, 0, 0, 5*time.Second)
	phase("stalled requests", faultproxy.Stall, 0, 0, 4*time.Second)
	before := count()
	p.Set(faultproxy.Pass, 0, 0)
	deadline := time.Now().Add(90 * time.Second)
	for count() < before+300 {
		if time.Now().After(deadline) {
			t.Fatalf("the server did not recover after the faults stopped (%d acknowledged)", count())
		}
		time.Sleep(50 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	mu.Lock()
	for code := range codes {
		if code != 200 && code < 500 {
			t.Errorf("a publish got %d under storage faults; want 200 or 5xx", code)
		}
	}
	t.Logf("STORAGE FAULTS: %d injected; answers %v; %d messages acknowledged", p.Faults(), codes, len(acked))
	mu.Unlock()

	stored := map[string]bool{}
	for _, r := range readGrant(t, s, "faulty") {
		stored[string(r.Value)] = true
	}
	for _, v := range acked {
		if !stored[v] {
			t.Fatalf("acknowledged message %s is lost", v)
		}
	}
}
