package e2e_test

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/internal/history"
	"github.com/messagevault/messagevault/internal/mvtest"
)

// clusterLoad publishes batches of 10 messages from several producers, each
// batch to a random live node, with producer sequences: a batch is resent
// with the same sequence until it is acknowledged, as the client library
// does. Every attempt goes into a history, so that the stream can be
// checked for lost and duplicated messages.
type clusterLoad struct {
	t      *testing.T
	stream string

	mu    sync.Mutex
	nodes []*mvtest.Server
	hist  history.History
	acked int
	acks  []ackedBatch

	stop chan struct{}
	wg   sync.WaitGroup
}

// ackedBatch is when an acknowledged publish was sent and answered.
type ackedBatch struct{ sent, answered time.Time }

// startLoad starts producers publishing to stream through nodes; each
// attempt gives up after timeout (an unknown outcome, resent).
func startLoad(t *testing.T, stream string, nodes []*mvtest.Server, producers int, timeout time.Duration) *clusterLoad {
	l := &clusterLoad{t: t, stream: stream, nodes: slices.Clone(nodes), stop: make(chan struct{})}
	client := &http.Client{Timeout: timeout}
	for p := 0; p < producers; p++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.produce(client, p)
		}()
	}
	return l
}

func (l *clusterLoad) produce(client *http.Client, p int) {
	rnd := rand.New(rand.NewPCG(uint64(p), 9))
	producer := fmt.Sprintf("%s-p%d", l.stream, p)
	for b := 1; ; {
		select {
		case <-l.stop:
			return
		default:
		}
		live := l.live()
		n := live[rnd.IntN(len(live))]
		var msgs []messagevault.Message
		var values []string
		for j := 0; j < 10; j++ {
			v := fmt.Sprintf("p%d-%06d-%d", p, b, j)
			msgs = append(msgs, msg(fmt.Sprintf("p%d", p), v))
			values = append(values, v)
		}
		req := n.Request("POST", "/streams/"+l.stream, admin, adminPass, transfer(l.t, msgs), "")
		req.Header.Set("MessageVault-Producer", producer)
		req.Header.Set("MessageVault-Sequence", strconv.Itoa(b))
		a := history.Attempt{Producer: producer, Sequence: uint64(b), Values: values, Outcome: history.Unknown}
		sent := time.Now()
		resp, err := client.Do(req)
		var body []byte
		if err == nil {
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		if err == nil && resp.StatusCode == http.StatusOK {
			var ans publishAnswer
			if err := json.Unmarshal(body, &ans); err != nil {
				l.t.Errorf("publish answer %q: %v", body, err)
				return
			}
			a.Outcome, a.Offsets = history.Acked, ans.Offsets
			l.hist.Add(a)
			l.mu.Lock()
			l.acked += len(msgs)
			l.acks = append(l.acks, ackedBatch{sent, time.Now()})
			l.mu.Unlock()
			b++ // the next batch; on any failure the same one again
			continue
		}
		if err == nil && resp.StatusCode >= 400 && resp.StatusCode < 500 && resp.StatusCode != http.StatusTooManyRequests {
			a.Outcome = history.Failed
			l.t.Errorf("%s/%d refused: %d %s", producer, b, resp.StatusCode, body)
		}
		l.hist.Add(a)
		time.Sleep(100 * time.Millisecond)
	}
}

// live returns the nodes the load publishes to.
func (l *clusterLoad) live() []*mvtest.Server {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.nodes)
}

// remove stops publishing to n.
func (l *clusterLoad) remove(n *mvtest.Server) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.nodes = slices.DeleteFunc(l.nodes, func(x *mvtest.Server) bool { return x == n })
}

// add publishes to n too.
func (l *clusterLoad) add(n *mvtest.Server) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.nodes = append(l.nodes, n)
}

// ackedMessages returns how many messages have been acknowledged.
func (l *clusterLoad) ackedMessages() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.acked
}

