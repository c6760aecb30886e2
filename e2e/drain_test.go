package e2e_test

import (
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/internal/mvtest"
)

// TestDrainDelay: on SIGTERM with --drain-delay, /readyz fails at once
// while publishes are still served, and the process exits after the delay.
func TestDrainDelay(t *testing.T) {
	s := mvtest.Start(t, t.TempDir(), nil, "--drain-delay", "2s")
	status, body, _ := do(t, s.Request("GET", "/readyz", "", "", nil, ""))
	var r struct {
		Status   string
		Writable bool
	}
	mustDecode(t, body, &r)
	if status != 200 || !r.Writable {
		t.Fatalf("readyz before SIGTERM: %d %s", status, body)
	}
	s.Signal(syscall.SIGTERM)
	s.WaitOutput("failing readiness first", 10*time.Second)
	status, body, _ = do(t, s.Request("GET", "/readyz", "", "", nil, ""))
	if status != http.StatusServiceUnavailable {
		t.Fatalf("readyz during the drain delay: %d %s", status, body)
	}
	publish(t, s, "draining", []messagevault.Message{msg("k", "still served")})
	if code := s.Wait(30 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
}
