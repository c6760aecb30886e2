package azure

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/pageblob"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/segment"
)

var (
	_ messagevault.PageWriter    = (*writer)(nil)
	_ messagevault.CommitStarter = (*writer)(nil)
)

// putPagesInFlight is how many Put Pages of one page write are sent at
// once.
const putPagesInFlight = 8

// takeOverTries is how often a writer retries taking a stream over when
// another writer changes it at the same moment.
const takeOverTries = 5

// writer is the PageWriter of one stream. It fences other writers off
// in two ways. The position blob and the state blobs change under
// If-Match of the ETags of this writer's own last changes. The active
// segment's pages are written under x-ms-if-sequence-number-eq of a
// blob sequence number this writer set when it took the stream over,
// which page writes leave as it is: several can be in flight at once.
// A writer that takes over, Refence, and a page write whose Put Page
// the SDK retried set a new one, so every page write sent before fails
// its condition.
type writer struct {
	*segment.Reader
	st      *reader
	cc      *container.Client
	ext     messagevault.Extent // as last committed (or loaded)
	active  int64               // the active segment: ext.Segment, or a newer roll
	records *pageblob.Client    // the active segment's blob
	size    int64               // its size
	seq     int64               // its sequence number, as this writer set it
	posET   azcore.ETag
	// committing is closed when the position commit in flight (see
	// StartCommit) is done; nil when none was started.
	committing chan struct{}
	stateET    [2]azcore.ETag // "" while the slot's blob does not exist
	// inline holds the state slots kept in the position blob's metadata
	// (base64; "" for a slot in its blob): as committed, or written since
	// and committed with the next position.
	inline [2]string
	id     string
	// since is when this writer took the stream over, by the service's
	// clock: a segment blob another writer changed after it belongs to a
	// newer writer, and is never removed or reused by this one.
	since     time.Time
	indexSize int64 // the time index blob's size, -1 until known
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
	st := newReader(cc, nil)
	w := &writer{Reader: segment.NewReader(st), st: st, cc: cc, id: writerID(), indexSize: -1}
	ifNone := &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfNoneMatch: to.Ptr(azcore.ETagAny)}}
	if _, err := w.position().Create(ctx, 0, &pageblob.CreateOptions{AccessConditions: ifNone, Metadata: map[string]*string{PositionKey: to.Ptr("0")}}); err != nil && !bloberror.HasCode(err, bloberror.BlobAlreadyExists) {
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

// position returns the client of the position blob.
func (w *writer) position() *pageblob.Client { return w.cc.NewPageBlobClient(PositionBlob) }

// takeOver rewrites the metadata of the position blob and of the active
// segment's blob under If-Match, which gives them new ETags that only this
// writer knows: any earlier writer's next change fails its condition. It
// creates the first segment of a new stream and removes the segments a
// crash left outside the chain.
func (w *writer) takeOver(ctx context.Context) error {
	pprops, err := w.position().GetProperties(ctx, nil)
	if err != nil {
		return err
	}
	e, err := parseExtent(pprops.Metadata)
	if err != nil {
		return err
	}
	inline := inlineState(pprops.Metadata)
	presp, err := w.position().SetMetadata(ctx, extentMetadata(e, w.id, inline), &blob.SetMetadataOptions{AccessConditions: ifMatch(*pprops.ETag)})
	if err != nil {
		return err
	}
	w.posET, w.ext, w.active, w.inline = *presp.ETag, e, e.Segment, inline
	w.since = time.Now()
	if presp.LastModified != nil {
		w.since = *presp.LastModified
	}
	if err := w.removeLeftovers(ctx, e); err != nil {
		return err
	}
	w.records = w.cc.NewPageBlobClient(segment.Name(e.Segment))
	if e.Segment == 0 {
		ifNone := &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfNoneMatch: to.Ptr(azcore.ETagAny)}}
		if _, err := w.records.Create(ctx, 0, &pageblob.CreateOptions{AccessConditions: ifNone}); err != nil && !bloberror.HasCode(err, bloberror.BlobAlreadyExists) {
			return fmt.Errorf("create %s: %w", RecordsBlob, err)
		}
	}
	rprops, err := w.records.GetProperties(ctx, nil)
	if err != nil {
		if bloberror.HasCode(err, bloberror.BlobNotFound) {
			return fmt.Errorf("the active segment %s is missing: %w", segment.Name(e.Segment), messagevault.ErrCorrupt)
		}
		return err
	}
	rresp, err := w.records.SetMetadata(ctx, map[string]*string{"writer": to.Ptr(w.id)}, &blob.SetMetadataOptions{AccessConditions: ifMatch(*rprops.ETag)})
	if err != nil {
		return err
	}
	if w.seq, err = fencePages(ctx, w.records, *rresp.ETag); err != nil {
		return err
	}
	w.size = 0
	if rprops.ContentLength != nil {
		w.size = *rprops.ContentLength
	}
	for slot := range w.stateET {
		et, _, err := w.touch(ctx, w.stateBlob(slot), false)
		if err != nil {
			return err
		}
		w.stateET[slot] = et
	}
	return nil
}

