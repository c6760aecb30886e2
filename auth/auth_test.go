package auth_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/messagevault/messagevault/auth"
)

func open(t *testing.T) (*auth.Users, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "auth.json")
	u, err := auth.Open(context.Background(), auth.NewFileSource(path), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	return u, path
}

// stuckSource is a users file whose change check hangs, as a HEAD request
// to storage that does not answer, until released; it counts the checks.
type stuckSource struct {
	*auth.FileSource
	release chan struct{}
	checks  chan struct{}
}

func (s *stuckSource) Changed(ctx context.Context) (bool, error) {
	select {
	case s.checks <- struct{}{}:
	default:
	}
	select {
	case <-s.release:
	case <-ctx.Done():
		return false, ctx.Err()
	}
	return s.FileSource.Changed(ctx)
}

// TestAuthenticationNeverWaitsForTheSource: the change check runs in the
// background, so a hung storage does not hold a password check, and
// Close stops the checks.
func TestAuthenticationNeverWaitsForTheSource(t *testing.T) {
	path := filepath.Join(t.TempDir(), "auth.json")
	src := &stuckSource{FileSource: auth.NewFileSource(path), release: make(chan struct{}), checks: make(chan struct{}, 1)}
	u, err := auth.Open(context.Background(), src, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Add(context.Background(), "ann", "ann-pw", "orders:read"); err != nil {
		t.Fatal(err)
	}
	<-src.checks // the watcher is now stuck in a check
	done := make(chan error, 1)
	go func() {
		_, err := u.Authenticate("ann", "ann-pw")
		if _, ok := u.Lookup("ann"); !ok && err == nil {
			err = errors.New("ann not found")
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a password check waited for the source's change check")
	}
	// Close ends the stuck check and the watcher.
	closed := make(chan struct{})
	go func() { u.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not stop the watcher")
	}
	select {
	case <-src.checks:
		t.Fatal("a change check after Close")
	case <-time.After(2 * auth.RefreshEvery):
	}
}

func TestClaims(t *testing.T) {
	for _, tt := range []struct {
		claims          []string
		stream          string
		read, write     bool
		readAll, admin_ bool
	}{
		{[]string{"all:read"}, "orders", true, false, true, false},
		{[]string{"all:write"}, "orders", true, true, true, true},
		{[]string{"orders:read"}, "orders", true, false, false, false},
		{[]string{"orders:write"}, "orders", true, true, false, false},
		{[]string{"orders:write"}, "billing", false, false, false, false},
		{nil, "orders", false, false, false, false},
		{[]string{"orders-*:read"}, "orders-eu", true, false, false, false},
		{[]string{"orders-*:write"}, "orders-eu", true, true, false, false},
		{[]string{"orders-*:write"}, "orders", false, false, false, false},
		{[]string{"orders-*:write"}, "billing-orders-eu", false, false, false, false},
		{[]string{"orders-*:read", "billing:write"}, "billing", true, true, false, false},
	} {
		p := auth.Principal{Name: "u", Claims: tt.claims}
		if p.CanRead(tt.stream) != tt.read || p.CanWrite(tt.stream) != tt.write || p.CanReadAll() != tt.readAll || p.CanAdmin() != tt.admin_ {
			t.Errorf("%v on %s: read %v write %v readAll %v admin %v", tt.claims, tt.stream, p.CanRead(tt.stream), p.CanWrite(tt.stream), p.CanReadAll(), p.CanAdmin())
		}
	}
	for c, want := range map[string]string{"all:read": "all:read", "all:write": "all:write", "Orders:read": "orders:read", "a-b-c:write": "a-b-c:write", "Orders-*:read": "orders-*:read", "o*:write": "o*:write", "x:read": "x:read"} {
		if got, err := auth.ValidateClaim(c); err != nil || got != want {
			t.Errorf("ValidateClaim(%q) = %q, %v; want %q", c, got, err, want)
		}
	}
	for _, c := range []string{"all", "orders:admin", "x_y:read", ":read", "../etc:write", "*:read", "-x*:read", "a*b*:read", "a_*:read", "o**:read"} {
		if _, err := auth.ValidateClaim(c); !errors.Is(err, auth.ErrInvalidClaim) {
			t.Errorf("ValidateClaim(%q) = %v; want ErrInvalidClaim", c, err)
		}
	}
}

// TestUserAddedElsewhereWorksAtOnce: a user added to the local users file
// by another process ("messagevault users add" while the server runs) can
// log in at once, not only after the next watch.
func TestUserAddedElsewhereWorksAtOnce(t *testing.T) {
	path := filepath.Join(t.TempDir(), "auth.json")
	ctx := context.Background()
	server, err := auth.Open(ctx, auth.NewFileSource(path), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	if _, err := server.Authenticate("late", "late-password"); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("before the add: %v", err)
	}
	cli, err := auth.Open(ctx, auth.NewFileSource(path), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	if err := cli.Add(ctx, "late", "late-password", "orders:read"); err != nil {
		t.Fatal(err)
	}
	if p, err := server.Authenticate("late", "late-password"); err != nil || p.Name != "late" {
		t.Fatalf("right after the add: %v, %v", p, err)
	}
}

func TestUsersLifecycle(t *testing.T) {
	u, path := open(t)
	if !u.Empty() {
		t.Fatal("new users file is not empty")
	}
	pw, err := u.EnsureAdmin(context.Background(), "")
	if err != nil || len(pw) < 16 {
		t.Fatalf("EnsureAdmin = %q, %v", pw, err)
	}
	if again, _ := u.EnsureAdmin(context.Background(), ""); again != "" {
		t.Fatal("EnsureAdmin created a second admin")
	}
	if p, err := u.Authenticate("admin", pw); err != nil || !p.CanAdmin() {
		t.Fatalf("admin login: %+v, %v", p, err)
	}
	raw, _ := os.ReadFile(path)
	if strings.Contains(string(raw), pw) || !strings.Contains(string(raw), `"$2a$`) {
		t.Fatalf("users file holds more than a bcrypt hash:\n%s", raw)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Fatalf("users file mode %v, want 0600", st.Mode().Perm())
	}

	if err := u.Add(context.Background(), "bob", "bob-1", "orders:write"); err != nil {
		t.Fatal(err)
	}
	if err := u.Add(context.Background(), "bob", "x"); err == nil {
		t.Fatal("added bob twice")
	}
	if err := u.Add(context.Background(), "bad name", "x"); err == nil {
		t.Fatal("accepted a name with a space")
	}
	if err := u.Add(context.Background(), "carol", "x", "nonsense"); !errors.Is(err, auth.ErrInvalidClaim) {
		t.Fatalf("Add with a bad claim: %v", err)
	}
	if _, err := u.Authenticate("bob", "bob-1"); err != nil {
		t.Fatal(err)
	}
	// A changed password invalidates the cached check at once.
	if err := u.SetPassword(context.Background(), "bob", "bob-2"); err != nil {
		t.Fatal(err)
	}
	if _, err := u.Authenticate("bob", "bob-1"); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("old password after SetPassword: %v", err)
	}
	if _, err := u.Authenticate("bob", "bob-2"); err != nil {
		t.Fatal(err)
	}
	if err := u.Grant(context.Background(), "bob", "all:read", "orders:write"); err != nil {
		t.Fatal(err)
	}
	if err := u.Revoke(context.Background(), "bob", "orders:write"); err != nil {
		t.Fatal(err)
	}
	p, _ := u.Authenticate("bob", "bob-2")
	if p.CanWrite("orders") || !p.CanRead("billing") {
		t.Fatalf("bob's claims after grant and revoke: %v", p.Claims)
	}
	if err := u.Remove(context.Background(), "bob"); err != nil {
		t.Fatal(err)
	}
	if _, err := u.Authenticate("bob", "bob-2"); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("removed user: %v", err)
	}
	if err := u.Remove(context.Background(), "bob"); !errors.Is(err, auth.ErrUserNotFound) {
		t.Fatalf("removing a missing user: %v", err)
	}
	if names := u.List(); len(names) != 1 || names[0].Name != "admin" {
		t.Fatalf("List = %+v", names)
	}
}

func TestReloadsWhenTheFileChanges(t *testing.T) {
	u, path := open(t)
	if err := u.Add(context.Background(), "admin", "pw", "all:write"); err != nil {
		t.Fatal(err)
	}
	// Another process (the CLI) adds a user to the file.
	other, err := auth.Open(context.Background(), auth.NewFileSource(path), nil)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond) // a distinct mtime
	if err := other.Add(context.Background(), "dave", "dave-pw", "all:read"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := u.Authenticate("dave", "dave-pw"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the server's users never saw the new user")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestPlainTextPasswordFromAnOldFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "auth.json")
	old := auth.File{Users: map[string]*auth.User{"bob": {Password: "pass", Claims: []string{"inventory:write", "all:read"}}}}
	raw, _ := json.Marshal(old)
	os.WriteFile(path, raw, 0o600)
	u, err := auth.Open(context.Background(), auth.NewFileSource(path), nil)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := u.Authenticate("bob", "pass"); err != nil || !p.CanWrite("inventory") {
		t.Fatalf("plain-text login: %+v, %v", p, err)
	}
	if _, err := u.Authenticate("bob", "pas"); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("wrong plain-text password: %v", err)
	}
}

func TestBrokenFileIsAClearError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "auth.json")
	os.WriteFile(path, []byte("{not json"), 0o600)
	_, err := auth.Open(context.Background(), auth.NewFileSource(path), nil)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "not a users file") {
		t.Fatalf("Open of a broken file: %v", err)
	}
}

