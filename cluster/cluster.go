// Package cluster owns leader election: nodes that share
// one storage compete for its leader lock (a 15 s blob lease on Azure, the
// data directory's flock locally); the leader publishes its endpoint and
// writes, the others follow it. A leader that cannot renew its lock stops
// writing before the lock can have expired: Deadline tells writers until
// when they may write.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Lock is the leader lock of one storage.
type Lock interface {
	// Acquire tries once to take the lock. It returns false, and no error,
	// when another node holds it.
	Acquire(ctx context.Context) (bool, error)
	// Renew extends the held lock. An error means it may be lost.
	Renew(ctx context.Context) error
	// Release gives the held lock up, so another node can take it at once.
	Release(ctx context.Context) error
	// Duration is how long the lock stays valid after the request that
	// acquired or renewed it was sent; 0 means until released (a lock the
	// operating system ends with the process).
	Duration() time.Duration
	// SetLeader publishes the leader's endpoint (an internal URL).
	SetLeader(ctx context.Context, endpoint string) error
	// Leader returns the published endpoint, or "" if none is.
	Leader(ctx context.Context) (string, error)
}

// Describer is a Lock that can say who holds it, for the log line of a
// node that starts as a standby.
type Describer interface {
	// Holder describes who held the lock at the last failed Acquire, to
	// follow "the leader lock is held by" ("" if unknown).
	Holder() string
}

// Beater is a Lock whose leader proves it is alive with a heartbeat that
// followers watch, so that a dead leader's lock can be broken long before
// it would expire (an Azure blob lease lasts at least 15 s). A leader
// whose heartbeat has not been written for BeatValid stops writing; a
// follower that has seen the same heartbeat for BreakAfter (longer) breaks
// the lock and campaigns.
type Beater interface {
	// Beat publishes the leader's endpoint with heartbeat number n (it
	// replaces SetLeader).
	Beat(ctx context.Context, endpoint string, n uint64) error
	// LastBeat returns the published heartbeat.
	LastBeat(ctx context.Context) (Beat, error)
	// BreakSilent ends the lock of a leader found silent, so that it can
	// be acquired, if the election has not moved on since the follower
	// read token (a Beat's Token): of several followers that found the
	// same leader silent, only one breaks its lock; the others get
	// ErrElectionMoved. (Without this, a second follower could break the
	// lock the first had just acquired.)
	BreakSilent(ctx context.Context, token string) error
}

// Beat is a leader's heartbeat as a follower reads it.
type Beat struct {
	Endpoint string // "" when no lock is held
	N        uint64
	// Token changes whenever the election moves on (a new leader, a
	// break); BreakSilent is conditional on it.
	Token string
}

// ErrElectionMoved is BreakSilent's answer when another node broke the
// lock, or a new leader took it, since the token was read.
var ErrElectionMoved = errors.New("the election moved on")

// ErrLockLost wraps a Lock's or Beater's error that means the lock now
// belongs to someone else: the leader steps down at once.
var ErrLockLost = errors.New("leader lock lost")

// Roles of a node.
const (
	RoleLeader   = "leader"
	RoleFollower = "follower"
)

// Defaults of a Node.
const (
	// DefaultRetryEvery is how often a follower tries to take the lock.
	DefaultRetryEvery = 500 * time.Millisecond
	// DefaultPollEvery is how often a follower reads the leader's endpoint.
	DefaultPollEvery = time.Second
	// DefaultMargin is how long before its lock could expire a leader that
	// failed to renew stops writing.
	DefaultMargin = 4 * time.Second
	// DefaultBeatEvery is how often a leader writes its heartbeat, and
	// followers read it (Beater locks only).
	DefaultBeatEvery = 500 * time.Millisecond
	// DefaultBeatValid is how long after sending its last heartbeat that
	// was written a leader may write.
	DefaultBeatValid = 2 * time.Second
	// DefaultBreakAfter is how long a follower sees the same heartbeat
	// before it breaks the lock. It exceeds DefaultBeatValid by a margin
	// for clock rates and scheduling, so the old leader has stopped
	// writing when a new one can start.
	DefaultBreakAfter = 3 * time.Second
)