// removeLeftovers deletes the segment blobs outside the chain of e that
// this writer may remove (see mayRemove); the others are left for a later
// writer.
func (w *writer) removeLeftovers(ctx context.Context, e messagevault.Extent) error {
	present, err := listSegmentBlobs(ctx, w.cc)
	if err != nil {
		return fmt.Errorf("list segments: %w", err)
	}
	for _, b := range present {
		if (b.start < e.Start || b.start > e.Segment) && w.mayRemove(b) {
			if err := w.removeSegment(ctx, b); err != nil {
				return err
			}
		}
	}
	return nil
}

// mayRemove reports whether this writer may remove or reuse segment blob
// b: one it wrote itself, or one last changed before it took the stream
// over (a second earlier, the listing's precision). A newer writer's
// segment is never touched, even by a writer that has not yet noticed it
// was fenced.
func (w *writer) mayRemove(b segBlob) bool {
	return b.writer == w.id || b.modified.Before(w.since.Add(-time.Second))
}

// removeSegment deletes segment blob b as listed: under If-Match of its
// listed ETag, so that a delete that arrives late cannot remove a blob
// written since.
func (w *writer) removeSegment(ctx context.Context, b segBlob) error {
	_, err := w.cc.NewBlobClient(segment.Name(b.start)).Delete(ctx, &blob.DeleteOptions{AccessConditions: ifMatch(b.etag)})
	if err != nil && !bloberror.HasCode(err, bloberror.BlobNotFound, bloberror.ConditionNotMet) {
		return fmt.Errorf("remove the leftover segment %s: %w", segment.Name(b.start), mapError(err))
	}
	return nil
}

// segBlob is a segment blob as listed.
type segBlob struct {
	start    int64
	etag     azcore.ETag
	modified time.Time
	writer   string
}

