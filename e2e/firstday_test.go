package e2e_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/messagevault/messagevault/internal/azurite"
	"github.com/messagevault/messagevault/internal/faultproxy"
	"github.com/messagevault/messagevault/internal/mvtest"
)

// TestLargeInputIsGroupedByBytes: publish --stdin with 600 lines of 60 KB
// (36 MB, over the default 32 MiB body limit) stores every line, on a
// server with the default limit and on one with a 1 MiB limit, which the
// CLI learns from its first 413. A message that cannot fit in one body is
// refused before anything is sent, naming the limit and its flag, and a
// 413 says the same to any client.
func TestLargeInputIsGroupedByBytes(t *testing.T) {
	line := strings.Repeat("x", 60_000)
	input := strings.Repeat(line+"\n", 600)
	for _, limit := range []string{"", "1048576"} {
		t.Run("max-body="+limit, func(t *testing.T) {
			var args []string
			if limit != "" {
				args = []string{"--max-body", limit}
			}
			s := mvtest.Start(t, t.TempDir(), nil, args...)
			out := mustCLI(t, s, input, "publish", "big", "--stdin")
			if !strings.Contains(out, "published 600 messages to big") {
				t.Fatalf("publish --stdin: %s", out)
			}
			read := mustCLI(t, s, "", "read", "big", "--via-server")
			if n := strings.Count(read, "\tx"); n != 600 {
				t.Fatalf("read back %d messages, want 600", n)
			}
		})
	}

	s := mvtest.Start(t, t.TempDir(), nil, "--max-body", "1048576")
	file := filepath.Join(t.TempDir(), "two-mb")
	if err := os.WriteFile(file, bytes.Repeat([]byte("y"), 2<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	// The CLI learns the limit from the server's 413 to its first try.
	out, errs, code := cli(t, s, "", "publish", "one", "--file", file)
	if code != 1 || !strings.Contains(errs, "at most 1048576 bytes (serve --max-body)") {
		t.Fatalf("publish of a 2 MiB file to a 1 MiB server: exit %d\n%s%s", code, out, errs)
	}
	if p := position(t, s, "one"); p != 0 {
		t.Fatalf("the refused file left position %d", p)
	}

	// Any client's 413 names the limit and the flag, in the text, a field
	// and a header.
	status, body, h := do(t, s.Request("POST", "/streams/one/messages", admin, adminPass, []byte(`[{"key":"k","value":"`+strings.Repeat("z", 2<<20)+`"}]`), "application/json"))
	var ans struct {
		Error, Type string
		MaxBody     int64
	}
	if err := json.Unmarshal(body, &ans); err != nil || status != http.StatusRequestEntityTooLarge || ans.MaxBody != 1<<20 ||
		!strings.Contains(ans.Error, "over this server's limit of 1048576 bytes (serve --max-body)") || h.Get("X-Messagevault-Max-Body") != strconv.Itoa(1<<20) {
		t.Fatalf("413: %d %s %v", status, body, h)
	}
}

// TestTailWaitsAndReconnects: tail of a stream not written yet waits for
// its first message, from storage and through the server; tail
// --via-server outlives a server restart, saying so on stderr, and prints
// what was published meanwhile.
func TestTailWaitsAndReconnects(t *testing.T) {
	dir := t.TempDir()
	listen := freePort(t)
	s := mvtest.Start(t, dir, nil, "--listen", listen)
	type tailer struct {
		cmd      *exec.Cmd
		out, err *mvtest.Buffer
	}
	start := func(args ...string) tailer {
		cmd := exec.Command(mvtest.Binary(t), append([]string{"tail", "later"}, args...)...)
		cmd.Env = append(mvtest.Env(), "MESSAGEVAULT_URL="+s.URL, "MESSAGEVAULT_USER=admin", "MESSAGEVAULT_PASSWORD="+adminPass)
		tl := tailer{cmd, &mvtest.Buffer{}, &mvtest.Buffer{}}
		cmd.Stdout, cmd.Stderr = tl.out, tl.err
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return tl
	}
	waitFor := func(b *mvtest.Buffer, what string) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); !strings.Contains(b.String(), what); time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("no %q in:\n%s", what, b.String())
			}
		}
	}
	direct, via := start(), start("--via-server")
	for _, tl := range []tailer{direct, via} {
		waitFor(tl.err, "stream later has not been written yet; waiting for its first message")
	}
	mustCLI(t, s, "", "publish", "later", "first", "--key", "k")
	for _, tl := range []tailer{direct, via} {
		waitFor(tl.out, "\tk\tfirst\n")
	}

	s.Signal(syscall.SIGTERM)
	s.Wait(30 * time.Second)
	waitFor(via.err, "retrying with backoff until it works")
	s = mvtest.Start(t, dir, nil, "--listen", listen)
	mustCLI(t, s, "", "publish", "later", "second", "--key", "k")
	waitFor(via.out, "\tk\tsecond\n")
	waitFor(via.err, "reading again")
	if via.cmd.ProcessState != nil {
		t.Fatalf("tail --via-server exited: %s", via.err.String())
	}
}

