package azure

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"

	"github.com/messagevault/messagevault"
)

// CursorPrefix starts the names of a stream's cursor blobs: block blobs
// cursors/<name> in its container, the position in their body
// ({"Position": N}) and in their metadata (position), updated under
// If-Match of their ETags.
const CursorPrefix = "cursors/"

var _ messagevault.Cursors = (*Storage)(nil)

func (s *Storage) cursorBlob(stream, name string) (*blockblob.Client, error) {
	if err := messagevault.CheckStreamName(stream); err != nil {
		return nil, err
	}
	if err := messagevault.CheckCursorName(name); err != nil {
		return nil, err
	}
	return s.container(stream).NewBlockBlobClient(CursorPrefix + name), nil
}

// bareETag is an ETag without its quotes (Azure quotes them in answers'
// headers, not in listings).
func bareETag(et azcore.ETag) string { return strings.Trim(string(et), `"`) }

// cursorError maps the errors of a cursor blob's requests.
func cursorError(name string, err error) error {
	switch {
	case bloberror.HasCode(err, bloberror.ContainerNotFound):
		return fmt.Errorf("cursor %q: %w", name, messagevault.ErrStreamNotFound)
	case bloberror.HasCode(err, bloberror.BlobNotFound):
		return fmt.Errorf("cursor %q: %w", name, messagevault.ErrCursorNotFound)
	case bloberror.HasCode(err, bloberror.ConditionNotMet):
		return fmt.Errorf("cursor %q: %w", name, messagevault.ErrCursorChanged)
	}
	return fmt.Errorf("cursor %q: %w", name, err)
}

// ReadCursor downloads the cursor blob.
func (s *Storage) ReadCursor(ctx context.Context, stream, name string) (messagevault.Cursor, error) {
	b, err := s.cursorBlob(stream, name)
	if err != nil {
		return messagevault.Cursor{}, err
	}
	resp, err := b.DownloadStream(ctx, nil)
	if err != nil {
		return messagevault.Cursor{}, cursorError(name, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		return messagevault.Cursor{}, fmt.Errorf("cursor %q: %w", name, err)
	}
	var body struct{ Position int64 }
	if err := json.Unmarshal(data, &body); err != nil || resp.ETag == nil {
		return messagevault.Cursor{}, fmt.Errorf("cursor %q: not a cursor blob: %w", name, messagevault.ErrCorrupt)
	}
	return messagevault.Cursor{Name: name, Position: body.Position, ETag: bareETag(*resp.ETag)}, nil
}

// WriteCursor uploads the cursor blob, under If-Match of etag if set.
func (s *Storage) WriteCursor(ctx context.Context, stream, name string, pos int64, etag string) (messagevault.Cursor, error) {
	b, err := s.cursorBlob(stream, name)
	if err != nil {
		return messagevault.Cursor{}, err
	}
	opts := &blockblob.UploadOptions{Metadata: map[string]*string{PositionKey: to.Ptr(strconv.FormatInt(pos, 10))}}
	if etag != "" {
		opts.AccessConditions = ifMatch(azcore.ETag(`"` + etag + `"`))
	}
	data, _ := json.Marshal(struct{ Position int64 }{pos})
	resp, err := b.Upload(ctx, streaming.NopCloser(bytes.NewReader(data)), opts)
	if err != nil {
		return messagevault.Cursor{}, cursorError(name, err)
	}
	return messagevault.Cursor{Name: name, Position: pos, ETag: bareETag(*resp.ETag)}, nil
}

// DeleteCursor deletes the cursor blob.
func (s *Storage) DeleteCursor(ctx context.Context, stream, name string) error {
	b, err := s.cursorBlob(stream, name)
	if err != nil {
		return err
	}
	if _, err := b.Delete(ctx, nil); err != nil {
		return cursorError(name, err)
	}
	return nil
}

// ListCursors lists the cursor blobs with their metadata: one listing, no
// downloads.
func (s *Storage) ListCursors(ctx context.Context, stream string) ([]messagevault.Cursor, error) {
	if err := messagevault.CheckStreamName(stream); err != nil {
		return nil, err
	}
	var out []messagevault.Cursor
	pager := s.container(stream).NewListBlobsFlatPager(&container.ListBlobsFlatOptions{Prefix: to.Ptr(CursorPrefix), Include: container.ListBlobsInclude{Metadata: true}})
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			if bloberror.HasCode(err, bloberror.ContainerNotFound) {
				return nil, nil
			}
			return nil, fmt.Errorf("list cursors: %w", mapError(err))
		}
		for _, it := range page.Segment.BlobItems {
			if it.Name == nil || it.Properties == nil || it.Properties.ETag == nil {
				continue
			}
			name := strings.TrimPrefix(*it.Name, CursorPrefix)
			v, ok := metadataValue(it.Metadata, PositionKey)
			pos, err := strconv.ParseInt(v, 10, 64)
			if messagevault.CheckCursorName(name) != nil || !ok || err != nil {
				continue
			}
			out = append(out, messagevault.Cursor{Name: name, Position: pos, ETag: bareETag(*it.Properties.ETag)})
		}
	}
	slices.SortFunc(out, func(a, b messagevault.Cursor) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}
