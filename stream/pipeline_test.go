package stream_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/mem"
	"github.com/messagevault/messagevault/stream"
)

// pipelined gives a storage writer a StartCommit whose commits wait for
// the test: each is handed to commits, and lands when the test releases
// it with nil, or fails with the error it is released with. It records
// as a violation any call that CommitStarter forbids while a commit is
// in flight (a second commit among them). gate, if set, holds each page
// write until it can receive from it.
type pipelined struct {
	messagevault.PageWriter
	commits    chan heldCommit
	writes     atomic.Int32
	inFlight   atomic.Int32
	violations atomic.Int32
	gate       chan struct{}
}

// check records a violation if a commit is in flight.
func (p *pipelined) check() {
	if p.inFlight.Load() > 0 {
		p.violations.Add(1)
	}
}

func (p *pipelined) CommitPosition(ctx context.Context, pos int64) error {
	p.check()
	return p.PageWriter.CommitPosition(ctx, pos)
}

func (p *pipelined) WriteState(ctx context.Context, slot int, b []byte) error {
	p.check()
	return p.PageWriter.WriteState(ctx, slot, b)
}

func (p *pipelined) Roll(ctx context.Context, start int64) error {
	p.check()
	return p.PageWriter.Roll(ctx, start)
}

func (p *pipelined) Trim(ctx context.Context, start int64) error {
	p.check()
	return p.PageWriter.Trim(ctx, start)
}

func (p *pipelined) Refence(ctx context.Context) error {
	p.check()
	return p.PageWriter.Refence(ctx)
}

func (p *pipelined) Close() error {
	p.check()
	return p.PageWriter.Close()
}

type heldCommit struct {
	pos     int64
	release chan error
}

func newPipelined(pw messagevault.PageWriter) *pipelined {
	return &pipelined{PageWriter: pw, commits: make(chan heldCommit, 16)}
}

func (p *pipelined) WritePages(ctx context.Context, off int64, b []byte) error {
	p.writes.Add(1)
	if p.gate != nil {
		<-p.gate
	}
	return p.PageWriter.WritePages(ctx, off, b)
}

func (p *pipelined) StartCommit(ctx context.Context, pos int64, done func(error)) {
	p.check()
	p.inFlight.Add(1)
	c := heldCommit{pos: pos, release: make(chan error, 1)}
	p.commits <- c
	go func() {
		err := <-c.release
		if err == nil {
			err = p.PageWriter.CommitPosition(ctx, pos)
		}
		p.inFlight.Add(-1)
		done(err)
	}()
}

type appended struct {
	res stream.AppendResult
	err error
}

// appendAsync appends in a goroutine; the answer arrives on the channel.
func appendAsync(w *stream.Writer, msgs []messagevault.Message, opts stream.AppendOptions) <-chan appended {
	ch := make(chan appended, 1)
	go func() {
		res, err := w.AppendWith(context.Background(), msgs, opts)
		ch <- appended{res, err}
	}()
	return ch
}

func answered[T any](ch <-chan T) bool {
	select {
	case v := <-ch:
		_ = v
		return true
	default:
		return false
	}
}

func openPipelined(t *testing.T, s *mem.Storage) (*stream.Writer, *pipelined) {
	t.Helper()
	pw, err := s.OpenWriter(context.Background(), "test")
	if err != nil {
		t.Fatal(err)
	}
	p := newPipelined(pw)
	w, err := stream.OpenWriter(context.Background(), "test", p, stream.WriterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		go func() { // release whatever Close still commits
			for c := range p.commits {
				c.release <- nil
			}
		}()
		w.Close()
		close(p.commits)
		if n := p.violations.Load(); n > 0 {
			t.Errorf("%d calls that CommitStarter forbids while a commit is in flight", n)
		}
	})
	return w, p
}

