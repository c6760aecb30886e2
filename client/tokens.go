package client

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// TokenInfo describes a bearer token; Token, the secret, is set only in
// CreateToken's answer.
type TokenInfo struct {
	Token   string
	ID      string
	User    string
	Claims  []string
	Created time.Time
	Expires time.Time
}

// CreateToken makes a bearer token for user ("" for the client's own user)
// carrying claims (a part of the user's), valid for ttl. Making one for
// another user needs all:write. The token is shown only here.
func (c *Client) CreateToken(ctx context.Context, user string, claims []string, ttl time.Duration) (TokenInfo, error) {
	var ans TokenInfo
	if err := c.userOpAnswer(ctx, http.MethodPost, "/tokens", map[string]any{"User": user, "Claims": claims, "TTL": ttl.String()}, "make a token", &ans); err != nil {
		return TokenInfo{}, err
	}
	return ans, nil
}

// Tokens lists tokens: the client's user's own, or (for an administrator)
// every user's, or user's if not empty.
func (c *Client) Tokens(ctx context.Context, user string) ([]TokenInfo, error) {
	var ans struct{ Tokens []TokenInfo }
	path := "/tokens"
	if user != "" {
		path += "?user=" + url.QueryEscape(user)
	}
	if _, err := c.do(ctx, http.MethodGet, path, nil, "", &ans); err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	return ans.Tokens, nil
}

// RevokeToken revokes a token by its id: it is refused from now on.
func (c *Client) RevokeToken(ctx context.Context, id string) error {
	if _, err := c.do(ctx, http.MethodDelete, "/tokens/"+url.PathEscape(id), nil, "", nil); err != nil {
		return fmt.Errorf("revoke token %s: %w", id, err)
	}
	return nil
}
