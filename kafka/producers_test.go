package kafka

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/stream"
)

// idemBatch is a decoded batch of count records from producer 7, epoch
// 0, its first at Kafka sequence seq.
func idemBatch(seq int32, count int) batches {
	b := batches{producerID: 7, epoch: 0, sequence: seq, count: int32(count)}
	for i := range count {
		b.msgs = append(b.msgs, messagevault.NewMessage(nil, []byte(fmt.Sprint(seq, "+", i)), 0))
	}
	return b
}

// stored returns the values of stream name.
func stored(t *testing.T, c *conn, name string) []string {
	t.Helper()
	r, closeReader, err := c.s.reader(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	defer closeReader()
	var out []string
	for rec, err := range r.Records(context.Background(), 0, -1) {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(rec.Value))
	}
	return out
}

// Kafka's sequences wrap from 2^31-1 to 0 under the same producer id and
// epoch: the batch after the wrap is a new batch, stored, not taken for
// an old one.
func TestSequenceWrap(t *testing.T) {
	c := testConn(t)
	ctx := context.Background()
	v := c.s.cfg.Vault()
	// The stream already holds the producer's batch ending at 2^31-2.
	if _, err := v.AppendChecked(ctx, "wrapped", []messagevault.Message{messagevault.NewMessage(nil, []byte("before"), 0)},
		stream.AppendOptions{Producer: "kafka-7-0", Sequence: 1<<31 - 2}); err != nil {
		t.Fatal(err)
	}
	for _, b := range []batches{idemBatch(1<<31-1, 1), idemBatch(0, 2), idemBatch(2, 1)} {
		if code, msg, _ := c.appendIdempotent(ctx, v, "wrapped", b, nil); code != 0 {
			t.Fatalf("batch at sequence %d: %v %s", b.sequence, kerr.ErrorForCode(code), msg)
		}
	}
	if got := stored(t, c, "wrapped"); len(got) != 5 {
		t.Fatalf("stream holds %v; want the 4 records after the first too", got)
	}
}

// A batch of a producer the stream does not know, other than its first
// (sequence 0), is refused: the batches before it were not stored. Its
// predecessor, sent again, is stored then, not acknowledged unstored.
func TestBatchOfAnUnknownProducer(t *testing.T) {
	c := testConn(t)
	ctx := context.Background()
	v := c.s.cfg.Vault()
	code, _, _ := c.appendIdempotent(ctx, v, "unknown", idemBatch(10, 10), nil)
	if code != kerr.UnknownProducerID.Code {
		t.Fatalf("a second batch first: %v; want UNKNOWN_PRODUCER_ID", kerr.ErrorForCode(code))
	}
	if code, msg, _ := c.appendIdempotent(ctx, v, "unknown", idemBatch(0, 10), nil); code != 0 {
		t.Fatalf("the first batch: %v %s", kerr.ErrorForCode(code), msg)
	}
	if code, msg, _ := c.appendIdempotent(ctx, v, "unknown", idemBatch(10, 10), nil); code != 0 {
		t.Fatalf("the second batch again: %v %s", kerr.ErrorForCode(code), msg)
	}
	if got := stored(t, c, "unknown"); len(got) != 20 || got[0] != "0+0" || got[10] != "10+0" {
		t.Fatalf("stream holds %v", got)
	}
}

func TestUnwrap(t *testing.T) {
	for _, tc := range []struct {
		next int64
		seq  int32
		want int64
	}{
		{0, 0, 0},
		{10, 10, 10},
		{10, 5, 5},
		{10, 1<<31 - 1, 1<<31 - 1}, // far ahead, not behind 0
		{1<<31 - 1, 1<<31 - 1, 1<<31 - 1},
		{1 << 31, 0, 1 << 31},
		{1<<31 + 3, 1<<31 - 2, 1<<31 - 2},
		{5<<31 + 7, 9, 5<<31 + 9},
	} {
		if got := unwrap(tc.next, tc.seq); got != tc.want {
			t.Errorf("unwrap(%d, %d) = %d; want %d", tc.next, tc.seq, got, tc.want)
		}
	}
}

// An error's code tells the client whether the batch may be stored.
func TestProduceErrorCodes(t *testing.T) {
	for _, tc := range []struct {
		err    error
		queued bool
		want   *kerr.Error
	}{
		{fmt.Errorf("append: %w", messagevault.ErrInvalidMessage), true, kerr.InvalidRecord},
		{fmt.Errorf("open: %w", messagevault.ErrNotLeader), false, kerr.NotLeaderForPartition},
		{errors.New("disk"), false, kerr.NotEnoughReplicas},
		{context.Canceled, true, kerr.NotEnoughReplicas}, // dropped before the writer took it
		{fmt.Errorf("append: %w", context.DeadlineExceeded), true, kerr.RequestTimedOut},
		{fmt.Errorf("append: %w", messagevault.ErrFenced), true, kerr.RequestTimedOut},
		{errors.New("disk"), true, kerr.RequestTimedOut},
	} {
		if got := produceError(tc.err, tc.queued); got != tc.want.Code {
			t.Errorf("%v (queued %v): %v; want %v", tc.err, tc.queued, kerr.ErrorForCode(got), tc.want)
		}
	}
}
