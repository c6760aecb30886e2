package bench_test

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/messagevault/messagevault/bench"
	"github.com/messagevault/messagevault/client"
	"github.com/messagevault/messagevault/file"
	"github.com/messagevault/messagevault/stream"
	"github.com/messagevault/messagevault/vault"
)

func server(t *testing.T) *client.Client {
	t.Helper()
	return serverWith(t, vault.Config{})
}

func serverWith(t *testing.T, cfg vault.Config) *client.Client {
	t.Helper()
	store, err := file.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := bench.StartServerWith(store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close(); store.Close() })
	return client.New(srv.URL, srv.User, srv.Password)
}

func TestRunVerifiesEveryMessage(t *testing.T) {
	c := server(t)
	rep, err := bench.Run(context.Background(), bench.Config{Client: c, Threads: 3, Steps: 7, Batch: 20, Streams: 2, Prefix: "ok"})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Messages != 3*7*20 || rep.Verified != rep.Messages || rep.Batches != 21 || rep.LatencyMs.P99 <= 0 || len(rep.Timeline) == 0 {
		t.Fatalf("report: %+v", rep)
	}
	var svg bytes.Buffer
	if err := bench.WriteSVG(&svg, rep); err != nil || !strings.Contains(svg.String(), "<polyline") {
		t.Fatalf("chart: %v %.200s", err, svg.String())
	}
}

func TestVerifyFailsOnAForeignMessage(t *testing.T) {
	c := server(t)
	// Something else already wrote into the bench's stream: the read-back
	// must not take it for the bench's messages.
	if _, err := c.Publish(context.Background(), "foreign-0", []client.Message{{Key: []byte("message0-0"), Value: bytes.Repeat([]byte{0}, 200)}}); err != nil {
		t.Fatal(err)
	}
	_, err := bench.Run(context.Background(), bench.Config{Client: c, Threads: 1, Steps: 2, Batch: 5, Prefix: "foreign"})
	if err == nil || !strings.Contains(err.Error(), "verify") {
		t.Fatalf("bench over a foreign message: %v", err)
	}
}

// TestVerifyFollowsSegments: the read-back follows a stream across its
// segments.
func TestVerifyFollowsSegments(t *testing.T) {
	c := serverWith(t, vault.Config{Writer: stream.WriterConfig{SegmentSize: stream.MinSegmentSize}})
	rep, err := bench.Run(context.Background(), bench.Config{Client: c, Threads: 2, Steps: 20, Batch: 100, MinSize: 1000, MaxSize: 1000, Streams: 1, Prefix: "seg"})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Verified != rep.Messages || rep.Messages != 4000 {
		t.Fatalf("report: %d verified of %d", rep.Verified, rep.Messages)
	}
	r, err := c.Reader(context.Background(), "seg-0")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if pos, _ := r.Position(context.Background()); pos < 3*stream.MinSegmentSize {
		t.Fatalf("the stream holds %d bytes: fewer than 3 segments", pos)
	}
}