// Config configures a Node.
type Config struct {
	// Lock is the storage's leader lock. Required.
	Lock Lock
	// Advertise is this node's internal URL, published when it leads.
	Advertise string
	// OnElected is called when this node becomes leader, before it
	// publishes its endpoint; an error gives the lock up again. Writers
	// it starts take n.Deadline as theirs.
	OnElected func(ctx context.Context, n *Node) error
	// OnDemoted is called when this node stops leading (lost lock, or
	// Close); writes must have stopped when it returns.
	OnDemoted func()
	// RetryEvery: default DefaultRetryEvery. RenewEvery: default a third
	// of the lock's duration. PollEvery: default DefaultPollEvery.
	// Margin: default DefaultMargin.
	RetryEvery, RenewEvery, PollEvery, Margin time.Duration
	// BeatEvery, BeatValid, BreakAfter: defaults DefaultBeatEvery,
	// DefaultBeatValid, DefaultBreakAfter (used with a Beater lock).
	BeatEvery, BeatValid, BreakAfter time.Duration
	// OnFailover, if set, hears how long this node was without a known
	// leader (from when the old one went silent or let go, to when a new
	// one was known), each time a new leader is known.
	OnFailover func(time.Duration)
	// Logger: default discard.
	Logger *slog.Logger
}

// Node takes part in the election until Close.
type Node struct {
	cfg Config
	log *slog.Logger

	mu        sync.Mutex
	leading   bool
	standby   bool      // "standby" was logged since this node last led
	validTill time.Time // leadership is safe to use until then
	leader    string    // last known leader endpoint
	published bool      // this leader's endpoint is written (SetLeader)
	renewedAt time.Time // when the last successful renewal was sent
	leaseTill time.Time // the lock's own validity, less the margin
	beatTill  time.Time // the heartbeat's validity (Beater locks)
	beat      uint64    // this leader's heartbeat number
	beatAt    time.Time // when the last successful heartbeat was sent
	breaks    int
	changes   int       // times the known leader changed to another one
	lostAt    time.Time // when the last known leader went silent or let go
	elections int
	renewOK   int
	renewFail int
	losses    int

	// refreshMu serializes Refresh; refreshedAt is when the last one read
	// the published leader.
	refreshMu   sync.Mutex
	refreshedAt time.Time

	startOnce sync.Once
	started   atomic.Bool
	stop      chan struct{}
	done      chan struct{}
}

// Start joins the election and returns at once; the node campaigns in the
// background. It is New and then Start.
func Start(cfg Config) *Node {
	n := New(cfg)
	n.Start()
	return n
}

// New returns a node that has not joined the election yet: it is a
// follower that knows no leader until Start. Wire it to what its callbacks
// use, then Start it.
func New(cfg Config) *Node {
	if cfg.RetryEvery <= 0 {
		cfg.RetryEvery = DefaultRetryEvery
	}
	if cfg.PollEvery <= 0 {
		cfg.PollEvery = DefaultPollEvery
	}
	if cfg.Margin <= 0 {
		cfg.Margin = DefaultMargin
	}
	if d := cfg.Lock.Duration(); cfg.RenewEvery <= 0 {
		cfg.RenewEvery = max(d/3, time.Second)
	}
	if cfg.BeatEvery <= 0 {
		cfg.BeatEvery = DefaultBeatEvery
	}
	if cfg.BeatValid <= 0 {
		cfg.BeatValid = DefaultBeatValid
	}
	if cfg.BreakAfter <= 0 {
		cfg.BreakAfter = DefaultBreakAfter
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Node{cfg: cfg, log: cfg.Logger, stop: make(chan struct{}), done: make(chan struct{})}
}

// Start joins the election and returns at once; the node campaigns in the
// background until Close. Only the first call does anything.
func (n *Node) Start() {
	n.startOnce.Do(func() {
		n.started.Store(true)
		go n.run()
	})
}

// Role returns RoleLeader or RoleFollower.
func (n *Node) Role() string {
	if n.IsLeader() {
		return RoleLeader
	}
	return RoleFollower
}

// IsLeader reports whether this node leads and its lock is still safe.
func (n *Node) IsLeader() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.leading && time.Now().Before(n.validTill)
}

// Deadline returns until when this node may write: a time in the past
// when it does not lead.
func (n *Node) Deadline() time.Time {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.leading {
		return time.Time{}
	}
	return n.validTill
}

// Leader returns the leader's endpoint as last seen ("" if none is known),
// this node's own when it leads.
func (n *Node) Leader() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.leader
}

// RefreshEvery is the least time between two reads of the published
// leader by Refresh: callers that ask in between share the last answer.
const RefreshEvery = 100 * time.Millisecond

