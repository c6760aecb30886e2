// Command peers runs one publishing workload against NATS JetStream
// (embedded in this process, file storage) and against MessageVault (an
// in-process server on a loopback port, local backend with fdatasync), in
// the same run, and prints the figures and the ratios. JetStream runs in
// three shapes: batch and wait (each producer publishes a batch
// asynchronously and waits for all its acks, as a MessageVault producer
// waits for its batch's answer) with its default sync settings and with
// sync on every message, and its best case: each producer keeps a window
// of -window acks outstanding and never waits for a whole batch.
//
// It is a module of its own so that the main module does not depend on
// NATS. Run it from this directory:
//
//	go run . -producers 4 -batch 1000 -size 100 -duration 10s
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/messagevault/messagevault/bench"
	"github.com/messagevault/messagevault/client"
	"github.com/messagevault/messagevault/file"
)

func main() {
	producers := flag.Int("producers", 4, "concurrent producers")
	batch := flag.Int("batch", 1000, "messages per batch")
	size := flag.Int("size", 100, "value size in bytes")
	duration := flag.Duration("duration", 10*time.Second, "how long each system is loaded")
	window := flag.Int("window", 4096, "acks each JetStream producer keeps outstanding in its best case")
	flag.Parse()
	ctx := context.Background()

	type result struct {
		name string
		rate float64
	}
	var results []result
	for _, shape := range []struct {
		name   string
		sync   bool
		window int
	}{
		{"JetStream (default sync)", false, 0},
		{"JetStream (sync every message)", true, 0},
		{fmt.Sprintf("JetStream (async, %d in flight)", *window), false, *window},
	} {
		rate, err := jetStream(ctx, shape.sync, shape.window, *producers, *batch, *size, *duration)
		if err != nil {
			fmt.Fprintln(os.Stderr, shape.name+":", err)
			os.Exit(1)
		}
		results = append(results, result{shape.name, rate})
	}
	mv, err := messageVault(ctx, *producers, *batch, *size, *duration)
	if err != nil {
		fmt.Fprintln(os.Stderr, "MessageVault:", err)
		os.Exit(1)
	}
	results = append(results, result{"MessageVault (HTTP, fdatasync)", mv})

	fmt.Printf("%d producers, batches of %d, %d-byte values, %v each\n", *producers, *batch, *size, *duration)
	for _, r := range results {
		fmt.Printf("  %-34s %12.0f msgs/s\n", r.name, r.rate)
	}
	fmt.Printf("  MessageVault / JetStream default sync: %.2fx\n", mv/results[0].rate)
	fmt.Printf("  MessageVault / JetStream sync always:  %.2fx\n", mv/results[1].rate)
	fmt.Printf("  MessageVault / JetStream async window: %.2fx\n", mv/results[2].rate)
	// The goal compares with JetStream's best async shape in this run
	// (sync every message is the durable peer, and far slower).
	best := max(results[0].rate, results[2].rate)
	verdict := "met"
	if mv < 5*best {
		verdict = "not met"
	}
	fmt.Printf("goal: MessageVault ≥ 5 × JetStream's best async shape (%.0f msgs/s): %.2fx, %s\n", best, mv/best, verdict)
}

// jetStream loads an embedded JetStream. With window 0 each producer
// publishes a batch asynchronously and waits for every ack before the
// next batch, as a MessageVault producer waits for its batch's answer;
// otherwise it keeps window acks outstanding, waiting for the oldest
// only when the window is full, and the rate counts acked messages.
func jetStream(ctx context.Context, syncAlways bool, window, producers, batch, size int, d time.Duration) (float64, error) {
	dir, err := os.MkdirTemp("", "peers-js-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	opts := &server.Options{JetStream: true, StoreDir: dir, DontListen: true, NoLog: true, NoSigs: true, SyncAlways: syncAlways}
	ns, err := server.NewServer(opts)
	if err != nil {
		return 0, err
	}
	ns.Start()
	defer ns.Shutdown()
	if !ns.ReadyForConnections(10 * time.Second) {
		return 0, fmt.Errorf("nats-server did not start")
	}
	nc, err := nats.Connect("", nats.InProcessServer(ns))
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(max(producers*batch*2, producers*window*2)))
	if err != nil {
		return 0, err
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "BENCH", Subjects: []string{"bench"}, Storage: jetstream.FileStorage}); err != nil {
		return 0, err
	}
	value := make([]byte, size)
	var total atomic.Int64
	var firstErr atomic.Value
	deadline := time.Now().Add(d)
	start := time.Now()
	var wg sync.WaitGroup
	for p := 0; p < producers; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if window > 0 {
				n, err := publishWindow(js, value, window, deadline)
				if err != nil {
					firstErr.CompareAndSwap(nil, err)
				}
				total.Add(n)
				return
			}
			for time.Now().Before(deadline) {
				futures := make([]jetstream.PubAckFuture, 0, batch)
				for i := 0; i < batch; i++ {
					f, err := js.PublishAsync("bench", value)
					if err != nil {
						firstErr.CompareAndSwap(nil, err)
						return
					}
					futures = append(futures, f)
				}
				for _, f := range futures {
					select {
					case <-f.Ok():
					case err := <-f.Err():
						firstErr.CompareAndSwap(nil, err)
						return
					}
				}
				total.Add(int64(batch))
			}
		}()
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return 0, err
	}
	return float64(total.Load()) / time.Since(start).Seconds(), nil
}

// messageVault loads an in-process MessageVault server through HTTP with
// the bench of the main module.
func messageVault(ctx context.Context, producers, batch, size int, d time.Duration) (float64, error) {
	dir, err := os.MkdirTemp("", "peers-mv-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	store, err := file.Open(dir)
	if err != nil {
		return 0, err
	}
	defer store.Close()
	srv, err := bench.StartServer(store)
	if err != nil {
		return 0, err
	}
	defer srv.Close()
	cl := client.New(srv.URL, srv.User, srv.Password, client.WithHTTPClient(&http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}))
	rep, err := bench.Run(ctx, bench.Config{Client: cl, Threads: producers, Batch: batch, MinSize: size, MaxSize: size, Duration: d, SkipVerify: true})
	if err != nil {
		return 0, err
	}
	return rep.MessagesPerSecond, nil
}

// publishWindow publishes value until deadline with up to window acks
// outstanding, then waits for the rest, and returns how many were acked.
func publishWindow(js jetstream.JetStream, value []byte, window int, deadline time.Time) (int64, error) {
	var acked int64
	inFlight := make([]jetstream.PubAckFuture, 0, window)
	wait := func(f jetstream.PubAckFuture) error {
		select {
		case <-f.Ok():
			acked++
			return nil
		case err := <-f.Err():
			return err
		}
	}
	for time.Now().Before(deadline) {
		if len(inFlight) == window {
			if err := wait(inFlight[0]); err != nil {
				return acked, err
			}
			inFlight = inFlight[1:]
		}
		f, err := js.PublishAsync("bench", value)
		if err != nil {
			return acked, err
		}
		inFlight = append(inFlight, f)
	}
	for _, f := range inFlight {
		if err := wait(f); err != nil {
			return acked, err
		}
	}
	return acked, nil
}
