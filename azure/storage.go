package azure

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/service"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/segment"
)

// Names of the v1 layout.
const (
	// ContainerPrefix starts every stream's container name.
	ContainerPrefix = "mv-"
	// SysContainer holds the users file and the leader lease.
	SysContainer = "mv-sys"
	// RecordsBlob is the records page blob of a stream's first segment;
	// later segments are named by their start (package segment).
	RecordsBlob = "000000000000.b7"
	// PositionBlob holds the committed length in its metadata.
	PositionBlob = "position.c7"
	// IndexBlob is a stream's time index, a page blob (package stream
	// keeps it): hints that readers check before they use one.
	IndexBlob = "time.ti"
	// PositionKey is the metadata key of the committed length.
	PositionKey = "position"
	// SegmentKey and StartKey are the metadata keys of the active
	// segment's start and the first stored position (absent: 0).
	SegmentKey, StartKey = "segment", "start"
	// StateBlob0 and StateBlob1 are the writer's two state slots (block
	// blobs holding its producer table, written alternately). Readers of
	// the v1 layout ignore them.
	StateBlob0, StateBlob1 = "producers.0", "producers.1"
	// StateKey0 and StateKey1 are metadata keys of the position blob that
	// hold a state slot's contents (base64) instead of its blob, when
	// they are at most InlineStateMax bytes: such a state costs no
	// request of its own, and is committed with the position, in the
	// same request. A slot with no key is in its blob.
	StateKey0, StateKey1 = "producers0", "producers1"
	// InlineStateMax is the largest state kept in the position blob's
	// metadata: Azure caps names and values at 8 KiB in all, and both
	// slots may be there at once (3,736 base64 characters each).
	InlineStateMax = 2800
	// MaxPutPage is the largest Put Page request Azure accepts.
	MaxPutPage = 4 << 20
)

// Retry defaults of the SDK's retry policy.
const (
	DefaultMaxRetries    = 5
	DefaultTryTimeout    = 30 * time.Second
	DefaultRetryDelay    = 100 * time.Millisecond
	DefaultMaxRetryDelay = 3 * time.Second
)

// Config tunes a Storage. Zero fields take the defaults.
type Config struct {
	// MaxRetries of a failing request. Default DefaultMaxRetries.
	MaxRetries int32
	// TryTimeout bounds one try of a request. Default DefaultTryTimeout.
	TryTimeout time.Duration
	// RetryDelay is the first backoff; it doubles up to MaxRetryDelay.
	RetryDelay    time.Duration
	MaxRetryDelay time.Duration
	// Transport replaces the HTTP client (tests inject faults here).
	Transport policy.Transporter
	// Credential signs the requests to an account given without a key
	// (Microsoft Entra ID). Default: azidentity's DefaultAzureCredential.
	Credential azcore.TokenCredential
}

func (c Config) clientOptions() policy.ClientOptions {
	o := policy.ClientOptions{
		Retry: policy.RetryOptions{
			MaxRetries:    c.MaxRetries,
			TryTimeout:    c.TryTimeout,
			RetryDelay:    c.RetryDelay,
			MaxRetryDelay: c.MaxRetryDelay,
		},
		Telemetry:        policy.TelemetryOptions{Disabled: true},
		PerRetryPolicies: []policy.Policy{countTries{}},
	}
	if o.Retry.MaxRetries == 0 {
		o.Retry.MaxRetries = DefaultMaxRetries
	}
	if o.Retry.TryTimeout == 0 {
		o.Retry.TryTimeout = DefaultTryTimeout
	}
	if o.Retry.RetryDelay == 0 {
		o.Retry.RetryDelay = DefaultRetryDelay
	}
	if o.Retry.MaxRetryDelay == 0 {
		o.Retry.MaxRetryDelay = DefaultMaxRetryDelay
	}
	if c.Transport != nil {
		o.Transport = c.Transport
	}
	return o
}

// tries counts the tries of one request, when its context carries a
// counter (withTries): the writer learns that a Put Page was sent more
// than once.
type tries struct{}

// withTries returns ctx with a counter of the tries of the requests sent
// with it.
func withTries(ctx context.Context, n *atomic.Int32) context.Context {
	return context.WithValue(ctx, tries{}, n)
}

// countTries is the retry policy's per-try step that counts the tries.
type countTries struct{}

func (countTries) Do(req *policy.Request) (*http.Response, error) {
	if n, ok := req.Raw().Context().Value(tries{}).(*atomic.Int32); ok {
		n.Add(1)
	}
	return req.Next()
}

var (
	_ messagevault.Storage = (*Storage)(nil)
	_ messagevault.Granter = (*Storage)(nil)
	_ messagevault.Deleter = (*Storage)(nil)
)