// On a storage that can commit while it writes pages, the next group's
// pages are written while the previous group's commit is in flight, and
// each group is answered only once its own commit has landed, in order.
func TestPipelinedGroupsOverlapAndAnswerInOrder(t *testing.T) {
	s := mem.New()
	w, p := openPipelined(t, s)
	a := appendAsync(w, batch(0, 3), stream.AppendOptions{})
	first := <-p.commits
	b := appendAsync(w, batch(3, 2), stream.AppendOptions{})
	waitFor(t, func() bool { return p.writes.Load() == 2 }) // b's pages, while a's commit is held
	if answered(a) || answered(b) {
		t.Fatal("a group was answered before its commit landed")
	}
	if len(p.commits) != 0 {
		t.Fatal("the second group's commit started before the first one's landed")
	}
	first.release <- nil
	ra := <-a
	if ra.err != nil || ra.res.Position != first.pos {
		t.Fatalf("first append: %+v; want position %d", ra, first.pos)
	}
	second := <-p.commits
	if answered(b) {
		t.Fatal("the second group was answered before its commit landed")
	}
	if w.Position() != first.pos {
		t.Fatalf("Position %d before the second commit landed; want %d", w.Position(), first.pos)
	}
	second.release <- nil
	if rb := <-b; rb.err != nil || rb.res.Position != second.pos || second.pos <= first.pos {
		t.Fatalf("second append: %+v; want position %d after %d", rb, second.pos, first.pos)
	}
	if n, pos := readSeqs(t, memReader(t, s)); n != 5 || pos != second.pos {
		t.Fatalf("stream holds %d messages to %d; want 5 to %d", n, pos, second.pos)
	}
}

// A commit that fails fails the group written after it too; both
// batches, sent again with their producer sequences, are stored once.
func TestFailedCommitFailsTheGroupAfterIt(t *testing.T) {
	s := mem.New()
	w, p := openPipelined(t, s)
	seq := func(n uint64) stream.AppendOptions { return stream.AppendOptions{Producer: "p", Sequence: n} }
	a := appendAsync(w, batch(0, 2), seq(1))
	first := <-p.commits
	b := appendAsync(w, batch(2, 2), seq(2))
	waitFor(t, func() bool { return p.writes.Load() == 2 })
	// A query waits for the commit in flight, and answers what is
	// durable.
	type last struct {
		seq   uint64
		known bool
		err   error
	}
	q := make(chan last, 1)
	go func() {
		s, k, err := w.LastSequence(context.Background(), "p")
		q <- last{s, k, err}
	}()
	injected := errors.New("injected commit failure")
	first.release <- injected
	if ra := <-a; !errors.Is(ra.err, injected) {
		t.Fatalf("first append: %v; want the injected failure", ra.err)
	}
	if rb := <-b; !errors.Is(rb.err, injected) {
		t.Fatalf("second append, written on the failed group: %v; want the injected failure", rb.err)
	}
	// The query came after b, which failed: it reports no sequence.
	if l := <-q; l.err != nil || l.known {
		t.Fatalf("LastSequence after the failed commit: %+v; want none known", l)
	}
	go func() {
		for c := range p.commits {
			c.release <- nil
		}
	}()
	for i, n := range []uint64{1, 2} {
		res, err := w.AppendWith(context.Background(), batch(2*i, 2), seq(n))
		if err != nil || res.Duplicate {
			t.Fatalf("sequence %d sent again: %+v, %v; want stored", n, res, err)
		}
	}
	if res, err := w.AppendWith(context.Background(), batch(2, 2), seq(2)); err != nil || !res.Duplicate {
		t.Fatalf("sequence 2 a third time: %+v, %v; want a duplicate", res, err)
	}
	if n, _ := readSeqs(t, memReader(t, s)); n != 4 {
		t.Fatalf("stream holds %d messages; want 4", n)
	}
}

// A group is answered the moment its commit lands, even while the writer
// is still writing the next group's pages.
func TestPipelinedGroupIsAnsweredWhenItsCommitLands(t *testing.T) {
	s := mem.New()
	w, p := openPipelined(t, s)
	p.gate = make(chan struct{}, 1)
	p.gate <- struct{}{} // a's page write
	a := appendAsync(w, batch(0, 3), stream.AppendOptions{})
	first := <-p.commits
	b := appendAsync(w, batch(3, 2), stream.AppendOptions{})
	waitFor(t, func() bool { return p.writes.Load() == 2 }) // b's page write waits at the gate
	first.release <- nil
	if ra := <-a; ra.err != nil || ra.res.Position != first.pos {
		t.Fatalf("first append, while the second's pages are held: %+v", ra)
	}
	p.gate <- struct{}{}
	(<-p.commits).release <- nil
	if rb := <-b; rb.err != nil {
		t.Fatal(rb.err)
	}
}
