package azure

import (
	"math"
	"strings"
	"testing"

	"github.com/messagevault/messagevault"
)

// The position blob's metadata stays within Azure's 8 KiB (names and
// values together) with both state slots at their largest, the widest
// extent and a long writer id. (Azurite does not enforce the limit.)
func TestPositionMetadataFitsAzuresLimit(t *testing.T) {
	state := strings.Repeat("A", 4*((InlineStateMax+2)/3)) // base64 of InlineStateMax bytes
	e := messagevault.Extent{Position: math.MaxInt64, Start: math.MaxInt64 - 1, Segment: math.MaxInt64 - 1}
	md := extentMetadata(e, strings.Repeat("h", 64)+"-4194304-0123abcd", [2]string{state, state})
	size := 0
	for k, v := range md {
		size += len(k) + len(*v)
	}
	if size > 8<<10 {
		t.Fatalf("position metadata of %d bytes, Azure takes at most %d", size, 8<<10)
	}
}