// listSegmentBlobs lists the segment blobs of cc with their ETags, times
// and writers.
func listSegmentBlobs(ctx context.Context, cc *container.Client) ([]segBlob, error) {
	var out []segBlob
	pager := cc.NewListBlobsFlatPager(&container.ListBlobsFlatOptions{Include: container.ListBlobsInclude{Metadata: true}})
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return nil, err
		}
		for _, it := range page.Segment.BlobItems {
			if it.Name == nil || it.Properties == nil || it.Properties.ETag == nil || it.Properties.LastModified == nil {
				continue
			}
			st, ok := segment.Parse(*it.Name)
			if !ok {
				continue
			}
			writer, _ := metadataValue(it.Metadata, "writer")
			out = append(out, segBlob{start: st, etag: *it.Properties.ETag, modified: *it.Properties.LastModified, writer: writer})
		}
	}
	return out, nil
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
// returns it and the metadata ("" if b does not exist). With own set, b must already carry
// this writer's id: if it carries another's, the stream was taken over and
// touch fails with ErrFenced.
func (w *writer) touch(ctx context.Context, b *blob.Client, own bool) (azcore.ETag, map[string]*string, error) {
	props, err := b.GetProperties(ctx, nil)
	if err != nil {
		if bloberror.HasCode(err, bloberror.BlobNotFound) {
			return "", nil, nil
		}
		return "", nil, err
	}
	md := props.Metadata
	if md == nil {
		md = map[string]*string{}
	}
	if own {
		if id, _ := metadataValue(md, "writer"); id != w.id {
			return "", nil, fmt.Errorf("%s: written by %q since: %w", b.URL(), id, messagevault.ErrFenced)
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
		return "", nil, err
	}
	return *resp.ETag, md, nil
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
	w.waitCommit()
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
	// The position blob first: it names the committed active segment,
	// which a roll that was not committed may have replaced.
	posET, md, err := w.touch(ctx, w.position().BlobClient(), true)
	if err != nil {
		return err
	}
	if posET == "" {
		return fmt.Errorf("%s is gone: %w", PositionBlob, messagevault.ErrFenced)
	}
	e, err := parseExtent(md)
	if err != nil {
		return err
	}
	records := w.cc.NewPageBlobClient(segment.Name(e.Segment))
	recordsET, _, err := w.touch(ctx, records.BlobClient(), true)
	if err != nil {
		return err
	}
	if recordsET == "" {
		return fmt.Errorf("%s is gone: %w", segment.Name(e.Segment), messagevault.ErrFenced)
	}
	var stateET [2]azcore.ETag
	for slot := range stateET {
		if stateET[slot], _, err = w.touch(ctx, w.stateBlob(slot), true); err != nil {
			return err
		}
	}
	seq, err := fencePages(ctx, records, recordsET)
	if err != nil {
		return err
	}
	props, err := records.GetProperties(ctx, nil)
	if err != nil {
		return err
	}
	if props.BlobSequenceNumber == nil || *props.BlobSequenceNumber != seq {
		return fmt.Errorf("%s: its sequence number changed since this writer set it: %w", segment.Name(e.Segment), messagevault.ErrFenced)
	}
	w.records, w.seq, w.posET, w.stateET = records, seq, posET, stateET
	w.ext, w.active, w.inline = e, e.Segment, inlineState(md)
	w.size = 0
	if props.ContentLength != nil {
		w.size = *props.ContentLength
	}
	w.Forget()
	return nil
}

func (w *writer) ReadState(ctx context.Context, slot int, p []byte, off int64) (int, error) {
	if w.closed {
		return 0, messagevault.ErrClosed
	}
	if slot != 0 && slot != 1 {
		return 0, fmt.Errorf("read state slot %d: %w", slot, messagevault.ErrOutOfRange)
	}
	if off < 0 {
		return 0, io.EOF
	}
	if v := w.inline[slot]; v != "" {
		b, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			// Torn or changed by hand: the caller checks what it reads.
			return 0, io.EOF
		}
		return bytes.NewReader(b).ReadAt(p, off)
	}
	if len(p) == 0 {
		return 0, nil
	}
	resp, err := w.stateBlob(slot).DownloadStream(ctx, &blob.DownloadStreamOptions{Range: blob.HTTPRange{Offset: off, Count: int64(len(p))}})
	if err != nil {
		if bloberror.HasCode(err, bloberror.BlobNotFound, bloberror.InvalidRange) {
			return 0, io.EOF // never written, or off is past its end
		}
		return 0, fmt.Errorf("read state slot %d: %w", slot, mapError(err))
	}
	defer resp.Body.Close()
	n, err := io.ReadFull(resp.Body, p)
	if errors.Is(err, io.ErrUnexpectedEOF) {
		err = io.EOF // the blob ends within p
	}
	if err != nil && !errors.Is(err, io.EOF) {
		err = fmt.Errorf("read state slot %d: %w", slot, err)
	}
	return n, err
}

