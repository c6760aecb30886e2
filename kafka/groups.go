package kafka

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/auth"
)

// Consumer groups. This listener is the coordinator of every group (its
// node is the only broker), and keeps the groups' membership in memory,
// as Kafka's coordinator does between its log's snapshots: a restart or
// failover makes the members join again, which Kafka clients do by
// themselves. The groups' committed offsets are MessageVault cursors
// named after the group (see offsets.go), durable and visible over HTTP.
//
// A group goes through Kafka's states: Empty; PreparingRebalance, while
// its members join again (each JoinGroup waits until every member known
// has joined, or the longest rebalance timeout passes, and members that
// did not are removed); CompletingRebalance, until the leader's SyncGroup
// hands out the assignments; then Stable. A member that sends no
// heartbeat for its session timeout is removed, and the others rebalance.

// Group states, as DescribeGroups and ListGroups name them.
const (
	stateEmpty      = "Empty"
	statePreparing  = "PreparingRebalance"
	stateCompleting = "CompletingRebalance"
	stateStable     = "Stable"
	janitorInterval = 200 * time.Millisecond
	// maxMembers bounds the members of all groups, maxMembersPerUser
	// those one user joined, maxMemberMetadata each member's protocol
	// metadata: a join past them is refused.
	maxMembers        = 10_000
	maxMembersPerUser = 1_000
	maxMemberMetadata = 64 << 10
	minSessionTime    = time.Second
	maxSessionTime    = 30 * time.Minute
	maxRebalanceTime  = 30 * time.Minute
)

// coordinator holds the groups.
type coordinator struct {
	mu      sync.Mutex
	groups  map[string]*group
	members int            // in all groups
	byUser  map[string]int // members of each user, in all groups
}

// group is one consumer group's membership.
type group struct {
	co           *coordinator
	id           string
	state        string
	protocolType string
	protocol     string
	generation   int32
	leader       string
	members      map[string]*member
	order        []string   // member ids in joining order: the first is the next leader
	join         *joinPhase // while PreparingRebalance
	sync         *syncPhase // while CompletingRebalance
	deadline     time.Time  // of the rebalance in progress
}

// member is one group member.
type member struct {
	id, clientID, host string
	owner              string // the user who joined it: only they (or an admin) act for it
	instanceID         *string
	session, rebalance time.Duration
	protocols          []kmsg.JoinGroupRequestProtocol
	assignment         []byte
	joined             bool      // joined in the rebalance in progress
	expires            time.Time // without a heartbeat by then, it is removed
}

// joinPhase is one rebalance's joining: done closes when it completes.
type joinPhase struct {
	done       chan struct{}
	generation int32
	protocol   string
	leader     string
	members    []kmsg.JoinGroupResponseMember // for the leader
	joined     map[string]bool
}

// syncPhase waits for the leader's assignments: done closes when they
// come, or when a new rebalance starts first (rebalance set).
type syncPhase struct {
	done      chan struct{}
	rebalance bool
}

// run removes expired members and ends overdue rebalances until ctx ends.
func (co *coordinator) run(ctx context.Context) {
	t := time.NewTicker(janitorInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			co.mu.Lock()
			for id, g := range co.groups {
				for mid, m := range g.members {
					if now.After(m.expires) && !(g.state == statePreparing && m.joined) {
						g.remove(mid, now)
					}
				}
				if g.state == statePreparing && now.After(g.deadline) {
					g.complete(now)
				}
				if len(g.members) == 0 && g.state == stateEmpty {
					delete(co.groups, id)
				}
			}
			co.mu.Unlock()
		}
	}
}

// get returns group id, made Empty if new; under co.mu.
func (co *coordinator) get(id string) *group {
	if co.groups == nil {
		co.groups = map[string]*group{}
	}
	g := co.groups[id]
	if g == nil {
		g = &group{co: co, id: id, state: stateEmpty, members: map[string]*member{}}
		co.groups[id] = g
	}
	return g
}

// rebalance starts a rebalance: every member must join again.
func (g *group) rebalance(now time.Time) {
	if g.state == statePreparing {
		return
	}
	if g.sync != nil {
		g.sync.rebalance = true
		close(g.sync.done)
		g.sync = nil
	}
	g.state = statePreparing
	g.join = &joinPhase{done: make(chan struct{})}
	longest := time.Duration(0)
	for _, m := range g.members {
		m.joined = false
		longest = max(longest, m.rebalance)
	}
	g.deadline = now.Add(longest)
}

