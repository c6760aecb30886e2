package main_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/file"
	"github.com/messagevault/messagevault/stream"
)

// binary builds the messagevault binary once per test run.
func binary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "messagevault")
	out, err := exec.Command("go", "build", "-race", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// waitFor waits until the output buffer contains s.
func waitFor(t *testing.T, buf *syncBuffer, s string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(buf.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %q in:\n%s", s, buf.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestServeOpensLogAndExitsOnSIGTERM(t *testing.T) {
	bin := binary(t)
	dir := t.TempDir()
	// A stream written beforehand is opened by serve.
	s, err := file.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	pw, _ := s.OpenWriter(ctx, "orders")
	w, err := stream.OpenWriter(ctx, "orders", pw, stream.WriterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	res, err := w.Append(ctx, []messagevault.Message{messagevault.NewMessage([]byte("k"), []byte("v"), 0)})
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	s.Close()

	var stderr syncBuffer
	cmd := exec.Command(bin, "serve", "--data", dir)
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	waitFor(t, &stderr, "msg=serving")
	if !strings.Contains(stderr.String(), "stream=orders position="+itoa(res.Position)) {
		t.Fatalf("serve did not report stream orders at %d:\n%s", res.Position, stderr.String())
	}

	// A second server on the same directory fails at once, naming it.
	second := exec.Command(bin, "serve", "--data", dir)
	start := time.Now()
	out, err := second.CombinedOutput()
	if code := second.ProcessState.ExitCode(); code != 1 || !strings.Contains(string(out), dir) || !strings.Contains(string(out), "in use") {
		t.Fatalf("second serve: exit %d, %v, output %q; want exit 1 naming %s", code, err, out, dir)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("second serve took %v to fail", d)
	}

	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("serve after SIGTERM: %v\n%s", err, stderr.String())
	}
}

func TestServeWithNoFlagsUsesDotData(t *testing.T) {
	bin := binary(t)
	wd := t.TempDir()
	var stderr syncBuffer
	cmd := exec.Command(bin, "serve")
	cmd.Dir = wd
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	waitFor(t, &stderr, "msg=serving")
	if _, err := os.Stat(filepath.Join(wd, "data", file.LockFile)); err != nil {
		t.Fatalf("serve with no flags did not create ./data: %v", err)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
}

func TestUsageErrorsExit2(t *testing.T) {
	bin := binary(t)
	for _, args := range [][]string{{"serve", "--bogus"}, {"nonsense"}, {"serve", "extra"}} {
		cmd := exec.Command(bin, args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		cmd.Run()
		if code := cmd.ProcessState.ExitCode(); code != 2 {
			t.Errorf("%v: exit %d, want 2 (stderr %q)", args, code, stderr.String())
		}
		if lines := strings.Count(strings.TrimSpace(stderr.String()), "\n"); lines != 0 {
			t.Errorf("%v: error is %d lines, want one: %q", args, lines+1, stderr.String())
		}
	}
}
