// Package mvtest starts real messagevault processes for end-to-end tests:
// it builds the binary once per test process (with the race detector),
// starts "serve" on a free loopback port, and gives the test its URL, its
// output and its signals.
package mvtest

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binPath   string
	binDir    string
	buildErr  error
)

// Cleanup removes the binary Binary built. Call it from TestMain after the
// tests ran.
func Cleanup() {
	if binDir != "" {
		os.RemoveAll(binDir)
	}
}

// Binary returns the path of a messagevault binary built from this
// checkout, building it on first use.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		_, here, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(here), "..", "..")
		dir, err := os.MkdirTemp("", "mvtest-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binDir, binPath = dir, filepath.Join(dir, "messagevault")
		cmd := exec.Command("go", "build", "-race", "-buildvcs=auto", "-o", binPath, "./cmd/messagevault")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// Env returns the environment to run the binary with: this process's, and
// no one-second pause at exit (the race detector's default).
func Env() []string {
	return append(os.Environ(), "GORACE=atexit_sleep_ms=0")
}

// Buffer is a bytes.Buffer safe for a process writing and a test reading.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Server is a running "messagevault serve" process.
type Server struct {
	t       testing.TB
	Cmd     *exec.Cmd
	URL     string // e.g. http://127.0.0.1:41234
	DataDir string
	Stderr  *Buffer
	done    chan struct{}
	waitErr error
}

// AdminPassword is the admin password Start sets through the environment.
const AdminPassword = "test-admin-password"

// signatureRE finds a SAS signature that was not blanked.
var signatureRE = regexp.MustCompile(`sig=([^&\s"';)]+)`)

// leakedSecret returns the first secret found in a server's output, or "".
func leakedSecret(out string) string {
	if i := strings.Index(out, AdminPassword); i >= 0 {
		return fmt.Sprintf("the admin password, at byte %d", i)
	}
	for _, m := range signatureRE.FindAllStringSubmatch(out, -1) {
		if m[1] != "REDACTED" {
			return fmt.Sprintf("a SAS signature (%.12s...)", m[0])
		}
	}
	return ""
}

// servingRE finds the listening URL in the server's log, text or JSON.
var servingRE = regexp.MustCompile(`msg"?[=:]"?serving"?[ ,]"?url"?[=:]"?(https?://[0-9.:]+)`)

// Start runs "messagevault serve --listen 127.0.0.1:0 --data dir" plus
// args, with MESSAGEVAULT_ADMIN_PASSWORD=AdminPassword unless env sets it,
// waits until it listens, and stops it (SIGKILL) when the test ends.
func Start(t testing.TB, dir string, env []string, args ...string) *Server {
	t.Helper()
	bin := Binary(t)
	all := append([]string{"serve", "--listen", "127.0.0.1:0", "--data", dir}, args...)
	cmd := exec.Command(bin, all...)
	cmd.Env = append(Env(), "MESSAGEVAULT_ADMIN_PASSWORD="+AdminPassword)
	cmd.Env = append(cmd.Env, env...)
	s := &Server{t: t, Cmd: cmd, DataDir: dir, Stderr: &Buffer{}, done: make(chan struct{})}
	cmd.Stderr = s.Stderr
	cmd.Stdout = s.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		s.waitErr = cmd.Wait()
		close(s.done)
	}()
	t.Cleanup(func() {
		s.Signal(syscall.SIGKILL)
		<-s.done
		// Every test's server output is searched for secrets: the admin
		// password from the environment, and SAS signatures.
		if leak := leakedSecret(s.Stderr.String()); leak != "" {
			t.Errorf("the server's output shows a secret: %s", leak)
		}
		if t.Failed() {
			t.Logf("server output:\n%s", s.Stderr.String())
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if m := servingRE.FindStringSubmatch(s.Stderr.String()); m != nil {
			s.URL = m[1]
			return s
		}
		select {
		case <-s.done:
			t.Fatalf("server exited before listening: %v\n%s", s.waitErr, s.Stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("server did not start listening:\n%s", s.Stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Signal sends sig to the server process.
func (s *Server) Signal(sig syscall.Signal) {
	if s.Cmd.Process != nil {
		s.Cmd.Process.Signal(sig)
	}
}

// Wait waits up to timeout for the process to exit and returns its exit
// code (-1 if killed by a signal).
func (s *Server) Wait(timeout time.Duration) int {
	s.t.Helper()
	select {
	case <-s.done:
	case <-time.After(timeout):
		s.t.Fatalf("server still running after %v:\n%s", timeout, s.Stderr.String())
	}
	return s.Cmd.ProcessState.ExitCode()
}

// Exited reports whether the process has exited.
func (s *Server) Exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// WaitOutput waits until the server's output contains substr.
func (s *Server) WaitOutput(substr string, timeout time.Duration) {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for !strings.Contains(s.Stderr.String(), substr) {
		if time.Now().After(deadline) {
			s.t.Fatalf("no %q in server output after %v:\n%s", substr, timeout, s.Stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Request builds a request to the server with Basic auth as user and
// password (none if user is empty).
func (s *Server) Request(method, path, user, password string, body []byte, contentType string) *http.Request {
	s.t.Helper()
	req, err := http.NewRequest(method, s.URL+path, bytes.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, password)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return req
}
