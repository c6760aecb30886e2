package client_test

import (
	"os"
	"testing"

	"github.com/messagevault/messagevault/internal/mvtest"
)

func TestMain(m *testing.M) {
	if url := os.Getenv(consumeChildEnv); url != "" {
		consumeChild(url)
		return
	}
	code := m.Run()
	mvtest.Cleanup()
	os.Exit(code)
}
