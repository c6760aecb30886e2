package server

import (
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"time"

	"github.com/messagevault/messagevault/auth"
)

// The token routes: an administrator (all:write) makes, lists and revokes
// tokens of any user; a user logged in with its password, its own. A token
// cannot make tokens.

// tokenAnswer describes a token (Token, the secret, only when made).
type tokenAnswer struct {
	Token   string    `json:"Token,omitempty"`
	ID      string    `json:"ID"`
	User    string    `json:"User"`
	Claims  []string  `json:"Claims"`
	Created time.Time `json:"Created"`
	Expires time.Time `json:"Expires"`
}

func tokenOf(t auth.TokenInfo) tokenAnswer {
	return tokenAnswer{ID: t.ID, User: t.User, Claims: append([]string{}, t.Claims...), Created: t.Created, Expires: t.Expires}
}

// tokenPrincipal authenticates a request to a token route: with a
// password, not a token.
func (s *Server) tokenPrincipal(w http.ResponseWriter, r *http.Request) (auth.Principal, bool) {
	p, ok := s.authenticate(w, r)
	if !ok {
		return p, false
	}
	if _, isToken := auth.TokenID(p.Name); isToken {
		s.writeError(w, r, fmt.Errorf("%w: a token cannot manage tokens: log in with a password", auth.ErrForbidden))
		return p, false
	}
	return p, true
}

// handleCreateToken serves POST /tokens {"User", "Claims", "TTL"}.
func (s *Server) handleCreateToken(w http.ResponseWriter, r *http.Request) {
	p, ok := s.tokenPrincipal(w, r)
	if !ok {
		return
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		s.writeError(w, r, fmt.Errorf("%w: a token request needs Content-Type: application/json", errMediaType))
		return
	}
	var req struct {
		User   string   `json:"User"`
		Claims []string `json:"Claims"`
		TTL    string   `json:"TTL"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxUserBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		s.writeError(w, r, badRequest(`token request: %v (want {"User": "ci", "Claims": ["orders:write"], "TTL": "24h"})`, err))
		return
	}
	if req.User == "" {
		req.User = p.Name
	}
	if req.User != p.Name && !p.CanAdmin() {
		s.writeError(w, r, forbidden(p.Name, "all:write (to make a token for another user)"))
		return
	}
	ttl, err := time.ParseDuration(req.TTL)
	if err != nil {
		s.writeError(w, r, badRequest("TTL %q: want a duration such as 24h", req.TTL))
		return
	}
	token, info, err := s.cfg.Users.CreateToken(r.Context(), req.User, req.Claims, ttl)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("token made", "token", info.ID, "user", info.User, "claims", info.Claims, "expires", info.Expires, "by", p.Name)
	ans := tokenOf(info)
	ans.Token = token
	writeJSON(w, http.StatusCreated, ans)
}

// handleTokens serves GET /tokens: every token for an administrator, the
// user's own otherwise.
func (s *Server) handleTokens(w http.ResponseWriter, r *http.Request) {
	p, ok := s.tokenPrincipal(w, r)
	if !ok {
		return
	}
	user := p.Name
	if p.CanAdmin() {
		user = r.URL.Query().Get("user")
	}
	out := []tokenAnswer{}
	for _, t := range s.cfg.Users.Tokens(user) {
		out = append(out, tokenOf(t))
	}
	writeJSON(w, http.StatusOK, map[string]any{"Tokens": out})
}

// handleRevokeToken serves DELETE /tokens/{id}.
func (s *Server) handleRevokeToken(w http.ResponseWriter, r *http.Request) {
	p, ok := s.tokenPrincipal(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	t, found := s.cfg.Users.Token(id)
	if !found || t.User != p.Name && !p.CanAdmin() {
		// Another user's token is "not found" to a non-administrator.
		s.writeError(w, r, fmt.Errorf("revoke token %q: %w", id, auth.ErrTokenNotFound))
		return
	}
	if err := s.cfg.Users.RevokeToken(r.Context(), id); err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("token revoked", "token", id, "user", t.User, "by", p.Name)
	writeJSON(w, http.StatusOK, map[string]any{"ID": id, "Revoked": true})
}
