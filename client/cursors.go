package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// Cursor is a consumer's durable position in a stream, kept by the
// server's storage (see the server's cursor routes).
type Cursor struct {
	Name     string
	Position int64
	// Lag is how far the cursor is behind the stream's committed
	// position, in bytes, when it was read.
	Lag int64
	// ETag is the cursor's version: SetCursor with it succeeds only if
	// nobody wrote the cursor since.
	ETag string
}

func cursorPath(stream, name string) string {
	return "/streams/" + url.PathEscape(stream) + "/cursors/" + url.PathEscape(name)
}

// GetCursor reads a cursor. An unknown cursor is an *Error with Status
// 404.
func (c *Client) GetCursor(ctx context.Context, stream, name string) (Cursor, error) {
	var cur Cursor
	h, err := c.do(ctx, http.MethodGet, cursorPath(stream, name), nil, "", &cur)
	if err != nil {
		return Cursor{}, fmt.Errorf("cursor %q of %q: %w", name, stream, err)
	}
	cur.ETag = strings.Trim(h.Get("ETag"), `"`)
	return cur, nil
}

// SetCursor sets a cursor to pos (a message's Offset or Next, or the
// stream's position) and returns its new version. With ifMatch set (an
// ETag GetCursor or SetCursor returned), it is set only if nobody set it
// since; otherwise the answer is an *Error with Status 412.
func (c *Client) SetCursor(ctx context.Context, stream, name string, pos int64, ifMatch string) (Cursor, error) {
	body, _ := json.Marshal(map[string]int64{"Position": pos})
	hdr := http.Header{}
	if ifMatch != "" {
		hdr.Set("If-Match", `"`+ifMatch+`"`)
	}
	var cur Cursor
	h, err := c.doWith(ctx, http.MethodPut, cursorPath(stream, name), body, "application/json", hdr, &cur)
	if err != nil {
		return Cursor{}, fmt.Errorf("set cursor %q of %q to %d: %w", name, stream, pos, err)
	}
	cur.ETag = strings.Trim(h.Get("ETag"), `"`)
	return cur, nil
}

// DeleteCursor removes a cursor.
func (c *Client) DeleteCursor(ctx context.Context, stream, name string) error {
	if _, err := c.do(ctx, http.MethodDelete, cursorPath(stream, name), nil, "", nil); err != nil {
		return fmt.Errorf("delete cursor %q of %q: %w", name, stream, err)
	}
	return nil
}

// Cursors lists a stream's cursors with their lag.
func (c *Client) Cursors(ctx context.Context, stream string) ([]Cursor, error) {
	var list []Cursor
	if _, err := c.do(ctx, http.MethodGet, "/streams/"+url.PathEscape(stream)+"/cursors", nil, "", &list); err != nil {
		return nil, fmt.Errorf("cursors of %q: %w", stream, err)
	}
	return list, nil
}
