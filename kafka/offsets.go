package kafka

import (
	"context"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/stream"
)

// A group's committed offset in a topic is the stream's cursor named
// after the group: GET /streams/{stream}/cursors/{group} shows it, and a
// consumer of the HTTP API or of storage can resume from it. Committed
// metadata strings are not kept.

// offsetCommit stores each partition's offset as the group's cursor, once
// it is checked to be a record's start (or the committed position).
func (c *conn) offsetCommit(ctx context.Context, r *kmsg.OffsetCommitRequest) kmsg.Response {
	resp := kmsg.NewPtrOffsetCommitResponse()
	code := int16(0)
	v := c.s.cfg.Vault()
	var cursors messagevault.Cursors
	switch {
	case v == nil:
		code = kerr.NotCoordinator.Code
	case messagevault.CheckCursorName(r.Group) != nil:
		code = kerr.InvalidGroupID.Code
	default:
		var ok bool
		if cursors, ok = v.Storage().(messagevault.Cursors); !ok {
			code = kerr.KafkaStorageError.Code
		}
	}
	if code == 0 {
		co := &c.s.groups
		co.mu.Lock()
		if r.Generation != -1 || r.MemberID != "" {
			// As Kafka's coordinator: members commit while a rebalance
			// is prepared (as they give their partitions up), not
			// while its assignments are awaited.
			g, _, mcode := co.member(c.user, r.Group, r.MemberID, r.Generation)
			if mcode == 0 && g.state == stateCompleting {
				mcode = kerr.RebalanceInProgress.Code
			}
			code = mcode
		} else if g := co.groups[r.Group]; g != nil && len(g.members) > 0 {
			// A commit from outside the group, while it has members:
			// refused, as Kafka does.
			code = kerr.UnknownMemberID.Code
		}
		co.mu.Unlock()
	}
	for _, t := range r.Topics {
		rt := kmsg.NewOffsetCommitResponseTopic()
		rt.Topic = t.Topic
		for _, p := range t.Partitions {
			pcode := code
			if pcode == 0 {
				pcode, _ = c.mayRead(t.Topic, p.Partition)
			}
			if pcode == 0 {
				if err := c.commit(ctx, cursors, t.Topic, r.Group, p.Offset); err != nil {
					c.s.cfg.Logger.Info("kafka: offset commit refused", "group", r.Group, "topic", t.Topic, "offset", p.Offset, "err", err)
					pcode = kerr.OffsetOutOfRange.Code
					if !errors.Is(err, errBadOffset) {
						pcode = kerr.KafkaStorageError.Code
					}
				}
			}
			rt.Partitions = append(rt.Partitions, kmsg.OffsetCommitResponseTopicPartition{Partition: p.Partition, ErrorCode: pcode})
		}
		resp.Topics = append(resp.Topics, rt)
	}
	return resp
}

// errBadOffset reports a committed offset that is no position to resume
// from.
var errBadOffset = errors.New("not a position to resume from")

// commit writes group's cursor of stream name at offset, which must be a
// record's start or the committed position, and not trimmed. Kafka
// clients commit the offset of the last record they consumed plus one,
// which here is the second byte of that record: such an offset stands
// for the start of the record after it.
func (c *conn) commit(ctx context.Context, cursors messagevault.Cursors, name, group string, offset int64) error {
	reader, closeReader, err := c.s.reader(ctx, name)
	if errors.Is(err, messagevault.ErrStreamNotFound) {
		if offset != 0 {
			return fmt.Errorf("offset %d of a stream not yet written: %w", offset, errBadOffset)
		}
	} else if err != nil {
		return err
	} else {
		defer closeReader()
		if offset, err = resumeAt(ctx, reader, offset); err != nil {
			return err
		}
	}
	_, err = cursors.WriteCursor(ctx, name, group, offset, "")
	return err
}

// resumeAt returns the position a consumer that commits offset resumes
// from: offset itself if a record starts there (or it is the committed
// position), the next record's start if offset is one past a record's
// start, and errBadOffset otherwise.
func resumeAt(ctx context.Context, reader *stream.Reader, offset int64) (int64, error) {
	e, err := reader.Extent(ctx)
	if err != nil {
		return 0, err
	}
	if offset < e.Start || offset > e.Position {
		return 0, fmt.Errorf("offset %d outside [%d, %d]: %w", offset, e.Start, e.Position, errBadOffset)
	}
	if offset == e.Position {
		return offset, nil
	}
	for _, err := range reader.Records(ctx, offset, e.Position) {
		if err == nil {
			return offset, nil
		}
		if !errors.Is(err, messagevault.ErrNotRecordStart) {
			return 0, err
		}
		break
	}
	if offset-1 >= e.Start {
		for rec, err := range reader.Records(ctx, offset-1, e.Position) {
			if err == nil {
				return rec.Offset + int64(rec.Size()), nil
			}
			if !errors.Is(err, messagevault.ErrNotRecordStart) {
				return 0, err
			}
			break
		}
	}
	return 0, fmt.Errorf("offset %d is inside a record: %w", offset, errBadOffset)
}

// offsetFetch answers the group's cursors; -1 where it has none. Without
// a list of topics (v2 on), it answers every readable stream where the
// group has a cursor.
func (c *conn) offsetFetch(ctx context.Context, r *kmsg.OffsetFetchRequest) kmsg.Response {
	resp := kmsg.NewPtrOffsetFetchResponse()
	cursors, ok := c.s.cfg.Storage.(messagevault.Cursors)
	if v := c.s.cfg.Vault(); v != nil {
		cursors, ok = v.Storage().(messagevault.Cursors)
	}
	switch {
	case messagevault.CheckCursorName(r.Group) != nil:
		resp.ErrorCode = kerr.InvalidGroupID.Code
		return resp
	case !ok:
		resp.ErrorCode = kerr.KafkaStorageError.Code
		return resp
	}
	topics := r.Topics
	if topics == nil && r.Version >= 2 {
		if v := c.s.cfg.Vault(); v != nil {
			infos, err := v.Streams(ctx)
			if err != nil {
				resp.ErrorCode = kerr.KafkaStorageError.Code
				return resp
			}
			for _, in := range infos {
				if c.user.CanRead(in.Name) {
					if _, err := cursors.ReadCursor(ctx, in.Name, r.Group); err == nil {
						topics = append(topics, kmsg.OffsetFetchRequestTopic{Topic: in.Name, Partitions: []int32{0}})
					}
				}
			}
		}
	}
	for _, t := range topics {
		rt := kmsg.NewOffsetFetchResponseTopic()
		rt.Topic = t.Topic
		for _, p := range t.Partitions {
			rp := kmsg.NewOffsetFetchResponseTopicPartition()
			rp.Partition, rp.Offset, rp.LeaderEpoch = p, -1, -1
			if code, _ := c.mayRead(t.Topic, p); code != 0 {
				rp.ErrorCode = code
			} else if cur, err := cursors.ReadCursor(ctx, t.Topic, r.Group); err == nil {
				rp.Offset = cur.Position
			} else if !errors.Is(err, messagevault.ErrCursorNotFound) {
				rp.ErrorCode = kerr.KafkaStorageError.Code
			}
			rt.Partitions = append(rt.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, rt)
	}
	return resp
}
