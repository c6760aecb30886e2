package stream_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/file"
	"github.com/messagevault/messagevault/mem"
	"github.com/messagevault/messagevault/stream"
)

func openMem(t *testing.T, s *mem.Storage, cfg stream.WriterConfig) *stream.Writer {
	t.Helper()
	pw, err := s.OpenWriter(context.Background(), "test")
	if err != nil {
		t.Fatal(err)
	}
	w, err := stream.OpenWriter(context.Background(), "test", pw, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

func memReader(t *testing.T, s *mem.Storage) messagevault.PageReader {
	t.Helper()
	r, err := s.OpenReader(context.Background(), "test")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func TestAppendPositionsAndOffsets(t *testing.T) {
	ctx := context.Background()
	s := mem.New()
	w := openMem(t, s, stream.WriterConfig{})
	seq := 0
	var want int64
	for _, n := range []int{1, 3, 100, 1, 250} {
		msgs := batch(seq, n)
		res, err := w.Append(ctx, msgs)
		if err != nil {
			t.Fatal(err)
		}
		off := want
		for i, m := range msgs {
			if res.Offsets[i] != off {
				t.Fatalf("batch at %d: offset %d = %d, want %d", seq, i, res.Offsets[i], off)
			}
			off += recordsSize(msgs[i : i+1])
			_ = m
		}
		want += recordsSize(msgs)
		if res.Position != want || w.Position() != want {
			t.Fatalf("position = %d (writer says %d), want %d", res.Position, w.Position(), want)
		}
		seq += n
	}
	if n, pos := readSeqs(t, memReader(t, s)); n != seq || pos != want {
		t.Fatalf("read %d messages to %d, want %d to %d", n, pos, seq, want)
	}
}

func TestReopenContinuesAtTail(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	seq := 0
	for round := 0; round < 4; round++ {
		s, err := file.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		pw, err := s.OpenWriter(ctx, "tail")
		if err != nil {
			t.Fatal(err)
		}
		w, err := stream.OpenWriter(ctx, "tail", pw, stream.WriterConfig{GrowStep: 4096})
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 3; i++ { // positions rarely on a page boundary
			if _, err := w.Append(ctx, batch(seq, 5)); err != nil {
				t.Fatal(err)
			}
			seq += 5
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		r, err := s.OpenReader(ctx, "tail")
		if err != nil {
			t.Fatal(err)
		}
		if n, _ := readSeqs(t, r); n != seq {
			t.Fatalf("round %d: read %d messages, want %d", round, n, seq)
		}
		r.Close()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestGarbagePastPositionIsOverwritten(t *testing.T) {
	ctx := context.Background()
	s := mem.New()
	w := openMem(t, s, stream.WriterConfig{GrowStep: 8192})
	if _, err := w.Append(ctx, batch(0, 3)); err != nil {
		t.Fatal(err)
	}
	w.Close()
	// Garbage past the position, as a torn write would leave it.
	pw, _ := s.OpenWriter(ctx, "test")
	junk := make([]byte, 4096)
	for i := range junk {
		junk[i] = 0x01 // looks like a version byte
	}
	pos, _ := pw.Position(ctx)
	base := pos - pos%messagevault.PageSize
	tail := make([]byte, pos-base)
	pw.ReadAt(ctx, tail, base)
	copy(junk, tail) // keep the committed bytes of the tail page
	if err := pw.WritePages(ctx, base, junk); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if n, _ := readSeqs(t, memReader(t, s)); n != 3 {
		t.Fatalf("reader returned %d messages with garbage past the position, want 3", n)
	}
	w = openMem(t, s, stream.WriterConfig{})
	if _, err := w.Append(ctx, batch(3, 4)); err != nil {
		t.Fatal(err)
	}
	if n, _ := readSeqs(t, memReader(t, s)); n != 7 {
		t.Fatalf("read %d messages, want 7", n)
	}
}

func TestBadInputAppendsNothing(t *testing.T) {
	ctx := context.Background()
	s := mem.New()
	w := openMem(t, s, stream.WriterConfig{})
	if _, err := w.Append(ctx, batch(0, 2)); err != nil {
		t.Fatal(err)
	}
	before := w.Position()
	badCRC := batch(2, 3)
	badCRC[2].CRC ^= 1
	longKey := batch(2, 2)
	longKey[1] = messagevault.NewMessage(make([]byte, 256), nil, 0)
	longValue := batch(2, 1)
	longValue[0] = messagevault.Message{Value: make([]byte, messagevault.MaxValueSize+1)}
	for _, tt := range []struct {
		name string
		msgs []messagevault.Message
		want error
	}{
		{"empty batch", nil, messagevault.ErrEmptyBatch},
		{"wrong crc", badCRC, messagevault.ErrInvalidMessage},
		{"key over 255 bytes", longKey, messagevault.ErrInvalidMessage},
		{"value over 65535 bytes", longValue, messagevault.ErrInvalidMessage},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := w.Append(ctx, tt.msgs)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Append: %v; want %v", err, tt.want)
			}
			if w.Position() != before {
				t.Fatalf("position moved from %d to %d", before, w.Position())
			}
		})
	}
	if n, pos := readSeqs(t, memReader(t, s)); n != 2 || pos != before {
		t.Fatalf("stream holds %d messages to %d after bad input, want 2 to %d", n, pos, before)
	}
}

// slowFlush delays the first Flush so that concurrent appends queue up.
type slowFlush struct {
	messagevault.PageWriter
	once    sync.Once
	delay   chan struct{}
	entered atomic.Bool // the first Flush has started
}

func (p *slowFlush) Flush(ctx context.Context) error {
	p.once.Do(func() {
		p.entered.Store(true)
		<-p.delay
	})
	return p.PageWriter.Flush(ctx)
}

func TestGroupCommit(t *testing.T) {
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
	const producers = 50
	var wg sync.WaitGroup
	results := make([]stream.AppendResult, producers)
	produce := func(i int) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := w.Append(ctx, batch(1000*i, 3)) // seq numbers are checked per batch below
			if err != nil {
				t.Error(err)
			}
			results[i] = res
		}()
	}
	// The first append's group is held at its flush; every other
	// producer then queues behind it.
	produce(0)
	waitFor(t, gate.entered.Load)
	for i := 1; i < producers; i++ {
		produce(i)
	}
	waitFor(t, func() bool { return w.Queued() == producers-1 })
	close(gate.delay)
	wg.Wait()
	_, flushes, commits := s.Counts()
	if commits >= producers/2 || flushes != commits {
		t.Fatalf("%d appends took %d commits and %d flushes; group commit should share them", producers, commits, flushes)
	}
	// Every batch is contiguous and every offset is distinct.
	seen := map[int64]bool{}
	for i, res := range results {
		for j, off := range res.Offsets {
			if seen[off] {
				t.Fatalf("offset %d given twice", off)
			}
			seen[off] = true
			if j > 0 && off != res.Offsets[j-1]+recordsSize(batch(1000*i+j-1, 1)) {
				t.Fatalf("batch %d is not contiguous", i)
			}
		}
	}
	t.Logf("%d appends, %d commits", producers, commits)
}

func TestCancelledAppendIsNeverWritten(t *testing.T) {
	ctx := context.Background()
	s := mem.New()
	pw, _ := s.OpenWriter(ctx, "test")
	gate := &slowFlush{PageWriter: pw, delay: make(chan struct{})}
	w, err := stream.OpenWriter(ctx, "test", gate, stream.WriterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	first := make(chan error)
	go func() {
		_, err := w.Append(ctx, batch(0, 2))
		first <- err
	}()
	for !gate.entered.Load() { // the first group is blocked in Flush
		time.Sleep(time.Millisecond)
	}
	cctx, cancel := context.WithCancel(ctx)
	second := make(chan error)
	go func() {
		_, err := w.Append(cctx, batch(2, 2))
		second <- err
	}()
	for w.Queued() < 1 { // queued behind the blocked group
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-second; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Append: %v", err)
	}
	close(gate.delay)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	if _, err := w.Append(ctx, batch(2, 1)); err != nil {
		t.Fatal(err)
	}
	if n, _ := readSeqs(t, memReader(t, s)); n != 3 {
		t.Fatalf("stream holds %d messages; the cancelled batch must not be written", n)
	}
}

func TestStorageFaults(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name   string
		inject func(*mem.Storage)
	}{
		{"write fails", func(s *mem.Storage) { s.FailNextWrite(nil) }},
		{"write torn", func(s *mem.Storage) { s.TearNextWrite() }},
		{"flush fails", func(s *mem.Storage) { s.FailNextFlush(nil) }},
		{"commit fails", func(s *mem.Storage) { s.FailNextCommit(nil) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := mem.New()
			w := openMem(t, s, stream.WriterConfig{GrowStep: 4096})
			if _, err := w.Append(ctx, batch(0, 3)); err != nil {
				t.Fatal(err)
			}
			before := w.Position()
			tt.inject(s)
			if _, err := w.Append(ctx, batch(3, 5)); !errors.Is(err, mem.ErrInjected) {
				t.Fatalf("Append under a fault: %v; want the injected error", err)
			}
			if w.Position() != before {
				t.Fatalf("a failed append moved the position from %d to %d", before, w.Position())
			}
			if n, _ := readSeqs(t, memReader(t, s)); n != 3 {
				t.Fatalf("a failed append left %d messages visible, want 3", n)
			}
			// The writer recovers by itself and continues at the same place.
			if _, err := w.Append(ctx, batch(3, 5)); err != nil {
				t.Fatalf("Append after the fault: %v", err)
			}
			if n, _ := readSeqs(t, memReader(t, s)); n != 8 {
				t.Fatalf("read %d messages, want 8", n)
			}
		})
	}
}

func TestCloseDrainsQueue(t *testing.T) {
	ctx := context.Background()
	s := mem.New()
	pw, _ := s.OpenWriter(ctx, "test")
	gate := &slowFlush{PageWriter: pw, delay: make(chan struct{})}
	w, err := stream.OpenWriter(ctx, "test", gate, stream.WriterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 10)
	appendOne := func() {
		_, err := w.Append(ctx, batch(1, 1))
		errs <- err
	}
	go appendOne()
	for !gate.entered.Load() { // the first group is blocked in Flush
		time.Sleep(time.Millisecond)
	}
	for i := 0; i < 9; i++ {
		go appendOne()
	}
	for w.Queued() < 9 {
		time.Sleep(time.Millisecond)
	}
	closed := make(chan error)
	go func() { closed <- w.Close() }()
	time.Sleep(20 * time.Millisecond)
	close(gate.delay)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		if err := <-errs; err != nil {
			t.Fatalf("append queued before Close: %v", err)
		}
	}
	if _, err := w.Append(ctx, batch(0, 1)); !errors.Is(err, messagevault.ErrClosed) {
		t.Fatalf("Append after Close: %v; want ErrClosed", err)
	}
}

