package azure_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/streaming"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/blob"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/pageblob"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/azure"
	"github.com/messagevault/messagevault/internal/azurite"
	"github.com/messagevault/messagevault/stream"
)

func open(t testing.TB, az *azurite.Azurite, cfg azure.Config) *azure.Storage {
	t.Helper()
	s, err := azure.Open(az.ConnectionString(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func writer(t testing.TB, s *azure.Storage, name string) *stream.Writer {
	t.Helper()
	ctx := context.Background()
	pw, err := s.OpenWriter(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	w, err := stream.OpenWriter(ctx, name, pw, stream.WriterConfig{GrowStep: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w
}

func batch(tag string, n int) []messagevault.Message {
	out := make([]messagevault.Message, n)
	for i := range out {
		out[i] = messagevault.NewMessage([]byte(tag), []byte(fmt.Sprintf("%s-%d-%s", tag, i, strings.Repeat("x", 300))), 0)
	}
	return out
}

func readAll(t *testing.T, pr messagevault.PageReader) []string {
	t.Helper()
	var out []string
	r := stream.NewReader("test", pr, stream.ReaderConfig{})
	for rec, err := range r.Records(context.Background(), 0, -1) {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(rec.Value[:strings.IndexByte(string(rec.Value), '-')+2]))
	}
	return out
}

// Two writers on one stream (two servers on one account): the one that
// opened last takes over; the stale one fails at once and nothing it sends
// lands.
func TestFencing(t *testing.T) {
	az := azurite.Start(t)
	ctx := context.Background()
	s1, s2 := open(t, az, azure.Config{}), open(t, az, azure.Config{})
	w1 := writer(t, s1, "fenced")
	if _, err := w1.Append(ctx, batch("a", 5)); err != nil {
		t.Fatal(err)
	}
	w2 := writer(t, s2, "fenced") // takes over
	// The stale writer learns it on its next append, before any damage.
	if _, err := w1.Append(ctx, batch("b", 5)); !errors.Is(err, messagevault.ErrFenced) {
		t.Fatalf("stale writer's append: %v; want ErrFenced", err)
	}
	if _, err := w1.Append(ctx, batch("b", 1)); !errors.Is(err, messagevault.ErrFenced) {
		t.Fatalf("stale writer appends again: %v; want ErrFenced (stopped for good)", err)
	}
	if _, err := w2.Append(ctx, batch("c", 5)); err != nil {
		t.Fatalf("new writer: %v", err)
	}
	pr, err := s1.OpenReader(ctx, "fenced")
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(readAll(t, pr), " ")
	if got != "a-0 a-1 a-2 a-3 a-4 c-0 c-1 c-2 c-3 c-4" {
		t.Fatalf("stream holds %s", got)
	}
}

// The stale writer may be in the middle of its own group: both orders of
// interleaving leave the new writer's acknowledged records intact.
func TestFencingInterleaved(t *testing.T) {
	az := azurite.Start(t)
	ctx := context.Background()
	s1, s2 := open(t, az, azure.Config{}), open(t, az, azure.Config{})
	w1 := writer(t, s1, "race")
	if _, err := w1.Append(ctx, batch("a", 3)); err != nil {
		t.Fatal(err)
	}
	w2 := writer(t, s2, "race")
	if _, err := w2.Append(ctx, batch("c", 3)); err != nil {
		t.Fatal(err)
	}
	if _, err := w1.Append(ctx, batch("b", 3)); !errors.Is(err, messagevault.ErrFenced) {
		t.Fatalf("stale writer: %v", err)
	}
	if _, err := w2.Append(ctx, batch("d", 3)); err != nil {
		t.Fatal(err)
	}
	pr, _ := s2.OpenReader(ctx, "race")
	if got := strings.Join(readAll(t, pr), " "); got != "a-0 a-1 a-2 c-0 c-1 c-2 d-0 d-1 d-2" {
		t.Fatalf("stream holds %s", got)
	}
}

func TestReadGrant(t *testing.T) {
	az := azurite.Start(t)
	ctx := context.Background()
	s := open(t, az, azure.Config{})
	w := writer(t, s, "granted")
	if _, err := w.Append(ctx, batch("g", 4)); err != nil {
		t.Fatal(err)
	}
	grant, err := s.ReadGrant(ctx, "granted", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// A SAS tied to the stream's grant policy (which gives read and list
	// only), so that it can be revoked.
	if strings.Contains(grant, azurite.Key) || !strings.Contains(grant, "sig=") || !strings.Contains(grant, "si=mv-grants-") || strings.Contains(grant, "sp=") {
		t.Fatalf("grant %s is not a SAS tied to a grant policy", grant)
	}
	acl, err := s.Service().NewContainerClient("mv-granted").GetAccessPolicy(ctx, nil)
	if err != nil || len(acl.SignedIdentifiers) != 1 || *acl.SignedIdentifiers[0].AccessPolicy.Permission != "rl" {
		t.Fatalf("the container's policies: %+v, %v", acl.SignedIdentifiers, err)
	}
	pr, err := azure.OpenGrant(ctx, grant, nil, azure.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(readAll(t, pr), " "); got != "g-0 g-1 g-2 g-3" {
		t.Fatalf("read with the grant: %s", got)
	}
	// The grant cannot write: storage refuses.
	base, query, _ := strings.Cut(grant, "?")
	pb, err := pageblob.NewClientWithNoCredential(base+"/"+azure.RecordsBlob+"?"+query, nil)
	if err != nil {
		t.Fatal(err)
	}
	page := bytes.Repeat([]byte{0xff}, messagevault.PageSize)
	_, err = pb.UploadPages(ctx, streaming.NopCloser(bytes.NewReader(page)), blob.HTTPRange{Offset: 0, Count: messagevault.PageSize}, nil)
	if err == nil || !bloberror.HasCode(err, bloberror.AuthorizationPermissionMismatch, bloberror.AuthorizationFailure, bloberror.AuthenticationFailed) {
		t.Fatalf("write with a read grant: %v; want a refusal", err)
	}
	if got := strings.Join(readAll(t, pr), " "); got != "g-0 g-1 g-2 g-3" {
		t.Fatalf("after the refused write: %s", got)
	}
}

// A grant that stops working (revoked here; expired alike on Azure: Azurite
// applies a stored policy's expiry, not the SAS's) is renewed by the
// reader without its caller noticing; a revoked grant without renewal
// fails at once.
func TestRevokedGrantIsRenewed(t *testing.T) {
	az := azurite.Start(t)
	ctx := context.Background()
	s := open(t, az, azure.Config{})
	w := writer(t, s, "renew")
	if _, err := w.Append(ctx, batch("r", 2)); err != nil {
		t.Fatal(err)
	}
	grant, err := s.ReadGrant(ctx, "renew", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var renewed atomic.Int32
	pr, err := azure.OpenGrant(ctx, grant, func(ctx context.Context) (string, error) {
		renewed.Add(1)
		return s.ReadGrant(ctx, "renew", time.Hour)
	}, azure.Config{})
	if err != nil {
		t.Fatal(err)
	}
	fixed, err := azure.OpenGrant(ctx, grant, nil, azure.Config{MaxRetries: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeGrants(ctx, "renew"); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Append(ctx, batch("r", 1)); err != nil {
		t.Fatal(err)
	}
	if got := len(readAll(t, pr)); got != 3 || renewed.Load() != 1 {
		t.Fatalf("read %d records with %d renewals; want 3 with 1", got, renewed.Load())
	}
	start := time.Now()
	if _, err := fixed.Position(ctx); err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("a revoked grant without renewal: %v after %v; want a refusal at once", err, time.Since(start))
	}
}

// flaky is an HTTP transport that answers 503 to every other request, as
// an overloaded storage front end does.
type flaky struct {
	n, failed atomic.Int64
}

func (f *flaky) Do(req *http.Request) (*http.Response, error) {
	if f.n.Add(1)%2 == 1 {
		f.failed.Add(1)
		return &http.Response{StatusCode: 503, Status: "503 Server Busy", Header: http.Header{"X-Ms-Error-Code": {"ServerBusy"}},
			Body: http.NoBody, Request: req}, nil
	}
	return http.DefaultClient.Do(req)
}

func TestTransientFaultsAreRetried(t *testing.T) {
	az := azurite.Start(t)
	ctx := context.Background()
	f := &flaky{}
	s := open(t, az, azure.Config{Transport: f, RetryDelay: time.Millisecond, MaxRetryDelay: 10 * time.Millisecond})
	w := writer(t, s, "flaky")
	for i := 0; i < 5; i++ {
		if _, err := w.Append(ctx, batch(fmt.Sprintf("f%d", i), 10)); err != nil {
			t.Fatalf("append %d through a flaky transport: %v", i, err)
		}
	}
	if f.failed.Load() < 5 {
		t.Fatalf("only %d faults injected", f.failed.Load())
	}
	pr, _ := open(t, az, azure.Config{}).OpenReader(ctx, "flaky")
	if n := len(readAll(t, pr)); n != 50 {
		t.Fatalf("stream holds %d messages, want 50", n)
	}
}
