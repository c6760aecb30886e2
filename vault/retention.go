package vault

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/formats"
	"github.com/messagevault/messagevault/stream"
)

// DefaultRetentionEvery is how often retention looks at every stream.
const DefaultRetentionEvery = time.Minute

// Retention removes a stream's old segments in the background, never the
// active one. Zero fields set no limit.
type Retention struct {
	// Bytes keeps at least this many of a stream's newest bytes: a
	// segment goes once the bytes after it are this many or more (so a
	// stream keeps between Bytes and Bytes plus a segment).
	Bytes int64
	// Age removes a segment once its newest record is older than this.
	Age time.Duration
	// Every is how often the streams are looked at. Default
	// DefaultRetentionEvery.
	Every time.Duration
}

// On reports whether r removes anything.
func (r Retention) On() bool { return r.Bytes > 0 || r.Age > 0 }

// retain applies the retention limits every Retention.Every until the
// vault closes.
func (v *Vault) retain() {
	defer v.wg.Done()
	every := v.cfg.Retention.Every
	if every <= 0 {
		every = DefaultRetentionEvery
	}
	t := time.NewTicker(every)
	defer t.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-v.stop
		cancel()
	}()
	for {
		select {
		case <-v.stop:
			return
		case <-t.C:
		}
		if err := v.ApplyRetention(ctx, time.Now()); err != nil && ctx.Err() == nil {
			v.log.Warn("retention pass failed; the next one retries", "err", err)
		}
	}
}

// ApplyRetention removes, from every stream, the segments that the
// retention limits let go as of now. A node whose leadership has lapsed
// removes nothing.
func (v *Vault) ApplyRetention(ctx context.Context, now time.Time) error {
	if !v.cfg.Retention.On() {
		return nil
	}
	names, err := v.storage.Streams(ctx)
	if err != nil {
		return fmt.Errorf("retention: %w", err)
	}
	var errs []error
	for _, name := range names {
		if err := v.retainStream(ctx, name, now); err != nil && !errors.Is(err, messagevault.ErrStreamNotFound) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// retainStream applies the retention limits to one stream.
func (v *Vault) retainStream(ctx context.Context, name string, now time.Time) error {
	ctx, cancel, err := v.whileLeading(ctx, "retention of "+name)
	if err != nil {
		return err
	}
	defer cancel()
	pr, err := v.storage.OpenReader(ctx, name)
	if err != nil {
		return err
	}
	before, err := v.cfg.Retention.point(ctx, pr, now)
	pr.Close()
	if err != nil {
		return fmt.Errorf("retention of %q: %w", name, err)
	}
	if before < 0 {
		return nil
	}
	start, err := v.Trim(ctx, name, before)
	if err != nil {
		return fmt.Errorf("retention of %q: %w", name, err)
	}
	v.log.Info("retention removed old segments", "stream", name, "start", start)
	return nil
}

// point returns where the limits let a stream be trimmed (the start of
// the first segment to keep), or -1 if nothing may go.
func (r Retention) point(ctx context.Context, pr messagevault.PageReader, now time.Time) (int64, error) {
	e, err := pr.Extent(ctx)
	if err != nil {
		return 0, err
	}
	segs, err := pr.Segments(ctx)
	if err != nil {
		return 0, err
	}
	target := e.Start
	// Segment i ends where segment i+1 starts; the last is active.
	for i := 0; i+1 < len(segs) && r.Bytes > 0; i++ {
		if e.Position-segs[i+1] < r.Bytes {
			break
		}
		target = max(target, segs[i+1])
	}
	cutoff := int64(formats.MillisSinceEpoch(now.Add(-r.Age)))
	for i := 0; i+1 < len(segs) && r.Age > 0; i++ {
		last, ok, err := stream.LastRecord(ctx, pr, segs[i+1])
		if err != nil {
			return 0, fmt.Errorf("the newest record of segment %d: %w", segs[i], err)
		}
		if !ok || int64(last.ID.Millis()) >= cutoff {
			break
		}
		target = max(target, segs[i+1])
	}
	if target <= e.Start {
		return -1, nil
	}
	return target, nil
}
