package stream_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/mem"
	"github.com/messagevault/messagevault/stream"
)

func seqOpts(producer string, seq uint64) stream.AppendOptions {
	return stream.AppendOptions{Producer: producer, Sequence: seq}
}

// appendSeq appends batch(from, n) as producer's sequence seq.
func appendSeq(t *testing.T, w *stream.Writer, producer string, seq uint64, from, n int) stream.AppendResult {
	t.Helper()
	res, err := w.AppendWith(context.Background(), batch(from, n), seqOpts(producer, seq))
	if err != nil {
		t.Fatalf("append %s/%d: %v", producer, seq, err)
	}
	return res
}

func TestDuplicateIsAnsweredNotAppended(t *testing.T) {
	s := mem.New()
	w := openMem(t, s, stream.WriterConfig{})
	first := appendSeq(t, w, "p1", 7, 0, 3)
	if first.Duplicate {
		t.Fatal("first append reported as a duplicate")
	}
	other := appendSeq(t, w, "p2", 7, 3, 2) // same sequence, other producer: new
	if other.Duplicate {
		t.Fatal("another producer's sequence taken for a duplicate")
	}
	// A retry of the first batch, even with other bytes, is not appended.
	again := appendSeq(t, w, "p1", 7, 100, 5)
	if !again.Duplicate || !slices.Equal(again.Offsets, first.Offsets) || again.Position < first.Position {
		t.Fatalf("retry answered %+v; want a duplicate with offsets %v", again, first.Offsets)
	}
	if w.Position() != other.Position {
		t.Fatalf("a duplicate moved the position to %d from %d", w.Position(), other.Position)
	}
	next := appendSeq(t, w, "p1", 9, 5, 1) // gaps are allowed
	if next.Duplicate {
		t.Fatal("a higher sequence taken for a duplicate")
	}
	if n, _ := readSeqs(t, memReader(t, s)); n != 6 {
		t.Fatalf("stream holds %d messages, want 6", n)
	}
	seq, known, err := w.LastSequence(context.Background(), "p1")
	if err != nil || !known || seq != 9 {
		t.Fatalf("LastSequence(p1) = %d, %v, %v; want 9", seq, known, err)
	}
	if _, known, _ := w.LastSequence(context.Background(), "nobody"); known {
		t.Fatal("LastSequence knows a producer that never published")
	}
}

func TestSequenceTooOld(t *testing.T) {
	s := mem.New()
	w := openMem(t, s, stream.WriterConfig{})
	for seq := uint64(1); seq <= 40; seq++ {
		appendSeq(t, w, "p", seq*2, int(seq-1), 1)
	}
	// Remembered: the last 32 sequences, 18..80 step 2.
	if res := appendSeq(t, w, "p", 18, 999, 1); !res.Duplicate {
		t.Fatal("sequence 18 should still be remembered")
	}
	for _, seq := range []uint64{16, 2, 19} {
		_, err := w.AppendWith(context.Background(), batch(999, 1), seqOpts("p", seq))
		if !errors.Is(err, messagevault.ErrSequenceTooOld) {
			t.Fatalf("sequence %d: %v; want ErrSequenceTooOld", seq, err)
		}
	}
	if n, _ := readSeqs(t, memReader(t, s)); n != 40 {
		t.Fatalf("stream holds %d messages, want 40", n)
	}
}

