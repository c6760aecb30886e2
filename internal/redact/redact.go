// Package redact owns the removal of secrets from text the program shows:
// error messages and log lines, on the server and in the CLI. It blanks
// the values of SAS signatures (sig=), account keys and shared access
// signatures in connection strings, and passwords in URLs, wherever they
// appear in a string.
package redact

import (
	"context"
	"log/slog"
	"regexp"
	"strings"
)

// Mask replaces every secret value.
const Mask = "REDACTED"

// secrets finds a secret's name (kept) and value (replaced). A value runs
// to the next separator of the syntax it appears in: '&' in a query, ';' in
// a connection string, and quotes or white space around either.
var secrets = regexp.MustCompile(`(?i)((?:^|[?&;\s"'(])(?:sig|accountkey|sharedaccesssignature|password)=)([^&;\s"')]+)`)

// userinfo finds the password of a URL's user info (scheme://user:pw@).
var userinfo = regexp.MustCompile(`([a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@"']+:)([^/\s@"']+)@`)

// String returns s with every secret value replaced by Mask.
func String(s string) string {
	// Every secret follows an '=' or a URL's ':' and '@': most log values
	// (ids, routes, durations) have neither and skip the expressions.
	if !strings.ContainsAny(s, "=@") {
		return s
	}
	s = secrets.ReplaceAllString(s, "${1}"+Mask)
	return userinfo.ReplaceAllString(s, "${1}"+Mask+"@")
}

// LooksSecret reports whether s holds something String would redact.
func LooksSecret(s string) bool { return String(s) != s }

// Handler wraps h so that every log record's message and string, error
// and stringer attributes are redacted.
func Handler(h slog.Handler) slog.Handler { return handler{h} }

type handler struct{ h slog.Handler }

func (r handler) Enabled(ctx context.Context, l slog.Level) bool { return r.h.Enabled(ctx, l) }

func (r handler) Handle(ctx context.Context, rec slog.Record) error {
	out := slog.NewRecord(rec.Time, rec.Level, String(rec.Message), rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(attr(a))
		return true
	})
	return r.h.Handle(ctx, out)
}

func (r handler) WithAttrs(as []slog.Attr) slog.Handler {
	clean := make([]slog.Attr, len(as))
	for i, a := range as {
		clean[i] = attr(a)
	}
	return handler{r.h.WithAttrs(clean)}
}

func (r handler) WithGroup(name string) slog.Handler { return handler{r.h.WithGroup(name)} }

// attr redacts one attribute's value (groups too).
func attr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, String(v.String()))
	case slog.KindGroup:
		group := v.Group()
		clean := make([]any, len(group))
		for i, g := range group {
			clean[i] = attr(g)
		}
		return slog.Group(a.Key, clean...)
	case slog.KindAny:
		switch x := v.Any().(type) {
		case error:
			return slog.String(a.Key, String(x.Error()))
		case interface{ String() string }:
			return slog.String(a.Key, String(x.String()))
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}
