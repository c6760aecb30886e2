package client_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestBuildsWithoutTheAzureSDK: the client package does not pull in the
// Azure SDK (Azure grants are read through a GrantReader the caller
// gives), so a program that only publishes stays small.
func TestBuildsWithoutTheAzureSDK(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.Contains(dep, "github.com/Azure/") || strings.Contains(dep, "github.com/AzureAD/") || strings.HasSuffix(dep, "/messagevault/azure") {
			t.Errorf("the client package depends on %s", dep)
		}
	}
}