// runCLI runs the binary with the given environment added, returning
// stdout, stderr, the exit code and how long it took.
func runCLI(t *testing.T, env []string, args ...string) (string, string, int, time.Duration) {
	t.Helper()
	cmd := exec.Command(mvtest.Binary(t), args...)
	cmd.Env = append(mvtest.Env(), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	cmd.Run()
	return out.String(), errb.String(), cmd.ProcessState.ExitCode(), time.Since(start)
}

// TestCLIFailsFastAndTrustsPrivateCAs: with nothing listening at the URL,
// publish and bench fail at once and say to check the server, rather than
// retrying for a minute; a server whose certificate is not trusted fails
// at once too, and --cacert (or MESSAGEVAULT_CACERT) trusts it, or
// --insecure skips the check with a warning.
func TestCLIFailsFastAndTrustsPrivateCAs(t *testing.T) {
	nothing := "http://" + freePort(t)
	env := []string{"MESSAGEVAULT_URL=" + nothing, "MESSAGEVAULT_USER=admin", "MESSAGEVAULT_PASSWORD=x"}
	for _, args := range [][]string{{"publish", "s", "v"}, {"bench", "--duration", "2s"}, {"tail", "s"}} {
		out, errs, code, took := runCLI(t, env, args...)
		if code != 1 || !strings.Contains(errs, "(is the server running at "+nothing+"?)") || took > 10*time.Second || strings.Contains(out, "published 0") {
			t.Fatalf("%v with nothing listening: exit %d after %v\n%s%s", args, code, took, out, errs)
		}
	}

	dir := t.TempDir()
	certFile, keyFile, _ := selfSigned(t, dir)
	s := mvtest.Start(t, dir, nil, "--tls-cert", certFile, "--tls-key", keyFile)
	env = []string{"MESSAGEVAULT_URL=" + s.URL, "MESSAGEVAULT_USER=admin", "MESSAGEVAULT_PASSWORD=" + adminPass}
	out, errs, code, took := runCLI(t, env, "publish", "secure", "v")
	if code != 1 || !strings.Contains(errs, "certificate is not trusted") || took > 10*time.Second {
		t.Fatalf("publish to an untrusted certificate: exit %d after %v\n%s%s", code, took, out, errs)
	}
	for _, c := range []struct {
		env  []string
		args []string
	}{
		{nil, []string{"--cacert", certFile}},
		{[]string{"MESSAGEVAULT_CACERT=" + certFile}, nil},
		{nil, []string{"--insecure"}},
	} {
		out, errs, code, _ := runCLI(t, append(env, c.env...), append([]string{"publish", "secure", "v"}, c.args...)...)
		if code != 0 || !strings.Contains(out, "published 1 message to secure") {
			t.Fatalf("publish %v %v: exit %d\n%s%s", c.env, c.args, code, out, errs)
		}
		if insecure := len(c.args) > 0 && c.args[0] == "--insecure"; insecure != strings.Contains(errs, "WARNING: --insecure") {
			t.Fatalf("publish %v %v: stderr %q", c.env, c.args, errs)
		}
	}
	if _, errs, code, _ := runCLI(t, env, "publish", "secure", "v", "--cacert", keyFile); code != 2 || !strings.Contains(errs, "no PEM certificate") {
		t.Fatalf("--cacert of a key file: exit %d %s", code, errs)
	}
}

// TestFirstStartChecksFirst: a first start that cannot serve (the port is
// taken, the TLS key is bad) exits 1 before it creates the admin, so the
// password's only showing is not spent on it; with --log-format json the
// password comes as one JSON record among the log's.
func TestFirstStartChecksFirst(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.pem")
	if err := os.WriteFile(bad, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"--listen", taken.Addr().String()},
		{"--listen", "127.0.0.1:0", "--tls-cert", bad, "--tls-key", bad},
	} {
		data := filepath.Join(dir, "data")
		out, errs, code, _ := runCLI(t, []string{"MESSAGEVAULT_ADMIN_PASSWORD="}, append([]string{"serve", "--data", data}, args...)...)
		if code != 1 || strings.Contains(out+errs, "shown only this once") {
			t.Fatalf("serve %v: exit %d\n%s%s", args, code, out, errs)
		}
		if _, err := os.Stat(filepath.Join(data, "auth.json")); !os.IsNotExist(err) {
			t.Fatalf("serve %v left a users file (%v)", args, err)
		}
	}

	cmd := exec.Command(mvtest.Binary(t), "serve", "--data", filepath.Join(dir, "json"), "--listen", "127.0.0.1:0", "--log-format", "json")
	cmd.Env = append(mvtest.Env(), "MESSAGEVAULT_ADMIN_PASSWORD=")
	stderr := &mvtest.Buffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(stderr.String(), `"msg":"serving"`); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no serving record:\n%s", stderr.String())
		}
	}
	password := ""
	for _, line := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("a line of the JSON log is not JSON: %q", line)
		}
		if p, ok := rec["password"].(string); ok && rec["user"] == "admin" {
			password = p
		}
	}
	if len(password) < 16 {
		t.Fatalf("no admin password record in:\n%s", stderr.String())
	}
}

