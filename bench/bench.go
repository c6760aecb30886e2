// Package bench is MessageVault's stress tester, after the original
// MessageVault's: T producer threads publish S steps (or
// for a duration) of batches of B messages whose values are 117..1137
// bytes by default, against a running server or an in-process one; it
// measures throughput and latency, then reads every stream back straight
// from storage and verifies every message.
package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/messagevault/messagevault/client"
)

// Config is one bench run.
type Config struct {
	// Client publishes and reads.
	Client *client.Client
	// Publish, if set, sends each batch instead of Client.Publish (for
	// example through the Kafka gateway: KafkaPublisher); Client still
	// reads back.
	Publish func(ctx context.Context, stream string, msgs []client.Message) error
	// Threads publishing at once. Default 4.
	Threads int
	// Steps per thread; Duration instead when Steps is 0.
	Steps    int
	Duration time.Duration
	// Batch is the number of messages per publish. Default 100.
	Batch int
	// MinSize and MaxSize bound the value sizes (uniform). Default
	// 117..1137, the original tester's range.
	MinSize, MaxSize int
	// Streams is how many streams the threads share (thread t writes
	// stream t % Streams). Default 1.
	Streams int
	// Prefix names the streams: <prefix>-<n>. Default "bench-<unix time>".
	Prefix string
	// Rate, if set, caps the messages per second over all threads (a
	// light load for latency).
	Rate int
	// SkipVerify skips the read-back.
	SkipVerify bool
}

// Report is what a run measured.
type Report struct {
	Threads, Batch, Streams int
	MinSize, MaxSize        int
	Messages, Batches       int64
	PayloadBytes            int64
	Seconds                 float64
	MessagesPerSecond       float64
	BatchesPerSecond        float64
	PayloadMBPerSecond      float64
	LatencyMs               Latency
	Errors                  int64
	// StorageRequestsPer1000Messages is the storage operations per 1,000
	// messages of the in-process server (--data, --azure): what storage
	// costs per message; 0 against a remote server.
	StorageRequestsPer1000Messages float64 `json:",omitempty"`
	// FsyncBaselineMs is the bare write + fdatasync latency measured
	// after the run on the same disk at the same pace (--fsync-baseline).
	FsyncBaselineMs       *Latency `json:",omitempty"`
	Verified              int64
	VerifySeconds         float64
	ReadMessagesPerSecond float64
	Timeline              []Sample
	StreamNames           []string
}

// Latency holds publish latency percentiles in milliseconds.
type Latency struct {
	P50, P90, P99, Max float64
}

// Sample is one second of the run.
type Sample struct {
	Second            int
	MessagesPerSecond float64
	P99Ms             float64
}

// header is at the start of every value: thread, step, index; the rest is
// filled from a generator seeded with them, so the reader can check every
// byte.
const header = 12

// noise is random bytes that values are cut from: cheap to produce at
// millions of messages a second, and still different for every message.
var noise = func() []byte {
	b := make([]byte, 1<<20+65536)
	r := rand.New(rand.NewPCG(1, 2))
	for j := 0; j+8 <= len(b); j += 8 {
		binary.LittleEndian.PutUint64(b[j:], r.Uint64())
	}
	return b
}()

// mix is splitmix64: a well-spread hash of a message's coordinates.
func mix(thread, step, i int) uint64 {
	z := uint64(thread)<<48 ^ uint64(step)<<20 ^ uint64(i) + 0x9e3779b97f4a7c15
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// appendValue appends the value of message (thread, step, i) of the given
// size to dst.
func appendValue(dst []byte, thread, step, i, size int) []byte {
	dst = binary.LittleEndian.AppendUint32(dst, uint32(thread))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(step))
	dst = binary.LittleEndian.AppendUint32(dst, uint32(i))
	off := int(mix(thread, step, i) % (1 << 20))
	return append(dst, noise[off:off+size-header]...)
}

func value(thread, step, i, size int) []byte {
	return appendValue(make([]byte, 0, size), thread, step, i, size)
}

func sizeOf(cfg Config, thread, step, i int) int {
	return cfg.MinSize + int(mix(i, step, thread)%uint64(cfg.MaxSize-cfg.MinSize+1))
}