// A flood of password checks does not queue without end: beyond
// MaxQueuedChecks waiting, a check fails at once with ErrBusy.
func TestPasswordChecksQueueIsBounded(t *testing.T) {
	u, _ := open(t)
	const flood = 4 * auth.MaxQueuedChecks
	errs := make(chan error, flood)
	for i := 0; i < flood; i++ {
		go func() {
			// Different guesses: the same one, asked at the same time,
			// is checked once for all.
			_, err := u.Authenticate("nobody", fmt.Sprint("guess", i))
			errs <- err
		}()
	}
	busy := 0
	for i := 0; i < flood; i++ {
		switch err := <-errs; {
		case errors.Is(err, auth.ErrBusy):
			busy++
		case !errors.Is(err, auth.ErrUnauthenticated):
			t.Fatalf("check: %v", err)
		}
	}
	if busy == 0 || busy > flood-auth.MaxQueuedChecks {
		t.Fatalf("%d of %d checks refused as busy; the queue holds %d", busy, flood, auth.MaxQueuedChecks)
	}
}

// A user with a plain-text password (an old file) costs a bcrypt check
// like any other, so the time taken does not tell the user exists.
func TestPlainTextPasswordCostsABcryptCheck(t *testing.T) {
	path := filepath.Join(t.TempDir(), "auth.json")
	raw, _ := json.Marshal(auth.File{Users: map[string]*auth.User{"bob": {Password: "pass"}}})
	os.WriteFile(path, raw, 0o600)
	u, err := auth.Open(context.Background(), auth.NewFileSource(path), nil)
	if err != nil {
		t.Fatal(err)
	}
	u.Authenticate("nobody", "warm up") // makes the dummy hash
	median := func(name string) time.Duration {
		var d []time.Duration
		for i := 0; i < 5; i++ {
			start := time.Now()
			u.Authenticate(name, "wrong")
			d = append(d, time.Since(start))
		}
		slices.Sort(d)
		return d[2]
	}
	plain, unknown := median("bob"), median("nobody")
	if plain < unknown/4 {
		t.Fatalf("a plain-text user's wrong password took %v, an unknown user's %v: the user can be probed", plain, unknown)
	}
}

