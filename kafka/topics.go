package kafka

import (
	"context"
	"errors"
	"fmt"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/messagevault/messagevault"
)

// createTopics creates empty streams, for users who may write them. A
// topic has one partition and one replica (storage keeps the copies);
// asking for more, or for topic configs, is refused with a message.
func (c *conn) createTopics(ctx context.Context, r *kmsg.CreateTopicsRequest) kmsg.Response {
	resp := kmsg.NewPtrCreateTopicsResponse()
	v := c.s.cfg.Vault()
	for _, t := range r.Topics {
		rt := kmsg.NewCreateTopicsResponseTopic()
		rt.Topic, rt.NumPartitions, rt.ReplicationFactor = t.Topic, 1, 1
		fail := func(code int16, msg string) {
			rt.ErrorCode, rt.ErrorMessage = code, kmsg.StringPtr(msg)
			rt.NumPartitions, rt.ReplicationFactor = -1, -1
		}
		name, err := messagevault.NormalizeStreamName(t.Topic)
		switch {
		case err != nil || name != t.Topic:
			fail(kerr.InvalidTopicException.Code, fmt.Sprintf("topic %q: not a valid stream name (lower case letters, digits and dashes)", t.Topic))
		case !c.user.CanWrite(name):
			fail(kerr.TopicAuthorizationFailed.Code, fmt.Sprintf("user %q may not create %s (claim %s:write)", c.user.Name, name, name))
		case t.NumPartitions != -1 && t.NumPartitions != 1 || len(t.ReplicaAssignment) > 1:
			fail(kerr.InvalidPartitions.Code, "a topic has one partition")
		case t.ReplicationFactor != -1 && t.ReplicationFactor != 1:
			fail(kerr.InvalidReplicationFactor.Code, "a topic has one replica: storage keeps the copies")
		case len(t.Configs) > 0:
			fail(kerr.InvalidConfig.Code, "topic configs are not supported: retention is set on the server")
		case v == nil:
			fail(kerr.NotController.Code, "this node does not lead the cluster: use the leader's Kafka listener")
		case r.ValidateOnly:
		default:
			created, err := v.CreateStream(ctx, name)
			switch {
			case err != nil:
				c.s.cfg.Logger.Warn("kafka: create topic", "topic", name, "err", err)
				fail(kerr.UnknownServerError.Code, err.Error())
			case !created:
				fail(kerr.TopicAlreadyExists.Code, fmt.Sprintf("stream %s exists", name))
			default:
				c.s.cfg.Logger.Info("created a stream", "stream", name, "by", c.user.Name, "through", "kafka")
			}
		}
		resp.Topics = append(resp.Topics, rt)
	}
	return resp
}

// deleteTopics deletes streams and their data, for users with all:write
// (as DELETE /streams/{stream}).
func (c *conn) deleteTopics(ctx context.Context, r *kmsg.DeleteTopicsRequest) kmsg.Response {
	resp := kmsg.NewPtrDeleteTopicsResponse()
	v := c.s.cfg.Vault()
	for _, topic := range r.TopicNames {
		rt := kmsg.NewDeleteTopicsResponseTopic()
		rt.Topic = kmsg.StringPtr(topic)
		fail := func(code int16, msg string) {
			rt.ErrorCode, rt.ErrorMessage = code, kmsg.StringPtr(msg)
		}
		name, err := messagevault.NormalizeStreamName(topic)
		switch {
		case err != nil || name != topic:
			fail(kerr.InvalidTopicException.Code, fmt.Sprintf("topic %q: not a valid stream name", topic))
		case !c.user.CanAdmin():
			fail(kerr.TopicAuthorizationFailed.Code, fmt.Sprintf("user %q may not delete %s (claim all:write)", c.user.Name, name))
		case v == nil:
			fail(kerr.NotController.Code, "this node does not lead the cluster: use the leader's Kafka listener")
		default:
			err := v.DeleteStream(ctx, name)
			switch {
			case errors.Is(err, messagevault.ErrStreamNotFound):
				fail(kerr.UnknownTopicOrPartition.Code, fmt.Sprintf("no stream %s", name))
			case errors.Is(err, messagevault.ErrNotDeletable):
				fail(kerr.TopicDeletionDisabled.Code, err.Error())
			case err != nil:
				c.s.cfg.Logger.Warn("kafka: delete topic", "topic", name, "err", err)
				fail(kerr.UnknownServerError.Code, err.Error())
			default:
				c.s.cfg.Logger.Info("deleted a stream", "stream", name, "by", c.user.Name, "through", "kafka")
			}
		}
		resp.Topics = append(resp.Topics, rt)
	}
	return resp
}
