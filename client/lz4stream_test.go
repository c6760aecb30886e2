package client_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/client"
	"github.com/messagevault/messagevault/internal/hexfile"
)

// TestReadsTheOriginalClientsValues reads values as the original C#
// client publishes them: every value in lz4net's LZ4Stream format with the
// LZ4 attribute, an empty one as zero bytes, a long one split across
// records flagged "to be continued". The compressed bytes are the golden
// files written by hand from the format's description. An LZ4 frame, which
// this package's WithCompression writes, reads in the same stream.
func TestReadsTheOriginalClientsValues(t *testing.T) {
	golden := func(name string) []byte {
		b, err := hexfile.Parse(filepath.Join("..", "formats", "lz4stream", "testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	two := golden("two_chunks.hex")
	lz4 := messagevault.AttrLZ4
	more := messagevault.AttrLZ4 | messagevault.AttrContinued
	dir := t.TempDir()
	writeRaw(t, dir, "csharp",
		[]messagevault.Message{
			messagevault.NewMessage([]byte("k1"), golden("compressed.hex"), lz4),
			messagevault.NewMessage([]byte("k2"), nil, lz4),
			messagevault.NewMessage([]byte("k3"), two[:3], more),
			messagevault.NewMessage([]byte("k3"), two[3:10], more),
			messagevault.NewMessage([]byte("k3"), two[10:], lz4),
			messagevault.NewMessage([]byte("k4"), golden("stored.hex"), lz4),
			messagevault.NewMessage([]byte("k5"), lz4Compress(t, []byte(strings.Repeat("frame ", 40))), lz4),
		},
	)
	r, err := client.OpenDir(dir, "csharp")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	want := []string{
		strings.Repeat("abc", 10) + "-end!",
		"",
		strings.Repeat("a", 300) + "xyz",
		"hello",
		strings.Repeat("frame ", 40),
	}
	var got []string
	for m, err := range r.Messages(context.Background(), 0, -1) {
		if err != nil {
			t.Fatalf("after %d messages: %v", len(got), err)
		}
		got = append(got, string(m.Value))
	}
	if len(got) != len(want) {
		t.Fatalf("read %q", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("message %d: %q, want %q", i, got[i], want[i])
		}
	}
}
