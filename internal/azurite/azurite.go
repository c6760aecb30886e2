// Package azurite starts Azurite, the Azure Storage emulator, for tests:
// azurite-blob from the repository's node_modules (installed by `npm ci`,
// which `make test` runs), on a free loopback port, with a temporary data
// folder, telemetry off. It stops it when the test ends. Restart keeps the
// data folder and the port, as a storage outage would.
package azurite

import (
	"bufio"
	"fmt"
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

// The well-known development account of Azurite.
const (
	Account = "devstoreaccount1"
	Key     = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// Azurite is a running (or stopped) emulator.
type Azurite struct {
	t    testing.TB
	bin  string
	dir  string
	Port string
	// oauth is set by StartOAuth: HTTPS, bearer tokens accepted.
	oauth *oauth

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	log  strings.Builder
}

// Binary finds azurite-blob: in node_modules/.bin of the repository, or on
// PATH. It fails the test with how to install it when there is none.
func Binary(t testing.TB) string {
	t.Helper()
	_, here, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(here), "..", "..")
	local := filepath.Join(root, "node_modules", ".bin", "azurite-blob")
	if _, err := os.Stat(local); err == nil {
		return local
	}
	if p, err := exec.LookPath("azurite-blob"); err == nil {
		return p
	}
	t.Fatalf("Azurite is not installed: run `npm ci` in %s (make test does it; it needs Node.js and npm)", root)
	return ""
}

// Start starts Azurite on a free port with a fresh data folder.
func Start(t testing.TB) *Azurite {
	t.Helper()
	a := &Azurite{t: t, bin: Binary(t), dir: t.TempDir(), Port: "0"}
	a.start()
	t.Cleanup(a.Stop)
	return a
}

var listenRE = regexp.MustCompile(`listens on https?://127\.0\.0\.1:(\d+)`)

func (a *Azurite) start() {
	a.t.Helper()
	args := []string{"--blobHost", "127.0.0.1", "--blobPort", a.Port, "--location", a.dir,
		"--disableTelemetry", "--skipApiVersionCheck", "--loose"}
	if a.oauth != nil {
		args = append(args, "--oauth", "basic", "--cert", a.oauth.certFile, "--key", a.oauth.keyFile)
	}
	cmd := exec.Command(a.bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		a.t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		a.t.Fatalf("start azurite: %v", err)
	}
	done := make(chan struct{})
	port := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			a.mu.Lock()
			a.log.WriteString(line + "\n")
			a.mu.Unlock()
			if m := listenRE.FindStringSubmatch(line); m != nil {
				select {
				case port <- m[1]:
				default:
				}
			}
		}
		cmd.Wait()
		close(done)
	}()
	select {
	case p := <-port:
		a.mu.Lock()
		a.Port, a.cmd, a.done = p, cmd, done
		a.mu.Unlock()
	case <-done:
		a.t.Fatalf("azurite exited at start:\n%s", a.Log())
	case <-time.After(60 * time.Second):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		a.t.Fatalf("azurite did not start listening:\n%s", a.Log())
	}
}

// Log returns what Azurite printed.
func (a *Azurite) Log() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.log.String()
}

// ConnectionString is the connection string of the emulator's account.
func (a *Azurite) ConnectionString() string {
	return fmt.Sprintf("DefaultEndpointsProtocol=http;AccountName=%s;AccountKey=%s;BlobEndpoint=http://127.0.0.1:%s/%s;", Account, Key, a.Port, Account)
}

// Stop stops the emulator as an outage would: it stops answering, and
// what it acknowledged is kept (its data folder stays until the test
// ends). It asks Azurite to exit (SIGTERM), which saves its metadata
// database; a plain SIGKILL would lose acknowledged writes, which real
// storage never does.
func (a *Azurite) Stop() {
	a.mu.Lock()
	cmd, done := a.cmd, a.done
	a.cmd = nil
	a.mu.Unlock()
	if cmd == nil {
		return
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
	}
}

// Restart starts the emulator again on the same port and data folder.
func (a *Azurite) Restart() {
	a.t.Helper()
	a.start()
}
