package file_test

import (
	"context"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/messagevault/messagevault/file"
)

// What the backend creates is not readable by other users: a file:// read
// grant is an access boundary (readers need the server's user or group).
func TestCreatedFilesAreNotWorldReadable(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	dir := filepath.Join(t.TempDir(), "data")
	s, err := file.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	w, err := s.OpenWriter(context.Background(), "modes")
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	for path, want := range map[string]os.FileMode{
		dir:                         0o750,
		filepath.Join(dir, "modes"): 0o750,
		filepath.Join(dir, "modes", file.RecordsFile):  0o640,
		filepath.Join(dir, "modes", file.PositionFile): 0o640,
		filepath.Join(dir, file.LockFile):              0o640,
	} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s: mode %o, want %o", path, got, want)
		}
	}
}
