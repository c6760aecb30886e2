package e2e_test

import (
	"strings"
	"testing"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/internal/azurite"
)

// TestMixedTLSCluster: a TLS leader with a self-signed certificate, and
// plain followers. A follower told the CA (--cluster-ca) forwards to it; one
// that is not says why it cannot, naming the flag.
func TestMixedTLSCluster(t *testing.T) {
	az := azurite.Start(t)
	cert, key, _ := selfSigned(t, t.TempDir())
	leader := startAzure(t, az, "--tls-cert", cert, "--tls-key", key)
	trusting := startAzure(t, az, "--cluster-ca", cert)
	plain := startAzure(t, az)
	if !strings.HasPrefix(leader.URL, "https://") {
		t.Fatalf("the TLS node serves at %s", leader.URL)
	}
	deadline := time.Now().Add(40 * time.Second)
	for {
		_, l1 := readyz(trusting)
		_, l2 := readyz(plain)
		if l1 == leader.URL && l2 == leader.URL {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the followers know the leader as %q and %q, want %s", l1, l2, leader.URL)
		}
		time.Sleep(50 * time.Millisecond)
	}
	publish(t, trusting, "mixed", []messagevault.Message{msg("k", "through a follower that trusts the CA")})
	status, body, _ := do(t, plain.Request("POST", "/streams/mixed", admin, adminPass, transfer(t, []messagevault.Message{msg("k", "x")}), ""))
	if status != 503 || !strings.Contains(string(body), "--cluster-ca") {
		t.Fatalf("a follower that does not trust the leader's certificate: %d %s", status, body)
	}
	if got := values(readGrant(t, trusting, "mixed")); len(got) != 1 {
		t.Fatalf("stream holds %v", got)
	}
}