// Refresh reads the published leader endpoint now, instead of waiting for
// the next poll, and returns it ("" if none is published or it cannot be
// read). A follower calls it when the leader it knows fails it (does not
// answer, or says it no longer leads), so that it learns of a new leader
// at once. Concurrent callers share one read, and reads are at least
// RefreshEvery apart.
func (n *Node) Refresh(ctx context.Context) string {
	if n.IsLeader() {
		return n.Leader()
	}
	n.refreshMu.Lock()
	defer n.refreshMu.Unlock()
	if time.Since(n.refreshedAt) < RefreshEvery {
		return n.Leader()
	}
	var ep string
	var err error
	if b, ok := n.cfg.Lock.(Beater); ok {
		var beat Beat
		beat, err = b.LastBeat(ctx)
		ep = beat.Endpoint
	} else {
		ep, err = n.cfg.Lock.Leader(ctx)
	}
	n.refreshedAt = time.Now()
	if err != nil {
		n.log.Warn("leader lock: could not read the leader", "err", err)
		return n.Leader()
	}
	n.setLeader(ep)
	return n.Leader()
}

// Elections returns how many times this node has become leader.
func (n *Node) Elections() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.elections
}

// Renewals returns how many renewals of the lock succeeded and failed.
func (n *Node) Renewals() (ok, failed int) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.renewOK, n.renewFail
}

// Breaks returns how many times this node broke a silent leader's lock.
func (n *Node) Breaks() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.breaks
}

// Losses returns how many times this node stepped down because its lock
// lapsed.
func (n *Node) Losses() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.losses
}

func (n *Node) run() {
	defer close(n.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-n.stop
		cancel()
	}()
	lastPoll := time.Time{}
	beater, _ := n.cfg.Lock.(Beater)
	pollEvery := n.cfg.PollEvery
	if beater != nil {
		pollEvery = min(pollEvery, n.cfg.BeatEvery)
	}
	// The heartbeat as last seen, since when (this node's clock), and the
	// election's token when it was first seen.
	var seen Beat
	seenSince := time.Now()
	for {
		select {
		case <-n.stop:
			if n.isLeading() {
				n.demote(context.Background(), true)
			}
			return
		default:
		}
		if n.isLeading() {
			n.lead(ctx)
			continue // lead returns when leadership ends
		}
		if time.Since(lastPoll) >= pollEvery {
			lastPoll = time.Now()
			if beater != nil {
				b, err := beater.LastBeat(ctx)
				if err == nil {
					if b.Endpoint != seen.Endpoint || b.N != seen.N {
						seen, seenSince = b, time.Now()
					}
					n.setLeader(b.Endpoint)
					if b.Endpoint != "" && time.Since(seenSince) >= n.cfg.BreakAfter {
						n.mu.Lock()
						if n.lostAt.IsZero() {
							n.lostAt = seenSince // the leader went silent then
						}
						n.mu.Unlock()
						n.breakSilent(ctx, beater, seen)
						seenSince = time.Now()
					}
				}
			} else if ep, err := n.cfg.Lock.Leader(ctx); err == nil {
				n.setLeader(ep)
			}
		}
		sent := time.Now()
		ok, err := n.cfg.Lock.Acquire(ctx)
		if err != nil && ctx.Err() == nil {
			n.log.Warn("leader lock: acquire failed", "err", err)
		}
		if ok {
			n.elected(ctx, sent)
			continue
		}
		if err == nil {
			n.announceStandby()
		}
		select {
		case <-n.stop:
		case <-time.After(n.cfg.RetryEvery):
		}
	}
}

// breakSilent breaks the lock of a leader whose heartbeat has not moved
// for BreakAfter: it is dead, frozen or cut off from storage, and has
// stopped writing (BeatValid < BreakAfter). The heartbeat is read once
// more first, so a leader elected a moment ago is not broken.
func (n *Node) breakSilent(ctx context.Context, b Beater, seen Beat) {
	if err := b.BreakSilent(ctx, seen.Token); err != nil {
		if !errors.Is(err, ErrElectionMoved) {
			n.log.Warn("leader lock: break failed", "err", err)
		}
		return
	}
	n.mu.Lock()
	n.breaks++
	n.mu.Unlock()
	n.log.Warn("the leader's heartbeat stopped: broke its lock", "leader", seen.Endpoint, "silent_for", n.cfg.BreakAfter)
}

// noteLeaderLocked counts a change of the known leader from old to ep and
// returns how long the node was without one, if a failover just ended.
// Call with n.mu held.
func (n *Node) noteLeaderLocked(old, ep string) time.Duration {
	switch {
	case ep == old:
		return 0
	case ep == "":
		if n.lostAt.IsZero() {
			n.lostAt = time.Now()
		}
		return 0
	}
	n.changes++
	if n.lostAt.IsZero() {
		return 0
	}
	d := time.Since(n.lostAt)
	n.lostAt = time.Time{}
	return d
}

