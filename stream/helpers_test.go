package stream_test

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"testing"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/formats"
	"github.com/messagevault/messagevault/stream"
)

// seqMessage is the message with sequence number seq used by the tests: its
// size varies with seq so that records straddle pages and chunks.
func seqMessage(seq int) messagevault.Message {
	key := []byte(fmt.Sprintf("k%d", seq))
	n := (seq * 7919) % 1500
	if seq%97 == 0 {
		n = messagevault.MaxValueSize - seq%10
	}
	v := make([]byte, 0, n+16)
	v = fmt.Appendf(v, "seq=%08d|", seq)
	for len(v) < n {
		v = append(v, byte('a'+(seq+len(v))%26))
	}
	return messagevault.NewMessage(key, v, byte(seq%2)) // bit 0 only as a marker
}

// seqOf returns the sequence number a seqMessage value carries, checking
// that the whole message is exactly seqMessage(seq).
func seqOf(rec formats.Record) (int, error) {
	v := rec.Value
	if len(v) < 13 || string(v[:4]) != "seq=" || v[12] != '|' {
		return 0, fmt.Errorf("record at %d: value %.20q is not a test message", rec.Offset, v)
	}
	seq, err := strconv.Atoi(string(v[4:12]))
	if err != nil {
		return 0, fmt.Errorf("record at %d: value %.20q is not a test message", rec.Offset, v)
	}
	want := seqMessage(seq)
	if !bytes.Equal(rec.Key, want.Key) || !bytes.Equal(rec.Value, want.Value) || rec.Attributes != want.Attributes || rec.CRC != want.CRC {
		return 0, fmt.Errorf("record at %d: message %d differs from what was appended", rec.Offset, seq)
	}
	return seq, nil
}

func batch(from, n int) []messagevault.Message {
	msgs := make([]messagevault.Message, n)
	for i := range msgs {
		msgs[i] = seqMessage(from + i)
	}
	return msgs
}

// readSeqs reads every committed record of a stream and checks that they
// are seqMessage(0), seqMessage(1), ... in order and end exactly at the
// committed position. It returns the number of messages and the position.
func readSeqs(t *testing.T, pages messagevault.PageReader) (int, int64) {
	t.Helper()
	ctx := context.Background()
	r := stream.NewReader("test", pages, stream.ReaderConfig{})
	pos, err := r.Position(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	var end int64
	for rec, err := range r.Records(ctx, 0, pos) {
		if err != nil {
			t.Fatalf("after %d messages: %v", n, err)
		}
		seq, err := seqOf(rec)
		if err != nil {
			t.Fatal(err)
		}
		if seq != n {
			t.Fatalf("record at %d holds message %d, want %d", rec.Offset, seq, n)
		}
		n++
		end = rec.Offset + int64(rec.Size())
	}
	if end != pos {
		t.Fatalf("records end at %d, committed position is %d", end, pos)
	}
	return n, pos
}

func recordsSize(msgs []messagevault.Message) int64 {
	var n int64
	for _, m := range msgs {
		n += int64(formats.RecordSize(len(m.Key), len(m.Value)))
	}
	return n
}
