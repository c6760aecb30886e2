// Package history checks a stream against what its producers were told, in
// the spirit of Jepsen's checkers: producers record every publish attempt
// (acknowledged with offsets, failed for certain, or of unknown outcome),
// and afterwards the stored stream must explain that history. Every
// acknowledged message is there exactly once at its acknowledged offset,
// nothing failed for certain is there, nothing is there twice, and each
// producer's batches are in the order it sent them.
package history

import (
	"fmt"
	"sort"
	"sync"
)

// Outcome is what a producer knows of one publish attempt.
type Outcome int

// Outcomes of an attempt.
const (
	// Acked: the server answered 200 with offsets.
	Acked Outcome = iota
	// Failed: the server refused the batch (a 4xx): it was not stored.
	Failed
	// Unknown: no answer, or a 5xx: the batch may have been stored.
	Unknown
)

// Attempt is one publish of a batch.
type Attempt struct {
	Producer string
	Sequence uint64
	// Values are the batch's message values, each unique in the history.
	Values  []string
	Outcome Outcome
	// Offsets are the acknowledged offsets, one per value (Acked only).
	Offsets []int64
}

// History collects attempts; it is safe for concurrent use.
type History struct {
	mu       sync.Mutex
	attempts []Attempt
}

// Add records an attempt.
func (h *History) Add(a Attempt) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.attempts = append(h.attempts, a)
}

// Stored is one message as read back from the stream.
type Stored struct {
	Offset int64
	Value  string
}

// Report sums up a check.
type Report struct {
	Attempts, Acked, Unknown, Failed int // attempts by outcome
	AckedMessages                    int // distinct acknowledged messages
	Stored                           int // messages of the history found in the stream
}

func (r Report) String() string {
	return fmt.Sprintf("%d attempts (%d acknowledged, %d unknown, %d failed); %d messages acknowledged, %d stored; 0 lost, 0 duplicated",
		r.Attempts, r.Acked, r.Unknown, r.Failed, r.AckedMessages, r.Stored)
}

// Check tells whether stored, the stream read back in order, explains the
// history. Values in stored that no attempt sent are ignored (other
// writers' messages).
func (h *History) Check(stored []Stored) (Report, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var rep Report
	type batchKey struct {
		producer string
		seq      uint64
	}
	sent := map[string]batchKey{}
	for _, a := range h.attempts {
		rep.Attempts++
		switch a.Outcome {
		case Acked:
			rep.Acked++
		case Unknown:
			rep.Unknown++
		case Failed:
			rep.Failed++
		}
		for _, v := range a.Values {
			k := batchKey{a.Producer, a.Sequence}
			if prev, ok := sent[v]; ok && prev != k {
				return rep, fmt.Errorf("value %q was sent in two batches (%s/%d and %s/%d): values must be unique", v, prev.producer, prev.seq, k.producer, k.seq)
			}
			sent[v] = k
		}
	}
	at := map[string]int64{}
	var lastSeq = map[string]uint64{}
	for _, s := range stored {
		k, ours := sent[s.Value]
		if !ours {
			continue
		}
		if off, dup := at[s.Value]; dup {
			return rep, fmt.Errorf("%q is stored twice: at %d and at %d", s.Value, off, s.Offset)
		}
		at[s.Value] = s.Offset
		rep.Stored++
		if last, ok := lastSeq[k.producer]; ok && k.seq < last {
			return rep, fmt.Errorf("producer %s: batch %d stored after batch %d (at %d)", k.producer, k.seq, last, s.Offset)
		}
		lastSeq[k.producer] = k.seq
	}
	acked := map[string]bool{}
	maybe := map[batchKey]bool{} // batches with an acknowledged or unknown attempt
	for _, a := range h.attempts {
		if a.Outcome != Failed {
			maybe[batchKey{a.Producer, a.Sequence}] = true
		}
		if a.Outcome != Acked {
			continue
		}
		if len(a.Offsets) != len(a.Values) {
			return rep, fmt.Errorf("%s/%d: acknowledged with %d offsets for %d messages", a.Producer, a.Sequence, len(a.Offsets), len(a.Values))
		}
		for i, v := range a.Values {
			off, ok := at[v]
			if !ok {
				return rep, fmt.Errorf("acknowledged message %q (%s/%d) is lost", v, a.Producer, a.Sequence)
			}
			if off != a.Offsets[i] {
				return rep, fmt.Errorf("acknowledged message %q (%s/%d) is at %d, but was acknowledged at %d", v, a.Producer, a.Sequence, off, a.Offsets[i])
			}
			acked[v] = true
		}
	}
	rep.AckedMessages = len(acked)
	for v, k := range sent {
		if _, ok := at[v]; ok && !maybe[k] {
			return rep, fmt.Errorf("%q (%s/%d) is stored, but every attempt of its batch was refused", v, k.producer, k.seq)
		}
	}
	return rep, nil
}

// Pending returns, per producer, the batches that no attempt got
// acknowledged, sorted by sequence: what a producer still has to retry.
func (h *History) Pending() map[string][]uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	done := map[string]map[uint64]bool{}
	for _, a := range h.attempts {
		if a.Outcome == Acked {
			if done[a.Producer] == nil {
				done[a.Producer] = map[uint64]bool{}
			}
			done[a.Producer][a.Sequence] = true
		}
	}
	out := map[string][]uint64{}
	for _, a := range h.attempts {
		if !done[a.Producer][a.Sequence] {
			out[a.Producer] = append(out[a.Producer], a.Sequence)
		}
	}
	for p := range out {
		s := out[p]
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	}
	return out
}
