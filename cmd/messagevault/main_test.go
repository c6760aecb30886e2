package main_test

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/messagevault/messagevault/auth"
	"github.com/messagevault/messagevault/file"
	"github.com/messagevault/messagevault/internal/mvtest"
)

func TestServeDefaultsAndFirstAdmin(t *testing.T) {
	// No --data: ./data in the working directory. No admin password in the
	// environment: a random one is printed once.
	wd := t.TempDir()
	bin := mvtest.Binary(t)
	run := func() (*exec.Cmd, *mvtest.Buffer) {
		var out mvtest.Buffer
		cmd := exec.Command(bin, "serve", "--listen", "127.0.0.1:0")
		cmd.Dir = wd
		cmd.Env = withoutAdminPassword(mvtest.Env())
		cmd.Stderr = &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		deadline := time.Now().Add(30 * time.Second)
		for !strings.Contains(out.String(), "msg=serving") {
			if time.Now().After(deadline) {
				t.Fatalf("serve did not start:\n%s", out.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
		return cmd, &out
	}
	cmd, out := run()
	if _, err := os.Stat(filepath.Join(wd, "data", file.LockFile)); err != nil {
		t.Fatalf("serve with no --data did not create ./data: %v", err)
	}
	m := regexp.MustCompile(`with password:\s+(\S+)`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("no admin password printed:\n%s", out.String())
	}
	url := regexp.MustCompile(`url=(http://\S+)`).FindStringSubmatch(out.String())[1]
	req, _ := http.NewRequest("GET", url+"/streams", nil)
	req.SetBasicAuth("admin", m[1])
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("the printed admin password does not work: %v %v", resp, err)
	}
	resp.Body.Close()
	auth, _ := os.ReadFile(filepath.Join(wd, "data", "auth.json"))
	if bytes.Contains(auth, []byte(m[1])) || !bytes.Contains(auth, []byte("$2a$")) {
		t.Fatalf("users file does not hold a bcrypt hash only:\n%s", auth)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("serve after SIGTERM: %v", err)
	}
	// A second start prints no password.
	cmd, out = run()
	if strings.Contains(out.String(), "with password") {
		t.Fatalf("password printed again:\n%s", out.String())
	}
}

func withoutAdminPassword(env []string) []string {
	var out []string
	for _, e := range env {
		if !strings.HasPrefix(e, "MESSAGEVAULT_ADMIN_PASSWORD=") {
			out = append(out, e)
		}
	}
	return out
}

func TestUsageErrorsExit2(t *testing.T) {
	bin := mvtest.Binary(t)
	for _, args := range [][]string{{"serve", "--bogus"}, {"nonsense"}, {"serve", "extra"}, {"serve", "--tls-cert", "x"}, {"serve", "--log-level", "loud"}} {
		cmd := exec.Command(bin, args...)
		cmd.Env = mvtest.Env()
		cmd.Dir = t.TempDir()
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

func TestVersion(t *testing.T) {
	cmd := exec.Command(mvtest.Binary(t), "version")
	cmd.Env = mvtest.Env()
	out, err := cmd.Output()
	if err != nil || !strings.HasPrefix(string(out), "messagevault ") {
		t.Fatalf("version: %q, %v", out, err)
	}
}

func TestMain(m *testing.M) {
	code := m.Run()
	mvtest.Cleanup()
	os.Exit(code)
}

// TestSecretsAreNotPrinted: neither --help (which shows flag defaults),
// nor a usage error, nor an operation's error shows a password from the
// environment, an account key, or a SAS signature.
func TestSecretsAreNotPrinted(t *testing.T) {
	bin := mvtest.Binary(t)
	run := func(env []string, args ...string) (string, int) {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(mvtest.Env(), env...)
		cmd.Dir = t.TempDir()
		out, _ := cmd.CombinedOutput()
		return string(out), cmd.ProcessState.ExitCode()
	}
	if out, _ := run([]string{"MESSAGEVAULT_PASSWORD=secret123"}, "publish", "--help"); strings.Contains(out, "secret123") {
		t.Fatalf("publish --help shows the password from the environment:\n%s", out)
	}
	conn := "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=c2VjcmV0a2V5;EndpointSuffix=core.windows.net"
	out, code := run(nil, "serve", "--azure", conn)
	if code != 2 || strings.Contains(out, "c2VjcmV0a2V5") || !strings.Contains(out, "--azure=") {
		t.Fatalf("serve --azure CONN (a space, not '='): exit %d: %s", code, out)
	}
	out, code = run([]string{"MESSAGEVAULT_USER=u", "MESSAGEVAULT_PASSWORD=p"}, "read", "orders", "--retry-for", "0", "--url", "http://127.0.0.1:1/?sv=2021&sig=c2lnbmF0dXJl")
	if code != 1 || strings.Contains(out, "c2lnbmF0dXJl") || !strings.Contains(out, "sig=REDACTED") {
		t.Fatalf("an error quoting a signed URL: exit %d: %s", code, out)
	}
}

// TestSecretsOffTheCommandLine: a user's password can come from a file or
// stdin (--password-file), so it never shows in the process list.
func TestSecretsOffTheCommandLine(t *testing.T) {
	bin := mvtest.Binary(t)
	dir := t.TempDir()
	pwFile := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pwFile, []byte("from-a-file\n"), 0o600)
	for _, tc := range []struct {
		name, stdin string
		args        []string
		password    string
	}{
		{"alice", "", []string{"--password-file", pwFile}, "from-a-file"},
		{"bob", "from-stdin\n", []string{"--password-file", "-"}, "from-stdin"},
	} {
		cmd := exec.Command(bin, append([]string{"users", "add", tc.name, "orders:read", "--data", dir}, tc.args...)...)
		cmd.Env = mvtest.Env()
		cmd.Stdin = strings.NewReader(tc.stdin)
		out, err := cmd.CombinedOutput()
		if err != nil || strings.Contains(string(out), tc.password) {
			t.Fatalf("users add %s: %v: %s", tc.name, err, out)
		}
	}
	users, err := auth.Open(context.Background(), auth.NewFileSource(filepath.Join(dir, "auth.json")), nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, pw := range map[string]string{"alice": "from-a-file", "bob": "from-stdin"} {
		if _, err := users.Authenticate(name, pw); err != nil {
			t.Fatalf("%s with the password from the file: %v", name, err)
		}
	}
}
