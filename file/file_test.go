package file_test

import (
	"testing"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/file"
	"github.com/messagevault/messagevault/storagetest"
)

func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) messagevault.Storage {
		s, err := file.Open(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

// The same, with a bound of 3 open files: every file is closed and opened
// again all the time, which must change nothing a caller sees.
func TestConformanceWithFewOpenFiles(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) messagevault.Storage {
		s, err := file.OpenWith(t.TempDir(), file.Options{MaxOpenFiles: 3})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}