// progress waits until n more messages are acknowledged.
func (l *clusterLoad) progress(n int, timeout time.Duration, what string) {
	l.t.Helper()
	want := l.ackedMessages() + n
	deadline := time.Now().Add(timeout)
	for l.ackedMessages() < want {
		if time.Now().After(deadline) {
			l.t.Fatalf("%s: fewer than %d messages acknowledged in %v", what, n, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// resumed waits until a publish sent after t0 is acknowledged and returns
// when it was.
func (l *clusterLoad) resumed(t0 time.Time, timeout time.Duration) time.Time {
	l.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		l.mu.Lock()
		for _, a := range l.acks {
			if a.sent.After(t0) {
				l.mu.Unlock()
				return a.answered
			}
		}
		l.mu.Unlock()
		if time.Now().After(deadline) {
			l.t.Fatalf("no publish sent after %v was acknowledged within %v", t0.Format(time.StampMilli), timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// finish stops the producers, reads the stream through reader and checks
// it against the history: every acknowledged message stored exactly once,
// nothing stored that was never sent.
func (l *clusterLoad) finish(reader *mvtest.Server) history.Report {
	l.t.Helper()
	close(l.stop)
	l.wg.Wait()
	recs := readGrant(l.t, reader, l.stream)
	stored := make([]history.Stored, len(recs))
	for i, r := range recs {
		stored[i] = history.Stored{Offset: r.Offset, Value: string(r.Value)}
	}
	rep, err := l.hist.Check(stored)
	if err != nil {
		l.t.Fatal(err)
	}
	return rep
}

// leaderSampler asks every live node's /readyz every 250 ms which role it
// has. At most one may say "leader" at any sample; exactly one must,
// except in a sample that overlaps a transition the test declares (a
// leader was killed or cut off, and no node leads until another takes
// over).
type leaderSampler struct {
	load *clusterLoad

	mu          sync.Mutex
	samples     []leaderSample
	transitions [][2]time.Time // closed transitions
	open        time.Time      // start of the transition under way; zero if none

	stop chan struct{}
	done chan struct{}
}

// leaderSample is one round of /readyz: when it started and ended, and
// which nodes said they lead.
type leaderSample struct {
	from, to time.Time
	leaders  []string
}

// sampleLeaders starts sampling the load's live nodes.
func sampleLeaders(l *clusterLoad) *leaderSampler {
	s := &leaderSampler{load: l, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		// A frozen (SIGSTOP) process answers once thawed: 2 s covers a
		// pause of under a second.
		hc := &http.Client{Timeout: 2 * time.Second}
		for {
			select {
			case <-s.stop:
				return
			case <-time.After(250 * time.Millisecond):
			}
			smp := leaderSample{from: time.Now()}
			for _, n := range l.live() {
				resp, err := hc.Get(n.URL + "/readyz")
				if err != nil {
					continue
				}
				var r struct{ Role string }
				json.NewDecoder(resp.Body).Decode(&r)
				resp.Body.Close()
				if r.Role == "leader" {
					smp.leaders = append(smp.leaders, n.URL)
				}
			}
			smp.to = time.Now()
			s.mu.Lock()
			s.samples = append(s.samples, smp)
			s.mu.Unlock()
		}
	}()
	return s
}

// beginTransition declares that from now no node may lead for a while.
func (s *leaderSampler) beginTransition() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.open = time.Now()
}

// endTransition declares that a leader is known to every live node again.
func (s *leaderSampler) endTransition() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.transitions = append(s.transitions, [2]time.Time{s.open, time.Now()})
	s.open = time.Time{}
}

// check stops sampling and fails the test on a sample with two leaders,
// or with none outside the transitions. It returns how many samples were
// taken, and how many of them fell in a transition.
func (s *leaderSampler) check() (samples, inTransition int) {
	s.load.t.Helper()
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.open.IsZero() {
		s.transitions = append(s.transitions, [2]time.Time{s.open, time.Now()})
	}
	for _, smp := range s.samples {
		excused := false
		for _, tr := range s.transitions {
			if smp.to.After(tr[0]) && smp.from.Before(tr[1]) {
				excused = true
			}
		}
		if excused {
			inTransition++
		}
		switch {
		case len(smp.leaders) > 1:
			s.load.t.Errorf("sample at %s: %d nodes say they lead: %v", smp.from.Format(time.StampMilli), len(smp.leaders), smp.leaders)
		case len(smp.leaders) == 0 && !excused:
			s.load.t.Errorf("sample at %s: no node leads, outside a failover", smp.from.Format(time.StampMilli))
		}
	}
	return len(s.samples), inTransition
}
