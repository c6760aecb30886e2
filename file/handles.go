package file

import (
	"container/list"
	"context"
	"fmt"
	"os"
	"sync"

	"github.com/messagevault/messagevault"
)

// DefaultMaxOpenFiles is how many stream files a Storage keeps open by
// default (serve --max-open-files): with the server's default of 4,096
// connections it leaves the process well inside a limit of 8,192 open
// files, however many streams are written or read at once.
const DefaultMaxOpenFiles = 2048

// openFiles bounds the files of a Storage that are open at once. Every
// stream file the storage reads or writes is a handle: its file is opened
// on first use, closed when more than max are open and it is the least
// recently used one that no call is using and that holds no unsynced
// write, and opened again on its next use. A file with unsynced writes
// stays open until it is synced, so that a write error the kernel reports
// at fdatasync is never lost with a closed descriptor. So that such files
// cannot crowd the bound out, a writer takes one of max/4 write slots
// before its first unsynced write and gives it back once all it wrote is
// synced, or a call failed: about max/2 files (a writer's segment and
// position, and a segment it just rolled from) wait for a sync at once,
// and a writer waits for a slot, never while holding one.
type openFiles struct {
	mu   sync.Mutex
	max  int // 0: no bound
	open int // files open now
	idle list.List
	peak int // the most files open at once

	slots chan struct{} // write slots; nil without a bound
}

// newOpenFiles returns a bound of limit open files (0: no bound).
func newOpenFiles(limit int) *openFiles {
	o := &openFiles{max: limit}
	if limit > 0 {
		o.slots = make(chan struct{}, max(limit/4, 1))
	}
	return o
}

// beginWrite takes a write slot, waiting no longer than ctx allows.
func (o *openFiles) beginWrite(ctx context.Context) error {
	if o.slots == nil {
		return nil
	}
	select {
	case o.slots <- struct{}{}:
		return nil
	default:
	}
	select {
	case o.slots <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for one of the %d write slots of the open-file bound (serve --max-open-files %d): %w", cap(o.slots), o.max, ctx.Err())
	}
}

// endWrite gives back a slot that beginWrite took.
func (o *openFiles) endWrite() {
	if o.slots != nil {
		<-o.slots
	}
}

// unbounded serves readers opened without a Storage (OpenStreamReader):
// a consumer's process opens what it reads.
var unbounded = newOpenFiles(0)

// handle is one file of a stream, opened and closed by its openFiles.
type handle struct {
	files *openFiles
	path  string
	flag  int         // how it is opened again: os.O_RDONLY or os.O_RDWR
	id    os.FileInfo // the file first opened: one opened again must be it

	// Under files.mu:
	f       *os.File
	opening chan struct{} // closed when an opening in progress ends
	users   int           // calls using f now
	dirty   bool          // written since its last sync
	elem    *list.Element // in files.idle while open, unused and clean
	closed  bool
}

// openHandle opens path now (so that a missing file is reported here),
// with flag and perm as os.OpenFile takes them; later openings use flag
// without O_CREATE, O_EXCL and O_TRUNC.
func (o *openFiles) openHandle(path string, flag int, perm os.FileMode) (*handle, error) {
	// Room is made before the file is opened (which may create it, so it
	// is done without the lock).
	o.mu.Lock()
	o.reserve()
	o.mu.Unlock()
	f, err := os.OpenFile(path, flag, perm)
	o.mu.Lock()
	defer o.mu.Unlock()
	if err != nil {
		o.open--
		return nil, err
	}
	id, err := f.Stat()
	if err != nil {
		f.Close()
		o.open--
		return nil, err
	}
	h := &handle{files: o, path: path, flag: flag &^ (os.O_CREATE | os.O_EXCL | os.O_TRUNC), id: id, f: f}
	h.elem = o.idle.PushBack(h)
	return h, nil
}

// reserve counts a file about to be opened, closing an idle one first if
// that would pass the bound. Called with mu held.
func (o *openFiles) reserve() {
	o.open++
	o.evict()
	o.peak = max(o.peak, o.open)
}

// evict closes idle files, least recently used first, until at most max
// are open or none is idle. Called with mu held.
func (o *openFiles) evict() {
	for o.max > 0 && o.open > o.max {
		e := o.idle.Front()
		if e == nil {
			return
		}
		h := e.Value.(*handle)
		o.idle.Remove(e)
		h.elem = nil
		h.f.Close() // read or synced: nothing to report
		h.f = nil
		o.open--
	}
}

// Open returns how many files are open now and the most that were at once.
func (o *openFiles) Open() (now, peak int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.open, o.peak
}

