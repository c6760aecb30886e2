package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// Bearer tokens let a program authenticate without a password (and
// without bcrypt's cost on each new connection): "Authorization: Bearer
// mvt_<id>_<secret>". A token belongs to a user and carries a subset of
// its claims; it is refused once it expires, once it is revoked, and once
// its user is removed, and it never gives more than the user has now. The
// users file keeps each token's SHA-256 (the secret is 32 random bytes, so
// a fast hash suffices), never the token itself.

// TokenPrefix starts every token.
const TokenPrefix = "mvt_"

// MaxTokenTTL bounds a token's lifetime.
const MaxTokenTTL = 366 * 24 * time.Hour

// ErrTokenNotFound reports an unknown token id.
var ErrTokenNotFound = errors.New("token not found")

// Token is a bearer token as the users file keeps it.
type Token struct {
	User    string    `json:"user"`
	Claims  []string  `json:"claims"`
	Hash    string    `json:"sha256"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires"`
}

// TokenInfo describes a token without its secret.
type TokenInfo struct {
	ID      string
	User    string
	Claims  []string
	Created time.Time
	Expires time.Time
}

// CreateToken makes a token for user with claims (each one covered by one
// of the user's own), valid for ttl, and returns it: the only time the
// token is shown.
func (u *Users) CreateToken(ctx context.Context, user string, claims []string, ttl time.Duration) (string, TokenInfo, error) {
	if ttl <= 0 || ttl > MaxTokenTTL {
		return "", TokenInfo{}, fmt.Errorf("%w: a token's lifetime is from 1s to %v, not %v", ErrInvalidUser, MaxTokenTTL, ttl)
	}
	cl, err := validateClaims(claims)
	if err != nil {
		return "", TokenInfo{}, err
	}
	if len(cl) == 0 {
		return "", TokenInfo{}, fmt.Errorf("%w: a token needs at least one claim", ErrInvalidClaim)
	}
	var idb [6]byte
	var secret [32]byte
	rand.Read(idb[:])
	rand.Read(secret[:])
	id := hex.EncodeToString(idb[:])
	sec := base64.RawURLEncoding.EncodeToString(secret[:])
	sum := sha256.Sum256([]byte(sec))
	now := time.Now().UTC().Truncate(time.Second)
	t := &Token{User: user, Claims: cl, Hash: hex.EncodeToString(sum[:]), Created: now, Expires: now.Add(ttl)}
	err = u.update(ctx, func(f *File) error {
		owner := f.Users[user]
		if owner == nil {
			return fmt.Errorf("token for %q: %w", user, ErrUserNotFound)
		}
		p := Principal{Name: user, Claims: owner.Claims}
		for _, c := range cl {
			if !p.covers(c) {
				return fmt.Errorf("%w: user %q has no claim that covers %q: a token carries a part of its user's claims", ErrInvalidClaim, user, c)
			}
		}
		if f.Tokens == nil {
			f.Tokens = map[string]*Token{}
		}
		f.Tokens[id] = t
		return nil
	})
	if err != nil {
		return "", TokenInfo{}, err
	}
	return TokenPrefix + id + "_" + sec, info(id, t), nil
}

func info(id string, t *Token) TokenInfo {
	return TokenInfo{ID: id, User: t.User, Claims: slices.Clone(t.Claims), Created: t.Created, Expires: t.Expires}
}

// Tokens lists the tokens (of user only, if not empty), expired ones too.
func (u *Users) Tokens(user string) []TokenInfo {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []TokenInfo
	for id, t := range u.file.Tokens {
		if user == "" || t.User == user {
			out = append(out, info(id, t))
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].Created.Before(out[j].Created) || out[i].Created.Equal(out[j].Created) && out[i].ID < out[j].ID
	})
	return out
}

// Token returns one token's description.
func (u *Users) Token(id string) (TokenInfo, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	t := u.file.Tokens[id]
	if t == nil {
		return TokenInfo{}, false
	}
	return info(id, t), true
}

