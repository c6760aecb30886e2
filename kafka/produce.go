package kafka

import (
	"context"
	"fmt"
	"sync"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/stream"
)

// Produce. Each partition's batches are appended as one MessageVault
// batch, all of them or none, and answered with the offset of the first
// record once durable. A connection's produce requests are pipelined:
// the next request is read and its appends queued behind the previous
// ones while those wait to be durable, so that several requests share one
// group commit; answers still go out in order. An idempotent producer's
// batch queued behind its previous one is appended only if that one was
// (see appendIdempotent).

// produceJob is one partition of a produce request to append.
type produceJob struct {
	name string
	b    batches
	rp   *kmsg.ProduceResponseTopicPartition
}

// prepareProduce checks and decodes every partition of r. It returns the
// answer, where refused partitions already carry their error, the
// partitions to append, whose answers point into it, and what their
// records take decoded (see decodeBatches).
func (c *conn) prepareProduce(r *kmsg.ProduceRequest) (*kmsg.ProduceResponse, []*produceJob, int) {
	resp := kmsg.NewPtrProduceResponse()
	var jobs []*produceJob
	budget := MaxDecompressed
	for _, t := range r.Topics {
		rt := kmsg.NewProduceResponseTopic()
		rt.Topic = t.Topic
		rt.Partitions = make([]kmsg.ProduceResponseTopicPartition, len(t.Partitions))
		for i, p := range t.Partitions {
			rp := &rt.Partitions[i]
			*rp = kmsg.NewProduceResponseTopicPartition()
			rp.Partition, rp.BaseOffset, rp.LogAppendTime = p.Partition, -1, -1
			name, b, code, msg := c.checkPartition(t.Topic, p.Partition, p.Records, &budget)
			if code != 0 {
				fail(rp, t.Topic, code, msg, c)
				continue
			}
			jobs = append(jobs, &produceJob{name: name, b: b, rp: rp})
		}
		resp.Topics = append(resp.Topics, rt)
	}
	return resp, jobs, MaxDecompressed - budget
}

// fail sets a partition's error, and logs it at Debug.
func fail(rp *kmsg.ProduceResponseTopicPartition, topic string, code int16, msg string, c *conn) {
	c.s.cfg.Logger.Debug("kafka: produce refused", "topic", topic, "code", code, "err", msg)
	rp.ErrorCode, rp.BaseOffset = code, -1
	if msg != "" {
		rp.ErrorMessage = kmsg.StringPtr(msg)
	}
}

// checkPartition checks a partition's topic, number and claim, and
// decodes its batches.
func (c *conn) checkPartition(topic string, partition int32, records []byte, budget *int) (string, batches, int16, string) {
	name, err := messagevault.NormalizeStreamName(topic)
	if err != nil || name != topic {
		return "", batches{}, kerr.InvalidTopicException.Code, fmt.Sprintf("topic %q: not a valid stream name (lower case letters, digits and dashes)", topic)
	}
	if partition != 0 {
		return "", batches{}, kerr.UnknownTopicOrPartition.Code, "a topic has one partition, 0"
	}
	if !c.user.CanWrite(name) {
		return "", batches{}, kerr.TopicAuthorizationFailed.Code, fmt.Sprintf("user %q may not write %s (claim %s:write)", c.user.Name, name, name)
	}
	b, code, msg := decodeBatches(records, c.s.cfg.DropHeaders, budget)
	return name, b, code, msg
}

// runProduce appends one partition and fills its answer. queued, if set,
// is called once the append holds its place in the stream's order.
func (c *conn) runProduce(ctx context.Context, j *produceJob, queued func()) {
	v := c.s.cfg.Vault()
	if v == nil {
		fail(j.rp, j.name, kerr.NotLeaderForPartition.Code, "this node does not lead the cluster: produce to the leader's Kafka listener", c)
		return
	}
	if j.b.headersDropped > 0 && c.s.headersDropped != nil {
		c.s.headersDropped.Add(float64(j.b.headersDropped))
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if j.b.producerID >= 0 {
		code, msg, base := c.appendIdempotent(ctx, v, j.name, j.b, queued)
		if code != 0 {
			fail(j.rp, j.name, code, msg, c)
			return
		}
		j.rp.BaseOffset = base
		return
	}
	wasQueued := false
	res, err := v.AppendChecked(ctx, j.name, j.b.msgs, stream.AppendOptions{Queued: func() {
		wasQueued = true
		if queued != nil {
			queued()
		}
	}})
	if err != nil {
		code := produceError(err, wasQueued)
		if code != kerr.InvalidRecord.Code {
			c.s.cfg.Logger.Warn("kafka: produce failed", "topic", j.name, "err", err)
		}
		fail(j.rp, j.name, code, err.Error(), c)
		return
	}
	j.rp.BaseOffset = res.Offsets[0]
}

// produce serves a produce request to its end.
func (c *conn) produce(ctx context.Context, r *kmsg.ProduceRequest) kmsg.Response {
	resp, jobs, _ := c.prepareProduce(r)
	for _, j := range jobs {
		c.runProduce(ctx, j, nil)
	}
	if r.Acks == 0 {
		return nil
	}
	return resp
}

// pipelined serves produce request r (acks 1 or all) into rp. It returns
// once each partition's append holds its place in its stream; rp is made
// ready once all are durable (or failed).
func (c *conn) pipelined(r *kmsg.ProduceRequest, rp *reply) {
	resp, jobs, decoded := c.prepareProduce(r)
	resp.SetVersion(r.Version)
	rp.resp = resp
	// The decoded records count against the connection's bytes in
	// flight too (within its bound), until the answer is written.
	if extra := min(decoded, MaxRequestBytes-rp.size); extra > 0 && c.inflight != nil {
		if c.inflight.Acquire(c.s.ctx, int64(extra)) == nil {
			rp.size += extra
		}
	}
	var wg sync.WaitGroup
	for _, j := range jobs {
		queued, done := make(chan struct{}), make(chan struct{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(done)
			defer c.s.recoverConn(c.c)
			c.runProduce(c.s.ctx, j, func() { close(queued) })
		}()
		select {
		case <-queued:
		case <-done:
		}
	}
	go func() {
		wg.Wait()
		close(rp.done)
	}()
}