// TestMirrorStopsCleanly: a mirror of a stream that does not exist fails
// without leaving a folder; Ctrl-C during a mirror exits 0 like tail,
// keeping what was copied, and the next run finishes the copy.
func TestMirrorStopsCleanly(t *testing.T) {
	s := mvtest.Start(t, t.TempDir(), nil)
	target := filepath.Join(t.TempDir(), "m")
	if _, errs, code := cli(t, s, "", "mirror", "nosuch", target); code != 1 || !strings.Contains(errs, "has never been written") {
		t.Fatalf("mirror of a missing stream: exit %d %s", code, errs)
	}
	if _, err := os.Stat(target); !os.IsNotExist(err) {
		t.Fatalf("a failed mirror left %s (%v)", target, err)
	}

	// Over 8 MiB, so that the copy takes two reads through the server.
	lines := strings.Repeat(strings.Repeat("a line to mirror ", 6)+"\n", 100000)
	mustCLI(t, s, lines, "publish", "big", "--stdin")
	proxy, err := faultproxy.Start(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	proxy.Set(faultproxy.Latency, 100*time.Millisecond, 0)
	cmd := exec.Command(mvtest.Binary(t), "mirror", "big", target, "--via-server")
	cmd.Env = append(mvtest.Env(), "MESSAGEVAULT_URL="+proxy.URL, "MESSAGEVAULT_USER=admin", "MESSAGEVAULT_PASSWORD="+adminPass)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Once the first read is copied, hold the next one, and interrupt.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		b, _ := os.ReadFile(filepath.Join(target, "big", "position.c7"))
		if len(b) >= 8 && binary.LittleEndian.Uint64(b) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the mirror copied nothing in 30 s:\n%s%s", out.String(), errb.String())
		}
	}
	proxy.Set(faultproxy.Stall, 0, 0)
	time.Sleep(200 * time.Millisecond)
	cmd.Process.Signal(os.Interrupt)
	cmd.Wait()
	proxy.Set(faultproxy.Pass, 0, 0)
	var at int64
	if code := cmd.ProcessState.ExitCode(); code != 0 || !strings.Contains(out.String(), "interrupted at position") {
		t.Fatalf("mirror interrupted: exit %d\n%s%s", code, out.String(), errb.String())
	}
	fmt.Sscanf(out.String()[strings.Index(out.String(), "interrupted at position"):], "interrupted at position %d", &at)
	if at <= 0 || at >= position(t, s, "big") {
		t.Fatalf("the interrupted mirror kept %d bytes of %d, want some, not all:\n%s", at, position(t, s, "big"), out.String())
	}
	if got := mustCLI(t, s, "", "mirror", "big", target); !strings.Contains(got, fmt.Sprintf("up to position %d", position(t, s, "big"))) {
		t.Fatalf("mirror again: %s", got)
	}
	if got := mustCLI(t, s, "", "verify", "big", "--dir", target); !strings.Contains(got, "100000 records") {
		t.Fatalf("verify the mirror: %s", got)
	}
}

