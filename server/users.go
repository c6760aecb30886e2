package server

import (
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"sort"
)

// The user routes let an administrator (all:write) manage users over HTTP,
// so that operators need no storage key. Every node serves them: the users
// file lives in storage (or the shared data directory), not on the
// leader.

// userAnswer is one user as the user routes show it.
type userAnswer struct {
	Name   string   `json:"Name"`
	Claims []string `json:"Claims"`
}

// userRequest is the body of POST /users and of the password and claim
// routes.
type userRequest struct {
	Name     string   `json:"Name"`
	Password string   `json:"Password"`
	Claims   []string `json:"Claims"`
	Grant    []string `json:"Grant"`
	Revoke   []string `json:"Revoke"`
}

// maxUserBody bounds the body of a user route.
const maxUserBody = 64 << 10

// admin authenticates the request and requires all:write; it answers the
// error itself and returns false otherwise.
func (s *Server) admin(w http.ResponseWriter, r *http.Request) bool {
	p, ok := s.authenticate(w, r)
	if !ok {
		return false
	}
	if !p.CanAdmin() {
		s.writeError(w, r, forbidden(p.Name, "all:write"))
		return false
	}
	return true
}

// userBody decodes a user route's JSON body.
func (s *Server) userBody(w http.ResponseWriter, r *http.Request) (userRequest, bool) {
	var req userRequest
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		s.writeError(w, r, fmt.Errorf("%w: a user request needs Content-Type: application/json (got %q)", errMediaType, r.Header.Get("Content-Type")))
		return req, false
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxUserBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil && err != io.EOF {
		s.writeError(w, r, badRequest(`user request body: %v (want JSON such as {"Name": "alice", "Password": "...", "Claims": ["orders:read"]})`, err))
		return req, false
	}
	return req, true
}

// handleUsers serves GET /users: every user and its claims.
func (s *Server) handleUsers(w http.ResponseWriter, r *http.Request) {
	if !s.admin(w, r) {
		return
	}
	out := []userAnswer{}
	for _, p := range s.cfg.Users.List() {
		out = append(out, userAnswer{Name: p.Name, Claims: append([]string{}, p.Claims...)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	writeJSON(w, http.StatusOK, map[string]any{"Users": out})
}

// handleAddUser serves POST /users {"Name", "Password", "Claims"}.
func (s *Server) handleAddUser(w http.ResponseWriter, r *http.Request) {
	if !s.admin(w, r) {
		return
	}
	req, ok := s.userBody(w, r)
	if !ok {
		return
	}
	if err := s.cfg.Users.Add(r.Context(), req.Name, req.Password, req.Claims...); err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("user added", "user", req.Name, "claims", req.Claims, "by", userOf(r))
	writeJSON(w, http.StatusCreated, s.user(req.Name))
}

// handleRemoveUser serves DELETE /users/{name}.
func (s *Server) handleRemoveUser(w http.ResponseWriter, r *http.Request) {
	if !s.admin(w, r) {
		return
	}
	name := r.PathValue("name")
	if err := s.cfg.Users.Remove(r.Context(), name); err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("user removed", "user", name, "by", userOf(r))
	writeJSON(w, http.StatusOK, map[string]any{"Name": name, "Removed": true})
}

// handleSetPassword serves PUT /users/{name}/password {"Password"}.
func (s *Server) handleSetPassword(w http.ResponseWriter, r *http.Request) {
	if !s.admin(w, r) {
		return
	}
	req, ok := s.userBody(w, r)
	if !ok {
		return
	}
	name := r.PathValue("name")
	if err := s.cfg.Users.SetPassword(r.Context(), name, req.Password); err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("user's password set", "user", name, "by", userOf(r))
	writeJSON(w, http.StatusOK, s.user(name))
}

// handleClaims serves POST /users/{name}/claims {"Grant": [...],
// "Revoke": [...]}.
func (s *Server) handleClaims(w http.ResponseWriter, r *http.Request) {
	if !s.admin(w, r) {
		return
	}
	req, ok := s.userBody(w, r)
	if !ok {
		return
	}
	name := r.PathValue("name")
	if len(req.Grant) == 0 && len(req.Revoke) == 0 {
		s.writeError(w, r, badRequest(`give "Grant" or "Revoke": lists of claims`))
		return
	}
	if len(req.Grant) > 0 {
		if err := s.cfg.Users.Grant(r.Context(), name, req.Grant...); err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	if len(req.Revoke) > 0 {
		if err := s.cfg.Users.Revoke(r.Context(), name, req.Revoke...); err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	s.log.Info("user's claims changed", "user", name, "granted", req.Grant, "revoked", req.Revoke, "by", userOf(r))
	writeJSON(w, http.StatusOK, s.user(name))
}

// user returns a user's answer as the users file has it now.
func (s *Server) user(name string) userAnswer {
	p, _ := s.cfg.Users.Lookup(name)
	return userAnswer{Name: name, Claims: append([]string{}, p.Claims...)}
}
