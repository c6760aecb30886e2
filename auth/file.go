package auth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
	"time"

	"github.com/messagevault/messagevault/internal/atomicfile"
)

// FileSource keeps the users file on the local disk, replaced atomically
// (see internal/atomicfile) with mode 0600.
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
func (s *FileSource) Load(ctx context.Context) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	f, err := os.Open(s.Path)
	if err != nil {
		if isNotExist(err) {
			s.mtime, s.size = time.Time{}, 0
		}
		return nil, err
	}
	defer f.Close()
	// What is remembered is the file read (the file replaced after the
	// open has another time and size: the next check sees it).
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, err
	}
	s.mtime, s.size = st.ModTime(), st.Size()
	return data, nil
}

// Save replaces the file atomically.
func (s *FileSource) Save(ctx context.Context, data []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := atomicfile.Write(s.Path, data, 0o600); err != nil {
		return err
	}
	s.remember()
	return nil
}

// Changed reports whether the file's modification time or size changed
// since the last Load or Save; a file that vanished has changed.
func (s *FileSource) Changed(ctx context.Context) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st, err := os.Stat(s.Path)
	if isNotExist(err) {
		return !s.mtime.IsZero(), nil
	}
	if err != nil {
		return false, err
	}
	return !st.ModTime().Equal(s.mtime) || st.Size() != s.size, nil
}

func (s *FileSource) remember() {
	if st, err := os.Stat(s.Path); err == nil {
		s.mtime, s.size = st.ModTime(), st.Size()
	}
}

// String returns the file's path.
func (s *FileSource) String() string { return fmt.Sprintf("file %s", s.Path) }

func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }
