package e2e_test

import (
	"bytes"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/formats/lz4stream"
	"github.com/messagevault/messagevault/internal/azurite"
	"github.com/messagevault/messagevault/internal/hexfile"
	"github.com/messagevault/messagevault/internal/mvtest"
)

// TestOriginalClientsLZ4Stream: values published as the original C#
// client publishes them (lz4net's LZ4Stream, hand-written golden bytes,
// one of them split across records) read back through the CLI, from
// storage and through the server; and publish --lz4-stream writes every
// value so that such a client can read it.
func TestOriginalClientsLZ4Stream(t *testing.T) {
	s := mvtest.Start(t, t.TempDir(), nil)
	golden := func(name string) []byte {
		b, err := hexfile.Parse(filepath.Join("..", "formats", "lz4stream", "testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	two := golden("two_chunks.hex")
	publish(t, s, "csharp", []messagevault.Message{
		messagevault.NewMessage([]byte("a"), golden("compressed.hex"), messagevault.AttrLZ4),
		messagevault.NewMessage([]byte("b"), two[:5], messagevault.AttrLZ4|messagevault.AttrContinued),
		messagevault.NewMessage([]byte("b"), two[5:], messagevault.AttrLZ4),
		messagevault.NewMessage([]byte("c"), nil, messagevault.AttrLZ4),
	})
	want := []string{"a\t" + strings.Repeat("abc", 10) + "-end!", "b\t" + strings.Repeat("a", 300) + "xyz", "c\t"}
	for _, via := range [][]string{nil, {"--via-server"}} {
		out := mustCLI(t, s, "", append([]string{"read", "csharp"}, via...)...)
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		if len(lines) != len(want) {
			t.Fatalf("read %v:\n%s", via, out)
		}
		for i, w := range want {
			if !strings.HasSuffix(lines[i], "\t"+w) {
				t.Fatalf("read %v: line %d is %q, want it to end in %q", via, i, lines[i], w)
			}
		}
	}

	// Publishing for C# consumers: every record flagged LZ4, each value
	// in LZ4Stream chunks, a large one split.
	big := bytes.Repeat([]byte("for the C# consumers "), 10000) // 210 kB
	file := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(file, big, 0o644); err != nil {
		t.Fatal(err)
	}
	mustCLI(t, s, "", "publish", "ours", "short", "--key", "k", "--lz4-stream")
	mustCLI(t, s, "", "publish", "ours", "--file", file, "--key", "k", "--lz4-stream")
	var values [][]byte
	var value []byte
	for _, rec := range readDirect(t, s, "ours") {
		if rec.Attributes&messagevault.AttrLZ4 == 0 {
			t.Fatalf("record at %d: attributes %#x, without LZ4", rec.Offset, rec.Attributes)
		}
		value = append(value, rec.Value...)
		if rec.Attributes&messagevault.AttrContinued == 0 {
			values = append(values, value)
			value = nil
		}
	}
	if len(values) != 2 {
		t.Fatalf("%d values stored, want 2", len(values))
	}
	for i, w := range [][]byte{[]byte("short"), big} {
		got, err := lz4stream.Decode(values[i], 1<<30)
		if err != nil || !bytes.Equal(got, w) {
			t.Fatalf("value %d: %d stored bytes decode to %d bytes (%v), want %d", i, len(values[i]), len(got), err, len(w))
		}
	}
	if out := mustCLI(t, s, "", "read", "ours", "--limit", "1"); !strings.HasSuffix(out, "\tk\tshort\n") {
		t.Fatalf("read back: %q", out)
	}
}

// TestShortStreamNames: names of 1 and 2 characters, valid in the
// original (containers mv-a, mv-ab), publish, list and read, from storage
// and through the server, on the local backend and on Azurite.
func TestShortStreamNames(t *testing.T) {
	check := func(t *testing.T, s *mvtest.Server) {
		mustCLI(t, s, "", "publish", "a", "one", "--key", "k")
		mustCLI(t, s, "", "publish", "AB", "two", "--key", "k")
		list := mustCLI(t, s, "", "streams")
		for _, name := range []string{"a", "ab"} {
			if !regexp.MustCompile(`(?m)^` + name + `\s`).MatchString(list) {
				t.Fatalf("streams does not list %q:\n%s", name, list)
			}
			for _, via := range [][]string{nil, {"--via-server"}} {
				if out := mustCLI(t, s, "", append([]string{"read", name}, via...)...); strings.Count(out, "\n") != 1 || !strings.HasSuffix(out, "\tk\t"+map[string]string{"a": "one", "ab": "two"}[name]+"\n") {
					t.Fatalf("read %s %v: %q", name, via, out)
				}
			}
		}
	}
	t.Run("local", func(t *testing.T) { check(t, mvtest.Start(t, t.TempDir(), nil)) })
	t.Run("azure", func(t *testing.T) {
		// With grants a year long, for the original's readers, which never
		// renew theirs (revoking them: TestAzureGrantsAreRevocable).
		s := startAzure(t, azurite.Start(t), "--grant-ttl", "8760h")
		check(t, s)
		status, body, _ := do(t, s.Request("GET", "/streams/a", admin, adminPass, nil, ""))
		var grant struct{ Signature string }
		mustDecode(t, body, &grant)
		u, err := url.Parse(grant.Signature)
		if status != 200 || err != nil {
			t.Fatalf("grant: %d %s", status, body)
		}
		se, err := time.Parse(time.RFC3339, u.Query().Get("se"))
		if want := time.Now().Add(8760 * time.Hour); err != nil || se.Before(want.Add(-time.Hour)) || se.After(want.Add(time.Hour)) {
			t.Fatalf("grant expiry %q, want a year from now", u.Query().Get("se"))
		}
	})
}

// TestAppendToACopierMirror: a directory mirrored by the original's
// MessageCopier holds a records file exactly as long as the committed
// position, without the padding to a whole page that a writer leaves.
// The server appends to it (padding the last page on its first write),
// and everything reads back.
func TestAppendToACopierMirror(t *testing.T) {
	dir := t.TempDir()
	s := mvtest.Start(t, dir, nil)
	mustCLI(t, s, "", "publish", "copied", "one", "two", "--key", "k")
	end := position(t, s, "copied")
	s.Signal(syscall.SIGTERM)
	s.Wait(30 * time.Second)
	records := filepath.Join(dir, "copied", "000000000000.b7")
	if err := os.Truncate(records, end); err != nil {
		t.Fatal(err)
	}

	s = mvtest.Start(t, dir, nil)
	mustCLI(t, s, "", "publish", "copied", "three", "--key", "k")
	for _, via := range [][]string{nil, {"--via-server"}} {
		out := mustCLI(t, s, "", append([]string{"read", "copied"}, via...)...)
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		if len(lines) != 3 || !strings.HasSuffix(lines[0], "\tk\tone") || !strings.HasSuffix(lines[2], "\tk\tthree") {
			t.Fatalf("read %v:\n%s", via, out)
		}
	}
	if info, err := os.Stat(records); err != nil || info.Size()%messagevault.PageSize != 0 {
		t.Fatalf("records file after the append: %v, %v (want whole pages)", info.Size(), err)
	}
	if out := mustCLI(t, s, "", "verify", "copied"); !strings.Contains(out, "3 records") {
		t.Fatalf("verify: %s", out)
	}
}
