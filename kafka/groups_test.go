package kafka

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/messagevault/messagevault/auth"
	"github.com/messagevault/messagevault/mem"
	"github.com/messagevault/messagevault/vault"
)

// testConn returns a connection of a Server over a vault on memory,
// signed in with all:write, for calling the handlers directly.
func testConn(t *testing.T) *conn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	v := vault.New(mem.New(), vault.Config{})
	s, err := New(ln, Config{Vault: func() *vault.Vault { return v }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		s.Close()
		v.Close()
	})
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	return &conn{s: s, c: a, user: &auth.Principal{Name: "test", Claims: []string{"all:write"}}, clientID: "test"}
}

func joinReq(group, member string, session time.Duration) *kmsg.JoinGroupRequest {
	r := kmsg.NewPtrJoinGroupRequest()
	r.Version = 5
	r.Group, r.MemberID, r.ProtocolType = group, member, "consumer"
	r.SessionTimeoutMillis = int32(session / time.Millisecond)
	r.RebalanceTimeoutMillis = int32(10 * time.Second / time.Millisecond)
	meta := kmsg.ConsumerMemberMetadata{Topics: []string{"orders"}}
	r.Protocols = []kmsg.JoinGroupRequestProtocol{{Name: "range", Metadata: meta.AppendTo(nil)}}
	return r
}

func heartbeat(c *conn, group, member string, gen int32) int16 {
	r := kmsg.NewPtrHeartbeatRequest()
	r.Group, r.MemberID, r.Generation = group, member, gen
	return c.heartbeat(r).(*kmsg.HeartbeatResponse).ErrorCode
}

func syncGroup(c *conn, group, member string, gen int32, assign map[string][]byte) *kmsg.SyncGroupResponse {
	r := kmsg.NewPtrSyncGroupRequest()
	r.Group, r.MemberID, r.Generation = group, member, gen
	for m, a := range assign {
		r.GroupAssignment = append(r.GroupAssignment, kmsg.SyncGroupRequestGroupAssignment{MemberID: m, MemberAssignment: a})
	}
	return c.syncGroup(context.Background(), r).(*kmsg.SyncGroupResponse)
}

// A member that stops sending heartbeats is removed after its session
// timeout; the member left is told to rebalance, joins again alone, and
// leads the next generation.
func TestSessionExpiryRebalances(t *testing.T) {
	c := testConn(t)
	ctx := context.Background()
	a := c.joinGroup(ctx, joinReq("g", "", time.Second)).(*kmsg.JoinGroupResponse)
	if a.ErrorCode != 0 || a.LeaderID != a.MemberID || a.Generation != 1 {
		t.Fatalf("first join: %+v", a)
	}
	if s := syncGroup(c, "g", a.MemberID, 1, map[string][]byte{a.MemberID: []byte("p0")}); s.ErrorCode != 0 || string(s.MemberAssignment) != "p0" {
		t.Fatalf("leader sync: %+v", s)
	}
	// b joins: a learns of the rebalance from its heartbeat, and joins
	// again; both answers come when both have joined.
	bDone := make(chan *kmsg.JoinGroupResponse)
	go func() { bDone <- c.joinGroup(ctx, joinReq("g", "", 10*time.Second)).(*kmsg.JoinGroupResponse) }()
	waitUntil(t, func() bool { return heartbeat(c, "g", a.MemberID, 1) == kerr.RebalanceInProgress.Code })
	a2 := c.joinGroup(ctx, joinReq("g", a.MemberID, time.Second)).(*kmsg.JoinGroupResponse)
	b := <-bDone
	if a2.Generation != 2 || b.Generation != 2 || a2.LeaderID != a.MemberID || len(a2.Members) != 2 || len(b.Members) != 0 {
		t.Fatalf("second generation: a %+v, b %+v", a2, b)
	}
	bSync := make(chan *kmsg.SyncGroupResponse)
	go func() { bSync <- syncGroup(c, "g", b.MemberID, 2, nil) }()
	syncGroup(c, "g", a.MemberID, 2, map[string][]byte{a.MemberID: []byte("p0"), b.MemberID: nil})
	if s := <-bSync; s.ErrorCode != 0 || len(s.MemberAssignment) != 0 {
		t.Fatalf("follower sync: %+v", s)
	}
	// a goes silent; b keeps beating, and is told to rebalance once a's
	// second has passed.
	start := time.Now()
	waitUntil(t, func() bool { return heartbeat(c, "g", b.MemberID, 2) == kerr.RebalanceInProgress.Code })
	if waited := time.Since(start); waited < 500*time.Millisecond {
		t.Fatalf("a was removed after %v, before its session timeout", waited)
	}
	b3 := c.joinGroup(ctx, joinReq("g", b.MemberID, 10*time.Second)).(*kmsg.JoinGroupResponse)
	if b3.ErrorCode != 0 || b3.Generation != 3 || b3.LeaderID != b.MemberID || len(b3.Members) != 1 {
		t.Fatalf("after a expired: %+v", b3)
	}
	if code := heartbeat(c, "g", a.MemberID, 2); code != kerr.UnknownMemberID.Code {
		t.Fatalf("a's heartbeat after it expired: %v; want UNKNOWN_MEMBER_ID", kerr.ErrorForCode(code))
	}
	if code := heartbeat(c, "g", b.MemberID, 2); code != kerr.IllegalGeneration.Code {
		t.Fatalf("a heartbeat of an old generation: %v; want ILLEGAL_GENERATION", kerr.ErrorForCode(code))
	}
}

