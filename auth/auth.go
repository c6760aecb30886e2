// Package auth owns users, passwords and claims: the
// users file in the shape of the original auth.json, bcrypt password
// hashes, Basic-auth checks and claim rules.
//
// The file looks like the original's:
//
//	{"users": {
//	  "admin": {"password": "$2a$10$...", "claims": ["all:write"]},
//	  "bob":   {"password": "$2a$10$...", "claims": ["orders:write", "all:read"]}
//	}}
//
// "password" holds a bcrypt hash. A plain-text password left by an old file
// is accepted, with a warning in the log, until it is set again.
//
// Claims: "all:read", "all:write", "<stream>:read", "<stream>:write",
// "<stream>:trim" (and "all:" or "<prefix>*:" forms of each); a write
// claim implies the read claim of the same scope. A trim claim lets its
// holder remove a stream's old segments, and nothing else; all:write
// (an administrator) may trim every stream.
package auth

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/messagevault/messagevault"
)

// Errors of the auth package.
var (
	// ErrUnauthenticated reports a missing user, or a wrong password.
	ErrUnauthenticated = errors.New("wrong user name or password")
	// ErrForbidden reports a user without the claim a request needs.
	ErrForbidden = errors.New("missing claim")
	// ErrUserNotFound reports an unknown user in an admin operation.
	ErrUserNotFound = errors.New("user not found")
	// ErrInvalidClaim reports a claim that is not one of the four forms.
	ErrInvalidClaim = errors.New("invalid claim")
	// ErrInvalidUser reports a user name or password that cannot be used.
	ErrInvalidUser = errors.New("invalid user")
	// ErrUserExists reports adding a user that exists.
	ErrUserExists = errors.New("the user exists")
	// ErrBusy reports a password check refused because MaxQueuedChecks
	// already wait for a core: the caller retries later.
	ErrBusy = errors.New("too many password checks at once")
)

// DefaultAdmin is the user created on a first start with no users.
const DefaultAdmin = "admin"

// BcryptCost is the bcrypt cost of new password hashes.
const BcryptCost = bcrypt.DefaultCost

// cacheTTL is how long a verified password is remembered, so that bcrypt
// (tens of milliseconds by design) runs once per user and password, not per
// request.
const cacheTTL = 5 * time.Minute

// User is one entry of the users file.
type User struct {
	// Password is a bcrypt hash (or, in an old file, plain text).
	Password string `json:"password"`
	// Claims lists what the user may do.
	Claims []string `json:"claims"`
}

// File is the users file: the JSON document of auth.json.
type File struct {
	Users map[string]*User `json:"users"`
	// Tokens are the bearer tokens, by id (see tokens.go); absent in the
	// original's files.
	Tokens map[string]*Token `json:"tokens,omitempty"`
}

// Source is where the users file lives: a local file, or a blob in the
// mv-sys container.
type Source interface {
	// Load returns the file's bytes, or an error wrapping
	// fs.ErrNotExist if there is none yet.
	Load(ctx context.Context) ([]byte, error)
	// Save replaces the file's bytes atomically.
	Save(ctx context.Context, data []byte) error
	// Changed reports whether the file may have changed since the last
	// Load or Save (cheap: a stat or a HEAD); an error if it cannot tell.
	Changed(ctx context.Context) (bool, error)
	// String names the source in messages.
	String() string
}

// Principal is an authenticated user.
type Principal struct {
	Name   string
	Claims []string
}

// CanRead reports whether p may read stream.
func (p Principal) CanRead(stream string) bool { return p.may(stream, false) }

// CanWrite reports whether p may write stream.
func (p Principal) CanWrite(stream string) bool { return p.may(stream, true) }

// CanReadAll reports whether p may read every stream.
func (p Principal) CanReadAll() bool { return p.has("all:read", "all:write") }

// CanTrim reports whether p may trim stream: a trim claim covering it,
// or all:write.
func (p Principal) CanTrim(stream string) bool {
	if p.CanAdmin() {
		return true
	}
	for _, c := range p.Claims {
		if scope, access, _ := strings.Cut(c, ":"); access == "trim" && covers(scope, stream) {
			return true
		}
	}
	return false
}