// allJoined reports whether every member has joined the rebalance.
func (g *group) allJoined() bool {
	for _, m := range g.members {
		if !m.joined {
			return false
		}
	}
	return true
}

// complete ends the joining: members that did not join are removed, the
// generation moves on, a protocol and a leader are chosen, and every
// waiting JoinGroup is answered.
func (g *group) complete(now time.Time) {
	phase := g.join
	g.join = nil
	for id, m := range g.members {
		if !m.joined {
			g.drop(id)
		}
	}
	g.generation++
	phase.generation = g.generation
	phase.joined = map[string]bool{}
	if len(g.members) == 0 {
		g.state, g.protocol, g.leader = stateEmpty, "", ""
		close(phase.done)
		return
	}
	if g.members[g.leader] == nil {
		g.leader = g.order[0]
	}
	g.protocol = g.choose()
	phase.protocol, phase.leader = g.protocol, g.leader
	for _, id := range g.order {
		m := g.members[id]
		meta := []byte(nil)
		for _, p := range m.protocols {
			if p.Name == g.protocol {
				meta = p.Metadata
			}
		}
		phase.members = append(phase.members, kmsg.JoinGroupResponseMember{MemberID: id, InstanceID: m.instanceID, ProtocolMetadata: meta})
		phase.joined[id] = true
		m.joined, m.assignment = false, nil
		m.expires = now.Add(m.session)
	}
	g.state = stateCompleting
	g.sync = &syncPhase{done: make(chan struct{})}
	close(phase.done)
}

// choose returns the first of the leader's protocols that every member
// has.
func (g *group) choose() string {
	for _, p := range g.members[g.leader].protocols {
		all := true
		for _, m := range g.members {
			all = all && slices.ContainsFunc(m.protocols, func(q kmsg.JoinGroupRequestProtocol) bool { return q.Name == p.Name })
		}
		if all {
			return p.Name
		}
	}
	return g.members[g.leader].protocols[0].Name
}

// drop forgets member id.
func (g *group) drop(id string) {
	if m := g.members[id]; m != nil {
		g.co.members--
		if g.co.byUser[m.owner]--; g.co.byUser[m.owner] == 0 {
			delete(g.co.byUser, m.owner)
		}
	}
	delete(g.members, id)
	g.order = slices.DeleteFunc(g.order, func(o string) bool { return o == id })
}

// remove takes member id out of the group, which rebalances without it.
func (g *group) remove(id string, now time.Time) {
	g.drop(id)
	switch {
	case g.state == statePreparing:
		if g.allJoined() {
			g.complete(now)
		}
	case len(g.members) > 0:
		g.rebalance(now)
	default:
		if g.sync != nil {
			g.sync.rebalance = true
			close(g.sync.done)
			g.sync = nil
		}
		g.state = stateEmpty
	}
}

// member returns the group's member id, or an error code: the group's
// id must be a cursor name, the member known, joined by user p (or p an
// admin), and of this generation (unless generation is -1).
func (co *coordinator) member(p *auth.Principal, groupID, memberID string, generation int32) (*group, *member, int16) {
	if messagevault.CheckCursorName(groupID) != nil {
		return nil, nil, kerr.InvalidGroupID.Code
	}
	g := co.groups[groupID]
	if g == nil {
		return nil, nil, kerr.UnknownMemberID.Code
	}
	m := g.members[memberID]
	if m == nil {
		return g, nil, kerr.UnknownMemberID.Code
	}
	if m.owner != p.Name && !p.CanAdmin() {
		return g, nil, kerr.GroupAuthorizationFailed.Code
	}
	if generation != -1 && generation != g.generation {
		return g, m, kerr.IllegalGeneration.Code
	}
	return g, m, 0
}

func clampDuration(ms int32, lo, hi time.Duration) time.Duration {
	return min(max(time.Duration(ms)*time.Millisecond, lo), hi)
}

func newMemberID(clientID string) string {
	var b [12]byte
	rand.Read(b[:])
	if len(clientID) > 100 {
		clientID = clientID[:100]
	}
	return clientID + "-" + hex.EncodeToString(b[:])
}

