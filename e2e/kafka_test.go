package e2e_test

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/auth"
	"github.com/messagevault/messagevault/file"
	"github.com/messagevault/messagevault/internal/mvtest"
	"github.com/messagevault/messagevault/stream"
)

// startKafka starts the server on data directory dir with args and the
// Kafka listener on a free port, and returns it once the listener serves,
// with the listener's address.
func startKafka(t *testing.T, dir string, args ...string) (*mvtest.Server, string) {
	t.Helper()
	addr := freePort(t)
	s := mvtest.Start(t, dir, nil, append(args, "--kafka-listen", addr)...)
	s.WaitOutput("serving the Kafka protocol", 10*time.Second)
	return s, addr
}

// kcatCommand is kcat (librdkafka) with args, against the Kafka listener
// at addr, signed in as admin over SASL/PLAIN.
func kcatCommand(ctx context.Context, t *testing.T, addr string, args ...string) *exec.Cmd {
	t.Helper()
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		t.Fatal("kcat is missing: make deps installs it (apt-get install kcat)")
	}
	return exec.CommandContext(ctx, kcat, append([]string{"-b", addr,
		"-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanisms=PLAIN",
		"-X", "sasl.username=" + admin, "-X", "sasl.password=" + adminPass}, args...)...)
}

// kafkaClient is a franz-go client of the server's Kafka listener at
// addr, signed in as user, producing without compression or
// idempotence (which the gateway does not take yet).
func kafkaClient(t *testing.T, addr, user, password string, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	opts = append([]kgo.Opt{
		kgo.SeedBrokers(addr),
		kgo.SASL(plain.Auth{User: user, Pass: password}.AsMechanism()),
		kgo.ProducerBatchCompression(kgo.NoCompression()),
		kgo.DisableIdempotentWrite(),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordRetries(3),
	}, opts...)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// TestKafkaProduce: records produced by franz-go through --kafka-listen
// are stored durably, and read back through HTTP and straight from
// storage with the same keys and values, at the offsets the producer was
// given (a record's Kafka offset is its byte position).
func TestKafkaProduce(t *testing.T) {
	s, addr := startKafka(t, t.TempDir())
	cl := kafkaClient(t, addr, admin, adminPass)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var offsets []int64
	for i, v := range []string{"first", "second", "third"} {
		r := &kgo.Record{Topic: "kafka-orders", Key: []byte{'k', byte('0' + i)}, Value: []byte(v)}
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatalf("produce %s: %v", v, err)
		}
		offsets = append(offsets, r.Offset)
	}
	recs := readDirect(t, s, "kafka-orders")
	if got := values(recs); len(got) != 3 || got[0] != "k0=first" || got[1] != "k1=second" || got[2] != "k2=third" {
		t.Fatalf("stream holds %v", got)
	}
	for i, rec := range recs {
		if rec.Offset != offsets[i] || string(rec.Key) != string([]byte{'k', byte('0' + i)}) {
			t.Fatalf("record %d: offset %d key %q; the producer was told offset %d", i, rec.Offset, rec.Key, offsets[i])
		}
	}
	if pos := position(t, s, "kafka-orders"); pos != recs[2].Offset+recordSize("k2", "third") {
		t.Fatalf("position %d after three records", pos)
	}
	// And through HTTP: the same message, the same offset.
	status, body, _ := do(t, s.Request("GET", "/streams/kafka-orders/messages?from=0", admin, adminPass, nil, ""))
	if status != http.StatusOK {
		t.Fatalf("read over HTTP: %d %s", status, body)
	}
	var answer struct{ Messages []struct{ Offset int64 } }
	mustDecode(t, body, &answer)
	if len(answer.Messages) != 3 || answer.Messages[1].Offset != offsets[1] {
		t.Fatalf("over HTTP: %+v; want offsets %v", answer.Messages, offsets)
	}

	// The caveat docs/KAFKA.md gives: in a batch of several records, the
	// producer learns the first one's offset; franz-go sets the others'
	// to base + index, which are not their offsets.
	lingering := kafkaClient(t, addr, admin, adminPass, kgo.ProducerLinger(200*time.Millisecond))
	batch := []*kgo.Record{{Topic: "kafka-batch", Value: []byte("one")}, {Topic: "kafka-batch", Value: []byte("two")}}
	if err := lingering.ProduceSync(ctx, batch...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	stored := readDirect(t, s, "kafka-batch")
	if batch[0].Offset != stored[0].Offset || batch[1].Offset != batch[0].Offset+1 || stored[1].Offset == batch[1].Offset {
		t.Fatalf("franz-go shows offsets %d and %d; stored at %d and %d", batch[0].Offset, batch[1].Offset, stored[0].Offset, stored[1].Offset)
	}
}

// TestKafkaRefusals: a wrong password is refused at sign-in; a user
// without the claim to write gets TOPIC_AUTHORIZATION_FAILED; a record
// with headers (which MessageVault's records cannot hold) is refused and
// nothing is stored.
func TestKafkaRefusals(t *testing.T) {
	dir := t.TempDir()
	users := usersWithAdmin(t, dir)
	if err := users.Add(context.Background(), "reader", "reader-pw", "all:read"); err != nil {
		t.Fatal(err)
	}
	users.Close()
	s, addr := startKafka(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	wrong := kafkaClient(t, addr, admin, "not-the-password", kgo.RequestRetries(0),
		kgo.RetryBackoffFn(func(int) time.Duration { return 10 * time.Millisecond }), kgo.RecordDeliveryTimeout(3*time.Second))
	if err := wrong.ProduceSync(ctx, &kgo.Record{Topic: "refused", Value: []byte("x")}).FirstErr(); !errors.Is(err, kerr.SaslAuthenticationFailed) {
		t.Fatalf("wrong password: %v; want SASL_AUTHENTICATION_FAILED", err)
	}
	reader := kafkaClient(t, addr, "reader", "reader-pw")
	if err := reader.ProduceSync(ctx, &kgo.Record{Topic: "refused", Value: []byte("x")}).FirstErr(); !errors.Is(err, kerr.TopicAuthorizationFailed) {
		t.Fatalf("a reader produces: %v; want TOPIC_AUTHORIZATION_FAILED", err)
	}
	cl := kafkaClient(t, addr, admin, adminPass)
	err := cl.ProduceSync(ctx, &kgo.Record{Topic: "refused", Value: []byte("x"), Headers: []kgo.RecordHeader{{Key: "h", Value: []byte("v")}}}).FirstErr()
	if !errors.Is(err, kerr.InvalidRecord) {
		t.Fatalf("a record with headers: %v; want INVALID_RECORD", err)
	}
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "refused", Value: []byte("kept")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	if got := values(readDirect(t, s, "refused")); len(got) != 1 || got[0] != "=kept" {
		t.Fatalf("stream holds %v; want only the record without headers", got)
	}
}

// TestKafkaProduceWithKcat: kcat (librdkafka) produces over SASL/PLAIN,
// one message per line, and they are stored in order.
func TestKafkaProduceWithKcat(t *testing.T) {
	s, addr := startKafka(t, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := kcatCommand(ctx, t, addr, "-t", "kcat-lines", "-P", "-K", ":", "-X", "request.required.acks=-1")
	cmd.Stdin = strings.NewReader("a:one\nb:two\nc:three\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kcat -P: %v\n%s", err, out)
	}
	if got := strings.Join(values(readDirect(t, s, "kcat-lines")), " "); got != "a=one b=two c=three" {
		t.Fatalf("stream holds %s", got)
	}
}

// TestKafkaOverTLS: with --tls-cert, the Kafka listener speaks TLS with
// the same certificate; a client that trusts it produces, one that does
// not use TLS fails.
func TestKafkaOverTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := selfSigned(t, dir)
	_, addr := startKafka(t, dir, "--tls-cert", certFile, "--tls-key", keyFile)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := kafkaClient(t, addr, admin, adminPass, kgo.DialTLSConfig(&tls.Config{RootCAs: pool}))
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: "secure", Value: []byte("over tls")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	plainCtx, cancelPlain := context.WithTimeout(ctx, 5*time.Second)
	defer cancelPlain()
	plain := kafkaClient(t, addr, admin, adminPass, kgo.RecordDeliveryTimeout(3*time.Second))
	if err := plain.ProduceSync(plainCtx, &kgo.Record{Topic: "secure", Value: []byte("plain")}).FirstErr(); err == nil {
		t.Fatal("a produce without TLS was accepted")
	}
	pr, err := file.OpenStreamReader(filepath.Join(dir, "secure"))
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	var got []string
	for rec, err := range stream.NewReader("secure", pr, stream.ReaderConfig{}).Records(ctx, 0, -1) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(rec.Value))
	}
	if len(got) != 1 || got[0] != "over tls" {
		t.Fatalf("stream holds %v", got)
	}
}