// TestDuplicatesInOneGroup: a batch and its retry queued into one group are
// stored once, and both answers carry the same offsets.
func TestDuplicatesInOneGroup(t *testing.T) {
	ctx := context.Background()
	s := mem.New()
	pw, err := s.OpenWriter(ctx, "test")
	if err != nil {
		t.Fatal(err)
	}
	gate := &slowFlush{PageWriter: pw, delay: make(chan struct{})}
	w, err := stream.OpenWriter(ctx, "test", gate, stream.WriterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	// The first group holds the writer at its flush; the next three queue.
	go w.Append(ctx, batch(0, 1))
	waitFor(t, gate.entered.Load)
	results := make([]stream.AppendResult, 3)
	var wg sync.WaitGroup
	for i, o := range []stream.AppendOptions{seqOpts("p", 1), seqOpts("p", 1), seqOpts("p", 2)} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			from := 1
			if o.Sequence == 2 {
				from = 2
			}
			res, err := w.AppendWith(ctx, batch(from, 1), o)
			if err != nil {
				t.Error(err)
			}
			results[i] = res
		}()
		waitFor(t, func() bool { return w.Queued() == i+1 })
	}
	close(gate.delay)
	wg.Wait()
	if results[0].Duplicate || !results[1].Duplicate || results[2].Duplicate {
		t.Fatalf("duplicate flags %v %v %v; want false true false", results[0].Duplicate, results[1].Duplicate, results[2].Duplicate)
	}
	if !slices.Equal(results[0].Offsets, results[1].Offsets) || results[1].Position != results[0].Position {
		t.Fatalf("the duplicate answered %+v, the first %+v", results[1], results[0])
	}
	if n, _ := readSeqs(t, memReader(t, s)); n != 3 {
		t.Fatalf("stream holds %d messages, want 3", n)
	}
}

// TestProducerTableSurvives: restart, crash, a commit whose answer was lost,
// and a commit that failed: each retry of a batch is stored exactly once.
func TestProducerTableSurvives(t *testing.T) {
	ctx := context.Background()
	s := mem.New()
	w := openMem(t, s, stream.WriterConfig{})
	first := appendSeq(t, w, "p", 1, 0, 2)
	w.Close()

	// Restart: the table is read back.
	w = openMem(t, s, stream.WriterConfig{})
	if res := appendSeq(t, w, "p", 1, 0, 2); !res.Duplicate || !slices.Equal(res.Offsets, first.Offsets) {
		t.Fatalf("after a restart the retry answered %+v", res)
	}
	appendSeq(t, w, "p", 2, 2, 1)

	// Crash after an acknowledged append.
	s.Crash()
	w = openMem(t, s, stream.WriterConfig{})
	if res := appendSeq(t, w, "p", 2, 2, 1); !res.Duplicate {
		t.Fatal("after a crash the retry was appended again")
	}

	// A commit that lands but whose answer is lost: the retry is a
	// duplicate.
	s.LandNextCommitFailing(nil)
	if _, err := w.AppendWith(ctx, batch(3, 2), seqOpts("p", 3)); err == nil {
		t.Fatal("lost commit answer not reported")
	}
	if res := appendSeq(t, w, "p", 3, 3, 2); !res.Duplicate {
		t.Fatal("the retry of a batch whose commit landed was appended again")
	}

	// A commit that fails: the retry is appended, once.
	s.FailNextCommit(nil)
	if _, err := w.AppendWith(ctx, batch(5, 1), seqOpts("p", 4)); err == nil {
		t.Fatal("failed commit not reported")
	}
	if res := appendSeq(t, w, "p", 4, 5, 1); res.Duplicate {
		t.Fatal("the retry of a batch that was never committed was answered as a duplicate")
	}
	s.Crash()
	w = openMem(t, s, stream.WriterConfig{})
	if res := appendSeq(t, w, "p", 4, 5, 1); !res.Duplicate {
		t.Fatal("after a crash the retry was appended again")
	}
	if n, _ := readSeqs(t, memReader(t, s)); n != 6 {
		t.Fatalf("stream holds %d messages, want 6", n)
	}
}

// TestUncommittedSnapshotIsIgnored: the table written for a group whose
// commit failed must not be believed after another group commits to the
// very same position.
func TestUncommittedSnapshotIsIgnored(t *testing.T) {
	ctx := context.Background()
	s := mem.New()
	w := openMem(t, s, stream.WriterConfig{})
	appendSeq(t, w, "p", 1, 0, 1)
	s.FailNextCommit(nil)
	if _, err := w.AppendWith(ctx, batch(1, 1), seqOpts("p", 2)); err == nil {
		t.Fatal("failed commit not reported")
	}
	// The same bytes, without a sequence: the position ends where the
	// failed group's would have.
	if _, err := w.Append(ctx, batch(1, 1)); err != nil {
		t.Fatal(err)
	}
	w.Close()
	w = openMem(t, s, stream.WriterConfig{})
	if seq, _, _ := w.LastSequence(ctx, "p"); seq != 1 {
		t.Fatalf("after a reopen the last sequence of p is %d, want 1", seq)
	}
	if res := appendSeq(t, w, "p", 2, 2, 1); res.Duplicate {
		t.Fatal("sequence 2 was never committed, yet answered as a duplicate")
	}
	if n, _ := readSeqs(t, memReader(t, s)); n != 3 {
		t.Fatalf("stream holds %d messages, want 3", n)
	}
}