// Storage is one Azure storage account.
type Storage struct {
	svc     *service.Client
	account string
	key     *container.SharedKeyCredential // the account key of the connection string, or nil
	cred    azcore.TokenCredential         // Microsoft Entra ID's credential, or nil
	udk     delegationKey                  // the user delegation key grants are signed with (Entra ID)
	chains  segment.Chains                 // the streams' segment chains, shared by the readers it opens

	mu      sync.Mutex
	writers map[string]bool
	closed  bool
}

// Open connects to an account given by spec, one of:
//
//   - a connection string with an AccountKey (the Azure portal's, or
//     Azurite's): requests are signed with the account key, and read
//     grants are service SAS URLs tied to a stored access policy;
//   - the account's blob endpoint URL (https://ACCOUNT.blob.core.windows.net),
//     or a connection string without AccountKey or SharedAccessSignature:
//     requests carry Microsoft Entra ID tokens from cfg.Credential (by
//     default azidentity's DefaultAzureCredential, managed identity
//     included), and read grants are user delegation SAS URLs;
//   - a connection string with a SharedAccessSignature: requests carry
//     that SAS, and no read grants can be handed out.
//
// It checks nothing on the network: the first request does.
func Open(spec string, cfg Config) (*Storage, error) {
	if endpoint, ok := endpointOf(spec); ok {
		return openEntra(endpoint, cfg)
	}
	connectionString := spec
	svc, err := service.NewClientFromConnectionString(connectionString, &service.ClientOptions{ClientOptions: cfg.clientOptions()})
	if err != nil {
		return nil, fmt.Errorf("azure: connection string: %w", err)
	}
	return &Storage{svc: svc, account: accountName(connectionString), key: sharedKey(connectionString), writers: map[string]bool{}}, nil
}

// accountName returns the AccountName of a connection string, for messages.
func accountName(cs string) string {
	for _, part := range strings.Split(cs, ";") {
		if k, v, ok := strings.Cut(part, "="); ok && strings.EqualFold(k, "AccountName") {
			return v
		}
	}
	return "?"
}

// String names the account in messages.
func (s *Storage) String() string { return "azure account " + s.account }

// Service returns the SDK's service client, for packages that keep their
// own blobs in the account (the leader lease).
func (s *Storage) Service() *service.Client { return s.svc }

func (s *Storage) container(stream string) *container.Client {
	return s.svc.NewContainerClient(ContainerPrefix + stream)
}

// OpenWriter opens stream for writing, creating its container and blobs if
// needed, and takes it over from any earlier writer (fencing it).
func (s *Storage) OpenWriter(ctx context.Context, stream string) (messagevault.PageWriter, error) {
	if err := messagevault.CheckStreamName(stream); err != nil {
		return nil, fmt.Errorf("open writer: %w", err)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, fmt.Errorf("open writer %q: %w", stream, messagevault.ErrClosed)
	}
	if s.writers[stream] {
		s.mu.Unlock()
		return nil, fmt.Errorf("open writer %q: a writer is already open: %w", stream, messagevault.ErrLocked)
	}
	s.writers[stream] = true
	s.mu.Unlock()
	w, err := openWriter(ctx, s.container(stream))
	if err != nil {
		s.release(stream)
		return nil, fmt.Errorf("open writer %q on %s: %w", stream, s, err)
	}
	w.release = func() { s.release(stream) }
	return w, nil
}

func (s *Storage) release(stream string) {
	s.mu.Lock()
	delete(s.writers, stream)
	s.mu.Unlock()
}

// OpenReader opens stream for reading with the account's key.
func (s *Storage) OpenReader(ctx context.Context, stream string) (messagevault.PageReader, error) {
	if err := messagevault.CheckStreamName(stream); err != nil {
		return nil, fmt.Errorf("open reader: %w", err)
	}
	r := segment.NewSharedReader(newReader(s.container(stream), nil), &s.chains, stream)
	if _, err := r.Position(ctx); err != nil {
		return nil, fmt.Errorf("open reader %q: %w", stream, err)
	}
	return r, nil
}

// Streams lists the streams of the account: its containers named
// mv-<stream>, but mv-sys.
func (s *Storage) Streams(ctx context.Context) ([]string, error) {
	var names []string
	pager := s.svc.NewListContainersPager(&service.ListContainersOptions{Prefix: to.Ptr(ContainerPrefix)})
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("list streams on %s: %w", s, mapError(err))
		}
		for _, c := range page.ContainerItems {
			if c.Name == nil {
				continue
			}
			name := strings.TrimPrefix(*c.Name, ContainerPrefix)
			if n, err := messagevault.NormalizeStreamName(name); err == nil && n == name {
				names = append(names, name)
			}
		}
	}
	slices.Sort(names)
	return names, nil
}