// A group id that cannot name a cursor is refused.
func TestInvalidGroupID(t *testing.T) {
	c := testConn(t)
	if r := c.joinGroup(context.Background(), joinReq("Upper Case", "", time.Second)).(*kmsg.JoinGroupResponse); r.ErrorCode != kerr.InvalidGroupID.Code {
		t.Fatalf("join: %v", kerr.ErrorForCode(r.ErrorCode))
	}
}

func waitUntil(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("not so after 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Only the user who joined a member acts for it; a user who may not
// read a topic of its subscription cannot join; a static member that
// joins again takes its place back.
func TestGroupMembersBelongToTheirUser(t *testing.T) {
	c := testConn(t)
	c.user = &auth.Principal{Name: "reader", Claims: []string{"orders:read"}}
	ctx := context.Background()
	req := joinReq("g", "", 10*time.Second)
	req.InstanceID = kmsg.StringPtr("instance-1")
	a := c.joinGroup(ctx, req).(*kmsg.JoinGroupResponse)
	if a.ErrorCode != 0 {
		t.Fatalf("join: %v", kerr.ErrorForCode(a.ErrorCode))
	}
	other := *c
	other.user = &auth.Principal{Name: "other", Claims: []string{"orders:read"}}
	if code := heartbeat(&other, "g", a.MemberID, a.Generation); code != kerr.GroupAuthorizationFailed.Code {
		t.Fatalf("another user's heartbeat for the member: %v; want GROUP_AUTHORIZATION_FAILED", kerr.ErrorForCode(code))
	}
	leave := kmsg.NewPtrLeaveGroupRequest()
	leave.Group, leave.MemberID = "g", a.MemberID
	if code := other.leaveGroup(leave).(*kmsg.LeaveGroupResponse).ErrorCode; code != kerr.GroupAuthorizationFailed.Code {
		t.Fatalf("another user removes the member: %v; want GROUP_AUTHORIZATION_FAILED", kerr.ErrorForCode(code))
	}
	stranger := *c
	stranger.user = &auth.Principal{Name: "stranger", Claims: []string{"payments:read"}}
	if r := stranger.joinGroup(ctx, joinReq("g", "", 10*time.Second)).(*kmsg.JoinGroupResponse); r.ErrorCode != kerr.GroupAuthorizationFailed.Code {
		t.Fatalf("a user who may not read orders joins: %v; want GROUP_AUTHORIZATION_FAILED", kerr.ErrorForCode(r.ErrorCode))
	}
	again := c.joinGroup(ctx, req).(*kmsg.JoinGroupResponse)
	if again.ErrorCode != 0 || again.MemberID != a.MemberID || len(again.Members) != 1 {
		t.Fatalf("the static member again: %+v; want its member id %s back, alone", again, a.MemberID)
	}
}

// A member commits while a rebalance is being prepared (eager consumers
// commit as they give their partitions up), with its generation.
func TestCommitWhileRebalancing(t *testing.T) {
	c := testConn(t)
	ctx := context.Background()
	a := c.joinGroup(ctx, joinReq("g", "", 10*time.Second)).(*kmsg.JoinGroupResponse)
	syncGroup(c, "g", a.MemberID, a.Generation, map[string][]byte{a.MemberID: []byte("p0")})
	go c.joinGroup(ctx, joinReq("g", "", 10*time.Second)) // b: a rebalance begins
	waitUntil(t, func() bool { return heartbeat(c, "g", a.MemberID, a.Generation) == kerr.RebalanceInProgress.Code })
	r := kmsg.NewPtrOffsetCommitRequest()
	r.Group, r.MemberID, r.Generation = "g", a.MemberID, a.Generation
	r.Topics = []kmsg.OffsetCommitRequestTopic{{Topic: "orders", Partitions: []kmsg.OffsetCommitRequestTopicPartition{{Partition: 0, Offset: 0}}}}
	resp := c.offsetCommit(ctx, r).(*kmsg.OffsetCommitResponse)
	if code := resp.Topics[0].Partitions[0].ErrorCode; code != 0 {
		t.Fatalf("commit while the rebalance is prepared: %v", kerr.ErrorForCode(code))
	}
}
