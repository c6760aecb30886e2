package e2e_test

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/messagevault/messagevault/internal/azurite"
	"github.com/messagevault/messagevault/internal/mvtest"
)

// cli runs the messagevault binary against server s as admin, with stdin
// if given, and returns stdout, stderr and the exit code.
func cli(t *testing.T, s *mvtest.Server, stdin string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(mvtest.Binary(t), args...)
	cmd.Env = append(mvtest.Env(), "MESSAGEVAULT_URL="+s.URL, "MESSAGEVAULT_USER=admin", "MESSAGEVAULT_PASSWORD="+adminPass)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Run()
	return out.String(), errb.String(), cmd.ProcessState.ExitCode()
}

func mustCLI(t *testing.T, s *mvtest.Server, stdin string, args ...string) string {
	t.Helper()
	out, errs, code := cli(t, s, stdin, args...)
	if code != 0 {
		t.Fatalf("messagevault %v: exit %d\n%s%s", args, code, out, errs)
	}
	return out
}

// cliSuite runs every client command against s; dataDir is the server's
// directory on the local backend ("" on Azure); usersFlag selects where
// the users command edits.
func cliSuite(t *testing.T, s *mvtest.Server, usersFlag []string) {
	big := filepath.Join(t.TempDir(), "big.txt")
	os.WriteFile(big, bytes.Repeat([]byte("a large message, over one record. "), 5000), 0o644)

	out := mustCLI(t, s, "", "publish", "cli", "one", "two", "--key", "k")
	if !strings.Contains(out, "published 2 messages") {
		t.Fatalf("publish: %s", out)
	}
	mustCLI(t, s, "line a\nline b\nline c\n", "publish", "cli", "--stdin", "--key", "lines")
	mustCLI(t, s, "", "publish", "cli", "--file", big, "--lz4", "--key", "big")

	text := mustCLI(t, s, "", "read", "cli")
	lines := strings.Split(strings.TrimSpace(text), "\n")
	if len(lines) != 6 || !strings.HasSuffix(lines[0], "\tk\tone") || !strings.HasSuffix(lines[4], "\tlines\tline c") || !strings.Contains(lines[5], "a large message") {
		t.Fatalf("read text:\n%.600s", text)
	}
	js := mustCLI(t, s, "", "read", "cli", "--format", "json", "--limit", "1", "--via-server")
	if !strings.Contains(js, `"Value":"one"`) || strings.Count(js, "\n") != 1 {
		t.Fatalf("read json: %s", js)
	}
	raw := mustCLI(t, s, "", "read", "cli", "--format", "raw", "--limit", "2")
	if len(raw) != 2*(25+1+3) {
		t.Fatalf("raw read of 2 records: %d bytes", len(raw))
	}
	// --since: what was published from a time on, from storage and
	// through the server; a duration means "ago".
	mustCLI(t, s, "", "publish", "since", "before", "--key", "b")
	time.Sleep(20 * time.Millisecond) // ids carry milliseconds: "before" is older than mark
	mark := time.Now().UTC()
	time.Sleep(20 * time.Millisecond)
	mustCLI(t, s, "", "publish", "since", "later-1", "later-2", "--key", "s")
	for _, via := range [][]string{nil, {"--via-server"}} {
		got := mustCLI(t, s, "", append([]string{"read", "since", "--since", mark.Format(time.RFC3339Nano)}, via...)...)
		if lines := strings.Split(strings.TrimSpace(got), "\n"); len(lines) != 2 || !strings.HasSuffix(lines[0], "\ts\tlater-1") {
			t.Fatalf("read --since %v %v:\n%s", mark, via, got)
		}
	}
	if got := mustCLI(t, s, "", "read", "since", "--since", "1h"); strings.Count(got, "\n") != 3 {
		t.Fatalf("read --since 1h:\n%s", got)
	}
	if got := mustCLI(t, s, "", "read", "since", "--since", time.Now().Add(time.Hour).Format(time.RFC3339)); got != "" {
		t.Fatalf("read --since an hour ahead:\n%s", got)
	}
	if out, errs, code := cli(t, s, "", "read", "cli", "--since", "last tuesday"); code != 2 || !strings.Contains(errs, "RFC 3339") {
		t.Fatalf("read --since with a bad time: exit %d\n%s%s", code, out, errs)
	}
	tail := mustCLI(t, s, "", "tail", "cli", "--from", "0", "--count", "3")
	if strings.Count(tail, "\n") != 3 {
		t.Fatalf("tail --count 3:\n%s", tail)
	}
	if st := mustCLI(t, s, "", "streams"); !strings.Contains(st, "cli\t") {
		t.Fatalf("streams: %s", st)
	}

	// Users: add one with a claim for one stream; it can publish there only.
	u := func(args ...string) string {
		return mustCLI(t, s, "", append(append([]string{"users"}, args...), usersFlag...)...)
	}
	u("add", "carol", "carolstream:write", "--password", "carol-pw")
	if l := u("list"); !strings.Contains(l, "carol\tcarolstream:write") {
		t.Fatalf("users list: %s", l)
	}
	asCarol := func(stream string) int {
		cmd := exec.Command(mvtest.Binary(t), "publish", stream, "hi", "--url", s.URL, "--user", "carol", "--password", "carol-pw")
		cmd.Env = mvtest.Env()
		cmd.Run()
		return cmd.ProcessState.ExitCode()
	}
	deadline := time.Now().Add(10 * time.Second) // the server rereads its users
	for asCarol("carolstream") != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the new user cannot publish to its stream")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if code := asCarol("cli"); code != 1 {
		t.Fatalf("carol publishing to another stream: exit %d, want 1", code)
	}
	u("grant", "carol", "all:write")
	u("revoke", "carol", "carolstream:write")
	if l := u("list"); !strings.Contains(l, "carol\tall:write") || strings.Contains(l, "carolstream") {
		t.Fatalf("after grant and revoke: %s", l)
	}
	if p := u("passwd", "carol"); !strings.Contains(p, "password (shown once):") {
		t.Fatalf("passwd: %s", p)
	}
	u("remove", "carol")
	if _, errs, code := cli(t, s, "", append([]string{"users", "remove", "carol"}, usersFlag...)...); code != 1 || !strings.Contains(errs, "not found") {
		t.Fatalf("removing a missing user: exit %d %s", code, errs)
	}

	// Mirror, twice (the second run is incremental), then verify the copy.
	mirror := t.TempDir()
	mustCLI(t, s, "", "mirror", "cli", mirror)
	mustCLI(t, s, "", "publish", "cli", "more")
	if out := mustCLI(t, s, "", "mirror", "cli", mirror); !strings.Contains(out, "mirrored cli") {
		t.Fatalf("mirror: %s", out)
	}
	if v := mustCLI(t, s, "", "verify", "cli", "--dir", mirror); !strings.Contains(v, "7 records") || !strings.Contains(v, "all good") {
		t.Fatalf("verify the mirror: %s", v)
	}
	if v := mustCLI(t, s, "", "verify", "cli"); !strings.Contains(v, "7 records") {
		t.Fatalf("verify through the grant: %s", v)
	}
	// A record corrupted on purpose: verify names its position, exit 1.
	path := filepath.Join(mirror, "cli", "000000000000.b7")
	b, _ := os.ReadFile(path)
	b[29+29+10] ^= 0x20 // inside the third record's value
	os.WriteFile(path, b, 0o644)
	_, errs, code := cli(t, s, "", "verify", "cli", "--dir", mirror)
	if code != 1 || !strings.Contains(errs, "record at 58") || strings.Count(strings.TrimSpace(errs), "\n") != 0 {
		t.Fatalf("verify of a corrupted copy: exit %d, %q", code, errs)
	}

	// Errors: one line on stderr, exit 1 for failures, 2 for usage.
	cmd := exec.Command(mvtest.Binary(t), "read", "cli", "--url", s.URL, "--user", "admin", "--password", "wrong")
	cmd.Env = mvtest.Env()
	var e bytes.Buffer
	cmd.Stderr = &e
	cmd.Run()
	if cmd.ProcessState.ExitCode() != 1 || !strings.Contains(e.String(), "401") || strings.Count(strings.TrimSpace(e.String()), "\n") != 0 {
		t.Fatalf("wrong password: exit %d %q", cmd.ProcessState.ExitCode(), e.String())
	}
	for _, args := range [][]string{{"publish"}, {"read", "cli", "--format", "xml"}, {"publish", "cli"}, {"tail"}, {"mirror", "cli"}} {
		if _, errs, code := cli(t, s, "", args...); code != 2 {
			t.Errorf("%v: exit %d (%s), want 2", args, code, errs)
		}
	}
	for _, c := range []string{"serve", "publish", "read", "tail", "streams", "users", "mirror", "verify"} {
		if out, _, code := cli(t, s, "", c, "--help"); code != 0 || !strings.Contains(out, "Examples:") {
			t.Errorf("%s --help: exit %d, no examples", c, code)
		}
	}
}

