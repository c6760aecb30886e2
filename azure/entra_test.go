package azure_test

import (
	"strings"
	"testing"

	"github.com/messagevault/messagevault/azure"
)

// TestOpenSpecs: which account specs sign in with Microsoft Entra ID, and
// the errors of those that cannot.
func TestOpenSpecs(t *testing.T) {
	for _, c := range []struct {
		spec, account, err string
	}{
		{spec: "https://prod42.blob.core.windows.net", account: "prod42"},
		{spec: "https://prod42.blob.core.windows.net/", account: "prod42"},
		{spec: "https://127.0.0.1:10000/devstoreaccount1", account: "devstoreaccount1"},
		{spec: "AccountName=prod42;EndpointSuffix=core.chinacloudapi.cn", account: "prod42"},
		{spec: "BlobEndpoint=https://prod42.blob.core.windows.net/;AccountName=prod42", account: "prod42"},
		{spec: "DefaultEndpointsProtocol=https;AccountName=prod42;AccountKey=" + strings.Repeat("A", 88), account: "prod42"},
		{spec: "http://prod42.blob.core.windows.net", err: "only over HTTPS"},
		{spec: "DefaultEndpointsProtocol=http;AccountName=prod42", err: "only over HTTPS"},
		{spec: "https://prod42.blob.core.windows.net/?sv=2020&sig=x", err: "has a query"},
		{spec: "https://127.0.0.1:10000/", err: "no account name"},
		{spec: "DefaultEndpointsProtocol=https", err: "neither an AccountKey nor a BlobEndpoint or AccountName"},
	} {
		s, err := azure.Open(c.spec, azure.Config{})
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("Open(%q): %v, want an error with %q", c.spec, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("Open(%q): %v", c.spec, err)
			continue
		}
		if got := s.String(); got != "azure account "+c.account {
			t.Errorf("Open(%q) is %q, want account %s", c.spec, got, c.account)
		}
	}
}