// fenced is a storage writer whose commits fail as a fenced writer's
// would; it counts the page writes it is asked for.
type fenced struct {
	messagevault.PageWriter
	writes int
}

func (f *fenced) WritePages(ctx context.Context, off int64, p []byte) error {
	f.writes++
	return f.PageWriter.WritePages(ctx, off, p)
}

func (*fenced) CommitPosition(context.Context, int64) error { return messagevault.ErrFenced }

func TestFencedWriterStops(t *testing.T) {
	ctx := context.Background()
	s := mem.New()
	pw, err := s.OpenWriter(ctx, "test")
	if err != nil {
		t.Fatal(err)
	}
	f := &fenced{PageWriter: pw}
	w, err := stream.OpenWriter(ctx, "test", f, stream.WriterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.Append(ctx, batch(0, 1)); !errors.Is(err, messagevault.ErrFenced) {
		t.Fatalf("Append on a fenced writer: %v; want ErrFenced", err)
	}
	if !errors.Is(w.Err(), messagevault.ErrFenced) {
		t.Fatalf("Err() = %v; want ErrFenced", w.Err())
	}
	writes := f.writes
	for i := 0; i < 3; i++ {
		if _, err := w.Append(ctx, batch(1, 1)); !errors.Is(err, messagevault.ErrFenced) {
			t.Fatalf("Append after fencing: %v; want ErrFenced", err)
		}
	}
	if f.writes != writes {
		t.Fatalf("a fenced writer wrote %d more times", f.writes-writes)
	}
	if _, changed := w.Committed(); changed == nil {
		t.Fatal("Committed gave no channel")
	}
}

func TestCommitThatLandsButFails(t *testing.T) {
	ctx := context.Background()
	s := mem.New()
	w := openMem(t, s, stream.WriterConfig{})
	if _, err := w.Append(ctx, batch(0, 2)); err != nil {
		t.Fatal(err)
	}
	s.LandNextCommitFailing(nil)
	if _, err := w.Append(ctx, batch(2, 2)); !errors.Is(err, mem.ErrInjected) {
		t.Fatalf("Append with a lost commit answer: %v", err)
	}
	// The next append finds the landed commit, makes it durable, and
	// continues after it: the unacknowledged batch is kept whole.
	res, err := w.Append(ctx, batch(4, 1))
	if err != nil {
		t.Fatal(err)
	}
	s.Crash()
	if n, pos := readSeqs(t, memReader(t, s)); n != 5 || pos != res.Position {
		t.Fatalf("after a crash: %d messages to %d, want 5 to %d", n, pos, res.Position)
	}
}

func TestCommittedClosesOnClose(t *testing.T) {
	s := mem.New()
	w := openMem(t, s, stream.WriterConfig{})
	_, changed := w.Committed()
	w.Close()
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("Committed channel still open after Close")
	}
	if _, changed := w.Committed(); changed == nil {
		t.Fatal("no channel after Close")
	} else {
		<-changed // closed for good
	}
}
