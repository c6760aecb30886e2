// Package hexfile reads the hand-written golden files of the format tests:
// hex bytes with comments, so that each file can show, field by field, how
// it was derived from a format's description.
//
// Syntax: whitespace between hex digits is ignored and '#' starts a
// comment. A line "rule: N bytes, byte i = i % M" stands for N bytes whose
// byte i is i % M, for long values that would be unreadable spelled out.
package hexfile

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
)

// Parse reads the golden file at path into bytes.
func Parse(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []byte
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		text, _, _ := strings.Cut(sc.Text(), "#")
		text = strings.TrimSpace(text)
		if text == "" {
			continue
		}
		if strings.HasPrefix(text, "rule:") {
			var n, m int
			if _, err := fmt.Sscanf(text, "rule: %d bytes, byte i = i %% %d", &n, &m); err != nil || n < 0 || m <= 0 {
				return nil, fmt.Errorf("%s:%d: bad rule %q (want \"rule: N bytes, byte i = i %% M\")", path, line, text)
			}
			out = append(out, RuleBytes(n, m)...)
			continue
		}
		b, err := hex.DecodeString(strings.Join(strings.Fields(text), ""))
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		out = append(out, b...)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return out, nil
}

// RuleBytes returns n bytes, byte i = i % m: what a rule line stands for.
func RuleBytes(n, m int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i % m)
	}
	return b
}
