package server_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/messagevault/messagevault/auth"
	"github.com/messagevault/messagevault/mem"
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