func TestCLILocal(t *testing.T) {
	dir := t.TempDir()
	s := mvtest.Start(t, dir, nil)
	cliSuite(t, s, []string{"--data", dir})
}

func TestCLIAzure(t *testing.T) {
	az := azurite.Start(t)
	s := startAzure(t, az)
	cliSuite(t, s, []string{"--azure=" + az.ConnectionString()})
}

func TestBenchCommand(t *testing.T) {
	dir := t.TempDir()
	s := mvtest.Start(t, dir, nil)
	report, chart := filepath.Join(dir, "r.json"), filepath.Join(dir, "r.svg")
	// Against the running server.
	out := mustCLI(t, s, "", "bench", "--threads", "2", "--steps", "5", "--batch", "50", "--json", report, "--chart", chart)
	for _, want := range []string{"published 500 messages", "messages/s", "p99", "verified 500 messages"} {
		if !strings.Contains(out, want) {
			t.Fatalf("bench output lacks %q:\n%s", want, out)
		}
	}
	if b, err := os.ReadFile(report); err != nil || !strings.Contains(string(b), `"MessagesPerSecond"`) {
		t.Fatalf("JSON report: %v %.200s", err, b)
	}
	if b, err := os.ReadFile(chart); err != nil || !strings.Contains(string(b), "<svg") {
		t.Fatalf("chart: %v", err)
	}
	// In process, on a directory of its own.
	out = mustCLI(t, s, "", "bench", "--data", t.TempDir(), "--threads", "2", "--duration", "1s", "--batch", "10", "--min-size", "100", "--max-size", "100")
	if !strings.Contains(out, "verified") {
		t.Fatalf("in-process bench:\n%s", out)
	}
	if _, _, code := cli(t, s, "", "bench", "--steps", "1", "--duration", "1s"); code != 2 {
		t.Fatalf("--steps with --duration: exit %d, want 2", code)
	}
	if _, _, code := cli(t, s, "", "bench", "--connections", "-1"); code != 2 {
		t.Fatalf("--connections -1: exit %d, want 2", code)
	}

	// --connections: 8 producers share 2 connections, counted by a proxy
	// in front of the server.
	var conns atomic.Int64
	target, err := url.Parse(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	proxy := httptest.NewUnstartedServer(httputil.NewSingleHostReverseProxy(target))
	proxy.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	proxy.Start()
	defer proxy.Close()
	out = mustCLI(t, s, "", "bench", "--url", proxy.URL, "--threads", "8", "--streams", "8", "--steps", "10", "--batch", "10", "--connections", "2")
	if !strings.Contains(out, "verified 800 messages") {
		t.Fatalf("bench --connections 2:\n%s", out)
	}
	if n := conns.Load(); n > 2 {
		t.Fatalf("8 producers with --connections 2 opened %d connections", n)
	}
}
