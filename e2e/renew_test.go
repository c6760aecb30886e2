package e2e_test

import (
	"context"
	"testing"
	"time"

	"github.com/messagevault/messagevault/azure"
	"github.com/messagevault/messagevault/client"
	"github.com/messagevault/messagevault/internal/azurite"
	"github.com/messagevault/messagevault/internal/mvtest"
)

// TestClientRenewsExpiredGrant: the server hands out grants valid for 2 s;
// a reader that outlives its grant renews it without the caller noticing.
func TestClientRenewsExpiredGrant(t *testing.T) {
	az := azurite.Start(t)
	s := startAzure(t, az, "--grant-ttl", "2s")
	ctx := context.Background()
	c := client.New(s.URL, admin, mvtest.AdminPassword, client.WithGrantReader(azure.GrantReader{}))
	if _, err := c.Publish(ctx, "renewed", []client.Message{{Value: []byte("one")}}); err != nil {
		t.Fatal(err)
	}
	r, err := c.Reader(ctx, "renewed")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if r.ViaServer {
		t.Fatal("the reader did not reach storage with the grant")
	}
	time.Sleep(3 * time.Second) // the grant has expired
	if _, err := c.Publish(ctx, "renewed", []client.Message{{Value: []byte("two")}}); err != nil {
		t.Fatal(err)
	}
	n := 0
	for m, err := range r.Messages(ctx, 0, -1) {
		if err != nil {
			t.Fatalf("read after the grant expired: %v", err)
		}
		n++
		_ = m
	}
	if n != 2 {
		t.Fatalf("read %d messages, want 2", n)
	}
}
