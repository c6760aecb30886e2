package kafka

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/formats"
	"github.com/messagevault/messagevault/stream"
)

// Fetch and ListOffsets. A fetched partition's records come as one record
// batch whose records keep their MessageVault offsets (byte positions):
// each record's offset delta is its position less the batch's first. The
// batch's last offset delta reaches the byte before the next record, or
// the committed position, so a consumer's next fetch offset (last offset
// plus one) is always the next record's start, and at the end of the
// stream it equals the high watermark: the gaps between offsets stay
// invisible, as in a compacted topic.

// maxFetchWait bounds a fetch's wait for records, whatever it asks.
const maxFetchWait = 30 * time.Second

// fetchChunk is the read size of a fetch's reader: a fetch asks for a few
// MiB at most per partition, and must hold at least one whole record.
const fetchChunk = formats.MaxRecordSize

// reader opens a reader of stream name: through the vault while this node
// leads (clamped to its committed position), from storage otherwise.
func (s *Server) reader(ctx context.Context, name string) (*stream.Reader, func() error, error) {
	cfg := stream.ReaderConfig{ChunkSize: fetchChunk}
	if v := s.cfg.Vault(); v != nil {
		return v.Reader(ctx, name, cfg)
	}
	if s.cfg.Storage == nil {
		return nil, nil, errors.New("this node has no storage to read")
	}
	pr, err := s.cfg.Storage.OpenReader(ctx, name)
	if err != nil {
		return nil, nil, err
	}
	return stream.NewReader(name, pr, cfg), pr.Close, nil
}

// fetchPart is one partition of a fetch being answered.
type fetchPart struct {
	topic    string
	offset   int64
	maxBytes int32
	resp     *kmsg.FetchResponseTopicPartition
}

// fetch answers with the records at each partition's offset. While fewer
// than MinBytes are found, it waits for a commit of any of the streams
// asked, up to MaxWaitMillis.
func (c *conn) fetch(ctx context.Context, r *kmsg.FetchRequest) kmsg.Response {
	resp := kmsg.NewPtrFetchResponse()
	type at struct{ ti, pi int }
	var parts []*fetchPart
	var pos []at // where each part's answer goes
	for ti, t := range r.Topics {
		rt := kmsg.NewFetchResponseTopic()
		rt.Topic = t.Topic
		rt.Partitions = make([]kmsg.FetchResponseTopicPartition, len(t.Partitions))
		for pi, p := range t.Partitions {
			rp := &rt.Partitions[pi]
			*rp = kmsg.NewFetchResponseTopicPartition()
			rp.Partition = p.Partition
			rp.HighWatermark, rp.LastStableOffset, rp.LogStartOffset = -1, -1, -1
			rp.RecordBatches = []byte{}
			if code, msg := c.mayRead(t.Topic, p.Partition); code != 0 {
				rp.ErrorCode = code
				c.s.cfg.Logger.Debug("kafka: fetch refused", "topic", t.Topic, "code", code, "err", msg)
				continue
			}
			parts = append(parts, &fetchPart{topic: t.Topic, offset: p.FetchOffset, maxBytes: p.PartitionMaxBytes})
			pos = append(pos, at{ti, pi})
		}
		resp.Topics = append(resp.Topics, rt)
	}
	for i, p := range parts {
		p.resp = &resp.Topics[pos[i].ti].Partitions[pos[i].pi]
	}
	wait := min(time.Duration(r.MaxWaitMillis)*time.Millisecond, maxFetchWait)
	deadline := time.Now().Add(wait)
	for {
		budget := int64(r.MaxBytes)
		if budget <= 0 || budget > maxFetchBytes {
			budget = maxFetchBytes
		}
		got, failed := 0, false
		var waiting []*fetchPart
		for _, p := range parts {
			n := c.fetchPartition(ctx, p, budget, got == 0)
			got += n
			budget -= int64(n)
			switch {
			case p.resp.ErrorCode != 0:
				failed = true
			case p.offset == p.resp.HighWatermark:
				waiting = append(waiting, p)
			}
		}
		// As Kafka, answer at once when a partition is in error.
		if got >= int(r.MinBytes) || failed || len(waiting) == 0 || !time.Now().Before(deadline) {
			return resp
		}
		if !c.waitForAny(ctx, waiting, deadline) {
			return resp
		}
	}
}

// maxFetchBytes bounds a fetch's answer, whatever it asks (as a broker's
// fetch.max.bytes does), beyond the first record.
const maxFetchBytes = 64 << 20

// mayRead checks that the user may read topic's partition.
func (c *conn) mayRead(topic string, partition int32) (int16, string) {
	name, err := messagevault.NormalizeStreamName(topic)
	if err != nil || name != topic {
		return kerr.InvalidTopicException.Code, fmt.Sprintf("topic %q: not a valid stream name", topic)
	}
	if partition != 0 {
		return kerr.UnknownTopicOrPartition.Code, "a topic has one partition, 0"
	}
	if !c.user.CanRead(name) {
		return kerr.TopicAuthorizationFailed.Code, fmt.Sprintf("user %q may not read %s", c.user.Name, name)
	}
	return 0, ""
}