// pollN polls cl until it has n records or ctx ends.
func pollN(t *testing.T, ctx context.Context, cl *kgo.Client, n int) []*kgo.Record {
	t.Helper()
	var got []*kgo.Record
	for len(got) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("polled %d records of %d: %v", len(got), n, ctx.Err())
		}
		for _, e := range fs.Errors() {
			t.Fatalf("fetch %s/%d: %v", e.Topic, e.Partition, e.Err)
		}
		got = append(got, fs.Records()...)
	}
	return got
}

// TestKafkaConsume: a franz-go consumer reads records published over
// HTTP with their MessageVault offsets, keys and values; it is woken by a
// publish while it waits; a consumer from a time starts at the first
// record at or after it (ListOffsets through the time index).
func TestKafkaConsume(t *testing.T) {
	s, addr := startKafka(t, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	big := strings.Repeat("v", 60<<10) // batches of several records and several fetches
	var sent []messagevault.Message
	for i := range 12 {
		sent = append(sent, msg(fmt.Sprintf("k%d", i), fmt.Sprintf("%d-%s", i, big)))
	}
	first := publish(t, s, "consumed", sent[:6])
	publish(t, s, "consumed", sent[6:])
	cl := kafkaClient(t, addr, admin, adminPass,
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{"consumed": {0: kgo.NewOffset().AtStart()}}),
		kgo.FetchMaxPartitionBytes(150<<10))
	recs := readDirect(t, s, "consumed")
	got := pollN(t, ctx, cl, 12)
	if len(got) != 12 {
		t.Fatalf("got %d records; want 12", len(got))
	}
	for i, r := range got {
		if r.Offset != recs[i].Offset || string(r.Key) != string(recs[i].Key) || string(r.Value) != string(recs[i].Value) {
			t.Fatalf("record %d: offset %d key %q; stored at %d with key %q", i, r.Offset, r.Key, recs[i].Offset, recs[i].Key)
		}
		if want := recs[i].ID.Time().UnixMilli(); r.Timestamp.UnixMilli() != want {
			t.Fatalf("record %d: timestamp %v; its id says %d", i, r.Timestamp, want)
		}
	}
	if got[0].Offset != first.Offsets[0] {
		t.Fatalf("first offset %d; the publish said %d", got[0].Offset, first.Offsets[0])
	}
	// A publish wakes the waiting fetch.
	go func() {
		time.Sleep(300 * time.Millisecond)
		publish(t, s, "consumed", []messagevault.Message{msg("late", "woken")})
	}()
	start := time.Now()
	late := pollN(t, ctx, cl, 1)
	if string(late[0].Value) != "woken" || late[0].Offset != position(t, s, "consumed")-recordSize("late", "woken") {
		t.Fatalf("after the tail: %q at %d", late[0].Value, late[0].Offset)
	}
	if waited := time.Since(start); waited > 4*time.Second {
		t.Fatalf("the new record took %v to arrive: the fetch was not woken by the append", waited)
	}

	// From a time: the records after a pause.
	time.Sleep(20 * time.Millisecond)
	mark := time.Now()
	time.Sleep(20 * time.Millisecond)
	after := publish(t, s, "consumed", []messagevault.Message{msg("t1", "after the mark"), msg("t2", "also after")})
	since := kafkaClient(t, addr, admin, adminPass,
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{"consumed": {0: kgo.NewOffset().AfterMilli(mark.UnixMilli())}}))
	got = pollN(t, ctx, since, 2)
	if got[0].Offset != after.Offsets[0] || string(got[0].Value) != "after the mark" {
		t.Fatalf("from %v: first record %q at %d; want %d", mark, got[0].Value, got[0].Offset, after.Offsets[0])
	}
}

