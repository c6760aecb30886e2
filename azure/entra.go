package azure

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/sas"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/service"

	"github.com/messagevault/messagevault"
)

// Microsoft Entra ID: an account given by its blob endpoint URL, or by a
// connection string with no AccountKey and no SharedAccessSignature, is
// signed into with a token credential instead of the account key
// (Config.Credential, by default azidentity's DefaultAzureCredential:
// environment, workload identity, managed identity, then the developer
// tools' sign-ins). Its read grants are user delegation SAS URLs, signed
// by a key the account hands to that identity; see delegatedGrant.

// MaxDelegatedGrant is the longest a read grant signed with a user
// delegation key lasts: Azure issues those keys for at most 7 days from
// now; 5 minutes are kept back for the clocks' skew.
const MaxDelegatedGrant = 7*24*time.Hour - 5*time.Minute

// endpointOf returns the blob endpoint of an account spec that names no
// key: the spec itself when it is a URL, the BlobEndpoint of a connection
// string, or the endpoint its AccountName, DefaultEndpointsProtocol and
// EndpointSuffix make. ok is false for a connection string holding an
// AccountKey or a SharedAccessSignature (it signs requests itself).
func endpointOf(spec string) (endpoint string, ok bool) {
	if strings.Contains(spec, "://") && !strings.Contains(spec, ";") {
		return spec, true
	}
	fields := map[string]string{}
	for _, part := range strings.Split(spec, ";") {
		if k, v, found := strings.Cut(part, "="); found {
			fields[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
		}
	}
	if fields["accountkey"] != "" || fields["sharedaccesssignature"] != "" {
		return "", false
	}
	if ep := fields["blobendpoint"]; ep != "" {
		return ep, true
	}
	proto, suffix := fields["defaultendpointsprotocol"], fields["endpointsuffix"]
	if proto == "" {
		proto = "https"
	}
	if suffix == "" {
		suffix = "core.windows.net"
	}
	if fields["accountname"] == "" {
		return "", true // openEntra says what is missing
	}
	return fmt.Sprintf("%s://%s.blob.%s", proto, fields["accountname"], suffix), true
}

// openEntra connects to the account at a blob endpoint URL with a token
// credential.
func openEntra(endpoint string, cfg Config) (*Storage, error) {
	if endpoint == "" {
		return nil, errors.New("azure: the connection string has neither an AccountKey nor a BlobEndpoint or AccountName: give the account key, or the account's blob endpoint URL (https://ACCOUNT.blob.core.windows.net) to sign in with Microsoft Entra ID")
	}
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("azure: %q is not a blob endpoint URL (https://ACCOUNT.blob.core.windows.net)", endpoint)
	}
	if u.Scheme != "https" {
		return nil, fmt.Errorf("azure: Microsoft Entra ID sends its tokens only over HTTPS, and the blob endpoint %s is %s", u.Host, u.Scheme)
	}
	if u.RawQuery != "" {
		return nil, errors.New("azure: the blob endpoint URL has a query (a SAS?): give the bare account URL to sign in with Microsoft Entra ID, or an account connection string")
	}
	account := endpointAccount(u)
	if account == "" {
		return nil, fmt.Errorf("azure: no account name in the blob endpoint URL %s", u.Redacted())
	}
	cred := cfg.Credential
	if cred == nil {
		opts := &azidentity.DefaultAzureCredentialOptions{}
		if cfg.Transport != nil {
			opts.ClientOptions.Transport = cfg.Transport
		}
		if cred, err = azidentity.NewDefaultAzureCredential(opts); err != nil {
			return nil, fmt.Errorf("azure: Microsoft Entra ID credential: %w", err)
		}
	}
	svc, err := service.NewClient(strings.TrimRight(u.String(), "/")+"/", cred, &service.ClientOptions{ClientOptions: cfg.clientOptions()})
	if err != nil {
		return nil, fmt.Errorf("azure: %w", err)
	}
	return &Storage{svc: svc, account: account, cred: cred, writers: map[string]bool{}}, nil
}

