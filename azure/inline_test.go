package azure_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/messagevault/messagevault/azure"
	"github.com/messagevault/messagevault/internal/azurite"
	"github.com/messagevault/messagevault/stream"
)

// counting forwards every request and counts the writes by kind.
type counting struct {
	mu     sync.Mutex
	counts map[string]int
}

func (c *counting) Do(req *http.Request) (*http.Response, error) {
	kind := ""
	switch {
	case req.Method == http.MethodPut && strings.Contains(req.URL.RawQuery, "comp=page") && strings.HasSuffix(req.URL.Path, ".b7"):
		kind = "put page" // of records (the time index's are hints, one per MiB)
	case req.Method == http.MethodPut && strings.Contains(req.URL.RawQuery, "comp=metadata") && strings.HasSuffix(req.URL.Path, "/"+azure.PositionBlob):
		kind = "commit"
	case req.Method == http.MethodPut && (strings.HasSuffix(req.URL.Path, "/"+azure.StateBlob0) || strings.HasSuffix(req.URL.Path, "/"+azure.StateBlob1)):
		kind = "state blob"
	}
	if kind != "" {
		c.mu.Lock()
		c.counts[kind]++
		c.mu.Unlock()
	}
	return http.DefaultClient.Do(req)
}

func (c *counting) take() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.counts
	c.counts = map[string]int{}
	return out
}

// TestSmallProducerTablesRideWithTheCommit: with producer sequences, a
// group costs a Put Page and a position commit, which carries the
// producer table in its metadata: no request of its own for the table.
// A new writer finds the table there, so a batch resent after a restart
// is still answered as a duplicate. A table too large for the metadata
// goes to its blob, and works the same.
func TestSmallProducerTablesRideWithTheCommit(t *testing.T) {
	az := azurite.Start(t)
	ctx := context.Background()
	c := &counting{counts: map[string]int{}}
	s := open(t, az, azure.Config{Transport: c})
	w := writer(t, s, "inline")
	c.take() // opening: the take-over
	for seq := uint64(1); seq <= 5; seq++ {
		if _, err := w.AppendWith(ctx, batch("a", 3), stream.AppendOptions{Producer: "p", Sequence: seq}); err != nil {
			t.Fatal(err)
		}
	}
	if got := c.take(); got["put page"] != 5 || got["commit"] != 5 || got["state blob"] != 0 {
		t.Fatalf("5 groups with sequences sent %v; want 5 Put Pages, 5 commits and no state blob", got)
	}
	w.Close()

	w = writer(t, s, "inline")
	res, err := w.AppendWith(ctx, batch("a", 3), stream.AppendOptions{Producer: "p", Sequence: 5})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Duplicate {
		t.Fatal("a batch resent after the writer reopened was appended again")
	}

	// Many producers with long names: a table over InlineStateMax.
	long := strings.Repeat("producer-", 6) // 54 bytes, and the number: ids take at most 64
	for i := range 80 {
		if _, err := w.AppendWith(ctx, batch("b", 1), stream.AppendOptions{Producer: fmt.Sprint(long, i), Sequence: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if got := c.take(); got["state blob"] == 0 {
		t.Fatalf("a table of 80 producers of %d-byte names never went to its blob: %v", len(long), got)
	}
	w.Close()
	w = writer(t, s, "inline")
	for _, p := range []struct {
		name string
		seq  uint64
	}{{fmt.Sprint(long, 79), 1}, {fmt.Sprint(long, 0), 1}, {"p", 5}} {
		res, err := w.AppendWith(ctx, batch("c", 1), stream.AppendOptions{Producer: p.name, Sequence: p.seq})
		if err != nil {
			t.Fatal(err)
		}
		if !res.Duplicate {
			t.Fatalf("producer %.30s... sequence %d, resent after a reopen, was appended again", p.name, p.seq)
		}
	}
}
