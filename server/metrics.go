package server

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the server's Prometheus metrics.
type metrics struct {
	requests      *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	appendedMsgs  prometheus.Counter
	appendedBytes prometheus.Counter
	errors        *prometheus.CounterVec
	forwards      *prometheus.CounterVec
	authFailures  *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, s *Server) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "messagevault_http_requests_total",
			Help: "HTTP requests answered, by route and status code.",
		}, []string{"route", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "messagevault_http_request_duration_seconds",
			Help:    "Time to answer HTTP requests, by route.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18),
		}, []string{"route"}),
		appendedMsgs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "messagevault_published_messages_total",
			Help: "Messages acknowledged to publishers.",
		}),
		appendedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "messagevault_published_body_bytes_total",
			Help: "Bytes of publish bodies acknowledged.",
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "messagevault_http_errors_total",
			Help: "Server-side failures (5xx answers), by type.",
		}, []string{"type"}),
	}
	inflight := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "messagevault_publish_inflight_bytes",
		Help: "Bytes of publish bodies held in memory now.",
	}, func() float64 { return float64(s.inflight.Load()) })
	m.forwards = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "messagevault_forwarded_writes_total",
		Help: "Publishes this follower forwarded to the leader, by the leader's status code.",
	}, []string{"code"})
	m.authFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "messagevault_auth_failures_total",
		Help: "Requests refused at authentication, by reason: wrong-password (or unknown user), throttled (inside a backoff after failures), busy (too many password checks waiting), no-credentials.",
	}, []string{"reason"})
	reg.MustRegister(m.requests, m.duration, m.appendedMsgs, m.appendedBytes, m.errors, m.forwards, m.authFailures, inflight)
	// Counters exist at zero from the start, so that rates and alerts see
	// the first failure as an increase.
	for _, typ := range []string{"storage", "corrupt", "unavailable", "timeout", "not-leader"} {
		m.errors.WithLabelValues(typ)
	}
	for _, reason := range []string{"wrong-password", "throttled", "busy", "no-credentials"} {
		m.authFailures.WithLabelValues(reason)
	}
	return m
}

func (m *metrics) observeRequest(route string, code int, d time.Duration) {
	m.requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
	m.duration.WithLabelValues(route).Observe(d.Seconds())
}

func (m *metrics) appended(msgs, bytes int) {
	m.appendedMsgs.Add(float64(msgs))
	m.appendedBytes.Add(float64(bytes))
}

func (m *metrics) recordError(err error) {
	_, typ := classify(err)
	m.errors.WithLabelValues(typ).Inc()
}

func (m *metrics) forwarded(code int) { m.forwards.WithLabelValues(strconv.Itoa(code)).Inc() }
