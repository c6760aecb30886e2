package stream_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/file"
	"github.com/messagevault/messagevault/mem"
	"github.com/messagevault/messagevault/stream"
)

// The crash test re-runs this test binary as a child process that appends
// until it is killed; TestMain sends it to crashChild.
func TestMain(m *testing.M) {
	if dir := os.Getenv("MV_CRASH_CHILD_DIR"); dir != "" {
		crashChild(dir)
		return
	}
	os.Exit(m.Run())
}

// crashChild appends batches of seqMessages to stream "crash" in dir, going
// on from the last message stored, and prints "ack <next seq> <position>"
// after each acknowledged append. It runs until killed.
func crashChild(dir string) {
	fatal := func(err error) {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(3)
	}
	ctx := context.Background()
	s, err := file.Open(dir)
	if err != nil {
		fatal(err)
	}
	pw, err := s.OpenWriter(ctx, "crash")
	if err != nil {
		fatal(err)
	}
	// Find the next sequence number from the last stored message.
	next := 0
	r := stream.NewReader("crash", pw, stream.ReaderConfig{})
	for rec, err := range r.Records(ctx, 0, -1) {
		if err != nil {
			fatal(err)
		}
		seq, err := seqOf(rec)
		if err != nil {
			fatal(err)
		}
		next = seq + 1
	}
	// Small segments, so that kills land in rolls too.
	w, err := stream.OpenWriter(ctx, "crash", pw, stream.WriterConfig{GrowStep: 256 << 10, SegmentSize: stream.MinSegmentSize})
	if err != nil {
		fatal(err)
	}
	fmt.Printf("ready %d %d\n", next, w.Position())
	rnd := rand.New(rand.NewPCG(uint64(os.Getpid()), uint64(time.Now().UnixNano())))
	for {
		n := 1 + rnd.IntN(60)
		res, err := w.Append(ctx, batch(next, n))
		if err != nil {
			fatal(err)
		}
		next += n
		fmt.Printf("ack %d %d\n", next, res.Position)
	}
}

// TestCrashSafetySIGKILL kills an appending child process at random moments
// and checks after each kill that every acknowledged message is present and
// intact, that nothing past the committed position is visible, and that the
// next child continues appending.
func TestCrashSafetySIGKILL(t *testing.T) {
	kills := 24
	if testing.Short() {
		kills = 5
	}
	dir := t.TempDir()
	ctx := context.Background()
	rnd := rand.New(rand.NewPCG(1, uint64(time.Now().UnixNano())))
	acked, ackedPos := 0, int64(0)
	for i := 0; i < kills; i++ {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "MV_CRASH_CHILD_DIR="+dir)
		cmd.Stderr = os.Stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := bufio.NewScanner(out)
		if !lines.Scan() || !strings.HasPrefix(lines.Text(), "ready ") {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("kill %d: child did not start: %q", i, lines.Text())
		}
		var start int
		var startPos int64
		fmt.Sscanf(lines.Text(), "ready %d %d", &start, &startPos)
		if start < acked || startPos < ackedPos {
			t.Fatalf("kill %d: child starts at message %d position %d, but %d messages to %d were acknowledged", i, start, startPos, acked, ackedPos)
		}
		if i == 0 {
			// While the child owns the directory, a second process (this
			// one) is refused at once, with the directory named.
			if _, err := file.Open(dir); !errors.Is(err, messagevault.ErrLocked) || !strings.Contains(err.Error(), dir) {
				t.Fatalf("file.Open of a directory in use: %v; want ErrLocked naming %s", err, dir)
			}
		}
		done := make(chan struct{})
		before := acked
		go func() {
			defer close(done)
			for lines.Scan() {
				var n int
				var pos int64
				if _, err := fmt.Sscanf(lines.Text(), "ack %d %d", &n, &pos); err == nil {
					acked, ackedPos = n, pos
				}
			}
		}()
		time.Sleep(time.Duration(20+rnd.IntN(200)) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		<-done
		err = cmd.Wait()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
			t.Fatalf("kill %d: child ended by itself: %v", i, err)
		}
		// Reopen and check.
		s, err := file.Open(dir)
		if err != nil {
			t.Fatalf("kill %d: reopen: %v", i, err)
		}
		r, err := s.OpenReader(ctx, "crash")
		if err != nil {
			t.Fatal(err)
		}
		n, pos := readSeqs(t, r)
		r.Close()
		s.Close()
		if n < acked || pos < ackedPos {
			t.Fatalf("kill %d: %d messages to position %d survive, but %d to %d were acknowledged", i, n, pos, acked, ackedPos)
		}
		t.Logf("kill %d: %d acknowledged (+%d), %d stored, position %d", i, acked, acked-before, n, pos)
	}
	if acked == 0 {
		t.Fatal("no append was ever acknowledged")
	}
	if segs := segmentsOf(t, dir, "crash"); len(segs) < 2 {
		t.Fatalf("the stream never rolled to a second segment (%v): the kills did not cover rolls", segs)
	}
}