// CanAdmin reports whether p may manage users: an all:write claim.
func (p Principal) CanAdmin() bool { return p.has("all:write") }

func (p Principal) has(claims ...string) bool {
	for _, c := range p.Claims {
		if slices.Contains(claims, c) {
			return true
		}
	}
	return false
}

// may reports whether one of p's claims covers stream, for writing if
// write is set (a write claim also covers reading).
func (p Principal) may(stream string, write bool) bool {
	for _, c := range p.Claims {
		scope, access, _ := strings.Cut(c, ":")
		if write && access != "write" || access != "read" && access != "write" {
			continue
		}
		if covers(scope, stream) {
			return true
		}
	}
	return false
}

// covers reports whether a claim's scope names stream: "all", the stream
// itself, or a prefix of it followed by "*".
func covers(scope, stream string) bool {
	switch {
	case scope == "all":
		return true
	case strings.HasSuffix(scope, "*"):
		return strings.HasPrefix(stream, scope[:len(scope)-1])
	default:
		return scope == stream
	}
}

// ValidateClaim checks that claim is one of "all:read", "all:write",
// "all:trim", "<stream>:read", "<stream>:write", "<stream>:trim" with a
// valid stream name, or "<prefix>*:read", "<prefix>*:write" and
// "<prefix>*:trim", which cover every stream whose name starts with the
// prefix; it returns the claim with its names folded to lower case.
func ValidateClaim(claim string) (string, error) {
	scope, access, ok := strings.Cut(claim, ":")
	if !ok || (access != "read" && access != "write" && access != "trim") {
		return "", fmt.Errorf("%w %q: want all:read, all:write, <stream>:read, <stream>:write or <stream>:trim (or <prefix>*: with any of the three)", ErrInvalidClaim, claim)
	}
	if scope == "all" {
		return claim, nil
	}
	if prefix, ok := strings.CutSuffix(scope, "*"); ok {
		p := strings.ToLower(prefix)
		if p == "" || strings.Contains(p, "*") || p[0] == '-' || strings.Contains(p, "--") || strings.Trim(p, "abcdefghijklmnopqrstuvwxyz0123456789-") != "" {
			return "", fmt.Errorf("%w %q: a prefix claim is the start of stream names (a-z, 0-9, '-'; not starting with '-') followed by one '*', as in orders-*:read", ErrInvalidClaim, claim)
		}
		return p + "*:" + access, nil
	}
	name, err := messagevault.NormalizeStreamName(scope)
	if err != nil {
		return "", fmt.Errorf("%w %q: %w", ErrInvalidClaim, claim, err)
	}
	return name + ":" + access, nil
}

// Users is the set of users, loaded from a Source and reloaded when it
// changes. It is safe for concurrent use. Checking a password or a token
// never waits for storage: the source is watched in the background (every
// RefreshEvery) until Close.
type Users struct {
	src Source
	log *slog.Logger

	// srcMu serializes the source's I/O: the watcher's reloads and
	// updates, so that a reload never puts back what an update replaced.
	srcMu sync.Mutex

	mu        sync.Mutex
	file      File
	cacheKey  []byte
	verified  map[string]verified // user name -> last verified password
	checking  map[string]*check   // bcrypt checks in progress, by digest and hash
	warnedOld map[string]bool

	stop      context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once
}

// RefreshEvery is how often Users checks its source for changes made
// elsewhere (another node, `messagevault users`, an edit by hand).
const RefreshEvery = time.Second

// refreshTimeout bounds one check of the source.
const refreshTimeout = 10 * time.Second

type verified struct {
	digest [32]byte
	hash   string // the stored password it was checked against
	until  time.Time
}

