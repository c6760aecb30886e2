package e2e_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/internal/azurite"
	"github.com/messagevault/messagevault/internal/faultproxy"
	"github.com/messagevault/messagevault/internal/mvtest"
)

// startProxy starts a fault proxy to target, closed when the test ends.
func startProxy(t *testing.T, target string) *faultproxy.Proxy {
	t.Helper()
	p, err := faultproxy.Start(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// readiness returns a node's /readyz answer.
func readiness(t *testing.T, s *mvtest.Server) (role, leader string, writable bool) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(s.URL + "/readyz")
	if err != nil {
		t.Fatalf("readyz: %v", err)
	}
	defer resp.Body.Close()
	var r struct {
		Role, Leader string
		Writable     bool
	}
	json.NewDecoder(resp.Body).Decode(&r)
	return r.Role, r.Leader, r.Writable
}

// TestAzureLeaderCutOffFromPeers cuts the leader off from the other nodes
// (they reach it only through a proxy, which then holds every request, as
// a network that drops packets does) while it still reaches storage. Its
// heartbeat keeps moving, so nobody breaks its lock: it stays the one
// leader and keeps acknowledging writes sent to it, while the cut-off
// followers answer 503 to writes they cannot forward. Once the link is
// back, forwarding resumes. Nothing acknowledged is lost or stored twice.
func TestAzureLeaderCutOffFromPeers(t *testing.T) {
	if testing.Short() {
		t.Skip("partition: slow")
	}
	az := azurite.Start(t)
	addr := freePort(t)
	link := startProxy(t, "http://"+addr)
	// Peers reach the leader only through the proxy: its advertised URL.
	leader := startAzure(t, az, "--listen", addr, "--advertise", link.URL)
	if l := waitLeader(t, []*mvtest.Server{leader}, 40*time.Second); l != leader {
		t.Fatal("the first node does not lead")
	}
	nodes := []*mvtest.Server{leader, startAzure(t, az), startAzure(t, az)}
	waitLeader(t, nodes, 40*time.Second)
	// Writes sent to a cut-off follower wait for the leader: the producers
	// give each attempt 2 s, and resend it to another node.
	load := startLoad(t, "peercut", nodes, 4, 2*time.Second)
	sampler := sampleLeaders(load)
	load.progress(200, 60*time.Second, "before the cut")

	link.Set(faultproxy.Stall, 0, 0)
	cut := time.Now()
	// Three times the time after which a silent leader's lock is broken.
	load.progress(50, 30*time.Second, "during the cut (writes sent to the leader)")
	time.Sleep(time.Until(cut.Add(9 * time.Second)))
	for i, n := range nodes {
		role, _, _ := readiness(t, n)
		if want := map[bool]string{true: "leader", false: "follower"}[n == leader]; role != want {
			t.Fatalf("node %d is %s during the cut, want %s", i, role, want)
		}
	}
	// A write through a cut-off follower waits for the leader, in vain,
	// and is refused as retryable when the link drops it: it is not
	// stored.
	probe := make(chan string, 1)
	go func() {
		req := nodes[1].Request("POST", "/streams/peercut-probe", admin, adminPass, transfer(t, []messagevault.Message{msg("k", "through a cut link")}), "")
		resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
		if err != nil {
			probe <- err.Error()
			return
		}
		resp.Body.Close()
		probe <- fmt.Sprintf("%d (Retry-After %q)", resp.StatusCode, resp.Header.Get("Retry-After"))
	}()
	time.Sleep(time.Second)
	select {
	case got := <-probe:
		t.Fatalf("a write through a cut-off follower was answered during the cut: %s", got)
	default:
	}
	link.Set(faultproxy.Pass, 0, 0)
	if got := <-probe; got != `503 (Retry-After "1")` {
		t.Fatalf("a write through a cut-off follower: %s, want 503 with Retry-After", got)
	}

	// Healed: every node forwards again, and the leader never changed.
	if l := waitLeader(t, nodes, 30*time.Second); l != leader {
		t.Fatal("leadership moved although the leader reached storage all along")
	}
	publish(t, nodes[2], "peercut-probe", []messagevault.Message{msg("k", "after the cut")})
	load.progress(200, 30*time.Second, "after the cut")
	samples, _ := sampler.check()
	rep := load.finish(leader)
	t.Logf("PARTITION (leader cut off from peers, 9 s): %v; %d readiness samples, exactly one leader in each", rep, samples)
	if got := values(readGrant(t, leader, "peercut-probe")); strings.Join(got, ",") != "k=after the cut" {
		t.Fatalf("probe stream holds %v", got)
	}
}

// TestAzureLeaderCutOffFromStorage cuts the leader off from storage (it
// reaches Azurite only through a proxy, which then holds every request)
// while it still reaches its peers. It cannot write its heartbeat, so it
// stops writing and steps down; the others find its heartbeat silent,
// break its lock, and one of them leads. At no sample do two nodes lead.
// Once storage is back, the old leader follows the new one. Nothing
// acknowledged is lost or stored twice, and the stream reads cleanly to
// its end: no reader sees bytes that were not committed.
func TestAzureLeaderCutOffFromStorage(t *testing.T) {
	if testing.Short() {
		t.Skip("partition: slow")
	}
	az := azurite.Start(t)
	link := startProxy(t, "http://127.0.0.1:"+az.Port)
	cs := strings.Replace(az.ConnectionString(), "http://127.0.0.1:"+az.Port, link.URL, 1)
	old := mvtest.Start(t, t.TempDir(), nil, "--azure="+cs)
	if l := waitLeader(t, []*mvtest.Server{old}, 40*time.Second); l != old {
		t.Fatal("the first node does not lead")
	}
	nodes := []*mvtest.Server{old, startAzure(t, az), startAzure(t, az)}
	waitLeader(t, nodes, 40*time.Second)
	load := startLoad(t, "storagecut", nodes, 4, 5*time.Second)
	sampler := sampleLeaders(load)
	load.progress(200, 60*time.Second, "before the cut")

	sampler.beginTransition()
	link.Set(faultproxy.Stall, 0, 0)
	cut := time.Now()
	next := waitLeader(t, nodes[1:], 30*time.Second)
	sampler.endTransition()
	took := time.Since(cut)
	resumed := load.resumed(cut, 30*time.Second).Sub(cut)
	if role, _, writable := readiness(t, old); role != "follower" || writable {
		t.Fatalf("the node cut off from storage says role %s, writable %v, while %s leads", role, writable, next.URL)
	}
	load.progress(200, 30*time.Second, "during the cut (writes through the others)")
	link.Set(faultproxy.Pass, 0, 0)

	// Healed: the old leader follows the new one and forwards to it.
	if l := waitLeader(t, nodes, 30*time.Second); l != next {
		t.Fatal("leadership moved again when storage came back")
	}
	publish(t, old, "storagecut-probe", []messagevault.Message{msg("k", "through the old leader")})
	load.progress(200, 30*time.Second, "after the cut")
	samples, excused := sampler.check()
	rep := load.finish(next)
	t.Logf("PARTITION (leader cut off from storage): new leader after %v, writes resumed after %v; %v; %d readiness samples, never two leaders, exactly one outside the %d taken during the failover",
		took.Round(time.Millisecond), resumed.Round(time.Millisecond), rep, samples, excused)
	if got := values(readGrant(t, next, "storagecut-probe")); strings.Join(got, ",") != "k=through the old leader" {
		t.Fatalf("probe stream holds %v", got)
	}
}
