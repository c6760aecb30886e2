package file

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/internal/atomicfile"
)

// File names of the v1 layout.
const (
	// RecordsFile is the records blob of a stream's first (and so far only)
	// segment; its 12 digits are the segment's starting position.
	RecordsFile = "000000000000.b7"
	// PositionFile holds the committed length, 8 bytes little-endian;
	// the writer's state slots follow from StateOffset (readers of the v1
	// layout read the first 8 bytes only).
	PositionFile = "position.c7"
	// IndexFile is a stream's time index (package stream keeps it):
	// hints that readers check before they use one.
	IndexFile = "time.ti"
	// LockFile is the directory lock held by the owning process.
	LockFile = ".lock"
)

// Modes of what the backend creates: the owner writes, the group reads,
// others have no access. A file:// read grant is then a boundary: a
// reader that uses one must run as the server's user or in its group.
// (Directories and files that exist keep their modes.)
const (
	DirMode  os.FileMode = 0o750
	FileMode os.FileMode = 0o640
)

var _ messagevault.Storage = (*Storage)(nil)

// Storage is a data directory owned by this process.
type Storage struct {
	dir  string
	lock *os.File
	open *openFiles

	mu      sync.Mutex
	writers map[string]bool
	closed  bool

	cursorMu sync.Mutex // serializes cursor writes: their compare-and-swap
}

// Options tune a Storage.
type Options struct {
	// MaxOpenFiles bounds the stream files kept open at once, for all
	// streams together: past it the least recently used file that no
	// call is using is closed, and opened again when next used.
	// DefaultMaxOpenFiles if 0; negative means no bound.
	MaxOpenFiles int
}

// Open creates dir if needed and takes its exclusive lock, with the
// default Options. If another process holds the lock it fails at once
// with an error wrapping messagevault.ErrLocked that names the directory
// and the owner's pid.
func Open(dir string) (*Storage, error) { return OpenWith(dir, Options{}) }

// maxOpenFiles is the bound MaxOpenFiles asks for (0: none).
func (o Options) maxOpenFiles() int {
	switch {
	case o.MaxOpenFiles == 0:
		return DefaultMaxOpenFiles
	case o.MaxOpenFiles < 0:
		return 0
	}
	return o.MaxOpenFiles
}

// OpenWith is Open with opts.
func OpenWith(dir string, opts Options) (*Storage, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("open data directory %q: %w", dir, err)
	}
	if err := mkdirAllSynced(abs); err != nil {
		return nil, fmt.Errorf("open data directory: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(abs, LockFile), os.O_RDWR|os.O_CREATE, FileMode)
	if err != nil {
		return nil, fmt.Errorf("open data directory %q: %w", abs, err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		owner := "another process"
		if b, rerr := os.ReadFile(lock.Name()); rerr == nil {
			if pid := strings.TrimSpace(string(b)); pid != "" {
				owner = "process " + pid
			}
		}
		lock.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("data directory %q is in use by %s: %w", abs, owner, messagevault.ErrLocked)
		}
		return nil, fmt.Errorf("lock data directory %q: %w", abs, err)
	}
	if err := lock.Truncate(0); err == nil {
		_, _ = lock.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	// Deletions a crash interrupted are finished in the background: a
	// folder that cannot be removed must not keep the node from leading.
	go removeBuried(abs)
	return &Storage{dir: abs, lock: lock, open: newOpenFiles(opts.maxOpenFiles()), writers: map[string]bool{}}, nil
}

// OpenFiles returns how many stream files are open now, and the most
// that were open at once.
func (s *Storage) OpenFiles() (now, peak int) { return s.open.Open() }

// Dir returns the absolute path of the data directory.
func (s *Storage) Dir() string { return s.dir }

// StreamDir returns the directory that holds stream's files. stream must be
// a normalized stream name.
func (s *Storage) StreamDir(stream string) string { return filepath.Join(s.dir, stream) }

// OpenWriter opens stream for writing, creating its files if needed.
func (s *Storage) OpenWriter(ctx context.Context, stream string) (messagevault.PageWriter, error) {
	if err := messagevault.CheckStreamName(stream); err != nil {
		return nil, fmt.Errorf("open writer: %w", err)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, fmt.Errorf("open writer %q: %w", stream, messagevault.ErrClosed)
	}
	if s.writers[stream] {
		s.mu.Unlock()
		return nil, fmt.Errorf("open writer %q: a writer is already open: %w", stream, messagevault.ErrLocked)
	}
	// The name is taken; the files are opened (and made durable, three
	// fsyncs for a new stream) without the lock, so that streams open
	// side by side rather than one after another.
	s.writers[stream] = true
	s.mu.Unlock()
	release := func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.writers, stream)
		if s.closed && len(s.writers) == 0 {
			s.lock.Close() // Close was called with writers open
		}
	}
	w, err := openWriter(ctx, s.StreamDir(stream), s.dir, s.open)
	if err != nil {
		release()
		return nil, fmt.Errorf("open writer %q: %w", stream, err)
	}
	w.release = release
	return w, nil
}