// Open loads the users from src (an absent file means no users yet) and
// watches it for changes until Close.
func Open(ctx context.Context, src Source, log *slog.Logger) (*Users, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	key := make([]byte, 32)
	rand.Read(key)
	u := &Users{src: src, log: log, cacheKey: key, verified: map[string]verified{}, checking: map[string]*check{}, warnedOld: map[string]bool{}, done: make(chan struct{})}
	f, err := u.read(ctx)
	if err != nil {
		return nil, err
	}
	u.file = f
	wctx, stop := context.WithCancel(context.Background())
	u.stop = stop
	go u.watch(wctx)
	return u, nil
}

// Close stops watching the source.
func (u *Users) Close() error {
	u.closeOnce.Do(func() {
		u.stop()
		<-u.done
	})
	return nil
}

// read loads and decodes the file (none: no users).
func (u *Users) read(ctx context.Context) (File, error) {
	data, err := u.load(ctx)
	if err != nil {
		return File{}, err
	}
	return u.decode(data)
}

// load returns the file's bytes (nil: there is none).
func (u *Users) load(ctx context.Context) ([]byte, error) {
	data, err := u.src.Load(ctx)
	if err != nil && !isNotExist(err) {
		return nil, fmt.Errorf("load users from %s: %w", u.src, err)
	}
	return data, nil
}

// decode parses the file data (nil: no users).
func (u *Users) decode(data []byte) (File, error) {
	if data == nil {
		return File{Users: map[string]*User{}}, nil
	}
	var f File
	if err := json.Unmarshal(data, &f); err != nil {
		return File{}, fmt.Errorf("load users from %s: not a users file: %w", u.src, err)
	}
	if f.Users == nil {
		f.Users = map[string]*User{}
	}
	for name, user := range f.Users {
		if user == nil {
			delete(f.Users, name)
			continue
		}
		for i, c := range user.Claims {
			if v, err := ValidateClaim(c); err == nil {
				user.Claims[i] = v // old files may spell streams in upper case
			} else {
				u.log.Warn("users file: ignoring a claim", "user", name, "err", err)
			}
		}
	}
	return f, nil
}

// clone returns a deep copy of f.
func (f File) clone() File {
	c := File{Users: make(map[string]*User, len(f.Users))}
	for name, user := range f.Users {
		c.Users[name] = &User{Password: user.Password, Claims: slices.Clone(user.Claims)}
	}
	if f.Tokens != nil {
		c.Tokens = make(map[string]*Token, len(f.Tokens))
		for id, t := range f.Tokens {
			tc := *t
			tc.Claims = slices.Clone(t.Claims)
			c.Tokens[id] = &tc
		}
	}
	return c
}

// set makes f the users.
func (u *Users) set(f File) {
	u.mu.Lock()
	u.file = f
	u.mu.Unlock()
}

// watch reloads the file when it changed, checking every RefreshEvery
// until ctx ends. A failed check or load keeps the users there are.
func (u *Users) watch(ctx context.Context) {
	defer close(u.done)
	t := time.NewTicker(RefreshEvery)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			// A tick that waited while a check hung may be picked
			// together with Close: Close wins.
			if ctx.Err() != nil {
				return
			}
		}
		err := u.reload(ctx)
		switch {
		case err != nil && ctx.Err() == nil && !failing:
			u.log.Error("users file not reloaded; keeping the previous users", "source", u.src.String(), "err", err)
			failing = true
		case err == nil && failing:
			u.log.Info("users file readable again", "source", u.src.String())
			failing = false
		}
	}
}

// reload loads the file if the source says it changed.
func (u *Users) reload(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, refreshTimeout)
	defer cancel()
	u.srcMu.Lock()
	defer u.srcMu.Unlock()
	changed, err := u.src.Changed(ctx)
	if err != nil || !changed {
		return err
	}
	f, err := u.read(ctx)
	if err != nil {
		return err
	}
	u.set(f)
	return nil
}

