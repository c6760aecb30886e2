package e2e_test

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/file"
	"github.com/messagevault/messagevault/internal/mvtest"
	"github.com/messagevault/messagevault/vault"
)

// appendUnchecked appends batches to a stream of the data directory dir
// (no server may run on it) without the server's checks, as an older
// server or another writer could have, and returns each batch's first
// offset.
func appendUnchecked(t *testing.T, dir, stream string, batches ...[]messagevault.Message) []int64 {
	t.Helper()
	store, err := file.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	v := vault.New(store, vault.Config{})
	defer v.Close()
	var first []int64
	for _, b := range batches {
		res, err := v.Append(context.Background(), stream, b)
		if err != nil {
			t.Fatal(err)
		}
		first = append(first, res.Offsets[0])
	}
	return first
}

// TestReadSkipsBadMessages: `read` prints every readable message, reports
// each unreadable one on stderr with where it is and where the next one
// starts, and exits 1 so a backup is not taken for complete; `tail` goes
// on past a chain cut off at the end instead of spinning on it, and never
// glues the next message onto it.
func TestReadSkipsBadMessages(t *testing.T) {
	dir := t.TempDir()
	off := appendUnchecked(t, dir, "bad",
		[]messagevault.Message{messagevault.NewMessage([]byte("a"), []byte("first half"), messagevault.AttrContinued)},
		[]messagevault.Message{messagevault.NewMessage([]byte("b"), []byte("another producer"), 0)},
		[]messagevault.Message{messagevault.NewMessage([]byte("c"), []byte("not lz4 at all"), messagevault.AttrLZ4)},
		[]messagevault.Message{messagevault.NewMessage([]byte("d"), []byte("good"), 0)},
		[]messagevault.Message{messagevault.NewMessage([]byte("e"), []byte("cut off"), messagevault.AttrContinued)},
	)
	s := mvtest.Start(t, dir, nil)
	out, errs, code := cli(t, s, "", "read", "bad", "--from", "0")
	want := fmt.Sprintf("%d\tb\tanother producer\n%d\td\tgood\n", off[1], off[3])
	if code != 1 || out != want || strings.Count(errs, "messagevault: skipped:") != 3 ||
		!strings.Contains(errs, fmt.Sprintf("the message at %d cannot be read (the next one starts at %d)", off[0], off[1])) ||
		!strings.Contains(errs, "3 messages could not be read") {
		t.Fatalf("read: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errs)
	}

	cmd := exec.Command(mvtest.Binary(t), "tail", "bad", "--from", fmt.Sprint(off[4]), "--count", "1")
	cmd.Env = append(mvtest.Env(), "MESSAGEVAULT_URL="+s.URL, "MESSAGEVAULT_USER=admin", "MESSAGEVAULT_PASSWORD="+adminPass)
	var tout, terr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &tout, &terr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	after := publish(t, s, "bad", []messagevault.Message{msg("f", "after")})
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("tail did not print the message after the cut-off chain:\n%s\n%s", tout.String(), terr.String())
	}
	if got := tout.String(); got != fmt.Sprintf("%d\tf\tafter\n", after.Offsets[0]) || !strings.Contains(terr.String(), fmt.Sprintf("the message at %d cannot be read", off[4])) {
		t.Fatalf("tail: exit %d\nstdout:\n%s\nstderr:\n%s", cmd.ProcessState.ExitCode(), got, terr.String())
	}
}

// TestTextOutputIsUnambiguous: in text output a key or value cannot fake a
// field or a line: backslashes, tabs, newlines, control characters and
// bytes that are not UTF-8 are escaped. JSON output gives a key that is
// not UTF-8 as KeyBase64.
func TestTextOutputIsUnambiguous(t *testing.T) {
	dir := t.TempDir()
	off := appendUnchecked(t, dir, "odd",
		[]messagevault.Message{messagevault.NewMessage([]byte("k\t1"), []byte("back\\slash\nnew\x01é\xff"), 0)},
		[]messagevault.Message{messagevault.NewMessage([]byte{0xfe, 'k'}, []byte("v"), 0)},
	)
	s := mvtest.Start(t, dir, nil)
	text := mustCLI(t, s, "", "read", "odd", "--from", "0")
	want := fmt.Sprintf("%d\tk\\t1\tback\\\\slash\\nnew\\x01é\\xff\n%d\t\\xfek\tv\n", off[0], off[1])
	if text != want {
		t.Fatalf("text:\n%q\nwant\n%q", text, want)
	}
	js := mustCLI(t, s, "", "read", "odd", "--from", "0", "--format", "json")
	if lines := strings.Split(strings.TrimSpace(js), "\n"); len(lines) != 2 || !strings.Contains(lines[0], `"Key":"k\t1"`) || !strings.Contains(lines[1], `"KeyBase64":"/ms="`) || strings.Contains(lines[1], `"Key":`) {
		t.Fatalf("json:\n%s", js)
	}
}
