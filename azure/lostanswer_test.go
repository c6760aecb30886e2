package azure_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/azure"
	"github.com/messagevault/messagevault/internal/azurite"
)

// lossy forwards every request, but for the first position commit it sends
// after being armed it drops the answer: the commit lands, the writer
// hears an error, and the SDK retries it.
type lossy struct {
	armed atomic.Bool
	lost  atomic.Int32
}

func (l *lossy) Do(req *http.Request) (*http.Response, error) {
	resp, err := http.DefaultClient.Do(req)
	if err == nil && l.armed.Load() && req.Method == http.MethodPut && strings.Contains(req.URL.RawQuery, "comp=metadata") &&
		strings.HasSuffix(req.URL.Path, "/"+azure.PositionBlob) && l.armed.CompareAndSwap(true, false) {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		l.lost.Add(1)
		return nil, io.ErrUnexpectedEOF
	}
	return resp, err
}

// TestLostCommitAnswer: a position commit that landed but whose answer was
// lost is retried by the SDK, fails its condition (the first try changed
// the ETag), and the writer stops with ErrFenced: the append's outcome is
// unknown to its caller. A fresh writer then finds the landed commit and
// continues after it; nothing is damaged.
func TestLostCommitAnswer(t *testing.T) {
	az := azurite.Start(t)
	ctx := context.Background()
	l := &lossy{}
	s := open(t, az, azure.Config{Transport: l})
	w := writer(t, s, "lost")
	if _, err := w.Append(ctx, batch("a", 3)); err != nil {
		t.Fatal(err)
	}
	l.armed.Store(true)
	_, err := w.Append(ctx, batch("b", 3))
	if l.lost.Load() != 1 {
		t.Fatalf("no answer was lost (err %v)", err)
	}
	if !errors.Is(err, messagevault.ErrFenced) {
		t.Fatalf("append whose commit answer was lost: %v; want ErrFenced (outcome unknown)", err)
	}
	w.Close()
	// A fresh writer (the vault opens one) continues after what landed.
	w2 := writer(t, s, "lost")
	if _, err := w2.Append(ctx, batch("c", 3)); err != nil {
		t.Fatal(err)
	}
	pr, err := s.OpenReader(ctx, "lost")
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(readAll(t, pr), " ")
	if got != "a-0 a-1 a-2 b-0 b-1 b-2 c-0 c-1 c-2" {
		t.Fatalf("stream holds %s", got)
	}
}