// TestSmallThings: what a new user and an operator notice first: the
// version (stamped from the build), refused negative --from and --limit,
// the stored name of a stream given in capitals, singular counts, users
// commands that say what they did or that their file is missing, the build
// and error metrics from the start, and log durations with units.
func TestSmallThings(t *testing.T) {
	version, _, code, _ := runCLI(t, nil, "version")
	flag, _, code2, _ := runCLI(t, nil, "--version")
	if code != 0 || code2 != 0 || version != flag || !strings.HasPrefix(version, "messagevault ") || !strings.Contains(version, "go1.") {
		t.Fatalf("version %q (exit %d), --version %q (exit %d)", version, code, flag, code2)
	}

	dir := t.TempDir()
	s := mvtest.Start(t, dir, nil, "--log-format", "json")
	for _, args := range [][]string{{"read", "x", "--from", "-5"}, {"tail", "x", "--from", "-2"}, {"read", "x", "--limit", "-1"}} {
		if _, errs, code := cli(t, s, "", args...); code != 2 || !strings.Contains(errs, "give ") {
			t.Fatalf("%v: exit %d %s", args, code, errs)
		}
	}
	if out := mustCLI(t, s, "", "publish", "Orders", "one"); !strings.HasPrefix(out, "published 1 message to orders (stream names are lower case) in 1 batch;") {
		t.Fatalf("publish Orders: %q", out)
	}
	missing := filepath.Join(dir, "missing.json")
	if _, errs, code := cli(t, s, "", "users", "list", "--users", missing); code != 1 || !strings.Contains(errs, "no users file at "+missing) {
		t.Fatalf("users list of a missing file: exit %d %s", code, errs)
	}
	users := filepath.Join(dir, "auth.json")
	mustCLI(t, s, "", "users", "add", "carol", "orders:read", "--users", users, "--password", "carol-password")
	for _, c := range []struct{ args, want string }{
		{"grant carol orders:write", "gave carol the claims orders:write\n"},
		{"revoke carol orders:write", "took the claims orders:write from carol\n"},
		{"remove carol", "removed user carol\n"},
	} {
		args, want := c.args, c.want
		if out := mustCLI(t, s, "", append(append([]string{"users"}, strings.Fields(args)...), "--users", users)...); out != want {
			t.Fatalf("users %s: %q, want %q", args, out, want)
		}
	}

	// A user added to the server's file while it runs logs in at once.
	mustCLI(t, s, "", "users", "add", "dave", "orders:write", "--users", users, "--password", "dave-password")
	if out, errs, code, _ := runCLI(t, []string{"MESSAGEVAULT_URL=" + s.URL, "MESSAGEVAULT_USER=dave", "MESSAGEVAULT_PASSWORD=dave-password"}, "publish", "orders", "two"); code != 0 {
		t.Fatalf("publish right after users add: exit %d %s%s", code, out, errs)
	}
	// No credentials: how to give them.
	if _, errs, code, _ := runCLI(t, []string{"MESSAGEVAULT_URL=" + s.URL, "MESSAGEVAULT_USER=", "MESSAGEVAULT_PASSWORD=", "MESSAGEVAULT_TOKEN="}, "streams"); code != 1 || !strings.Contains(errs, "give a user and password with --user and --password, or in MESSAGEVAULT_USER and MESSAGEVAULT_PASSWORD") {
		t.Fatalf("streams without credentials: exit %d %s", code, errs)
	}
	// A position inside a record: the nearest record starts, not "corrupt".
	if _, errs, code := cli(t, s, "", "read", "orders", "--from", "5"); code != 1 || !strings.Contains(errs, "no record starts at 5; the nearest record starts are 0 and ") || strings.Contains(errs, "corrupt") {
		t.Fatalf("read --from 5: exit %d %s", code, errs)
	}
	// A wrong method: 405 with Allow. A JSON object as a value: a string is wanted.
	if status, body, h := do(t, s.Request("PUT", "/streams/orders/messages", admin, adminPass, nil, "")); status != 405 || h.Get("Allow") != "GET, HEAD, POST, DELETE" {
		t.Fatalf("PUT /streams/orders/messages: %d %v %s", status, h.Get("Allow"), body)
	}
	if status, body, _ := do(t, s.Request("POST", "/streams/orders/messages", admin, adminPass, []byte(`[{"key":"k","value":{"a":1}}]`), "application/json")); status != 400 || !strings.Contains(string(body), "value must be a string") {
		t.Fatalf("a JSON object as a value: %d %s", status, body)
	}

	status, body, _ := do(t, s.Request("GET", "/metrics", admin, adminPass, nil, ""))
	for _, want := range []string{
		`messagevault_build_info{goversion="go1.`,
		`messagevault_http_errors_total{type="storage"} 0`,
		`messagevault_auth_failures_total{reason="wrong-password"} 0`,
		`messagevault_storage_errors_total{op="write_pages"} 0`,
	} {
		if status != 200 || !strings.Contains(string(body), want) {
			t.Fatalf("/metrics has no %q", want)
		}
	}
	var logged bool
	for _, line := range strings.Split(s.Stderr.String(), "\n") {
		var rec struct {
			Msg      string `json:"msg"`
			Duration any    `json:"duration"`
		}
		if json.Unmarshal([]byte(line), &rec) != nil || rec.Msg != "request" {
			continue
		}
		d, ok := rec.Duration.(string)
		if _, err := time.ParseDuration(d); !ok || err != nil {
			t.Fatalf("a request's duration is logged as %v, want a duration with its unit", rec.Duration)
		}
		logged = true
	}
	if !logged {
		t.Fatalf("no request logged:\n%s", s.Stderr.String())
	}
}

