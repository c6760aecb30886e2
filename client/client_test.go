package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/client"
	"github.com/messagevault/messagevault/formats/lz4stream"
	"github.com/messagevault/messagevault/internal/mvtest"
)

func newClient(s *mvtest.Server, opts ...client.Option) *client.Client {
	return client.New(s.URL, "admin", mvtest.AdminPassword, opts...)
}

func collect(t *testing.T, r *client.Reader, from int64) []client.ReadMessage {
	t.Helper()
	var out []client.ReadMessage
	for m, err := range r.Messages(context.Background(), from, -1) {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

func TestPublishSplitCompressAndReadBack(t *testing.T) {
	s := mvtest.Start(t, t.TempDir(), nil)
	ctx := context.Background()
	huge := bytes.Repeat([]byte("compressible text "), 20000) // 360 kB, compresses well
	random := make([]byte, 150_000)                           // does not compress: split only
	for i := range random {
		random[i] = byte(i*7919 + i/13)
	}
	msgs := []client.Message{
		{Key: []byte("small"), Value: []byte("hello")},
		{Key: []byte("huge"), Value: huge},
		{Key: []byte("random"), Value: random},
		{Key: []byte("empty"), Value: []byte{}},
	}
	for _, mode := range []struct {
		compress string
		opt      client.Option
	}{
		{"none", client.WithCompression(false)},
		{"frame", client.WithCompression(true)},
		{"lz4stream", client.WithLZ4Stream(true)},
	} {
		compress := mode.compress
		c := newClient(s, mode.opt)
		name := "split-" + compress
		res, err := c.Publish(ctx, name, msgs)
		if err != nil {
			t.Fatal(err)
		}
		for _, viaServer := range []bool{false, true} {
			var opts []client.Option
			if viaServer {
				opts = append(opts, client.WithServerReads())
			}
			r, err := newClient(s, opts...).Reader(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			if r.ViaServer != viaServer {
				t.Fatalf("ViaServer = %v", r.ViaServer)
			}
			got := collect(t, r, 0)
			r.Close()
			if len(got) != len(msgs) {
				t.Fatalf("compress=%v viaServer=%v: %d messages back, want %d", compress, viaServer, len(got), len(msgs))
			}
			for i, m := range got {
				if !bytes.Equal(m.Key, msgs[i].Key) || !bytes.Equal(m.Value, msgs[i].Value) || m.Offset != res.Offsets[i] {
					t.Fatalf("compress=%v viaServer=%v: message %d differs (%d bytes at %d)", compress, viaServer, i, len(m.Value), m.Offset)
				}
			}
		}
		// Compressed, the huge value takes far fewer bytes in the stream.
		size := res.Position
		t.Logf("compress=%v: stream is %d bytes", compress, size)
		if compress != "none" && size > 200_000 {
			t.Fatalf("compressed stream is %d bytes", size)
		}
		if compress == "lz4stream" {
			checkLZ4StreamRecords(t, s, name, msgs)
		}
	}
}

// checkLZ4StreamRecords checks that every record of stream carries the LZ4
// attribute, as the original C# client's readers need, and that each
// message's records put together are its value in LZ4Stream chunks.
func checkLZ4StreamRecords(t *testing.T, s *mvtest.Server, stream string, msgs []client.Message) {
	t.Helper()
	r, err := client.OpenDir(s.DataDir, stream)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var value []byte
	i := 0
	for rec, err := range r.Records(context.Background(), 0, -1) {
		if err != nil {
			t.Fatal(err)
		}
		if rec.Attributes&messagevault.AttrLZ4 == 0 {
			t.Fatalf("record at %d (message %d) has attributes %#x, without LZ4", rec.Offset, i, rec.Attributes)
		}
		value = append(value, rec.Value...)
		if rec.Attributes&messagevault.AttrContinued != 0 {
			continue
		}
		got, err := lz4stream.Decode(value, 1<<30)
		if err != nil || !bytes.Equal(got, msgs[i].Value) {
			t.Fatalf("message %d: %d stored bytes decode to %d bytes (%v), want its value", i, len(value), len(got), err)
		}
		value, i = nil, i+1
	}
	if i != len(msgs) {
		t.Fatalf("%d messages stored, want %d", i, len(msgs))
	}
}

func TestBufferedPublisherKeepsOrder(t *testing.T) {
	s := mvtest.Start(t, t.TempDir(), nil)
	ctx := context.Background()
	c := newClient(s)
	p := c.NewBufferedPublisher(ctx, "buffered", 2*time.Millisecond, 4096, 50)
	var wg sync.WaitGroup
	offsets := make([]int64, 300)
	for g := 0; g < 3; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g * 100; i < (g+1)*100; i++ {
				off, err := p.Add(ctx, client.Message{Key: []byte(fmt.Sprint(g)), Value: []byte(fmt.Sprintf("%03d", i))})
				if err != nil {
					t.Error(err)
					return
				}
				offsets[i] = off
			}
		}()
	}
	wg.Wait()
	p.Close()
	r, err := c.Reader(ctx, "buffered")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got := collect(t, r, 0)
	if len(got) != 300 {
		t.Fatalf("%d messages, want 300", len(got))
	}
	last := map[string]string{}
	for _, m := range got {
		if string(m.Value) <= last[string(m.Key)] {
			t.Fatalf("producer %s: %s after %s", m.Key, m.Value, last[string(m.Key)])
		}
		last[string(m.Key)] = string(m.Value)
		i, _ := strconv.Atoi(string(m.Value))
		if offsets[i] != m.Offset {
			t.Fatalf("message %d: Add said %d, stored at %d", i, offsets[i], m.Offset)
		}
	}
}

func TestPublishRetriesUntilTheServerIsUp(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	dir := t.TempDir()
	c := client.New("http://"+addr, "admin", mvtest.AdminPassword, client.WithRetries(50, 50*time.Millisecond, 200*time.Millisecond))
	done := make(chan error, 1)
	go func() {
		_, err := c.Publish(context.Background(), "late", []client.Message{{Value: []byte("eventually")}})
		done <- err
	}()
	time.Sleep(500 * time.Millisecond) // connection refused meanwhile: retried
	mvtest.Start(t, dir, nil, "--listen", addr)
	if err := <-done; err != nil {
		t.Fatalf("publish across the server's start: %v", err)
	}
	// A client error is not retried.
	_, err = c.Publish(context.Background(), "x_y", []client.Message{{Value: []byte("v")}})
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != 400 {
		t.Fatalf("publish to a bad stream name: %v", err)
	}
	// Cancellation ends the retries.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	dead := client.New("http://127.0.0.1:1", "u", "p", client.WithRetries(100, 50*time.Millisecond, 50*time.Millisecond))
	start := time.Now()
	if _, err := dead.Publish(ctx, "abc", []client.Message{{Value: []byte("v")}}); err == nil || time.Since(start) > 10*time.Second {
		t.Fatalf("publish to nowhere with a deadline: %v after %v", err, time.Since(start))
	}
}

// TestFailFast: with WithFailFast, a publish to a URL where nothing listens
// fails at once with a hint; once the server has answered, a refused
// connection (a restart) is retried again.
func TestFailFast(t *testing.T) {
	addr := freeAddr(t)
	c := client.New("http://"+addr, "admin", mvtest.AdminPassword, client.WithFailFast(true), client.WithRetryFor(time.Minute))
	start := time.Now()
	_, err := c.Publish(context.Background(), "s", []client.Message{{Value: []byte("v")}})
	if err == nil || !strings.Contains(err.Error(), "is the server running at http://"+addr+"?") || time.Since(start) > 5*time.Second {
		t.Fatalf("publish to nothing: %v after %v", err, time.Since(start))
	}
	dir := t.TempDir()
	s := mvtest.Start(t, dir, nil, "--listen", addr)
	if _, err := c.Publish(context.Background(), "s", []client.Message{{Value: []byte("v")}}); err != nil {
		t.Fatal(err)
	}
	s.Signal(syscall.SIGTERM)
	s.Wait(30 * time.Second)
	done := make(chan error, 1)
	go func() {
		_, err := c.Publish(context.Background(), "s", []client.Message{{Value: []byte("after the restart")}})
		done <- err
	}()
	time.Sleep(500 * time.Millisecond) // refused meanwhile: retried
	mvtest.Start(t, dir, nil, "--listen", addr)
	if err := <-done; err != nil {
		t.Fatalf("publish across a restart: %v", err)
	}
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestFollowResumes(t *testing.T) {
	s := mvtest.Start(t, t.TempDir(), nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := newClient(s)
	if _, err := c.Publish(ctx, "follow", []client.Message{{Value: []byte("m0")}}); err != nil {
		t.Fatal(err)
	}
	r, err := c.Reader(ctx, "follow")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	go func() {
		for i := 1; i < 6; i++ {
			time.Sleep(50 * time.Millisecond)
			c.Publish(ctx, "follow", []client.Message{{Value: []byte(fmt.Sprintf("m%d", i))}})
		}
	}()
	var next int64
	n := 0
	for m, err := range r.Follow(ctx, 0) {
		if err != nil {
			t.Fatal(err)
		}
		if string(m.Value) != fmt.Sprintf("m%d", n) {
			t.Fatalf("followed %q, want m%d", m.Value, n)
		}
		next = m.Next
		if n++; n == 3 {
			break // the consumer stops and keeps next
		}
	}
	// Resuming from the kept position gives exactly the rest.
	for m, err := range r.Follow(ctx, next) {
		if err != nil {
			t.Fatal(err)
		}
		if string(m.Value) != fmt.Sprintf("m%d", n) {
			t.Fatalf("resumed with %q, want m%d", m.Value, n)
		}
		if n++; n == 6 {
			break
		}
	}
}

func TestMirrorIsResumableAndIdentical(t *testing.T) {
	dir := t.TempDir()
	s := mvtest.Start(t, dir, nil)
	ctx := context.Background()
	c := newClient(s)
	for b := 0; b < 20; b++ {
		var msgs []client.Message
		for i := 0; i < 200; i++ {
			msgs = append(msgs, client.Message{Key: []byte("k"), Value: bytes.Repeat([]byte{byte(b)}, 100+i*10)})
		}
		if _, err := c.Publish(ctx, "source", msgs); err != nil {
			t.Fatal(err)
		}
	}
	mirror := t.TempDir()
	r, err := c.Reader(ctx, "source")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// Interrupt the first run part-way.
	cctx, cancel := context.WithCancel(ctx)
	var stoppedAt int64
	_, err = r.Mirror(cctx, mirror, func(done, total int64) {
		if done > 0 && done < total && stoppedAt == 0 {
			stoppedAt = done
			cancel()
		}
	})
	if stoppedAt == 0 {
		t.Fatalf("the mirror was not interrupted (err %v)", err)
	}
	pos, err := r.Mirror(ctx, mirror, nil)
	if err != nil {
		t.Fatal(err)
	}
	src, _ := r.Position(ctx)
	if pos != src {
		t.Fatalf("mirror at %d, source at %d", pos, src)
	}
	// The v1 position: the first 8 bytes of position.c7 (the writer's
	// state slots that follow them in the source are not part of it).
	a, _ := os.ReadFile(filepath.Join(dir, "source", "position.c7"))
	b, _ := os.ReadFile(filepath.Join(mirror, "source", "position.c7"))
	if len(a) < 8 || len(b) != 8 || !bytes.Equal(a[:8], b) {
		t.Fatalf("position.c7 differs: source %x, mirror %x", a[:min(len(a), 8)], b)
	}
	a, _ = os.ReadFile(filepath.Join(dir, "source", "000000000000.b7"))
	b, _ = os.ReadFile(filepath.Join(mirror, "source", "000000000000.b7"))
	if !bytes.Equal(a[:src], b[:src]) {
		t.Fatal("mirrored records differ from the source's")
	}
	// New messages: the next run copies only them.
	if _, err := c.Publish(ctx, "source", []client.Message{{Value: []byte("later")}}); err != nil {
		t.Fatal(err)
	}
	if pos2, err := r.Mirror(ctx, mirror, nil); err != nil || pos2 <= pos {
		t.Fatalf("incremental mirror: %d, %v", pos2, err)
	}
	m, err := client.OpenDir(mirror, "source")
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if res, err := m.Verify(ctx, nil); err != nil || res.Records != 4001 {
		t.Fatalf("verify the mirror: %+v, %v", res, err)
	}
	// A mirror of another stream is not extended from this one.
	if _, err := c.Publish(ctx, "other", []client.Message{{Value: []byte("x")}, {Value: []byte("y")}}); err != nil {
		t.Fatal(err)
	}
	os.Rename(filepath.Join(mirror, "source"), filepath.Join(mirror, "other"))
	ro, _ := c.Reader(ctx, "other")
	defer ro.Close()
	if _, err := ro.Mirror(ctx, mirror, nil); err == nil || !strings.Contains(err.Error(), "past the source") {
		t.Fatalf("mirroring onto another stream's copy: %v", err)
	}
}

func TestVerifyFindsCorruption(t *testing.T) {
	dir := t.TempDir()
	s := mvtest.Start(t, dir, nil)
	ctx := context.Background()
	c := newClient(s)
	res, err := c.Publish(ctx, "damaged", []client.Message{{Value: []byte("one")}, {Value: []byte("two")}, {Value: []byte("three")}})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "damaged", "000000000000.b7"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte{0xee}, res.Offsets[1]+22) // a byte of the second value
	f.Close()
	r, err := client.OpenDir(dir, "damaged")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, err := r.Verify(ctx, nil)
	if !errors.Is(err, messagevault.ErrCorrupt) || !strings.Contains(err.Error(), fmt.Sprintf("at %d", res.Offsets[1])) || got.Records != 1 {
		t.Fatalf("verify: %+v, %v", got, err)
	}
}

// A records file cut short (a copy that stopped early, a damaged disk):
// verify checks the records that are there, and names the first position
// that cannot be read and how much is readable.
func TestVerifyReportsATruncatedFile(t *testing.T) {
	dir := t.TempDir()
	s := mvtest.Start(t, dir, nil)
	ctx := context.Background()
	c := newClient(s)
	res, err := c.Publish(ctx, "cut", []client.Message{{Value: []byte("one")}, {Value: []byte("two")}, {Value: []byte("three")}})
	if err != nil {
		t.Fatal(err)
	}
	s.Signal(syscall.SIGKILL)
	s.Wait(10 * time.Second)
	if err := os.Truncate(filepath.Join(dir, "cut", "000000000000.b7"), res.Offsets[2]+5); err != nil {
		t.Fatal(err)
	}
	r, err := client.OpenDir(dir, "cut")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got, err := r.Verify(ctx, nil)
	want := fmt.Sprintf("record at %d", res.Offsets[2])
	if !errors.Is(err, messagevault.ErrCorrupt) || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), fmt.Sprintf("%d bytes are readable", res.Offsets[2]+5)) || got.Records != 2 {
		t.Fatalf("verify of a truncated file: %d records good, %v; want 2 and an error naming %q", got.Records, err, want)
	}
}
