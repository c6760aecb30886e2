package e2e_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/azure"
	"github.com/messagevault/messagevault/client"
	"github.com/messagevault/messagevault/internal/azurite"
	"github.com/messagevault/messagevault/internal/mvtest"
	"github.com/messagevault/messagevault/segment"
)

// segMsgs returns n messages of about 9 KB whose values carry their
// sequence numbers from first.
func segMsgs(first, n int) []messagevault.Message {
	out := make([]messagevault.Message, n)
	for i := range out {
		v := fmt.Sprintf("seq=%08d|%s", first+i, strings.Repeat("x", 9000))
		out[i] = messagevault.NewMessage([]byte("k"), []byte(v), 0)
	}
	return out
}

// seqOfValue returns the sequence number a segMsgs value carries.
func seqOfValue(t *testing.T, v []byte) int {
	t.Helper()
	n, err := strconv.Atoi(strings.TrimPrefix(string(v[:12]), "seq="))
	if err != nil {
		t.Fatalf("value %.20q is not a test message", v)
	}
	return n
}

// streamStart returns a stream's Position and Start from GET /streams.
func streamStart(t *testing.T, s *mvtest.Server, name string) (int64, int64) {
	t.Helper()
	status, body, _ := do(t, s.Request("GET", "/streams", admin, adminPass, nil, ""))
	var ans struct {
		Streams []struct {
			Name            string
			Position, Start int64
		}
	}
	mustDecode(t, body, &ans)
	if status != http.StatusOK {
		t.Fatalf("GET /streams: %d %s", status, body)
	}
	for _, st := range ans.Streams {
		if st.Name == name {
			return st.Position, st.Start
		}
	}
	t.Fatalf("stream %s is not listed: %s", name, body)
	return 0, 0
}

