package e2e_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/internal/mvtest"
)

// artifactDir is where browser screenshots go: $MV_ARTIFACTS, or
// artifacts/ at the repository root.
func artifactDir(t *testing.T) string {
	if d := os.Getenv("MV_ARTIFACTS"); d != "" {
		return d
	}
	_, here, _, _ := runtime.Caller(0)
	d := filepath.Join(filepath.Dir(here), "..", "artifacts")
	os.MkdirAll(d, 0o755)
	return d
}

func chromium(t *testing.T) string {
	for _, p := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	t.Fatal("no Chromium for the browser test: apt-get install chromium (make test does it)")
	return ""
}

func TestStatusPageInABrowser(t *testing.T) {
	s := mvtest.Start(t, t.TempDir(), nil)
	publish(t, s, "orders", []messagevault.Message{msg("k", "v")})
	publish(t, s, "payments", []messagevault.Message{msg("k", "v")})
	if status, body, _ := do(t, s.Request("PUT", "/streams/payments/cursors/ledger", admin, adminPass, []byte(`{"Position": 0}`), "application/json")); status != http.StatusOK {
		t.Fatalf("PUT a cursor: %d %s", status, body)
	}
	// Traffic while the page is open.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			var msgs []messagevault.Message
			for j := 0; j < 50; j++ {
				msgs = append(msgs, msg("k", fmt.Sprintf("m%d-%d", i, j)))
			}
			req := s.Request("POST", "/streams/orders", admin, adminPass, transfer(t, msgs), "")
			if resp, err := httpClient.Do(req); err == nil {
				resp.Body.Close()
			}
		}
	}()

	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-quic", true), chromedp.Flag("no-first-run", true),
		chromedp.UserDataDir(t.TempDir()))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 90*time.Second)
	defer cancel()

	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte(admin+":"+adminPass))
	setAuth := chromedp.Action[chromedp.Void](func(ctx context.Context, tg *chromedp.Target) (chromedp.Void, error) {
		_, err := cdp.Call(ctx, tg, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{Headers: network.Headers{"Authorization": auth}})
		return chromedp.Void{}, err
	})
	err := chromedp.Do(ctx,
		setAuth,
		chromedp.Navigate(s.URL+"/ui"),
		chromedp.WaitVisible(`body[data-loaded="yes"]`),
	)
	if err != nil {
		t.Fatalf("browser: %v", err)
	}
	// The chart has drawn a few seconds of history.
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`Number(document.getElementById("chart").dataset.points || 0) >= 3`)); err != nil {
		t.Fatalf("chart: %v", err)
	}
	streams, err := chromedp.Run(ctx, chromedp.Text(`#streams tbody`))
	if err != nil {
		t.Fatal(err)
	}
	nodes, err := chromedp.Run(ctx, chromedp.Text(`#nodes tbody`))
	if err != nil {
		t.Fatal(err)
	}
	cursors, err := chromedp.Run(ctx, chromedp.Text(`#cursors tbody`))
	if err != nil {
		t.Fatal(err)
	}
	// One message of 25 + 1 + 1 bytes: the cursor at 0 lags by 27.
	if !strings.Contains(cursors, "payments") || !strings.Contains(cursors, "ledger") || !strings.Contains(cursors, "27") {
		t.Fatalf("cursors table: %q", cursors)
	}
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(streams, "orders") || !strings.Contains(streams, "payments") {
		t.Fatalf("streams table: %q", streams)
	}
	if !strings.Contains(nodes, "leader") {
		t.Fatalf("nodes table: %q", nodes)
	}
	shot := filepath.Join(artifactDir(t), "status-page.png")
	if err := os.WriteFile(shot, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", shot, len(png))

	// The page and its data need a login with a claim.
	if status, _, _ := do(t, s.Request("GET", "/ui/", "", "", nil, "")); status != 401 {
		t.Fatalf("page without credentials: %d", status)
	}
}

func TestMetricsAndJSONLogs(t *testing.T) {
	s := mvtest.Start(t, t.TempDir(), nil, "--log-format", "json")
	for i := 0; i < 3; i++ {
		publish(t, s, "metered", []messagevault.Message{msg("k", "v"), msg("k", "w")})
	}
	_, body, _ := do(t, s.Request("GET", "/metrics", admin, adminPass, nil, ""))
	for _, want := range []string{
		"messagevault_appended_messages_total 6",
		"messagevault_group_commit_messages_bucket",
		"messagevault_group_commit_seconds_bucket",
		`messagevault_storage_operation_seconds_bucket{op="flush"`,
		`messagevault_storage_operation_seconds_bucket{op="commit_position"`,
		`messagevault_stream_position_bytes{stream="metered"} 162`,
		"messagevault_leader 1",
		"messagevault_lease_acquisitions_total 1",
		`messagevault_http_requests_total{code="200",route="POST /streams/{stream}"} 3`,
		"messagevault_etag_conflicts_total 0",
	} {
		if !strings.Contains(string(body), want) && !(strings.HasSuffix(want, "_total") && strings.Contains(string(body), "# HELP "+want)) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	// Every log line is a JSON object; request lines carry an id.
	sc := bufio.NewScanner(strings.NewReader(s.Stderr.String()))
	requests := 0
	for sc.Scan() {
		var line map[string]any
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatalf("log line is not JSON: %q", sc.Text())
		}
		if line["msg"] == "request" {
			if id, _ := line["id"].(string); id == "" {
				t.Fatalf("request log without an id: %q", sc.Text())
			}
			requests++
		}
	}
	if requests < 3 {
		t.Fatalf("%d request log lines", requests)
	}
}
