package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/azure"
	"github.com/messagevault/messagevault/formats"
	"github.com/messagevault/messagevault/internal/azurite"
	"github.com/messagevault/messagevault/internal/mvtest"
	"github.com/messagevault/messagevault/stream"
)

// startAzure runs serve on the Azurite account.
func startAzure(t *testing.T, az *azurite.Azurite, args ...string) *mvtest.Server {
	t.Helper()
	return mvtest.Start(t, t.TempDir(), nil, append([]string{"--azure=" + az.ConnectionString()}, args...)...)
}

// readGrant reads a stream with only the read grant the server hands out.
func readGrant(t *testing.T, s *mvtest.Server, name string) []formats.Record {
	t.Helper()
	status, body, _ := do(t, s.Request("GET", "/streams/"+name, admin, adminPass, nil, ""))
	if status != http.StatusOK {
		t.Fatalf("grant: %d %s", status, body)
	}
	var g struct{ Signature string }
	mustDecode(t, body, &g)
	if !strings.HasPrefix(g.Signature, "http://127.0.0.1:") || !strings.Contains(g.Signature, "/mv-"+name+"?") || !strings.Contains(g.Signature, "sig=") {
		t.Fatalf("grant %q is not a container SAS URL", g.Signature)
	}
	ctx := context.Background()
	pr, err := azure.OpenGrant(ctx, g.Signature, nil, azure.Config{})
	if err != nil {
		t.Fatal(err)
	}
	var out []formats.Record
	for rec, err := range stream.NewReader(name, pr, stream.ReaderConfig{}).Records(ctx, 0, -1) {
		if err != nil {
			t.Fatal(err)
		}
		rec.Key, rec.Value = append([]byte(nil), rec.Key...), append([]byte(nil), rec.Value...)
		out = append(out, rec)
	}
	return out
}

