package azure

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"

	"github.com/messagevault/messagevault"
)

// Read grants are container SAS URLs tied to a stored access policy of the
// stream's container: the policy (id "mv-grants-<random>") gives read and
// list, the SAS names it and carries its own expiry. Revoking the stream's
// grants deletes the policy, and every SAS that names it fails at once
// (Azure: within 30 s); the next grant creates a new policy. Other stored
// policies of the container are left alone.

// grantPolicyPrefix starts the ids of the policies grants are tied to.
const grantPolicyPrefix = "mv-grants-"

// sharedKey returns the account key credential of a connection string,
// or nil if it has none.
func sharedKey(cs string) *container.SharedKeyCredential {
	var name, key string
	for _, part := range strings.Split(cs, ";") {
		k, v, ok := strings.Cut(part, "=")
		switch {
		case !ok:
		case strings.EqualFold(k, "AccountName"):
			name = v
		case strings.EqualFold(k, "AccountKey"):
			key = v
		}
	}
	if name == "" || key == "" {
		return nil
	}
	cred, err := container.NewSharedKeyCredential(name, key)
	if err != nil {
		return nil
	}
	return cred
}

// ErrNoAccountKey reports grants asked of an account opened without an
// account key.
var ErrNoAccountKey = errors.New("read grants need the account key in the connection string, or Microsoft Entra ID (the account's URL instead of a connection string)")

// ReadGrant returns a container SAS URL for mv-<stream> with read and list
// permissions only, tied to the stream's grant policy (see RevokeGrants),
// valid from five minutes ago (clock skew) for ttl.
func (s *Storage) ReadGrant(ctx context.Context, stream string, ttl time.Duration) (string, error) {
	if err := messagevault.CheckStreamName(stream); err != nil {
		return "", fmt.Errorf("read grant: %w", err)
	}
	if s.cred != nil {
		return s.delegatedGrant(ctx, stream, ttl)
	}
	if s.key == nil {
		return "", fmt.Errorf("read grant for %q: %w", stream, ErrNoAccountKey)
	}
	id, err := s.grantPolicy(ctx, stream)
	if err != nil {
		return "", err
	}
	qp, err := sas.BlobSignatureValues{
		Version:       sas.Version,
		ContainerName: ContainerPrefix + stream,
		Identifier:    id,
		StartTime:     time.Now().Add(-5 * time.Minute).UTC(),
		ExpiryTime:    time.Now().Add(ttl).UTC(),
	}.SignWithSharedKey(s.key)
	if err != nil {
		return "", fmt.Errorf("read grant for %q: %w", stream, err)
	}
	return s.container(stream).URL() + "?" + qp.Encode(), nil
}

// grantPolicy returns the id of stream's grant policy, creating it if the
// container has none.
func (s *Storage) grantPolicy(ctx context.Context, stream string) (string, error) {
	return s.policy(ctx, stream, grantPolicyPrefix, "rl")
}

// policy returns the id of the stream's stored access policy whose id
// starts with prefix, creating it with permissions perm if the container
// has none.
func (s *Storage) policy(ctx context.Context, stream, prefix, perm string) (string, error) {
	c := s.container(stream)
	acl, err := c.GetAccessPolicy(ctx, nil)
	if err != nil {
		if bloberror.HasCode(err, bloberror.ContainerNotFound) {
			return "", fmt.Errorf("read grant for %q: %w", stream, messagevault.ErrStreamNotFound)
		}
		return "", fmt.Errorf("read grant for %q: read the container's policies: %w", stream, err)
	}
	for _, si := range acl.SignedIdentifiers {
		if si.ID != nil && strings.HasPrefix(*si.ID, prefix) {
			return *si.ID, nil
		}
	}
	var b [8]byte
	rand.Read(b[:])
	id := prefix + hex.EncodeToString(b[:])
	ids := append(acl.SignedIdentifiers, &container.SignedIdentifier{ID: &id, AccessPolicy: &container.AccessPolicy{Permission: &perm}})
	if _, err := c.SetAccessPolicy(ctx, &container.SetAccessPolicyOptions{ContainerACL: ids, Access: acl.BlobPublicAccess}); err != nil {
		return "", fmt.Errorf("read grant for %q: create its grant policy: %w", stream, err)
	}
	return id, nil
}

