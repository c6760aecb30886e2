package server_test

import (
	"context"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/file"
	"github.com/messagevault/messagevault/stream"
	"github.com/messagevault/messagevault/vault"
)

// BenchmarkReadSince measures GET /streams/{s}/messages?since=T&limit=1
// through the server (HTTP on loopback) on a stream of
// MESSAGEVAULT_BENCH_SINCE_MIB MiB (default 1024) on the file backend,
// written over 100 s of id time; T is random within that span. It reports
// the median latency ("ms/median") beside the mean. The stream is written
// first (seconds to a minute for 1 GiB); that is not timed. With
// MESSAGEVAULT_BENCH_DROP_CACHES=1 (as root) the page cache is dropped
// before the lookups, so the first ones read from the disk.
func BenchmarkReadSince(b *testing.B) {
	mib := 1024
	if v := os.Getenv("MESSAGEVAULT_BENCH_SINCE_MIB"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			b.Fatal(err)
		}
		mib = n
	}
	ctx := context.Background()
	store, err := file.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	t0 := time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)
	var clock time.Duration
	v := vault.New(store, vault.Config{Writer: stream.WriterConfig{Now: func() time.Time { return t0.Add(clock) }}})
	defer func() { v.Close(); store.Close() }()
	batch := make([]messagevault.Message, 1000)
	for i := range batch {
		val := make([]byte, 1000)
		for j := range val {
			val[j] = byte(i * j)
		}
		batch[i] = messagevault.NewMessage([]byte("k"), val, 0)
	}
	batches := mib * 1024 / 1000
	for i := range batches {
		clock = time.Duration(i) * 100 * time.Second / time.Duration(batches)
		if _, err := v.Append(ctx, "big", batch); err != nil {
			b.Fatal(err)
		}
	}
	if os.Getenv("MESSAGEVAULT_BENCH_DROP_CACHES") == "1" {
		// Cold reads: the kernel forgets the stream's pages (needs root).
		if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0); err != nil {
			b.Fatalf("drop the page cache: %v", err)
		}
	}
	srv := serveOverHTTP(b, v, "big:read")
	// The first check of a password costs a bcrypt; later ones are cached.
	get := func(since time.Time) {
		req, err := http.NewRequest("GET", srv.URL+"/streams/big/messages?limit=1&since="+url.QueryEscape(since.Format(time.RFC3339Nano)), nil)
		if err != nil {
			b.Fatal(err)
		}
		req.SetBasicAuth("ann", "pw")
		resp, err := srv.Client().Do(req)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("since: %d", resp.StatusCode)
		}
	}
	get(t0)
	rng := rand.New(rand.NewPCG(3, 4))
	var took []time.Duration
	for b.Loop() {
		since := t0.Add(time.Duration(rng.Int64N(int64(100 * time.Second))))
		start := time.Now()
		get(since)
		took = append(took, time.Since(start))
	}
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "ms/median")
	b.ReportMetric(float64(mib), "MiB")
}