// joinGroup adds or refreshes a member and waits for the rebalance to
// complete.
func (c *conn) joinGroup(ctx context.Context, r *kmsg.JoinGroupRequest) kmsg.Response {
	resp := kmsg.NewPtrJoinGroupResponse()
	resp.Generation = -1
	fail := func(code int16) kmsg.Response {
		resp.ErrorCode = code
		return resp
	}
	if c.s.cfg.Vault() == nil {
		return fail(kerr.NotCoordinator.Code)
	}
	if messagevault.CheckCursorName(r.Group) != nil {
		return fail(kerr.InvalidGroupID.Code)
	}
	if len(r.Protocols) == 0 || r.ProtocolType == "" {
		return fail(kerr.InconsistentGroupProtocol.Code)
	}
	session := clampDuration(r.SessionTimeoutMillis, minSessionTime, maxSessionTime)
	if r.SessionTimeoutMillis < int32(minSessionTime/time.Millisecond) || r.SessionTimeoutMillis > int32(maxSessionTime/time.Millisecond) {
		return fail(kerr.InvalidSessionTimeout.Code)
	}
	rebalance := session
	if r.Version >= 1 {
		rebalance = clampDuration(r.RebalanceTimeoutMillis, session, maxRebalanceTime)
	}
	protocols, code := c.checkProtocols(r)
	if code != 0 {
		return fail(code)
	}
	co := &c.s.groups
	now := time.Now()
	co.mu.Lock()
	g := co.get(r.Group)
	if len(g.members) > 0 && g.protocolType != r.ProtocolType {
		co.mu.Unlock()
		return fail(kerr.InconsistentGroupProtocol.Code)
	}
	memberID := r.MemberID
	if memberID == "" && r.InstanceID != nil {
		// A static member back (group.instance.id): it takes its
		// place again instead of being a second member.
		for id, o := range g.members {
			if o.instanceID != nil && *o.instanceID == *r.InstanceID {
				memberID = id
			}
		}
	}
	m := g.members[memberID]
	switch {
	case memberID != "" && m == nil:
		co.mu.Unlock()
		return fail(kerr.UnknownMemberID.Code)
	case m != nil && m.owner != c.user.Name && !c.user.CanAdmin():
		co.mu.Unlock()
		return fail(kerr.GroupAuthorizationFailed.Code)
	case m == nil && (co.members >= maxMembers || co.byUser[c.user.Name] >= maxMembersPerUser):
		co.mu.Unlock()
		return fail(kerr.GroupMaxSizeReached.Code)
	case m == nil:
		m = &member{id: newMemberID(c.clientID), owner: c.user.Name}
		g.members[m.id] = m
		g.order = append(g.order, m.id)
		co.members++
		if co.byUser == nil {
			co.byUser = map[string]int{}
		}
		co.byUser[m.owner]++
	}
	g.protocolType = r.ProtocolType
	m.clientID, m.host, m.instanceID = c.clientID, c.c.RemoteAddr().String(), r.InstanceID
	m.session, m.rebalance, m.protocols = session, rebalance, protocols
	g.rebalance(now)
	m.joined = true
	phase := g.join
	if g.allJoined() {
		g.complete(now)
	}
	co.mu.Unlock()

	select {
	case <-phase.done:
	case <-ctx.Done():
		return fail(kerr.RebalanceInProgress.Code)
	}
	if !phase.joined[m.id] {
		return fail(kerr.UnknownMemberID.Code)
	}
	resp.Generation, resp.Protocol, resp.ProtocolType = phase.generation, kmsg.StringPtr(phase.protocol), kmsg.StringPtr(r.ProtocolType)
	resp.LeaderID, resp.MemberID = phase.leader, m.id
	if m.id == phase.leader {
		resp.Members = phase.members
	}
	return resp
}