// WriteState keeps a state of at most InlineStateMax bytes in the
// position blob's metadata, where the next commit of the position writes
// it, in the same request: a group with producer sequences then costs a
// Put Page and a commit, two requests rather than three. A larger state
// goes to the slot's blob, and the next commit drops the slot's key.
func (w *writer) WriteState(ctx context.Context, slot int, p []byte) error {
	if w.closed {
		return messagevault.ErrClosed
	}
	if slot != 0 && slot != 1 {
		return fmt.Errorf("write state slot %d: %w", slot, messagevault.ErrOutOfRange)
	}
	w.waitCommit()
	if len(p) > 0 && len(p) <= InlineStateMax {
		w.inline[slot] = base64.StdEncoding.EncodeToString(p)
		return nil
	}
	w.inline[slot] = ""
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

// fencePages gives page blob pb a new random sequence number, under
// If-Match of et (the ETag this writer gave it), and returns it: every
// page write sent under the blob's earlier number, by this writer or
// another, then fails its condition. On error it returns the number it
// tried too: a retried update may have landed although it reports one.
func fencePages(ctx context.Context, pb *pageblob.Client, et azcore.ETag) (int64, error) {
	seq := newSequence()
	_, err := pb.UpdateSequenceNumber(ctx, &pageblob.UpdateSequenceNumberOptions{
		ActionType:       to.Ptr(pageblob.SequenceNumberActionTypeUpdate),
		SequenceNumber:   &seq,
		AccessConditions: ifMatch(et),
	})
	if err != nil {
		return seq, fmt.Errorf("set the sequence number of %s: %w", pb.URL(), err)
	}
	return seq, nil
}

// newSequence returns a random page blob sequence number: random rather
// than counted, so that a blob deleted and created again under its name
// never takes a number a late page write could still carry. Azure allows
// 0 to 2^63-1; Azurite keeps the number as a JavaScript number, exact
// only below 2^53, so it has 52 random bits.
func newSequence() int64 {
	var b [8]byte
	rand.Read(b[:])
	return int64(binary.LittleEndian.Uint64(b[:]) >> 12)
}

// onPages returns the condition of a page write: the active segment's
// sequence number as this writer set it.
func (w *writer) onPages() *pageblob.SequenceNumberAccessConditions {
	return &pageblob.SequenceNumberAccessConditions{IfSequenceNumberEqualTo: to.Ptr(w.seq)}
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

// base is the position of byte 0 of the active segment's blob.
func (w *writer) base() int64 { return segment.Base(w.active) }

func (w *writer) Size(ctx context.Context) (int64, error) {
	if w.closed {
		return 0, messagevault.ErrClosed
	}
	return w.base() + w.size, nil
}

func (w *writer) Grow(ctx context.Context, size int64) error {
	if w.closed {
		return messagevault.ErrClosed
	}
	if err := messagevault.CheckGrow(size); err != nil {
		return err
	}
	size -= w.base()
	if size <= w.size {
		return nil
	}
	// Azure takes no sequence number condition on a resize: check the
	// number, then resize under If-Match of the ETag read with it, so
	// that a writer which took over in between fails this one's resize.
	// A grow is rare (GrowStep), so its second request costs little.
	props, err := w.records.GetProperties(ctx, nil)
	if err != nil {
		return fmt.Errorf("resize %s to %d: %w", segment.Name(w.active), size, mapError(err))
	}
	if props.BlobSequenceNumber == nil || *props.BlobSequenceNumber != w.seq || props.ETag == nil {
		return fmt.Errorf("resize %s to %d: another writer set its sequence number since: %w", segment.Name(w.active), size, messagevault.ErrFenced)
	}
	if props.ContentLength != nil && *props.ContentLength >= size {
		w.size = *props.ContentLength
		return nil
	}
	if _, err := w.records.Resize(ctx, size, &pageblob.ResizeOptions{AccessConditions: ifMatch(*props.ETag)}); err != nil {
		return fmt.Errorf("resize %s to %d: %w", segment.Name(w.active), size, mapError(err))
	}
	w.size = size
	return nil
}

func (w *writer) WritePages(ctx context.Context, off int64, p []byte) error {
	if w.closed {
		return messagevault.ErrClosed
	}
	if off < w.base() {
		return fmt.Errorf("write at %d: before the active segment %s: %w", off, segment.Name(w.active), messagevault.ErrOutOfRange)
	}
	off -= w.base()
	if err := messagevault.CheckPages(off, len(p), w.size); err != nil {
		return err
	}
	// A Put Page the SDK sent more than once may have a first try still
	// travelling, which the sequence number does not stop: the next
	// group rewrites the last page, and that try could land after it.
	// So a page write that needed a retry sets a new number before it
	// returns.
	var n atomic.Int32
	if err := w.writePages(withTries(ctx, &n), off, p); err != nil {
		return err
	}
	if n.Load() > int32((len(p)+MaxPutPage-1)/MaxPutPage) {
		return w.refencePages(ctx)
	}
	return nil
}

// refencePages gives the active segment a new sequence number, while this
// writer still owns it (its number is one this writer set).
func (w *writer) refencePages(ctx context.Context) error {
	tried := []int64{w.seq}
	var err error
	for try := 0; try < takeOverTries; try++ {
		var props blob.GetPropertiesResponse
		props, err = w.records.GetProperties(ctx, nil)
		if err != nil {
			return fmt.Errorf("refence %s after a retried page write: %w", segment.Name(w.active), mapError(err))
		}
		if props.BlobSequenceNumber == nil || props.ETag == nil || !slices.Contains(tried, *props.BlobSequenceNumber) {
			return fmt.Errorf("refence %s after a retried page write: another writer set its sequence number since: %w", segment.Name(w.active), messagevault.ErrFenced)
		}
		if n := *props.BlobSequenceNumber; n != w.seq {
			// An earlier update of this loop landed although its
			// answer was an error (a retried request): it is ours.
			w.seq = n
			return nil
		}
		var seq int64
		seq, err = fencePages(ctx, w.records, *props.ETag)
		tried = append(tried, seq)
		if err == nil {
			w.seq = seq
			return nil
		}
		if !bloberror.HasCode(err, bloberror.ConditionNotMet) {
			break
		}
		// A late try landed between the two requests, or the update's
		// own first try did: read again.
	}
	// Not ErrFenced: the group fails with an unknown outcome, and the
	// next one recovers through Refence.
	return fmt.Errorf("refence %s after a retried page write: %w", segment.Name(w.active), err)
}

// writePages sends p at byte off of the active segment's blob: Put Pages
// of at most MaxPutPage bytes, several at once.
func (w *writer) writePages(ctx context.Context, off int64, p []byte) error {
	if len(p) <= MaxPutPage {
		return w.putPages(ctx, off, p)
	}
	// Several Put Pages at once: they touch different pages, and their
	// condition (the sequence number) does not change as they land.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
		slots = make(chan struct{}, putPagesInFlight)
	)
	for len(p) > 0 {
		n := min(len(p), MaxPutPage)
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func(off int64, chunk []byte) {
			defer wg.Done()
			defer func() { <-slots }()
			if err := w.putPages(ctx, off, chunk); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
				cancel(err)
			}
		}(off, p[:n])
		off += int64(n)
		p = p[n:]
	}
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		first = context.Cause(ctx)
	}
	return first
}

