package messagevault_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/messagevault/messagevault"
)

func TestNormalizeStreamName(t *testing.T) {
	for _, tt := range []struct {
		in, want string
		why      string // part of the error, for invalid names
	}{
		{in: "orders", want: "orders"},
		{in: "Orders-2024", want: "orders-2024"},
		{in: "abc", want: "abc"},
		{in: strings.Repeat("x", 60), want: strings.Repeat("x", 60)},
		{in: "a-b-c", want: "a-b-c"},
		{in: "007", want: "007"},
		{in: "a", want: "a"},
		{in: "Ab", want: "ab"},
		{in: "7", want: "7"},
		{in: "", why: "1 to 60"},
		{in: "-", why: "start and end"},
		{in: strings.Repeat("x", 61), why: "is 61"},
		{in: "-xy", why: "start and end"},
		{in: "xy-", why: "start and end"},
		{in: "x--y", why: `"--"`},
		{in: "../etc", why: "not one of"},
		{in: "a_b", why: "not one of"},
		{in: "a b", why: "not one of"},
		{in: "ünï", why: "ASCII"},
		{in: "SYS", why: "reserved"},
		{in: "All", why: `"all" is reserved`},
		{in: "all-orders", want: "all-orders"},
	} {
		t.Run(tt.in, func(t *testing.T) {
			got, err := messagevault.NormalizeStreamName(tt.in)
			if tt.why == "" {
				if err != nil || got != tt.want {
					t.Fatalf("NormalizeStreamName(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
				}
				return
			}
			if !errors.Is(err, messagevault.ErrInvalidStreamName) || !strings.Contains(err.Error(), tt.why) {
				t.Fatalf("NormalizeStreamName(%q) = %q, %v; want ErrInvalidStreamName saying %q", tt.in, got, err, tt.why)
			}
		})
	}
}

func TestMessageValidate(t *testing.T) {
	ok := messagevault.NewMessage([]byte("key"), []byte("value"), messagevault.AttrContinued)
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name string
		m    messagevault.Message
		why  string
	}{
		{"key too long", messagevault.NewMessage(make([]byte, 256), nil, 0), "key is 256 bytes"},
		{"value too long", messagevault.NewMessage(nil, make([]byte, 65536), 0), "value is 65536 bytes"},
		{"wrong crc", messagevault.Message{Key: []byte("k"), CRC: 1}, "crc is"},
		{"attributes not in crc", messagevault.Message{Attributes: 1, Key: ok.Key, Value: ok.Value, CRC: ok.CRC}, "crc is"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.m.Validate()
			if !errors.Is(err, messagevault.ErrInvalidMessage) || !strings.Contains(err.Error(), tt.why) {
				t.Fatalf("Validate: %v; want ErrInvalidMessage saying %q", err, tt.why)
			}
		})
	}
}
