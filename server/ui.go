package server

import (
	"context"
	_ "embed"
	"net/http"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/messagevault/messagevault"
)

//go:embed ui/index.html
var uiPage []byte

// History defaults of the status page.
const (
	uiSamples = 300 // seconds of throughput history
	uiErrors  = 50  // recent errors kept
)

// status is what the status page shows; it is fed by the request path and
// sampled once a second.
type status struct {
	mu        sync.Mutex
	published int64            // messages acknowledged since the last sample
	perStream map[string]int64 // same, by stream
	latencies []time.Duration  // publish latencies since the last sample
	samples   []uiSample
	rates     map[string]float64
	errors    []uiError
	followers map[string]time.Time
}

type uiSample struct {
	Time              string
	MessagesPerSecond float64
	P99Ms             float64
}

type uiError struct {
	Time      string
	Status    int
	RequestID string
	Stream    string `json:",omitempty"` // "" for a request about no one stream
	Error     string
}

func newStatus() *status {
	return &status{perStream: map[string]int64{}, rates: map[string]float64{}, followers: map[string]time.Time{}}
}

func (st *status) published1(stream string, msgs int, took time.Duration) {
	st.mu.Lock()
	st.published += int64(msgs)
	st.perStream[stream] += int64(msgs)
	if len(st.latencies) < 100_000 {
		st.latencies = append(st.latencies, took)
	}
	st.mu.Unlock()
}

func (st *status) failed(status int, id, stream string, err error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.errors = append(st.errors, uiError{Time: time.Now().UTC().Format(time.RFC3339), Status: status, RequestID: id, Stream: stream, Error: err.Error()})
	if len(st.errors) > uiErrors {
		st.errors = st.errors[len(st.errors)-uiErrors:]
	}
}

func (st *status) follower(url string) {
	st.mu.Lock()
	st.followers[url] = time.Now()
	st.mu.Unlock()
}

// sample closes one second of history.
func (st *status) sample(d time.Duration) {
	st.mu.Lock()
	defer st.mu.Unlock()
	p99 := 0.0
	if n := len(st.latencies); n > 0 {
		slices.Sort(st.latencies)
		p99 = float64(st.latencies[min(n*99/100, n-1)].Microseconds()) / 1000
	}
	st.samples = append(st.samples, uiSample{Time: time.Now().UTC().Format(time.RFC3339), MessagesPerSecond: float64(st.published) / d.Seconds(), P99Ms: p99})
	if len(st.samples) > uiSamples {
		st.samples = st.samples[len(st.samples)-uiSamples:]
	}
	clear(st.rates)
	for name, n := range st.perStream {
		st.rates[name] = float64(n) / d.Seconds()
	}
	clear(st.perStream)
	st.published, st.latencies = 0, st.latencies[:0]
	for url, seen := range st.followers {
		if time.Since(seen) > 10*time.Minute {
			delete(st.followers, url)
		}
	}
}

// sampleLoop samples once a second until ctx ends.
func (st *status) sampleLoop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			st.sample(now.Sub(last))
			last = now
		}
	}
}

// handleUI serves the status page. It needs a read claim.
func (s *Server) handleUI(w http.ResponseWriter, r *http.Request) {
	p, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	if len(p.Claims) == 0 { // every claim gives read access to something
		s.writeError(w, r, forbidden(p.Name, "a read claim"))
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'")
	w.Write(uiPage)
}

type uiStream struct {
	Name              string
	Position          int64
	Start             int64
	MessagesPerSecond float64
}

// uiCursor is a consumer cursor and its lag, on the status page.
type uiCursor struct {
	Stream, Name  string
	Position, Lag int64
}

type uiNode struct {
	URL      string
	Role     string
	LastSeen string
}

// handleUIStatus serves the page's data: streams the user may read with
// positions and rates, the throughput history, nodes, recent errors.
func (s *Server) handleUIStatus(w http.ResponseWriter, r *http.Request) {
	p, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	if len(p.Claims) == 0 {
		s.writeError(w, r, forbidden(p.Name, "a read claim"))
		return
	}
	// A user sees its own streams, and the errors of requests about them;
	// the whole server's throughput, the cluster's nodes and errors about
	// no one stream are for users who may read every stream.
	all := p.CanReadAll()
	var streams []uiStream
	positions := map[string]int64{}
	if v := s.vault.Load(); v != nil {
		positions = v.Positions()
	}
	if infos, err := s.listStreams(r.Context()); err == nil {
		for _, in := range infos {
			if p.CanRead(in.Name) {
				pos := in.Position
				if c, ok := positions[in.Name]; ok {
					pos = c
				}
				streams = append(streams, uiStream{Name: in.Name, Position: pos, Start: in.Start})
			}
		}
	}
	cursors := []uiCursor{}
	if cs, ok := s.cfg.Storage.(messagevault.Cursors); ok {
		for _, st := range streams {
			list, err := cs.ListCursors(r.Context(), st.Name)
			if err != nil {
				continue
			}
			for _, c := range list {
				cursors = append(cursors, uiCursor{Stream: st.Name, Name: c.Name, Position: c.Position, Lag: max(st.Position-c.Position, 0)})
			}
		}
	}
	st := s.status
	st.mu.Lock()
	for i := range streams {
		streams[i].MessagesPerSecond = st.rates[streams[i].Name]
	}
	var samples []uiSample
	var errs []uiError
	for _, e := range st.errors {
		if e.Stream != "" && p.CanRead(e.Stream) || e.Stream == "" && all {
			errs = append(errs, e)
		}
	}
	var nodes []uiNode
	self, role, leader := s.cfg.Self, s.role(), s.leader()
	if all {
		samples = slices.Clone(st.samples)
		nodes = append(nodes, uiNode{URL: self + " (this node)", Role: role})
		if leader != "" && leader != self {
			nodes = append(nodes, uiNode{URL: leader, Role: "leader"})
		}
		for url, seen := range st.followers {
			if url != self {
				nodes = append(nodes, uiNode{URL: url, Role: "follower", LastSeen: time.Since(seen).Round(time.Second).String() + " ago"})
			}
		}
	} else {
		self, leader = "", ""
		nodes = append(nodes, uiNode{URL: "this node", Role: role})
	}
	st.mu.Unlock()
	if len(nodes) > 1 {
		sort.Slice(nodes[1:], func(i, j int) bool { return nodes[1+i].URL < nodes[1+j].URL })
	}
	if streams == nil {
		streams = []uiStream{}
	}
	if samples == nil {
		samples = []uiSample{}
	}
	if errs == nil {
		errs = []uiError{}
	}
	slices.Reverse(errs)
	writeJSON(w, http.StatusOK, map[string]any{
		"Node": self, "Role": role, "Leader": leader,
		"Streams": streams, "Cursors": cursors, "Samples": samples, "Nodes": nodes, "Errors": errs,
	})
}
