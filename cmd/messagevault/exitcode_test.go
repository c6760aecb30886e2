package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestOperationErrorsExit1 runs commands in-process against a server that
// fails every request with messages that quote words cobra's own usage
// errors use ("accepts ", "received ", "requires at least", "unknown
// command"): the exit code comes from the error's type, so these are
// operation failures (1), and usage errors stay 2.
func TestOperationErrorsExit1(t *testing.T) {
	for _, msg := range []string{
		"the leader accepts no writes now",
		"received 0 of 10 bytes",
		"storage requires at least one page",
		"unknown command from the proxy",
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusInternalServerError)
			w.Write([]byte(`{"Error":"` + msg + `","Type":"storage"}`))
		}))
		var stdout, stderr bytes.Buffer
		t.Setenv(PasswordEnv, "pw")
		m := &Main{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr}
		code := m.Run(context.Background(), []string{"streams", "--url", srv.URL, "--user", "ann", "--retry-for", "0"})
		srv.Close()
		if code != 1 || !strings.Contains(stderr.String(), msg) {
			t.Errorf("server error %q: exit %d, want 1 (stderr %q)", msg, code, stderr.String())
		}
	}
	for _, args := range [][]string{{"nonsense"}, {"users", "nonsense"}, {"version", "extra"}, {"grants", "revoke"}, {"grants", "revoke", "a", "b"}, {"completion", "bash", "extra"}} {
		var stdout, stderr bytes.Buffer
		m := &Main{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr}
		if code := m.Run(context.Background(), args); code != 2 {
			t.Errorf("%v: exit %d, want 2 (stderr %q)", args, code, stderr.String())
		}
	}
}
