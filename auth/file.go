package auth

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// FileSource keeps the users file on the local disk, written atomically
// (temporary file, fsync, rename, fsync of the directory) with mode 0600.
type FileSource struct {
	Path string

	mu    sync.Mutex
	mtime time.Time
	size  int64
}

var _ Source = (*FileSource)(nil)

// NewFileSource returns the source for the users file at path.
func NewFileSource(path string) *FileSource { return &FileSource{Path: path} }

// Load reads the file.
func (s *FileSource) Load() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	data, err := os.ReadFile(s.Path)
	if err != nil {
		return nil, err
	}
	s.remember()
	return data, nil
}

// Save replaces the file atomically.
func (s *FileSource) Save(data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	dir := filepath.Dir(s.Path)
	tmp, err := os.CreateTemp(dir, ".users-*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), s.Path); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	s.remember()
	return nil
}

// Changed reports whether the file's modification time or size changed
// since the last Load or Save.
func (s *FileSource) Changed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := os.Stat(s.Path)
	if err != nil {
		return !s.mtime.IsZero()
	}
	return !st.ModTime().Equal(s.mtime) || st.Size() != s.size
}

func (s *FileSource) remember() {
	if st, err := os.Stat(s.Path); err == nil {
		s.mtime, s.size = st.ModTime(), st.Size()
	}
}

// String returns the file's path.
func (s *FileSource) String() string { return fmt.Sprintf("file %s", s.Path) }

func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
