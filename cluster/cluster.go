// Package cluster owns leader election (SPEC section 9): nodes that share
// one storage compete for its leader lock (a 15 s blob lease on Azure, the
// data directory's flock locally); the leader publishes its endpoint and
// writes, the others follow it. A leader that cannot renew its lock stops
// writing before the lock can have expired: Deadline tells writers until
// when they may write.
package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
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
	// Logger: default discard.
	Logger *slog.Logger
}

// Node takes part in the election until Close.
type Node struct {
	cfg Config
	log *slog.Logger

	mu        sync.Mutex
	leading   bool
	validTill time.Time // leadership is safe to use until then
	leader    string    // last known leader endpoint
	published bool      // this leader's endpoint is written (SetLeader)
	renewedAt time.Time // when the last successful renewal was sent
	elections int
	renewOK   int
	renewFail int
	losses    int

	stop chan struct{}
	done chan struct{}
}

// Start joins the election and returns at once; the node campaigns in the
// background.
func Start(cfg Config) *Node {
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
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	n := &Node{cfg: cfg, log: cfg.Logger, stop: make(chan struct{}), done: make(chan struct{})}
	go n.run()
	return n
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
		if time.Since(lastPoll) >= n.cfg.PollEvery {
			lastPoll = time.Now()
			if ep, err := n.cfg.Lock.Leader(ctx); err == nil {
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
		select {
		case <-n.stop:
		case <-time.After(n.cfg.RetryEvery):
		}
	}
}

func (n *Node) isLeading() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.leading
}

func (n *Node) setLeader(ep string) {
	n.mu.Lock()
	n.leader = ep
	n.mu.Unlock()
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
	n.mu.Lock()
	n.leading, n.validTill, n.renewedAt = true, n.validFrom(sent), sent
	n.mu.Unlock()
	if n.cfg.OnElected != nil {
		if err := n.cfg.OnElected(ctx, n); err != nil {
			n.log.Error("elected, but could not start leading; giving the lock up", "err", err)
			n.demote(ctx, true)
			return
		}
	}
	n.mu.Lock()
	n.leader = n.cfg.Advertise
	n.elections++
	n.published = false
	n.mu.Unlock()
	n.log.Info("elected leader", "advertise", n.cfg.Advertise)
	n.publish(ctx)
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

// lead renews the lock until it is lost or the node stops. A renewal is
// bounded by the lock's validity, and the node is demoted when that ends
// whatever the renewal is doing (a request stuck in the network must not
// keep a node leading past its lock).
func (n *Node) lead(ctx context.Context) {
	for {
		n.mu.Lock()
		wait := min(n.cfg.RenewEvery, time.Until(n.validTill))
		if !n.published {
			wait = min(wait, n.cfg.RetryEvery)
		}
		published := n.published
		n.mu.Unlock()
		select {
		case <-n.stop:
			n.demote(context.Background(), true)
			return
		case <-time.After(max(wait, 0)):
		}
		if !published {
			n.publish(ctx)
		}
		sent := time.Now()
		n.mu.Lock()
		till := n.validTill
		n.mu.Unlock()
		var err error
		if time.Since(n.lastRenew()) >= n.cfg.RenewEvery || time.Until(till) <= n.cfg.RenewEvery {
			err = n.renew(ctx, till)
		} else {
			continue // woke up to publish only
		}
		n.mu.Lock()
		if err == nil {
			n.validTill = n.validFrom(sent)
			n.renewOK++
			n.renewedAt = sent
		} else {
			n.renewFail++
		}
		lapsed := !time.Now().Before(n.validTill)
		n.mu.Unlock()
		if err != nil {
			n.log.Warn("leader lock: renew failed", "err", err, "lapsed", lapsed)
		}
		if lapsed {
			n.log.Error("leader lock lost or not renewed in time: stepping down")
			n.mu.Lock()
			n.losses++
			n.mu.Unlock()
			n.demote(ctx, false)
			return
		}
	}
}

func (n *Node) lastRenew() time.Time {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.renewedAt
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
	select {
	case <-n.stop:
	default:
		close(n.stop)
	}
	<-n.done
}
