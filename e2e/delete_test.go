package e2e_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/azure"
	"github.com/messagevault/messagevault/formats"
	"github.com/messagevault/messagevault/internal/azurite"
	"github.com/messagevault/messagevault/internal/mvtest"
)

// TestDeleteStream: DELETE /streams/{s} takes the stream out of the
// listing and the reads at once and removes its data, for admins only;
// the name written again starts a new stream at 0; other streams are
// untouched. On the local backend and on Azurite.
func TestDeleteStream(t *testing.T) {
	t.Run("local", func(t *testing.T) {
		dir := t.TempDir()
		s := mvtest.Start(t, dir, nil)
		deleteSuite(t, s, func() bool {
			_, err := os.Stat(filepath.Join(dir, "doomed"))
			left, _ := filepath.Glob(filepath.Join(dir, ".deleted-*"))
			return os.IsNotExist(err) && len(left) == 0
		}, readDirect)
	})
	t.Run("azure", func(t *testing.T) {
		az := azurite.Start(t)
		s := startAzure(t, az)
		st, err := azure.Open(az.ConnectionString(), azure.Config{})
		if err != nil {
			t.Fatal(err)
		}
		deleteSuite(t, s, func() bool {
			names, err := st.Streams(context.Background())
			_, rerr := st.OpenReader(context.Background(), "doomed")
			return err == nil && !slices.Contains(names, "doomed") && errors.Is(rerr, messagevault.ErrStreamNotFound)
		}, readGrant)
	})
}

func deleteSuite(t *testing.T, s *mvtest.Server, gone func() bool, read func(*testing.T, *mvtest.Server, string) []formats.Record) {
	publish(t, s, "doomed", []messagevault.Message{msg("k", "one"), msg("k", "two")})
	publish(t, s, "kept", []messagevault.Message{msg("k", "stays")})
	status, body, _ := do(t, s.Request("POST", "/users", admin, adminPass, []byte(`{"Name":"writer","Password":"writer-pw-123","Claims":["doomed:write","doomed:read"]}`), "application/json"))
	if status != http.StatusOK && status != http.StatusCreated {
		t.Fatalf("add user: %d %s", status, body)
	}

	// Only admins delete.
	status, body, _ = do(t, s.Request("DELETE", "/streams/doomed", "writer", "writer-pw-123", nil, ""))
	if status != http.StatusForbidden || !strings.Contains(string(body), "all:write") {
		t.Fatalf("delete by a writer: %d %s", status, body)
	}
	status, body, _ = do(t, s.Request("DELETE", "/streams/doomed", admin, adminPass, nil, ""))
	var ans struct {
		Stream  string
		Deleted bool
	}
	mustDecode(t, body, &ans)
	if status != http.StatusOK || ans.Stream != "doomed" || !ans.Deleted {
		t.Fatalf("delete: %d %s", status, body)
	}
	// At once: out of the listing and the reads.
	status, body, _ = do(t, s.Request("GET", "/streams", admin, adminPass, nil, ""))
	if status != http.StatusOK || strings.Contains(string(body), `"doomed"`) || !strings.Contains(string(body), `"kept"`) {
		t.Fatalf("streams after the delete: %d %s", status, body)
	}
	if status, body, _ = do(t, s.Request("GET", "/streams/doomed/messages?from=0", admin, adminPass, nil, "")); status != http.StatusNotFound {
		t.Fatalf("read of the deleted stream: %d %s", status, body)
	}
	if status, body, _ = do(t, s.Request("DELETE", "/streams/doomed", admin, adminPass, nil, "")); status != http.StatusNotFound {
		t.Fatalf("delete again: %d %s", status, body)
	}
	// Its data is gone within seconds.
	deadline := time.Now().Add(10 * time.Second)
	for !gone() {
		if time.Now().After(deadline) {
			t.Fatal("the deleted stream's data is still there after 10 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Written again, it is a new stream.
	if a := publish(t, s, "doomed", []messagevault.Message{msg("k", "new")}); a.Offsets[0] != 0 {
		t.Fatalf("the stream written again starts at %d, want 0", a.Offsets[0])
	}
	if got := values(read(t, s, "doomed")); len(got) != 1 || got[0] != "k=new" {
		t.Fatalf("the stream written again holds %v", got)
	}
	if got := values(read(t, s, "kept")); len(got) != 1 || got[0] != "k=stays" {
		t.Fatalf("the other stream holds %v", got)
	}
	// The CLI: --yes is required.
	publish(t, s, "scratch", []messagevault.Message{msg("k", "x")})
	if out, errs, code := cli(t, s, "", "streams", "delete", "scratch"); code != 2 || !strings.Contains(errs, "--yes") {
		t.Fatalf("streams delete without --yes: exit %d\n%s%s", code, out, errs)
	}
	if got := values(read(t, s, "scratch")); len(got) != 1 {
		t.Fatalf("a delete without --yes changed the stream: %v", got)
	}
	if out := mustCLI(t, s, "", "streams", "delete", "scratch", "--yes"); !strings.Contains(out, "deleted scratch") {
		t.Fatalf("streams delete: %q", out)
	}
	if out := mustCLI(t, s, "", "streams"); strings.Contains(out, "scratch") {
		t.Fatalf("streams after the CLI delete:\n%s", out)
	}
}

// TestPublishWhileAzureRemovesTheContainer: Azure refuses to create a
// container under a name deleted moments ago (409 ContainerBeingDeleted;
// Azurite does not, so the fault proxy answers as Azure would). A publish
// then gets 409 being-deleted with Retry-After and a message that says so,
// and succeeds once the name is free.
func TestPublishWhileAzureRemovesTheContainer(t *testing.T) {
	az := azurite.Start(t)
	p := startProxy(t, "http://127.0.0.1:"+az.Port)
	cs := strings.Replace(az.ConnectionString(), "http://127.0.0.1:"+az.Port, p.URL, 1)
	s := mvtest.Start(t, t.TempDir(), nil, "--azure="+cs)
	publish(t, s, "gone", []messagevault.Message{msg("k", "one")})
	if status, body, _ := do(t, s.Request("DELETE", "/streams/gone", admin, adminPass, nil, "")); status != http.StatusOK {
		t.Fatalf("delete: %d %s", status, body)
	}
	p.Answer(func(r *http.Request) bool {
		return r.Method == http.MethodPut && r.URL.Path == "/"+azurite.Account+"/mv-gone" && r.URL.Query().Get("restype") == "container"
	}, http.StatusConflict, "ContainerBeingDeleted")
	status, body, h := do(t, s.Request("POST", "/streams/gone", admin, adminPass, transfer(t, []messagevault.Message{msg("k", "two")}), ""))
	var e apiError
	mustDecode(t, body, &e)
	if status != http.StatusConflict || e.Type != "being-deleted" || !strings.Contains(e.Error, "deleted moments ago") || h.Get("Retry-After") == "" {
		t.Fatalf("publish while the container is being removed: %d %s (Retry-After %q)", status, body, h.Get("Retry-After"))
	}
	p.Answer(nil, 0, "")
	if a := publish(t, s, "gone", []messagevault.Message{msg("k", "three")}); a.Offsets[0] != 0 {
		t.Fatalf("the stream written again starts at %d, want 0", a.Offsets[0])
	}
}
