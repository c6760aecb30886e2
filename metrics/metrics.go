// Package metrics owns MessageVault's Prometheus metrics beyond the HTTP
// layer's own: appends and group commits (a stream.Observer), storage
// operations (a wrapper of any messagevault.Storage), per-stream
// positions, and leader election. Names follow Prometheus conventions:
// messagevault_..._total, _seconds, _bytes.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/messagevault/messagevault"
)

// Metrics are the collectors; register them once with a registry.
type Metrics struct {
	appendedMsgs  prometheus.Counter
	appendedBytes prometheus.Counter
	groupAppends  prometheus.Histogram
	groupMsgs     prometheus.Histogram
	commitSeconds prometheus.Histogram
	commitErrors  prometheus.Counter
	storageOps    *prometheus.HistogramVec
	storageErrors *prometheus.CounterVec
	fenced        prometheus.Counter
	duplicates    prometheus.Counter
	evicted       prometheus.Counter
	removed       prometheus.Counter

	// requests and messages count storage operations and messages made
	// durable, for RequestsPer1000.
	requests, messages atomic.Int64
}

// New makes the collectors and registers them with reg.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		appendedMsgs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "messagevault_appended_messages_total", Help: "Messages made durable (records appended).",
		}),
		appendedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "messagevault_appended_bytes_total", Help: "Record bytes made durable.",
		}),
		groupAppends: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "messagevault_group_commit_appends", Help: "Appends (publish requests) answered by one group commit.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11),
		}),
		groupMsgs: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "messagevault_group_commit_messages", Help: "Messages written by one group commit.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 10),
		}),
		commitSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "messagevault_group_commit_seconds", Help: "Time to make one group durable (pages, flush, position).",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
		}),
		commitErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "messagevault_group_commit_errors_total", Help: "Group commits that failed (nothing of them acknowledged).",
		}),
		storageOps: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "messagevault_storage_operation_seconds", Help: "Latency of storage operations, by operation.",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2, 18),
		}, []string{"op"}),
		storageErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "messagevault_storage_errors_total", Help: "Failed storage operations, by operation.",
		}, []string{"op"}),
		fenced: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "messagevault_etag_conflicts_total", Help: "Writes refused because another writer changed the stream (fencing).",
		}),
		duplicates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "messagevault_duplicate_batches_total", Help: "Publishes whose producer sequence was applied already: answered as the first time, not appended again.",
		}),
		evicted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "messagevault_producers_evicted_total", Help: "Producers forgotten by a stream's exactly-once table to make room for newer ones.",
		}),
		removed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "messagevault_removed_bytes_total", Help: "Bytes of whole segments removed from streams, by trims and by retention.",
		}),
	}
	reg.MustRegister(m.appendedMsgs, m.appendedBytes, m.groupAppends, m.groupMsgs, m.commitSeconds, m.commitErrors,
		m.storageOps, m.storageErrors, m.fenced, m.duplicates, m.evicted, m.removed,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "messagevault_storage_requests_per_1000_messages",
			Help: "Storage operations of every kind (writes, reads through the server, cursors, grants; on Azure, about one billed request each; retries not counted) per 1,000 messages made durable, since the start.",
		}, m.RequestsPer1000))
	// The operations whose failures alerts watch exist at zero from
	// the start, so that the first failure is an increase.
	for _, op := range []string{"read", "read_position", "write_pages", "flush", "commit_position", "grow", "open_writer", "open_reader"} {
		m.storageErrors.WithLabelValues(op)
	}
	return m
}

// RequestsPer1000 is the storage operations per 1,000 messages made
// durable since the start (0 before the first message).
func (m *Metrics) RequestsPer1000() float64 {
	msgs := m.messages.Load()
	if msgs == 0 {
		return 0
	}
	return 1000 * float64(m.requests.Load()) / float64(msgs)
}

// Committed implements stream.Observer.
func (m *Metrics) Committed(stream string, appends, messages, bytes int, took time.Duration) {
	m.messages.Add(int64(messages))
	m.appendedMsgs.Add(float64(messages))
	m.appendedBytes.Add(float64(bytes))
	m.groupAppends.Observe(float64(appends))
	m.groupMsgs.Observe(float64(messages))
	m.commitSeconds.Observe(took.Seconds())
}

// Failed implements stream.Observer.
func (m *Metrics) Failed(stream string, err error) { m.commitErrors.Inc() }

// Duplicate implements stream.Observer.
func (m *Metrics) Duplicate(stream string) { m.duplicates.Inc() }

// Evicted implements stream.Observer.
func (m *Metrics) Evicted(stream string, n int) { m.evicted.Add(float64(n)) }