// DeleteStream deletes the stream's container mv-<stream>, with its blobs
// and grant policy: Azure removes it from listings and refuses requests to
// it at once, and frees it in the background. A new container under the
// same name is refused meanwhile (see messagevault.ErrStreamBeingDeleted).
func (s *Storage) DeleteStream(ctx context.Context, stream string) error {
	if err := messagevault.CheckStreamName(stream); err != nil {
		return fmt.Errorf("delete: %w", err)
	}
	s.mu.Lock()
	closed, writing := s.closed, s.writers[stream]
	s.mu.Unlock()
	switch {
	case closed:
		return fmt.Errorf("delete %q: %w", stream, messagevault.ErrClosed)
	case writing:
		return fmt.Errorf("delete %q: its writer is open: %w", stream, messagevault.ErrLocked)
	}
	s.chains.Forget(stream)
	if _, err := s.container(stream).Delete(ctx, nil); err != nil {
		if bloberror.HasCode(err, bloberror.ContainerNotFound, bloberror.ContainerBeingDeleted) {
			return fmt.Errorf("delete %q: %w", stream, messagevault.ErrStreamNotFound)
		}
		return fmt.Errorf("delete %q on %s: %w", stream, s, err)
	}
	return nil
}

// Close marks the storage closed. Writers must be closed first.
func (s *Storage) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if n := len(s.writers); n > 0 {
		return fmt.Errorf("close %s: %d writers still open", s, n)
	}
	return nil
}

// mapError turns the SDK's errors into the package's sentinels where one
// applies, keeping the original for the message.
func mapError(err error) error {
	switch {
	case err == nil:
		return nil
	case bloberror.HasCode(err, bloberror.ConditionNotMet, bloberror.BlobAlreadyExists):
		return fmt.Errorf("%w: %w", messagevault.ErrFenced, err)
	case bloberror.HasCode(err, bloberror.ContainerNotFound, bloberror.BlobNotFound):
		return fmt.Errorf("%w: %w", messagevault.ErrStreamNotFound, err)
	}
	var re *azcore.ResponseError
	if errors.As(err, &re) && re.StatusCode == http.StatusPreconditionFailed {
		return fmt.Errorf("%w: %w", messagevault.ErrFenced, err)
	}
	return err
}

// metadataValue reads a metadata key case-insensitively (the SDK hands
// keys back in canonical header case).
func metadataValue(md map[string]*string, key string) (string, bool) {
	for k, v := range md {
		if strings.EqualFold(k, key) && v != nil {
			return *v, true
		}
	}
	return "", false
}

// stateKey returns the metadata key of state slot 0 or 1.
func stateKey(slot int) string {
	if slot == 1 {
		return StateKey1
	}
	return StateKey0
}

// inlineState returns the state slots kept in md (the position blob's
// metadata), base64, "" for a slot kept in its blob.
func inlineState(md map[string]*string) [2]string {
	var inline [2]string
	for slot := range inline {
		inline[slot], _ = metadataValue(md, stateKey(slot))
	}
	return inline
}

// parseExtent reads the committed position record from the position
// blob's metadata: position (as in v1), and segment and start (absent in
// v1: 0).
func parseExtent(md map[string]*string) (messagevault.Extent, error) {
	var e messagevault.Extent
	for _, f := range []struct {
		key      string
		to       *int64
		required bool
	}{{PositionKey, &e.Position, true}, {SegmentKey, &e.Segment, false}, {StartKey, &e.Start, false}} {
		v, ok := metadataValue(md, f.key)
		if !ok {
			if f.required {
				return e, fmt.Errorf("%s has no %q metadata: %w", PositionBlob, f.key, messagevault.ErrCorrupt)
			}
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return e, fmt.Errorf("%s metadata %s=%q is not a position: %w", PositionBlob, f.key, v, messagevault.ErrCorrupt)
		}
		*f.to = n
	}
	if e.Segment < e.Start || e.Segment > e.Position {
		return e, fmt.Errorf("%s: position %d, start %d, active segment %d do not fit: %w", PositionBlob, e.Position, e.Start, e.Segment, messagevault.ErrCorrupt)
	}
	return e, nil
}

// extentMetadata is the position blob's metadata for e, written by writer
// id. A stream that never rolled or trimmed carries the v1 key alone.
func extentMetadata(e messagevault.Extent, id string, inline [2]string) map[string]*string {
	md := map[string]*string{PositionKey: to.Ptr(strconv.FormatInt(e.Position, 10)), "writer": to.Ptr(id)}
	for slot, v := range inline {
		if v != "" {
			md[stateKey(slot)] = to.Ptr(v)
		}
	}
	if e.Segment > 0 {
		md[SegmentKey] = to.Ptr(strconv.FormatInt(e.Segment, 10))
	}
	if e.Start > 0 {
		md[StartKey] = to.Ptr(strconv.FormatInt(e.Start, 10))
	}
	return md
}