// LeaderChanges returns how many times the leader this node knows changed
// to another node (its own elections included).
func (n *Node) LeaderChanges() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.changes
}

func (n *Node) isLeading() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.leading
}

// setLeader records the published leader endpoint, as a follower read it.
func (n *Node) setLeader(ep string) {
	n.mu.Lock()
	if n.leading {
		n.mu.Unlock() // a leader knows who leads: a read raced its election
		return
	}
	old := n.leader
	n.leader = ep
	failover := n.noteLeaderLocked(old, ep)
	n.mu.Unlock()
	if failover > 0 && n.cfg.OnFailover != nil {
		n.cfg.OnFailover(failover)
	}
	if ep != old {
		if ep == "" {
			n.log.Warn("no leader is known", "was", old)
		} else {
			n.log.Info("leader changed", "leader", ep, "was", old)
		}
	}
}

// announceStandby logs, once each time this node finds itself following,
// that it is a standby, who holds the lock and what it waits for.
func (n *Node) announceStandby() {
	n.mu.Lock()
	announce := !n.standby && !n.leading
	n.standby = true
	leader := n.leader
	n.mu.Unlock()
	if !announce {
		return
	}
	holder := "another node"
	if d, ok := n.cfg.Lock.(Describer); ok && d.Holder() != "" {
		holder = d.Holder()
	}
	if leader == "" {
		leader = "(not published yet)"
	}
	n.log.Info("standby: the leader lock is held by "+holder+"; this node serves reads, forwards writes to the leader, and takes over when the lock is free", "leader", leader)
}

// validFrom returns until when a lock acquired or renewed by a request
// sent at sent is safe to use.
func (n *Node) validFrom(sent time.Time) time.Time {
	d := n.cfg.Lock.Duration()
	if d == 0 {
		return time.Unix(1<<62, 0) // held until released
	}
	return sent.Add(d - n.cfg.Margin)
}

func (n *Node) elected(ctx context.Context, sent time.Time) {
	beater, _ := n.cfg.Lock.(Beater)
	n.mu.Lock()
	n.leading, n.renewedAt, n.standby = true, sent, false
	n.leaseTill = n.validFrom(sent)
	n.beatTill = sent.Add(n.cfg.BeatValid)
	n.setValidLocked(beater != nil)
	failover := n.noteLeaderLocked(n.leader, n.cfg.Advertise)
	n.leader = n.cfg.Advertise
	n.elections++
	n.published = false
	n.mu.Unlock()
	if failover > 0 && n.cfg.OnFailover != nil {
		n.cfg.OnFailover(failover)
	}
	if beater != nil {
		// The first heartbeat names the new leader at once: followers
		// must see the heartbeat move before they could take this
		// fresh lock for a silent one.
		n.heartbeat(ctx, beater)
	}
	if n.cfg.OnElected != nil {
		if err := n.cfg.OnElected(ctx, n); err != nil {
			n.log.Error("elected, but could not start leading; giving the lock up", "err", err)
			n.demote(ctx, true)
			return
		}
	}
	n.log.Info("elected leader", "advertise", n.cfg.Advertise)
	if beater == nil {
		n.publish(ctx)
	}
}

// setValidLocked sets validTill from the lock's and the heartbeat's
// validity. Call with n.mu held.
func (n *Node) setValidLocked(beats bool) {
	n.validTill = n.leaseTill
	if beats && n.beatTill.Before(n.validTill) {
		n.validTill = n.beatTill
	}
}

// heartbeat writes the next heartbeat, bounded by the leadership's
// validity; once written, the node may write until BeatValid after it was
// sent.
func (n *Node) heartbeat(ctx context.Context, b Beater) {
	n.mu.Lock()
	n.beat++
	beat, till := n.beat, n.validTill
	n.mu.Unlock()
	sent := time.Now()
	if !sent.Before(till) {
		return // too late (a pause outlived the leadership): no beat
	}
	bctx, cancel := context.WithDeadline(ctx, till)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- b.Beat(bctx, n.cfg.Advertise, beat) }()
	var err error
	select {
	case err = <-done:
	case <-bctx.Done():
		err = bctx.Err()
	}
	if err != nil {
		n.mu.Lock()
		n.beatAt = sent // the next try comes BeatEvery later, not at once
		if errors.Is(err, ErrLockLost) {
			n.beatTill = time.Time{} // someone else holds the lock: stop now
			n.setValidLocked(true)
		}
		n.mu.Unlock()
		n.log.Warn("leader lock: heartbeat failed", "err", err)
		return
	}
	n.mu.Lock()
	n.beatAt, n.beatTill, n.published = sent, sent.Add(n.cfg.BeatValid), true
	n.setValidLocked(true)
	n.mu.Unlock()
}

