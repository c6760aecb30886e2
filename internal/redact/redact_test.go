package redact_test

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/messagevault/messagevault/internal/redact"
)

func TestString(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{`GET "https://acct.blob.core.windows.net/mv-orders/x?sv=2021&sig=abc%2Fdef%3D&se=2026": 503`,
			`GET "https://acct.blob.core.windows.net/mv-orders/x?sv=2021&sig=REDACTED&se=2026": 503`},
		{`unknown command "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=c2VjcmV0Cg==;EndpointSuffix=core.windows.net"`,
			`unknown command "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=REDACTED;EndpointSuffix=core.windows.net"`},
		{`BlobEndpoint=https://x/;SharedAccessSignature=sv=2021&sig=zzz`, `BlobEndpoint=https://x/;SharedAccessSignature=REDACTED&sig=REDACTED`},
		{`dial http://admin:hunter2@10.0.0.1:8001/streams`, `dial http://admin:REDACTED@10.0.0.1:8001/streams`},
		{`no secret here: signal=5, design=ok`, `no secret here: signal=5, design=ok`},
	} {
		if got := redact.String(tc.in); got != tc.want {
			t.Errorf("String(%q)\n = %q\nwant %q", tc.in, got, tc.want)
		}
	}
}

func TestHandler(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(redact.Handler(slog.NewTextHandler(&buf, nil))).With("grant", "https://a/b?sig=s1")
	log.Error("read failed at https://a/c?sig=s2", "err", errors.New("GET https://a/d?sig=s3: EOF"), slog.Group("g", "url", "https://a/e?sig=s4"))
	out := buf.String()
	for _, s := range []string{"s1", "s2", "s3", "s4"} {
		if strings.Contains(out, "sig="+s) {
			t.Fatalf("log line keeps a signature: %s", out)
		}
	}
	if strings.Count(out, "sig=REDACTED") != 4 {
		t.Fatalf("log line: %s", out)
	}
}
