package bench_test

import (
	"context"
	"testing"
	"time"

	"github.com/messagevault/messagevault/bench"
	"github.com/messagevault/messagevault/client"
	"github.com/messagevault/messagevault/file"
)

// TestStorageRequestsPer1000: the in-process server counts its storage
// operations per message; a run of batches of 100 costs a few operations
// per batch (pages, flush, position), so some tens per 1,000 messages.
func TestStorageRequestsPer1000(t *testing.T) {
	store, err := file.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := bench.StartServer(store)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Close(); store.Close() }()
	if got := srv.StorageRequestsPer1000(); got != 0 {
		t.Fatalf("%v operations per 1,000 messages before any", got)
	}
	c := client.New(srv.URL, srv.User, srv.Password)
	if _, err := bench.Run(context.Background(), bench.Config{Client: c, Threads: 1, Steps: 20, Batch: 100, SkipVerify: true}); err != nil {
		t.Fatal(err)
	}
	// One producer, one batch per group: at least the pages, the flush
	// and the position per 100 messages, and less than one per message.
	if got := srv.StorageRequestsPer1000(); got < 30 || got > 1000 {
		t.Fatalf("%v storage operations per 1,000 messages", got)
	}
}

// TestFsyncBaseline measures a few real fdatasyncs.
func TestFsyncBaseline(t *testing.T) {
	l, err := bench.FsyncBaseline(context.Background(), t.TempDir(), time.Millisecond, 20)
	if err != nil {
		t.Fatal(err)
	}
	if l.P50 <= 0 || l.P99 < l.P50 || l.Max < l.P99 {
		t.Fatalf("latencies %+v", l)
	}
}
