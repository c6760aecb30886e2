package azure_test

import (
	"context"
	"testing"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/azure"
	"github.com/messagevault/messagevault/internal/azurite"
	"github.com/messagevault/messagevault/storagetest"
)

func TestConformance(t *testing.T) {
	az := azurite.Start(t)
	storagetest.Run(t, func(t *testing.T) messagevault.Storage {
		// One emulator for all subtests, emptied before each: Azurite,
		// unlike Azure, lets a deleted container's name be used again at
		// once.
		s, err := azure.Open(az.ConnectionString(), azure.Config{})
		if err != nil {
			t.Fatal(err)
		}
		wipe(t, s)
		t.Cleanup(func() { s.Close() })
		return s
	})
}

// wipe deletes every container of the account, so a subtest starts empty.
func wipe(t *testing.T, s *azure.Storage) {
	t.Helper()
	ctx := context.Background()
	pager := s.Service().NewListContainersPager(nil)
	for pager.More() {
		page, err := pager.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range page.ContainerItems {
			if _, err := s.Service().DeleteContainer(ctx, *c.Name, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
}