// TestKafkaConsumeWithKcat: kcat (librdkafka) reads a stream to its end
// and exits there (-e): its end-of-partition detection needs the next
// fetch offset to land on the high watermark, across the gaps between
// offsets. It prints each record's offset, key and value.
func TestKafkaConsumeWithKcat(t *testing.T) {
	s, addr := startKafka(t, t.TempDir())
	ans := publish(t, s, "kcat-read", []messagevault.Message{msg("a", "one"), msg("", "two"), msg("c", strings.Repeat("3", 1000))})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := kcatCommand(ctx, t, addr, "-t", "kcat-read", "-C", "-e", "-o", "beginning", "-f", "%o %k %S\n")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kcat -C -e: %v (did it stop at the end?)\n%s", err, out)
	}
	want := fmt.Sprintf("%d a 3\n%d  3\n%d c 1000\n", ans.Offsets[0], ans.Offsets[1], ans.Offsets[2])
	if string(out) != want {
		t.Fatalf("kcat printed\n%s\nwant\n%s", out, want)
	}
}

// TestKafkaCompressedProduce: batches compressed with each codec, by
// franz-go and by kcat (librdkafka; idempotent for two of the codecs),
// are stored as their records.
func TestKafkaCompressedProduce(t *testing.T) {
	s, addr := startKafka(t, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	codecs := map[string]kgo.CompressionCodec{"gzip": kgo.GzipCompression(), "snappy": kgo.SnappyCompression(), "lz4": kgo.Lz4Compression(), "zstd": kgo.ZstdCompression()}
	for name, codec := range codecs {
		topic := "kgo-" + name
		cl := kafkaClient(t, addr, admin, adminPass, kgo.ProducerBatchCompression(codec), kgo.ProducerLinger(50*time.Millisecond))
		var recs []*kgo.Record
		for i := range 20 {
			recs = append(recs, &kgo.Record{Topic: topic, Key: []byte(fmt.Sprint(i)), Value: []byte(strings.Repeat(name, 100))})
		}
		if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got := readDirect(t, s, topic)
		if len(got) != 20 || string(got[19].Key) != "19" || string(got[0].Value) != strings.Repeat(name, 100) {
			t.Fatalf("%s: stream holds %d records", name, len(got))
		}
		topic = "kcat-" + name
		cmd := kcatCommand(ctx, t, addr, "-t", topic, "-P", "-K", ":", "-z", name, "-X", "linger.ms=100",
			"-X", "enable.idempotence="+fmt.Sprint(name == "zstd" || name == "lz4"))
		cmd.Stdin = strings.NewReader("a:" + strings.Repeat("x", 500) + "\nb:two\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("kcat -P -z %s: %v\n%s", name, err, out)
		}
		if got := values(readDirect(t, s, topic)); len(got) != 2 || got[1] != "b=two" {
			t.Fatalf("kcat -z %s: stream holds %d records", name, len(got))
		}
	}
}

// TestKafkaIdempotentProduce: franz-go's default producer (idempotent,
// snappy) stores each record once; a batch sent again, even after a
// restart of the server, is answered with its first offset and not
// stored again; a batch past a gap in the sequence is refused.
func TestKafkaIdempotentProduce(t *testing.T) {
	dir := t.TempDir()
	s, addr := startKafka(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	def, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.SASL(plain.Auth{User: admin, Pass: adminPass}.AsMechanism()))
	if err != nil {
		t.Fatal(err)
	}
	var recs []*kgo.Record
	for i := range 200 {
		recs = append(recs, &kgo.Record{Topic: "idempotent", Value: []byte(fmt.Sprint(i))})
	}
	if err := def.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("the default producer: %v", err)
	}
	def.Close()
	if got := readDirect(t, s, "idempotent"); len(got) != 200 || string(got[199].Value) != "199" {
		t.Fatalf("stream holds %d records; want 200", len(got))
	}

	// By hand: the same batch twice, from a producer id the server gave.
	cl := kafkaClient(t, addr, admin, adminPass)
	init, err := kmsg.NewPtrInitProducerIDRequest().RequestWith(ctx, cl)
	if err != nil || init.ErrorCode != 0 {
		t.Fatalf("InitProducerId: %v %v", err, init)
	}
	produce := func(cl *kgo.Client, seq int32, values ...string) (int16, int64) {
		t.Helper()
		batch := batchFrom(init.ProducerID, init.ProducerEpoch, seq, values)
		req := kmsg.NewPtrProduceRequest()
		req.Acks, req.TimeoutMillis = -1, 10000
		req.Topics = []kmsg.ProduceRequestTopic{{Topic: "by-hand", Partitions: []kmsg.ProduceRequestTopicPartition{{Partition: 0, Records: batch}}}}
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			t.Fatal(err)
		}
		p := resp.Topics[0].Partitions[0]
		return p.ErrorCode, p.BaseOffset
	}
	code, first := produce(cl, 0, "a", "b")
	if code != 0 {
		t.Fatalf("first batch: %v", kerr.ErrorForCode(code))
	}
	if code, again := produce(cl, 0, "a", "b"); code != 0 || again != first {
		t.Fatalf("the batch again: %v at %d; want success at %d", kerr.ErrorForCode(code), again, first)
	}
	if code, _ := produce(cl, 5, "gap"); code != kerr.OutOfOrderSequenceNumber.Code {
		t.Fatalf("a batch past a gap: %v; want OUT_OF_ORDER_SEQUENCE_NUMBER", kerr.ErrorForCode(code))
	}
	code, second := produce(cl, 2, "c")
	if code != 0 {
		t.Fatalf("the next batch: %v", kerr.ErrorForCode(code))
	}

	// A restart forgets what the process remembered; the stream's
	// producer table does not.
	s.Signal(syscall.SIGTERM)
	s.Wait(30 * time.Second)
	s = mvtest.Start(t, dir, nil, "--kafka-listen", addr)
	s.WaitOutput("serving the Kafka protocol", 10*time.Second)
	cl2 := kafkaClient(t, addr, admin, adminPass)
	if code, again := produce(cl2, 2, "c"); code != 0 || again != second {
		t.Fatalf("after a restart, the last batch again: %v at %d; want success at %d", kerr.ErrorForCode(code), again, second)
	}
	if code, _ := produce(cl2, 4, "gap"); code != kerr.OutOfOrderSequenceNumber.Code {
		t.Fatalf("after a restart, a batch past a gap: %v; want OUT_OF_ORDER_SEQUENCE_NUMBER", kerr.ErrorForCode(code))
	}
	if got := strings.Join(values(readDirect(t, s, "by-hand")), " "); got != "=a =b =c" {
		t.Fatalf("stream holds %s; want each record once", got)
	}
}

