package azure

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
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
	stateET   [2]azcore.ETag // "" while the slot's blob does not exist
	id        string
	closed    bool
	release   func()
}

func openWriter(ctx context.Context, cc *container.Client) (*writer, error) {
	if _, err := cc.Create(ctx, nil); err != nil && !bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
		if bloberror.HasCode(err, bloberror.ContainerBeingDeleted) {
			return nil, fmt.Errorf("create container: Azure is still removing the container of the stream deleted moments ago, and refuses a new one under its name until it is gone (often 30 s or more): %w", messagevault.ErrStreamBeingDeleted)
		}
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
	for slot := range w.stateET {
		et, err := w.touch(ctx, w.stateBlob(slot), false)
		if err != nil {
			return err
		}
		w.stateET[slot] = et
	}
	return nil
}

// stateName returns the blob name of state slot 0 or 1.
func stateName(slot int) string {
	if slot == 1 {
		return StateBlob1
	}
	return StateBlob0
}

// stateBlob returns the client of state slot 0 or 1.
func (w *writer) stateBlob(slot int) *blob.Client { return w.cc.NewBlobClient(stateName(slot)) }

// touch rewrites b's metadata with this writer's id under If-Match of the
// ETag it reads first, so that b gets an ETag only this writer knows, and
// returns it ("" if b does not exist). With own set, b must already carry
// this writer's id: if it carries another's, the stream was taken over and
// touch fails with ErrFenced.
func (w *writer) touch(ctx context.Context, b *blob.Client, own bool) (azcore.ETag, error) {
	props, err := b.GetProperties(ctx, nil)
	if err != nil {
		if bloberror.HasCode(err, bloberror.BlobNotFound) {
			return "", nil
		}
		return "", err
	}
	md := props.Metadata
	if md == nil {
		md = map[string]*string{}
	}
	if own {
		if id, _ := metadataValue(md, "writer"); id != w.id {
			return "", fmt.Errorf("%s: written by %q since: %w", b.URL(), id, messagevault.ErrFenced)
		}
	}
	for k := range md {
		if strings.EqualFold(k, "writer") {
			delete(md, k)
		}
	}
	md["writer"] = to.Ptr(w.id)
	resp, err := b.SetMetadata(ctx, md, &blob.SetMetadataOptions{AccessConditions: ifMatch(*props.ETag)})
	if err != nil {
		return "", err
	}
	return *resp.ETag, nil
}

// Refence gives every blob of the stream a new ETag, so that a request
// this writer sent earlier and gave up on (a page write or position
// commit cut off by a deadline) fails its condition if it arrives late.
// A blob that another writer has written since fails with ErrFenced. A
// late request that lands while Refence runs makes its conditional
// rewrite fail; Refence then reads again.
func (w *writer) Refence(ctx context.Context) error {
	if w.closed {
		return messagevault.ErrClosed
	}
	var err error
	for try := 0; try < takeOverTries; try++ {
		if err = w.refence(ctx); err == nil {
			return nil
		}
		if !bloberror.HasCode(err, bloberror.ConditionNotMet) {
			return fmt.Errorf("refence: %w", mapError(err))
		}
	}
	return fmt.Errorf("refence: the stream keeps changing: %w", mapError(err))
}

func (w *writer) refence(ctx context.Context) error {
	var ets [4]azcore.ETag
	blobs := []*blob.Client{w.records.BlobClient(), w.position.BlobClient(), w.stateBlob(0), w.stateBlob(1)}
	for i, b := range blobs {
		et, err := w.touch(ctx, b, true)
		if err != nil {
			return err
		}
		if et == "" && i < 2 {
			return fmt.Errorf("%s is gone: %w", b.URL(), messagevault.ErrFenced)
		}
		ets[i] = et
	}
	props, err := w.records.GetProperties(ctx, &blob.GetPropertiesOptions{AccessConditions: ifMatch(ets[0])})
	if err != nil {
		return err
	}
	w.recordsET, w.posET, w.stateET = ets[0], ets[1], [2]azcore.ETag{ets[2], ets[3]}
	if props.ContentLength != nil {
		w.size = *props.ContentLength
	}
	return nil
}

func (w *writer) ReadState(ctx context.Context, slot int) ([]byte, error) {
	if w.closed {
		return nil, messagevault.ErrClosed
	}
	if slot != 0 && slot != 1 {
		return nil, fmt.Errorf("read state slot %d: %w", slot, messagevault.ErrOutOfRange)
	}
	resp, err := w.stateBlob(slot).DownloadStream(ctx, nil)
	if err != nil {
		if bloberror.HasCode(err, bloberror.BlobNotFound) {
			return nil, nil
		}
		return nil, fmt.Errorf("read state slot %d: %w", slot, mapError(err))
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("read state slot %d: %w", slot, err)
	}
	return b, nil
}

func (w *writer) WriteState(ctx context.Context, slot int, p []byte) error {
	if w.closed {
		return messagevault.ErrClosed
	}
	if slot != 0 && slot != 1 {
		return fmt.Errorf("write state slot %d: %w", slot, messagevault.ErrOutOfRange)
	}
	cond := &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfNoneMatch: to.Ptr(azcore.ETagAny)}}
	if et := w.stateET[slot]; et != "" {
		cond = ifMatch(et)
	}
	resp, err := w.cc.NewBlockBlobClient(stateName(slot)).Upload(ctx, streaming.NopCloser(bytes.NewReader(p)), &blockblob.UploadOptions{
		AccessConditions: cond,
		Metadata:         map[string]*string{"writer": to.Ptr(w.id)},
	})
	if err != nil {
		return fmt.Errorf("write state slot %d: %w", slot, mapError(err))
	}
	w.stateET[slot] = *resp.ETag
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
