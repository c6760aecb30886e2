package kafka

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/messagevault/messagevault"
)

// A fetch with a partition in error is answered at once, not after its
// wait for more bytes.
func TestFetchErrorIsAnsweredAtOnce(t *testing.T) {
	c := testConn(t)
	ctx := context.Background()
	if _, err := c.s.cfg.Vault().Append(ctx, "fetched", []messagevault.Message{messagevault.NewMessage(nil, []byte("one"), 0)}); err != nil {
		t.Fatal(err)
	}
	for _, offset := range []int64{1 << 30} {
		r := kmsg.NewPtrFetchRequest()
		r.Version, r.MaxWaitMillis, r.MinBytes, r.MaxBytes = 11, 3000, 1, 1<<20
		r.Topics = []kmsg.FetchRequestTopic{{Topic: "fetched", Partitions: []kmsg.FetchRequestTopicPartition{{Partition: 0, FetchOffset: offset, PartitionMaxBytes: 1 << 20}}}}
		start := time.Now()
		resp := c.fetch(ctx, r).(*kmsg.FetchResponse)
		if code := resp.Topics[0].Partitions[0].ErrorCode; code != kerr.OffsetOutOfRange.Code {
			t.Fatalf("offset %d: %v; want OFFSET_OUT_OF_RANGE", offset, kerr.ErrorForCode(code))
		}
		if took := time.Since(start); took > time.Second {
			t.Fatalf("offset %d: answered after %v, not at once", offset, took)
		}
	}
}