func (cfg *Config) defaults() error {
	if cfg.Client == nil {
		return errors.New("bench: no client")
	}
	if cfg.Threads <= 0 {
		cfg.Threads = 4
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 100
	}
	if cfg.MinSize == 0 && cfg.MaxSize == 0 {
		cfg.MinSize, cfg.MaxSize = 117, 1137
	}
	if cfg.MinSize < header || cfg.MaxSize < cfg.MinSize || cfg.MaxSize > 65535 {
		return fmt.Errorf("bench: value sizes %d..%d: want %d..65535 with min <= max", cfg.MinSize, cfg.MaxSize, header)
	}
	if cfg.Steps <= 0 && cfg.Duration <= 0 {
		cfg.Steps = 100
	}
	if cfg.Streams <= 0 {
		cfg.Streams = 1
	}
	if cfg.Prefix == "" {
		cfg.Prefix = fmt.Sprintf("bench-%d", time.Now().Unix())
	}
	return nil
}

type sent struct {
	at      time.Duration // since start, at the answer
	latency time.Duration
	msgs    int
}

// Run runs the bench and returns its report. The error is set when a
// publish failed or the read-back found a message missing or wrong.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	rep := &Report{Threads: cfg.Threads, Batch: cfg.Batch, Streams: cfg.Streams, MinSize: cfg.MinSize, MaxSize: cfg.MaxSize}
	for s := 0; s < cfg.Streams; s++ {
		rep.StreamNames = append(rep.StreamNames, fmt.Sprintf("%s-%d", cfg.Prefix, s))
	}
	var mu sync.Mutex
	var samples []sent
	var firstErr error
	acked := make([]int, cfg.Threads) // steps acknowledged per thread, in order
	start := time.Now()
	deadline := time.Time{}
	if cfg.Steps <= 0 {
		deadline = start.Add(cfg.Duration)
	}
	// With a rate, each thread sends its batches on a fixed schedule, so
	// that slow answers do not lower the offered load.
	var every time.Duration
	if cfg.Rate > 0 {
		every = time.Second * time.Duration(cfg.Threads*cfg.Batch) / time.Duration(cfg.Rate)
	}
	var wg sync.WaitGroup
	for th := 0; th < cfg.Threads; th++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := rep.StreamNames[th%cfg.Streams]
			msgs := make([]client.Message, cfg.Batch)
			var keys, values []byte
			for step := 0; cfg.Steps <= 0 || step < cfg.Steps; step++ {
				if !deadline.IsZero() && time.Now().After(deadline) {
					return
				}
				if every > 0 {
					at := start.Add(time.Duration(step)*every + time.Duration(th)*every/time.Duration(cfg.Threads))
					select {
					case <-time.After(time.Until(at)):
					case <-ctx.Done():
						return
					}
				}
				var bytes int64
				keys, values = keys[:0], values[:0]
				for i := range msgs {
					k0, v0 := len(keys), len(values)
					keys = append(keys, "message"...)
					keys = strconv.AppendInt(keys, int64(step), 10)
					keys = append(keys, '-')
					keys = strconv.AppendInt(keys, int64(i), 10)
					values = appendValue(values, th, step, i, sizeOf(cfg, th, step, i))
					msgs[i] = client.Message{Key: keys[k0:len(keys):len(keys)], Value: values[v0:len(values):len(values)]}
					bytes += int64(len(values) - v0)
				}
				// msgs point into keys and values, which may have moved
				// while growing: point them again.
				k0, v0 := 0, 0
				for i := range msgs {
					kl, vl := len(msgs[i].Key), len(msgs[i].Value)
					msgs[i].Key, msgs[i].Value = keys[k0:k0+kl:k0+kl], values[v0:v0+vl:v0+vl]
					k0, v0 = k0+kl, v0+vl
				}
				t0 := time.Now()
				var err error
				if cfg.Publish != nil {
					err = cfg.Publish(ctx, name, msgs)
				} else {
					_, err = cfg.Client.Publish(ctx, name, msgs)
				}
				lat := time.Since(t0)
				mu.Lock()
				if err != nil {
					rep.Errors++
					if firstErr == nil {
						firstErr = fmt.Errorf("thread %d step %d: %w", th, step, err)
					}
					mu.Unlock()
					return
				}
				samples = append(samples, sent{at: time.Since(start), latency: lat, msgs: len(msgs)})
				rep.Messages += int64(len(msgs))
				rep.Batches++
				rep.PayloadBytes += bytes
				acked[th] = step + 1
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	rep.Seconds = elapsed.Seconds()
	rep.MessagesPerSecond = float64(rep.Messages) / rep.Seconds
	rep.BatchesPerSecond = float64(rep.Batches) / rep.Seconds
	rep.PayloadMBPerSecond = float64(rep.PayloadBytes) / 1e6 / rep.Seconds
	rep.LatencyMs, rep.Timeline = summarize(samples, elapsed)
	if firstErr != nil {
		return rep, firstErr
	}
	if cfg.SkipVerify {
		return rep, nil
	}
	return rep, verify(ctx, cfg, rep, acked)
}

