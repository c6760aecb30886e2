package azure

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"strings"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blockblob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/lease"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/pageblob"

	"github.com/messagevault/messagevault/cluster"
)

// Leader election blobs in SysContainer.
const (
	// LockBlob is the page blob whose lease the leader holds.
	LockBlob = "master.lock"
	// InfoBlob is the page blob whose metadata names the leader.
	InfoBlob = "master.info"
	// EndpointKey is the metadata key of the leader's internal URL.
	EndpointKey = "endpoint"
	// SecretBlob holds the cluster credential nodes forward writes with.
	SecretBlob = "cluster.key"
	// LeaseSeconds is the leader lease's duration.
	LeaseSeconds = 15
)

// LeaderLock is the leader lock of an account: a 15 s lease on
// mv-sys/master.lock, and the leader's endpoint in the metadata of
// mv-sys/master.info. It implements cluster.Lock.
type LeaderLock struct {
	s       *Storage
	lock    *pageblob.Client
	info    *pageblob.Client
	lease   *lease.BlobClient
	leaseID string
	written string // the endpoint last written to master.info
}

// Metadata keys of the heartbeat on LockBlob.
const (
	BeatKey         = "beat"
	BeatEndpointKey = "endpoint"
)

// LeaderLock returns the account's leader lock, with a lease id of its own
// (random): two nodes never share one, even with the same advertised URL,
// so Azure never lets both hold the lease. A node restarted after a crash
// takes its previous run's lease back with Break (see serve).
func (s *Storage) LeaderLock() (*LeaderLock, error) {
	cc := s.svc.NewContainerClient(SysContainer)
	l := &LeaderLock{s: s, lock: cc.NewPageBlobClient(LockBlob), info: cc.NewPageBlobClient(InfoBlob)}
	var id [16]byte
	rand.Read(id[:])
	h := hex.EncodeToString(id[:])
	leaseID := fmt.Sprintf("%s-%s-%s-%s-%s", h[0:8], h[8:12], h[12:16], h[16:20], h[20:32])
	lc, err := lease.NewBlobClient(l.lock, &lease.BlobClientOptions{LeaseID: &leaseID})
	if err != nil {
		return nil, fmt.Errorf("leader lease: %w", err)
	}
	l.lease, l.leaseID = lc, leaseID
	return l, nil
}

// ensure creates mv-sys and the lock blob if they are missing.
func (l *LeaderLock) ensure(ctx context.Context) error {
	if _, err := l.s.svc.NewContainerClient(SysContainer).Create(ctx, nil); err != nil && !bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
		return err
	}
	ifNone := &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfNoneMatch: to.Ptr(azcore.ETagAny)}}
	if _, err := l.lock.Create(ctx, 0, &pageblob.CreateOptions{AccessConditions: ifNone}); err != nil &&
		!bloberror.HasCode(err, bloberror.BlobAlreadyExists, bloberror.LeaseIDMissing) {
		return err
	}
	return nil
}

// Acquire tries to take the lease.
func (l *LeaderLock) Acquire(ctx context.Context) (bool, error) {
	_, err := l.lease.AcquireLease(ctx, LeaseSeconds, nil)
	if bloberror.HasCode(err, bloberror.BlobNotFound, bloberror.ContainerNotFound) {
		if err := l.ensure(ctx); err != nil {
			return false, fmt.Errorf("create %s/%s: %w", SysContainer, LockBlob, err)
		}
		_, err = l.lease.AcquireLease(ctx, LeaseSeconds, nil)
	}
	switch {
	case err == nil:
		l.written = "" // publish the endpoint again with the first beat
		return true, nil
	case bloberror.HasCode(err, bloberror.LeaseAlreadyPresent):
		return false, nil
	default:
		return false, fmt.Errorf("acquire the leader lease: %w", err)
	}
}

// Renew renews the lease.
func (l *LeaderLock) Renew(ctx context.Context) error {
	if _, err := l.lease.RenewLease(ctx, nil); err != nil {
		return fmt.Errorf("renew the leader lease: %w", leaseLost(err))
	}
	return nil
}

