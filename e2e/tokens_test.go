package e2e_test

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/internal/mvtest"
)

// TestTokens: `messagevault tokens create --user U --claims ... --ttl`
// makes a bearer token that carries only the claims given (a part of the
// user's), stored hashed; it is refused once revoked, once expired, and
// loses a claim its user loses. The CLI uses $MESSAGEVAULT_TOKEN. A token
// cannot make tokens.
func TestTokens(t *testing.T) {
	dir := t.TempDir()
	users := usersWithAdmin(t, dir)
	users.Add(context.Background(), "ci", "ci-pw", "orders:write", "billing:read")
	s := mvtest.Start(t, dir, nil)
	publish(t, s, "billing", []messagevault.Message{msg("k", "v")})
	tokenRE := regexp.MustCompile(`token ([0-9a-f]+) for ci .*\n(mvt_\S+)`)
	create := func(ttl string) (id, token string) {
		out := mustCLI(t, s, "", "tokens", "create", "--user", "ci", "--claims", "orders:write", "--ttl", ttl)
		m := tokenRE.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("tokens create: %s", out)
		}
		return m[1], m[2]
	}
	id, token := create("1h")
	bearer := func(method, path string, body []byte) int {
		req := s.Request(method, path, "", "", body, "")
		req.Header.Set("Authorization", "Bearer "+token)
		status, _, _ := do(t, req)
		return status
	}
	body := transfer(t, []messagevault.Message{msg("k", "by token")})
	if got := bearer("POST", "/streams/orders", body); got != 200 {
		t.Fatalf("publish with the token: %d", got)
	}
	if got := bearer("GET", "/streams/billing/messages?from=0", nil); got != 403 {
		t.Fatalf("a read the user may do but the token may not: %d", got)
	}
	// The CLI takes the token from the environment.
	cmd := exec.Command(mvtest.Binary(t), "publish", "orders", "via the CLI")
	cmd.Env = append(mvtest.Env(), "MESSAGEVAULT_URL="+s.URL, "MESSAGEVAULT_TOKEN="+token)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("publish with $MESSAGEVAULT_TOKEN: %v %s", err, out)
	}
	// Stored hashed; listed without the secret.
	raw, _ := os.ReadFile(filepath.Join(dir, "auth.json"))
	// mvt_<id>_<secret>: the secret (base64url) may hold "_" itself.
	secret := strings.SplitN(token, "_", 3)[2]
	if strings.Contains(string(raw), secret) {
		t.Fatal("the users file holds the token itself")
	}
	if out := mustCLI(t, s, "", "tokens", "list"); !strings.Contains(out, id+"\tci\torders:write") || strings.Contains(out, secret) {
		t.Fatalf("tokens list:\n%s", out)
	}
	// A token cannot make tokens.
	req := s.Request("POST", "/tokens", "", "", []byte(`{"User": "ci", "Claims": ["orders:write"], "TTL": "1h"}`), "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	if status, b, _ := do(t, req); status != 403 {
		t.Fatalf("a token making a token: %d %s", status, b)
	}
	// A claim the user loses, the token loses.
	users.Revoke(context.Background(), "ci", "orders:write")
	deadline := time.Now().Add(10 * time.Second)
	for bearer("POST", "/streams/orders", body) != 403 {
		if time.Now().After(deadline) {
			t.Fatal("the token kept a claim its user lost")
		}
		time.Sleep(200 * time.Millisecond)
	}
	users.Grant(context.Background(), "ci", "orders:write")
	for bearer("POST", "/streams/orders", body) != 200 {
		if time.Now().After(deadline) {
			t.Fatal("the token did not get its claim back")
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Revoked: refused.
	mustCLI(t, s, "", "tokens", "revoke", id)
	if got := bearer("POST", "/streams/orders", body); got != http.StatusUnauthorized {
		t.Fatalf("a revoked token: %d", got)
	}
	// Expired: refused.
	_, token = create("1s")
	time.Sleep(1500 * time.Millisecond)
	if got := bearer("POST", "/streams/orders", body); got != http.StatusUnauthorized {
		t.Fatalf("an expired token: %d", got)
	}
	// More than the user has: refused at creation.
	if _, errs, code := cli(t, s, "", "tokens", "create", "--user", "ci", "--claims", "all:read"); code != 1 || !strings.Contains(errs, "covers") {
		t.Fatalf("a token with more than its user's claims: exit %d %s", code, errs)
	}
}