// TestRestoreAMirrorIntoAzure: a stream mirrored to a local directory is
// restored into another Azure account byte for byte (same offsets, a split
// value whole), again incrementally after more was published, and a
// target stream holding something else is refused without a change.
func TestRestoreAMirrorIntoAzure(t *testing.T) {
	from, to := azurite.Start(t), azurite.Start(t)
	src := startAzure(t, from)
	big := strings.Repeat("a value over one record ", 4000) // 96 kB: split
	file := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(file, []byte(big), 0o644); err != nil {
		t.Fatal(err)
	}
	mustCLI(t, src, "", "publish", "orders", "one", "two", "--key", "k")
	mustCLI(t, src, "", "publish", "orders", "--file", file, "--key", "big")
	backup := filepath.Join(t.TempDir(), "backup")
	mustCLI(t, src, "", "mirror", "orders", backup)
	restore := func() (string, string, int) {
		out, errs, code, _ := runCLI(t, nil, "restore", backup, "orders", "--azure="+to.ConnectionString())
		return out, errs, code
	}
	out, errs, code := restore()
	if code != 0 || !strings.Contains(out, fmt.Sprintf("restored orders from %s up to position %d", backup, position(t, src, "orders"))) {
		t.Fatalf("restore: exit %d\n%s%s", code, out, errs)
	}
	mustCLI(t, src, "", "publish", "orders", "three", "--key", "k")
	mustCLI(t, src, "", "mirror", "orders", backup)
	if out, errs, code := restore(); code != 0 || !strings.Contains(out, fmt.Sprintf("up to position %d", position(t, src, "orders"))) {
		t.Fatalf("restore again: exit %d\n%s%s", code, out, errs)
	}
	dst := startAzure(t, to)
	want := mustCLI(t, src, "", "read", "orders")
	if got := mustCLI(t, dst, "", "read", "orders"); got != want || !strings.Contains(got, big) {
		t.Fatalf("restored stream reads\n%.300s\nwant\n%.300s", got, want)
	}
	if out := mustCLI(t, dst, "", "verify", "orders"); !strings.Contains(out, "all good") {
		t.Fatalf("verify the restored stream: %s", out)
	}

	// The target moves on by itself: the mirror is no longer its copy.
	mustCLI(t, dst, "", "publish", "orders", "written in the new account", "--key", "k")
	before := position(t, dst, "orders")
	// While a server leads the account, a restore refuses to write.
	if out, errs, code := restore(); code != 1 || !strings.Contains(errs, "a server leads this account") {
		t.Fatalf("restore while a server leads: exit %d\n%s%s", code, out, errs)
	}
	dst.Signal(syscall.SIGTERM)
	dst.Wait(30 * time.Second)
	if out, errs, code := restore(); code != 1 || !strings.Contains(errs, "not a mirror") {
		t.Fatalf("restore over another stream: exit %d\n%s%s", code, out, errs)
	}
	if p := position(t, startAzure(t, to), "orders"); p != before {
		t.Fatalf("the refused restore moved the target from %d to %d", before, p)
	}
}
