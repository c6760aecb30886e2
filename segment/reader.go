package segment

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sync"

	"github.com/messagevault/messagevault"
)

// Store is what a backend gives Reader: one stream's committed extent and
// its segment blobs.
type Store interface {
	// Extent reads the committed position record.
	Extent(ctx context.Context) (messagevault.Extent, error)
	// List returns the starts of the segment blobs there are, in any
	// order.
	List(ctx context.Context) ([]int64, error)
	// ReadSegment reads len(p) bytes of the blob of the segment that
	// starts at start, from byte off of the blob. It returns fewer bytes
	// only with an error: io.EOF past the blob's end, an error wrapping
	// messagevault.ErrStreamNotFound if the blob is gone.
	ReadSegment(ctx context.Context, start int64, p []byte, off int64) (int, error)
	// ReadIndex reads the stream's time index as PageReader.ReadIndex
	// does.
	ReadIndex(ctx context.Context, p []byte, off int64) (int, error)
	// Close releases the store.
	Close() error
}

// Reader is a messagevault.PageReader over a Store: it maps positions to
// segments and follows the chain as the writer rolls and trims. It reads
// the extent again whenever asked for bytes past the position it last saw
// (the writer may have rolled since) or when a segment is gone (trimmed),
// so a reader never reads a segment's blob past its end in the chain. It
// is safe for concurrent use.
type Reader struct {
	store Store

	// shared, if set, holds the chain readers of the same stream found
	// last (under key), so that a new reader does not list the segments
	// again while the chain has not changed.
	shared *Chains
	key    string

	mu    sync.Mutex
	ext   messagevault.Extent
	chain []int64 // nil until the first Extent
}

// Chains remembers the chain of each stream as its readers last found
// it, for the readers a storage opens: a chain is listed once per roll or
// trim, not once per reader. It is safe for concurrent use.
type Chains struct {
	mu sync.Mutex
	m  map[string]known
}

type known struct {
	start, segment int64
	chain          []int64
}

// get returns the chain of key if it was found for the same start and
// active segment.
func (c *Chains) get(key string, e messagevault.Extent) []int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if k, ok := c.m[key]; ok && k.start == e.Start && k.segment == e.Segment {
		return k.chain
	}
	return nil
}

func (c *Chains) put(key string, e messagevault.Extent, chain []int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]known{}
	}
	c.m[key] = known{start: e.Start, segment: e.Segment, chain: chain}
}

// Forget drops what is known of key (a deleted stream).
func (c *Chains) Forget(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, key)
}

// NewSharedReader returns the reader of store that shares what it finds
// of the chain with the other readers of chains under key.
func NewSharedReader(store Store, chains *Chains, key string) *Reader {
	return &Reader{store: store, shared: chains, key: key}
}

var _ messagevault.PageReader = (*Reader)(nil)

// NewReader returns the reader of store; it reads nothing until used.
func NewReader(store Store) *Reader { return &Reader{store: store} }

// Store returns the store the reader reads.
func (r *Reader) Store() Store { return r.store }

// Extent reads the committed position record, and the segment list when
// the chain has changed since the last one.
func (r *Reader) Extent(ctx context.Context) (messagevault.Extent, error) {
	e, err := r.store.Extent(ctx)
	if err != nil {
		return messagevault.Extent{}, err
	}
	r.mu.Lock()
	same := r.chain != nil && e.Segment == r.ext.Segment && e.Start == r.ext.Start
	if same {
		r.ext = e
	}
	r.mu.Unlock()
	if same {
		return e, nil
	}
	if r.shared != nil {
		if chain := r.shared.get(r.key, e); chain != nil {
			r.mu.Lock()
			r.ext, r.chain = e, chain
			r.mu.Unlock()
			return e, nil
		}
	}
	for try := 0; ; try++ {
		present, err := r.store.List(ctx)
		if err != nil {
			return messagevault.Extent{}, fmt.Errorf("list segments: %w", err)
		}
		chain, err := Chain(present, e)
		if err == nil {
			r.mu.Lock()
			r.ext, r.chain = e, chain
			r.mu.Unlock()
			if r.shared != nil {
				r.shared.put(r.key, e, chain)
			}
			return e, nil
		}
		// A trim or a roll between reading the extent and listing
		// changes both: only a chain that does not fit an extent that
		// stays the same is damage.
		again, xerr := r.store.Extent(ctx)
		if xerr != nil {
			return messagevault.Extent{}, xerr
		}
		if try == 4 || again.Start == e.Start && again.Segment == e.Segment {
			return messagevault.Extent{}, err
		}
		e = again
	}
}

// Position returns the committed position.
func (r *Reader) Position(ctx context.Context) (int64, error) {
	e, err := r.Extent(ctx)
	return e.Position, err
}

// Segments returns the starts of the chain's segments, oldest first, as of
// a fresh Extent.
func (r *Reader) Segments(ctx context.Context) ([]int64, error) {
	if _, err := r.Extent(ctx); err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.chain), nil
}

// Known returns the extent and chain as last read, without reading.
func (r *Reader) Known() (messagevault.Extent, []int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ext, slices.Clone(r.chain)
}

// Forget drops what the reader knows, so that the next call reads the
// extent and the segment list again.
func (r *Reader) Forget() {
	r.mu.Lock()
	r.chain = nil
	r.mu.Unlock()
}

// ReadAt reads stream positions [off, off+len(p)) across the chain.
func (r *Reader) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read at %d: %w", off, messagevault.ErrOutOfRange)
	}
	r.mu.Lock()
	stale := r.chain == nil || off+int64(len(p)) > r.ext.Position || off < r.ext.Start
	r.mu.Unlock()
	if stale {
		if _, err := r.Extent(ctx); err != nil {
			return 0, err
		}
	}
	n := 0
	for retried := false; n < len(p); {
		r.mu.Lock()
		ext, chain := r.ext, r.chain
		r.mu.Unlock()
		at := off + int64(n)
		if at < ext.Start {
			return n, &messagevault.TrimmedError{Offset: at, Start: ext.Start}
		}
		i := Find(chain, at)
		end := int64(math.MaxInt64)
		if i+1 < len(chain) {
			end = chain[i+1]
		}
		want := int(min(int64(len(p)-n), end-at))
		k, err := r.store.ReadSegment(ctx, chain[i], p[n:n+want], at-Base(chain[i]))
		n += k
		switch {
		case err == nil:
		case errors.Is(err, messagevault.ErrStreamNotFound) && !retried:
			// Trimmed (or the chain moved) since the extent was read.
			retried = true
			if _, err := r.Extent(ctx); err != nil {
				return n, err
			}
			continue
		case errors.Is(err, io.EOF):
			return n, io.EOF
		default:
			return n, err
		}
		if k < want {
			return n, io.ErrUnexpectedEOF
		}
	}
	return n, nil
}

// ReadIndex reads the stream's time index.
func (r *Reader) ReadIndex(ctx context.Context, p []byte, off int64) (int, error) {
	return r.store.ReadIndex(ctx, p, off)
}

// Close closes the store.
func (r *Reader) Close() error { return r.store.Close() }
