package history

import (
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	base := func() *History {
		h := &History{}
		h.Add(Attempt{Producer: "p", Sequence: 1, Values: []string{"a", "b"}, Outcome: Acked, Offsets: []int64{0, 10}})
		h.Add(Attempt{Producer: "p", Sequence: 2, Values: []string{"c"}, Outcome: Unknown})
		h.Add(Attempt{Producer: "p", Sequence: 3, Values: []string{"d"}, Outcome: Failed})
		return h
	}
	for _, tt := range []struct {
		name   string
		stored []Stored
		err    string
	}{
		{"exact", []Stored{{0, "a"}, {10, "b"}}, ""},
		{"unknown stored once", []Stored{{0, "a"}, {10, "b"}, {20, "c"}, {25, "other writer"}}, ""},
		{"lost", []Stored{{0, "a"}}, "is lost"},
		{"moved", []Stored{{0, "a"}, {12, "b"}}, "acknowledged at 10"},
		{"twice", []Stored{{0, "a"}, {10, "b"}, {20, "c"}, {30, "c"}}, "stored twice"},
		{"failed stored", []Stored{{0, "a"}, {10, "b"}, {20, "d"}}, "refused"},
		{"out of order", []Stored{{0, "c"}, {5, "a"}, {10, "b"}}, "stored after"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := base().Check(tt.stored)
			if tt.err == "" && err != nil || tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
				t.Fatalf("Check: %v; want %q", err, tt.err)
			}
		})
	}
	if p := base().Pending(); len(p["p"]) != 2 || p["p"][0] != 2 || p["p"][1] != 3 {
		t.Fatalf("Pending = %v", p)
	}
}
