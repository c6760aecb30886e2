package server

import (
	"unicode/utf8"

	"github.com/messagevault/messagevault"
)

// decodeJSONFast decodes the usual shape of a JSON publish, an array of
// {"key": "...", "value": "..."} objects whose strings have no escapes, in
// one pass without reflection, and copies every key and value into one
// allocation. ok is false for anything else (escapes, value_base64, other
// members or spellings, bad UTF-8, limits passed, bad JSON): the caller
// then decodes the body with encoding/json, which accepts it or says what
// is wrong with it. What it accepts, encoding/json decodes the same way.
func decodeJSONFast(body []byte, dst []messagevault.Message) (out []messagevault.Message, ok bool) {
	type span struct{ k0, k1, v0, v1 int }
	var spans []span
	total := 0
	p := skipSpace(body, 0)
	if p == len(body) || body[p] != '[' {
		return dst, false
	}
	p = skipSpace(body, p+1)
	for {
		if p == len(body) || body[p] != '{' || len(spans) == messagevault.MaxBatchCount {
			return dst, false
		}
		var s span
		haveKey, haveValue := false, false
		p++
		for range 2 {
			name0, name1, q, good := stringAt(body, skipSpace(body, p))
			if !good {
				return dst, false
			}
			q = skipSpace(body, q)
			if q == len(body) || body[q] != ':' {
				return dst, false
			}
			v0, v1, r, good := stringAt(body, skipSpace(body, q+1))
			if !good {
				return dst, false
			}
			switch string(body[name0:name1]) {
			case "key":
				if haveKey || v1-v0 > messagevault.MaxKeySize {
					return dst, false
				}
				s.k0, s.k1, haveKey = v0, v1, true
			case "value":
				if haveValue || v1-v0 > messagevault.MaxValueSize {
					return dst, false
				}
				s.v0, s.v1, haveValue = v0, v1, true
			default:
				return dst, false
			}
			p = skipSpace(body, r)
			if !haveKey || !haveValue {
				if p == len(body) || body[p] != ',' {
					return dst, false
				}
				p++
			}
		}
		if p == len(body) || body[p] != '}' {
			return dst, false
		}
		spans = append(spans, s)
		total += s.k1 - s.k0 + s.v1 - s.v0
		p = skipSpace(body, p+1)
		if p < len(body) && body[p] == ',' {
			p = skipSpace(body, p+1)
			continue
		}
		if p == len(body) || body[p] != ']' || skipSpace(body, p+1) != len(body) {
			return dst, false
		}
		break
	}
	arena := make([]byte, 0, total)
	for _, s := range spans {
		k0 := len(arena)
		arena = append(arena, body[s.k0:s.k1]...)
		v0 := len(arena)
		arena = append(arena, body[s.v0:s.v1]...)
		dst = append(dst, messagevault.NewMessage(arena[k0:v0:v0], arena[v0:len(arena):len(arena)], 0))
	}
	return dst, true
}

// skipSpace returns the first position from p that is not JSON
// whitespace.
func skipSpace(b []byte, p int) int {
	for p < len(b) && (b[p] == ' ' || b[p] == '\t' || b[p] == '\n' || b[p] == '\r') {
		p++
	}
	return p
}

// stringAt reads a JSON string without escapes at p: it returns the
// bounds of its content and the position after its closing quote; good
// is false if there is none there, or it has an escape, a control
// character or bytes that are not UTF-8.
func stringAt(b []byte, p int) (c0, c1, next int, good bool) {
	if p == len(b) || b[p] != '"' {
		return 0, 0, 0, false
	}
	ascii := true
	for q := p + 1; q < len(b); q++ {
		switch c := b[q]; {
		case c == '"':
			if !ascii && !utf8.Valid(b[p+1:q]) {
				return 0, 0, 0, false
			}
			return p + 1, q, q + 1, true
		case c == '\\' || c < 0x20:
			return 0, 0, 0, false
		case c >= 0x80:
			ascii = false
		}
	}
	return 0, 0, 0, false
}
