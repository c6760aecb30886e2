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

// sequences remembers, per stream and producer, the sequence the next
// batch must start with, as far as this node has seen while leading with
// one vault: a new vault (a new term of leadership) starts afresh, since
// another node may have written meanwhile.
type sequences struct {
	mu   sync.Mutex
	of   *vault.Vault
	next map[[2]string]int64
}

// maxRemembered bounds the sequences remembered; past it they are
// forgotten, and read again from the stream's producer table.
const maxRemembered = 100_000

func (s *sequences) get(v *vault.Vault, name, producer string) (int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.of != v {
		return 0, false
	}
	n, ok := s.next[[2]string{name, producer}]
	return n, ok
}

func (s *sequences) set(v *vault.Vault, name, producer string, next int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.of != v || s.next == nil || len(s.next) >= maxRemembered {
		s.of, s.next = v, map[[2]string]int64{}
	}
	s.next[[2]string{name, producer}] = next
}

func (s *sequences) forget(name, producer string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.next, [2]string{name, producer})
}

// unwrap places a batch's first Kafka sequence, which wraps from 2^31-1
// to 0, in MessageVault's 64-bit sequences: the value of its residue
// nearest next, the sequence expected.
func unwrap(next int64, seq int32) int64 {
	const span = 1 << 31
	c := next - next%span + int64(seq)
	switch {
	case c-next > span/2:
		c -= span
	case next-c > span/2:
		c += span
	}
	return max(c, int64(seq)%span)
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
// name, after checking that its sequence follows the producer's last, and
// returns an error code (0: none), a message and the first offset. queued,
// if set, is called once the append holds its place in the stream.
//
// The batch is stored under MessageVault's producer "kafka-<id>-<epoch>",
// with the 64-bit sequence of its last record (Kafka's wrap at 2^31
// unwrapped). Every batch but a producer's first is appended on condition
// that it follows the one before it in the stream
// (stream.AppendOptions.Follows): if that one failed, even while this one
// was queued behind it, this one is not stored either.
func (c *conn) appendIdempotent(ctx context.Context, v *vault.Vault, name string, b batches, queued func()) (int16, string, int64) {
	if b.sequence < 0 || b.count < 1 {
		return kerr.InvalidRecord.Code, fmt.Sprintf("sequence %d of %d records: out of range", b.sequence, b.count), -1
	}
	producer := fmt.Sprintf("kafka-%d-%d", b.producerID, b.epoch)
	fromStream := func() (int64, bool, error) {
		seq, ok, err := v.LastSequence(ctx, name, producer)
		return int64(seq) + 1, ok, err
	}
	next, known := c.s.seqs.get(v, name, producer)
	var err error
	if !known {
		if next, known, err = fromStream(); err != nil {
			return produceError(err, false), err.Error(), -1
		}
	}
	first := int64(b.sequence)
	if known {
		first = unwrap(next, b.sequence)
	}
	outOfOrder := func() bool {
		last := first + int64(b.count) - 1
		return first > next || first < next && last >= next
	}
	if known && outOfOrder() {
		// What this node remembered may be stale: ask the stream.
		c.s.seqs.forget(name, producer)
		if next, known, err = fromStream(); err != nil {
			return produceError(err, false), err.Error(), -1
		}
		if known {
			first = unwrap(next, b.sequence)
		}
		if known && outOfOrder() {
			return kerr.OutOfOrderSequenceNumber.Code, fmt.Sprintf("batch of sequences %d to %d; the producer's next is %d", first, first+int64(b.count)-1, next), -1
		}
	}
	if !known && first > 0 {
		return kerr.UnknownProducerID.Code, fmt.Sprintf("the stream knows no batch of producer %s before sequence %d: start a new epoch", producer, first), -1
	}
	last := first + int64(b.count) - 1
	opts := stream.AppendOptions{Producer: producer, Sequence: uint64(last)}
	if first > 0 {
		opts.Follows, opts.Previous = true, uint64(first-1)
	}
	resend := known && first < next
	wasQueued := false
	opts.Queued = func() {
		wasQueued = true
		if !resend {
			c.s.seqs.set(v, name, producer, last+1)
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
			inStream, ok, lerr := fromStream()
			switch {
			case lerr == nil && !ok:
				return kerr.UnknownProducerID.Code, err.Error(), -1
			case lerr == nil && inStream < first:
				// The batch before it is not stored (it failed while
				// this one waited behind it): not stored either, and to
				// be sent again after it.
				return kerr.NotEnoughReplicas.Code, err.Error(), -1
			}
			return kerr.OutOfOrderSequenceNumber.Code, err.Error(), -1
		case errors.Is(err, messagevault.ErrSequenceTooOld):
			// Whether it was stored cannot be told: never answer that
			// it was.
			return kerr.OutOfOrderSequenceNumber.Code, err.Error(), -1
		case errors.Is(err, messagevault.ErrTrimmed):
			// Stored, and trimmed away since.
			return kerr.DuplicateSequenceNumber.Code, err.Error(), -1
		}
		return produceError(err, wasQueued), err.Error(), -1
	}
	return 0, "", res.Offsets[0]
}

// produceError is the error code of a failed append. Kafka clients
// read in it whether the batch may have been stored, and retry where a
// retry can succeed:
//   - refused batches (INVALID_RECORD) were not stored, and are not
//     retried;
//   - a batch that never held a place in the stream (queued false), or
//     that the writer dropped before taking it (the bare context error
//     AppendChecked returns then), was not stored: NOT_LEADER_OR_FOLLOWER
//     when this node lost the lead, NOT_ENOUGH_REPLICAS otherwise (both
//     retriable, "not persisted");
//   - any other failure of a queued batch has an unknown outcome (its
//     group may land after all): REQUEST_TIMED_OUT, which clients take for
//     "maybe stored", so that an idempotent producer's retry is answered
//     as a duplicate if it was.
func produceError(err error, queued bool) int16 {
	switch {
	case errors.Is(err, messagevault.ErrInvalidMessage):
		return kerr.InvalidRecord.Code
	case !queued || err == context.Canceled || err == context.DeadlineExceeded:
		if errors.Is(err, messagevault.ErrNotLeader) || errors.Is(err, messagevault.ErrClosed) || errors.Is(err, messagevault.ErrFenced) {
			return kerr.NotLeaderForPartition.Code
		}
		return kerr.NotEnoughReplicas.Code
	}
	return kerr.RequestTimedOut.Code
}