// Cached returns the user's principal if this name and password were
// verified within the last few minutes (and the user's stored password has
// not changed since): a check that costs no bcrypt, so it is never
// throttled.
func (u *Users) Cached(name, password string) (Principal, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	user := u.file.Users[name]
	v, cached := u.verified[name]
	if user == nil || !cached || v.hash != user.Password || !time.Now().Before(v.until) {
		return Principal{}, false
	}
	digest := u.digest(name, password)
	if subtle.ConstantTimeCompare(v.digest[:], digest[:]) != 1 {
		return Principal{}, false
	}
	return Principal{Name: name, Claims: slices.Clone(user.Claims)}, true
}

// Authenticate checks a user name and password and returns the user's
// principal. A wrong name or password gives ErrUnauthenticated (the two are
// not told apart, and cost the same time); ErrBusy means too many checks
// are waiting already.
func (u *Users) Authenticate(name, password string) (Principal, error) {
	u.mu.Lock()
	user := u.file.Users[name]
	u.mu.Unlock()
	if _, local := u.src.(*FileSource); user == nil && local {
		// A user just added to a local file ("messagevault users add")
		// works at once, not at the next watch: a stat tells.
		if err := u.reload(context.Background()); err != nil {
			u.log.Debug("users file not reloaded", "source", u.src.String(), "err", err)
		}
	}
	u.mu.Lock()
	user = u.file.Users[name]
	var stored string
	var claims []string
	if user != nil {
		stored, claims = user.Password, slices.Clone(user.Claims)
	}
	digest := u.digest(name, password)
	v, cached := u.verified[name]
	u.mu.Unlock()
	if user == nil {
		// Spend the same time as a real check, so names cannot be probed.
		if err := u.checkOnce(digest, dummyHash(), password); errors.Is(err, ErrBusy) {
			return Principal{}, err
		}
		return Principal{}, ErrUnauthenticated
	}
	if cached && v.hash == stored && time.Now().Before(v.until) && subtle.ConstantTimeCompare(v.digest[:], digest[:]) == 1 {
		return Principal{Name: name, Claims: claims}, nil
	}
	if isBcrypt(stored) {
		if err := u.checkOnce(digest, []byte(stored), password); err != nil {
			if errors.Is(err, ErrBusy) {
				return Principal{}, err
			}
			return Principal{}, ErrUnauthenticated
		}
	} else {
		// A plain-text password costs what a bcrypt check does, so that
		// its user cannot be told from an unknown one by the time taken.
		if err := u.checkOnce(digest, dummyHash(), password); errors.Is(err, ErrBusy) {
			return Principal{}, err
		}
		u.mu.Lock()
		if !u.warnedOld[name] {
			u.warnedOld[name] = true
			u.log.Warn("user has a plain-text password in the users file; set it again to store a bcrypt hash", "user", name, "source", u.src.String())
		}
		u.mu.Unlock()
		if stored == "" || subtle.ConstantTimeCompare([]byte(stored), []byte(password)) != 1 {
			return Principal{}, ErrUnauthenticated
		}
	}
	u.mu.Lock()
	u.verified[name] = verified{digest: digest, hash: stored, until: time.Now().Add(cacheTTL)}
	u.mu.Unlock()
	return Principal{Name: name, Claims: claims}, nil
}

// checkOnce runs the bcrypt check of password against hash once for all
// the requests that ask it at the same time with the same name and
// password (digest): a burst of new connections of one user costs one
// check, which they all wait for, rather than one each (refused as busy
// past MaxQueuedChecks). Unknown users and plain-text passwords go
// through it too, with the dummy hash, so that a burst takes the same
// time whether the name exists or not.
func (u *Users) checkOnce(digest [32]byte, hash []byte, password string) error {
	key := string(digest[:]) + string(hash)
	u.mu.Lock()
	if c, ok := u.checking[key]; ok {
		u.mu.Unlock()
		<-c.done
		return c.err
	}
	c := &check{done: make(chan struct{})}
	u.checking[key] = c
	u.mu.Unlock()
	defer func() {
		u.mu.Lock()
		delete(u.checking, key)
		u.mu.Unlock()
		close(c.done)
	}()
	c.err = compareHash(hash, password)
	return c.err
}