// The user name nodes forward writes under cannot be taken by a user: the
// server would check the cluster secret for it, never the user's password.
func TestClusterUserNameIsReserved(t *testing.T) {
	u, _ := open(t)
	if err := u.Add(context.Background(), auth.ClusterUser, "pw", "all:read"); err == nil || !strings.Contains(err.Error(), "reserved") {
		t.Fatalf("adding %q: %v", auth.ClusterUser, err)
	}
}

// A token carries only claims its user's cover: all:read only under
// all:read or all:write, a prefix under a shorter prefix, read under
// write.
func TestTokenClaimsAreASubset(t *testing.T) {
	u, _ := open(t)
	u.Add(context.Background(), "p", "pw", "orders-*:write")
	for claims, ok := range map[string]bool{
		"orders-eu:read":  true,
		"orders-eu:write": true,
		"orders-e*:read":  true,
		"orders*:read":    false,
		"all:read":        false,
		"billing:read":    false,
	} {
		_, _, err := u.CreateToken(context.Background(), "p", []string{claims}, time.Hour)
		if (err == nil) != ok {
			t.Errorf("token with %s for orders-*:write: %v", claims, err)
		}
	}
	token, info, err := u.CreateToken(context.Background(), "p", []string{"orders-eu:read"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	p, err := u.AuthenticateToken(token)
	if err != nil || !p.CanRead("orders-eu") || p.CanWrite("orders-eu") || p.CanRead("orders-us") {
		t.Fatalf("token principal %+v, %v", p, err)
	}
	if _, err := u.AuthenticateToken(token[:len(token)-1] + "x"); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("a wrong secret: %v", err)
	}
	if err := u.RevokeToken(context.Background(), info.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := u.AuthenticateToken(token); !errors.Is(err, auth.ErrUnauthenticated) {
		t.Fatalf("a revoked token: %v", err)
	}
}

// TestFailedUpdateSeesOutsideChanges: an update that fails (the user
// exists) after reading the file installs what it read: a user removed
// elsewhere meanwhile loses access at once, instead of when the file
// changes again (the update's read made the change check see nothing new).
func TestFailedUpdateSeesOutsideChanges(t *testing.T) {
	ctx := context.Background()
	u, path := open(t)
	for _, name := range []string{"admin", "bob"} {
		if err := u.Add(ctx, name, "pw", "all:read"); err != nil {
			t.Fatal(err)
		}
	}
	other, err := auth.Open(ctx, auth.NewFileSource(path), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	time.Sleep(10 * time.Millisecond) // a distinct mtime
	if err := other.Remove(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if err := u.Add(ctx, "admin", "pw2"); !errors.Is(err, auth.ErrUserExists) {
		t.Fatalf("adding an existing user: %v", err)
	}
	if _, ok := u.Lookup("bob"); ok {
		t.Fatal("bob, removed elsewhere, is still a user after a failed update")
	}
	time.Sleep(2 * auth.RefreshEvery)
	if _, ok := u.Lookup("bob"); ok {
		t.Fatal("bob, removed elsewhere, is still a user after the change checks")
	}
}

// TestFirstAdminRace: two servers start at once on empty storage; the one
// that loses the race to create admin starts anyway (no error, no
// password).
func TestFirstAdminRace(t *testing.T) {
	ctx := context.Background()
	a, path := open(t)
	b, err := auth.Open(ctx, auth.NewFileSource(path), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if pw, err := a.EnsureAdmin(ctx, ""); err != nil || pw == "" {
		t.Fatalf("first admin: %q, %v", pw, err)
	}
	if pw, err := b.EnsureAdmin(ctx, ""); err != nil || pw != "" {
		t.Fatalf("the second server's EnsureAdmin: %q, %v; want nothing to do", pw, err)
	}
}

// TestConcurrentLoginsShareOneCheck: a burst of requests from one user
// with the right password, with nothing remembered yet (a server just
// started, a thousand producers connecting), is answered by one bcrypt
// check that they all wait for, not refused as busy.
func TestConcurrentLoginsShareOneCheck(t *testing.T) {
	u, path := open(t)
	if err := u.Add(context.Background(), "ann", "ann-pw", "orders:write"); err != nil {
		t.Fatal(err)
	}
	cold, err := auth.Open(context.Background(), auth.NewFileSource(path), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cold.Close()
	const burst = 8 * auth.MaxQueuedChecks
	errs := make(chan error, burst)
	for range burst {
		go func() {
			_, err := cold.Authenticate("ann", "ann-pw")
			errs <- err
		}()
	}
	for range burst {
		if err := <-errs; err != nil {
			t.Fatalf("a login of the burst: %v", err)
		}
	}
}