type countingObserver struct {
	mu                sync.Mutex
	duplicates, evict int
}

func (o *countingObserver) Committed(string, int, int, int, time.Duration) {}
func (o *countingObserver) Failed(string, error)                           {}
func (o *countingObserver) Duplicate(string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.duplicates++
}
func (o *countingObserver) Trimmed(string, int64) {}

func (o *countingObserver) Evicted(_ string, n int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.evict += n
}

func TestLeastRecentProducerIsEvicted(t *testing.T) {
	ctx := context.Background()
	s := mem.New()
	obs := &countingObserver{}
	w := openMem(t, s, stream.WriterConfig{MaxProducers: 3, Observer: obs})
	for i, p := range []string{"a", "b", "c"} {
		appendSeq(t, w, p, 5, i, 1)
	}
	appendSeq(t, w, "a", 6, 3, 1) // a is now the most recent: b goes first
	appendSeq(t, w, "d", 1, 4, 1)
	if _, known, _ := w.LastSequence(ctx, "b"); known {
		t.Fatal("b should have been evicted")
	}
	for _, p := range []string{"a", "c", "d"} {
		if _, known, _ := w.LastSequence(ctx, p); !known {
			t.Fatalf("%s was evicted", p)
		}
	}
	if res := appendSeq(t, w, "a", 6, 0, 1); !res.Duplicate {
		t.Fatal("a's retry was appended")
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if obs.evict != 1 || obs.duplicates != 1 {
		t.Fatalf("observer heard %d evictions and %d duplicates; want 1 and 1", obs.evict, obs.duplicates)
	}
}

func TestExpectPosition(t *testing.T) {
	ctx := context.Background()
	s := mem.New()
	w := openMem(t, s, stream.WriterConfig{})
	res, err := w.AppendWith(ctx, batch(0, 1), stream.AppendOptions{Expect: true, ExpectPosition: 0})
	if err != nil {
		t.Fatal(err)
	}
	_, err = w.AppendWith(ctx, batch(1, 1), stream.AppendOptions{Expect: true, ExpectPosition: 0})
	var mismatch *stream.PositionMismatchError
	if !errors.As(err, &mismatch) || !errors.Is(err, messagevault.ErrPositionMismatch) || mismatch.Position != res.Position {
		t.Fatalf("append expecting 0 at %d: %v", res.Position, err)
	}
	if _, err := w.AppendWith(ctx, batch(1, 1), stream.AppendOptions{Expect: true, ExpectPosition: res.Position}); err != nil {
		t.Fatal(err)
	}
	if n, _ := readSeqs(t, memReader(t, s)); n != 2 {
		t.Fatalf("stream holds %d messages, want 2", n)
	}
}

// TestCloseSettlesALandedCommit: a writer closed right after a commit whose
// answer was lost confirms it before it lets go, so what readers saw
// survives a crash.
func TestCloseSettlesALandedCommit(t *testing.T) {
	ctx := context.Background()
	s := mem.New()
	w := openMem(t, s, stream.WriterConfig{})
	if _, err := w.Append(ctx, batch(0, 2)); err != nil {
		t.Fatal(err)
	}
	s.LandNextCommitFailing(nil)
	if _, err := w.Append(ctx, batch(2, 2)); err == nil {
		t.Fatal("lost commit answer not reported")
	}
	w.Close()
	seen, _ := readSeqs(t, memReader(t, s))
	s.Crash()
	if n, _ := readSeqs(t, memReader(t, s)); n != seen || n != 4 {
		t.Fatalf("readers saw %d messages before a crash and %d after; want 4 both times", seen, n)
	}
}

func TestInvalidProducer(t *testing.T) {
	w := openMem(t, mem.New(), stream.WriterConfig{})
	for _, p := range []string{"has space", "ünïcode", string(make([]byte, 65))} {
		if _, err := w.AppendWith(context.Background(), batch(0, 1), seqOpts(p, 1)); !errors.Is(err, messagevault.ErrInvalidMessage) {
			t.Fatalf("producer %q: %v; want ErrInvalidMessage", p, err)
		}
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 10s")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestLostStateSlotIsRecovered: a crash that keeps a group's position but
// loses its state slot write (possible on the file backend, where both
// share one fdatasync) finds the table in the copy written past the
// group's records, and saves it before the next group overwrites that.
func TestLostStateSlotIsRecovered(t *testing.T) {
	ctx := context.Background()
	s := mem.New()
	w := openMem(t, s, stream.WriterConfig{})
	appendSeq(t, w, "p", 1, 0, 1)
	s.LoseNextState()
	appendSeq(t, w, "p", 2, 1, 2)
	s.Crash()
	w = openMem(t, s, stream.WriterConfig{})
	if res := appendSeq(t, w, "p", 2, 1, 2); !res.Duplicate {
		t.Fatal("after the state slot was lost the retry was appended again")
	}
	if _, err := w.Append(ctx, batch(3, 1)); err != nil { // overwrites the copy past the records
		t.Fatal(err)
	}
	w.Close()
	w = openMem(t, s, stream.WriterConfig{})
	if seq, _, _ := w.LastSequence(ctx, "p"); seq != 2 {
		t.Fatalf("last sequence of p is %d, want 2", seq)
	}
	if n, _ := readSeqs(t, memReader(t, s)); n != 4 {
		t.Fatalf("stream holds %d messages, want 4", n)
	}
}

// Queued is called before an append returns, once it holds its place:
// appends each started after the one before it was queued land in that
// order, though none waits for the one before it to be durable.
func TestQueuedKeepsTheOrder(t *testing.T) {
	w := openMem(t, mem.New(), stream.WriterConfig{})
	const n = 40
	offsets := make([]int64, n)
	var wg sync.WaitGroup
	for i := range n {
		queued := make(chan struct{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := w.AppendWith(context.Background(), batch(i, 1), stream.AppendOptions{Queued: func() { close(queued) }})
			if err != nil {
				t.Error(err)
				return
			}
			offsets[i] = res.Offsets[0]
		}()
		select {
		case <-queued:
		case <-time.After(10 * time.Second):
			t.Fatalf("append %d: Queued was not called", i)
		}
	}
	wg.Wait()
	if !slices.IsSorted(offsets) {
		t.Fatalf("offsets %v: not in the order the appends were queued", offsets)
	}
}

// With Follows, a batch is appended only after the sequence it names:
// never after a gap, as when the batch before it failed.
func TestFollowsRefusesAGap(t *testing.T) {
	s := mem.New()
	w := openMem(t, s, stream.WriterConfig{})
	ctx := context.Background()
	appendSeq(t, w, "p", 4, 0, 2)
	follows := func(seq, prev uint64, from int) (stream.AppendResult, error) {
		return w.AppendWith(ctx, batch(from, 1), stream.AppendOptions{Producer: "p", Sequence: seq, Follows: true, Previous: prev})
	}
	if _, err := follows(9, 7, 2); !errors.Is(err, messagevault.ErrSequenceGap) {
		t.Fatalf("a batch after a gap: %v; want ErrSequenceGap", err)
	}
	if _, err := w.AppendWith(ctx, batch(2, 1), stream.AppendOptions{Producer: "new", Sequence: 1, Follows: true}); !errors.Is(err, messagevault.ErrSequenceGap) {
		t.Fatalf("a batch to follow a producer never seen: %v; want ErrSequenceGap", err)
	}
	res, err := follows(6, 4, 2)
	if err != nil || res.Duplicate {
		t.Fatalf("a batch that follows: %+v, %v", res, err)
	}
	if again, err := follows(6, 4, 2); err != nil || !again.Duplicate || again.Offsets[0] != res.Offsets[0] {
		t.Fatalf("the same batch again: %+v, %v; want a duplicate", again, err)
	}
	if n, _ := readSeqs(t, memReader(t, s)); n != 3 {
		t.Fatalf("stream holds %d messages, want 3", n)
	}
}