// batchFrom encodes an uncompressed v2 batch of values from producer id
// and epoch (-1: no idempotent producer), its first record at sequence
// seq.
func batchFrom(id int64, epoch int16, seq int32, values []string) []byte {
	var recs []byte
	for i, v := range values {
		r := kmsg.Record{OffsetDelta: int32(i), Value: []byte(v)}
		body := r.AppendTo(nil)[1:] // without the placeholder length
		recs = binary.AppendVarint(recs, int64(len(body)))
		recs = append(recs, body...)
	}
	b := kmsg.RecordBatch{Magic: 2, ProducerID: id, ProducerEpoch: epoch, FirstSequence: seq, LastOffsetDelta: int32(len(values) - 1), NumRecords: int32(len(values)), Records: recs}
	out := b.AppendTo(nil)
	binary.BigEndian.PutUint32(out[8:], uint32(len(out)-12))
	binary.BigEndian.PutUint32(out[17:], crc32.Checksum(out[21:], crc32.MakeTable(crc32.Castagnoli)))
	return out
}

// TestKafkaDropHeaders: with --kafka-drop-headers, a record with headers
// is stored without them, and the metric counts it.
func TestKafkaDropHeaders(t *testing.T) {
	s, addr := startKafka(t, t.TempDir(), "--kafka-drop-headers")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl := kafkaClient(t, addr, admin, adminPass)
	err := cl.ProduceSync(ctx, &kgo.Record{Topic: "headers", Value: []byte("kept"), Headers: []kgo.RecordHeader{{Key: "h", Value: []byte("v")}}},
		&kgo.Record{Topic: "headers", Value: []byte("plain")}).FirstErr()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(values(readDirect(t, s, "headers")), " "); got != "=kept =plain" {
		t.Fatalf("stream holds %s", got)
	}
	status, body, _ := do(t, s.Request("GET", "/metrics", admin, adminPass, nil, ""))
	if status != http.StatusOK || !strings.Contains(string(body), "messagevault_kafka_headers_dropped_total 1\n") {
		t.Fatalf("/metrics: %d, want messagevault_kafka_headers_dropped_total 1", status)
	}
}

// collect polls cl in the background and sends what it gets to a channel,
// until ctx ends.
func collect(ctx context.Context, cl *kgo.Client) <-chan *kgo.Record {
	out := make(chan *kgo.Record, 1000)
	go func() {
		for ctx.Err() == nil {
			fs := cl.PollFetches(ctx)
			if fs.IsClientClosed() {
				return
			}
			for _, r := range fs.Records() {
				out <- r
			}
		}
	}()
	return out
}

// receive takes n records from ch, failing after the timeout.
func receive(t *testing.T, ch <-chan *kgo.Record, n int, timeout time.Duration) []string {
	t.Helper()
	var got []string
	deadline := time.After(timeout)
	for len(got) < n {
		select {
		case r := <-ch:
			got = append(got, string(r.Value))
		case <-deadline:
			t.Fatalf("received %d records of %d: %v", len(got), n, got)
		}
	}
	return got
}

// cursorOf reads a stream's cursor over HTTP; -1 if it has none.
func cursorOf(t *testing.T, s *mvtest.Server, stream, name string) int64 {
	t.Helper()
	status, body, _ := do(t, s.Request("GET", "/streams/"+stream+"/cursors/"+name, admin, adminPass, nil, ""))
	if status == http.StatusNotFound {
		return -1
	}
	if status != http.StatusOK {
		t.Fatalf("GET cursor %s of %s: %d %s", name, stream, status, body)
	}
	var c struct{ Position int64 }
	mustDecode(t, body, &c)
	return c.Position
}

