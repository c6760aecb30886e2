package e2e_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/azure"
	"github.com/messagevault/messagevault/client"
	"github.com/messagevault/messagevault/internal/azurite"
	"github.com/messagevault/messagevault/internal/history"
	"github.com/messagevault/messagevault/internal/mvtest"
)

// crashLoop kills a publishing server with SIGKILL at random moments,
// kills times, restarting it each time (start returns a fresh process on
// the same storage). Two producers publish batches numbered with producer
// sequences and retry every batch whose outcome they do not know, with the
// same sequence, until it is acknowledged, across the restarts. After each
// restart the stream must verify and explain the producers' history
// (internal/history): every acknowledged message exactly once at its
// acknowledged offset, nothing twice, each producer's batches in order.
func crashLoop(t *testing.T, kills int, start func() *mvtest.Server) {
	rnd := rand.New(rand.NewPCG(3, uint64(time.Now().UnixNano())))
	var hist history.History
	type producer struct {
		id      string
		seq     uint64
		pending []messagevault.Message // the batch to send until acknowledged
	}
	producers := []*producer{{id: "crash-a"}, {id: "crash-b"}}
	next := func(p *producer) {
		p.seq++
		p.pending = nil
		for i := 0; i < 20; i++ {
			p.pending = append(p.pending, msg("k", fmt.Sprintf("%s-%07d-%02d", p.id, p.seq, i)))
		}
	}
	for _, p := range producers {
		next(p)
	}
	s := start()
	for k := 0; k < kills; k++ {
		waitLeader(t, []*mvtest.Server{s}, 60*time.Second)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for _, p := range producers {
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
					values := make([]string, len(p.pending))
					for i, m := range p.pending {
						values[i] = string(m.Value)
					}
					req := s.Request("POST", "/streams/crashloop", admin, adminPass, transfer(t, p.pending), "")
					req.Header.Set("MessageVault-Producer", p.id)
					req.Header.Set("MessageVault-Sequence", strconv.FormatUint(p.seq, 10))
					a := history.Attempt{Producer: p.id, Sequence: p.seq, Values: values, Outcome: history.Unknown}
					resp, err := hc.Do(req)
					if err != nil {
						hist.Add(a)
						return // the server died: retry on the next one
					}
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					switch {
					case resp.StatusCode == 200:
						var ans publishAnswer
						if err := json.Unmarshal(body, &ans); err != nil {
							t.Errorf("publish answer %q: %v", body, err)
							return
						}
						a.Outcome, a.Offsets = history.Acked, ans.Offsets
						hist.Add(a)
						next(p)
					case resp.StatusCode >= 400 && resp.StatusCode < 500 && resp.StatusCode != 429:
						a.Outcome = history.Failed
						hist.Add(a)
						t.Errorf("%s/%d refused: %d %s", p.id, p.seq, resp.StatusCode, body)
						return
					default:
						hist.Add(a)
						time.Sleep(20 * time.Millisecond)
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
		rep := checkHistory(t, s, &hist, fmt.Sprintf("kill %d", k+1))
		if k%10 == 9 || k == kills-1 {
			t.Logf("kill %d: %v", k+1, rep)
		}
	}
	// The batches still pending go through on the last server, each once.
	waitLeader(t, []*mvtest.Server{s}, 60*time.Second)
	for _, p := range producers {
		for {
			req := s.Request("POST", "/streams/crashloop", admin, adminPass, transfer(t, p.pending), "")
			req.Header.Set("MessageVault-Producer", p.id)
			req.Header.Set("MessageVault-Sequence", strconv.FormatUint(p.seq, 10))
			status, body, _ := do(t, req)
			if status == 200 {
				var ans publishAnswer
				mustDecode(t, body, &ans)
				values := make([]string, len(p.pending))
				for i, m := range p.pending {
					values[i] = string(m.Value)
				}
				hist.Add(history.Attempt{Producer: p.id, Sequence: p.seq, Values: values, Outcome: history.Acked, Offsets: ans.Offsets})
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	rep := checkHistory(t, s, &hist, "at the end")
	if rep.Acked == 0 {
		t.Fatal("nothing was ever acknowledged")
	}
	if pending := hist.Pending(); len(pending) != 0 {
		t.Fatalf("batches never acknowledged: %v", pending)
	}
	t.Logf("CRASHLOOP: %d kills; %v", kills, rep)
}

// checkHistory reads the crash loop's stream back, verifies it and checks
// it against the history.
func checkHistory(t *testing.T, s *mvtest.Server, hist *history.History, when string) history.Report {
	t.Helper()
	ctx := context.Background()
	var stored []history.Stored
	r, err := client.New(s.URL, admin, mvtest.AdminPassword, client.WithGrantReader(azure.GrantReader{})).Reader(ctx, "crashloop")
	var ce *client.Error
	if errors.As(err, &ce) && ce.Status == http.StatusNotFound {
		return mustCheck(t, hist, nil, when) // killed before its first batch: no stream yet
	}
	if err != nil {
		t.Fatalf("%s: %v", when, err)
	}
	defer r.Close()
	for m, err := range r.Messages(ctx, 0, -1) {
		if errors.As(err, &ce) && ce.Status == http.StatusNotFound && len(stored) == 0 {
			return mustCheck(t, hist, nil, when) // killed before its first batch: no stream yet
		}
		if err != nil {
			t.Fatalf("%s: reading back: %v", when, err)
		}
		stored = append(stored, history.Stored{Offset: m.Offset, Value: string(m.Value)})
	}
	if _, err := r.Verify(ctx, nil); err != nil {
		t.Fatalf("%s: verify: %v", when, err)
	}
	return mustCheck(t, hist, stored, when)
}

func mustCheck(t *testing.T, hist *history.History, stored []history.Stored, when string) history.Report {
	t.Helper()
	rep, err := hist.Check(stored)
	if err != nil {
		t.Fatalf("%s: %v", when, err)
	}
	return rep
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
