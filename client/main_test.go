package client_test

import (
	"os"
	"testing"

	"github.com/messagevault/messagevault/internal/mvtest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	mvtest.Cleanup()
	os.Exit(code)
}
