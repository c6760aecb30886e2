//go:build soak

package e2e_test

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/internal/mvtest"
)

// gauges reads a few process gauges from /metrics.
func gauges(t *testing.T, s *mvtest.Server) map[string]float64 {
	resp, err := http.DefaultClient.Do(s.Request("GET", "/metrics", admin, adminPass, nil, ""))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		for _, name := range []string{"go_goroutines", "process_open_fds", "process_resident_memory_bytes"} {
			if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
				out[name], _ = strconv.ParseFloat(v, 64)
			}
		}
	}
	return out
}

// TestSoak runs a steady load (publishes, reads, tails, many streams) for
// SOAK_DURATION (default 5m) and fails if goroutines, open files or memory
// keep growing: the average of the last third of the samples may not pass
// the first third's by more than half (and a small absolute margin).
// Run it with `make soak`; it is not part of `make test`.
func TestSoak(t *testing.T) {
	d := 5 * time.Minute
	if v := os.Getenv("SOAK_DURATION"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil {
			t.Fatal(err)
		}
	}
	s := mvtest.Start(t, t.TempDir(), nil, "--idle-timeout", "20s")
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for p := 0; p < 4; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := 0; ; b++ {
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
				name := fmt.Sprintf("soak-%d", (b*4+p)%40)
				var msgs []messagevault.Message
				for i := 0; i < 20; i++ {
					msgs = append(msgs, msg("k", fmt.Sprintf("%d-%d-%d", p, b, i)))
				}
				resp, err := httpClient.Do(s.Request("POST", "/streams/"+name, admin, adminPass, transfer(t, msgs), ""))
				if err == nil {
					resp.Body.Close()
				}
				if b%10 == 0 {
					if resp, err := httpClient.Do(s.Request("GET", "/streams/"+name+"/messages?limit=50", admin, adminPass, nil, "")); err == nil {
						resp.Body.Close()
					}
				}
			}
		}()
	}
	var samples []map[string]float64
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		time.Sleep(min(10*time.Second, d/10))
		g := gauges(t, s)
		samples = append(samples, g)
		t.Logf("goroutines %.0f, open files %.0f, RSS %.1f MB", g["go_goroutines"], g["process_open_fds"], g["process_resident_memory_bytes"]/1e6)
	}
	close(stop)
	wg.Wait()
	third := len(samples) / 3
	if third == 0 {
		t.Fatal("too short a soak to judge")
	}
	avg := func(xs []map[string]float64, k string) float64 {
		sum := 0.0
		for _, x := range xs {
			sum += x[k]
		}
		return sum / float64(len(xs))
	}
	for k, margin := range map[string]float64{"go_goroutines": 20, "process_open_fds": 20, "process_resident_memory_bytes": 32e6} {
		first, last := avg(samples[:third], k), avg(samples[len(samples)-third:], k)
		if last > first*1.5+margin {
			t.Errorf("%s keeps growing: %.0f at first, %.0f at the end", k, first, last)
		}
	}
}
