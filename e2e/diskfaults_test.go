package e2e_test

import (
	"context"
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/azure"
	"github.com/messagevault/messagevault/client"
	"github.com/messagevault/messagevault/internal/mvtest"
)

// tmpfs mounts a small tmpfs at a new directory (this needs root, which
// CI and the development machines have) and unmounts it at the end.
func tmpfs(t *testing.T, size string) string {
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount a tmpfs for the disk-fault test (needs root): %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	return dir
}

func remount(t *testing.T, dir, opts string) {
	if out, err := exec.Command("mount", "-o", "remount,"+opts, dir).CombinedOutput(); err != nil {
		t.Fatalf("remount %s %s: %v %s", dir, opts, err, out)
	}
}

// checkIntact reads the stream back and checks that it holds exactly the
// acknowledged values, in order, and verifies.
func checkIntact(t *testing.T, s *mvtest.Server, name string, acked []string) {
	t.Helper()
	ctx := context.Background()
	r, err := client.New(s.URL, admin, mvtest.AdminPassword, client.WithGrantReader(azure.GrantReader{})).Reader(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var got []string
	for m, err := range r.Messages(ctx, 0, -1) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, string(m.Value))
	}
	if fmt.Sprint(got) != fmt.Sprint(acked) {
		t.Fatalf("stream holds %d messages, %d were acknowledged", len(got), len(acked))
	}
	if _, err := r.Verify(ctx, nil); err != nil {
		t.Fatal(err)
	}
}

func TestDiskFullAndReadOnly(t *testing.T) {
	dir := tmpfs(t, "2m")
	s := mvtest.Start(t, dir, nil)
	var acked []string
	var refusal apiError
	for i := 0; i < 1000; i++ {
		v := fmt.Sprintf("%04d-%s", i, strings.Repeat("x", 8000))
		status, body, _ := do(t, s.Request("POST", "/streams/full", admin, adminPass, transfer(t, []messagevault.Message{msg("k", v)}), ""))
		if status == 200 {
			acked = append(acked, v)
			continue
		}
		mustDecode(t, body, &refusal)
		if status != 500 || !strings.Contains(refusal.Error, "no space left") {
			t.Fatalf("publish on a full disk: %d %s", status, body)
		}
		break
	}
	if refusal.Error == "" || len(acked) == 0 {
		t.Fatalf("the disk never filled (%d acknowledged)", len(acked))
	}
	t.Logf("disk full after %d messages: %s", len(acked), refusal.Error)
	checkIntact(t, s, "full", acked)

	// Room again: publishing resumes where it stopped.
	remount(t, dir, "size=64m")
	v := "after the disk was grown"
	publish(t, s, "full", []messagevault.Message{msg("k", v)})
	acked = append(acked, v)
	checkIntact(t, s, "full", acked)

	// Read-only: the server cannot take the directory and says why, and
	// nothing is damaged.
	s.Signal(syscall.SIGTERM)
	if code := s.Wait(30 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	remount(t, dir, "ro")
	cmd := exec.Command(mvtest.Binary(t), "serve", "--data", dir, "--listen", "127.0.0.1:0")
	cmd.Env = mvtest.Env()
	out, _ := cmd.CombinedOutput()
	if cmd.ProcessState.ExitCode() != 1 || !strings.Contains(string(out), "read-only file system") || !strings.Contains(string(out), dir) {
		t.Fatalf("serve on a read-only directory: exit %d, %s", cmd.ProcessState.ExitCode(), out)
	}
	remount(t, dir, "rw")
	s = mvtest.Start(t, dir, nil)
	checkIntact(t, s, "full", acked)
	v = "after the disk was writable again"
	publish(t, s, "full", []messagevault.Message{msg("k", v)})
	checkIntact(t, s, "full", append(acked, v))
}