// checkProtocols checks a join's protocols, and returns a copy of them
// (the request's bytes are not kept). A consumer's subscription names
// its topics, which the user must be able to read; other protocol types
// (Kafka Connect's, for one) need all:read.
func (c *conn) checkProtocols(r *kmsg.JoinGroupRequest) ([]kmsg.JoinGroupRequestProtocol, int16) {
	size := 0
	out := make([]kmsg.JoinGroupRequestProtocol, len(r.Protocols))
	for i, p := range r.Protocols {
		size += len(p.Name) + len(p.Metadata)
		if size > maxMemberMetadata {
			return nil, kerr.InvalidRequest.Code
		}
		if r.ProtocolType == "consumer" {
			var meta kmsg.ConsumerMemberMetadata
			if err := meta.ReadFrom(p.Metadata); err != nil {
				return nil, kerr.InconsistentGroupProtocol.Code
			}
			if len(meta.Topics) == 0 && !c.user.CanReadAll() {
				return nil, kerr.GroupAuthorizationFailed.Code
			}
			for _, topic := range meta.Topics {
				if !c.user.CanRead(topic) {
					return nil, kerr.GroupAuthorizationFailed.Code
				}
			}
		} else if !c.user.CanReadAll() {
			return nil, kerr.GroupAuthorizationFailed.Code
		}
		out[i] = kmsg.JoinGroupRequestProtocol{Name: p.Name, Metadata: bytes.Clone(p.Metadata)}
	}
	return out, 0
}

// syncGroup takes the leader's assignments, and answers each member with
// its own once they are in.
func (c *conn) syncGroup(ctx context.Context, r *kmsg.SyncGroupRequest) kmsg.Response {
	resp := kmsg.NewPtrSyncGroupResponse()
	if c.s.cfg.Vault() == nil {
		resp.ErrorCode = kerr.NotCoordinator.Code
		return resp
	}
	co := &c.s.groups
	co.mu.Lock()
	g, m, code := co.member(c.user, r.Group, r.MemberID, r.Generation)
	if code == 0 && g.state == statePreparing {
		code = kerr.RebalanceInProgress.Code
	}
	if code != 0 {
		co.mu.Unlock()
		resp.ErrorCode = code
		return resp
	}
	resp.ProtocolType, resp.Protocol = kmsg.StringPtr(g.protocolType), kmsg.StringPtr(g.protocol)
	if g.state == stateCompleting && m.id == g.leader {
		for _, a := range r.GroupAssignment {
			if o := g.members[a.MemberID]; o != nil && len(a.MemberAssignment) <= maxMemberMetadata {
				o.assignment = bytes.Clone(a.MemberAssignment)
			}
		}
		g.state = stateStable
		close(g.sync.done)
		g.sync = nil
	}
	if g.state == stateStable {
		resp.MemberAssignment = m.assignment
		co.mu.Unlock()
		return resp
	}
	phase := g.sync
	co.mu.Unlock()
	select {
	case <-phase.done:
	case <-ctx.Done():
		resp.ErrorCode = kerr.RebalanceInProgress.Code
		return resp
	}
	co.mu.Lock()
	defer co.mu.Unlock()
	if phase.rebalance {
		resp.ErrorCode = kerr.RebalanceInProgress.Code
		return resp
	}
	resp.MemberAssignment = m.assignment
	return resp
}

// heartbeat keeps a member in its group, and tells it of a rebalance.
func (c *conn) heartbeat(r *kmsg.HeartbeatRequest) kmsg.Response {
	resp := kmsg.NewPtrHeartbeatResponse()
	if c.s.cfg.Vault() == nil {
		resp.ErrorCode = kerr.NotCoordinator.Code
		return resp
	}
	co := &c.s.groups
	co.mu.Lock()
	defer co.mu.Unlock()
	g, m, code := co.member(c.user, r.Group, r.MemberID, r.Generation)
	if m != nil {
		m.expires = time.Now().Add(m.session)
	}
	if code == 0 && g.state == statePreparing {
		code = kerr.RebalanceInProgress.Code
	}
	resp.ErrorCode = code
	return resp
}