// OpenReader opens stream for reading.
func (s *Storage) OpenReader(ctx context.Context, stream string) (messagevault.PageReader, error) {
	return openReader(s.dir, stream, s.open)
}

func openReader(dir, stream string, open *openFiles) (messagevault.PageReader, error) {
	if err := messagevault.CheckStreamName(stream); err != nil {
		return nil, fmt.Errorf("open reader: %w", err)
	}
	r, err := openStreamReader(filepath.Join(dir, stream), open)
	if err != nil {
		return nil, fmt.Errorf("open reader %q: %w", stream, err)
	}
	return r, nil
}

// Streams lists the streams of the directory: the sub-directories with a
// valid stream name that hold a position file.
func (s *Storage) Streams(ctx context.Context) ([]string, error) { return listStreams(s.dir) }

func listStreams(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list streams: %w", err)
	}
	var names []string
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		if n, err := messagevault.NormalizeStreamName(e.Name()); err != nil || n != e.Name() {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, e.Name(), PositionFile)); err != nil {
			continue
		}
		names = append(names, e.Name())
	}
	slices.Sort(names)
	return names, nil
}

// Close releases the directory lock. Writers should be closed first: if
// some are still open, Close refuses new writers, reports an error, and
// keeps the lock until the last of them closes, so that no other process
// can write the directory meanwhile.
func (s *Storage) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if n := len(s.writers); n > 0 {
		return fmt.Errorf("close data directory %q: %d writers still open; the lock is kept until they close", s.dir, n)
	}
	return s.lock.Close()
}

// mkdirAllSynced creates dir and its missing parents, fsyncing each new
// directory's parent so that the new entries survive a crash.
func mkdirAllSynced(dir string) error {
	if st, err := os.Stat(dir); err == nil {
		if !st.IsDir() {
			return fmt.Errorf("%s is not a directory", dir)
		}
		return nil
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := mkdirAllSynced(parent); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, DirMode); err != nil && !os.IsExist(err) {
		return err
	}
	return syncDir(parent)
}

// syncDir fsyncs a directory so that entries created in it survive a crash.
func syncDir(dir string) error { return atomicfile.SyncDir(dir) }

func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }

var _ messagevault.Granter = (*Storage)(nil)

// ReadGrant returns the file:// URL of stream's folder. A local grant does
// not expire: whoever can read the directory can read the stream, so ttl is
// ignored.
func (s *Storage) ReadGrant(ctx context.Context, stream string, ttl time.Duration) (string, error) {
	return grant(s.dir, stream)
}

func grant(dir, stream string) (string, error) {
	if err := messagevault.CheckStreamName(stream); err != nil {
		return "", fmt.Errorf("read grant: %w", err)
	}
	u := url.URL{Scheme: "file", Path: filepath.ToSlash(filepath.Join(dir, stream))}
	return u.String(), nil
}