// TestKafkaConsumerGroup: a franz-go group of two members over one
// partition. The first member reads and commits; its committed offset is
// the group's cursor over HTTP. The second joins, the group rebalances,
// and new records go to one member only. When the partition's owner
// leaves, the other takes over from the committed offset.
func TestKafkaConsumerGroup(t *testing.T) {
	s, addr := startKafka(t, t.TempDir())
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var first []messagevault.Message
	for i := range 10 {
		first = append(first, msg("", fmt.Sprint("a", i)))
	}
	publish(t, s, "grouped", first)
	member := func() *kgo.Client {
		return kafkaClient(t, addr, admin, adminPass, kgo.ConsumerGroup("g1"), kgo.ConsumeTopics("grouped"),
			kgo.DisableAutoCommit(), kgo.HeartbeatInterval(300*time.Millisecond), kgo.SessionTimeout(6*time.Second),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	}
	a := member()
	aCtx, stopA := context.WithCancel(ctx)
	defer stopA()
	aGot := collect(aCtx, a)
	if got := receive(t, aGot, 10, 30*time.Second); got[0] != "a0" || got[9] != "a9" {
		t.Fatalf("member a got %v", got)
	}
	if err := a.CommitUncommittedOffsets(ctx); err != nil {
		t.Fatal(err)
	}
	if c, pos := cursorOf(t, s, "grouped", "g1"), position(t, s, "grouped"); c != pos {
		t.Fatalf("the group's cursor is at %d; a committed after the last record, at %d", c, pos)
	}

	b := member()
	bCtx, stopB := context.WithCancel(ctx)
	defer stopB()
	bGot := collect(bCtx, b)
	// Both rebalance into a stable group of two.
	describer := kafkaClient(t, addr, admin, adminPass)
	waitFor(t, 30*time.Second, func() bool {
		req := kmsg.NewPtrDescribeGroupsRequest()
		req.Groups = []string{"g1"}
		resp, err := req.RequestWith(ctx, describer)
		return err == nil && resp.Groups[0].State == "Stable" && len(resp.Groups[0].Members) == 2
	})
	var second []messagevault.Message
	for i := range 5 {
		second = append(second, msg("", fmt.Sprint("b", i)))
	}
	publish(t, s, "grouped", second)
	owner, ownerGot, otherGot, stopOwner := a, aGot, bGot, stopA
	select {
	case r := <-aGot:
		if string(r.Value) != "b0" {
			t.Fatalf("a got %q after the rebalance", r.Value)
		}
	case r := <-bGot:
		if string(r.Value) != "b0" {
			t.Fatalf("b got %q after the rebalance", r.Value)
		}
		owner, ownerGot, otherGot, stopOwner = b, bGot, aGot, stopB
	case <-time.After(30 * time.Second):
		t.Fatal("no member got the new records")
	}
	receive(t, ownerGot, 4, 10*time.Second)
	if err := owner.CommitUncommittedOffsets(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-otherGot:
		t.Fatalf("both members got records: the other got %q", r.Value)
	case <-time.After(500 * time.Millisecond):
	}
	// The owner leaves; the other takes over from the committed offset.
	stopOwner()
	owner.Close()
	publish(t, s, "grouped", []messagevault.Message{msg("", "c0"), msg("", "c1")})
	if got := receive(t, otherGot, 2, 30*time.Second); got[0] != "c0" || got[1] != "c1" {
		t.Fatalf("after the owner left, the other member got %v; want c0 c1", got)
	}
}

// TestKafkaConsumerGroupWithKcat: kcat's balanced consumer (librdkafka's
// group protocol) reads a stream in a group and commits on exit; the
// group's cursor is then at the stream's end.
func TestKafkaConsumerGroupWithKcat(t *testing.T) {
	s, addr := startKafka(t, t.TempDir())
	publish(t, s, "kcat-group", []messagevault.Message{msg("a", "one"), msg("b", "two")})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := kcatCommand(ctx, t, addr, "-G", "kcat-readers", "kcat-group", "-e", "-f", "%k=%s\n", "-X", "auto.offset.reset=earliest")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kcat -G: %v\n%s", err, out)
	}
	if string(out) != "a=one\nb=two\n" {
		t.Fatalf("kcat -G printed %q", out)
	}
	if c, pos := cursorOf(t, s, "kcat-group", "kcat-readers"), position(t, s, "kcat-group"); c != pos {
		t.Fatalf("the group's cursor is at %d; want the end, %d", c, pos)
	}
}

// waitFor polls cond every 100 ms until it holds, failing after timeout.
func waitFor(t *testing.T, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not so after %v", timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestKafkaCreateAndDeleteTopics: CreateTopics makes an empty stream for
// a user who may write it, and refuses what a stream cannot be;
// DeleteTopics deletes one for a user with all:write only.
func TestKafkaCreateAndDeleteTopics(t *testing.T) {
	dir := t.TempDir()
	users := usersWithAdmin(t, dir)
	if err := users.Add(context.Background(), "maker", "maker-pw", "made:write"); err != nil {
		t.Fatal(err)
	}
	users.Close()
	s, addr := startKafka(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	maker := kafkaClient(t, addr, "maker", "maker-pw")
	create := func(cl *kgo.Client, topic string, partitions int32) (int16, string) {
		t.Helper()
		req := kmsg.NewPtrCreateTopicsRequest()
		req.TimeoutMillis = 10000
		rt := kmsg.NewCreateTopicsRequestTopic()
		rt.Topic, rt.NumPartitions, rt.ReplicationFactor = topic, partitions, -1
		req.Topics = []kmsg.CreateTopicsRequestTopic{rt}
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			t.Fatal(err)
		}
		msg := ""
		if m := resp.Topics[0].ErrorMessage; m != nil {
			msg = *m
		}
		return resp.Topics[0].ErrorCode, msg
	}
	del := func(cl *kgo.Client, topic string) int16 {
		t.Helper()
		req := kmsg.NewPtrDeleteTopicsRequest()
		req.TimeoutMillis, req.TopicNames = 10000, []string{topic}
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			t.Fatal(err)
		}
		return resp.Topics[0].ErrorCode
	}
	if code, msg := create(maker, "made", 1); code != 0 {
		t.Fatalf("create: %v %s", kerr.ErrorForCode(code), msg)
	}
	status, body, _ := do(t, s.Request("GET", "/streams", admin, adminPass, nil, ""))
	if status != http.StatusOK || !strings.Contains(string(body), `"made"`) {
		t.Fatalf("GET /streams after CreateTopics: %d %s", status, body)
	}
	for _, tc := range []struct {
		topic      string
		partitions int32
		want       *kerr.Error
	}{
		{"made", -1, kerr.TopicAlreadyExists},
		{"other", 1, kerr.TopicAuthorizationFailed},
		{"made", 3, kerr.InvalidPartitions},
		{"Not_A_Stream", 1, kerr.InvalidTopicException},
	} {
		if code, msg := create(maker, tc.topic, tc.partitions); code != tc.want.Code || msg == "" {
			t.Errorf("create %s with %d partitions: %v %q; want %v with a message", tc.topic, tc.partitions, kerr.ErrorForCode(code), msg, tc.want)
		}
	}
	if code := del(maker, "made"); code != kerr.TopicAuthorizationFailed.Code {
		t.Fatalf("maker deletes: %v; want TOPIC_AUTHORIZATION_FAILED", kerr.ErrorForCode(code))
	}
	cl := kafkaClient(t, addr, admin, adminPass)
	if code := del(cl, "made"); code != 0 {
		t.Fatalf("admin deletes: %v", kerr.ErrorForCode(code))
	}
	if status, body, _ := do(t, s.Request("GET", "/streams", admin, adminPass, nil, "")); status != http.StatusOK || strings.Contains(string(body), `"made"`) {
		t.Fatalf("GET /streams after DeleteTopics: %d %s", status, body)
	}
	if code := del(cl, "made"); code != kerr.UnknownTopicOrPartition.Code {
		t.Fatalf("delete again: %v; want UNKNOWN_TOPIC_OR_PARTITION", kerr.ErrorForCode(code))
	}
}