// segmentsOf returns the segments of a stream in a data directory.
func segmentsOf(t *testing.T, dir, name string) []int64 {
	t.Helper()
	s, err := file.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r, err := s.OpenReader(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	segs, err := r.Segments(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return segs
}

// TestCrashSafetyTornWrites runs the same check in process on the mem
// backend: writes are torn in half or fail, storage crashes (unflushed
// writes roll back), and the log is reopened each time.
func TestCrashSafetyTornWrites(t *testing.T) {
	ctx := context.Background()
	s := mem.New()
	rnd := rand.New(rand.NewPCG(7, 7))
	acked, ackedPos := 0, int64(0)
	crashes, faults := 0, 0
	for round := 0; round < 60; round++ {
		pw, err := s.OpenWriter(ctx, "torn")
		if err != nil {
			t.Fatal(err)
		}
		w, err := stream.OpenWriter(ctx, "torn", pw, stream.WriterConfig{GrowStep: 4096, SegmentSize: stream.MinSegmentSize})
		if err != nil {
			t.Fatal(err)
		}
		next := int(0)
		if r, err := s.OpenReader(ctx, "torn"); err == nil {
			next, _ = readSeqs(t, r)
			r.Close()
		}
		if next < acked || w.Position() < ackedPos {
			t.Fatalf("round %d: reopened at message %d position %d; %d to %d were acknowledged", round, next, w.Position(), acked, ackedPos)
		}
		steps := 1 + rnd.IntN(8)
		for step := 0; step < steps; step++ {
			switch rnd.IntN(7) {
			case 0:
				s.TearNextWrite()
				faults++
			case 1:
				s.FailNextFlush(nil)
				faults++
			case 2:
				s.FailNextCommit(nil)
				faults++
			case 3:
				s.LandNextCommitFailing(nil)
				faults++
			case 4:
				s.FailNextRoll(nil) // lands only when this batch rolls
			}
			n := 1 + rnd.IntN(20)
			if rnd.IntN(4) == 0 {
				n = 100 + rnd.IntN(200) // large enough to roll now and then
			}
			res, err := w.Append(ctx, batch(next, n))
			if err != nil {
				if !errors.Is(err, mem.ErrInjected) {
					t.Fatal(err)
				}
				if rnd.IntN(2) == 0 {
					break // crash right after the fault
				}
				// Or go on: the writer recovers by itself. The failed
				// batch may have landed whole; find out where we are.
				r, _ := s.OpenReader(ctx, "torn")
				next, _ = readSeqs(t, r)
				r.Close()
				continue
			}
			next += n
			acked, ackedPos = next, res.Position
		}
		s.Crash()
		crashes++
		w.Close()
		r, err := s.OpenReader(ctx, "torn")
		if err != nil {
			t.Fatal(err)
		}
		n, pos := readSeqs(t, r)
		r.Close()
		if n < acked || pos < ackedPos {
			t.Fatalf("round %d: %d messages to %d survive; %d to %d were acknowledged", round, n, pos, acked, ackedPos)
		}
	}
	r, err := s.OpenReader(ctx, "torn")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	segs, err := r.Segments(ctx)
	if err != nil || len(segs) < 3 {
		t.Fatalf("segments %v, %v: the crashes did not cover rolls", segs, err)
	}
	t.Logf("%d crashes, %d injected faults, %d messages acknowledged and intact in %d segments", crashes, faults, acked, len(segs))
}
