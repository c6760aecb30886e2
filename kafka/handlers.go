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
	kmsg.InitProducerID:   {0, 4},
	kmsg.FindCoordinator:  {0, 3},
	kmsg.JoinGroup:        {0, 9},
	kmsg.SyncGroup:        {0, 5},
	kmsg.Heartbeat:        {0, 4},
	kmsg.LeaveGroup:       {0, 5},
	kmsg.OffsetCommit:     {2, 8},
	kmsg.OffsetFetch:      {1, 7},
	kmsg.DescribeGroups:   {0, 5},
	kmsg.ListGroups:       {0, 4},
	kmsg.CreateTopics:     {0, 7},
	kmsg.DeleteTopics:     {0, 5},
}

// handle answers one request; a nil response sends nothing (acks=0), an
// error closes the connection.
func (c *conn) handle(ctx context.Context, req kmsg.Request) (kmsg.Response, error) {
	key := kmsg.Key(req.Key())
	if !c.supports(req) {
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
	case *kmsg.InitProducerIDRequest:
		return c.initProducerID(r), nil
	case *kmsg.FindCoordinatorRequest:
		return c.findCoordinator(r), nil
	case *kmsg.JoinGroupRequest:
		return c.joinGroup(ctx, r), nil
	case *kmsg.SyncGroupRequest:
		return c.syncGroup(ctx, r), nil
	case *kmsg.HeartbeatRequest:
		return c.heartbeat(r), nil
	case *kmsg.LeaveGroupRequest:
		return c.leaveGroup(r), nil
	case *kmsg.OffsetCommitRequest:
		return c.offsetCommit(ctx, r), nil
	case *kmsg.OffsetFetchRequest:
		return c.offsetFetch(ctx, r), nil
	case *kmsg.DescribeGroupsRequest:
		return c.describeGroups(r), nil
	case *kmsg.ListGroupsRequest:
		return c.listGroups(r), nil
	case *kmsg.CreateTopicsRequest:
		return c.createTopics(ctx, r), nil
	case *kmsg.DeleteTopicsRequest:
		return c.deleteTopics(ctx, r), nil
	}
	return nil, fmt.Errorf("%s is not supported", key.Name())
}