// fetchPartition fills p's answer with the records from its offset, at
// most p.maxBytes and budget (but one record at least when first, as
// Kafka does), and returns the size of the batch.
func (c *conn) fetchPartition(ctx context.Context, p *fetchPart, budget int64, first bool) int {
	rp := p.resp
	rp.RecordBatches = []byte{} // empty, not null: librdkafka refuses a null record set
	reader, closeReader, err := c.s.reader(ctx, p.topic)
	if errors.Is(err, messagevault.ErrStreamNotFound) {
		// A stream not yet written is an empty topic.
		rp.HighWatermark, rp.LastStableOffset, rp.LogStartOffset = 0, 0, 0
		if p.offset != 0 {
			rp.ErrorCode = kerr.OffsetOutOfRange.Code
		}
		return 0
	}
	if err != nil {
		c.s.cfg.Logger.Warn("kafka: fetch: open the stream", "topic", p.topic, "err", err)
		rp.ErrorCode = kerr.UnknownServerError.Code
		return 0
	}
	defer closeReader()
	e, err := reader.Extent(ctx)
	if err != nil {
		c.s.cfg.Logger.Warn("kafka: fetch: read the position", "topic", p.topic, "err", err)
		rp.ErrorCode = kerr.UnknownServerError.Code
		return 0
	}
	rp.HighWatermark, rp.LastStableOffset, rp.LogStartOffset = e.Position, e.Position, e.Start
	rp.ErrorCode = 0
	if p.offset < e.Start || p.offset > e.Position {
		rp.ErrorCode = kerr.OffsetOutOfRange.Code
		return 0
	}
	if p.offset == e.Position {
		return 0
	}
	limit := min(int64(p.maxBytes), budget)
	if limit <= 0 && !first {
		return 0
	}
	batch, err := readBatch(ctx, reader, p.offset, e.Position, limit)
	if err != nil {
		if errors.Is(err, messagevault.ErrTrimmed) || errors.Is(err, messagevault.ErrOutOfRange) {
			rp.ErrorCode = kerr.OffsetOutOfRange.Code
			return 0
		}
		c.s.cfg.Logger.Warn("kafka: fetch: read records", "topic", p.topic, "offset", p.offset, "err", err)
		rp.ErrorCode = kerr.KafkaStorageError.Code
		return 0
	}
	rp.RecordBatches = batch
	return len(batch)
}

// readBatch reads the records from offset (up to the committed position
// end) into one record batch of about limit bytes, and at least one
// record. An offset inside a record starts at that record: the consumer
// skips it, as it skips a batch's records below the offset it asked.
func readBatch(ctx context.Context, reader *stream.Reader, offset, end, limit int64) ([]byte, error) {
	from := offset
	var recs []byte
	var base, firstTime, maxTime, next int64
	n := int32(0)
	for attempt := 0; attempt < 2; attempt++ {
		for rec, err := range reader.Records(ctx, from, end) {
			if err != nil {
				if attempt == 0 && n == 0 && errors.Is(err, messagevault.ErrNotRecordStart) {
					prev, _, ok := reader.Around(ctx, from)
					if ok {
						from = prev
						break
					}
				}
				if n > 0 {
					break // answer with what was read; the next fetch meets the error
				}
				return nil, err
			}
			ts := rec.ID.Time().UnixMilli()
			if n == 0 {
				base, firstTime = rec.Offset, ts
			} else if int64(len(recs))+int64(rec.Size()) > limit || rec.Offset-base > 1<<30 {
				break
			}
			maxTime = max(maxTime, ts)
			recs = appendRecord(recs, rec, rec.Offset-base, ts-firstTime)
			next = rec.Offset + int64(rec.Size())
			n++
		}
		if n > 0 || from == offset {
			break
		}
	}
	if n == 0 {
		return []byte{}, nil
	}
	return appendBatch(nil, base, int32(next-1-base), firstTime, maxTime, n, recs), nil
}

// appendRecord appends rec as a Kafka v2 record. An empty key goes as
// null: MessageVault does not tell an empty key from none.
func appendRecord(dst []byte, rec formats.Record, offsetDelta, timestampDelta int64) []byte {
	body := make([]byte, 0, 32+len(rec.Key)+len(rec.Value))
	body = append(body, 0) // attributes
	body = kbin.AppendVarlong(body, timestampDelta)
	body = kbin.AppendVarint(body, int32(offsetDelta))
	if len(rec.Key) == 0 {
		body = kbin.AppendVarint(body, -1)
	} else {
		body = kbin.AppendVarint(body, int32(len(rec.Key)))
		body = append(body, rec.Key...)
	}
	body = kbin.AppendVarint(body, int32(len(rec.Value)))
	body = append(body, rec.Value...)
	body = kbin.AppendVarint(body, 0) // no headers
	dst = kbin.AppendVarint(dst, int32(len(body)))
	return append(dst, body...)
}

