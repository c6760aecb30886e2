package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/formats"
)

// tailStreams is how many streams the tails are spread over, and
// tailMessages how many messages each stream gets.
const (
	tailStreams  = 100
	tailMessages = 10
)

// runTails opens n event streams against a new server, publishes
// tailMessages messages to each of tailStreams streams, waits until every
// tail has had every message, and reports the server's peak memory.
func runTails(ctx context.Context, bin string, n int) error {
	srv, err := startServer(ctx, bin, nil, "--max-tails", strconv.Itoa(n+100), "--max-connections", strconv.Itoa(n+100))
	if err != nil {
		return err
	}
	defer srv.stop()
	pid := srv.cmd.Process.Pid
	base := "http://" + srv.addr
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	publish := func(name string, i int) error {
		body, err := formats.AppendTransfer(nil, []messagevault.Message{messagevault.NewMessage([]byte("k"), []byte(fmt.Sprintf("%s-%d", name, i)), 0)})
		if err != nil {
			return err
		}
		req, err := http.NewRequestWithContext(ctx, "POST", base+"/streams/"+name, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.SetBasicAuth("admin", password)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("publish to %s: %s", name, resp.Status)
		}
		return nil
	}
	// Each stream exists before the tails open, with one message they
	// skip (they follow the tail).
	for s := range tailStreams {
		if err := publish(fmt.Sprintf("tail-%03d", s), -1); err != nil {
			return err
		}
	}

	var opened, complete, failed atomic.Int64
	allDone := make(chan struct{})
	var once sync.Once
	tctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("tail-%03d", i%tailStreams)
			req, _ := http.NewRequestWithContext(tctx, "GET", base+"/streams/"+name+"/events", nil)
			req.SetBasicAuth("admin", password)
			resp, err := (&http.Client{}).Do(req)
			if err != nil {
				failed.Add(1)
				return
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				failed.Add(1)
				return
			}
			opened.Add(1)
			sc := bufio.NewScanner(resp.Body)
			got := 0
			for sc.Scan() {
				if strings.HasPrefix(sc.Text(), "event: message") {
					if got++; got == tailMessages {
						if complete.Add(1) == int64(n) {
							once.Do(func() { close(allDone) })
						}
					}
				}
			}
		}()
	}
	// Wait for the tails to open, then publish.
	deadline := time.Now().Add(2 * time.Minute)
	for opened.Load()+failed.Load() < int64(n) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	peakKB := statusKB(pid, "VmRSS")
	openedRSS := peakKB
	start := time.Now()
	for i := range tailMessages {
		for s := range tailStreams {
			if err := publish(fmt.Sprintf("tail-%03d", s), i); err != nil {
				return err
			}
		}
		peakKB = max(peakKB, statusKB(pid, "VmRSS"))
	}
	wait := time.After(2 * time.Minute)
	for done := false; !done; {
		select {
		case <-allDone:
			done = true
		case <-wait:
			done = true
		case <-time.After(100 * time.Millisecond):
			peakKB = max(peakKB, statusKB(pid, "VmRSS"))
		}
	}
	delivered := time.Since(start)
	peakKB = max(peakKB, statusKB(pid, "VmRSS"))
	hwm := statusKB(pid, "VmHWM")
	cancel()
	wg.Wait()

	fmt.Printf("%d event streams over %d streams; %d messages published to each stream, %d tails got all of them in %v (%d failed to open)\n\n",
		n, tailStreams, tailMessages, complete.Load(), delivered.Round(time.Millisecond), failed.Load())
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "goal\twant\tmeasured\tpass")
	pass := func(ok bool) string {
		if ok {
			return "yes"
		}
		return "no"
	}
	fmt.Fprintf(w, "server memory with %d tails open (VmRSS, then VmHWM)\t< 512 MB\t%d MB open, %d MB peak while they catch up (VmHWM %d MB)\t%s\n",
		n, openedRSS/1000, peakKB/1000, hwm/1000, pass(hwm < 512_000))
	fmt.Fprintf(w, "every tail gets every message\t%d\t%d\t%s\n", n, complete.Load(), pass(complete.Load() == int64(n)))
	return w.Flush()
}