// Release releases the lease.
func (l *LeaderLock) Release(ctx context.Context) error {
	if _, err := l.lease.ReleaseLease(ctx, nil); err != nil {
		return fmt.Errorf("release the leader lease: %w", err)
	}
	return nil
}

// Break ends whoever's lease at once (a break period of 0), so that this
// node can acquire it: for a node taking back the lease of its own
// previous run, which died holding it. A lock blob without a lease is
// left as it is.
func (l *LeaderLock) Break(ctx context.Context) error {
	_, err := l.lease.BreakLease(ctx, &lease.BlobBreakOptions{BreakPeriod: to.Ptr(int32(0))})
	if err != nil && !bloberror.HasCode(err, bloberror.LeaseNotPresentWithLeaseOperation, bloberror.BlobNotFound, bloberror.ContainerNotFound) {
		return fmt.Errorf("break the leader lease: %w", err)
	}
	return nil
}

// BreakSilent breaks the lease of a leader found silent, if the election
// has not moved on since token (master.info's ETag) was read: it first
// claims the break by rewriting master.info under If-Match token, which
// only one of several followers can do, and which fails once a new leader
// has published itself.
func (l *LeaderLock) BreakSilent(ctx context.Context, token string) error {
	cond := &blob.ModifiedAccessConditions{IfMatch: to.Ptr(azcore.ETag(token))}
	if token == "" {
		cond = &blob.ModifiedAccessConditions{IfNoneMatch: to.Ptr(azcore.ETagAny)}
	}
	md := map[string]*string{EndpointKey: to.Ptr("")}
	var err error
	if token == "" {
		_, err = l.info.Create(ctx, 0, &pageblob.CreateOptions{Metadata: md, AccessConditions: &blob.AccessConditions{ModifiedAccessConditions: cond}})
	} else {
		_, err = l.info.SetMetadata(ctx, md, &blob.SetMetadataOptions{AccessConditions: &blob.AccessConditions{ModifiedAccessConditions: cond}})
	}
	if bloberror.HasCode(err, bloberror.ConditionNotMet, bloberror.BlobAlreadyExists) {
		return cluster.ErrElectionMoved
	}
	if err != nil {
		return fmt.Errorf("claim the break of the leader lease: %w", err)
	}
	l.written = ""
	return l.Break(ctx)
}

// leaseLost wraps the errors that mean another node holds the lease now.
func leaseLost(err error) error {
	if bloberror.HasCode(err, bloberror.LeaseIDMismatchWithBlobOperation, bloberror.LeaseIDMismatchWithLeaseOperation,
		bloberror.LeaseLost, bloberror.LeaseNotPresentWithBlobOperation, bloberror.LeaseNotPresentWithLeaseOperation,
		bloberror.LeaseIsBrokenAndCannotBeRenewed) {
		return fmt.Errorf("%w: %w", cluster.ErrLockLost, err)
	}
	return err
}

// Beat writes the heartbeat: the leader's endpoint and heartbeat number n
// in the metadata of the lock blob, under the lease, so that only the
// lease's holder can beat (a deposed leader's beat fails). The endpoint
// also goes to master.info, where the original and older nodes read it,
// when it changes.
func (l *LeaderLock) Beat(ctx context.Context, endpoint string, n uint64) error {
	md := map[string]*string{BeatEndpointKey: to.Ptr(endpoint), BeatKey: to.Ptr(fmt.Sprint(n))}
	_, err := l.lock.SetMetadata(ctx, md, &blob.SetMetadataOptions{
		AccessConditions: &blob.AccessConditions{LeaseAccessConditions: &blob.LeaseAccessConditions{LeaseID: &l.leaseID}},
	})
	if err != nil {
		return fmt.Errorf("write the leader heartbeat: %w", leaseLost(err))
	}
	if l.written != endpoint {
		if err := l.SetLeader(ctx, endpoint); err != nil {
			return err
		}
		l.written = endpoint
	}
	return nil
}