// RevokeToken deletes a token: it is refused from now on. Expired tokens
// are dropped from the file at the same time.
func (u *Users) RevokeToken(ctx context.Context, id string) error {
	return u.update(ctx, func(f *File) error {
		if f.Tokens[id] == nil {
			return fmt.Errorf("revoke token %q: %w", id, ErrTokenNotFound)
		}
		delete(f.Tokens, id)
		now := time.Now()
		for k, t := range f.Tokens {
			if now.After(t.Expires) {
				delete(f.Tokens, k)
			}
		}
		return nil
	})
}

// AuthenticateToken checks a bearer token and returns its principal: its
// claims, less any its user no longer has. An unknown, wrong, expired or
// revoked token, or one whose user is gone, gives ErrUnauthenticated.
func (u *Users) AuthenticateToken(token string) (Principal, error) {
	rest, ok := strings.CutPrefix(token, TokenPrefix)
	id, sec, ok2 := strings.Cut(rest, "_")
	if !ok || !ok2 || id == "" || sec == "" {
		return Principal{}, fmt.Errorf("%w: not a MessageVault token", ErrUnauthenticated)
	}
	sum := sha256.Sum256([]byte(sec))
	u.mu.Lock()
	defer u.mu.Unlock()
	t := u.file.Tokens[id]
	var want []byte
	if t != nil {
		want, _ = hex.DecodeString(t.Hash)
	}
	if t == nil || subtle.ConstantTimeCompare(want, sum[:]) != 1 {
		return Principal{}, fmt.Errorf("%w: unknown or revoked token", ErrUnauthenticated)
	}
	return u.tokenPrincipalLocked(id, t)
}

// TokenPrincipal returns the principal of token id as it is now (its
// user's current claims cut it down), or false if the token was revoked,
// expired or lost its user: a long-running request checks with it.
func (u *Users) TokenPrincipal(id string) (Principal, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	t := u.file.Tokens[id]
	if t == nil {
		return Principal{}, false
	}
	p, err := u.tokenPrincipalLocked(id, t)
	return p, err == nil
}

// TokenName is the principal name of token id of user.
func TokenName(user, id string) string { return user + " (token " + id + ")" }

// TokenID returns the token id of a principal name made by TokenName.
func TokenID(name string) (string, bool) {
	i := strings.LastIndex(name, " (token ")
	if i < 0 || !strings.HasSuffix(name, ")") {
		return "", false
	}
	return name[i+len(" (token ") : len(name)-1], true
}

func (u *Users) tokenPrincipalLocked(id string, t *Token) (Principal, error) {
	if time.Now().After(t.Expires) {
		return Principal{}, fmt.Errorf("%w: the token expired at %s", ErrUnauthenticated, t.Expires.Format(time.RFC3339))
	}
	owner := u.file.Users[t.User]
	if owner == nil {
		return Principal{}, fmt.Errorf("%w: the token's user is gone", ErrUnauthenticated)
	}
	has := Principal{Name: t.User, Claims: owner.Claims}
	var claims []string
	for _, c := range t.Claims {
		if has.covers(c) {
			claims = append(claims, c)
		}
	}
	return Principal{Name: TokenName(t.User, id), Claims: claims}, nil
}

// covers reports whether one of p's claims gives everything claim gives.
func (p Principal) covers(claim string) bool {
	scope, access, _ := strings.Cut(claim, ":")
	for _, c := range p.Claims {
		s, a, _ := strings.Cut(c, ":")
		if access == "write" && a != "write" || access == "trim" && a != "trim" && c != "all:write" || access == "read" && a == "trim" {
			continue
		}
		switch {
		case s == "all", s == scope:
			return true
		case scope == "all":
			// only "all" covers every stream
		case strings.HasSuffix(s, "*") && strings.HasPrefix(strings.TrimSuffix(scope, "*"), strings.TrimSuffix(s, "*")):
			return true
		}
	}
	return false
}
