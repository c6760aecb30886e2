package file

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/messagevault/messagevault"
)

// deletedPrefix starts the name a deleted stream's folder is renamed to
// before its files are removed: not a stream name, so the stream leaves
// listings and readers at once, and a crash before the removal ends
// leaves only a folder that the next Open removes.
const deletedPrefix = ".deleted-"

var _ messagevault.Deleter = (*Storage)(nil)

// DeleteStream removes stream's folder: it is renamed away (and the data
// directory fsynced) under the storage's lock, then removed. Readers that
// hold its files open (a consumer with a file:// grant) keep what they
// opened; new opens fail.
func (s *Storage) DeleteStream(ctx context.Context, stream string) error {
	if err := messagevault.CheckStreamName(stream); err != nil {
		return fmt.Errorf("delete: %w", err)
	}
	grave, err := s.bury(stream)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(grave); err != nil {
		// Gone from the listings all the same; the next Open retries.
		return fmt.Errorf("delete %q: remove its files (the stream is deleted; %s is removed at the next start): %w", stream, grave, err)
	}
	return nil
}

// bury renames stream's folder to a deleted name, durably.
func (s *Storage) bury(stream string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return "", fmt.Errorf("delete %q: %w", stream, messagevault.ErrClosed)
	case s.writers[stream]:
		return "", fmt.Errorf("delete %q: its writer is open: %w", stream, messagevault.ErrLocked)
	}
	dir := s.StreamDir(stream)
	if _, err := os.Stat(filepath.Join(dir, PositionFile)); err != nil {
		if isNotExist(err) {
			return "", fmt.Errorf("delete %q: %w", stream, messagevault.ErrStreamNotFound)
		}
		return "", fmt.Errorf("delete %q: %w", stream, err)
	}
	grave := filepath.Join(s.dir, deletedPrefix+stream+"-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	if err := os.Rename(dir, grave); err != nil {
		return "", fmt.Errorf("delete %q: %w", stream, err)
	}
	if err := syncDir(s.dir); err != nil {
		return "", fmt.Errorf("delete %q: %w", stream, err)
	}
	return grave, nil
}

// removeBuried removes the folders of deletions a crash interrupted (what
// it cannot remove waits for the next start).
func removeBuried(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.IsDir() && strings.HasPrefix(e.Name(), deletedPrefix) {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				return fmt.Errorf("remove the deleted stream folder %s: %w", e.Name(), err)
			}
		}
	}
	return nil
}
