package azure_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/azure"
	"github.com/messagevault/messagevault/internal/azurite"
	"github.com/messagevault/messagevault/internal/faultproxy"
	"github.com/messagevault/messagevault/stream"
)

// overlapping delays every Put Page of records and every position commit
// by delay, and records how many of each were in flight at once.
type overlapping struct {
	delay time.Duration

	mu                sync.Mutex
	pages, commits    int  // in flight now
	maxPages          int  // most Put Pages in flight at once
	maxCommits        int  // most commits in flight at once
	pagesDuringCommit bool // a Put Page was sent while a commit was in flight
}

func (o *overlapping) Do(req *http.Request) (*http.Response, error) {
	page, commit := isPageWrite(req), isPositionMetadata(req)
	if page || commit {
		o.mu.Lock()
		if page {
			o.pages++
			o.maxPages = max(o.maxPages, o.pages)
			if o.commits > 0 {
				o.pagesDuringCommit = true
			}
		} else {
			o.commits++
			o.maxCommits = max(o.maxCommits, o.commits)
		}
		o.mu.Unlock()
		defer func() {
			o.mu.Lock()
			if page {
				o.pages--
			} else {
				o.commits--
			}
			o.mu.Unlock()
		}()
		time.Sleep(o.delay)
	}
	return http.DefaultClient.Do(req)
}

// TestPipelinedWrites: with requests that take a while, the writer sends
// the next group's pages while the previous group's commit is in flight,
// and a page write larger than one Put Page sends its Put Pages at once;
// commits go one at a time. Every batch is stored once, and each
// producer's answers come at growing positions.
func TestPipelinedWrites(t *testing.T) {
	az := azurite.Start(t)
	ctx := context.Background()
	o := &overlapping{delay: 20 * time.Millisecond}
	s := open(t, az, azure.Config{Transport: o})
	w := writer(t, s, "pipelined")

	// One batch of 10 MiB: three Put Pages of at most 4 MiB.
	big := make([]messagevault.Message, 160)
	for i := range big {
		big[i] = messagevault.NewMessage([]byte("big"), bytes.Repeat([]byte{byte('0' + i%10)}, 64<<10-1), 0)
	}
	if _, err := w.Append(ctx, big); err != nil {
		t.Fatal(err)
	}
	if o.maxPages < 3 {
		t.Fatalf("a write of 10 MiB had at most %d Put Pages in flight; want its 3 at once", o.maxPages)
	}

	// Producers that keep appending, each pausing a different while
	// between its appends so that they do not all land in one group:
	// groups follow each other.
	var wg sync.WaitGroup
	positions := make([][]int64, 8)
	for p := range positions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 10 {
				time.Sleep(time.Duration(p*3+i%4) * time.Millisecond)
				res, err := w.Append(ctx, batch(fmt.Sprintf("p%d.%d", p, i), 3))
				if err != nil {
					t.Error(err)
					return
				}
				positions[p] = append(positions[p], res.Position)
			}
		}()
	}
	wg.Wait()
	if !o.pagesDuringCommit {
		t.Fatal("no Put Page was sent while a position commit was in flight")
	}
	if o.maxCommits != 1 {
		t.Fatalf("%d position commits were in flight at once; commits go one after another", o.maxCommits)
	}
	for p, ps := range positions {
		for i := 1; i < len(ps); i++ {
			if ps[i] <= ps[i-1] {
				t.Fatalf("producer %d: answers at positions %v do not grow", p, ps)
			}
		}
	}
	pr, err := s.OpenReader(ctx, "pipelined")
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	seen := map[string]int{}
	for _, v := range readAll(t, pr) {
		seen[v]++
	}
	for p := range positions {
		for i := range 10 {
			if tag := fmt.Sprintf("p%d.%d-0", p, i); seen[tag] != 1 {
				t.Fatalf("batch %s stored %d times", tag, seen[tag])
			}
		}
	}
}

