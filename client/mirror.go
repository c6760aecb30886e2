package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/file"
	"github.com/messagevault/messagevault/formats"
	"github.com/messagevault/messagevault/segment"
	"github.com/messagevault/messagevault/stream"
)

// mirrorChunk is how many record bytes a mirror writes per commit.
const mirrorChunk = 4 << 20

// startAt makes an empty stream start at position start: a segment there,
// committed, and the first one removed.
func startAt(ctx context.Context, pw messagevault.PageWriter, start int64) error {
	if err := pw.Roll(ctx, start); err != nil {
		return err
	}
	if err := pw.Grow(ctx, segment.Base(start)+messagevault.PageSize); err != nil {
		return err
	}
	if err := pw.Flush(ctx); err != nil {
		return err
	}
	if err := pw.CommitPosition(ctx, start); err != nil {
		return err
	}
	return pw.Trim(ctx, start)
}

// Mirror copies the stream into the local directory dir (as
// <dir>/<stream>/, in the layout of the local backend), from where the
// mirror left off: records are byte-identical to the source's and the
// mirror's position is the source's position it copied up to. A mirror of
// a trimmed stream holds what the source held when it began (from the
// source's Start), in one segment. It is safe
// to interrupt: the mirror's position only moves once the bytes before it
// are durable, so the next run resumes where the last one stopped. It
// returns the mirror's position. progress, if set, is called now and then
// with the position reached and the source's position.
func (r *Reader) Mirror(ctx context.Context, dir string, progress func(done, total int64)) (int64, error) {
	// The source first: a stream that cannot be read leaves no folder.
	src, err := r.src.Extent(ctx)
	if err != nil {
		return 0, fmt.Errorf("mirror of %q: %w", r.stream, err)
	}
	store, err := file.Open(dir)
	if err != nil {
		return 0, err
	}
	defer store.Close()
	return r.copyInto(ctx, store, dir, src, progress)
}

// MirrorTo copies the stream into the same-named stream of store, any
// backend, as Mirror does into a local directory: byte-identical records,
// resumable, and refused if store's stream is not a copy of this one's
// beginning. It restores a local mirror into Azure: open the mirror with
// OpenDir and give the Azure storage. The writer it opens fences any
// other writer of that stream (a server's): restore with the servers
// stopped, or into a stream no server writes.
func (r *Reader) MirrorTo(ctx context.Context, store messagevault.Storage, progress func(done, total int64)) (int64, error) {
	src, err := r.src.Extent(ctx)
	if err != nil {
		return 0, fmt.Errorf("copy of %q: %w", r.stream, err)
	}
	// Check the target with a reader first: opening its writer fences
	// any other writer of it, which a refused copy must not do.
	if err := r.checkTarget(ctx, store, src.Position); err != nil {
		return 0, err
	}
	return r.copyInto(ctx, store, "", src, progress)
}

// checkTarget refuses a target stream that is not a beginning of this
// one: longer, or whose last record is not this stream's at the same place.
func (r *Reader) checkTarget(ctx context.Context, store messagevault.Storage, remote int64) error {
	pr, err := store.OpenReader(ctx, r.stream)
	if errors.Is(err, messagevault.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("copy of %q: open the target: %w", r.stream, err)
	}
	defer pr.Close()
	e, err := pr.Extent(ctx)
	if errors.Is(err, messagevault.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("copy of %q: read the target's position: %w", r.stream, err)
	}
	if e.Position > remote {
		return fmt.Errorf("copy of %q: the target holds %d bytes, past the copy's %d: it is not a mirror of this stream; nothing was changed", r.stream, e.Position, remote)
	}
	if e.Position <= e.Start {
		return nil
	}
	last, found, err := stream.LastRecord(ctx, pr, e.Position)
	if err != nil || !found {
		return fmt.Errorf("copy of %q: the target is not a mirror of this stream (its last record: %v); nothing was changed", r.stream, err)
	}
	if err := r.sameAsSource(ctx, pr, last.Offset, e.Position); err != nil {
		return fmt.Errorf("%w; nothing was changed", err)
	}
	return nil
}