// kafkaSend sends req on conn with a correlation id.
func kafkaSend(t *testing.T, conn net.Conn, req kmsg.Request, correlation int32) {
	t.Helper()
	frame := binary.BigEndian.AppendUint32(nil, 0)
	frame = binary.BigEndian.AppendUint16(frame, uint16(req.Key()))
	frame = binary.BigEndian.AppendUint16(frame, uint16(req.GetVersion()))
	frame = binary.BigEndian.AppendUint32(frame, uint32(correlation))
	frame = binary.BigEndian.AppendUint16(frame, 0xffff) // no client id
	if req.IsFlexible() {
		frame = append(frame, 0) // no header tags
	}
	frame = req.AppendTo(frame)
	binary.BigEndian.PutUint32(frame, uint32(len(frame)-4))
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := conn.Write(frame); err != nil {
		t.Fatal(err)
	}
}

// kafkaReceive reads one answer from conn into resp (of a non-flexible
// version) and returns its correlation id.
func kafkaReceive(t *testing.T, conn net.Conn, resp kmsg.Response) int32 {
	t.Helper()
	var size [4]byte
	if _, err := io.ReadFull(conn, size[:]); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, binary.BigEndian.Uint32(size[:]))
	if _, err := io.ReadFull(conn, body); err != nil {
		t.Fatal(err)
	}
	if err := resp.ReadFrom(body[4:]); err != nil {
		t.Fatal(err)
	}
	return int32(binary.BigEndian.Uint32(body))
}

// kafkaRoundTrip sends req on conn and decodes the answer into resp.
func kafkaRoundTrip(t *testing.T, conn net.Conn, req kmsg.Request, resp kmsg.Response) {
	t.Helper()
	kafkaSend(t, conn, req, 1)
	resp.SetVersion(req.GetVersion())
	kafkaReceive(t, conn, resp)
}

// saslLogin signs in over a new connection with SASL/PLAIN and returns
// the answer's error code and message.
func saslLogin(t *testing.T, addr, user, password string) (int16, string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hs := kmsg.NewPtrSASLHandshakeRequest()
	hs.Version, hs.Mechanism = 1, "PLAIN"
	kafkaRoundTrip(t, conn, hs, kmsg.NewPtrSASLHandshakeResponse())
	req := kmsg.NewPtrSASLAuthenticateRequest()
	req.Version, req.SASLAuthBytes = 1, []byte("\x00"+user+"\x00"+password)
	resp := kmsg.NewPtrSASLAuthenticateResponse()
	kafkaRoundTrip(t, conn, req, resp)
	msg := ""
	if resp.ErrorMessage != nil {
		msg = *resp.ErrorMessage
	}
	return resp.ErrorCode, msg
}

