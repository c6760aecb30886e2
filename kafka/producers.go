package kafka

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/stream"
	"github.com/messagevault/messagevault/vault"
)

// Idempotent producers. InitProducerId gives a producer a random id and
// epoch 0. Its batches map onto MessageVault's exactly-once publishing:
// the producer id "kafka-<id>-<epoch>", and as sequence the Kafka sequence
// of the batch's last record. A batch sent again is then answered with its
// first offsets and not stored twice, on this node or, after a failover,
// on the next leader, which reads the stream's producer table. As in
// Kafka, a batch must follow its producer's last one on the partition
// without a gap (OUT_OF_ORDER_SEQUENCE_NUMBER otherwise), so that a failed
// batch is never overtaken by the next.

// sequences remembers, per stream and producer, the Kafka sequence the
// next batch must start with, as far as this node has seen.
type sequences struct {
	mu   sync.Mutex
	next map[[2]string]int64
}

// maxRemembered bounds the sequences remembered; past it they are
// forgotten, and read again from the stream's producer table.
const maxRemembered = 100_000

func (s *sequences) get(name, producer string) (int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, ok := s.next[[2]string{name, producer}]
	return n, ok
}

func (s *sequences) set(name, producer string, next int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.next == nil || len(s.next) >= maxRemembered {
		s.next = map[[2]string]int64{}
	}
	s.next[[2]string{name, producer}] = next
}

func (s *sequences) forget(name, producer string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.next, [2]string{name, producer})
}

// initProducerID gives an idempotent producer its id. Transactions are
// not served.
func (c *conn) initProducerID(r *kmsg.InitProducerIDRequest) kmsg.Response {
	resp := kmsg.NewPtrInitProducerIDResponse()
	if r.TransactionalID != nil {
		resp.ErrorCode = kerr.TransactionalIDAuthorizationFailed.Code
		resp.ProducerID, resp.ProducerEpoch = -1, -1
		return resp
	}
	if r.ProducerID >= 0 && r.ProducerEpoch >= 0 && r.ProducerEpoch < 32767 {
		// A producer that asks to go on under a new epoch (KIP-360):
		// the same id, the next epoch, sequences from 0.
		resp.ProducerID, resp.ProducerEpoch = r.ProducerID, r.ProducerEpoch+1
		return resp
	}
	var b [8]byte
	rand.Read(b[:])
	resp.ProducerID = int64(binary.BigEndian.Uint64(b[:]) >> 2) // positive, 62 bits
	resp.ProducerEpoch = 0
	return resp
}

// appendIdempotent appends one idempotent producer's batch to stream
// name, after checking that its sequence follows the producer's last.
// queued, if set, is called once the append holds its place in the
// stream. A batch that follows one this node has seen (still in flight,
// perhaps) is appended on condition that it follows it in the stream too
// (stream.AppendOptions.Follows): if the one before failed, this one is
// not stored, and the producer gets OUT_OF_ORDER_SEQUENCE_NUMBER.
// It returns an error code (0: none), a message and the first offset.
func (c *conn) appendIdempotent(ctx context.Context, v *vault.Vault, name string, b batches, queued func()) (int16, string, int64) {
	if b.sequence < 0 || b.count < 1 || int64(b.sequence)+int64(b.count)-1 > 1<<31-1 {
		return kerr.InvalidRecord.Code, fmt.Sprintf("sequence %d of %d records: out of range", b.sequence, b.count), -1
	}
	producer := fmt.Sprintf("kafka-%d-%d", b.producerID, b.epoch)
	last := int64(b.sequence) + int64(b.count) - 1
	next, known := c.s.seqs.get(name, producer)
	if !known {
		seq, ok, err := v.LastSequence(ctx, name, producer)
		if err != nil {
			return kerr.UnknownServerError.Code, err.Error(), -1
		}
		if ok {
			next, known = int64(seq)+1, true
		}
	}
	if known && (int64(b.sequence) > next || int64(b.sequence) < next && last >= next) {
		return kerr.OutOfOrderSequenceNumber.Code, fmt.Sprintf("batch of sequences %d to %d; the producer's next is %d", b.sequence, last, next), -1
	}
	opts := stream.AppendOptions{Producer: producer, Sequence: uint64(last)}
	if known && int64(b.sequence) == next && next > 0 {
		opts.Follows, opts.Previous = true, uint64(next-1)
	}
	opts.Queued = func() {
		if known && int64(b.sequence) < next {
			// A batch sent again: next does not move.
		} else {
			c.s.seqs.set(name, producer, last+1)
		}
		if queued != nil {
			queued()
		}
	}
	res, err := v.AppendChecked(ctx, name, b.msgs, opts)
	if err != nil {
		c.s.seqs.forget(name, producer) // read it again from the stream
		switch {
		case errors.Is(err, messagevault.ErrSequenceGap):
			return kerr.OutOfOrderSequenceNumber.Code, err.Error(), -1
		case errors.Is(err, messagevault.ErrSequenceTooOld):
			return kerr.DuplicateSequenceNumber.Code, err.Error(), -1
		case errors.Is(err, messagevault.ErrInvalidMessage):
			return kerr.InvalidRecord.Code, err.Error(), -1
		}
		return kerr.UnknownServerError.Code, err.Error(), -1
	}
	return 0, "", res.Offsets[0]
}