// putPages sends one Put Page of p (at most MaxPutPage bytes) at byte
// off of the active segment's blob.
func (w *writer) putPages(ctx context.Context, off int64, p []byte) error {
	_, err := w.records.UploadPages(ctx, streaming.NopCloser(bytes.NewReader(p)),
		blob.HTTPRange{Offset: off, Count: int64(len(p))},
		&pageblob.UploadPagesOptions{SequenceNumberAccessConditions: w.onPages()})
	if err != nil {
		return fmt.Errorf("put %d bytes of pages at %d of %s: %w", len(p), off, segment.Name(w.active), mapError(err))
	}
	return nil
}

// Roll creates the next segment's blob, or takes over one a roll that was
// never committed left behind (a late create of it then fails its
// condition), and empties it.
func (w *writer) Roll(ctx context.Context, start int64) error {
	if w.closed {
		return messagevault.ErrClosed
	}
	if start <= w.active {
		return fmt.Errorf("roll to a segment at %d: not past the active one at %d: %w", start, w.active, messagevault.ErrOutOfRange)
	}
	w.waitCommit()
	present, err := listSegmentBlobs(ctx, w.cc)
	if err != nil {
		return fmt.Errorf("roll: list segments: %w", mapError(err))
	}
	var existing *segBlob
	for i, b := range present {
		if b.start <= w.active {
			continue
		}
		if !w.mayRemove(b) {
			// Changed since this writer took over: by a newer writer, or
			// by a writer that was fenced and has not noticed. Only if
			// this one still owns the stream may it go.
			if _, err := w.position().GetProperties(ctx, &blob.GetPropertiesOptions{AccessConditions: ifMatch(w.posET)}); err != nil {
				return fmt.Errorf("roll: segment %s was written by %q since this writer took the stream over: %w", segment.Name(b.start), b.writer, mapError(err))
			}
			b.writer = w.id // owned: treat it as a leftover of this writer's
		}
		if b.start == start {
			existing = &present[i]
			continue
		}
		if err := w.removeSegment(ctx, b); err != nil {
			return fmt.Errorf("roll: %w", err)
		}
	}
	next := w.cc.NewPageBlobClient(segment.Name(start))
	var seq int64
	if existing != nil {
		// Left over by a roll that was never committed: take it over
		// under If-Match of its listed ETag, so that a late request of
		// that roll fails its condition, and empty it.
		md := map[string]*string{"writer": to.Ptr(w.id)}
		touched, err := next.SetMetadata(ctx, md, &blob.SetMetadataOptions{AccessConditions: ifMatch(existing.etag)})
		if err != nil {
			return fmt.Errorf("roll: take over %s: %w", segment.Name(start), mapError(err))
		}
		r, err := next.Resize(ctx, 0, &pageblob.ResizeOptions{AccessConditions: ifMatch(*touched.ETag)})
		if err != nil {
			return fmt.Errorf("roll: empty %s: %w", segment.Name(start), mapError(err))
		}
		if seq, err = fencePages(ctx, next, *r.ETag); err != nil {
			return fmt.Errorf("roll: %w", mapError(err))
		}
	} else {
		ifNone := &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfNoneMatch: to.Ptr(azcore.ETagAny)}}
		seq = newSequence()
		_, err := next.Create(ctx, 0, &pageblob.CreateOptions{AccessConditions: ifNone, SequenceNumber: &seq, Metadata: map[string]*string{"writer": to.Ptr(w.id)}})
		if err != nil && bloberror.HasCode(err, bloberror.BlobAlreadyExists) && w.createdBy(ctx, next, seq) {
			err = nil // this create's own first try landed, and the SDK retried it
		}
		if err != nil {
			// Created meanwhile (a late create of an earlier roll, or
			// a newer writer): the writer stops (fenced), and the vault
			// opens a new one, which removes or takes over the blob.
			return fmt.Errorf("roll: create %s: %w", segment.Name(start), mapError(err))
		}
	}
	w.records, w.seq, w.active, w.size = next, seq, start, 0
	return nil
}