// RevokeGrants invalidates every read grant and cursor grant of stream
// handed out so far: its grant policies are deleted (new grants get new
// ones).
func (s *Storage) RevokeGrants(ctx context.Context, stream string) error {
	if err := messagevault.CheckStreamName(stream); err != nil {
		return fmt.Errorf("revoke grants: %w", err)
	}
	if s.cred != nil {
		return fmt.Errorf("revoke the grants of %q: %w", stream, errDelegatedRevoke)
	}
	c := s.container(stream)
	acl, err := c.GetAccessPolicy(ctx, nil)
	if err != nil {
		if bloberror.HasCode(err, bloberror.ContainerNotFound) {
			return fmt.Errorf("revoke the grants of %q: %w", stream, messagevault.ErrStreamNotFound)
		}
		return fmt.Errorf("revoke the grants of %q: %w", stream, err)
	}
	var keep []*container.SignedIdentifier
	for _, si := range acl.SignedIdentifiers {
		if si.ID == nil || !strings.HasPrefix(*si.ID, grantPolicyPrefix) && !strings.HasPrefix(*si.ID, cursorPolicyPrefix) {
			keep = append(keep, si)
		}
	}
	if _, err := c.SetAccessPolicy(ctx, &container.SetAccessPolicyOptions{ContainerACL: keep, Access: acl.BlobPublicAccess}); err != nil {
		return fmt.Errorf("revoke the grants of %q: %w", stream, err)
	}
	return nil
}

// cursorPolicyPrefix starts the id of a stream's cursor grant policy:
// read and write, which a cursor grant limits to its one blob.
const cursorPolicyPrefix = "mv-cursors-"

var _ messagevault.CursorGranter = (*Storage)(nil)

// CursorGrant returns a blob SAS URL of the stream's cursor blob
// cursors/<name> that can read and write that blob alone, tied to the
// stream's cursor grant policy (revoked with its read grants), valid for
// ttl: a consumer that reads straight from storage commits its cursor
// there too (WriteCursorAt), and the server stays out of its path.
func (s *Storage) CursorGrant(ctx context.Context, stream, name string, ttl time.Duration) (string, error) {
	if _, err := s.cursorBlob(stream, name); err != nil {
		return "", fmt.Errorf("cursor grant: %w", err)
	}
	values := sas.BlobSignatureValues{
		Version:       sas.Version,
		ContainerName: ContainerPrefix + stream,
		BlobName:      CursorPrefix + name,
		StartTime:     time.Now().Add(-5 * time.Minute).UTC(),
		ExpiryTime:    time.Now().Add(ttl).UTC(),
	}
	var qp sas.QueryParameters
	switch {
	case s.cred != nil:
		ttl = min(ttl, MaxDelegatedGrant)
		values.Protocol = sas.ProtocolHTTPS
		values.ExpiryTime = time.Now().Add(ttl).UTC().Truncate(time.Second)
		values.Permissions = (&sas.BlobPermissions{Read: true, Write: true}).String()
		key, err := s.udk.get(ctx, s.svc, values.ExpiryTime)
		if err != nil {
			return "", fmt.Errorf("cursor grant for %q: get a user delegation key: %w", stream, err)
		}
		qp, err = values.SignWithUserDelegation(key)
		if err != nil {
			return "", fmt.Errorf("cursor grant for %q: %w", stream, err)
		}
	case s.key != nil:
		id, err := s.policy(ctx, stream, cursorPolicyPrefix, "rw")
		if err != nil {
			return "", err
		}
		values.Identifier = id
		if qp, err = values.SignWithSharedKey(s.key); err != nil {
			return "", fmt.Errorf("cursor grant for %q: %w", stream, err)
		}
	default:
		return "", fmt.Errorf("cursor grant for %q: %w", stream, ErrNoAccountKey)
	}
	// The blob's URL with its name's "/" as is (the SDK escapes it).
	return s.container(stream).URL() + "/" + CursorPrefix + name + "?" + qp.Encode(), nil
}
