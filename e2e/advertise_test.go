package e2e_test

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/messagevault/messagevault/internal/azurite"
	"github.com/messagevault/messagevault/internal/mvtest"
)

// TestSameAdvertiseURLIsRefused: a second node that advertises the URL a
// live leader already serves at refuses to start (both would otherwise
// lead), while a node restarted on its own URL takes its lease back at once
// (the crash loop on Azure shows that).
func TestSameAdvertiseURLIsRefused(t *testing.T) {
	az := azurite.Start(t)
	a := startAzure(t, az)
	waitLeader(t, []*mvtest.Server{a}, 40*time.Second)

	cmd := exec.Command(mvtest.Binary(t), "serve", "--listen", "127.0.0.1:0", "--data", t.TempDir(),
		"--azure="+az.ConnectionString(), "--advertise", a.URL)
	cmd.Env = append(mvtest.Env(), "MESSAGEVAULT_ADMIN_PASSWORD="+adminPass)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("a second node with the leader's advertised URL kept running:\n%s", out.String())
	}
	if code := cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(out.String(), "give every node its own --advertise") {
		t.Fatalf("exit %d:\n%s", code, out.String())
	}
	if role, _ := readyz(a); role != "leader" {
		t.Fatalf("the first node is %s now", role)
	}
}