// endpointAccount returns the account of a blob endpoint: the first label
// of its host (ACCOUNT.blob.core.windows.net), or the first path segment
// of an IP-style endpoint (an emulator's http://127.0.0.1:10000/ACCOUNT).
func endpointAccount(u *url.URL) string {
	host := u.Hostname()
	if first, _, dotted := strings.Cut(host, "."); dotted && !isIP(host) {
		return first
	}
	first, _, _ := strings.Cut(strings.TrimPrefix(u.Path, "/"), "/")
	return first
}

func isIP(host string) bool {
	return strings.Trim(host, "0123456789.") == "" || strings.Contains(host, ":")
}

// delegationKey is the user delegation key grants are signed with, asked
// for once and used until it no longer covers a new grant's lifetime.
type delegationKey struct {
	mu     sync.Mutex
	key    *service.UserDelegationCredential
	expiry time.Time
}

// get returns a key valid until at least until, asking the account for a
// new one (valid MaxDelegatedGrant) when the one it has is not.
func (d *delegationKey) get(ctx context.Context, svc *service.Client, until time.Time) (*service.UserDelegationCredential, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.key != nil && !d.expiry.Before(until) {
		return d.key, nil
	}
	now := time.Now().UTC()
	start, expiry := now.Add(-5*time.Minute), now.Add(MaxDelegatedGrant)
	key, err := svc.GetUserDelegationCredential(ctx, service.KeyInfo{
		Start:  to.Ptr(start.Format(sas.TimeFormat)),
		Expiry: to.Ptr(expiry.Format(sas.TimeFormat)),
	}, nil)
	if err != nil {
		return nil, err
	}
	d.key, d.expiry = key, expiry.Truncate(time.Second) // the key's times have whole seconds
	return key, nil
}

// delegatedGrant returns a read grant of an account signed into with
// Microsoft Entra ID: a user delegation SAS for the stream's container,
// read and list, HTTPS only, from five minutes ago until ttl from now
// (at most MaxDelegatedGrant). Grants are signed by a user delegation key
// valid MaxDelegatedGrant, asked for again when it no longer covers a new
// grant's lifetime; the grant's own expiry is what bounds it.
//
// Such grants cannot be revoked one stream at a time (a user delegation
// SAS cannot name a stored access policy): see RevokeGrants.
func (s *Storage) delegatedGrant(ctx context.Context, stream string, ttl time.Duration) (string, error) {
	c := s.container(stream)
	if _, err := c.GetProperties(ctx, nil); err != nil {
		if bloberror.HasCode(err, bloberror.ContainerNotFound) {
			return "", fmt.Errorf("read grant for %q: %w", stream, messagevault.ErrStreamNotFound)
		}
		return "", fmt.Errorf("read grant for %q: %w", stream, err)
	}
	ttl = min(ttl, MaxDelegatedGrant)
	now := time.Now().UTC()
	start, expiry := now.Add(-5*time.Minute), now.Add(ttl).Truncate(time.Second)
	key, err := s.udk.get(ctx, s.svc, expiry)
	if err != nil {
		return "", fmt.Errorf("read grant for %q: get a user delegation key (the server's identity needs a role with generateUserDelegationKey, such as Storage Blob Data Contributor or Storage Blob Delegator): %w", stream, err)
	}
	qp, err := sas.BlobSignatureValues{
		Version:       sas.Version,
		Protocol:      sas.ProtocolHTTPS,
		ContainerName: ContainerPrefix + stream,
		Permissions:   (&sas.ContainerPermissions{Read: true, List: true}).String(),
		StartTime:     start,
		ExpiryTime:    expiry,
	}.SignWithUserDelegation(key)
	if err != nil {
		return "", fmt.Errorf("read grant for %q: %w", stream, err)
	}
	return c.URL() + "?" + qp.Encode(), nil
}

// errDelegatedRevoke explains why grants signed with user delegation keys
// cannot be revoked per stream.
var errDelegatedRevoke = fmt.Errorf("the grants of an account signed into with Microsoft Entra ID are user delegation SAS, which cannot be revoked one stream at a time: revoke all of the account's user delegation keys (az storage account revoke-delegation-keys), which ends every such grant, or wait for them to expire: %w", messagevault.ErrNotRevocable)