// createdBy reports whether pb is the blob this writer just created with
// sequence number seq: its number and its writer metadata are this
// create's, and nothing has changed it since (a sequence number is
// random, so no other create gives the same one).
func (w *writer) createdBy(ctx context.Context, pb *pageblob.Client, seq int64) bool {
	props, err := pb.GetProperties(ctx, nil)
	if err != nil || props.BlobSequenceNumber == nil || *props.BlobSequenceNumber != seq {
		return false
	}
	id, _ := metadataValue(props.Metadata, "writer")
	return id == w.id && props.ContentLength != nil && *props.ContentLength == 0
}

// indexGrowStep is how far the time index blob grows at a time.
const indexGrowStep = 64 << 10

// WriteIndex writes the time index blob, creating or growing it as
// needed (never shrinking it). Its page writes are unconditional: the
// index holds hints that readers check, so a fenced writer's late write
// can leave entries that lookups do not use (they then bisect by records
// there), never a wrong answer.
func (w *writer) WriteIndex(ctx context.Context, off int64, p []byte) error {
	if w.closed {
		return messagevault.ErrClosed
	}
	if off < 0 || off%messagevault.PageSize != 0 || len(p)%messagevault.PageSize != 0 {
		return fmt.Errorf("write %d bytes of the time index at %d: not page-aligned: %w", len(p), off, messagevault.ErrOutOfRange)
	}
	idx := w.cc.NewPageBlobClient(IndexBlob)
	end := off + int64(len(p))
	if w.indexSize < end {
		// Read the size afresh before growing, so that an index another
		// writer grew meanwhile is never shrunk.
		props, err := idx.GetProperties(ctx, nil)
		switch {
		case bloberror.HasCode(err, bloberror.BlobNotFound):
			ifNone := &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfNoneMatch: to.Ptr(azcore.ETagAny)}}
			if _, err := idx.Create(ctx, 0, &pageblob.CreateOptions{AccessConditions: ifNone}); err != nil && !bloberror.HasCode(err, bloberror.BlobAlreadyExists) {
				return fmt.Errorf("create the time index: %w", mapError(err))
			}
			w.indexSize = 0
		case err != nil:
			return fmt.Errorf("read the time index's size: %w", mapError(err))
		default:
			w.indexSize = 0
			if props.ContentLength != nil {
				w.indexSize = *props.ContentLength
			}
		}
	}
	if end > w.indexSize {
		size := roundUp(end, indexGrowStep)
		if _, err := idx.Resize(ctx, size, nil); err != nil {
			w.indexSize = -1
			return fmt.Errorf("grow the time index: %w", mapError(err))
		}
		w.indexSize = size
	}
	if _, err := idx.UploadPages(ctx, streaming.NopCloser(bytes.NewReader(p)), blob.HTTPRange{Offset: off, Count: int64(len(p))}, nil); err != nil {
		w.indexSize = -1 // read the size again next time
		return fmt.Errorf("write the time index: %w", mapError(err))
	}
	return nil
}

