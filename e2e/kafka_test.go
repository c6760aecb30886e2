package e2e_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/file"
	"github.com/messagevault/messagevault/internal/mvtest"
	"github.com/messagevault/messagevault/stream"
)

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
	addr := freePort(t)
	s := mvtest.Start(t, t.TempDir(), nil, "--kafka-listen", addr)
	s.WaitOutput("serving the Kafka protocol", 10*time.Second)
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
}

// TestKafkaRefusals: a wrong password is refused at sign-in; a user
// without the claim to write gets TOPIC_AUTHORIZATION_FAILED; a record
// with headers (which MessageVault's records cannot hold) is refused and
// nothing is stored.
func TestKafkaRefusals(t *testing.T) {
	addr := freePort(t)
	dir := t.TempDir()
	users := usersWithAdmin(t, dir)
	if err := users.Add(context.Background(), "reader", "reader-pw", "all:read"); err != nil {
		t.Fatal(err)
	}
	users.Close()
	s := mvtest.Start(t, dir, nil, "--kafka-listen", addr)
	s.WaitOutput("serving the Kafka protocol", 10*time.Second)
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
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		t.Fatal("kcat is missing: make deps installs it (apt-get install kcat)")
	}
	addr := freePort(t)
	s := mvtest.Start(t, t.TempDir(), nil, "--kafka-listen", addr)
	s.WaitOutput("serving the Kafka protocol", 10*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, kcat, "-b", addr, "-t", "kcat-lines", "-P", "-K", ":",
		"-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanisms=PLAIN",
		"-X", "sasl.username="+admin, "-X", "sasl.password="+adminPass,
		"-X", "request.required.acks=-1")
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
	addr := freePort(t)
	s := mvtest.Start(t, dir, nil, "--tls-cert", certFile, "--tls-key", keyFile, "--kafka-listen", addr)
	s.WaitOutput("serving the Kafka protocol", 10*time.Second)
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
	addr := freePort(t)
	s := mvtest.Start(t, t.TempDir(), nil, "--kafka-listen", addr)
	s.WaitOutput("serving the Kafka protocol", 10*time.Second)
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
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		t.Fatal("kcat is missing: make deps installs it (apt-get install kcat)")
	}
	addr := freePort(t)
	s := mvtest.Start(t, t.TempDir(), nil, "--kafka-listen", addr)
	s.WaitOutput("serving the Kafka protocol", 10*time.Second)
	ans := publish(t, s, "kcat-read", []messagevault.Message{msg("a", "one"), msg("", "two"), msg("c", strings.Repeat("3", 1000))})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, kcat, "-b", addr, "-t", "kcat-read", "-C", "-e", "-o", "beginning", "-f", "%o %k %S\n",
		"-X", "security.protocol=SASL_PLAINTEXT", "-X", "sasl.mechanisms=PLAIN",
		"-X", "sasl.username="+admin, "-X", "sasl.password="+adminPass)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kcat -C -e: %v (did it stop at the end?)\n%s", err, out)
	}
	want := fmt.Sprintf("%d a 3\n%d  3\n%d c 1000\n", ans.Offsets[0], ans.Offsets[1], ans.Offsets[2])
	if string(out) != want {
		t.Fatalf("kcat printed\n%s\nwant\n%s", out, want)
	}
}
