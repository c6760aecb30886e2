package client_test

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/messagevault/messagevault/client"
	"github.com/messagevault/messagevault/internal/mvtest"
)

// consumeChildEnv names the server a child process of this test binary
// consumes from (see consumeChild).
const consumeChildEnv = "MV_CONSUME_CHILD_URL"

// consumeChild projects stream "input" to stream "output" under cursor
// "projector", exactly once downstream: each batch's output carries the
// sequence of the batch's end. It prints "batch <end>" after each batch
// it handled and runs until killed.
func consumeChild(url string) {
	c := client.New(url, "admin", mvtest.AdminPassword)
	// What the output already holds: a batch handled again after a kill
	// may hold more input than the first time (new messages arrived), so
	// the messages stored already are dropped before the publish.
	last, _, err := c.LastSequence(context.Background(), "output", "projector")
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(3)
	}
	err = c.Consume(context.Background(), "input", "projector", func(ctx context.Context, batch []client.ReadMessage) error {
		var out []client.Message
		for _, m := range batch {
			if uint64(m.Next) > last {
				out = append(out, client.Message{Key: m.Key, Value: append([]byte("out-"), m.Value...)})
			}
		}
		end := batch[len(batch)-1].Next
		if len(out) == 0 {
			fmt.Println("duplicate")
			return nil
		}
		res, err := c.Publish(ctx, "output", out, client.WithSequence("projector", uint64(end)))
		if err != nil {
			return err
		}
		if res.Duplicate {
			fmt.Println("duplicate") // handled again after a kill: stored once
		}
		last = uint64(end)
		time.Sleep(20 * time.Millisecond) // a window between the output and the commit
		fmt.Printf("batch %d\n", end)
		return nil
	}, client.WithBatchSize(25))
	fmt.Fprintln(os.Stderr, "child:", err)
	os.Exit(3)
}

// TestConsumeSurvivesSIGKILL kills a consuming process at random moments,
// in the middle of batches (between writing the output and moving the
// cursor too), and restarts it: in the end every input message is in the
// output exactly once, in order.
func TestConsumeSurvivesSIGKILL(t *testing.T) {
	s := mvtest.Start(t, t.TempDir(), nil)
	c := newClient(s)
	ctx := context.Background()
	const total = 4000
	publishInput := func(from, to int) error {
		for b := from; b < to; b += 100 {
			var msgs []client.Message
			for i := b; i < b+100; i++ {
				msgs = append(msgs, client.Message{Key: []byte("k"), Value: []byte(fmt.Sprintf("in-%05d", i))})
			}
			if _, err := c.Publish(ctx, "input", msgs); err != nil {
				return err
			}
			time.Sleep(30 * time.Millisecond)
		}
		return nil
	}
	if err := publishInput(0, total/2); err != nil {
		t.Fatal(err)
	}
	// The other half arrives while the consumers run and are killed.
	published := make(chan error, 1)
	go func() { published <- publishInput(total/2, total) }()
	in, err := c.Reader(ctx, "input")
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	end := int64(-1) // the input's final position, once all is published
	rnd := rand.New(rand.NewPCG(3, uint64(time.Now().UnixNano())))
	kills := 0
	var dups, atomicEnd atomic.Int64
	atomicEnd.Store(-1)
	for {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), consumeChildEnv+"="+s.URL)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := bufio.NewScanner(out)
		done := make(chan bool)
		go func() {
			reached := false
			for lines.Scan() {
				switch strings.TrimSpace(lines.Text()) {
				case fmt.Sprintf("batch %d", atomicEnd.Load()):
					reached = true
				case "duplicate":
					dups.Add(1)
				}
			}
			done <- reached
		}()
		if kills < 8 {
			time.Sleep(time.Duration(150+rnd.IntN(300)) * time.Millisecond)
			cmd.Process.Signal(syscall.SIGKILL)
			kills++
			reached := <-done
			cmd.Wait()
			if reached {
				break
			}
			continue
		}
		// The last one runs until its cursor reaches the end.
		if err := <-published; err != nil {
			t.Fatal(err)
		}
		end, _ = in.Position(ctx)
		atomicEnd.Store(end)
		deadline := time.Now().Add(60 * time.Second)
		for {
			cur, err := c.GetCursor(ctx, "input", "projector")
			if err == nil && cur.Position == end {
				break
			}
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				t.Fatalf("the last consumer did not finish: cursor %+v, %v", cur, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		cmd.Process.Signal(syscall.SIGKILL)
		<-done
		cmd.Wait()
		break
	}
	r, err := c.Reader(ctx, "output")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	i := 0
	for m, err := range r.Messages(ctx, 0, -1) {
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("out-in-%05d", i); string(m.Value) != want {
			t.Fatalf("output message %d is %q, want %q (after %d kills)", i, m.Value, want, kills)
		}
		i++
	}
	if i != total {
		t.Fatalf("the output holds %d messages, want %d (after %d kills)", i, total, kills)
	}
	t.Logf("%d kills, %d batches handled again and stored once; every input message is in the output once", kills, dups.Load())
}
