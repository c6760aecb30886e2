package e2e_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/client"
	"github.com/messagevault/messagevault/internal/azurite"
	"github.com/messagevault/messagevault/internal/mvtest"
)

// crashLoop kills a publishing server with SIGKILL at random moments,
// kills times, restarting it each time (start returns a fresh process on
// the same storage). After each restart every acknowledged message must
// read back intact, exactly once, and the whole stream must verify.
func crashLoop(t *testing.T, kills int, start func() *mvtest.Server) {
	rnd := rand.New(rand.NewPCG(3, uint64(time.Now().UnixNano())))
	acked := map[string]bool{}
	var mu sync.Mutex
	batch := 0
	s := start()
	publish(t, s, "crashloop", []messagevault.Message{msg("k", "first")})
	acked["first"] = true
	for k := 0; k < kills; k++ {
		waitLeader(t, []*mvtest.Server{s}, 60*time.Second)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for p := 0; p < 2; p++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				hc := &http.Client{Timeout: 10 * time.Second}
				for {
					select {
					case <-stop:
						return
					default:
					}
					mu.Lock()
					batch++
					b := batch
					mu.Unlock()
					var msgs []messagevault.Message
					for i := 0; i < 20; i++ {
						msgs = append(msgs, msg("k", fmt.Sprintf("b%07d-%02d", b, i)))
					}
					resp, err := hc.Do(s.Request("POST", "/streams/crashloop", admin, adminPass, transfer(t, msgs), ""))
					if err != nil {
						return // the server died
					}
					resp.Body.Close()
					if resp.StatusCode == 200 {
						mu.Lock()
						for _, m := range msgs {
							acked[string(m.Value)] = true
						}
						mu.Unlock()
					}
				}
			}()
		}
		time.Sleep(time.Duration(50+rnd.IntN(400)) * time.Millisecond)
		s.Signal(syscall.SIGKILL)
		s.Wait(10 * time.Second)
		close(stop)
		wg.Wait()

		s = start()
		ctx := context.Background()
		r, err := client.New(s.URL, admin, mvtest.AdminPassword).Reader(ctx, "crashloop")
		if err != nil {
			t.Fatalf("kill %d: %v", k, err)
		}
		seen := map[string]bool{}
		for m, err := range r.Messages(ctx, 0, -1) {
			if err != nil {
				t.Fatalf("kill %d: reading back: %v", k, err)
			}
			if seen[string(m.Value)] {
				t.Fatalf("kill %d: %s stored twice", k, m.Value)
			}
			seen[string(m.Value)] = true
		}
		res, err := r.Verify(ctx, nil)
		r.Close()
		if err != nil {
			t.Fatalf("kill %d: verify: %v", k, err)
		}
		mu.Lock()
		for v := range acked {
			if !seen[v] {
				t.Fatalf("kill %d: acknowledged message %s is lost", k, v)
			}
		}
		n := len(acked)
		mu.Unlock()
		if k%10 == 9 || k == kills-1 {
			t.Logf("kill %d: %d messages acknowledged, %d records stored, all verified", k+1, n, res.Records)
		}
	}
	if len(acked) == 0 {
		t.Fatal("nothing was ever acknowledged")
	}
	t.Logf("CRASHLOOP: %d kills, %d acknowledged messages, 0 lost", kills, len(acked))
}

// freePort returns a loopback address nothing listens on now.
func freePort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestCrashLoopLocal(t *testing.T) {
	dir := t.TempDir()
	crashLoop(t, 50, func() *mvtest.Server { return mvtest.Start(t, dir, nil) })
}

// On Azure the server comes back on the same address, so it takes its own
// lease back at once, as a restarted node does.
func TestCrashLoopAzure(t *testing.T) {
	az := azurite.Start(t)
	addr := freePort(t)
	crashLoop(t, 20, func() *mvtest.Server { return startAzure(t, az, "--listen", addr) })
}