// TestZombiePageWriteFails: a stale writer's Put Page, held in the
// network until another writer has taken the stream over and appended,
// then lands: it fails its sequence number condition, and the new
// writer's records stay as they were.
func TestZombiePageWriteFails(t *testing.T) {
	az := azurite.Start(t)
	ctx := context.Background()
	p, cs := proxied(t, az)
	viaProxy := func() *azure.Storage {
		s, err := azure.Open(cs, azure.Config{MaxRetries: 1})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s1, s2 := viaProxy(), viaProxy()
	pw, err := s1.OpenWriter(ctx, "zombie")
	if err != nil {
		t.Fatal(err)
	}
	stale, err := stream.OpenWriter(ctx, "zombie", pw, stream.WriterConfig{GrowStep: 1 << 20, OpTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer stale.Close()
	if _, err := stale.Append(ctx, batch("a", 2)); err != nil {
		t.Fatal(err)
	}
	// The stale writer's next Put Page is held, and lands just before
	// the new writer's second Put Page.
	p.Late(isPageWrite, isPageWrite, 2)
	if _, err := stale.Append(ctx, batch("b", 2)); err == nil {
		t.Fatal("the held page write was reported durable")
	}
	w := writer(t, s2, "zombie") // takes over
	for _, tag := range []string{"c", "d"} {
		if _, err := w.Append(ctx, batch(tag, 2)); err != nil {
			t.Fatalf("new writer, append %s: %v", tag, err)
		}
	}
	delivered, status := p.LateStatus()
	if !delivered || status != http.StatusPreconditionFailed {
		t.Fatalf("the stale Put Page: delivered %v with status %d; want 412", delivered, status)
	}
	pr, err := s2.OpenReader(ctx, "zombie")
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	if got := strings.Join(readAll(t, pr), " "); got != "a-0 a-1 c-0 c-1 d-0 d-1" {
		t.Fatalf("stream holds %s", got)
	}
}

// TestAbandonedPutPageAttemptCannotLand: the SDK gives up on a Put Page
// attempt after its try timeout and sends it again, which succeeds; the
// first attempt, still travelling, lands after the next group has
// rewritten the same partial page and been answered. It must fail its
// condition: the page write that needed a retry sets a new sequence
// number before it returns.
func TestAbandonedPutPageAttemptCannotLand(t *testing.T) {
	az := azurite.Start(t)
	ctx := context.Background()
	p, cs := proxied(t, az)
	s, err := azure.Open(cs, azure.Config{TryTimeout: 500 * time.Millisecond, MaxRetries: 2})
	if err != nil {
		t.Fatal(err)
	}
	w := writer(t, s, "abandoned")
	if _, err := w.Append(ctx, batch("a", 1)); err != nil {
		t.Fatal(err)
	}
	// The next Put Page's first attempt is held until the SDK gives up
	// on it, and delivered just before the second commit after it: the
	// commit of the group after the one it belongs to.
	p.Late(isPageWrite, isPositionMetadata, 2)
	if _, err := w.Append(ctx, batch("b", 1)); err != nil {
		t.Fatalf("append b, whose Put Page was retried: %v", err)
	}
	if _, err := w.Append(ctx, batch("c", 1)); err != nil {
		t.Fatalf("append c: %v", err)
	}
	delivered, status := p.LateStatus()
	if !delivered {
		t.Fatal("the abandoned attempt was never delivered")
	}
	if status != http.StatusPreconditionFailed {
		t.Errorf("the abandoned Put Page attempt landed late with status %d; want 412", status)
	}
	pr, err := s.OpenReader(ctx, "abandoned")
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	if got := strings.Join(readAll(t, pr), " "); got != "a-0 b-0 c-0" {
		t.Fatalf("stream holds %s", got)
	}
}

// holding holds position commits while armed, until released.
type holding struct {
	mu      sync.Mutex
	armed   bool
	held    chan struct{} // closed when a commit is being held
	release chan struct{}
}

func (h *holding) arm() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.armed, h.held, h.release = true, make(chan struct{}), make(chan struct{})
}

func (h *holding) Do(req *http.Request) (*http.Response, error) {
	if isPositionMetadata(req) {
		h.mu.Lock()
		armed, held, release := h.armed, h.held, h.release
		h.armed = false
		h.mu.Unlock()
		if armed {
			close(held)
			<-release
		}
	}
	return http.DefaultClient.Do(req)
}

// TestDuplicateOfAGroupInFlight: a batch sent again while the group of
// its first sending, which rolled to a new segment, is still being
// committed, is answered as a duplicate with the first sending's offsets
// once that commit lands. (Read back from storage, its records would lie
// in a segment that is not part of the stream yet.)
func TestDuplicateOfAGroupInFlight(t *testing.T) {
	az := azurite.Start(t)
	ctx := context.Background()
	h := &holding{}
	s := open(t, az, azure.Config{Transport: h})
	pw, err := s.OpenWriter(ctx, "dupinflight")
	if err != nil {
		t.Fatal(err)
	}
	w, err := stream.OpenWriter(ctx, "dupinflight", pw, stream.WriterConfig{SegmentSize: stream.MinSegmentSize})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	fill := make([]messagevault.Message, 15) // 15 × 64 KiB: most of the first segment
	for i := range fill {
		fill[i] = messagevault.NewMessage(nil, bytes.Repeat([]byte{'f'}, 64<<10-1), 0)
	}
	if _, err := w.Append(ctx, fill); err != nil {
		t.Fatal(err)
	}
	type answer struct {
		res stream.AppendResult
		err error
	}
	send := func() <-chan answer {
		ch := make(chan answer, 1)
		go func() {
			res, err := w.AppendWith(ctx, batch("d", 300), stream.AppendOptions{Producer: "p", Sequence: 1})
			ch <- answer{res, err}
		}()
		return ch
	}
	h.arm()
	first := send() // rolls to a second segment; its commit is held
	<-h.held
	again := send()
	time.Sleep(200 * time.Millisecond) // let the writer stage it while the commit is held
	close(h.release)
	a, b := <-first, <-again
	if a.err != nil || b.err != nil {
		t.Fatalf("first sending: %v; sent again: %v", a.err, b.err)
	}
	if !b.res.Duplicate || !slices.Equal(a.res.Offsets, b.res.Offsets) {
		t.Fatalf("sent again: duplicate %v; want a duplicate with the first sending's %d offsets", b.res.Duplicate, len(a.res.Offsets))
	}
	pr, err := s.OpenReader(ctx, "dupinflight")
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	if segs, err := pr.Segments(ctx); err != nil || len(segs) != 2 {
		t.Fatalf("segments %v, %v: want the fill's and the batch's", segs, err)
	}
}

// isSequenceUpdate matches the requests that set a page blob's sequence
// number.
func isSequenceUpdate(req *http.Request) bool {
	return req.Method == http.MethodPut && req.Header.Get("x-ms-sequence-number-action") != ""
}

// TestRetriedRefenceIsOwn: after a page write whose Put Page was
// retried, the writer sets a new sequence number; when that update's
// first try lands only after the SDK gave up on it, its retry fails its
// condition. The writer must recognise the number it set itself, and go
// on writing, rather than stop as if another writer had taken over.
func TestRetriedRefenceIsOwn(t *testing.T) {
	az := azurite.Start(t)
	ctx := context.Background()
	p, cs := proxied(t, az)
	s, err := azure.Open(cs, azure.Config{TryTimeout: 500 * time.Millisecond, MaxRetries: 2, RetryDelay: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	w := writer(t, s, "ownrefence")
	if _, err := w.Append(ctx, batch("a", 1)); err != nil {
		t.Fatal(err)
	}
	// The next Put Page gets a 503 once (the SDK sends it again), and
	// the sequence number update that follows is held past its try
	// timeout and delivered just before its retry.
	var once sync.Once
	p.Answer(func(req *http.Request) bool {
		hit := false
		if isPageWrite(req) {
			once.Do(func() { hit = true })
		}
		return hit
	}, http.StatusServiceUnavailable, "ServerBusy")
	p.Late(isSequenceUpdate, isSequenceUpdate, 1)
	if _, err := w.Append(ctx, batch("b", 1)); err != nil {
		t.Fatalf("append b, whose Put Page and refence were retried: %v", err)
	}
	if delivered, status := p.LateStatus(); !delivered || status != http.StatusOK {
		t.Fatalf("the held sequence number update: delivered %v, status %d; want it landed (200)", delivered, status)
	}
	if _, err := w.Append(ctx, batch("c", 1)); err != nil {
		t.Fatalf("append c: %v", err)
	}
	pr, err := s.OpenReader(ctx, "ownrefence")
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	if got := strings.Join(readAll(t, pr), " "); got != "a-0 b-0 c-0" {
		t.Fatalf("stream holds %s", got)
	}
}

// proxied starts the fault proxy in front of az for the test, and
// returns it and the connection string that goes through it.
func proxied(t testing.TB, az *azurite.Azurite) (*faultproxy.Proxy, string) {
	t.Helper()
	p, err := faultproxy.Start("http://127.0.0.1:" + az.Port)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p, strings.Replace(az.ConnectionString(), "http://127.0.0.1:"+az.Port, p.URL, 1)
}