// roundUp rounds n up to a multiple of step.
func roundUp(n, step int64) int64 { return (n + step - 1) / step * step }

// RequestFree reports which operations send no request, so that metrics
// do not count them as requests: Flush, and a WriteState of a state kept
// with the position (size bytes, at most InlineStateMax).
func (w *writer) RequestFree(op string, size int) bool {
	switch op {
	case "flush":
		return true
	case "write_state":
		return size > 0 && size <= InlineStateMax
	}
	return false
}

// Flush has nothing to do: Azure acknowledges a Put Page once it is
// durable.
func (w *writer) Flush(ctx context.Context) error {
	if w.closed {
		return messagevault.ErrClosed
	}
	return nil
}

// commitExtent records e in the position blob's metadata, under If-Match
// of this writer's last change.
func (w *writer) commitExtent(ctx context.Context, e messagevault.Extent) error {
	w.waitCommit()
	return w.sendExtent(ctx, e, extentMetadata(e, w.id, w.inline))
}

// sendExtent sends the commit of e, with md its metadata, and on success
// remembers the new ETag and e.
func (w *writer) sendExtent(ctx context.Context, e messagevault.Extent, md map[string]*string) error {
	resp, err := w.position().SetMetadata(ctx, md, &blob.SetMetadataOptions{AccessConditions: ifMatch(w.posET)})
	if err != nil {
		return mapError(err)
	}
	w.posET, w.ext = *resp.ETag, e
	return nil
}

