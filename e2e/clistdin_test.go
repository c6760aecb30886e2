package e2e_test

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/messagevault/messagevault/internal/mvtest"
)

// TestPublishStdinLingersAndFlushes: `tail -f log | messagevault publish
// --stdin` publishes a quiet input within --linger, and Ctrl-C sends the
// lines it holds before exiting.
func TestPublishStdinLingersAndFlushes(t *testing.T) {
	s := mvtest.Start(t, t.TempDir(), nil)
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
		name := "stdin-" + strings.ToLower(sig.String()[:3])
		name = strings.ReplaceAll(name, " ", "")
		cmd := exec.Command(mvtest.Binary(t), "publish", name, "--stdin", "--linger", "100ms", "--batch", "1000")
		cmd.Env = append(mvtest.Env(), "MESSAGEVAULT_URL="+s.URL, "MESSAGEVAULT_USER=admin", "MESSAGEVAULT_PASSWORD="+adminPass)
		in, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		io.WriteString(in, "first line\n")
		// The input stays open: the line goes out after the linger.
		deadline := time.Now().Add(20 * time.Second)
		for position(t, s, name) == 0 {
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				t.Fatalf("a quiet input was never published: %s", out.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
		// Lines held when the signal comes are sent before the exit.
		io.WriteString(in, "second line\nthird line\n")
		time.Sleep(20 * time.Millisecond)
		cmd.Process.Signal(sig)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("%v: %v\n%s", sig, err, out.String())
			}
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			t.Fatalf("publish --stdin did not exit after %v", sig)
		}
		if got := strings.Join(values(readDirect(t, s, name)), ","); got != "=first line,=second line,=third line" {
			t.Fatalf("after %v the stream holds %q; output %s", sig, got, out.String())
		}
	}
}

// TestPublishStdinSaysWhatWasNotStored: a publish that fails for good says
// how many lines were not stored.
func TestPublishStdinSaysWhatWasNotStored(t *testing.T) {
	s := mvtest.Start(t, t.TempDir(), nil)
	_, errs, code := cli(t, s, "one\ntwo\nthree\n", "publish", "x!", "--stdin")
	if code != 1 || !strings.Contains(errs, "3 lines were not stored") {
		t.Fatalf("exit %d: %s", code, errs)
	}
}

// TestPublishExpectPosition: publish --expect-position appends only at
// that position, and otherwise says where the stream is.
func TestPublishExpectPosition(t *testing.T) {
	s := mvtest.Start(t, t.TempDir(), nil)
	mustCLI(t, s, "", "publish", "expected", "first", "--expect-position", "0")
	pos := position(t, s, "expected")
	_, errs, code := cli(t, s, "", "publish", "expected", "late", "--expect-position", "0")
	if code != 1 || !strings.Contains(errs, fmt.Sprintf("the stream is at position %d, not 0", pos)) {
		t.Fatalf("exit %d: %s", code, errs)
	}
	mustCLI(t, s, "", "publish", "expected", "second", "--expect-position", fmt.Sprint(pos))
	if got := strings.Join(values(readDirect(t, s, "expected")), ","); got != "=first,=second" {
		t.Fatalf("stream holds %q", got)
	}
}

// TestReadToAFullDiskFails: `read > /dev/full` exits 1, not 0.
func TestReadToAFullDiskFails(t *testing.T) {
	s := mvtest.Start(t, t.TempDir(), nil)
	mustCLI(t, s, "", "publish", "full", "one", "two")
	for _, format := range []string{"text", "json", "raw"} {
		full, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
		if err != nil {
			t.Skip("no /dev/full here")
		}
		cmd := exec.Command(mvtest.Binary(t), "read", "full", "--from", "0", "--format", format)
		cmd.Env = append(mvtest.Env(), "MESSAGEVAULT_URL="+s.URL, "MESSAGEVAULT_USER=admin", "MESSAGEVAULT_PASSWORD="+adminPass)
		var errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = full, &errb
		cmd.Run()
		full.Close()
		if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(errb.String(), "no space left") {
			t.Fatalf("read --format %s > /dev/full: exit %d, %s", format, code, errb.String())
		}
	}
}

// TestURLWithoutSchemeFailsAtOnce: a malformed --url is a usage error
// (exit 2) at once, not a connection error retried for a minute.
func TestURLWithoutSchemeFailsAtOnce(t *testing.T) {
	start := time.Now()
	cmd := exec.Command(mvtest.Binary(t), "publish", "orders", "v", "--url", "127.0.0.1:8001")
	cmd.Env = mvtest.Env()
	out, _ := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 2 || !strings.Contains(string(out), "is not a server URL") || time.Since(start) > 10*time.Second {
		t.Fatalf("exit %d after %v: %s", code, time.Since(start), out)
	}
}

// TestReadRawIsTheStreamsBytes: read --format raw writes the stream's
// records byte for byte in one pass, and --limit counts whole messages
// (all records of a split value).
func TestReadRawIsTheStreamsBytes(t *testing.T) {
	s := mvtest.Start(t, t.TempDir(), nil)
	big := filepath.Join(t.TempDir(), "big")
	os.WriteFile(big, bytes.Repeat([]byte("0123456789abcdef"), 10000), 0o644) // 160 kB: 3 records
	mustCLI(t, s, "", "publish", "rawbytes", "--file", big)
	mustCLI(t, s, "", "publish", "rawbytes", "one", "two", "three")
	pos := position(t, s, "rawbytes")
	records, err := os.ReadFile(filepath.Join(s.DataDir, "rawbytes", "000000000000.b7"))
	if err != nil {
		t.Fatal(err)
	}
	if raw := mustCLI(t, s, "", "read", "rawbytes", "--from", "0", "--format", "raw"); raw != string(records[:pos]) {
		t.Fatalf("raw read: %d bytes, the stream holds %d", len(raw), pos)
	}
	first := mustCLI(t, s, "", "read", "rawbytes", "--from", "0", "--format", "raw", "--limit", "1")
	small := recordSize("", "one") + recordSize("", "two") + recordSize("", "three")
	if int64(len(first)) != pos-small || first != string(records[:pos-small]) {
		t.Fatalf("--limit 1 gave %d bytes; want the %d bytes of the big message's records", len(first), pos-small)
	}
}
