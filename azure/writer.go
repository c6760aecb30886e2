package azure

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/pageblob"

	"github.com/messagevault/messagevault"
)

var _ messagevault.PageWriter = (*writer)(nil)

// takeOverTries is how often a writer retries taking a stream over when
// another writer changes it at the same moment.
const takeOverTries = 5

// writer is the PageWriter of one stream. It remembers the ETags of its
// own last changes and makes every change conditional on them.
type writer struct {
	*reader
	size      int64
	recordsET azcore.ETag
	posET     azcore.ETag
	id        string
	closed    bool
	release   func()
}

func openWriter(ctx context.Context, cc *container.Client) (*writer, error) {
	if _, err := cc.Create(ctx, nil); err != nil && !bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
		return nil, fmt.Errorf("create container: %w", mapError(err))
	}
	w := &writer{reader: newReader(cc, nil), id: writerID()}
	ifNone := &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfNoneMatch: to.Ptr(azcore.ETagAny)}}
	if _, err := w.records.Create(ctx, 0, &pageblob.CreateOptions{AccessConditions: ifNone}); err != nil && !bloberror.HasCode(err, bloberror.BlobAlreadyExists) {
		return nil, fmt.Errorf("create %s: %w", RecordsBlob, mapError(err))
	}
	if _, err := w.position.Create(ctx, 0, &pageblob.CreateOptions{AccessConditions: ifNone, Metadata: map[string]*string{PositionKey: to.Ptr("0")}}); err != nil && !bloberror.HasCode(err, bloberror.BlobAlreadyExists) {
		return nil, fmt.Errorf("create %s: %w", PositionBlob, mapError(err))
	}
	var err error
	for try := 0; try < takeOverTries; try++ {
		if err = w.takeOver(ctx); err == nil {
			return w, nil
		}
		if !bloberror.HasCode(err, bloberror.ConditionNotMet) {
			return nil, mapError(err)
		}
	}
	return nil, fmt.Errorf("another writer keeps changing the stream: %w: %w", messagevault.ErrLocked, err)
}

// takeOver rewrites the metadata of both blobs under If-Match, which gives
// them new ETags that only this writer knows: any earlier writer's next
// change fails its condition.
func (w *writer) takeOver(ctx context.Context) error {
	pprops, err := w.position.GetProperties(ctx, nil)
	if err != nil {
		return err
	}
	pos, err := parsePosition(pprops.Metadata)
	if err != nil {
		return err
	}
	rprops, err := w.records.GetProperties(ctx, nil)
	if err != nil {
		return err
	}
	md := map[string]*string{"writer": to.Ptr(w.id)}
	rresp, err := w.records.SetMetadata(ctx, md, &blob.SetMetadataOptions{AccessConditions: ifMatch(*rprops.ETag)})
	if err != nil {
		return err
	}
	md = map[string]*string{PositionKey: to.Ptr(strconv.FormatInt(pos, 10)), "writer": to.Ptr(w.id)}
	presp, err := w.position.SetMetadata(ctx, md, &blob.SetMetadataOptions{AccessConditions: ifMatch(*pprops.ETag)})
	if err != nil {
		return err
	}
	w.recordsET, w.posET = *rresp.ETag, *presp.ETag
	w.size = 0
	if rprops.ContentLength != nil {
		w.size = *rprops.ContentLength
	}
	return nil
}

func ifMatch(et azcore.ETag) *blob.AccessConditions {
	return &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfMatch: &et}}
}

// writerID names a writer in the blobs' metadata, for people looking at
// the account: host, pid and a random part.
func writerID() string {
	host, _ := os.Hostname()
	var b [4]byte
	rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b[:]))
}

func (w *writer) Size(ctx context.Context) (int64, error) {
	if w.closed {
		return 0, messagevault.ErrClosed
	}
	return w.size, nil
}

func (w *writer) Grow(ctx context.Context, size int64) error {
	if w.closed {
		return messagevault.ErrClosed
	}
	if err := messagevault.CheckGrow(size); err != nil {
		return err
	}
	if size <= w.size {
		return nil
	}
	resp, err := w.records.Resize(ctx, size, &pageblob.ResizeOptions{AccessConditions: ifMatch(w.recordsET)})
	if err != nil {
		return fmt.Errorf("resize %s to %d: %w", RecordsBlob, size, mapError(err))
	}
	w.recordsET = *resp.ETag
	w.size = size
	return nil
}

func (w *writer) WritePages(ctx context.Context, off int64, p []byte) error {
	if w.closed {
		return messagevault.ErrClosed
	}
	if err := messagevault.CheckPages(off, len(p), w.size); err != nil {
		return err
	}
	for len(p) > 0 {
		n := min(len(p), MaxPutPage)
		resp, err := w.records.UploadPages(ctx, streaming.NopCloser(bytes.NewReader(p[:n])),
			blob.HTTPRange{Offset: off, Count: int64(n)},
			&pageblob.UploadPagesOptions{AccessConditions: ifMatch(w.recordsET)})
		if err != nil {
			return fmt.Errorf("put %d bytes of pages at %d: %w", n, off, mapError(err))
		}
		w.recordsET = *resp.ETag
		off += int64(n)
		p = p[n:]
	}
	return nil
}

// Flush has nothing to do: Azure acknowledges a Put Page once it is
// durable.
func (w *writer) Flush(ctx context.Context) error {
	if w.closed {
		return messagevault.ErrClosed
	}
	return nil
}

func (w *writer) CommitPosition(ctx context.Context, pos int64) error {
	if w.closed {
		return messagevault.ErrClosed
	}
	if pos < 0 || pos > w.size {
		return fmt.Errorf("commit position %d: blob is %d bytes: %w", pos, w.size, messagevault.ErrOutOfRange)
	}
	md := map[string]*string{PositionKey: to.Ptr(strconv.FormatInt(pos, 10)), "writer": to.Ptr(w.id)}
	resp, err := w.position.SetMetadata(ctx, md, &blob.SetMetadataOptions{AccessConditions: ifMatch(w.posET)})
	if err != nil {
		return fmt.Errorf("commit position %d: %w", pos, mapError(err))
	}
	w.posET = *resp.ETag
	return nil
}

func (w *writer) Close() error {
	if w.closed {
		return nil
	}
	w.closed = true
	if w.release != nil {
		w.release()
	}
	return nil
}
