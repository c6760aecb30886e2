package azure

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
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
	return readCursorBlob(ctx, b, name)
}

// WriteCursor uploads the cursor blob, under If-Match of etag if set.
func (s *Storage) WriteCursor(ctx context.Context, stream, name string, pos int64, etag string) (messagevault.Cursor, error) {
	b, err := s.cursorBlob(stream, name)
	if err != nil {
		return messagevault.Cursor{}, err
	}
	return writeCursorBlob(ctx, b, name, pos, etag)
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

// ReadCursorAt reads the cursor behind a cursor grant (a blob SAS URL
// from GET /streams/{stream}/cursors/{name}/grant), without the server.
func ReadCursorAt(ctx context.Context, grant string, cfg Config) (messagevault.Cursor, error) {
	b, name, err := cursorAt(grant, cfg)
	if err != nil {
		return messagevault.Cursor{}, err
	}
	return readCursorBlob(ctx, b, name)
}

// WriteCursorAt sets the cursor behind a cursor grant to pos, under
// If-Match of ifMatch if set (an ErrCursorChanged error if someone wrote
// it since), without the server. The position is not checked: a consumer
// commits a position it read (a message's Next).
func WriteCursorAt(ctx context.Context, grant string, pos int64, ifMatch string, cfg Config) (messagevault.Cursor, error) {
	b, name, err := cursorAt(grant, cfg)
	if err != nil {
		return messagevault.Cursor{}, err
	}
	return writeCursorBlob(ctx, b, name, pos, ifMatch)
}

// cursorIfMatch is the condition of a write under the cursor ETag etag.
func cursorIfMatch(etag string) *blob.AccessConditions { return ifMatch(azcore.ETag(`"` + etag + `"`)) }

// cursorAt opens the blob of a cursor grant and names its cursor.
func cursorAt(grant string, cfg Config) (*blockblob.Client, string, error) {
	u, err := url.Parse(grant)
	if err != nil {
		return nil, "", fmt.Errorf("cursor grant: not a URL: %w", err)
	}
	_, name, ok := strings.Cut(strings.TrimPrefix(u.Path, "/"), "/"+CursorPrefix)
	if !ok {
		return nil, "", fmt.Errorf("cursor grant: %s is not a cursor blob's URL", u.Redacted())
	}
	b, err := blockblob.NewClientWithNoCredential(grant, &blockblob.ClientOptions{ClientOptions: cfg.clientOptions()})
	if err != nil {
		return nil, "", fmt.Errorf("cursor grant: %w", err)
	}
	return b, name, nil
}

// readCursorBlob downloads cursor name's blob b: its position and ETag.
func readCursorBlob(ctx context.Context, b *blockblob.Client, name string) (messagevault.Cursor, error) {
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

// writeCursorBlob uploads cursor name's blob b at pos, under If-Match of
// etag if set: the position in the body and in the metadata (which
// listings read).
func writeCursorBlob(ctx context.Context, b *blockblob.Client, name string, pos int64, etag string) (messagevault.Cursor, error) {
	opts := &blockblob.UploadOptions{Metadata: map[string]*string{PositionKey: to.Ptr(strconv.FormatInt(pos, 10))}}
	if etag != "" {
		opts.AccessConditions = cursorIfMatch(etag)
	}
	data, _ := json.Marshal(struct{ Position int64 }{pos})
	resp, err := b.Upload(ctx, streaming.NopCloser(bytes.NewReader(data)), opts)
	if err != nil {
		return messagevault.Cursor{}, cursorError(name, err)
	}
	return messagevault.Cursor{Name: name, Position: pos, ETag: bareETag(*resp.ETag)}, nil
}
