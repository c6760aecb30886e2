package mem_test

import (
	"testing"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/mem"
	"github.com/messagevault/messagevault/storagetest"
)

func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) messagevault.Storage { return mem.New() })
}