// appendBatch appends a v2 record batch holding records, without
// producer id or compression, with its length and CRC-32C.
func appendBatch(dst []byte, base int64, lastOffsetDelta int32, firstTime, maxTime int64, count int32, records []byte) []byte {
	start := len(dst)
	dst = binary.BigEndian.AppendUint64(dst, uint64(base))
	dst = binary.BigEndian.AppendUint32(dst, 0) // length, set below
	dst = binary.BigEndian.AppendUint32(dst, 0xffffffff)
	dst = append(dst, 2)                        // magic
	dst = binary.BigEndian.AppendUint32(dst, 0) // CRC, set below
	crcFrom := len(dst)
	dst = binary.BigEndian.AppendUint16(dst, 0) // attributes
	dst = binary.BigEndian.AppendUint32(dst, uint32(lastOffsetDelta))
	dst = binary.BigEndian.AppendUint64(dst, uint64(firstTime))
	dst = binary.BigEndian.AppendUint64(dst, uint64(maxTime))
	dst = binary.BigEndian.AppendUint64(dst, 0xffffffffffffffff) // producer id -1
	dst = binary.BigEndian.AppendUint16(dst, 0xffff)             // producer epoch -1
	dst = binary.BigEndian.AppendUint32(dst, 0xffffffff)         // first sequence -1
	dst = binary.BigEndian.AppendUint32(dst, uint32(count))
	dst = append(dst, records...)
	binary.BigEndian.PutUint32(dst[start+8:], uint32(len(dst)-start-12))
	binary.BigEndian.PutUint32(dst[crcFrom-4:], crc32.Checksum(dst[crcFrom:], castagnoli))
	return dst
}

// waitForAny waits until a commit of one of parts' streams (each at its
// end) may have moved it past the offset asked, or until deadline; false
// when ctx ended.
func (c *conn) waitForAny(ctx context.Context, parts []*fetchPart, deadline time.Time) bool {
	wctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	woke := make(chan struct{}, len(parts))
	v := c.s.cfg.Vault()
	for _, p := range parts {
		go func() {
			v.Wait(wctx, p.topic, p.offset, 200*time.Millisecond)
			woke <- struct{}{}
		}()
	}
	select {
	case <-woke:
	case <-wctx.Done():
	}
	cancel()
	return ctx.Err() == nil
}

// listOffsets answers the earliest offset (-2), the latest (-1: the
// committed position), or the first record at or after a time.
func (c *conn) listOffsets(ctx context.Context, r *kmsg.ListOffsetsRequest) kmsg.Response {
	resp := kmsg.NewPtrListOffsetsResponse()
	for _, t := range r.Topics {
		rt := kmsg.NewListOffsetsResponseTopic()
		rt.Topic = t.Topic
		for _, p := range t.Partitions {
			rp := kmsg.NewListOffsetsResponseTopicPartition()
			rp.Partition = p.Partition
			rp.Timestamp, rp.Offset = -1, -1
			if code, _ := c.mayRead(t.Topic, p.Partition); code != 0 {
				rp.ErrorCode = code
			} else {
				rp.ErrorCode, rp.Offset, rp.Timestamp = c.listOffset(ctx, t.Topic, p.Timestamp)
			}
			rt.Partitions = append(rt.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, rt)
	}
	return resp
}

func (c *conn) listOffset(ctx context.Context, topic string, at int64) (code int16, offset, ts int64) {
	reader, closeReader, err := c.s.reader(ctx, topic)
	if errors.Is(err, messagevault.ErrStreamNotFound) {
		return 0, 0, -1
	}
	if err != nil {
		return kerr.UnknownServerError.Code, -1, -1
	}
	defer closeReader()
	e, err := reader.Extent(ctx)
	if err != nil {
		return kerr.UnknownServerError.Code, -1, -1
	}
	switch {
	case at == -1:
		return 0, e.Position, -1
	case at == -2:
		return 0, e.Start, -1
	case at < 0:
		return kerr.UnsupportedVersion.Code, -1, -1
	}
	pos, err := reader.FindTime(ctx, time.UnixMilli(at))
	if err != nil {
		return kerr.KafkaStorageError.Code, -1, -1
	}
	if pos >= e.Position {
		return 0, -1, -1 // no record at or after the time
	}
	for rec, err := range reader.Records(ctx, pos, e.Position) {
		if err != nil {
			return kerr.KafkaStorageError.Code, -1, -1
		}
		return 0, pos, rec.ID.Time().UnixMilli()
	}
	return 0, -1, -1
}
