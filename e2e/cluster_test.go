package e2e_test

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/internal/azurite"
	"github.com/messagevault/messagevault/internal/history"
	"github.com/messagevault/messagevault/internal/mvtest"
)

// readyz returns a node's role and the leader it knows ("" when it does
// not answer).
func readyz(s *mvtest.Server) (role, leader string) {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(s.URL + "/readyz")
	if err != nil {
		return "", ""
	}
	defer resp.Body.Close()
	var r struct{ Role, Leader string }
	json.NewDecoder(resp.Body).Decode(&r)
	return r.Role, r.Leader
}

// waitLeader waits until exactly one of nodes says it leads and every
// other live node knows it, and returns it.
func waitLeader(t *testing.T, nodes []*mvtest.Server, timeout time.Duration) *mvtest.Server {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		var leader *mvtest.Server
		leaders, agree := 0, true
		for _, n := range nodes {
			if n == nil || n.Exited() {
				continue
			}
			if role, _ := readyz(n); role == "leader" {
				leaders++
				leader = n
			}
		}
		if leaders == 1 {
			for _, n := range nodes {
				if n == nil || n.Exited() || n == leader {
					continue
				}
				if _, l := readyz(n); l != leader.URL {
					agree = false
				}
			}
			if agree {
				return leader
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no single leader known to all nodes after %v", timeout)
	return nil
}

func TestLocalStandbyTakesOver(t *testing.T) {
	dir := t.TempDir()
	a := mvtest.Start(t, dir, nil)
	b := mvtest.Start(t, dir, nil) // the same directory: a standby, not a failure
	if l := waitLeader(t, []*mvtest.Server{a, b}, 30*time.Second); l != a {
		t.Fatalf("the second server leads")
	}
	// Writes through the standby are forwarded to the leader.
	first := publish(t, b, "standby", []messagevault.Message{msg("k", "via the standby")})
	if got := values(readDirect(t, a, "standby")); fmt.Sprint(got) != "[k=via the standby]" {
		t.Fatalf("leader holds %v", got)
	}
	// The leader exits: the standby takes the lock and continues the log.
	start := time.Now()
	a.Signal(syscall.SIGTERM)
	if code := a.Wait(30 * time.Second); code != 0 {
		t.Fatalf("leader exit %d", code)
	}
	waitLeader(t, []*mvtest.Server{b}, 10*time.Second)
	took := time.Since(start)
	second := publish(t, b, "standby", []messagevault.Message{msg("k", "after the handover")})
	if second.Offsets[0] != first.Position {
		t.Fatalf("after the handover the log continues at %d, want %d", second.Offsets[0], first.Position)
	}
	t.Logf("local handover took %v", took)
}

// cluster starts n nodes on one Azurite.
func cluster(t *testing.T, az *azurite.Azurite, n int) []*mvtest.Server {
	nodes := make([]*mvtest.Server, n)
	for i := range nodes {
		nodes[i] = startAzure(t, az)
	}
	return nodes
}

func TestAzureClusterForwardsAndHandsOver(t *testing.T) {
	az := azurite.Start(t)
	nodes := cluster(t, az, 3)
	leader := waitLeader(t, nodes, 40*time.Second)
	// Publishing through any node works; followers forward.
	for i, n := range nodes {
		publish(t, n, "shared", []messagevault.Message{msg("k", fmt.Sprintf("via node %d", i))})
	}
	if got := values(readGrant(t, leader, "shared")); len(got) != 3 {
		t.Fatalf("stream holds %v", got)
	}
	// Every node answers an exactly-once publish the same: a follower
	// passes the MessageVault-* headers both ways.
	var follower *mvtest.Server
	for _, n := range nodes {
		if n != leader {
			follower = n
		}
	}
	seqBody := transfer(t, []messagevault.Message{msg("k", "sequenced")})
	for i, want := range []string{"", "true"} {
		status, out, h := publishWith(t, follower, "/streams/shared", seqBody, "application/octet-stream", seqHeaders("fwd", 1))
		if status != 200 || h.Get("MessageVault-Duplicate") != want {
			t.Fatalf("sequenced publish %d through a follower: %d %s, duplicate header %q", i, status, out, h.Get("MessageVault-Duplicate"))
		}
	}
	if _, out, _ := do(t, follower.Request("GET", "/streams/shared/producers/fwd", admin, adminPass, nil, "")); !strings.Contains(string(out), `"Sequence":1`) {
		t.Fatalf("GET producers through a follower: %s", out)
	}
	status, out, _ := publishWith(t, follower, "/streams/shared", seqBody, "application/octet-stream", map[string]string{"MessageVault-Expected-Position": "1"})
	if status != http.StatusPreconditionFailed || !strings.Contains(string(out), `"Position":`) {
		t.Fatalf("conditional publish through a follower: %d %s", status, out)
	}
	_, body, _ := do(t, nodes[0].Request("GET", "/streams", admin, adminPass, nil, ""))
	if !strings.Contains(string(body), `"Leader":"`+leader.URL+`"`) {
		t.Fatalf("listing does not name the leader: %s", body)
	}
	// Graceful handover: SIGTERM releases the lease at once.
	start := time.Now()
	leader.Signal(syscall.SIGTERM)
	var rest []*mvtest.Server
	for _, n := range nodes {
		if n != leader {
			rest = append(rest, n)
		}
	}
	next := waitLeader(t, rest, 30*time.Second)
	took := time.Since(start)
	if code := leader.Wait(30 * time.Second); code != 0 {
		t.Fatalf("old leader exit %d", code)
	}
	publish(t, rest[0], "shared", []messagevault.Message{msg("k", "after the handover")})
	if got := values(readGrant(t, next, "shared")); len(got) != 5 {
		t.Fatalf("after the handover the stream holds %v", got)
	}
	t.Logf("graceful handover took %v", took)
	if took > 10*time.Second {
		t.Fatalf("graceful handover took %v; it should take about 2 s", took)
	}
}

// TestAzureFailoverUnderLoad pauses the leader for 0.8 s (it keeps
// leading), then kills the leader with SIGKILL ten times under a continuous
// load from four producers, each publishing through
// random nodes with producer sequences and resending a batch until it is
// acknowledged. The stream must explain the producers' history
// (internal/history): every acknowledged message exactly once at its
// acknowledged offset, nothing twice, each producer in order.
func TestAzureFailoverUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("failover loop: slow")
	}
	az := azurite.Start(t)
	nodes := cluster(t, az, 3)
	waitLeader(t, nodes, 40*time.Second)

	var mu sync.Mutex
	live := append([]*mvtest.Server(nil), nodes...)
	var hist history.History
	acked := 0
	lastAck := time.Now()
	var killedAt, resumedAt time.Time // resumedAt: the first 200 for a request sent after killedAt
	var gaps []time.Duration
	stop := make(chan struct{})
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 30 * time.Second}
	for p := 0; p < 4; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(p), 9))
			producer := fmt.Sprintf("fo-p%d", p)
			for b := 1; ; {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				n := live[rnd.IntN(len(live))]
				mu.Unlock()
				var msgs []messagevault.Message
				var values []string
				for j := 0; j < 10; j++ {
					v := fmt.Sprintf("p%d-%06d-%d", p, b, j)
					msgs = append(msgs, msg(fmt.Sprintf("p%d", p), v))
					values = append(values, v)
				}
				req := n.Request("POST", "/streams/failover", admin, adminPass, transfer(t, msgs), "")
				req.Header.Set("MessageVault-Producer", producer)
				req.Header.Set("MessageVault-Sequence", strconv.Itoa(b))
				a := history.Attempt{Producer: producer, Sequence: uint64(b), Values: values, Outcome: history.Unknown}
				sentAt := time.Now()
				resp, err := client.Do(req)
				var body []byte
				if err == nil {
					body, _ = io.ReadAll(resp.Body)
					resp.Body.Close()
				}
				if err == nil && resp.StatusCode == 200 {
					var ans publishAnswer
					if err := json.Unmarshal(body, &ans); err != nil {
						t.Errorf("publish answer %q: %v", body, err)
						return
					}
					a.Outcome, a.Offsets = history.Acked, ans.Offsets
					hist.Add(a)
					mu.Lock()
					acked += len(msgs)
					lastAck = time.Now()
					if !killedAt.IsZero() && sentAt.After(killedAt) && resumedAt.IsZero() {
						resumedAt = lastAck
					}
					mu.Unlock()
					b++ // the next batch; on any failure the same one again
				} else {
					if err == nil && resp.StatusCode >= 400 && resp.StatusCode < 500 && resp.StatusCode != 429 {
						a.Outcome = history.Failed
						t.Errorf("%s/%d refused: %d %s", producer, b, resp.StatusCode, body)
					}
					hist.Add(a)
					time.Sleep(100 * time.Millisecond)
				}
			}
		}()
	}
	ackedCount := func() int { mu.Lock(); defer mu.Unlock(); return acked }
	// A sampler asks every live node's /readyz every 250 ms: never may two
	// say "leader" at once.
	var twoLeaders, samples atomic.Int32
	sampleStop := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Add(1)
	go func() {
		defer sampler.Done()
		hc := &http.Client{Timeout: 500 * time.Millisecond}
		for {
			select {
			case <-sampleStop:
				return
			case <-time.After(250 * time.Millisecond):
			}
			mu.Lock()
			nodes := append([]*mvtest.Server(nil), live...)
			mu.Unlock()
			leaders := 0
			for _, n := range nodes {
				resp, err := hc.Get(n.URL + "/readyz")
				if err != nil {
					continue
				}
				var r struct{ Role string }
				json.NewDecoder(resp.Body).Decode(&r)
				resp.Body.Close()
				if r.Role == "leader" {
					leaders++
				}
			}
			samples.Add(1)
			if leaders > 1 {
				twoLeaders.Add(1)
			}
		}
	}()
	// A leader paused for under a second (a long GC pause) keeps leading.
	first := waitLeader(t, live, 60*time.Second)
	first.Signal(syscall.SIGSTOP)
	time.Sleep(800 * time.Millisecond)
	first.Signal(syscall.SIGCONT)
	time.Sleep(3 * time.Second)
	if l := waitLeader(t, live, 30*time.Second); l != first {
		t.Fatal("a leader paused for 0.8 s lost its leadership")
	}
	const kills = 10
	for round := 0; round < kills; round++ {
		before := ackedCount()
		deadline := time.Now().Add(60 * time.Second)
		for ackedCount() < before+200 {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: the load made no progress", round)
			}
			time.Sleep(20 * time.Millisecond)
		}
		leader := waitLeader(t, live, 60*time.Second)
		killed := time.Now()
		mu.Lock()
		killedAt, resumedAt = killed, time.Time{}
		mu.Unlock()
		leader.Signal(syscall.SIGKILL)
		leader.Wait(10 * time.Second)
		mu.Lock()
		for i, n := range live {
			if n == leader {
				live = append(live[:i], live[i+1:]...)
				break
			}
		}
		mu.Unlock()
		// The time without a leader: until a publish sent after the kill is
		// acknowledged through a survivor.
		deadline = time.Now().Add(60 * time.Second)
		for {
			mu.Lock()
			done := !resumedAt.IsZero()
			mu.Unlock()
			if done {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: no publish acknowledged 60 s after the leader died", round)
			}
			time.Sleep(20 * time.Millisecond)
		}
		mu.Lock()
		gap := resumedAt.Sub(killed)
		gaps = append(gaps, gap)
		mu.Unlock()
		t.Logf("round %d: leader killed; writes resumed after %v", round, gap.Round(time.Millisecond))
		// A fresh node joins as a follower, so three keep running.
		fresh := startAzure(t, az)
		mu.Lock()
		live = append(live, fresh)
		mu.Unlock()
	}
	close(stop)
	wg.Wait()
	close(sampleStop)
	sampler.Wait()
	if n := twoLeaders.Load(); n > 0 {
		t.Fatalf("%d of %d readiness samples found two leaders", n, samples.Load())
	}

	recs := readGrant(t, waitLeader(t, live, 60*time.Second), "failover")
	stored := make([]history.Stored, len(recs))
	for i, r := range recs {
		stored[i] = history.Stored{Offset: r.Offset, Value: string(r.Value)}
	}
	rep, err := hist.Check(stored)
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(gaps, func(i, j int) bool { return gaps[i] < gaps[j] })
	median, worst := gaps[len(gaps)/2], gaps[len(gaps)-1]
	t.Logf("FAILOVER: %d kills; %v; time without a leader: median %v, worst %v; %d readiness samples, never two leaders",
		len(gaps), rep, median.Round(time.Millisecond), worst.Round(time.Millisecond), samples.Load())
	if median > 5*time.Second || worst > 8*time.Second {
		t.Fatalf("failover median %v, worst %v; the goal is 5 s and 8 s", median, worst)
	}
}