// leaveGroup removes members, and the others rebalance.
func (c *conn) leaveGroup(r *kmsg.LeaveGroupRequest) kmsg.Response {
	resp := kmsg.NewPtrLeaveGroupResponse()
	if c.s.cfg.Vault() == nil {
		resp.ErrorCode = kerr.NotCoordinator.Code
		return resp
	}
	co := &c.s.groups
	co.mu.Lock()
	defer co.mu.Unlock()
	ids := []string{r.MemberID}
	if r.Version >= 3 {
		ids = ids[:0]
		for _, m := range r.Members {
			id := m.MemberID
			if g := co.groups[r.Group]; id == "" && m.InstanceID != nil && g != nil {
				// A static member leaves by its instance id.
				for mid, o := range g.members {
					if o.instanceID != nil && *o.instanceID == *m.InstanceID {
						id = mid
					}
				}
			}
			ids = append(ids, id)
		}
	}
	now := time.Now()
	for _, id := range ids {
		_, _, code := co.member(c.user, r.Group, id, -1)
		if code == 0 {
			co.groups[r.Group].remove(id, now)
		}
		if r.Version < 3 {
			resp.ErrorCode = code
		} else {
			resp.Members = append(resp.Members, kmsg.LeaveGroupResponseMember{MemberID: id, ErrorCode: code})
		}
	}
	return resp
}

// describeGroups shows groups' state and members, to users who may read
// every stream.
func (c *conn) describeGroups(r *kmsg.DescribeGroupsRequest) kmsg.Response {
	resp := kmsg.NewPtrDescribeGroupsResponse()
	co := &c.s.groups
	co.mu.Lock()
	defer co.mu.Unlock()
	for _, id := range r.Groups {
		d := kmsg.NewDescribeGroupsResponseGroup()
		d.Group = id
		switch g := co.groups[id]; {
		case !c.user.CanReadAll():
			d.ErrorCode = kerr.GroupAuthorizationFailed.Code
		case messagevault.CheckCursorName(id) != nil:
			d.ErrorCode = kerr.InvalidGroupID.Code
		case g == nil:
			d.State = "Dead"
		default:
			d.State, d.ProtocolType, d.Protocol = g.state, g.protocolType, g.protocol
			for _, mid := range g.order {
				m := g.members[mid]
				dm := kmsg.NewDescribeGroupsResponseGroupMember()
				dm.MemberID, dm.InstanceID, dm.ClientID, dm.ClientHost = m.id, m.instanceID, m.clientID, m.host
				for _, p := range m.protocols {
					if p.Name == g.protocol {
						dm.ProtocolMetadata = p.Metadata
					}
				}
				dm.MemberAssignment = m.assignment
				d.Members = append(d.Members, dm)
			}
		}
		resp.Groups = append(resp.Groups, d)
	}
	return resp
}

// listGroups lists the groups, to users who may read every stream (to
// others, none).
func (c *conn) listGroups(r *kmsg.ListGroupsRequest) kmsg.Response {
	resp := kmsg.NewPtrListGroupsResponse()
	if !c.user.CanReadAll() {
		return resp
	}
	co := &c.s.groups
	co.mu.Lock()
	defer co.mu.Unlock()
	ids := make([]string, 0, len(co.groups))
	for id := range co.groups {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		g := co.groups[id]
		if len(r.StatesFilter) > 0 && !slices.Contains(r.StatesFilter, g.state) {
			continue
		}
		resp.Groups = append(resp.Groups, kmsg.ListGroupsResponseGroup{Group: id, ProtocolType: g.protocolType, GroupState: g.state})
	}
	return resp
}

// findCoordinator names this listener as every group's coordinator, on
// the node that leads (the one that writes the groups' cursors).
func (c *conn) findCoordinator(r *kmsg.FindCoordinatorRequest) kmsg.Response {
	resp := kmsg.NewPtrFindCoordinatorResponse()
	resp.NodeID, resp.Port = -1, -1
	switch {
	case r.CoordinatorType != 0:
		resp.ErrorCode = kerr.CoordinatorNotAvailable.Code
		resp.ErrorMessage = kmsg.StringPtr("transactions are not supported")
	case messagevault.CheckCursorName(r.CoordinatorKey) != nil:
		resp.ErrorCode = kerr.InvalidGroupID.Code
		resp.ErrorMessage = kmsg.StringPtr("a group id is a cursor name: 1 to 64 of a-z, 0-9, '.', '_' and '-'")
	case c.s.cfg.Vault() == nil:
		resp.ErrorCode = kerr.CoordinatorNotAvailable.Code
		resp.ErrorMessage = kmsg.StringPtr("this node does not lead the cluster: use the leader's Kafka listener")
	default:
		resp.NodeID, resp.Host, resp.Port = 0, c.s.host, c.s.port
	}
	return resp
}