// check is a bcrypt check in progress, which others may wait for.
type check struct {
	done chan struct{}
	err  error
}

func (u *Users) digest(name, password string) [32]byte {
	m := hmac.New(sha256.New, u.cacheKey)
	// The name's length first, so that no two (name, password) pairs
	// hash the same bytes.
	m.Write(binary.BigEndian.AppendUint32(nil, uint32(len(name))))
	m.Write([]byte(name))
	m.Write([]byte(password))
	var d [32]byte
	copy(d[:], m.Sum(nil))
	return d
}

// dummyHash is checked against for unknown users; made on first use, so
// that commands that never authenticate do not pay for it.
var dummyHash = sync.OnceValue(func() []byte {
	h, _ := bcrypt.GenerateFromPassword([]byte("not a password"), BcryptCost)
	return h
})

// bcryptSlots caps concurrent bcrypt checks at the number of cores, so
// that a flood of wrong passwords queues instead of starving the server.
var bcryptSlots = make(chan struct{}, runtime.NumCPU())

// MaxQueuedChecks bounds the password checks waiting for a core; beyond
// it a check fails at once with ErrBusy, so a flood of wrong passwords
// cannot make every login wait behind it.
const MaxQueuedChecks = 32

// queued counts the checks waiting for a slot.
var queued atomic.Int32

// compareHash runs one bcrypt check when a core is free, or fails with
// ErrBusy when MaxQueuedChecks are waiting already.
func compareHash(hash []byte, password string) error {
	select {
	case bcryptSlots <- struct{}{}:
	default:
		if queued.Add(1) > MaxQueuedChecks {
			queued.Add(-1)
			return ErrBusy
		}
		bcryptSlots <- struct{}{}
		queued.Add(-1)
	}
	defer func() { <-bcryptSlots }()
	return bcrypt.CompareHashAndPassword(hash, []byte(password))
}

func isBcrypt(s string) bool {
	return strings.HasPrefix(s, "$2a$") || strings.HasPrefix(s, "$2b$") || strings.HasPrefix(s, "$2y$")
}

// Empty reports whether there are no users.
func (u *Users) Empty() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.file.Users) == 0
}