// Trimmed implements stream.Observer.
func (m *Metrics) Trimmed(stream string, bytes int64) { m.removed.Add(float64(bytes)) }

// observe records one storage operation.
func (m *Metrics) observe(op string, start time.Time, err error) {
	m.requests.Add(1)
	m.storageOps.WithLabelValues(op).Observe(time.Since(start).Seconds())
	if err != nil && !errors.Is(err, context.Canceled) {
		m.storageErrors.WithLabelValues(op).Inc()
		if errors.Is(err, messagevault.ErrFenced) {
			m.fenced.Inc()
		}
	}
}

// Storage wraps s so that every operation is timed and counted.
func (m *Metrics) Storage(s messagevault.Storage) messagevault.Storage {
	if g, ok := s.(messagevault.Granter); ok {
		return &grantingStorage{storage{s, m}, g}
	}
	return &storage{s, m}
}

type storage struct {
	s messagevault.Storage
	m *Metrics
}

type grantingStorage struct {
	storage
	g messagevault.Granter
}

// CursorGrant grants through the storage, if it can.
func (s *grantingStorage) CursorGrant(ctx context.Context, stream, name string, ttl time.Duration) (string, error) {
	g, ok := s.g.(messagevault.CursorGranter)
	if !ok {
		return "", fmt.Errorf("cursor grant for %q: %w", stream, messagevault.ErrNoCursorGrants)
	}
	start := time.Now()
	u, err := g.CursorGrant(ctx, stream, name, ttl)
	s.m.observe("cursor_grant", start, err)
	return u, err
}

// RevokeGrants revokes through the storage, if it can.
func (s *grantingStorage) RevokeGrants(ctx context.Context, stream string) error {
	r, ok := s.g.(messagevault.Revoker)
	if !ok {
		return fmt.Errorf("revoke the grants of %q: %w", stream, messagevault.ErrNotRevocable)
	}
	start := time.Now()
	err := r.RevokeGrants(ctx, stream)
	s.m.observe("revoke_grants", start, err)
	return err
}

func (s *grantingStorage) ReadGrant(ctx context.Context, stream string, ttl time.Duration) (string, error) {
	start := time.Now()
	u, err := s.g.ReadGrant(ctx, stream, ttl)
	s.m.observe("grant", start, err)
	return u, err
}

// DeleteStream deletes through the storage, if it can.
func (s *storage) DeleteStream(ctx context.Context, stream string) error {
	d, ok := s.s.(messagevault.Deleter)
	if !ok {
		return fmt.Errorf("delete %q: %w", stream, messagevault.ErrNotDeletable)
	}
	start := time.Now()
	err := d.DeleteStream(ctx, stream)
	s.m.observe("delete_stream", start, err)
	return err
}

func (s *storage) OpenWriter(ctx context.Context, stream string) (messagevault.PageWriter, error) {
	start := time.Now()
	w, err := s.s.OpenWriter(ctx, stream)
	s.m.observe("open_writer", start, err)
	if err != nil {
		return nil, err
	}
	pw := &pageWriter{pageReader{w, s.m}, w}
	if c, ok := w.(messagevault.CommitStarter); ok {
		return &committingPageWriter{pw, c}, nil
	}
	return pw, nil
}

func (s *storage) OpenReader(ctx context.Context, stream string) (messagevault.PageReader, error) {
	start := time.Now()
	r, err := s.s.OpenReader(ctx, stream)
	if err != nil && !errors.Is(err, messagevault.ErrStreamNotFound) {
		s.m.observe("open_reader", start, err)
	}
	if err != nil {
		return nil, err
	}
	return &pageReader{r, s.m}, nil
}

func (s *storage) Streams(ctx context.Context) ([]string, error) {
	start := time.Now()
	n, err := s.s.Streams(ctx)
	s.m.observe("list", start, err)
	return n, err
}

func (s *storage) Close() error { return s.s.Close() }

type pageReader struct {
	r messagevault.PageReader
	m *Metrics
}

func (r *pageReader) Position(ctx context.Context) (int64, error) {
	start := time.Now()
	p, err := r.r.Position(ctx)
	r.m.observe("read_position", start, err)
	return p, err
}

func (r *pageReader) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	start := time.Now()
	n, err := r.r.ReadAt(ctx, p, off)
	e := err
	if n == len(p) {
		e = nil
	}
	r.m.observe("read", start, e)
	return n, err
}

func (r *pageReader) Extent(ctx context.Context) (messagevault.Extent, error) {
	start := time.Now()
	e, err := r.r.Extent(ctx)
	r.m.observe("read_position", start, err)
	return e, err
}