// supports reports whether req's API and version are served.
func (c *conn) supports(req kmsg.Request) bool {
	v, ok := supported[kmsg.Key(req.Key())]
	return ok && req.GetVersion() >= v[0] && req.GetVersion() <= v[1]
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

// saslHandshake chooses PLAIN. After version 0, the client sends its
// token in a frame of its own rather than in SaslAuthenticate
// (serveRawSASL).
func (c *conn) saslHandshake(r *kmsg.SASLHandshakeRequest) kmsg.Response {
	resp := kmsg.NewPtrSASLHandshakeResponse()
	resp.SupportedMechanisms = []string{"PLAIN"}
	if r.Mechanism != "PLAIN" {
		resp.ErrorCode = kerr.UnsupportedSaslMechanism.Code
		return resp
	}
	c.mech = r.Mechanism
	c.rawSASL = r.Version == 0
	return resp
}

func (c *conn) saslAuthenticate(r *kmsg.SASLAuthenticateRequest) (kmsg.Response, error) {
	resp := kmsg.NewPtrSASLAuthenticateResponse()
	if c.mech != "PLAIN" || c.rawSASL {
		return nil, errors.New("SaslAuthenticate without a PLAIN handshake of version 1")
	}
	if msg := c.signIn(r.SASLAuthBytes); msg != "" {
		resp.ErrorCode = kerr.SaslAuthenticationFailed.Code
		resp.ErrorMessage = kmsg.StringPtr(msg)
	}
	return resp, nil
}

// signIn checks a SASL/PLAIN token (authorization id, NUL, user, NUL,
// password) and signs the connection in; it returns why not, or "".
func (c *conn) signIn(token []byte) string {
	parts := bytes.SplitN(token, []byte{0}, 3)
	if len(parts) != 3 {
		return "SASL/PLAIN: want authzid NUL user NUL password"
	}
	name, password := string(parts[1]), string(parts[2])
	p, ok := c.s.cfg.Users.Cached(name, password)
	if !ok {
		var msg string
		if p, msg = c.checkPassword(name, password); msg != "" {
			return msg
		}
	}
	c.user = &p
	return ""
}

// checkPassword runs a full password check unless the client's address
// or the user name is inside a backoff after failed ones (shared with
// the HTTP listener); it returns the principal, or a message saying why
// not.
func (c *conn) checkPassword(name, password string) (auth.Principal, string) {
	p, err := c.s.cfg.Throttle.Check(c.s.cfg.Users, c.c.RemoteAddr().String(), name, password)
	var te *auth.ThrottledError
	switch {
	case errors.As(err, &te):
		return p, te.Error()
	case errors.Is(err, auth.ErrBusy):
		return p, "too many password checks at once; try again"
	case err != nil:
		return p, "wrong user name or password"
	}
	return p, ""
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

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// batches is what decodeBatches read from one partition's records.
type batches struct {
	msgs []messagevault.Message
	// producerID is the batches' idempotent producer id, or -1; with it,
	// there is one batch, with its epoch, first sequence and count.
	producerID int64
	epoch      int16
	sequence   int32
	count      int32
	// headersDropped counts the records whose headers were dropped.
	headersDropped int
}

// decodeBatches reads the record batches of a produce into messages,
// checking each batch's CRC-32C and decompressing it. Records with
// headers are refused (v1 records have none) unless dropHeaders. It
// refuses transactional batches and idempotent ones other than alone,
// with an error code and a message saying why. budget is what the
// request's records may still take: their decompressed bytes and
// recordCost for each record; decodeBatches takes its share from it.
func decodeBatches(b []byte, dropHeaders bool, budget *int) (batches, int16, string) {
	out, code, msg := decodeAll(b, dropHeaders, budget)
	if code != 0 {
		return batches{producerID: -1}, code, msg
	}
	return out, 0, ""
}

// recordCost is what a decoded record costs beside its bytes: its
// messagevault.Message.
const recordCost = 64

// decodeAll is decodeBatches, without clearing what it read before an
// error.
func decodeAll(b []byte, dropHeaders bool, budget *int) (batches, int16, string) {
	out := batches{producerID: -1}
	for len(b) > 0 {
		if len(b) < 12 {
			return out, kerr.CorruptMessage.Code, "truncated record batch"
		}
		n := int(int32(binary.BigEndian.Uint32(b[8:]))) + 12
		if n < 17 || n > len(b) {
			return out, kerr.CorruptMessage.Code, "record batch length out of bounds"
		}
		if magic := b[16]; magic < 2 {
			if n < legacyMin {
				return out, kerr.CorruptMessage.Code, "message length out of bounds"
			}
			// A message of the older formats (magic 0 and 1), which
			// clients use with brokers they take for older ones.
			msgs, code, msg := decodeLegacy(b[:n], budget, true)
			if code != 0 {
				return out, code, msg
			}
			out.msgs = append(out.msgs, msgs...)
			b = b[n:]
			continue
		}
		if n < 61 {
			return out, kerr.CorruptMessage.Code, "record batch length out of bounds"
		}
		var batch kmsg.RecordBatch
		if err := batch.ReadFrom(b[:n]); err != nil {
			return out, kerr.CorruptMessage.Code, fmt.Sprintf("record batch: %v", err)
		}
		if batch.Magic != 2 {
			return out, kerr.UnsupportedForMessageFormat.Code, fmt.Sprintf("record batch of magic %d: want 2", batch.Magic)
		}
		if uint32(batch.CRC) != crc32.Checksum(b[21:n], castagnoli) {
			return out, kerr.CorruptMessage.Code, "record batch: CRC-32C mismatch"
		}
		if batch.Attributes&0x10 != 0 || batch.Attributes&0x20 != 0 {
			return out, kerr.InvalidRecord.Code, "transactional and control batches are not supported"
		}
		if batch.ProducerID >= 0 {
			if out.producerID >= 0 || len(out.msgs) > 0 || len(b) > n {
				return out, kerr.InvalidRecord.Code, "an idempotent producer's batch must come alone in its partition's records"
			}
			out.producerID, out.epoch, out.sequence, out.count = batch.ProducerID, batch.ProducerEpoch, batch.FirstSequence, batch.NumRecords
		}
		recs := batch.Records
		if codec := int(batch.Attributes & 0x07); codec != codecNone {
			var err error
			if recs, err = decompress(codec, recs, *budget); err != nil {
				return out, kerr.CorruptMessage.Code, fmt.Sprintf("record batch: %v", err)
			}
			*budget -= len(recs)
		}
		if *budget -= recordCost * int(max(batch.NumRecords, 0)); *budget < 0 {
			return out, kerr.CorruptMessage.Code, fmt.Sprintf("the request's records take more than %d bytes decoded (%d bytes each besides their own)", MaxDecompressed, recordCost)
		}
		for i := int32(0); i < batch.NumRecords; i++ {
			size, k := binary.Varint(recs)
			if k <= 0 || size < 0 || int64(len(recs)-k) < size {
				return out, kerr.CorruptMessage.Code, "truncated record"
			}
			var rec kmsg.Record
			if err := rec.ReadFrom(recs[:k+int(size)]); err != nil {
				return out, kerr.CorruptMessage.Code, fmt.Sprintf("record: %v", err)
			}
			if len(rec.Headers) > 0 {
				if !dropHeaders {
					return out, kerr.InvalidRecord.Code, "records with headers are refused: MessageVault's records (format v1) have none (serve --kafka-drop-headers drops them instead)"
				}
				out.headersDropped++
			}
			out.msgs = append(out.msgs, messagevault.NewMessage(rec.Key, rec.Value, 0))
			recs = recs[k+int(size):]
		}
		if len(recs) != 0 {
			return out, kerr.CorruptMessage.Code, "record batch: bytes after its last record"
		}
		b = b[n:]
	}
	if len(out.msgs) == 0 {
		return out, kerr.InvalidRecord.Code, "no records"
	}
	return out, 0, ""
}

// legacyMin is the size of the smallest message of the older formats:
// offset, size, CRC, magic, attributes, and the lengths of a null key and
// a null value.
const legacyMin = 8 + 4 + 4 + 1 + 1 + 4 + 4

// decodeLegacy reads one message of the formats before record batches
// (magic 0 and 1): offset, size, CRC-32 (IEEE) of the rest, magic,
// attributes, a timestamp in magic 1, then key and value, each with an
// int32 length (-1: null). A compressed message (outer) holds a
// compressed set of messages as its value; they are not compressed again.
func decodeLegacy(b []byte, budget *int, outer bool) ([]messagevault.Message, int16, string) {
	if uint32(binary.BigEndian.Uint32(b[12:])) != crc32.ChecksumIEEE(b[16:]) {
		return nil, kerr.CorruptMessage.Code, "message: CRC mismatch"
	}
	magic, attrs := b[16], b[17]
	rest := b[18:]
	if magic == 1 {
		if len(rest) < 8 {
			return nil, kerr.CorruptMessage.Code, "truncated message"
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
		return nil, kerr.CorruptMessage.Code, "truncated message"
	}
	codec := int(attrs & 0x07)
	if *budget -= recordCost; *budget < 0 {
		return nil, kerr.CorruptMessage.Code, fmt.Sprintf("the request's records take more than %d bytes decoded (%d bytes each besides their own)", MaxDecompressed, recordCost)
	}
	if codec == codecNone {
		return []messagevault.Message{messagevault.NewMessage(key, value, 0)}, 0, ""
	}
	if !outer {
		return nil, kerr.CorruptMessage.Code, "a compressed message inside a compressed message"
	}
	inner, err := decompress(codec, value, *budget)
	if err != nil {
		return nil, kerr.CorruptMessage.Code, fmt.Sprintf("message: %v", err)
	}
	*budget -= len(inner)
	var msgs []messagevault.Message
	for len(inner) > 0 {
		if len(inner) < 12 {
			return nil, kerr.CorruptMessage.Code, "truncated inner message"
		}
		n := int(int32(binary.BigEndian.Uint32(inner[8:]))) + 12
		if n < legacyMin || n > len(inner) {
			return nil, kerr.CorruptMessage.Code, "inner message length out of bounds"
		}
		m, code, msg := decodeLegacy(inner[:n], budget, false)
		if code != 0 {
			return nil, code, msg
		}
		msgs = append(msgs, m...)
		inner = inner[n:]
	}
	return msgs, 0, ""
}
