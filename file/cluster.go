package file

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/internal/atomicfile"
)

// Cluster files in the data directory.
const (
	// LeaderFile names the current leader's endpoint.
	LeaderFile = "master.info"
	// SecretFile holds the cluster credential nodes forward writes with.
	SecretFile = "cluster.key"
)

// LeaderLock is the leader lock of a data directory: whoever holds the
// directory lock (Open) leads; a second server on the directory waits as a
// standby and takes the lock when the first exits. It implements
// cluster.Lock.
type LeaderLock struct {
	dir  string
	opts Options

	mu     sync.Mutex
	store  *Storage
	holder string // who held the directory at the last failed Acquire
}

// NewLeaderLock returns the leader lock of dir; the Storage it opens
// once it leads has opts.
func NewLeaderLock(dir string, opts Options) (*LeaderLock, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := mkdirAllSynced(abs); err != nil {
		return nil, fmt.Errorf("open data directory: %w", err)
	}
	// A directory this process could never write (read-only, no
	// permission) is an error now, not a standby that waits for ever.
	f, err := os.OpenFile(filepath.Join(abs, LockFile), os.O_RDWR|os.O_CREATE, FileMode)
	if err != nil {
		return nil, fmt.Errorf("data directory %q cannot be written: %w", abs, err)
	}
	f.Close()
	return &LeaderLock{dir: abs, opts: opts}, nil
}

// Acquire tries to take the directory lock.
func (l *LeaderLock) Acquire(ctx context.Context) (bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.store != nil {
		return true, nil
	}
	s, err := OpenWith(l.dir, l.opts)
	if errors.Is(err, messagevault.ErrLocked) {
		l.holder = fmt.Sprintf("another process, which has the data directory %q locked", l.dir)
		if b, rerr := os.ReadFile(filepath.Join(l.dir, LockFile)); rerr == nil && strings.TrimSpace(string(b)) != "" {
			l.holder = fmt.Sprintf("process %s, which has the data directory %q locked", strings.TrimSpace(string(b)), l.dir)
		}
		return false, nil
	}
	if err != nil {
		return false, err
	}
	l.store = s
	return true, nil
}

// Holder says who held the directory at the last failed Acquire: "process
// PID, which has the data directory DIR locked". It implements
// cluster.Describer.
func (l *LeaderLock) Holder() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.holder
}

// Storage returns the writable storage while the lock is held, else nil.
func (l *LeaderLock) Storage() *Storage {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.store
}

// Renew has nothing to do: the lock is held until released or until the
// process ends.
func (l *LeaderLock) Renew(ctx context.Context) error {
	if l.Storage() == nil {
		return errors.New("the directory lock is not held")
	}
	return nil
}

// Release closes the storage, which releases the directory lock.
func (l *LeaderLock) Release(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.store == nil {
		return nil
	}
	err := l.store.Close()
	l.store = nil
	return err
}

// Duration is 0: the operating system holds the lock until released.
func (l *LeaderLock) Duration() time.Duration { return 0 }

// SetLeader writes endpoint to <dir>/master.info.
func (l *LeaderLock) SetLeader(ctx context.Context, endpoint string) error {
	return atomicfile.Write(filepath.Join(l.dir, LeaderFile), []byte(endpoint+"\n"), FileMode)
}

// Leader reads <dir>/master.info.
func (l *LeaderLock) Leader(ctx context.Context) (string, error) {
	b, err := os.ReadFile(filepath.Join(l.dir, LeaderFile))
	if isNotExist(err) {
		return "", nil
	}
	return strings.TrimSpace(string(b)), err
}

// ClusterSecret returns the cluster credential in <dir>/cluster.key
// (mode 0600), creating it from fresh if there is none yet.
func ClusterSecret(dir, fresh string) (string, error) {
	path := filepath.Join(dir, SecretFile)
	if b, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(b)) != "" {
		return strings.TrimSpace(string(b)), nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		_, err = f.WriteString(fresh + "\n")
		if serr := f.Sync(); err == nil {
			err = serr
		}
		f.Close()
		if err != nil {
			return "", fmt.Errorf("cluster secret: %w", err)
		}
		syncDir(dir)
		return fresh, nil
	}
	if !os.IsExist(err) {
		return "", fmt.Errorf("cluster secret: %w", err)
	}
	// Another node created it at the same moment: read theirs.
	for i := 0; i < 50; i++ {
		if b, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(b)) != "" {
			return strings.TrimSpace(string(b)), nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return "", fmt.Errorf("cluster secret: %s is empty", path)
}

var (
	_ messagevault.Storage = (*ReadOnly)(nil)
	_ messagevault.Granter = (*ReadOnly)(nil)
)

// ReadOnly is a data directory seen without its lock, as a standby server
// or a consumer sees it: streams can be listed and read, not written.
type ReadOnly struct {
	dir  string
	open *openFiles
}

// OpenReadOnly returns the read-only view of dir; opts.MaxOpenFiles
// bounds the files its readers keep open.
func OpenReadOnly(dir string, opts Options) (*ReadOnly, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	return &ReadOnly{dir: abs, open: newOpenFiles(opts.maxOpenFiles())}, nil
}

// Dir returns the absolute path of the data directory.
func (r *ReadOnly) Dir() string { return r.dir }

// OpenWriter fails: another process owns the directory.
func (r *ReadOnly) OpenWriter(ctx context.Context, stream string) (messagevault.PageWriter, error) {
	return nil, fmt.Errorf("open writer %q: %s is read-only here: %w", stream, r.dir, messagevault.ErrLocked)
}

// OpenReader opens stream for reading.
func (r *ReadOnly) OpenReader(ctx context.Context, stream string) (messagevault.PageReader, error) {
	return openReader(r.dir, stream, r.open)
}

// Streams lists the streams of the directory.
func (r *ReadOnly) Streams(ctx context.Context) ([]string, error) { return listStreams(r.dir) }

// ReadGrant returns the file:// URL of stream's folder.
func (r *ReadOnly) ReadGrant(ctx context.Context, stream string, ttl time.Duration) (string, error) {
	return grant(r.dir, stream)
}

// Close does nothing.
func (r *ReadOnly) Close() error { return nil }