// publish writes this leader's endpoint for the followers, bounded by the
// leadership's validity; lead retries it until it succeeds.
func (n *Node) publish(ctx context.Context) {
	n.mu.Lock()
	till := n.validTill
	n.mu.Unlock()
	pctx, cancel := context.WithDeadline(ctx, till)
	defer cancel()
	if err := n.cfg.Lock.SetLeader(pctx, n.cfg.Advertise); err != nil {
		n.log.Error("could not publish the leader endpoint; retrying", "err", err)
		return
	}
	n.mu.Lock()
	n.published = true
	n.mu.Unlock()
}

// lead renews the lock (and, with a Beater, writes heartbeats) until
// leadership ends or the node stops. Every call is bounded by the
// leadership's validity, and the node is demoted when that ends, whatever
// a call is doing: a request stuck in the network must not keep a node
// leading.
func (n *Node) lead(ctx context.Context) {
	beater, _ := n.cfg.Lock.(Beater)
	for {
		now := time.Now()
		n.mu.Lock()
		wake := n.renewedAt.Add(n.cfg.RenewEvery)
		if beater != nil {
			wake = earliest(wake, n.beatAt.Add(n.cfg.BeatEvery))
		} else if !n.published {
			wake = earliest(wake, now.Add(n.cfg.RetryEvery))
		}
		wake = earliest(wake, n.validTill)
		n.mu.Unlock()
		select {
		case <-n.stop:
			n.demote(context.Background(), true)
			return
		case <-time.After(max(time.Until(wake), 0)):
		}
		n.mu.Lock()
		beatDue := beater != nil && !time.Now().Before(n.beatAt.Add(n.cfg.BeatEvery))
		renewDue := !time.Now().Before(n.renewedAt.Add(n.cfg.RenewEvery))
		publishDue := beater == nil && !n.published
		till := n.validTill
		n.mu.Unlock()
		if beatDue {
			n.heartbeat(ctx, beater)
		}
		if publishDue {
			n.publish(ctx)
		}
		if renewDue {
			sent := time.Now()
			err := n.renew(ctx, till)
			n.mu.Lock()
			if err == nil {
				n.leaseTill, n.renewedAt = n.validFrom(sent), sent
				n.renewOK++
			} else if errors.Is(err, ErrLockLost) {
				n.leaseTill = time.Time{}
				n.renewFail++
			} else {
				n.renewFail++
				n.renewedAt = sent.Add(n.cfg.RetryEvery - n.cfg.RenewEvery) // retry soon
			}
			n.mu.Unlock()
			if err != nil {
				n.log.Warn("leader lock: renew failed", "err", err)
			}
		}
		n.mu.Lock()
		n.setValidLocked(beater != nil)
		lapsed := !time.Now().Before(n.validTill)
		n.mu.Unlock()
		if lapsed {
			n.log.Error("leader lock lost, or not renewed or heartbeat not written in time: stepping down")
			n.mu.Lock()
			n.losses++
			n.mu.Unlock()
			n.demote(ctx, false)
			return
		}
	}
}

func earliest(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// renew runs one renewal under a context that ends at till, and returns
// at till at the latest even if the lock ignores its context.
func (n *Node) renew(ctx context.Context, till time.Time) error {
	rctx, cancel := context.WithDeadline(ctx, till)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- n.cfg.Lock.Renew(rctx) }()
	select {
	case err := <-done:
		return err
	case <-rctx.Done():
		return fmt.Errorf("renewal did not answer before the lock's validity ended: %w", rctx.Err())
	}
}

// demote stops leading: writes stop (OnDemoted), then the lock is released
// if release is set (it is not when it may belong to another node now).
func (n *Node) demote(ctx context.Context, release bool) {
	n.mu.Lock()
	n.leading, n.validTill = false, time.Time{}
	n.leader = ""
	n.mu.Unlock()
	if n.cfg.OnDemoted != nil {
		n.cfg.OnDemoted()
	}
	if release {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if err := n.cfg.Lock.Release(rctx); err != nil {
			n.log.Warn("leader lock: release failed", "err", err)
		}
		cancel()
	}
	n.log.Info("stepped down")
}

// Close leaves the election: a leader stops writing and releases its lock
// so that another node takes over at once.
func (n *Node) Close() {
	n.startOnce.Do(func() {}) // a node never started stays so
	select {
	case <-n.stop:
	default:
		close(n.stop)
	}
	if n.started.Load() {
		<-n.done
	}
}
