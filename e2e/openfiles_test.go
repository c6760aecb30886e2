package e2e_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/internal/mvtest"
)

// TestManyStreamsWithinTheOpenFileLimit writes and reads far more streams
// than the server's limit of open files allows files for, with writers
// that stay open (the default idle timeout): 300 streams, each of which
// keeps at least three files (segment, position, time index), against a
// process limit of 256 descriptors. With --max-open-files the server
// keeps the files it has open within the bound, closing the least
// recently used idle ones, so that nothing fails with "too many open
// files", and every message reads back.
func TestManyStreamsWithinTheOpenFileLimit(t *testing.T) {
	const (
		streams   = 300
		producers = 16
		rounds    = 3
		bound     = 48
		limit     = 256
	)
	dir := t.TempDir()
	s := mvtest.Start(t, dir, nil, "--max-open-files", strconv.Itoa(bound), "--max-connections", "64")
	pid := s.Cmd.Process.Pid
	lim := unix.Rlimit{Cur: limit, Max: limit}
	if err := unix.Prlimit(pid, unix.RLIMIT_NOFILE, &lim, nil); err != nil {
		t.Fatalf("set the server's limit of open files: %v", err)
	}

	// Count the server's descriptors of stream files while it works.
	var peak atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			if n := streamFiles(pid, dir); int64(n) > peak.Load() {
				peak.Store(int64(n))
			}
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()

	client := &http.Client{Timeout: time.Minute}
	var wg sync.WaitGroup
	errs := make(chan error, producers)
	for p := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				for i := p; i < streams; i += producers {
					name := fmt.Sprintf("many-%03d", i)
					req := s.Request("POST", "/streams/"+name, admin, adminPass,
						transfer(t, []messagevault.Message{msg("k", fmt.Sprintf("%s-%d", name, r))}), "application/octet-stream")
					// Producer sequences: the writer keeps its table in the
					// state slots of the position file.
					req.Header.Set("MessageVault-Producer", name+"-producer")
					req.Header.Set("MessageVault-Sequence", strconv.Itoa(r+1))
					resp, err := client.Do(req)
					if err != nil {
						errs <- err
						return
					}
					var body strings.Builder
					_, _ = fmt.Fprint(&body, resp.Status)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						errs <- fmt.Errorf("publish to %s: %s", name, body.String())
						return
					}
					// And a read through the server, which opens the
					// stream's files for reading too.
					rreq := s.Request("GET", "/streams/"+name+"/messages?from=0&limit=10", admin, adminPass, nil, "")
					rresp, err := client.Do(rreq)
					if err != nil {
						errs <- err
						return
					}
					rresp.Body.Close()
					if rresp.StatusCode != http.StatusOK {
						errs <- fmt.Errorf("read %s: %s", name, rresp.Status)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-sampled
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if out := s.Stderr.String(); strings.Contains(out, "too many open files") {
		t.Errorf("the server ran out of descriptors:\n%s", out)
	}
	// The bound, plus what a moment's directory syncs and reads in
	// progress may add (the sampling sees descriptors being opened).
	if p := peak.Load(); p > bound+16 {
		t.Errorf("the server had %d stream files open at once; the bound is %d", p, bound)
	} else if p == 0 {
		t.Fatal("never saw a stream file open: the sampling does not work")
	} else {
		t.Logf("at most %d stream files open at once (bound %d)", p, bound)
	}

	// Every stream holds its three messages, in order, once each.
	for i := range streams {
		name := fmt.Sprintf("many-%03d", i)
		status, body, _ := do(t, s.Request("GET", "/streams/"+name+"/messages?from=0", admin, adminPass, nil, ""))
		if status != http.StatusOK {
			t.Fatalf("read %s: %d %s", name, status, body)
		}
		var got struct{ Messages []struct{ Value string } }
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatalf("read %s: %v: %s", name, err, body)
		}
		if len(got.Messages) != rounds {
			t.Fatalf("%s holds %d messages, want %d: %s", name, len(got.Messages), rounds, body)
		}
		for r, m := range got.Messages {
			if want := fmt.Sprintf("%s-%d", name, r); m.Value != want {
				t.Fatalf("%s message %d is %q, want %q", name, r, m.Value, want)
			}
		}
	}
}

// streamFiles counts the descriptors of process pid open on files under
// dir's stream folders (not the data directory's own files).
func streamFiles(pid int, dir string) int {
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0
	}
	n := 0
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join(fmt.Sprintf("/proc/%d/fd", pid), fd.Name()))
		if err != nil {
			continue
		}
		if rel, err := filepath.Rel(dir, target); err == nil && strings.Contains(rel, string(filepath.Separator)) && !strings.HasPrefix(rel, "..") {
			n++
		}
	}
	return n
}
