package azure

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
)

// UsersBlob is the users file in SysContainer.
const UsersBlob = "auth.json"

// usersTimeout bounds each request of the users source.
const usersTimeout = 30 * time.Second

// UsersSource keeps the users file as the block blob mv-sys/auth.json. It
// implements auth.Source. Saves are conditional on the ETag last read, so
// two administrators editing at once cannot silently overwrite each other.
type UsersSource struct {
	s    *Storage
	blob *blockblob.Client

	mu   sync.Mutex
	etag azcore.ETag
}

// Users returns the users source of the account.
func (s *Storage) Users() *UsersSource {
	return &UsersSource{s: s, blob: s.svc.NewContainerClient(SysContainer).NewBlockBlobClient(UsersBlob)}
}

// Load downloads the users file; an absent one gives fs.ErrNotExist.
func (u *UsersSource) Load(ctx context.Context) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, usersTimeout)
	defer cancel()
	resp, err := u.blob.DownloadStream(ctx, nil)
	if err != nil {
		if bloberror.HasCode(err, bloberror.BlobNotFound, bloberror.ContainerNotFound) {
			u.mu.Lock()
			u.etag = ""
			u.mu.Unlock()
			return nil, fmt.Errorf("%s: %w", u, fs.ErrNotExist)
		}
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	u.mu.Lock()
	u.etag = *resp.ETag
	u.mu.Unlock()
	return data, nil
}

// Save uploads the users file, creating mv-sys if needed. It fails if the
// blob changed since it was last loaded or saved here.
func (u *UsersSource) Save(ctx context.Context, data []byte) error {
	ctx, cancel := context.WithTimeout(ctx, usersTimeout)
	defer cancel()
	if _, err := u.s.svc.NewContainerClient(SysContainer).Create(ctx, nil); err != nil && !bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
		return fmt.Errorf("create %s: %w", SysContainer, err)
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	cond := &blob.ModifiedAccessConditions{IfNoneMatch: to.Ptr(azcore.ETagAny)}
	if u.etag != "" {
		cond = &blob.ModifiedAccessConditions{IfMatch: to.Ptr(u.etag)}
	}
	resp, err := u.blob.Upload(ctx, nopCloser{bytes.NewReader(data)}, &blockblob.UploadOptions{
		AccessConditions: &blob.AccessConditions{ModifiedAccessConditions: cond},
		HTTPHeaders:      &blob.HTTPHeaders{BlobContentType: to.Ptr("application/json")},
	})
	if err != nil {
		if bloberror.HasCode(err, bloberror.ConditionNotMet, bloberror.BlobAlreadyExists) {
			return fmt.Errorf("%s changed meanwhile (someone else edited the users): try again: %w", u, err)
		}
		return err
	}
	u.etag = *resp.ETag
	return nil
}

// Changed reports whether the blob's ETag differs from the one last seen
// (a blob that vanished has changed).
func (u *UsersSource) Changed(ctx context.Context) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, usersTimeout)
	defer cancel()
	props, err := u.blob.GetProperties(ctx, nil)
	u.mu.Lock()
	defer u.mu.Unlock()
	if bloberror.HasCode(err, bloberror.BlobNotFound, bloberror.ContainerNotFound) {
		return u.etag != "", nil
	}
	if err != nil {
		return false, fmt.Errorf("check %s: %w", u, err)
	}
	return *props.ETag != u.etag, nil
}

// String names the blob in messages.
func (u *UsersSource) String() string {
	return fmt.Sprintf("%s/%s on %s", SysContainer, UsersBlob, u.s)
}

type nopCloser struct{ io.ReadSeeker }

func (nopCloser) Close() error { return nil }
