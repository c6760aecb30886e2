package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/messagevault/messagevault/cluster"
)

// fakeLock is one lock shared by the nodes of a test, with a duration and
// a switch that makes renewals fail.
type fakeLock struct {
	mu       *sync.Mutex
	holder   *string
	leader   *string
	me       string
	dur      time.Duration
	failRenw *atomic.Bool
	hangRenw *atomic.Bool // Renew blocks, ignoring its context
	failSet  *atomic.Int32
}

func (l *fakeLock) Acquire(context.Context) (bool, error) {
	if l.failRenw.Load() {
		return false, errors.New("storage unreachable")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if *l.holder == "" || *l.holder == l.me {
		*l.holder = l.me
		return true, nil
	}
	return false, nil
}

func (l *fakeLock) Renew(context.Context) error {
	if l.hangRenw.Load() {
		select {} // a request stuck in the network, whatever the context says
	}
	if l.failRenw.Load() {
		return errors.New("storage unreachable")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if *l.holder != l.me {
		return errors.New("lease lost")
	}
	return nil
}

func (l *fakeLock) Release(context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if *l.holder == l.me {
		*l.holder = ""
	}
	return nil
}

func (l *fakeLock) Duration() time.Duration { return l.dur }

func (l *fakeLock) SetLeader(_ context.Context, ep string) error {
	if l.failSet.Load() > 0 {
		l.failSet.Add(-1)
		return errors.New("storage refused the write")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	*l.leader = ep
	return nil
}

func (l *fakeLock) Leader(context.Context) (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return *l.leader, nil
}

type world struct {
	mu             sync.Mutex
	holder, leader string
	failRenew      atomic.Bool
	hangRenew      atomic.Bool
	failSet        atomic.Int32
}

func (w *world) lock(me string, dur time.Duration) *fakeLock {
	return &fakeLock{mu: &w.mu, holder: &w.holder, leader: &w.leader, me: me, dur: dur, failRenw: &w.failRenew, hangRenw: &w.hangRenew, failSet: &w.failSet}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestOneLeaderAndHandover(t *testing.T) {
	w := &world{}
	var elected, demoted atomic.Int32
	cfg := func(me string) cluster.Config {
		return cluster.Config{Lock: w.lock(me, 3*time.Second), Advertise: "http://" + me,
			RetryEvery: 10 * time.Millisecond, PollEvery: 10 * time.Millisecond, Margin: time.Second,
			OnElected: func(context.Context, *cluster.Node) error { elected.Add(1); return nil },
			OnDemoted: func() { demoted.Add(1) }}
	}
	a := cluster.Start(cfg("a"))
	waitFor(t, "a to lead", a.IsLeader)
	b := cluster.Start(cfg("b"))
	defer b.Close()
	waitFor(t, "b to know the leader", func() bool { return b.Leader() == "http://a" })
	if b.IsLeader() || b.Role() != cluster.RoleFollower || !b.Deadline().IsZero() {
		t.Fatal("two leaders")
	}
	if d := time.Until(a.Deadline()); d <= 0 || d > 2*time.Second {
		t.Fatalf("leader deadline in %v; want within the lock's duration less the margin", d)
	}
	a.Close() // releases: b takes over at once
	waitFor(t, "b to lead", b.IsLeader)
	if elected.Load() != 2 || demoted.Load() != 1 {
		t.Fatalf("elected %d, demoted %d", elected.Load(), demoted.Load())
	}
}

// A leader that cannot renew stops before its lock can have expired.
func TestLeaderThatCannotRenewStepsDown(t *testing.T) {
	w := &world{}
	var demotedAt atomic.Int64
	a := cluster.Start(cluster.Config{Lock: w.lock("a", 2*time.Second), Advertise: "http://a",
		RenewEvery: 100 * time.Millisecond, Margin: 500 * time.Millisecond,
		OnDemoted: func() { demotedAt.Store(time.Now().UnixNano()) }})
	defer a.Close()
	waitFor(t, "a to lead", a.IsLeader)
	acquired := time.Now()
	w.failRenew.Store(true)
	waitFor(t, "a to step down", func() bool { return demotedAt.Load() != 0 })
	stepped := time.Unix(0, demotedAt.Load())
	// The lock was renewed last at most 100 ms after acquired; it is valid
	// for 2 s from a renewal, so stepping down must happen before then.
	if stepped.After(acquired.Add(2 * time.Second)) {
		t.Fatalf("stepped down %v after the last renewal could have been; the lock may have expired", stepped.Sub(acquired))
	}
	if a.IsLeader() || time.Now().Before(a.Deadline()) {
		t.Fatal("still leading after stepping down")
	}
}

// A renewal that hangs cannot keep a node leading: it is demoted when its
// lock's validity ends, whatever the renewal is doing.
func TestHungRenewalDemotes(t *testing.T) {
	w := &world{}
	var demoted atomic.Bool
	a := cluster.Start(cluster.Config{Lock: w.lock("a", 2*time.Second), Advertise: "http://a",
		RenewEvery: 100 * time.Millisecond, Margin: 500 * time.Millisecond,
		OnDemoted: func() { demoted.Store(true) }})
	waitFor(t, "a to lead", a.IsLeader)
	w.hangRenew.Store(true)
	start := time.Now()
	waitFor(t, "a to be demoted", demoted.Load)
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("demoted %v after the renewal hung; the lock is valid for 1.5 s", took)
	}
	// (It may be elected again at once: nobody else took the lock.)
}

// A leader whose first write of its endpoint fails keeps trying, so
// followers learn where to forward.
func TestEndpointIsPublishedAfterAFailure(t *testing.T) {
	w := &world{}
	w.failSet.Store(3)
	a := cluster.Start(cluster.Config{Lock: w.lock("a", 3*time.Second), Advertise: "http://a",
		RetryEvery: 10 * time.Millisecond, RenewEvery: time.Second, Margin: 500 * time.Millisecond})
	defer a.Close()
	waitFor(t, "a to lead", a.IsLeader)
	waitFor(t, "the endpoint to be published", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.leader == "http://a"
	})
}

// beatLock is a fakeLock with heartbeats (a cluster.Beater); dead makes
// one node's every call fail, as a node cut off or killed.
type beatLock struct {
	*fakeLock
	w    *beatWorld
	dead *atomic.Bool
}

type beatWorld struct {
	world
	ep     string
	beat   uint64
	token  int
	breaks int
}

func (l *beatLock) Beat(_ context.Context, ep string, n uint64) error {
	if l.dead.Load() {
		return errors.New("unreachable")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if *l.holder != l.me {
		return fmt.Errorf("%w: lease held by %q", cluster.ErrLockLost, *l.holder)
	}
	if l.w.ep != ep {
		l.w.token++ // a new leader published itself
	}
	l.w.ep, l.w.beat = ep, n
	return nil
}

func (l *beatLock) LastBeat(context.Context) (cluster.Beat, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := cluster.Beat{Endpoint: l.w.ep, N: l.w.beat, Token: fmt.Sprint(l.w.token)}
	if *l.holder == "" {
		b.Endpoint = ""
	}
	return b, nil
}

func (l *beatLock) BreakSilent(_ context.Context, token string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if token != fmt.Sprint(l.w.token) {
		return cluster.ErrElectionMoved
	}
	l.w.token++
	*l.holder = ""
	l.w.breaks++
	return nil
}

func (l *beatLock) Acquire(ctx context.Context) (bool, error) {
	if l.dead.Load() {
		return false, errors.New("unreachable")
	}
	return l.fakeLock.Acquire(ctx)
}

func (l *beatLock) Renew(ctx context.Context) error {
	if l.dead.Load() {
		return errors.New("unreachable")
	}
	return l.fakeLock.Renew(ctx)
}

// A leader that stops beating is replaced after BreakAfter, long before
// its lock would expire, and it has stopped writing (its deadline passed)
// before the new leader is elected.
func TestSilentLeaderIsBrokenFast(t *testing.T) {
	w := &beatWorld{}
	var deadA, deadB atomic.Bool
	var mu sync.Mutex
	var electedB time.Time
	var failovers []time.Duration
	mk := func(me string, dead *atomic.Bool, onElected func()) *cluster.Node {
		return cluster.Start(cluster.Config{
			Lock:      &beatLock{fakeLock: w.lock(me, 60*time.Second), w: w, dead: dead},
			Advertise: "http://" + me, RetryEvery: 20 * time.Millisecond, Margin: time.Second,
			BeatEvery: 50 * time.Millisecond, BeatValid: 300 * time.Millisecond, BreakAfter: 500 * time.Millisecond,
			OnElected: func(context.Context, *cluster.Node) error {
				if onElected != nil {
					onElected()
				}
				return nil
			},
			OnFailover: func(d time.Duration) {
				if me == "b" {
					mu.Lock()
					failovers = append(failovers, d)
					mu.Unlock()
				}
			},
		})
	}
	a := mk("a", &deadA, nil)
	defer a.Close()
	waitFor(t, "a to lead", a.IsLeader)
	b := mk("b", &deadB, func() { mu.Lock(); electedB = time.Now(); mu.Unlock() })
	defer b.Close()
	waitFor(t, "b to follow a", func() bool { return b.Leader() == "http://a" })
	// A gentle pause of beats shorter than BreakAfter changes nothing.
	time.Sleep(300 * time.Millisecond)
	if b.IsLeader() || !a.IsLeader() {
		t.Fatal("leadership moved while the leader was beating")
	}
	deadA.Store(true)
	killed := time.Now()
	time.Sleep(60 * time.Millisecond) // a beat already on its way may land
	aDeadline := a.Deadline()
	waitFor(t, "b to lead", b.IsLeader)
	took := time.Since(killed)
	// a's deadline is at most BeatValid after its last beat.
	if d := a.Deadline(); !d.IsZero() && d.After(aDeadline) {
		t.Fatalf("a's deadline moved on after it died: %v", d)
	}
	// OnElected may run a moment after IsLeader turns true.
	waitFor(t, "b's OnElected", func() bool { mu.Lock(); defer mu.Unlock(); return !electedB.IsZero() })
	mu.Lock()
	eb := electedB
	mu.Unlock()
	if eb.Before(aDeadline) {
		t.Fatalf("b was elected %v before a's deadline passed: two writers", aDeadline.Sub(eb))
	}
	if took > 3*time.Second {
		t.Fatalf("failover took %v; the lock lasts 60 s but the heartbeat should end it in about 0.5 s", took)
	}
	if b.Breaks() != 1 {
		t.Fatalf("b broke the lock %d times", b.Breaks())
	}
	mu.Lock()
	defer mu.Unlock()
	if len(failovers) != 1 || failovers[0] < 400*time.Millisecond || failovers[0] > 3*time.Second || b.LeaderChanges() != 2 {
		t.Fatalf("b heard failovers %v and %d leader changes; want one of about 0.5 s and 2 changes (a, then itself)", failovers, b.LeaderChanges())
	}
	t.Logf("failover after %v (b measured %v)", took, failovers[0])
}

// Two followers that find the leader silent at the same moment: one breaks
// its lock and leads; the other does not break the lock the first has just
// taken. Never two leaders.
func TestOneBreakerAmongFollowers(t *testing.T) {
	w := &beatWorld{}
	dead := map[string]*atomic.Bool{"a": {}, "b": {}, "c": {}}
	nodes := map[string]*cluster.Node{}
	for _, me := range []string{"a", "b", "c"} {
		nodes[me] = cluster.Start(cluster.Config{
			Lock:      &beatLock{fakeLock: w.lock(me, 60*time.Second), w: w, dead: dead[me]},
			Advertise: "http://" + me, RetryEvery: 10 * time.Millisecond, Margin: time.Second,
			BeatEvery: 20 * time.Millisecond, BeatValid: 150 * time.Millisecond, BreakAfter: 250 * time.Millisecond,
		})
		defer nodes[me].Close()
		if me == "a" {
			waitFor(t, "a to lead", nodes["a"].IsLeader)
		}
	}
	waitFor(t, "b and c to follow a", func() bool { return nodes["b"].Leader() == "http://a" && nodes["c"].Leader() == "http://a" })
	dead["a"].Store(true)
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if nodes["b"].IsLeader() && nodes["c"].IsLeader() {
			t.Fatal("b and c both lead")
		}
		time.Sleep(time.Millisecond)
	}
	if !nodes["b"].IsLeader() && !nodes["c"].IsLeader() {
		t.Fatal("nobody took over")
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.breaks != 1 {
		t.Fatalf("the lock was broken %d times; want once", w.breaks)
	}
}

// Refresh reads the published leader at once, between polls, and callers
// that ask together share one read.
func TestRefreshReadsTheLeaderAtOnce(t *testing.T) {
	w := &world{holder: "x", leader: "http://x"}
	b := cluster.Start(cluster.Config{Lock: w.lock("b", 3*time.Second), Advertise: "http://b",
		RetryEvery: time.Hour, PollEvery: time.Hour, Margin: time.Second})
	defer b.Close()
	waitFor(t, "b to read the leader", func() bool { return b.Leader() == "http://x" })
	w.mu.Lock()
	w.leader = "http://y" // a new leader, published after b's (hourly) poll
	w.mu.Unlock()
	if got := b.Leader(); got != "http://x" {
		t.Fatalf("b knows %q before the refresh", got)
	}
	time.Sleep(cluster.RefreshEvery)
	if got := b.Refresh(context.Background()); got != "http://y" {
		t.Fatalf("Refresh = %q, want the new leader", got)
	}
	if got := b.Leader(); got != "http://y" {
		t.Fatalf("after Refresh b knows %q", got)
	}
	// Within RefreshEvery of the last read, callers get its answer.
	w.mu.Lock()
	w.leader = "http://z"
	w.mu.Unlock()
	if got := b.Refresh(context.Background()); got != "http://y" {
		t.Fatalf("a second Refresh at once read storage again: %q", got)
	}
}