func (r *pageReader) Segments(ctx context.Context) ([]int64, error) {
	start := time.Now()
	s, err := r.r.Segments(ctx)
	r.m.observe("list_segments", start, err)
	return s, err
}

func (r *pageReader) ReadIndex(ctx context.Context, p []byte, off int64) (int, error) {
	start := time.Now()
	n, err := r.r.ReadIndex(ctx, p, off)
	e := err
	if n == len(p) || errors.Is(err, io.EOF) {
		e = nil
	}
	r.m.observe("read_index", start, e)
	return n, err
}

func (r *pageReader) Close() error { return r.r.Close() }

func (w *pageWriter) WriteIndex(ctx context.Context, off int64, p []byte) error {
	start := time.Now()
	err := w.w.WriteIndex(ctx, off, p)
	w.m.observe("write_index", start, err)
	return err
}

// pageWriter times a PageWriter's calls; its reads are timed as a
// pageReader's.
type pageWriter struct {
	pageReader
	w messagevault.PageWriter
}

func (w *pageWriter) Roll(ctx context.Context, at int64) error {
	start := time.Now()
	err := w.w.Roll(ctx, at)
	w.m.observe("roll", start, err)
	return err
}

func (w *pageWriter) Trim(ctx context.Context, at int64) error {
	start := time.Now()
	err := w.w.Trim(ctx, at)
	w.m.observe("trim", start, err)
	return err
}

func (w *pageWriter) Size(ctx context.Context) (int64, error) { return w.w.Size(ctx) }

func (w *pageWriter) Grow(ctx context.Context, size int64) error {
	start := time.Now()
	err := w.w.Grow(ctx, size)
	w.m.observe("grow", start, err)
	return err
}

func (w *pageWriter) WritePages(ctx context.Context, off int64, p []byte) error {
	start := time.Now()
	err := w.w.WritePages(ctx, off, p)
	w.m.observe("write_pages", start, err)
	return err
}

func (w *pageWriter) Flush(ctx context.Context) error {
	start := time.Now()
	err := w.w.Flush(ctx)
	w.m.observe("flush", start, err)
	w.free("flush", 0)
	return err
}

// free uncounts an operation that the storage says sent no request (it
// is still timed): a storage's writer may implement
// RequestFree(op string, size int) bool.
func (w *pageWriter) free(op string, size int) {
	if f, ok := w.w.(interface{ RequestFree(string, int) bool }); ok && f.RequestFree(op, size) {
		w.m.requests.Add(-1)
	}
}

func (w *pageWriter) CommitPosition(ctx context.Context, pos int64) error {
	start := time.Now()
	err := w.w.CommitPosition(ctx, pos)
	w.m.observe("commit_position", start, err)
	return err
}

// committingPageWriter is a pageWriter of a storage writer that can
// commit while it writes pages (messagevault.CommitStarter), and keeps
// that.
type committingPageWriter struct {
	*pageWriter
	c messagevault.CommitStarter
}

// StartCommit starts the storage's commit and times it until done.
func (w *committingPageWriter) StartCommit(ctx context.Context, pos int64, done func(error)) {
	start := time.Now()
	w.c.StartCommit(ctx, pos, func(err error) {
		w.m.observe("commit_position", start, err)
		done(err)
	})
}

func (w *pageWriter) ReadState(ctx context.Context, slot int, p []byte, off int64) (int, error) {
	start := time.Now()
	n, err := w.w.ReadState(ctx, slot, p, off)
	if errors.Is(err, io.EOF) {
		w.m.observe("read_state", start, nil)
	} else {
		w.m.observe("read_state", start, err)
	}
	return n, err
}

func (w *pageWriter) WriteState(ctx context.Context, slot int, p []byte) error {
	start := time.Now()
	err := w.w.WriteState(ctx, slot, p)
	w.m.observe("write_state", start, err)
	w.free("write_state", len(p))
	return err
}

func (w *pageWriter) Refence(ctx context.Context) error {
	start := time.Now()
	err := w.w.Refence(ctx)
	w.m.observe("refence", start, err)
	return err
}

func (w *pageWriter) Close() error { return w.w.Close() }

// BuildInfo returns the gauge messagevault_build_info, always 1, whose
// labels say which build is running: version, revision and goversion.
func BuildInfo(version, revision, goVersion string) prometheus.Collector {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "messagevault_build_info", Help: "Always 1; its labels name the running build (module version, VCS revision, Go toolchain).",
	}, []string{"version", "revision", "goversion"})
	g.WithLabelValues(version, revision, goVersion).Set(1)
	return g
}
