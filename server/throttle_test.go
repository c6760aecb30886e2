package server_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/messagevault/messagevault/auth"
	"github.com/messagevault/messagevault/server"
)

// TestWrongPasswordsAreThrottled: after auth.FreeFailures wrong
// passwords from one address, further checks wait for a backoff, and a
// request inside it gets 429 with Retry-After and no password check. A
// user whose password was verified recently still gets in at once, and
// the failures are counted in messagevault_auth_failures_total.
func TestWrongPasswordsAreThrottled(t *testing.T) {
	users := newUsers(t)
	users.Add(context.Background(), "alice", "right", "all:read")
	users.Add(context.Background(), "bob", "right", "all:read")
	v := memVault(t)
	reg := prometheus.NewRegistry()
	h := server.New(server.Config{Vault: v, Users: users, Registry: reg})
	defer h.Close()
	get := func(user, password string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, "/streams", nil)
		req.RemoteAddr = "192.0.2.7:4000"
		req.SetBasicAuth(user, password)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	if rec := get("alice", "right"); rec.Code != http.StatusOK {
		t.Fatalf("alice: %d %s", rec.Code, rec.Body)
	}
	for i := 0; i < auth.FreeFailures; i++ {
		if rec := get("mallory", "guess"); rec.Code != http.StatusUnauthorized {
			t.Fatalf("guess %d: %d", i, rec.Code)
		}
	}
	rec := get("mallory", "guess")
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") != "1" || !strings.Contains(rec.Body.String(), "too many failed logins") {
		t.Fatalf("a guess inside the backoff: %d %q %s", rec.Code, rec.Header().Get("Retry-After"), rec.Body)
	}
	// Alice's password was verified a moment ago: no check, no wait.
	if rec := get("alice", "right"); rec.Code != http.StatusOK {
		t.Fatalf("alice, verified before, from a throttled address: %d %s", rec.Code, rec.Body)
	}
	// Bob's needs a check, and the address must wait for it.
	if rec := get("bob", "right"); rec.Code != http.StatusTooManyRequests {
		t.Fatalf("bob from a throttled address: %d", rec.Code)
	}
	time.Sleep(auth.BaseBackoff + 50*time.Millisecond)
	if rec := get("bob", "right"); rec.Code != http.StatusOK {
		t.Fatalf("bob after the backoff: %d %s", rec.Code, rec.Body)
	}
	if n := authFailures(t, reg, "wrong-password"); n != auth.FreeFailures {
		t.Fatalf("wrong-password failures counted: %v", n)
	}
	if n := authFailures(t, reg, "throttled"); n != 2 {
		t.Fatalf("throttled counted: %v", n)
	}
}

// authFailures reads messagevault_auth_failures_total{reason} from reg.
func authFailures(t *testing.T, reg *prometheus.Registry, reason string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "messagevault_auth_failures_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