func TestAzureRoundTripAndRestart(t *testing.T) {
	az := azurite.Start(t)
	s := startAzure(t, az)
	a := publish(t, s, "orders", []messagevault.Message{msg("k1", "one"), msg("k2", strings.Repeat("z", 70000/2))})
	status, body, _ := do(t, s.Request("POST", "/streams/orders/messages", admin, adminPass, []byte(`[{"key":"k3","value":"three"}]`), "application/json"))
	if status != 200 {
		t.Fatalf("JSON publish: %d %s", status, body)
	}
	if a.Offsets[1] != recordSize("k1", "one") {
		t.Fatalf("offsets %v", a.Offsets)
	}
	want := "[k1=one k2=" + strings.Repeat("z", 35000) + " k3=three]"
	if got := fmt.Sprint(values(readGrant(t, s, "orders"))); got != want {
		t.Fatalf("read with the grant: %.80s", got)
	}
	// Users live in mv-sys: the admin created at first start is there.
	if !strings.Contains(s.Stderr.String(), "mv-sys/auth.json") {
		t.Fatalf("users not in mv-sys:\n%s", s.Stderr.String())
	}
	// Restart: a new server on the same account continues each stream at
	// its committed position, with the same users.
	pos := position(t, s, "orders")
	s.Signal(syscall.SIGTERM)
	if code := s.Wait(30 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	s2 := startAzure(t, az)
	if got := position(t, s2, "orders"); got != pos {
		t.Fatalf("restarted server sees position %d, want %d", got, pos)
	}
	b := publish(t, s2, "orders", []messagevault.Message{msg("k4", "four")})
	if b.Offsets[0] != pos {
		t.Fatalf("after restart the stream continues at %d, want %d", b.Offsets[0], pos)
	}
	if got := values(readGrant(t, s2, "orders")); len(got) != 4 || got[3] != "k4=four" {
		t.Fatalf("after restart: %d messages", len(got))
	}
	// Reads through the server work on Azure too.
	status, body, _ = do(t, s2.Request("GET", "/streams/orders/messages?from=0&limit=1", admin, adminPass, nil, ""))
	if status != 200 || !strings.Contains(string(body), `"Value":"one"`) {
		t.Fatalf("server read: %d %.200s", status, body)
	}
}

// TestAzureOutage stops Azurite in the middle of a publishing load: the
// publishes in the gap fail with 5xx (never 200), the server recovers by
// itself when storage returns, and every acknowledged message reads back
// intact and in order.
func TestAzureOutage(t *testing.T) {
	az := azurite.Start(t)
	s := startAzure(t, az)
	const producers = 3
	var mu sync.Mutex
	acked := map[string]bool{}
	failures := map[int]int{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 60 * time.Second}
	for p := 0; p < producers; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				var msgs []messagevault.Message
				for j := 0; j < 20; j++ {
					msgs = append(msgs, msg(fmt.Sprintf("p%d", p), fmt.Sprintf("p%d-b%d-m%d", p, i, j)))
				}
				resp, err := client.Do(s.Request("POST", "/streams/load", admin, adminPass, transfer(t, msgs), ""))
				if err != nil {
					t.Errorf("publish: %v", err)
					return
				}
				resp.Body.Close()
				mu.Lock()
				if resp.StatusCode == 200 {
					for _, m := range msgs {
						acked[string(m.Value)] = true
					}
				} else {
					failures[resp.StatusCode]++
				}
				mu.Unlock()
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(acked) }
	waitFor := func(what string, cond func() bool) {
		deadline := time.Now().Add(90 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				close(stop)
				wg.Wait()
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitFor("a first load", func() bool { return count() > 300 })
	az.Stop()
	before := count()
	failed := func() int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, c := range failures {
			n += c
		}
		return n
	}
	waitFor("publishes to fail during the outage", func() bool { return failed() >= producers })
	az.Restart()
	waitFor("the server to recover", func() bool { return count() > before+300 })
	close(stop)
	wg.Wait()
	mu.Lock()
	for code := range failures {
		if code < 500 {
			t.Errorf("a publish during the outage got %d; want 5xx", code)
		}
	}
	t.Logf("acknowledged %d messages; failures during the outage: %v", len(acked), failures)
	mu.Unlock()

	recs := readGrant(t, s, "load")
	seen := map[string]bool{}
	last := map[string][2]int{}
	for _, r := range recs {
		v := string(r.Value)
		if seen[v] {
			// A publish whose answer was lost may be stored once more by
			// no one: each batch is sent once, so a value appears once.
			t.Fatalf("message %s stored twice", v)
		}
		seen[v] = true
		var p, b, m int
		fmt.Sscanf(v, "p%d-b%d-m%d", &p, &b, &m)
		k := string(r.Key)
		if prev, ok := last[k]; ok && (b < prev[0] || (b == prev[0] && m != prev[1]+1)) {
			t.Fatalf("producer %s: %s stored after b%d-m%d", k, v, prev[0], prev[1])
		}
		last[k] = [2]int{b, m}
	}
	for v := range acked {
		if !seen[v] {
			t.Fatalf("acknowledged message %s is lost", v)
		}
	}
}

func TestAzureStreamAccounts(t *testing.T) {
	main, other := azurite.Start(t), azurite.Start(t)
	// The other account's connection string comes from the environment,
	// not the command line (where the process list would show its key).
	s := mvtest.Start(t, t.TempDir(), []string{"OTHER_ACCOUNT=" + other.ConnectionString()},
		"--azure="+main.ConnectionString(), "--stream-account", "big=env:OTHER_ACCOUNT")
	publish(t, s, "big", []messagevault.Message{msg("k", "in the other account")})
	publish(t, s, "small", []messagevault.Message{msg("k", "in the main account")})
	ctx := context.Background()
	for _, tt := range []struct {
		az   *azurite.Azurite
		want string
	}{{main, "[small]"}, {other, "[big]"}} {
		st, err := azure.Open(tt.az.ConnectionString(), azure.Config{})
		if err != nil {
			t.Fatal(err)
		}
		names, err := st.Streams(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(names) != tt.want {
			t.Fatalf("account holds %v, want %s", names, tt.want)
		}
	}
	_, body, _ := do(t, s.Request("GET", "/streams", admin, adminPass, nil, ""))
	if !strings.Contains(string(body), `"big"`) || !strings.Contains(string(body), `"small"`) {
		t.Fatalf("listing: %s", body)
	}
	if got := values(readGrant(t, s, "big")); fmt.Sprint(got) != "[k=in the other account]" {
		t.Fatalf("big: %v", got)
	}
}

// TestAzureGrantsAreRevocable: `messagevault grants revoke` makes every
// read grant of a stream handed out so far fail at once, on Azurite; a new
// grant works. On the local backend, whose grants are paths, it is a 501.
func TestAzureGrantsAreRevocable(t *testing.T) {
	az := azurite.Start(t)
	s := startAzure(t, az)
	publish(t, s, "revocable", []messagevault.Message{msg("k", "v")})
	grant := func() string {
		status, body, _ := do(t, s.Request("GET", "/streams/revocable", admin, adminPass, nil, ""))
		var g struct{ Signature string }
		if json.Unmarshal(body, &g); status != 200 || g.Signature == "" {
			t.Fatalf("grant: %d %s", status, body)
		}
		return g.Signature
	}
	ctx := context.Background()
	position := func(g string) error {
		pr, err := azure.OpenGrant(ctx, g, nil, azure.Config{MaxRetries: 1})
		if err != nil {
			return err
		}
		defer pr.Close()
		_, err = pr.Position(ctx)
		return err
	}
	old := grant()
	if err := position(old); err != nil {
		t.Fatalf("read with a fresh grant: %v", err)
	}
	if out := mustCLI(t, s, "", "grants", "revoke", "revocable"); !strings.Contains(out, "revoked") {
		t.Fatalf("grants revoke: %s", out)
	}
	start := time.Now()
	err := position(old)
	if err == nil || !bloberror.HasCode(err, bloberror.AuthorizationFailure, bloberror.AuthenticationFailed) || time.Since(start) > 5*time.Second {
		t.Fatalf("read with a revoked grant: %v after %v; want a refusal at once", err, time.Since(start))
	}
	if err := position(grant()); err != nil {
		t.Fatalf("read with a grant made after the revocation: %v", err)
	}

	local := mvtest.Start(t, t.TempDir(), nil)
	publish(t, local, "revocable", []messagevault.Message{msg("k", "v")})
	if out, errs, code := cli(t, local, "", "grants", "revoke", "revocable"); code != 1 || !strings.Contains(errs, "cannot be revoked") {
		t.Fatalf("grants revoke on the local backend: exit %d %s %s", code, out, errs)
	}
}

// TestUsersThroughTheServer: an operator with only the server's URL and an
// administrator's login (no storage key) manages users with `users
// --url`; the changes take effect at once. A user without all:write may
// not.
func TestUsersThroughTheServer(t *testing.T) {
	az := azurite.Start(t)
	s := startAzure(t, az)
	publish(t, s, "orders", []messagevault.Message{msg("k", "v")})
	users := func(stdin string, args ...string) (string, string, int) {
		return cli(t, s, stdin, append([]string{"users", "--url", s.URL}, args...)...)
	}
	if out, errs, code := users("carol-pw\n", "add", "carol", "orders:read", "--password-file", "-"); code != 0 || strings.Contains(out, "carol-pw") {
		t.Fatalf("users add --url: exit %d %s %s", code, out, errs)
	}
	if status, _, _ := do(t, s.Request("GET", "/streams/orders/messages?from=0", "carol", "carol-pw", nil, "")); status != 200 {
		t.Fatalf("carol reads orders: %d", status)
	}
	if out, _, code := users("", "grant", "carol", "billing:read"); code != 0 {
		t.Fatalf("users grant --url: exit %d %s", code, out)
	}
	if out, _, _ := users("", "list"); !strings.Contains(out, "carol\torders:read billing:read") {
		t.Fatalf("users list --url:\n%s", out)
	}
	if out, errs, code := users("carol-new\n", "passwd", "carol", "--password-file", "-"); code != 0 {
		t.Fatalf("users passwd --url: exit %d %s %s", code, out, errs)
	}
	if status, _, _ := do(t, s.Request("GET", "/streams/orders/messages?from=0", "carol", "carol-new", nil, "")); status != 200 {
		t.Fatalf("carol with her new password: %d", status)
	}
	// Carol is no administrator.
	cmd := exec.Command(mvtest.Binary(t), "users", "--url", s.URL, "--user", "carol", "add", "mallory", "all:write", "--password", "x")
	cmd.Env = append(mvtest.Env(), "MESSAGEVAULT_PASSWORD=carol-new")
	if out, _ := cmd.CombinedOutput(); cmd.ProcessState.ExitCode() != 1 || !strings.Contains(string(out), "all:write") {
		t.Fatalf("a non-administrator adds a user: exit %d %s", cmd.ProcessState.ExitCode(), out)
	}
	if _, errs, code := users("", "add", "carol", "orders:read", "--password", "again"); code != 1 || !strings.Contains(errs, "exists") {
		t.Fatalf("adding carol twice: exit %d %s", code, errs)
	}
	if out, _, code := users("", "remove", "carol"); code != 0 {
		t.Fatalf("users remove --url: exit %d %s", code, out)
	}
	if status, _, _ := do(t, s.Request("GET", "/streams/orders/messages?from=0", "carol", "carol-new", nil, "")); status != 401 {
		t.Fatalf("carol after her removal: %d", status)
	}
}