// TestKafkaSignInThrottle: wrong passwords over SASL are slowed down as
// over HTTP, by the same throttle: after them, the client's address is
// refused for a while, on the Kafka listener and on the HTTP one.
func TestKafkaSignInThrottle(t *testing.T) {
	s, addr := startKafka(t, t.TempDir())
	if code, msg := saslLogin(t, addr, admin, adminPass); code != 0 {
		t.Fatalf("the right password: %v %s", kerr.ErrorForCode(code), msg)
	}
	// Wrong passwords, each after the backoff of the ones before, until
	// the backoff is 2 s.
	for i := 0; i < auth.FreeFailures+3; i++ {
		waitFor(t, 10*time.Second, func() bool {
			code, msg := saslLogin(t, addr, "guessed", "wrong")
			if code != kerr.SaslAuthenticationFailed.Code {
				t.Fatalf("a wrong password: %v %s", kerr.ErrorForCode(code), msg)
			}
			return strings.Contains(msg, "wrong user name or password")
		})
	}
	code, msg := saslLogin(t, addr, "guessed", "wrong")
	if code != kerr.SaslAuthenticationFailed.Code || !strings.Contains(msg, "too many failed sign-ins") {
		t.Fatalf("inside the backoff: %v %q; want a refusal that says to wait", kerr.ErrorForCode(code), msg)
	}
	// The address is throttled on the HTTP listener too.
	if status, body, _ := do(t, s.Request("GET", "/streams", "guessed", "wrong", nil, "")); status != http.StatusTooManyRequests {
		t.Fatalf("HTTP inside the Kafka listener's backoff: %d %s; want 429", status, body)
	}
}

// TestKafkaPipelinedProduce: produce requests sent one after the other
// on one connection, without waiting for answers, are stored in the
// order sent and answered in that order.
func TestKafkaPipelinedProduce(t *testing.T) {
	s, addr := startKafka(t, t.TempDir())
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hs := kmsg.NewPtrSASLHandshakeRequest()
	hs.Version, hs.Mechanism = 1, "PLAIN"
	kafkaRoundTrip(t, conn, hs, kmsg.NewPtrSASLHandshakeResponse())
	auth := kmsg.NewPtrSASLAuthenticateRequest()
	auth.Version, auth.SASLAuthBytes = 1, []byte("\x00"+admin+"\x00"+adminPass)
	authResp := kmsg.NewPtrSASLAuthenticateResponse()
	if kafkaRoundTrip(t, conn, auth, authResp); authResp.ErrorCode != 0 {
		t.Fatalf("sign in: %v", kerr.ErrorForCode(authResp.ErrorCode))
	}
	const n = 20
	for i := range n {
		req := kmsg.NewPtrProduceRequest()
		req.Version, req.Acks, req.TimeoutMillis = 7, -1, 10000
		batch := batchFrom(-1, -1, -1, []string{fmt.Sprint("p", i), strings.Repeat("x", 1000)})
		req.Topics = []kmsg.ProduceRequestTopic{{Topic: "pipelined", Partitions: []kmsg.ProduceRequestTopicPartition{{Partition: 0, Records: batch}}}}
		kafkaSend(t, conn, req, int32(100+i))
	}
	last := int64(-1)
	for i := range n {
		resp := kmsg.NewPtrProduceResponse()
		resp.Version = 7
		if id := kafkaReceive(t, conn, resp); id != int32(100+i) {
			t.Fatalf("answer %d has correlation id %d; want %d", i, id, 100+i)
		}
		p := resp.Topics[0].Partitions[0]
		if p.ErrorCode != 0 || p.BaseOffset <= last {
			t.Fatalf("answer %d: %v at %d, after %d", i, kerr.ErrorForCode(p.ErrorCode), p.BaseOffset, last)
		}
		last = p.BaseOffset
	}
	recs := readDirect(t, s, "pipelined")
	for i := range n {
		if got := string(recs[2*i].Value); got != fmt.Sprint("p", i) {
			t.Fatalf("record %d is %q: not in the order sent", 2*i, got)
		}
	}
}

// TestKafkaSaslHandshakeV0: after a SaslHandshake of version 0 the
// client sends the bare PLAIN token in a frame of its own, and gets an
// empty frame back once signed in; a wrong one closes the connection.
func TestKafkaSaslHandshakeV0(t *testing.T) {
	_, addr := startKafka(t, t.TempDir())
	login := func(password string) (net.Conn, error) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		hs := kmsg.NewPtrSASLHandshakeRequest()
		hs.Version, hs.Mechanism = 0, "PLAIN"
		kafkaRoundTrip(t, conn, hs, kmsg.NewPtrSASLHandshakeResponse())
		token := []byte("\x00" + admin + "\x00" + password)
		conn.Write(append(binary.BigEndian.AppendUint32(nil, uint32(len(token))), token...))
		var size [4]byte
		_, err = io.ReadFull(conn, size[:])
		if err == nil && binary.BigEndian.Uint32(size[:]) != 0 {
			t.Fatalf("answer to the token: %d bytes; want an empty frame", binary.BigEndian.Uint32(size[:]))
		}
		return conn, err
	}
	if conn, err := login("wrong"); err == nil {
		conn.Close()
		t.Fatal("a wrong password was answered; want the connection closed")
	}
	conn, err := login(adminPass)
	if err != nil {
		t.Fatalf("the right password: %v", err)
	}
	defer conn.Close()
	meta := kmsg.NewPtrMetadataRequest()
	meta.Version = 4
	resp := kmsg.NewPtrMetadataResponse()
	kafkaRoundTrip(t, conn, meta, resp)
	if len(resp.Brokers) != 1 {
		t.Fatalf("Metadata after signing in: %+v", resp)
	}
}
