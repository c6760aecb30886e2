package main

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// byteSize is a flag value of a number of bytes, written plain (1048576)
// or with a binary suffix: KiB, MiB, GiB or TiB (64MiB, 1.5GiB).
type byteSize int64

// byteUnits are the suffixes byteSize accepts, largest first.
var byteUnits = []struct {
	suffix string
	n      int64
}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}}

func (b *byteSize) String() string {
	n := int64(*b)
	for _, u := range byteUnits {
		if n != 0 && n%u.n == 0 {
			return strconv.FormatInt(n/u.n, 10) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}

func (b *byteSize) Set(s string) error {
	v := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range byteUnits {
		if rest, ok := strings.CutSuffix(v, u.suffix); ok {
			v, mult = strings.TrimSpace(rest), u.n
			break
		}
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < 0 || math.IsInf(f, 0) || f*float64(mult) >= math.MaxInt64 {
		return fmt.Errorf("%q: want a number of bytes, such as 1073741824, 64MiB or 1.5GiB (suffixes KiB, MiB, GiB, TiB)", s)
	}
	n := f * float64(mult)
	if n != math.Trunc(n) {
		return fmt.Errorf("%q is not a whole number of bytes", s)
	}
	*b = byteSize(n)
	return nil
}

// Type names the flag's value in help.
func (b *byteSize) Type() string { return "bytes" }