func summarize(samples []sent, elapsed time.Duration) (Latency, []Sample) {
	if len(samples) == 0 {
		return Latency{}, nil
	}
	lats := make([]time.Duration, len(samples))
	for i, s := range samples {
		lats[i] = s.latency
	}
	slices.Sort(lats)
	pct := func(p float64) float64 {
		return float64(lats[min(int(p*float64(len(lats))), len(lats)-1)].Microseconds()) / 1000
	}
	l := Latency{P50: pct(0.50), P90: pct(0.90), P99: pct(0.99), Max: float64(lats[len(lats)-1].Microseconds()) / 1000}
	bySecond := map[int][]sent{}
	for _, s := range samples {
		sec := int(s.at / time.Second)
		bySecond[sec] = append(bySecond[sec], s)
	}
	var secs []int
	for k := range bySecond {
		secs = append(secs, k)
	}
	sort.Ints(secs)
	var tl []Sample
	for _, sec := range secs {
		ss := bySecond[sec]
		n := 0
		ls := make([]time.Duration, len(ss))
		for i, s := range ss {
			n += s.msgs
			ls[i] = s.latency
		}
		slices.Sort(ls)
		rate := float64(n)
		if part := elapsed - time.Duration(sec)*time.Second; part < time.Second {
			// The run ended inside this second: its rate is over the
			// part that ran, and a sliver too short to say anything is
			// left out rather than drawn as a drop (unless it is all
			// there is: a run shorter than a second).
			if part < time.Second/2 && len(secs) > 1 {
				continue
			}
			rate = float64(n) / part.Seconds()
		}
		tl = append(tl, Sample{Second: sec, MessagesPerSecond: rate, P99Ms: float64(ls[min(int(0.99*float64(len(ls))), len(ls)-1)].Microseconds()) / 1000})
	}
	return l, tl
}

// verify reads every stream back from storage (through the read grant)
// and checks that each thread's acknowledged steps are there, whole, once
// and in order.
func verify(ctx context.Context, cfg Config, rep *Report, acked []int) error {
	start := time.Now()
	next := make([][2]int, cfg.Threads) // per thread: next expected step, index
	for _, name := range rep.StreamNames {
		r, err := cfg.Client.Reader(ctx, name)
		if err != nil {
			return fmt.Errorf("verify %s: %w", name, err)
		}
		for m, err := range r.Messages(ctx, 0, -1) {
			if err != nil {
				r.Close()
				return fmt.Errorf("verify %s: %w", name, err)
			}
			if len(m.Value) < header {
				r.Close()
				return fmt.Errorf("verify %s: message at %d is too short to be the bench's", name, m.Offset)
			}
			th := int(binary.LittleEndian.Uint32(m.Value[0:]))
			step := int(binary.LittleEndian.Uint32(m.Value[4:]))
			i := int(binary.LittleEndian.Uint32(m.Value[8:]))
			if th >= cfg.Threads || [2]int{step, i} != next[th] {
				r.Close()
				return fmt.Errorf("verify %s: message at %d is thread %d step %d #%d; expected step %d #%d", name, m.Offset, th, step, i, next[th][0], next[th][1])
			}
			want := value(th, step, i, sizeOf(cfg, th, step, i))
			if string(m.Value) != string(want) || string(m.Key) != fmt.Sprintf("message%d-%d", step, i) {
				r.Close()
				return fmt.Errorf("verify %s: message at %d (thread %d step %d #%d) differs from what was sent", name, m.Offset, th, step, i)
			}
			rep.Verified++
			if i+1 == cfg.Batch {
				next[th] = [2]int{step + 1, 0}
			} else {
				next[th] = [2]int{step, i + 1}
			}
		}
		r.Close()
	}
	for th, n := range acked {
		if next[th][0] < n || next[th][1] != 0 {
			return fmt.Errorf("verify: thread %d had %d steps acknowledged, the streams hold %d and %d messages", th, n, next[th][0], next[th][1])
		}
	}
	rep.VerifySeconds = time.Since(start).Seconds()
	rep.ReadMessagesPerSecond = float64(rep.Verified) / rep.VerifySeconds
	return nil
}
