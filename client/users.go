package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
)

// User is a user and its claims, as the server's user routes show it.
type User struct {
	Name   string
	Claims []string
}

// The user methods manage users through the server (the client's user
// needs all:write), so that an operator needs no storage key. They are
// sent once, not retried: adding a user twice is an error.

// Users lists the users.
func (c *Client) Users(ctx context.Context) ([]User, error) {
	var ans struct{ Users []User }
	if _, err := c.do(ctx, http.MethodGet, "/users", nil, "", &ans); err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	return ans.Users, nil
}

// AddUser adds a user with a password and claims.
func (c *Client) AddUser(ctx context.Context, name, password string, claims []string) error {
	return c.userOp(ctx, http.MethodPost, "/users", map[string]any{"Name": name, "Password": password, "Claims": claims}, "add user "+name)
}

// RemoveUser removes a user.
func (c *Client) RemoveUser(ctx context.Context, name string) error {
	if _, err := c.do(ctx, http.MethodDelete, "/users/"+url.PathEscape(name), nil, "", nil); err != nil {
		return fmt.Errorf("remove user %s: %w", name, err)
	}
	return nil
}

// SetPassword sets a user's password.
func (c *Client) SetPassword(ctx context.Context, name, password string) error {
	return c.userOp(ctx, http.MethodPut, "/users/"+url.PathEscape(name)+"/password", map[string]any{"Password": password}, "set the password of "+name)
}

// ChangeClaims gives a user the claims grant and takes revoke away.
func (c *Client) ChangeClaims(ctx context.Context, name string, grant, revoke []string) error {
	return c.userOp(ctx, http.MethodPost, "/users/"+url.PathEscape(name)+"/claims", map[string]any{"Grant": grant, "Revoke": revoke}, "change the claims of "+name)
}

func (c *Client) userOp(ctx context.Context, method, path string, body any, what string) error {
	return c.userOpAnswer(ctx, method, path, body, what, nil)
}

// userOpAnswer sends body as JSON, once, and decodes the answer into out.
func (c *Client) userOpAnswer(ctx context.Context, method, path string, body any, what string, out any) error {
	b, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if _, err := c.do(ctx, method, path, b, "application/json", out); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}
