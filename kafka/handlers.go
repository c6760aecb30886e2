package kafka

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"maps"
	"slices"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/auth"
	"github.com/messagevault/messagevault/stream"
)

// supported gives the versions served of each API: up to what this
// package maps (Produce v13 names topics by id, which streams lack).
var supported = map[kmsg.Key][2]int16{
	kmsg.ApiVersions:      {0, 3},
	kmsg.SASLHandshake:    {0, 1},
	kmsg.SASLAuthenticate: {0, 2},
	kmsg.Metadata:         {0, 12},
	kmsg.Produce:          {3, 11},
	kmsg.Fetch:            {4, 12},
	kmsg.ListOffsets:      {1, 6},
}

// handle answers one request; a nil response sends nothing (acks=0), an
// error closes the connection.
func (c *conn) handle(ctx context.Context, req kmsg.Request) (kmsg.Response, error) {
	key := kmsg.Key(req.Key())
	if v, ok := supported[key]; !ok || req.GetVersion() < v[0] || req.GetVersion() > v[1] {
		return nil, fmt.Errorf("%s v%d is not supported", key.Name(), req.GetVersion())
	}
	switch r := req.(type) {
	case *kmsg.ApiVersionsRequest:
		return c.apiVersions(), nil
	case *kmsg.SASLHandshakeRequest:
		return c.saslHandshake(r), nil
	case *kmsg.SASLAuthenticateRequest:
		return c.saslAuthenticate(r)
	}
	if c.user == nil {
		return nil, fmt.Errorf("%s before SASL authentication", key.Name())
	}
	switch r := req.(type) {
	case *kmsg.MetadataRequest:
		return c.metadata(ctx, r), nil
	case *kmsg.ProduceRequest:
		return c.produce(ctx, r), nil
	case *kmsg.FetchRequest:
		return c.fetch(ctx, r), nil
	case *kmsg.ListOffsetsRequest:
		return c.listOffsets(ctx, r), nil
	}
	return nil, fmt.Errorf("%s is not supported", key.Name())
}

func (c *conn) apiVersions() *kmsg.ApiVersionsResponse {
	resp := kmsg.NewPtrApiVersionsResponse()
	keys := slices.Sorted(maps.Keys(supported))
	for _, k := range keys {
		v := supported[k]
		resp.ApiKeys = append(resp.ApiKeys, kmsg.ApiVersionsResponseApiKey{ApiKey: k.Int16(), MinVersion: v[0], MaxVersion: v[1]})
	}
	return resp
}

func (c *conn) saslHandshake(r *kmsg.SASLHandshakeRequest) kmsg.Response {
	resp := kmsg.NewPtrSASLHandshakeResponse()
	resp.SupportedMechanisms = []string{"PLAIN"}
	if r.Mechanism != "PLAIN" {
		resp.ErrorCode = kerr.UnsupportedSaslMechanism.Code
		return resp
	}
	c.mech = r.Mechanism
	return resp
}

func (c *conn) saslAuthenticate(r *kmsg.SASLAuthenticateRequest) (kmsg.Response, error) {
	resp := kmsg.NewPtrSASLAuthenticateResponse()
	if c.mech != "PLAIN" {
		return nil, errors.New("SaslAuthenticate without a PLAIN handshake")
	}
	// PLAIN: authorization id, NUL, user, NUL, password.
	parts := bytes.SplitN(r.SASLAuthBytes, []byte{0}, 3)
	if len(parts) != 3 {
		resp.ErrorCode = kerr.SaslAuthenticationFailed.Code
		resp.ErrorMessage = kmsg.StringPtr("SASL/PLAIN: want authzid NUL user NUL password")
		return resp, nil
	}
	p, err := c.s.cfg.Users.Authenticate(string(parts[1]), string(parts[2]))
	if err != nil {
		resp.ErrorCode = kerr.SaslAuthenticationFailed.Code
		msg := "wrong user name or password"
		if errors.Is(err, auth.ErrBusy) {
			msg = "too many password checks at once; try again"
		}
		resp.ErrorMessage = kmsg.StringPtr(msg)
		return resp, nil
	}
	c.user = &p
	return resp, nil
}

