package server_test

import (
	"context"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/messagevault/messagevault/auth"
	"github.com/messagevault/messagevault/mem"
	"github.com/messagevault/messagevault/server"
	"github.com/messagevault/messagevault/vault"
)

// newUsers opens an empty users file in a temporary directory.
func newUsers(t testing.TB) *auth.Users {
	t.Helper()
	users, err := auth.Open(context.Background(), auth.NewFileSource(filepath.Join(t.TempDir(), "auth.json")), nil)
	if err != nil {
		t.Fatal(err)
	}
	return users
}

// memVault returns a vault on memory storage, closed when the test ends.
func memVault(t testing.TB) *vault.Vault {
	t.Helper()
	v := vault.New(mem.New(), vault.Config{})
	t.Cleanup(func() { v.Close() })
	return v
}

// serveOverHTTP serves v on a loopback HTTP server with one user, "ann"
// (password "pw") holding claim; everything is closed when the test or
// benchmark ends.
func serveOverHTTP(t testing.TB, v *vault.Vault, claim string) *httptest.Server {
	t.Helper()
	users := newUsers(t)
	t.Cleanup(func() { users.Close() })
	if err := users.Add(context.Background(), "ann", "pw", claim); err != nil {
		t.Fatal(err)
	}
	api := server.New(server.Config{Vault: v, Users: users})
	srv := httptest.NewServer(api)
	t.Cleanup(func() { srv.Close(); api.Close() })
	return srv
}
