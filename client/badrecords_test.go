package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/pierrec/lz4/v4"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/client"
	"github.com/messagevault/messagevault/file"
	"github.com/messagevault/messagevault/internal/mvtest"
	"github.com/messagevault/messagevault/vault"
)

// writeRaw appends each batch to stream in dir as it is, bypassing the
// server's checks: what an old server, another implementation or a hostile
// producer may have left in a stream. It returns each batch's offsets.
func writeRaw(t *testing.T, dir, stream string, batches ...[]messagevault.Message) [][]int64 {
	t.Helper()
	store, err := file.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close() // after the vault: the directory's lock
	v := vault.New(store, vault.Config{})
	defer v.Close()
	var out [][]int64
	for _, b := range batches {
		res, err := v.Append(context.Background(), stream, b)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, res.Offsets)
	}
	return out
}

func lz4Compress(t *testing.T, v []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := lz4.NewWriter(&buf)
	if _, err := w.Write(v); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

type readResult struct {
	offset, next int64
	text         string // the value, or "error: ..." for a MessageError
}

// readAll collects what Messages yields, going on after message errors.
func readAll(t *testing.T, it func(func(client.ReadMessage, error) bool), limit int) []readResult {
	t.Helper()
	var out []readResult
	for m, err := range it {
		var me *client.MessageError
		switch {
		case errors.As(err, &me):
			if m.Offset != me.Offset || m.Next != me.Next {
				t.Fatalf("message error %v comes with offsets %d..%d", err, m.Offset, m.Next)
			}
			out = append(out, readResult{me.Offset, me.Next, "error: " + me.Err.Error()})
		case err != nil:
			t.Fatalf("after %v: %v", out, err)
		default:
			out = append(out, readResult{m.Offset, m.Next, string(m.Value)})
		}
		if len(out) == limit {
			break
		}
	}
	return out
}

// A chain that breaks off (a record flagged "to be continued" followed by
// another message, or by the end of the stream) and a value flagged LZ4
// that is not LZ4 are errors of their own message, which name where it
// starts and where the next one does; the reader goes on after them. The
// next producer's message is never glued onto a broken chain.
func TestBadMessagesAreErrorsOfTheirOwn(t *testing.T) {
	dir := t.TempDir()
	offs := writeRaw(t, dir, "bad",
		[]messagevault.Message{messagevault.NewMessage([]byte("a"), []byte("first half"), messagevault.AttrContinued)},
		[]messagevault.Message{messagevault.NewMessage([]byte("b"), []byte("another producer"), 0)},
		[]messagevault.Message{messagevault.NewMessage([]byte("c"), []byte("not lz4 at all"), messagevault.AttrLZ4)},
		[]messagevault.Message{messagevault.NewMessage([]byte("d"), []byte("good"), 0)},
		[]messagevault.Message{messagevault.NewMessage([]byte("e"), []byte("cut off"), messagevault.AttrContinued)},
	)
	r, err := client.OpenDir(dir, "bad")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx := context.Background()
	end, err := r.Position(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := readAll(t, r.Messages(ctx, 0, -1), 0)
	want := []struct {
		offset, next int64
		text         string
	}{
		{offs[0][0], offs[1][0], "error: broken"},
		{offs[1][0], offs[2][0], "another producer"},
		{offs[2][0], offs[3][0], "error: LZ4"},
		{offs[3][0], offs[4][0], "good"},
		{offs[4][0], end, "error: broken"},
	}
	if len(got) != len(want) {
		t.Fatalf("read %+v", got)
	}
	for i, w := range want {
		g := got[i]
		if g.offset != w.offset || g.next != w.next || !bytes.HasPrefix([]byte(g.text), []byte(w.text)) {
			t.Fatalf("message %d: %+v, want %+v (all: %+v)", i, g, w, got)
		}
	}

	// Follow reports the cut-off chain at the end once, without spinning,
	// and goes on with what comes next.
	fctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	r.PollInterval = 10 * time.Millisecond
	done := make(chan []readResult)
	go func() { done <- readAll(t, r.Follow(fctx, offs[4][0]), 2) }()
	time.Sleep(200 * time.Millisecond)
	writeRaw(t, dir, "bad", []messagevault.Message{messagevault.NewMessage([]byte("f"), []byte("after"), 0)})
	fol := <-done
	if len(fol) != 2 || fol[0].offset != offs[4][0] || fol[0].next != end || fol[1].offset != end || fol[1].text != "after" {
		t.Fatalf("follow: %+v", fol)
	}
}

// A compressed value that would decompress past the reader's limit (an
// LZ4 bomb) is an error of its message, not an exhausted memory.
func TestDecompressionIsLimited(t *testing.T) {
	dir := t.TempDir()
	bomb := lz4Compress(t, make([]byte, 4<<20))
	offs := writeRaw(t, dir, "bomb",
		[]messagevault.Message{messagevault.NewMessage([]byte("k"), bomb, messagevault.AttrLZ4)},
		[]messagevault.Message{messagevault.NewMessage([]byte("k"), []byte("next"), 0)},
	)
	r, err := client.OpenDir(dir, "bomb")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.MaxValueBytes = 1 << 20
	got := readAll(t, r.Messages(context.Background(), 0, -1), 0)
	if len(got) != 2 || got[0].text != fmt.Sprintf("error: LZ4 value: decompresses to more than the reader's limit of %d bytes", 1<<20) || got[1].offset != offs[1][0] || got[1].text != "next" {
		t.Fatalf("read %+v", got)
	}
	// Within the limit, it reads.
	r.MaxValueBytes = 8 << 20
	got = readAll(t, r.Messages(context.Background(), 0, -1), 0)
	if len(got) != 2 || len(got[0].text) != 4<<20 {
		t.Fatalf("with a higher limit: %d messages, first %d bytes", len(got), len(got[0].text))
	}
}

// TestReadFromInsideASplitValue: a read that starts at a record inside a
// value split into records gets the rest of that value as an error of its
// own, naming where the message starts, never as a cut value; from
// storage and through the server.
func TestReadFromInsideASplitValue(t *testing.T) {
	s := mvtest.Start(t, t.TempDir(), nil)
	ctx := context.Background()
	big := bytes.Repeat([]byte("0123456789"), 15_000) // 150 kB: three records
	res, err := newClient(s).Publish(ctx, "split", []client.Message{{Key: []byte("big"), Value: big}, {Key: []byte("next"), Value: []byte("after")}})
	if err != nil {
		t.Fatal(err)
	}
	second := res.Offsets[0] + int64(25+len("big")+messagevault.MaxValueSize) // the value's second record
	for _, via := range []bool{false, true} {
		var opts []client.Option
		if via {
			opts = append(opts, client.WithServerReads())
		}
		r, err := newClient(s, opts...).Reader(ctx, "split")
		if err != nil {
			t.Fatal(err)
		}
		got := readAll(t, r.Messages(ctx, second, -1), 0)
		r.Close()
		if len(got) != 2 || got[0].offset != res.Offsets[0] || got[0].next != res.Offsets[1] ||
			got[0].text != fmt.Sprintf("error: the read starts at %d, inside a message split into records that starts at %d: read from %d for its whole value", second, res.Offsets[0], res.Offsets[0]) ||
			got[1].text != "after" {
			t.Fatalf("via server %v: %+v", via, got)
		}
	}
}