// copyInto copies the stream into store from where store's copy ends;
// dir, if set, is the local mirror's directory, where a mark file keeps
// the last record copied.
func (r *Reader) copyInto(ctx context.Context, store messagevault.Storage, dir string, src messagevault.Extent, progress func(done, total int64)) (int64, error) {
	where := dir
	if where == "" {
		where = fmt.Sprint(store)
	}
	pw, err := store.OpenWriter(ctx, r.stream)
	if err != nil {
		return 0, err
	}
	defer pw.Close()
	tail := stream.NewTail(pw, stream.DefaultGrowStep, 0)
	if err := tail.Load(ctx); err != nil {
		return 0, fmt.Errorf("mirror of %q in %s: %w", r.stream, where, err)
	}
	local := tail.Position()
	remote := src.Position
	if local == 0 && src.Start > 0 {
		// A new mirror of a trimmed stream starts where the source does:
		// an empty segment at its Start, and nothing before it.
		if err := startAt(ctx, pw, src.Start); err != nil {
			return 0, fmt.Errorf("mirror of %q in %s: start at %d: %w", r.stream, where, src.Start, err)
		}
		if err := tail.Load(ctx); err != nil {
			return 0, fmt.Errorf("mirror of %q in %s: %w", r.stream, where, err)
		}
		local = tail.Position()
	}
	if local > remote {
		return local, fmt.Errorf("mirror of %q in %s is at %d, past the source's position %d: it is not a mirror of this stream", r.stream, where, local, remote)
	}
	// The mirror's last records must be the source's: from the mark
	// file's record, or, without one (a crash before it was written, a
	// folder copied by hand), from the mirror's last record.
	mine, err := pw.Extent(ctx)
	if err != nil {
		return local, fmt.Errorf("mirror of %q in %s: %w", r.stream, where, err)
	}
	if mine.Segment == local && mine.Start < local {
		// An empty active segment after older ones: only startAt makes
		// that, and it was cut off before its trim. Finish it.
		if err := pw.Trim(ctx, local); err != nil {
			return local, fmt.Errorf("mirror of %q in %s: finish starting at %d: %w", r.stream, where, local, err)
		}
		mine.Start = local
	}
	if local > mine.Start {
		mark, ok := int64(0), false
		if dir != "" {
			mark, ok = readMark(dir, r.stream)
		}
		if !ok || mark >= local {
			last, _, err := stream.LastRecord(ctx, pw, local)
			if err != nil {
				return local, fmt.Errorf("mirror of %q in %s: it is not a mirror: %w", r.stream, where, err)
			}
			mark = last.Offset
		}
		if err := r.sameAsSource(ctx, pw, mark, local); err != nil {
			return local, err
		}
	}
	lastRecord := int64(-1)
	commit := func() error {
		// What was read is kept even when ctx has ended (Ctrl-C), so
		// the next run starts after it; then within a bound, for remote
		// storage that does not answer.
		cctx := ctx
		if ctx.Err() != nil {
			var cancel context.CancelFunc
			cctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
		}
		if err := tail.Commit(cctx, nil, nil); err != nil {
			return err
		}
		local = tail.Position()
		if lastRecord >= 0 && dir != "" {
			if err := writeMark(dir, r.stream, lastRecord); err != nil {
				return err
			}
		}
		if progress != nil {
			progress(local, remote)
		}
		return nil
	}
	if progress != nil {
		progress(local, remote) // where this run starts
	}
	var last time.Time
	for rec, err := range r.src.Records(ctx, local, remote) {
		if err != nil {
			if cerr := commit(); cerr != nil {
				return local, errors.Join(err, cerr)
			}
			return local, err
		}
		off, err := tail.AppendRecord(rec.ID, rec.Message())
		if err != nil {
			return local, fmt.Errorf("write the mirror: record at %d: %w", rec.Offset, err)
		}
		if off != rec.Offset {
			return local, fmt.Errorf("mirror of %q: the source's record at %d would land at %d", r.stream, rec.Offset, off)
		}
		lastRecord = off
		if tail.Staged() >= mirrorChunk || (progress != nil && time.Since(last) > time.Second) {
			last = time.Now()
			if err := commit(); err != nil {
				return local, fmt.Errorf("write the mirror: %w", err)
			}
		}
	}
	if tail.Staged() > 0 {
		if err := commit(); err != nil {
			return local, fmt.Errorf("write the mirror: %w", err)
		}
	}
	if progress != nil {
		progress(local, remote)
	}
	return local, nil
}

// MirrorMarkFile, in a mirrored stream's folder, holds the position of a
// record near the mirror's end; the next run compares the mirror's bytes
// from there with the source's before it appends, so that a mirror is never
// extended from a different stream.
const MirrorMarkFile = "mirror.at"

func readMark(dir, name string) (int64, bool) {
	b, err := os.ReadFile(filepath.Join(dir, name, MirrorMarkFile))
	if err != nil {
		return 0, false
	}
	n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return n, err == nil && n >= 0
}

func writeMark(dir, name string, at int64) error {
	if err := os.WriteFile(filepath.Join(dir, name, MirrorMarkFile), []byte(strconv.FormatInt(at, 10)+"\n"), file.FileMode); err != nil {
		return fmt.Errorf("write the mirror's mark: %w", err)
	}
	return nil
}

// sameAsSource checks that the mirror's bytes from mark to local are the
// source's records at the same place.
func (r *Reader) sameAsSource(ctx context.Context, pw messagevault.PageReader, mark, local int64) error {
	mine := make([]byte, local-mark)
	if _, err := pw.ReadAt(ctx, mine, mark); err != nil {
		return fmt.Errorf("read the mirror: %w", err)
	}
	var theirs []byte
	for rec, err := range r.src.Records(ctx, mark, local) {
		if err != nil {
			return fmt.Errorf("the mirror of %q does not match the source at %d, it is a mirror of another stream: %w", r.stream, mark, err)
		}
		theirs, _ = formats.AppendRecord(theirs, rec.ID, rec.Message())
	}
	if !bytes.Equal(mine, theirs) {
		return fmt.Errorf("the mirror of %q differs from the source between %d and %d: it is a mirror of another stream", r.stream, mark, local)
	}
	return nil
}