// TestAzureZombieLeader freezes the leader (SIGSTOP) for 30 s, while another
// node takes over and writes, then thaws it: the writes it was holding fail,
// none of them is stored, and it rejoins as a follower.
func TestAzureZombieLeader(t *testing.T) {
	az := azurite.Start(t)
	nodes := cluster(t, az, 3)
	zombie := waitLeader(t, nodes, 40*time.Second)
	publish(t, zombie, "zombie", []messagevault.Message{msg("k", "before")})
	zombie.Signal(syscall.SIGSTOP)
	stopped := time.Now()
	// Publishes sent to the frozen leader wait in its socket.
	type result struct {
		value  string
		status int
	}
	held := make(chan result, 3)
	for i := 0; i < 3; i++ {
		go func() {
			v := fmt.Sprintf("held-%d", i)
			c := &http.Client{Timeout: 90 * time.Second}
			resp, err := c.Do(zombie.Request("POST", "/streams/zombie", admin, adminPass, transfer(t, []messagevault.Message{msg("k", v)}), ""))
			if err != nil {
				held <- result{v, 0}
				return
			}
			resp.Body.Close()
			held <- result{v, resp.StatusCode}
		}()
	}
	var rest []*mvtest.Server
	for _, n := range nodes {
		if n != zombie {
			rest = append(rest, n)
		}
	}
	next := waitLeader(t, rest, 60*time.Second)
	publish(t, next, "zombie", []messagevault.Message{msg("k", "by the new leader")})
	time.Sleep(time.Until(stopped.Add(30 * time.Second))) // frozen for 30 s in all
	zombie.Signal(syscall.SIGCONT)
	// A held write either fails (the zombie, past its lease, refuses to
	// write) or, once the zombie has stepped down, is forwarded to the new
	// leader and stored there: acknowledged exactly when stored.
	acked := map[string]bool{}
	for i := 0; i < 3; i++ {
		if r := <-held; r.status == 200 {
			acked["k="+r.value] = true
		}
	}
	// It rejoins as a follower of the new leader.
	if l := waitLeader(t, nodes, 30*time.Second); l != next {
		t.Fatalf("leadership moved again after the zombie woke")
	}
	got := values(readGrant(t, next, "zombie"))
	if len(got) < 2 || got[0] != "k=before" || len(got) != 2+len(acked) {
		t.Fatalf("stream holds %v; acknowledged held writes %v", got, acked)
	}
	for _, v := range got[1:] {
		if v != "k=by the new leader" && !acked[v] {
			t.Fatalf("stream holds %v: %s was never acknowledged", got, v)
		}
	}
	publish(t, zombie, "zombie", []messagevault.Message{msg("k", "via the old leader, now a follower")})
	if got := values(readGrant(t, next, "zombie")); len(got) != 3+len(acked) {
		t.Fatalf("stream holds %v", got)
	}
	t.Logf("held writes acknowledged after the thaw (forwarded to the new leader): %d of 3", len(acked))
}