// List returns the users' names and claims, sorted by name (no passwords).
func (u *Users) List() []Principal {
	u.mu.Lock()
	defer u.mu.Unlock()
	var out []Principal
	for name, user := range u.file.Users {
		out = append(out, Principal{Name: name, Claims: slices.Clone(user.Claims)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Lookup returns a user's current principal (its claims as the users
// file has them now), or false if there is no such user any more: a
// long-running request checks with it that its user still may do what it
// does.
func (u *Users) Lookup(name string) (Principal, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	user := u.file.Users[name]
	if user == nil {
		return Principal{}, false
	}
	return Principal{Name: name, Claims: slices.Clone(user.Claims)}, true
}

// update applies fn to a fresh copy of the file and saves it; once saved,
// it is the users. If fn or the save fails, the users are the file as
// read: the read made the source's change check current, so what it
// brought (a change made elsewhere) must not be dropped.
func (u *Users) update(ctx context.Context, fn func(f *File) error) error {
	u.srcMu.Lock()
	defer u.srcMu.Unlock()
	data, err := u.load(ctx)
	if err != nil {
		return err
	}
	fresh, err := u.decode(data)
	if err != nil {
		return err
	}
	f := fresh.clone() // fn's own copy (fn changes it in place)
	if err := fn(&f); err != nil {
		u.set(fresh)
		return err
	}
	out, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		u.set(fresh)
		return err
	}
	if err := u.src.Save(ctx, append(out, '\n')); err != nil {
		u.set(fresh)
		return fmt.Errorf("save users to %s: %w", u.src, err)
	}
	u.set(f)
	return nil
}

// Add creates user name with password and claims, or fails if it exists.
func (u *Users) Add(ctx context.Context, name, password string, claims ...string) error {
	if err := validateName(name); err != nil {
		return err
	}
	cl, err := validateClaims(claims)
	if err != nil {
		return err
	}
	hash, err := hashPassword(password)
	if err != nil {
		return err
	}
	return u.update(ctx, func(f *File) error {
		if f.Users[name] != nil {
			return fmt.Errorf("add user %q: %w", name, ErrUserExists)
		}
		f.Users[name] = &User{Password: hash, Claims: cl}
		return nil
	})
}

// Remove deletes user name.
func (u *Users) Remove(ctx context.Context, name string) error {
	return u.update(ctx, func(f *File) error {
		if f.Users[name] == nil {
			return fmt.Errorf("remove user %q: %w", name, ErrUserNotFound)
		}
		delete(f.Users, name)
		return nil
	})
}

// SetPassword replaces the password of user name.
func (u *Users) SetPassword(ctx context.Context, name, password string) error {
	hash, err := hashPassword(password)
	if err != nil {
		return err
	}
	return u.update(ctx, func(f *File) error {
		if f.Users[name] == nil {
			return fmt.Errorf("set password of %q: %w", name, ErrUserNotFound)
		}
		f.Users[name].Password = hash
		return nil
	})
}

// Grant adds claims to user name (claims it already has are kept once).
func (u *Users) Grant(ctx context.Context, name string, claims ...string) error {
	cl, err := validateClaims(claims)
	if err != nil {
		return err
	}
	return u.update(ctx, func(f *File) error {
		user := f.Users[name]
		if user == nil {
			return fmt.Errorf("grant to %q: %w", name, ErrUserNotFound)
		}
		for _, c := range cl {
			if !slices.Contains(user.Claims, c) {
				user.Claims = append(user.Claims, c)
			}
		}
		return nil
	})
}

// Revoke removes claims from user name.
func (u *Users) Revoke(ctx context.Context, name string, claims ...string) error {
	cl, err := validateClaims(claims)
	if err != nil {
		return err
	}
	return u.update(ctx, func(f *File) error {
		user := f.Users[name]
		if user == nil {
			return fmt.Errorf("revoke from %q: %w", name, ErrUserNotFound)
		}
		user.Claims = slices.DeleteFunc(user.Claims, func(c string) bool { return slices.Contains(cl, c) })
		return nil
	})
}

// EnsureAdmin creates DefaultAdmin with the all:write claim when there are
// no users at all. The password is password if not empty, else a random
// one. It returns the password it set, and "" if users already existed.
func (u *Users) EnsureAdmin(ctx context.Context, password string) (string, error) {
	if !u.Empty() {
		return "", nil
	}
	if password == "" {
		password = RandomPassword()
	}
	if err := u.Add(ctx, DefaultAdmin, password, "all:write"); err != nil {
		// Another node of the cluster may have created the first users
		// at the same moment: then there is nothing to do.
		if !u.Empty() {
			return "", nil
		}
		return "", err
	}
	return password, nil
}

// RandomPassword returns a new random password of 24 characters.
func RandomPassword() string {
	return rand.Text()[:24]
}

func hashPassword(password string) (string, error) {
	if password == "" {
		return "", fmt.Errorf("%w: the password is empty", ErrInvalidUser)
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), BcryptCost)
	if err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	return string(h), nil
}

func validateName(name string) error {
	if name == "" || strings.ContainsAny(name, ": \t\r\n") || len(name) > 128 {
		return fmt.Errorf("%w: user name %q: must be 1 to 128 characters without ':' or spaces", ErrInvalidUser, name)
	}
	if name == ClusterUser {
		return fmt.Errorf("%w: user name %q is reserved: nodes forward writes to the leader under it, with the cluster secret, so a user of that name could never log in", ErrInvalidUser, name)
	}
	return nil
}

// ClusterUser is the user name nodes forward writes to the leader with
// (with the cluster secret, not a password): no user may take it.
const ClusterUser = "cluster-node"

func validateClaims(claims []string) ([]string, error) {
	out := make([]string, 0, len(claims))
	for _, c := range claims {
		v, err := ValidateClaim(c)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}
