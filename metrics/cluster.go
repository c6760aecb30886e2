package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// NodeStats is what a cluster node counts (cluster.Node implements it).
type NodeStats interface {
	IsLeader() bool
	Elections() int
	Renewals() (ok, failed int)
	Losses() int
	Breaks() int
	LeaderChanges() int
}

// Positions lists the committed positions of the streams a node writes.
type Positions func() map[string]int64

// RegisterNode registers the leader-election metrics of n.
func RegisterNode(reg prometheus.Registerer, n NodeStats) {
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "messagevault_leader", Help: "1 while this node leads, 0 while it follows."},
			func() float64 {
				if n.IsLeader() {
					return 1
				}
				return 0
			}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "messagevault_lease_acquisitions_total", Help: "Times this node took the leader lock."},
			func() float64 { return float64(n.Elections()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "messagevault_lease_renewals_total", Help: "Successful renewals of the leader lock."},
			func() float64 { ok, _ := n.Renewals(); return float64(ok) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "messagevault_lease_renewal_failures_total", Help: "Failed renewals of the leader lock."},
			func() float64 { _, f := n.Renewals(); return float64(f) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "messagevault_lease_losses_total", Help: "Times this node stepped down because its lock lapsed."},
			func() float64 { return float64(n.Losses()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "messagevault_lease_breaks_total", Help: "Times this node broke the lease of a leader whose heartbeat had stopped."},
			func() float64 { return float64(n.Breaks()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "messagevault_leader_changes_total", Help: "Times the leader this node knows changed to another node."},
			func() float64 { return float64(n.LeaderChanges()) }),
	)
}

// positions is a collector of per-stream positions.
type positions struct {
	desc *prometheus.Desc
	f    Positions
}

// RegisterPositions registers messagevault_stream_position_bytes{stream}
// for the streams f lists.
func RegisterPositions(reg prometheus.Registerer, f Positions) {
	reg.MustRegister(&positions{
		desc: prometheus.NewDesc("messagevault_stream_position_bytes", "Committed position (length) of each stream this node writes.", []string{"stream"}, nil),
		f:    f,
	})
}

func (p *positions) Describe(ch chan<- *prometheus.Desc) { ch <- p.desc }

func (p *positions) Collect(ch chan<- prometheus.Metric) {
	for name, pos := range p.f() {
		ch <- prometheus.MustNewConstMetric(p.desc, prometheus.GaugeValue, float64(pos), name)
	}
}

// NewFailoverHistogram registers messagevault_failover_seconds and returns
// the function a cluster node calls with each failover's duration.
func NewFailoverHistogram(reg prometheus.Registerer) func(time.Duration) {
	h := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "messagevault_failover_seconds",
		Help:    "How long this node was without a known leader, from when the last one went silent or let go until a new one was known.",
		Buckets: []float64{0.25, 0.5, 1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30, 60},
	})
	reg.MustRegister(h)
	return func(d time.Duration) { h.Observe(d.Seconds()) }
}
