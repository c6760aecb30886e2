package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/azure"
	"github.com/messagevault/messagevault/internal/azurite"
	"github.com/messagevault/messagevault/internal/mvtest"
	"github.com/messagevault/messagevault/stream"
)

// TestEntraID runs the server on Azure without an account key: it signs in
// with Microsoft Entra ID through DefaultAzureCredential, which finds a
// managed identity in its environment (the App Service protocol, served on
// loopback), against Azurite in OAuth mode over HTTPS with a certificate
// made here. Its read grants are user delegation SAS URLs, which a
// consumer reads with and nothing else.
func TestEntraID(t *testing.T) {
	az := azurite.StartOAuth(t)
	id := azurite.StartIdentity(t)
	env := append(az.ClientEnv(), id.Env()...)
	s := mvtest.Start(t, t.TempDir(), env, "--azure="+az.AccountURL())

	publish(t, s, "orders", []messagevault.Message{msg("k1", "one"), msg("k2", "two")})
	publish(t, s, "orders", []messagevault.Message{msg("k3", "three")})

	// Every request carried a token for Azure Storage, none a key.
	tokens := id.Tokens()
	if len(tokens) == 0 {
		t.Fatal("the server asked the managed identity for no token")
	}
	for _, r := range tokens {
		if r != "https://storage.azure.com" {
			t.Fatalf("token asked for resource %q, want https://storage.azure.com", r)
		}
	}

	// The grant is a user delegation SAS: signed by this identity's key
	// (skoid, sktid), HTTPS only, read and list, no stored policy.
	status, body, _ := do(t, s.Request("GET", "/streams/orders", admin, adminPass, nil, ""))
	if status != http.StatusOK {
		t.Fatalf("grant: %d %s", status, body)
	}
	var g struct{ Signature string }
	if err := json.Unmarshal(body, &g); err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(g.Signature)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	if !strings.HasPrefix(g.Signature, az.AccountURL()+"mv-orders?") || q.Get("skoid") != azurite.Object || q.Get("sktid") != azurite.Tenant ||
		q.Get("spr") != "https" || q.Get("sp") != "rl" || q.Get("sr") != "c" || q.Has("si") {
		t.Fatalf("the grant is not a user delegation SAS for mv-orders: %s", u.Redacted())
	}
	se, err := time.Parse(time.RFC3339, q.Get("se"))
	if err != nil || time.Until(se) > 7*24*time.Hour || time.Until(se) < 6*24*time.Hour {
		t.Fatalf("grant expiry %q: want within 7 days (the default grant TTL, capped by the key's 7 days)", q.Get("se"))
	}

	// A consumer reads with the grant alone.
	ctx := context.Background()
	pr, err := azure.OpenGrant(ctx, g.Signature, nil, azure.Config{Transport: az.HTTPClient()})
	if err != nil {
		t.Fatalf("open the grant: %v", err)
	}
	var got []string
	for rec, err := range stream.NewReader("orders", pr, stream.ReaderConfig{}).Records(ctx, 0, -1) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(rec.Key)+"="+string(rec.Value))
	}
	if strings.Join(got, " ") != "k1=one k2=two k3=three" {
		t.Fatalf("read with the grant: %v", got)
	}
	// So does the CLI, which asks the server for the grant.
	cmd := exec.Command(mvtest.Binary(t), "read", "orders")
	cmd.Env = append(append(mvtest.Env(), az.ClientEnv()...), "MESSAGEVAULT_URL="+s.URL, "MESSAGEVAULT_USER=admin", "MESSAGEVAULT_PASSWORD="+adminPass)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil || !strings.Contains(out.String(), "three") {
		t.Fatalf("messagevault read: %v\n%s%s", err, out.String(), errb.String())
	}

	// A grant signed by the wrong key is refused by storage.
	forged := strings.Replace(g.Signature, "sig=", "sig=AAAA", 1)
	if _, err := azure.OpenGrant(ctx, forged, nil, azure.Config{Transport: az.HTTPClient(), MaxRetries: -1}); err == nil {
		t.Fatal("a forged user delegation SAS read the stream")
	}

	// Per-stream revocation is impossible with these grants: the answer
	// says so and what to do instead.
	status, body, _ = do(t, s.Request("DELETE", "/streams/orders/grants", admin, adminPass, nil, ""))
	if status != http.StatusNotImplemented || !strings.Contains(string(body), "revoke-delegation-keys") {
		t.Fatalf("revoke: %d %s", status, body)
	}

	// Restarted, the server finds its users and its streams again.
	s.Signal(9)
	s.Wait(10 * time.Second)
	s = mvtest.Start(t, t.TempDir(), env, "--azure="+az.AccountURL(), "--grant-ttl", "1h")
	if pos := position(t, s, "orders"); pos != recordSize("k1", "one")+recordSize("k2", "two")+recordSize("k3", "three") {
		t.Fatalf("position after restart: %d", pos)
	}
	// Grants shorter than the key are signed with one user delegation
	// key (one request to Azure for many grants), and last --grant-ttl.
	var keys []string
	for range 2 {
		status, body, _ := do(t, s.Request("GET", "/streams/orders", admin, adminPass, nil, ""))
		var g struct{ Signature string }
		mustDecode(t, body, &g)
		u, err := url.Parse(g.Signature)
		if status != http.StatusOK || err != nil {
			t.Fatalf("grant: %d %s", status, body)
		}
		q := u.Query()
		se, err := time.Parse(time.RFC3339, q.Get("se"))
		if err != nil || time.Until(se) > time.Hour || time.Until(se) < 50*time.Minute {
			t.Fatalf("grant expiry %q with --grant-ttl 1h", q.Get("se"))
		}
		keys = append(keys, q.Get("skt")+" "+q.Get("ske"))
		time.Sleep(1100 * time.Millisecond) // a new key would have other times
	}
	if keys[0] != keys[1] {
		t.Fatalf("two 1-hour grants were signed with different keys: %v", keys)
	}
}

// TestEntraIDRefused: an identity that gets no token stops the server at
// start with a message that names the credential, and nothing is written.
func TestEntraIDRefused(t *testing.T) {
	az := azurite.StartOAuth(t)
	id := azurite.StartIdentity(t)
	id.Refuse(true)
	cmd := exec.Command(mvtest.Binary(t), "serve", "--listen", "127.0.0.1:0", "--data", t.TempDir(), "--azure="+az.AccountURL())
	cmd.Env = append(append(mvtest.Env(), "MESSAGEVAULT_ADMIN_PASSWORD="+mvtest.AdminPassword), append(az.ClientEnv(), id.Env()...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("serve did not stop without a token:\n%s", out.String())
	}
	if cmd.ProcessState.ExitCode() == 0 || !strings.Contains(out.String(), "ManagedIdentityCredential") {
		t.Fatalf("serve without a token: exit %d\n%s", cmd.ProcessState.ExitCode(), out.String())
	}
	if len(id.Tokens()) != 0 {
		t.Fatal("tokens were handed out")
	}
}