// syncDir fsyncs dir (syncDir) with its descriptor counted among the
// open files, closing an idle file to make room for it if need be.
func (o *openFiles) syncDir(dir string) error {
	o.mu.Lock()
	o.reserve()
	o.mu.Unlock()
	defer func() {
		o.mu.Lock()
		o.open--
		o.mu.Unlock()
	}()
	return syncDir(dir)
}

// isDirty reports whether h holds writes not yet synced.
func (h *handle) isDirty() bool {
	h.files.mu.Lock()
	defer h.files.mu.Unlock()
	return h.dirty
}

// Name returns the file's path.
func (h *handle) Name() string { return h.path }

// acquire returns the open file, opening it again if it was closed, and
// keeps it open until release. The opening runs without the lock, so that
// a disk that does not answer holds up the callers of this file only.
func (h *handle) acquire() (*os.File, error) {
	o := h.files
	o.mu.Lock()
	for h.opening != nil && !h.closed {
		wait := h.opening
		o.mu.Unlock()
		<-wait
		o.mu.Lock()
	}
	if h.closed {
		o.mu.Unlock()
		return nil, fmt.Errorf("%s: %w", h.path, os.ErrClosed)
	}
	if h.f != nil {
		if h.elem != nil {
			o.idle.Remove(h.elem)
			h.elem = nil
		}
		h.users++
		f := h.f
		o.mu.Unlock()
		return f, nil
	}
	done := make(chan struct{})
	h.opening = done
	o.reserve()
	o.mu.Unlock()
	f, err := h.reopen()
	o.mu.Lock()
	defer o.mu.Unlock()
	h.opening = nil
	close(done)
	if err != nil || h.closed {
		o.open--
		if err != nil {
			return nil, err
		}
		f.Close()
		return nil, fmt.Errorf("%s: %w", h.path, os.ErrClosed)
	}
	h.f = f
	h.users++
	return f, nil
}

// reopen opens the file at h's path again, and checks that it is the
// file first opened there: a stream deleted (its folder renamed away) and
// written again under its name has new files, which a reader of the old
// one must never read as its own.
func (h *handle) reopen() (*os.File, error) {
	f, err := os.OpenFile(h.path, h.flag, 0)
	if err != nil {
		if isNotExist(err) {
			return nil, fmt.Errorf("%s is gone (the stream was deleted): %w", h.path, messagevault.ErrStreamNotFound)
		}
		return nil, err
	}
	if info, err := f.Stat(); err != nil || !os.SameFile(info, h.id) {
		f.Close()
		if err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%s is another file than the one opened (the stream was deleted and written again): %w", h.path, messagevault.ErrStreamNotFound)
	}
	return f, nil
}

// release ends a use that acquire began: wrote marks the file as holding
// unsynced writes, synced as holding none.
func (h *handle) release(wrote, synced bool) {
	o := h.files
	o.mu.Lock()
	defer o.mu.Unlock()
	h.users--
	if wrote {
		h.dirty = true
	}
	if synced {
		h.dirty = false
	}
	if h.users > 0 {
		return
	}
	if h.closed {
		h.f.Close()
		h.f = nil
		o.open--
		return
	}
	if !h.dirty {
		h.elem = o.idle.PushBack(h)
		o.evict()
	}
}

// read runs fn with the open file.
func (h *handle) read(fn func(f *os.File) error) error {
	f, err := h.acquire()
	if err != nil {
		return err
	}
	defer h.release(false, false)
	return fn(f)
}

// write runs fn, which writes the file, with the open file; the file then
// stays open until a sync succeeds.
func (h *handle) write(fn func(f *os.File) error) error {
	f, err := h.acquire()
	if err != nil {
		return err
	}
	defer h.release(true, false)
	return fn(f)
}

// writeHint runs fn, which writes bytes that are never synced (hints), with
// the open file: it may be closed as soon as fn returns.
func (h *handle) writeHint(fn func(f *os.File) error) error { return h.read(fn) }

// sync runs fn, which syncs the file, with the open file; if fn succeeds
// the file may be closed again.
func (h *handle) sync(fn func(f *os.File) error) error {
	f, err := h.acquire()
	if err != nil {
		return err
	}
	err = fn(f)
	h.release(false, err == nil)
	return err
}

// Close closes the file, now or when the last use of it ends. Unsynced
// writes are left to the kernel, as closing an *os.File does.
func (h *handle) Close() error {
	o := h.files
	o.mu.Lock()
	defer o.mu.Unlock()
	if h.closed {
		return nil
	}
	h.closed = true
	if h.elem != nil {
		o.idle.Remove(h.elem)
		h.elem = nil
	}
	if h.users > 0 || h.f == nil {
		return nil
	}
	err := h.f.Close()
	h.f = nil
	o.open--
	return err
}