// waitCommit waits for the position commit in flight, if any. Only the
// stream writer's goroutine calls it, the one that starts commits.
func (w *writer) waitCommit() {
	if w.committing != nil {
		<-w.committing
		w.committing = nil
	}
}

// activeExtent returns the extent that commits pos in the active segment,
// or an error if pos lies outside it.
func (w *writer) activeExtent(pos int64) (messagevault.Extent, error) {
	if pos < w.active || pos > w.base()+w.size {
		return messagevault.Extent{}, fmt.Errorf("commit position %d: the active segment holds %d to %d: %w", pos, w.active, w.base()+w.size, messagevault.ErrOutOfRange)
	}
	return messagevault.Extent{Position: pos, Start: w.ext.Start, Segment: w.active}, nil
}

func (w *writer) CommitPosition(ctx context.Context, pos int64) error {
	if w.closed {
		return messagevault.ErrClosed
	}
	w.waitCommit()
	e, err := w.activeExtent(pos)
	if err != nil {
		return err
	}
	if err := w.commitExtent(ctx, e); err != nil {
		return fmt.Errorf("commit position %d: %w", pos, err)
	}
	return nil
}

// StartCommit sends the commit of pos from a goroutine of its own, so
// that the stream writer can write the next group's pages meanwhile: a
// page write and a commit go to different blobs, under different
// conditions. The metadata (with the state slots kept inline) is taken
// before StartCommit returns.
func (w *writer) StartCommit(ctx context.Context, pos int64, done func(error)) {
	if w.closed {
		done(messagevault.ErrClosed)
		return
	}
	w.waitCommit()
	e, err := w.activeExtent(pos)
	if err != nil {
		done(err)
		return
	}
	md := extentMetadata(e, w.id, w.inline)
	committing := make(chan struct{})
	w.committing = committing
	go func() {
		err := w.sendExtent(ctx, e, md)
		if err != nil {
			err = fmt.Errorf("commit position %d: %w", pos, err)
		}
		close(committing)
		done(err)
	}()
}

func (w *writer) Trim(ctx context.Context, start int64) error {
	if w.closed {
		return messagevault.ErrClosed
	}
	w.waitCommit()
	if start <= w.ext.Start || start > w.ext.Segment || w.active != w.ext.Segment {
		return fmt.Errorf("trim to %d: the stored segments are %d to %d: %w", start, w.ext.Start, w.ext.Segment, messagevault.ErrOutOfRange)
	}
	present, err := listSegments(ctx, w.cc)
	if err != nil {
		return fmt.Errorf("trim: list segments: %w", mapError(err))
	}
	if !slices.Contains(present, start) {
		return fmt.Errorf("trim to %d: no segment starts there: %w", start, messagevault.ErrOutOfRange)
	}
	e := w.ext
	e.Start = start
	if err := w.commitExtent(ctx, e); err != nil {
		return fmt.Errorf("trim to %d: %w", start, err)
	}
	for _, s := range present {
		if s < start {
			if _, err := w.cc.NewBlobClient(segment.Name(s)).Delete(ctx, nil); err != nil && !bloberror.HasCode(err, bloberror.BlobNotFound) {
				return fmt.Errorf("trim: remove %s: %w", segment.Name(s), mapError(err))
			}
		}
	}
	return nil
}

func (w *writer) Close() error {
	if w.closed {
		return nil
	}
	w.waitCommit()
	w.closed = true
	if w.release != nil {
		w.release()
	}
	return nil
}
