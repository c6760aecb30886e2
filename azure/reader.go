package azure

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/pageblob"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/segment"
)

var _ segment.Store = (*reader)(nil)

// RenewFunc returns a fresh read grant (a container SAS URL) when the one
// in use has expired: a client asks the server's GET /streams/{stream}.
type RenewFunc func(ctx context.Context) (string, error)

// reader is the segment.Store of one stream's container, read with the
// account's credential or a SAS grant.
type reader struct {
	mu    sync.Mutex
	cc    *container.Client
	renew RenewFunc
	opts  *container.ClientOptions
	// missingOK makes a stream that does not exist yet read as empty, as
	// a consumer waiting for it sees it (the original did the same).
	missingOK bool
}

func newReader(cc *container.Client, renew RenewFunc) *reader {
	return &reader{cc: cc, renew: renew}
}

func (r *reader) client() *container.Client {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cc
}

// OpenGrant opens the stream behind a read grant, a container SAS URL, with
// no account key. When a request is refused because the grant expired,
// renew (if not nil) is asked for a new grant and the request is tried once
// more. cfg tunes retries as for Open.
func OpenGrant(ctx context.Context, grantURL string, renew RenewFunc, cfg Config) (messagevault.PageReader, error) {
	opts := &container.ClientOptions{ClientOptions: cfg.clientOptions()}
	cc, err := container.NewClientWithNoCredential(grantURL, opts)
	if err != nil {
		return nil, fmt.Errorf("azure: read grant URL: %w", err)
	}
	st := newReader(cc, renew)
	st.opts = opts
	st.missingOK = true
	r := segment.NewReader(st)
	if _, err := r.Position(ctx); err != nil {
		return nil, err
	}
	return r, nil
}

// GrantReader opens read grants (container SAS URLs) for the client
// package: client.WithGrantReader(azure.GrantReader{}).
type GrantReader struct {
	// Config tunes the requests; zero MaxRetries means 2 (a reader falls
	// back to the server rather than wait long).
	Config Config
}

// OpenGrant opens the stream behind grant; renew, if set, returns a new
// grant when this one expires.
func (g GrantReader) OpenGrant(ctx context.Context, grant string, renew func(context.Context) (string, error)) (messagevault.PageReader, error) {
	cfg := g.Config
	if cfg.MaxRetries == 0 {
		cfg.MaxRetries = 2
	}
	return OpenGrant(ctx, grant, renew, cfg)
}

// retry runs op, renewing an expired grant once.
func (r *reader) retry(ctx context.Context, op func(cc *container.Client) error) error {
	err := op(r.client())
	if err == nil || r.renew == nil || !bloberror.HasCode(err, bloberror.AuthenticationFailed, bloberror.AuthorizationFailure) {
		return err
	}
	grant, rerr := r.renew(ctx)
	if rerr != nil {
		return fmt.Errorf("%w (renewing the read grant failed: %w)", err, rerr)
	}
	cc, rerr := container.NewClientWithNoCredential(grant, r.opts)
	if rerr != nil {
		return fmt.Errorf("%w (the renewed read grant is not a URL: %w)", err, rerr)
	}
	r.mu.Lock()
	r.cc = cc
	r.mu.Unlock()
	return op(cc)
}

func (r *reader) Extent(ctx context.Context) (messagevault.Extent, error) {
	var e messagevault.Extent
	err := r.retry(ctx, func(cc *container.Client) error {
		props, err := cc.NewPageBlobClient(PositionBlob).GetProperties(ctx, nil)
		if err != nil {
			if r.missingOK && bloberror.HasCode(err, bloberror.BlobNotFound, bloberror.ContainerNotFound) {
				e = messagevault.Extent{}
				return nil
			}
			return err
		}
		e, err = parseExtent(props.Metadata)
		return err
	})
	if err != nil {
		return messagevault.Extent{}, fmt.Errorf("read position: %w", mapError(err))
	}
	return e, nil
}

