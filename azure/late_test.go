package azure_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/messagevault/messagevault/azure"
	"github.com/messagevault/messagevault/internal/azurite"
	"github.com/messagevault/messagevault/stream"
)

func isPageWrite(req *http.Request) bool {
	return req.Method == http.MethodPut && strings.Contains(req.URL.RawQuery, "comp=page") &&
		strings.HasSuffix(req.URL.Path, "/"+azure.RecordsBlob)
}

func isPositionMetadata(req *http.Request) bool {
	return req.Method == http.MethodPut && strings.Contains(req.URL.RawQuery, "comp=metadata") &&
		strings.HasSuffix(req.URL.Path, "/"+azure.PositionBlob)
}

// TestLateCommitCannotCorrupt: a position commit (or a page write) cut off
// by the writer's deadline lands later, through the fault proxy: before
// the recovery's first request, between recovery and the next commit, or
// after it. In every ordering the stream
// stays readable end to end, every acknowledged batch is there once, and
// the batch whose outcome was unknown is there at most once.
func TestLateCommitCannotCorrupt(t *testing.T) {
	az := azurite.Start(t)
	ctx := context.Background()
	cases := []struct {
		kind      string
		match     func(*http.Request) bool
		deliverAt int
	}{
		{"commit", isPositionMetadata, 1}, {"commit", isPositionMetadata, 2}, {"commit", isPositionMetadata, 3},
		{"pages", isPageWrite, 1}, {"pages", isPageWrite, 2},
	}
	for _, tc := range cases {
		deliverAt := tc.deliverAt
		t.Run(fmt.Sprintf("%s-before-request-%d", tc.kind, deliverAt), func(t *testing.T) {
			p, cs := proxied(t, az)
			s, err := azure.Open(cs, azure.Config{MaxRetries: 1})
			if err != nil {
				t.Fatal(err)
			}
			name := fmt.Sprintf("late-%s-%d", tc.kind, deliverAt)
			pw, err := s.OpenWriter(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			w, err := stream.OpenWriter(ctx, name, pw, stream.WriterConfig{GrowStep: 1 << 20, OpTimeout: time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			seq := func(n uint64) stream.AppendOptions { return stream.AppendOptions{Producer: "p", Sequence: n} }
			other := func(n uint64) stream.AppendOptions { return stream.AppendOptions{Producer: "q", Sequence: n} }
			if _, err := w.AppendWith(ctx, batch("a", 2), seq(1)); err != nil {
				t.Fatal(err)
			}
			p.Late(tc.match, tc.match, deliverAt)
			if _, err := w.AppendWith(ctx, batch("b", 2), seq(2)); err == nil {
				t.Fatal("the held commit was reported durable")
			}
			for i, tag := range []string{"c", "d", "e"} {
				if _, err := w.AppendWith(ctx, batch(tag, 2), other(uint64(1+i))); err != nil {
					t.Fatalf("append %s after the late commit: %v", tag, err)
				}
			}
			delivered, status := p.LateStatus()
			if !delivered {
				t.Fatal("the late commit was never delivered")
			}
			t.Logf("the late commit got %d", status)
			// The retry of the unknown batch: stored at most once.
			res, err := w.AppendWith(ctx, batch("b", 2), seq(2))
			if err != nil {
				t.Fatalf("retry of b: %v", err)
			}
			t.Logf("the retry of b: duplicate %v", res.Duplicate)
			pr, err := s.OpenReader(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			defer pr.Close()
			got := strings.Join(readAll(t, pr), " ")
			if got != "a-0 a-1 b-0 b-1 c-0 c-1 d-0 d-1 e-0 e-1" && got != "a-0 a-1 c-0 c-1 d-0 d-1 e-0 e-1 b-0 b-1" {
				t.Fatalf("stream holds %s", got)
			}
		})
	}
}

// breaking cuts the body of the first records download it sees once armed
// after half its bytes, after running before (which changes the blob).
type breaking struct {
	mu     sync.Mutex
	armed  bool
	before func()
	broke  int
}

type halfBody struct {
	data []byte
	sent bool
}

func (b *halfBody) Read(p []byte) (int, error) {
	if b.sent {
		return 0, syscall.ECONNRESET
	}
	b.sent = true
	return copy(p, b.data[:len(b.data)/2]), nil
}

func (b *halfBody) Close() error { return nil }

func (x *breaking) Do(req *http.Request) (*http.Response, error) {
	resp, err := http.DefaultClient.Do(req)
	if err != nil || req.Method != http.MethodGet || !strings.HasSuffix(req.URL.Path, "/"+azure.RecordsBlob) {
		return resp, err
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if !x.armed {
		return resp, err
	}
	x.armed = false
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	x.before()
	x.broke++
	resp.Body = &halfBody{data: data}
	return resp, nil
}

// TestReadResumesAcrossAppends: a download that breaks off midway while a
// writer appends (which changes the records blob's ETag) is resumed, and
// the committed bytes are read whole: not "writer fenced".
func TestReadResumesAcrossAppends(t *testing.T) {
	az := azurite.Start(t)
	ctx := context.Background()
	w := writer(t, open(t, az, azure.Config{}), "resume")
	if _, err := w.Append(ctx, batch("a", 20)); err != nil {
		t.Fatal(err)
	}
	x := &breaking{armed: true, before: func() {
		if _, err := w.Append(ctx, batch("b", 2)); err != nil {
			t.Error(err)
		}
	}}
	pr, err := open(t, az, azure.Config{Transport: x}).OpenReader(ctx, "resume")
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	pos, err := pr.Position(ctx)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, pos)
	if n, err := pr.ReadAt(ctx, buf, 0); n != len(buf) || err != nil {
		t.Fatalf("read %d of %d bytes: %v", n, len(buf), err)
	}
	if x.broke != 1 {
		t.Fatal("no download was broken off")
	}
	if got := strings.Join(readAll(t, pr), " "); !strings.HasPrefix(got, "a-0 a-1") || !strings.HasSuffix(got, "b-0 b-1") {
		t.Fatalf("stream holds %s", got)
	}
}