// metadata names this listener as the only broker and every valid topic
// asked for as one partition it leads: streams are created by their
// first write. Without a list of topics it gives the existing streams.
func (c *conn) metadata(ctx context.Context, r *kmsg.MetadataRequest) kmsg.Response {
	resp := kmsg.NewPtrMetadataResponse()
	resp.Brokers = []kmsg.MetadataResponseBroker{{NodeID: 0, Host: c.s.host, Port: c.s.port}}
	resp.ClusterID = kmsg.StringPtr("messagevault")
	resp.ControllerID = 0
	var names []string
	if r.Topics == nil {
		if v := c.s.cfg.Vault(); v != nil {
			infos, err := v.Streams(ctx)
			if err == nil {
				for _, in := range infos {
					if c.user.CanRead(in.Name) || c.user.CanWrite(in.Name) {
						names = append(names, in.Name) // no others: their names are not the user's to see
					}
				}
			}
		}
	} else {
		for _, t := range r.Topics {
			if t.Topic != nil {
				names = append(names, *t.Topic)
			}
		}
	}
	for _, name := range names {
		t := kmsg.NewMetadataResponseTopic()
		t.Topic = kmsg.StringPtr(name)
		n, err := messagevault.NormalizeStreamName(name)
		switch {
		case err != nil || n != name:
			t.ErrorCode = kerr.InvalidTopicException.Code
		case !c.user.CanRead(n) && !c.user.CanWrite(n):
			t.ErrorCode = kerr.TopicAuthorizationFailed.Code
		default:
			p := kmsg.NewMetadataResponseTopicPartition()
			p.Partition, p.Leader, p.Replicas, p.ISR = 0, 0, []int32{0}, []int32{0}
			t.Partitions = []kmsg.MetadataResponseTopicPartition{p}
		}
		resp.Topics = append(resp.Topics, t)
	}
	return resp
}

// produce appends each partition's records to its stream, and answers
// with the base offset of each once it is durable.
func (c *conn) produce(ctx context.Context, r *kmsg.ProduceRequest) kmsg.Response {
	resp := kmsg.NewPtrProduceResponse()
	for _, t := range r.Topics {
		rt := kmsg.NewProduceResponseTopic()
		rt.Topic = t.Topic
		for _, p := range t.Partitions {
			rp := kmsg.NewProduceResponseTopicPartition()
			rp.Partition = p.Partition
			rp.BaseOffset = -1
			rp.LogAppendTime = -1
			code, msg, base := c.produceTo(ctx, t.Topic, p.Partition, p.Records)
			if code != 0 {
				c.s.cfg.Logger.Debug("kafka: produce refused", "topic", t.Topic, "code", code, "err", msg)
			}
			rp.ErrorCode, rp.BaseOffset = code, base
			if msg != "" {
				rp.ErrorMessage = kmsg.StringPtr(msg)
			}
			rt.Partitions = append(rt.Partitions, rp)
		}
		resp.Topics = append(resp.Topics, rt)
	}
	if r.Acks == 0 {
		return nil
	}
	return resp
}