// TestSegmentsAndTrim: a server with 1 MiB segments rolls a stream over
// many segments; a tail opened at the start, a direct reader through the
// grant and reads through the server all follow the chain; since= finds
// a time across segments; a trim removes whole segments (trim claim or
// admin), reads below the new start get 410 with it, and the listing
// shows it. On the local backend and on Azurite.
func TestSegmentsAndTrim(t *testing.T) {
	t.Run("local", func(t *testing.T) {
		dir := t.TempDir()
		s := mvtest.Start(t, dir, nil, "--segment-size", "1MiB")
		segmentsSuite(t, s, client.New(s.URL, admin, adminPass), func() []int64 {
			entries, err := os.ReadDir(filepath.Join(dir, "rolled"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := os.Stat(filepath.Join(dir, "rolled", "time.ti")); err != nil {
				t.Fatalf("no time index beside the segments: %v", err)
			}
			var segs []int64
			for _, e := range entries {
				if st, ok := segment.Parse(e.Name()); ok {
					info, _ := e.Info()
					if info.Size() > 1<<20 {
						t.Fatalf("segment file %s is %d bytes, past --segment-size", e.Name(), info.Size())
					}
					segs = append(segs, st)
				}
			}
			return segs
		})
	})
	t.Run("azure", func(t *testing.T) {
		az := azurite.Start(t)
		s := startAzure(t, az, "--segment-size", "1MiB")
		st, err := azure.Open(az.ConnectionString(), azure.Config{})
		if err != nil {
			t.Fatal(err)
		}
		segmentsSuite(t, s, client.New(s.URL, admin, adminPass, client.WithGrantReader(azure.GrantReader{})), func() []int64 {
			pr, err := st.OpenReader(context.Background(), "rolled")
			if err != nil {
				t.Fatal(err)
			}
			defer pr.Close()
			segs, err := pr.Segments(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			return segs
		})
	})
}

func segmentsSuite(t *testing.T, s *mvtest.Server, c *client.Client, stored func() []int64) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// A tail from the start, open before the stream rolls.
	publish(t, s, "rolled", segMsgs(0, 1))
	tail, err := http.NewRequestWithContext(ctx, "GET", s.URL+"/streams/rolled/events?from=0", nil)
	if err != nil {
		t.Fatal(err)
	}
	tail.SetBasicAuth(admin, adminPass)
	tresp, err := http.DefaultClient.Do(tail)
	if err != nil || tresp.StatusCode != http.StatusOK {
		t.Fatalf("tail: %v %v", tresp, err)
	}
	defer tresp.Body.Close()
	tailed := make(chan int, 1000)
	go func() {
		defer close(tailed)
		sc := bufio.NewScanner(tresp.Body)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				var m struct{ Value string }
				if decode(t, []byte(v), &m) && strings.HasPrefix(m.Value, "seq=") {
					n, _ := strconv.Atoi(m.Value[4:12])
					tailed <- n
				}
			}
		}
	}()

	// About 5 MiB in batches of 20: several segments.
	next := 1
	var mid time.Time
	for next < 560 {
		if next >= 280 && mid.IsZero() {
			time.Sleep(20 * time.Millisecond)
			mid = time.Now()
			time.Sleep(20 * time.Millisecond)
		}
		publish(t, s, "rolled", segMsgs(next, 20))
		next += 20
	}
	segs := stored()
	if len(segs) < 4 || segs[0] != 0 {
		t.Fatalf("segments %v: want at least 4, from 0", segs)
	}
	// The tail follows across every roll.
	for want := 0; want < next; want++ {
		select {
		case got := <-tailed:
			if got != want {
				t.Fatalf("tail: message %d, want %d", got, want)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("tail stopped after %d messages", want)
		}
	}
	// A direct reader (through the grant), from the start.
	r, err := c.Reader(ctx, "rolled")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.ViaServer {
		t.Fatal("the client read through the server, not the grant")
	}
	n := 0
	for m, err := range r.Messages(ctx, 0, -1) {
		if err != nil {
			t.Fatal(err)
		}
		if got := seqOfValue(t, m.Value); got != n {
			t.Fatalf("direct read: message %d, want %d", got, n)
		}
		n++
	}
	if n != next {
		t.Fatalf("direct read: %d messages, want %d", n, next)
	}
	// since= lands on the first message after mid, across segments.
	status, body, _ := do(t, s.Request("GET", "/streams/rolled/messages?limit=1&since="+mid.UTC().Format(time.RFC3339Nano), admin, adminPass, nil, ""))
	var page struct {
		Messages []struct{ Value string }
	}
	mustDecode(t, body, &page)
	if status != http.StatusOK || len(page.Messages) != 1 || !strings.HasPrefix(page.Messages[0].Value, "seq=00000281|") {
		t.Fatalf("since= across segments: %d %.200s", status, body)
	}

	// Trimming: who may, and what is refused.
	status, body, _ = do(t, s.Request("POST", "/users", admin, adminPass, []byte(`{"Name":"trimmer","Password":"trimmer-pw-123","Claims":["rolled:trim"]}`), "application/json"))
	if status != http.StatusOK && status != http.StatusCreated {
		t.Fatalf("add user: %d %s", status, body)
	}
	status, body, _ = do(t, s.Request("POST", "/users", admin, adminPass, []byte(`{"Name":"writer","Password":"writer-pw-123","Claims":["rolled:write"]}`), "application/json"))
	if status != http.StatusOK && status != http.StatusCreated {
		t.Fatalf("add user: %d %s", status, body)
	}
	pos, start := streamStart(t, s, "rolled")
	if start != 0 {
		t.Fatalf("start %d before any trim", start)
	}
	before := segs[2] + 100
	for _, tc := range []struct {
		user, pass, path string
		status           int
		says             string
	}{
		{"writer", "writer-pw-123", fmt.Sprintf("/streams/rolled/messages?before=%d", before), http.StatusForbidden, "rolled:trim"},
		{admin, adminPass, "/streams/rolled/messages?before=nope", http.StatusBadRequest, "before"},
		{admin, adminPass, "/streams/rolled/messages", http.StatusBadRequest, "before"},
		{admin, adminPass, fmt.Sprintf("/streams/rolled/messages?before=%d", pos+1), http.StatusBadRequest, "position"},
		{admin, adminPass, "/streams/nothing-here/messages?before=0", http.StatusNotFound, "nothing-here"},
	} {
		status, body, _ := do(t, s.Request("DELETE", tc.path, tc.user, tc.pass, nil, ""))
		if status != tc.status || !strings.Contains(string(body), tc.says) {
			t.Fatalf("DELETE %s as %s: %d %s; want %d naming %q", tc.path, tc.user, status, body, tc.status, tc.says)
		}
	}
	if len(stored()) != len(segs) {
		t.Fatal("a refused trim removed segments")
	}
	status, body, _ = do(t, s.Request("DELETE", fmt.Sprintf("/streams/rolled/messages?before=%d", before), "trimmer", "trimmer-pw-123", nil, ""))
	var trimmed struct{ Start int64 }
	mustDecode(t, body, &trimmed)
	if status != http.StatusOK || trimmed.Start != segs[2] {
		t.Fatalf("trim before %d: %d %s; want start %d", before, status, body, segs[2])
	}
	if after := stored(); len(after) != len(segs)-2 || after[0] != segs[2] {
		t.Fatalf("segments after the trim: %v (were %v)", after, segs)
	}
	if _, start := streamStart(t, s, "rolled"); start != segs[2] {
		t.Fatalf("listing: start %d, want %d", start, segs[2])
	}
	// Reads below the start: 410 with the start; without from, from it.
	status, body, _ = do(t, s.Request("GET", "/streams/rolled/messages?from=0", admin, adminPass, nil, ""))
	var gone struct {
		Error string
		Start int64
	}
	mustDecode(t, body, &gone)
	if status != http.StatusGone || gone.Start != segs[2] || gone.Error == "" {
		t.Fatalf("read below the start: %d %s", status, body)
	}
	status, body, hdr := do(t, s.Request("GET", "/streams/rolled/messages?limit=1", admin, adminPass, nil, ""))
	mustDecode(t, body, &page)
	if status != http.StatusOK || len(page.Messages) != 1 || hdr.Get("X-Messagevault-Start") != strconv.FormatInt(segs[2], 10) {
		t.Fatalf("read without from after the trim: %d %s %v", status, body, hdr)
	}
	first := seqOfValue(t, []byte(page.Messages[0].Value))
	// The direct reader: below the start is ErrTrimmed; from it, the rest.
	for _, err := range r.Messages(ctx, 0, -1) {
		if !errors.Is(err, messagevault.ErrTrimmed) {
			t.Fatalf("direct read below the start: %v, want ErrTrimmed", err)
		}
		break
	}
	rstart, err := r.Start(ctx)
	if err != nil || rstart != segs[2] {
		t.Fatalf("reader start %d, %v", rstart, err)
	}
	n = first
	for m, err := range r.Messages(ctx, rstart, -1) {
		if err != nil {
			t.Fatal(err)
		}
		if got := seqOfValue(t, m.Value); got != n {
			t.Fatalf("direct read after the trim: message %d, want %d", got, n)
		}
		n++
	}
	if n != next {
		t.Fatalf("direct read after the trim ended at %d, want %d", n, next)
	}
	// The CLI: trim again, then read from the start.
	if out := mustCLI(t, s, "", "trim", "rolled", "--before", strconv.FormatInt(segs[3], 10)); !strings.Contains(out, "rolled starts at "+strconv.FormatInt(segs[3], 10)) {
		t.Fatalf("messagevault trim: %s", out)
	}
	if out, errs, code := cli(t, s, "", "trim", "rolled"); code != 2 || !strings.Contains(errs, "--before") {
		t.Fatalf("messagevault trim without --before: %d %s %s", code, out, errs)
	}
	out := mustCLI(t, s, "", "read", "rolled", "--limit", "1")
	if !strings.HasPrefix(out, strconv.FormatInt(segs[3], 10)+"\t") {
		t.Fatalf("read after trimming: %q", out)
	}
	if out := mustCLI(t, s, "", "verify", "rolled"); !strings.Contains(out, "all good") {
		t.Fatalf("verify after trimming: %s", out)
	}
	// The stream goes on.
	publish(t, s, "rolled", segMsgs(next, 1))
	// Deleting a stream of many segments removes them all.
	status, body, _ = do(t, s.Request("DELETE", "/streams/rolled", admin, adminPass, nil, ""))
	if status != http.StatusOK {
		t.Fatalf("delete the segmented stream: %d %s", status, body)
	}
	if status, body, _ = do(t, s.Request("GET", "/streams/rolled/messages", admin, adminPass, nil, "")); status != http.StatusNotFound {
		t.Fatalf("a read of the deleted stream: %d %s", status, body)
	}
}

// TestSegmentSizeFlag: serve refuses a --segment-size under 1 MiB or not a
// multiple of 512 bytes, at once, saying what is wanted.
func TestSegmentSizeFlag(t *testing.T) {
	for _, v := range []string{"512KiB", "1048577", "lots", "-1"} {
		cmd := exec.Command(mvtest.Binary(t), "serve", "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--segment-size", v)
		cmd.Env = mvtest.Env()
		out, err := cmd.CombinedOutput()
		if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 2 || !strings.Contains(string(out), "segment-size") {
			t.Fatalf("serve --segment-size %s: %v, exit %v: %s", v, err, cmd.ProcessState, out)
		}
	}
}

// TestRetention: serve --retention-bytes removes a stream's oldest
// segments in the background, keeping at least that many bytes, and
// counts the bytes removed in messagevault_removed_bytes_total. On the
// local backend and on Azurite.
func TestRetention(t *testing.T) {
	args := []string{"--segment-size", "1MiB", "--retention-bytes", "2MiB", "--retention-interval", "100ms"}
	t.Run("local", func(t *testing.T) {
		dir := t.TempDir()
		retentionSuite(t, mvtest.Start(t, dir, nil, args...), func() int {
			segs, _ := filepath.Glob(filepath.Join(dir, "kept", "*.b7"))
			return len(segs)
		})
	})
	t.Run("azure", func(t *testing.T) {
		az := azurite.Start(t)
		st, err := azure.Open(az.ConnectionString(), azure.Config{})
		if err != nil {
			t.Fatal(err)
		}
		retentionSuite(t, startAzure(t, az, args...), func() int {
			// The blobs themselves, not the chain: removed means gone.
			n := 0
			pager := st.Service().NewContainerClient(azure.ContainerPrefix + "kept").NewListBlobsFlatPager(nil)
			for pager.More() {
				page, err := pager.NextPage(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				for _, b := range page.Segment.BlobItems {
					if _, ok := segment.Parse(*b.Name); ok {
						n++
					}
				}
			}
			return n
		})
	})
}

func retentionSuite(t *testing.T, s *mvtest.Server, stored func() int) {
	for i := 0; i < 500; i += 20 {
		publish(t, s, "kept", segMsgs(i, 20))
	}
	// Retention ran while the stream grew; once it stops growing, the
	// next pass brings it within the limit, and no pass goes below it.
	deadline := time.Now().Add(30 * time.Second)
	for {
		pos, start := streamStart(t, s, "kept")
		if pos-start < 2<<20 {
			t.Fatalf("retention kept %d bytes (position %d, start %d); want at least 2 MiB", pos-start, pos, start)
		}
		if start > 0 && pos-start < 3<<20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("retention did not bring the stream under 3 MiB in 30 s (position %d, start %d)", pos, start)
		}
		time.Sleep(100 * time.Millisecond)
	}
	status, body, _ := do(t, s.Request("GET", "/metrics", admin, adminPass, nil, ""))
	if status != http.StatusOK || !strings.Contains(string(body), "messagevault_removed_bytes_total") || strings.Contains(string(body), "messagevault_removed_bytes_total 0\n") {
		t.Fatalf("metrics: %d, removed bytes not counted", status)
	}
	if n := stored(); n > 3 {
		t.Fatalf("%d segments left after retention", n)
	}
}