// LastBeat reads the heartbeat from the lock blob's metadata, with
// master.info's ETag as the election's token.
func (l *LeaderLock) LastBeat(ctx context.Context) (cluster.Beat, error) {
	var b cluster.Beat
	info, err := l.info.GetProperties(ctx, nil)
	switch {
	case err == nil:
		b.Token = string(*info.ETag)
	case !bloberror.HasCode(err, bloberror.BlobNotFound, bloberror.ContainerNotFound):
		return b, fmt.Errorf("read the leader endpoint: %w", err)
	}
	props, err := l.lock.GetProperties(ctx, nil)
	if bloberror.HasCode(err, bloberror.BlobNotFound, bloberror.ContainerNotFound) {
		return b, nil
	}
	if err != nil {
		return b, fmt.Errorf("read the leader heartbeat: %w", err)
	}
	b.Endpoint, _ = metadataValue(props.Metadata, BeatEndpointKey)
	v, _ := metadataValue(props.Metadata, BeatKey)
	fmt.Sscan(v, &b.N)
	if props.LeaseState != nil && *props.LeaseState != lease.StateTypeLeased {
		b.Endpoint = "" // nobody holds the lease: no leader to wait for
	}
	return b, nil
}

// Duration is the lease's duration.
func (l *LeaderLock) Duration() time.Duration { return LeaseSeconds * time.Second }

// SetLeader writes endpoint into mv-sys/master.info.
func (l *LeaderLock) SetLeader(ctx context.Context, endpoint string) error {
	md := map[string]*string{EndpointKey: to.Ptr(endpoint)}
	_, err := l.info.SetMetadata(ctx, md, nil)
	if bloberror.HasCode(err, bloberror.BlobNotFound, bloberror.ContainerNotFound) {
		if err := l.ensure(ctx); err != nil {
			return err
		}
		_, err = l.info.Create(ctx, 0, &pageblob.CreateOptions{Metadata: md})
	}
	if err != nil {
		return fmt.Errorf("publish the leader endpoint: %w", err)
	}
	return nil
}

// Leader reads the endpoint in mv-sys/master.info.
func (l *LeaderLock) Leader(ctx context.Context) (string, error) {
	props, err := l.info.GetProperties(ctx, nil)
	if bloberror.HasCode(err, bloberror.BlobNotFound, bloberror.ContainerNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read the leader endpoint: %w", err)
	}
	ep, _ := metadataValue(props.Metadata, EndpointKey)
	return ep, nil
}

// ClusterSecret returns the cluster credential kept in mv-sys/cluster.key,
// creating it from fresh if there is none yet. Every node of the account
// reads the same one; it is not the account key.
func (s *Storage) ClusterSecret(ctx context.Context, fresh string) (string, error) {
	bb := s.svc.NewContainerClient(SysContainer).NewBlockBlobClient(SecretBlob)
	read := func() (string, error) {
		resp, err := bb.DownloadStream(ctx, nil)
		if err != nil {
			if bloberror.HasCode(err, bloberror.BlobNotFound, bloberror.ContainerNotFound) {
				return "", fs.ErrNotExist
			}
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return strings.TrimSpace(string(b)), err
	}
	if v, err := read(); err == nil && v != "" {
		return v, nil
	}
	if _, err := s.svc.NewContainerClient(SysContainer).Create(ctx, nil); err != nil && !bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
		return "", fmt.Errorf("cluster secret: %w", err)
	}
	_, err := bb.Upload(ctx, nopCloser{strings.NewReader(fresh + "\n")}, &blockblob.UploadOptions{
		AccessConditions: &blob.AccessConditions{ModifiedAccessConditions: &blob.ModifiedAccessConditions{IfNoneMatch: to.Ptr(azcore.ETagAny)}},
	})
	if err != nil && !bloberror.HasCode(err, bloberror.BlobAlreadyExists, bloberror.ConditionNotMet) {
		return "", fmt.Errorf("cluster secret: %w", err)
	}
	v, err := read() // another node may have won the race: use its secret
	if err != nil {
		return "", fmt.Errorf("cluster secret: %w", err)
	}
	return v, nil
}