// produceTo appends the record batches of one partition and returns an
// error code (0: none), a message, and the first record's offset.
func (c *conn) produceTo(ctx context.Context, topic string, partition int32, records []byte) (int16, string, int64) {
	name, err := messagevault.NormalizeStreamName(topic)
	if err != nil || name != topic {
		return kerr.InvalidTopicException.Code, fmt.Sprintf("topic %q: not a valid stream name (lower case letters, digits and dashes)", topic), -1
	}
	if partition != 0 {
		return kerr.UnknownTopicOrPartition.Code, "a topic has one partition, 0", -1
	}
	if !c.user.CanWrite(name) {
		return kerr.TopicAuthorizationFailed.Code, fmt.Sprintf("user %q may not write %s (claim %s:write)", c.user.Name, name, name), -1
	}
	msgs, code, msg := decodeBatches(records)
	if code != 0 {
		return code, msg, -1
	}
	v := c.s.cfg.Vault()
	if v == nil {
		return kerr.NotLeaderForPartition.Code, "this node does not lead the cluster: produce to the leader's Kafka listener", -1
	}
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	res, err := v.AppendChecked(actx, name, msgs, stream.AppendOptions{})
	if err != nil {
		if errors.Is(err, messagevault.ErrInvalidMessage) {
			return kerr.InvalidRecord.Code, err.Error(), -1
		}
		return kerr.UnknownServerError.Code, err.Error(), -1
	}
	return 0, "", res.Offsets[0]
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// decodeBatches reads the v2 record batches of a produce into messages,
// checking each batch's CRC-32C. It refuses compressed batches, producer
// ids, and records with headers (v1 records have none), with an error
// code and a message saying so.
func decodeBatches(b []byte) ([]messagevault.Message, int16, string) {
	var msgs []messagevault.Message
	for len(b) > 0 {
		if len(b) < 12 {
			return nil, kerr.CorruptMessage.Code, "truncated record batch"
		}
		n := int(int32(binary.BigEndian.Uint32(b[8:]))) + 12
		if n < 17 || n > len(b) {
			return nil, kerr.CorruptMessage.Code, "record batch length out of bounds"
		}
		if magic := b[16]; magic < 2 {
			if n < legacyMin {
				return nil, kerr.CorruptMessage.Code, "message length out of bounds"
			}
			// A message of the older formats (magic 0 and 1), which
			// clients use with brokers they take for older ones.
			m, code, msg := decodeLegacy(b[:n])
			if code != 0 {
				return nil, code, msg
			}
			msgs = append(msgs, m)
			b = b[n:]
			continue
		}
		if n < 61 {
			return nil, kerr.CorruptMessage.Code, "record batch length out of bounds"
		}
		var batch kmsg.RecordBatch
		if err := batch.ReadFrom(b[:n]); err != nil {
			return nil, kerr.CorruptMessage.Code, fmt.Sprintf("record batch: %v", err)
		}
		if batch.Magic != 2 {
			return nil, kerr.UnsupportedForMessageFormat.Code, fmt.Sprintf("record batch of magic %d: want 2", batch.Magic)
		}
		if uint32(batch.CRC) != crc32.Checksum(b[21:n], castagnoli) {
			return nil, kerr.CorruptMessage.Code, "record batch: CRC-32C mismatch"
		}
		if batch.Attributes&0x07 != 0 {
			return nil, kerr.UnsupportedCompressionType.Code, "compressed record batches are not supported yet: produce without compression"
		}
		if batch.Attributes&0x10 != 0 || batch.Attributes&0x20 != 0 {
			return nil, kerr.InvalidRecord.Code, "transactional and control batches are not supported"
		}
		if batch.ProducerID >= 0 {
			return nil, kerr.InvalidRecord.Code, "idempotent producers are not supported yet: disable idempotence"
		}
		recs := batch.Records
		for i := int32(0); i < batch.NumRecords; i++ {
			size, k := binary.Varint(recs)
			if k <= 0 || size < 0 || int64(len(recs)-k) < size {
				return nil, kerr.CorruptMessage.Code, "truncated record"
			}
			var rec kmsg.Record
			if err := rec.ReadFrom(recs[:k+int(size)]); err != nil {
				return nil, kerr.CorruptMessage.Code, fmt.Sprintf("record: %v", err)
			}
			if len(rec.Headers) > 0 {
				return nil, kerr.InvalidRecord.Code, "records with headers are refused: MessageVault's records (format v1) have none"
			}
			msgs = append(msgs, messagevault.NewMessage(rec.Key, rec.Value, 0))
			recs = recs[k+int(size):]
		}
		b = b[n:]
	}
	if len(msgs) == 0 {
		return nil, kerr.InvalidRecord.Code, "no records"
	}
	return msgs, 0, ""
}

// legacyMin is the size of the smallest message of the older formats:
// offset, size, CRC, magic, attributes, and the lengths of a null key and
// a null value.
const legacyMin = 8 + 4 + 4 + 1 + 1 + 4 + 4

// decodeLegacy reads one message of the formats before record batches
// (magic 0 and 1): offset, size, CRC-32 (IEEE) of the rest, magic,
// attributes, a timestamp in magic 1, then key and value, each with an
// int32 length (-1: null).
func decodeLegacy(b []byte) (messagevault.Message, int16, string) {
	if uint32(binary.BigEndian.Uint32(b[12:])) != crc32.ChecksumIEEE(b[16:]) {
		return messagevault.Message{}, kerr.CorruptMessage.Code, "message: CRC mismatch"
	}
	magic, attrs := b[16], b[17]
	if attrs&0x07 != 0 {
		return messagevault.Message{}, kerr.UnsupportedCompressionType.Code, "compressed messages are not supported yet: produce without compression"
	}
	rest := b[18:]
	if magic == 1 {
		if len(rest) < 8 {
			return messagevault.Message{}, kerr.CorruptMessage.Code, "truncated message"
		}
		rest = rest[8:]
	}
	field := func() ([]byte, bool) {
		if len(rest) < 4 {
			return nil, false
		}
		n := int32(binary.BigEndian.Uint32(rest))
		rest = rest[4:]
		if n < 0 {
			return nil, true
		}
		if int(n) > len(rest) {
			return nil, false
		}
		f := rest[:n]
		rest = rest[n:]
		return f, true
	}
	key, ok1 := field()
	value, ok2 := field()
	if !ok1 || !ok2 || len(rest) != 0 {
		return messagevault.Message{}, kerr.CorruptMessage.Code, "truncated message"
	}
	return messagevault.NewMessage(key, value, 0), 0, ""
}