func (r *reader) List(ctx context.Context) ([]int64, error) {
	var starts []int64
	err := r.retry(ctx, func(cc *container.Client) error {
		starts = starts[:0]
		var err error
		starts, err = listSegments(ctx, cc)
		if r.missingOK && bloberror.HasCode(err, bloberror.ContainerNotFound) {
			starts, err = []int64{0}, nil
		}
		return err
	})
	if err != nil {
		return nil, mapError(err)
	}
	return starts, nil
}

// listSegments returns the starts of the segment blobs in cc.
func listSegments(ctx context.Context, cc *container.Client) ([]int64, error) {
	var starts []int64
	pager := cc.NewListBlobsFlatPager(nil)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		for _, b := range page.Segment.BlobItems {
			if b.Name == nil {
				continue
			}
			if st, ok := segment.Parse(*b.Name); ok {
				starts = append(starts, st)
			}
		}
	}
	return starts, nil
}

func (r *reader) ReadSegment(ctx context.Context, start int64, p []byte, off int64) (int, error) {
	n := 0
	err := r.retry(ctx, func(cc *container.Client) error {
		var err error
		n, err = readRange(ctx, cc.NewPageBlobClient(segment.Name(start)), p, off)
		return err
	})
	if err != nil && !errors.Is(err, io.EOF) {
		return n, fmt.Errorf("read %d bytes at %d of %s: %w", len(p), off, segment.Name(start), mapError(err))
	}
	return n, err
}

// ReadIndex reads the time index blob (none: io.EOF).
func (r *reader) ReadIndex(ctx context.Context, p []byte, off int64) (int, error) {
	n := 0
	err := r.retry(ctx, func(cc *container.Client) error {
		var err error
		n, err = readRange(ctx, cc.NewPageBlobClient(IndexBlob), p, off)
		if bloberror.HasCode(err, bloberror.BlobNotFound, bloberror.ContainerNotFound) {
			n, err = 0, io.EOF
		}
		return err
	})
	if err != nil && !errors.Is(err, io.EOF) {
		return n, fmt.Errorf("read the time index: %w", mapError(err))
	}
	return n, err
}

// readTries is how many downloads readRange makes of one range when the
// body breaks off midway.
const readTries = 4

// readRange downloads [off, off+len(p)) of a page blob into p; past the
// end of the blob it returns what there is and io.EOF.
//
// A body that breaks off midway is resumed with a new, unconditional
// download of what is missing. (The SDK's retrying reader resumes under
// If-Match of the blob's first ETag, which any append changes: the resumed
// read would fail with 412 although committed bytes never change.)
func readRange(ctx context.Context, b *pageblob.Client, p []byte, off int64) (int, error) {
	n := 0
	var err error
	for try := 0; n < len(p) && try < readTries; try++ {
		var k int
		k, err = downloadOnce(ctx, b, p[n:], off+int64(n))
		n += k
		if err == nil || errors.Is(err, io.EOF) || ctx.Err() != nil {
			break
		}
		if k == 0 {
			// Nothing arrived: a failed request, which the SDK's own
			// policy has retried already.
			break
		}
	}
	return n, err
}

// downloadOnce makes one download of [off, off+len(p)).
func downloadOnce(ctx context.Context, b *pageblob.Client, p []byte, off int64) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	resp, err := b.DownloadStream(ctx, &blob.DownloadStreamOptions{Range: blob.HTTPRange{Offset: off, Count: int64(len(p))}})
	if err != nil {
		if bloberror.HasCode(err, bloberror.InvalidRange) {
			return 0, io.EOF
		}
		return 0, err
	}
	defer resp.Body.Close()
	n, err := io.ReadFull(resp.Body, p)
	if err == io.ErrUnexpectedEOF || (err == io.EOF && n < len(p)) {
		if resp.ContentLength != nil && int64(n) == *resp.ContentLength {
			return n, io.EOF // the blob ends here
		}
		if err == io.EOF && n == 0 {
			return 0, io.EOF
		}
		return n, fmt.Errorf("download broke off after %d of %d bytes: %w", n, len(p), io.ErrUnexpectedEOF)
	}
	return n, err
}

func (r *reader) Close() error { return nil }
