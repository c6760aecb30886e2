// Package server is MessageVault's HTTP API (docs/API.md): the routes
// compatible with the original (publish in the transfer format, read
// grants), JSON publish, reads and tails through the server, the streams
// listing, health and readiness, and Prometheus metrics. It authenticates
// with Basic auth against package auth, bounds memory with a body limit and
// an in-flight budget, and maps every error to a JSON answer in one place
// (errors.go).
package server

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/auth"
	"github.com/messagevault/messagevault/cluster"
	"github.com/messagevault/messagevault/vault"
)

// Server defaults.
const (
	// DefaultMaxBodyBytes is the largest publish body accepted (413 beyond).
	DefaultMaxBodyBytes = 32 << 20
	// DefaultMaxInflightBytes caps the publish bodies held in memory at
	// once; past it publishes are answered 429 with Retry-After.
	DefaultMaxInflightBytes = 256 << 20
	// DefaultReadLimit is how many messages a read returns without ?limit=.
	DefaultReadLimit = 100
	// MaxReadLimit is the largest ?limit= of a JSON read.
	MaxReadLimit = 10000
	// MaxRawReadLimit is the largest ?limit= of a raw read: its answers
	// are cut by MaxReadBytes rather than by a count.
	MaxRawReadLimit = 1 << 20
	// MaxReadBytes caps the record bytes of one read answer.
	MaxReadBytes = 8 << 20
	// MaxWait caps ?wait= of a long-poll read.
	MaxWait = 60 * time.Second
	// DefaultGrantTTL is how long a read grant is valid.
	DefaultGrantTTL = 7 * 24 * time.Hour
	// KeepAliveInterval is how often an idle server-sent-events tail sends
	// a comment, so proxies keep the connection.
	KeepAliveInterval = 15 * time.Second
)

// Node is this server's place in the cluster (package cluster's Node).
type Node interface {
	// Role returns "leader" or "follower".
	Role() string
	// Leader returns the leader's endpoint, "" if none is known.
	Leader() string
	// Refresh reads the published leader endpoint now and returns it: a
	// follower calls it when the leader it knows failed it.
	Refresh(ctx context.Context) string
}

// ClusterUser is the user name followers forward writes to the leader
// with, together with the cluster secret.
const ClusterUser = auth.ClusterUser

// Config configures a Server. Storage (or Vault) and Users are required.
type Config struct {
	// Vault writes the streams while this node leads; SetVault changes it
	// (nil on a follower).
	Vault *vault.Vault
	// ClusterRoots, if set, are the certificate authorities trusted when
	// forwarding to a leader over HTTPS (the system's roots plus the
	// cluster's own CA); nil: the system's roots.
	ClusterRoots *x509.CertPool
	// Instance names this process in /readyz (a node checking whether
	// another live process uses its advertised URL compares it).
	Instance string
	// Storage is read from; default Vault's storage.
	Storage messagevault.Storage
	// Node says who leads; nil for a single node that always leads.
	Node Node
	// Self is this node's advertised URL: forwarded writes name it, and
	// the status page shows it.
	Self string
	// ClusterSecret authenticates writes forwarded by followers as
	// ClusterUser; empty disables forwarding to this node.
	ClusterSecret string
	// Users authenticates requests.
	Users *auth.Users
	// Logger receives the access log and errors. Default: discard.
	Logger *slog.Logger
	// MaxBodyBytes: default DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// MaxInflightBytes: default DefaultMaxInflightBytes.
	MaxInflightBytes int64
	// GrantTTL: default DefaultGrantTTL.
	GrantTTL time.Duration
	// ReadTimeout bounds how long a client may take to send a request,
	// headers and body, before the server closes the connection; publish
	// bodies get BodyReadTimeout once the user is authorized. Default
	// DefaultReadTimeout.
	ReadTimeout time.Duration
	// WriteTimeout bounds how long a read answer may take to be sent, and
	// how long an event stream may wait for a client to take what it was
	// sent; a client that does not read is cut off. Default
	// DefaultWriteTimeout.
	WriteTimeout time.Duration
	// MaxReads caps the reads (GET /streams/{s}/messages without wait)
	// served at once; MaxTails the event streams and long-polls. Beyond
	// them a request gets 429 busy. Defaults DefaultMaxReads and
	// DefaultMaxTails.
	MaxReads, MaxTails int
	// MaxTailDuration ends an event stream after this long (the client
	// reconnects with Last-Event-ID, and authenticates again). Default
	// DefaultMaxTailDuration.
	MaxTailDuration time.Duration
	// ClaimRecheck is how often an event stream checks that its user
	// still exists and may read the stream. Default DefaultClaimRecheck.
	ClaimRecheck time.Duration
	// Registry receives the server's metrics and is served at /metrics.
	// Default: a new registry with the Go and process collectors.
	Registry *prometheus.Registry
	// Throttle slows down password guessing; share it with the process's
	// other listeners (the Kafka gateway). Default: a new one.
	Throttle *auth.Throttle
}

// Defaults of Config.
const (
	DefaultReadTimeout  = 30 * time.Second
	DefaultWriteTimeout = 60 * time.Second
	DefaultMaxReads     = 256
	DefaultMaxTails     = 4096
	// DefaultMaxTailDuration: an event stream lasts at most an hour.
	DefaultMaxTailDuration = time.Hour
	// DefaultClaimRecheck: a removed user's event streams end within
	// 10 s.
	DefaultClaimRecheck = 10 * time.Second
)

// ForwardTimeout bounds a write forwarded to the leader.
const ForwardTimeout = 60 * time.Second

// SetVault makes v the vault that writes (nil: this node does not lead)
// and returns the one it replaces, for the caller to close. The Server is
// the one owner of the current vault: ask it with Vault.
func (s *Server) SetVault(v *vault.Vault) (old *vault.Vault) { return s.vault.Swap(v) }

// Vault returns the vault that writes, nil while this node does not lead.
func (s *Server) Vault() *vault.Vault { return s.vault.Load() }

// Throttle returns the server's throttle of failed sign-ins, for the
// process's other listeners to share.
func (s *Server) Throttle() *auth.Throttle { return s.throttle }

func (s *Server) role() string {
	if s.cfg.Node == nil {
		return "leader"
	}
	return s.cfg.Node.Role()
}

func (s *Server) leader() string {
	if s.cfg.Node == nil {
		return ""
	}
	return s.cfg.Node.Leader()
}

// LeaderWait bounds how long a follower whose leader failed it (did not
// answer a connection, or no longer leads) keeps re-reading the published
// leader for a new one before it answers 503.
const LeaderWait = time.Second

// newLeader re-reads the published leader until it is one other than
// failed, for up to LeaderWait, and returns it ("" if none was found).
func (s *Server) newLeader(ctx context.Context, failed string) string {
	if s.cfg.Node == nil {
		return ""
	}
	ctx, cancel := context.WithTimeout(ctx, LeaderWait)
	defer cancel()
	for {
		if l := s.cfg.Node.Refresh(ctx); l != "" && l != failed {
			return l
		}
		select {
		case <-ctx.Done():
			return ""
		case <-time.After(cluster.RefreshEvery):
		}
	}
}

// Server is the HTTP API. It implements http.Handler.
type Server struct {
	noise    limiter     // of 503 log lines
	notReady atomic.Bool // FailReadiness was called
	cfg      Config
	log      *slog.Logger
	vault    atomic.Pointer[vault.Vault]
	client   *http.Client
	throttle *auth.Throttle // of failed password checks
	mux      *http.ServeMux
	handler  http.Handler
	metrics  *metrics

	inflight atomic.Int64 // bytes of publishes held (see budget.go)
	shares   shares       // of inflight, by user
	reads    atomic.Int32 // reads being served
	tails    atomic.Int32 // event streams and long-polls being served
	status   *status

	shutdownOnce sync.Once
	shutdown     chan struct{}
	background   sync.WaitGroup // what New started; Close waits for it
}

// New returns a server for cfg.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.MaxInflightBytes <= 0 {
		cfg.MaxInflightBytes = DefaultMaxInflightBytes
	}
	if cfg.GrantTTL <= 0 {
		cfg.GrantTTL = DefaultGrantTTL
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = DefaultReadTimeout
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.MaxReads <= 0 {
		cfg.MaxReads = DefaultMaxReads
	}
	if cfg.MaxTails <= 0 {
		cfg.MaxTails = DefaultMaxTails
	}
	if cfg.MaxTailDuration <= 0 {
		cfg.MaxTailDuration = DefaultMaxTailDuration
	}
	if cfg.ClaimRecheck <= 0 {
		cfg.ClaimRecheck = DefaultClaimRecheck
	}
	if cfg.Throttle == nil {
		cfg.Throttle = auth.NewThrottle()
	}
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
		cfg.Registry.MustRegister(prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	}
	if cfg.Storage == nil && cfg.Vault != nil {
		cfg.Storage = cfg.Vault.Storage()
	}
	fwd := &http.Client{Timeout: ForwardTimeout}
	if cfg.ClusterRoots != nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{RootCAs: cfg.ClusterRoots, MinVersion: tls.VersionTLS12}
		fwd.Transport = tr
	}
	s := &Server{cfg: cfg, log: cfg.Logger, mux: http.NewServeMux(), shutdown: make(chan struct{}), client: fwd, throttle: cfg.Throttle}
	s.vault.Store(cfg.Vault)
	s.status = newStatus()
	sctx, cancel := context.WithCancel(context.Background())
	s.background.Go(func() {
		<-s.shutdown
		cancel()
	})
	s.background.Go(func() { s.status.sampleLoop(sctx) })
	s.metrics = newMetrics(cfg.Registry, s)
	cfg.Registry.MustRegister(newCursorLag(s))
	s.routes()
	s.handler = s.middleware(s.mux)
	return s
}

func (s *Server) routes() {
	s.mux.HandleFunc("GET /{$}", s.handleBanner)
	s.mux.HandleFunc("POST /streams/{stream}", s.handlePublish)
	s.mux.HandleFunc("POST /streams/{stream}/messages", s.handlePublishJSON)
	s.mux.HandleFunc("GET /streams/{stream}", s.handleGrant)
	s.mux.HandleFunc("DELETE /streams/{stream}/grants", s.handleRevokeGrants)
	s.mux.HandleFunc("DELETE /streams/{stream}", s.handleDeleteStream)
	s.mux.HandleFunc("GET /streams/{stream}/messages", s.handleRead)
	s.mux.HandleFunc("DELETE /streams/{stream}/messages", s.handleTrim)
	s.mux.HandleFunc("GET /streams/{stream}/cursors", s.handleListCursors)
	s.mux.HandleFunc("GET /streams/{stream}/cursors/{name}", s.handleGetCursor)
	s.mux.HandleFunc("PUT /streams/{stream}/cursors/{name}", s.handlePutCursor)
	s.mux.HandleFunc("DELETE /streams/{stream}/cursors/{name}", s.handleDeleteCursor)
	s.mux.HandleFunc("GET /streams/{stream}/cursors/{name}/grant", s.handleCursorGrant)
	s.mux.HandleFunc("GET /streams/{stream}/events", s.handleEvents)
	s.mux.HandleFunc("GET /streams/{stream}/producers/{producer}", s.handleProducer)
	s.mux.HandleFunc("GET /streams", s.handleStreams)
	s.mux.HandleFunc("POST /tokens", s.handleCreateToken)
	s.mux.HandleFunc("GET /tokens", s.handleTokens)
	s.mux.HandleFunc("DELETE /tokens/{id}", s.handleRevokeToken)
	s.mux.HandleFunc("GET /users", s.handleUsers)
	s.mux.HandleFunc("POST /users", s.handleAddUser)
	s.mux.HandleFunc("DELETE /users/{name}", s.handleRemoveUser)
	s.mux.HandleFunc("PUT /users/{name}/password", s.handleSetPassword)
	s.mux.HandleFunc("POST /users/{name}/claims", s.handleClaims)
	s.mux.HandleFunc("GET /healthz", s.handleHealth)
	s.mux.HandleFunc("GET /readyz", s.handleReady)
	s.mux.HandleFunc("GET /metrics", s.handleMetrics)
	s.mux.Handle("GET /ui", http.RedirectHandler("/ui/", http.StatusMovedPermanently))
	s.mux.HandleFunc("GET /ui/{$}", s.handleUI)
	s.mux.HandleFunc("GET /ui/status", s.handleUIStatus)
	s.mux.HandleFunc("/", s.handleNotFound)
}

// MetricsHandler serves the metrics without authentication, for a
// listener of its own on a private address (serve --metrics-listen).
func (s *Server) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(s.cfg.Registry, promhttp.HandlerOpts{})
}

// handleMetrics serves GET /metrics to users who may read every stream:
// the metrics name every stream, and tell the load of each.
func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request) {
	p, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	if !p.CanReadAll() {
		s.writeError(w, r, forbidden(p.Name, "all:read"))
		return
	}
	s.MetricsHandler().ServeHTTP(w, r)
}

// handleNotFound answers unknown routes with 404, and known ones with
// the wrong method with 405 and the methods they take in Allow, in JSON
// like every other error.
func (s *Server) handleNotFound(w http.ResponseWriter, r *http.Request) {
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodDelete} {
		probe := &http.Request{Method: m, URL: r.URL, Host: r.Host, Header: http.Header{}}
		if _, pattern := s.mux.Handler(probe); pattern != "/" && m != r.Method {
			allow = append(allow, m)
		}
	}
	if len(allow) > 0 {
		w.Header().Set("Allow", strings.Join(allow, ", "))
		writeJSON(w, http.StatusMethodNotAllowed, apiError{Error: fmt.Sprintf("%s is not a method of %s: it takes %s", r.Method, r.URL.Path, strings.Join(allow, ", ")), Type: "method-not-allowed"})
		return
	}
	writeJSON(w, http.StatusNotFound, apiError{Error: fmt.Sprintf("no route %s %s (the API's routes are listed in docs/API.md of the MessageVault repository)", r.Method, r.URL.Path), Type: "not-found"})
}

// ServeHTTP serves one request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// BeginShutdown makes /readyz fail and ends long-polls and event streams,
// so that http.Server.Shutdown can finish; publishes in flight still
// complete. Call it before http.Server.Shutdown.
func (s *Server) BeginShutdown() {
	s.shutdownOnce.Do(func() { close(s.shutdown) })
}

// Close stops what New started (the status sampler) and, as
// BeginShutdown, ends long-polls and event streams. It does not close
// the vault (SetVault(nil) hands it back) or the storage.
func (s *Server) Close() error {
	s.BeginShutdown()
	s.background.Wait()
	return nil
}

func (s *Server) shuttingDown() bool {
	if s.notReady.Load() {
		return true
	}
	select {
	case <-s.shutdown:
		return true
	default:
		return false
	}
}

// FailReadiness makes /readyz answer 503 "shutting down" while every other
// route still serves: the first step of a drain, so that a load balancer
// stops sending requests here before BeginShutdown.
func (s *Server) FailReadiness() { s.notReady.Store(true) }

// untilShutdown returns a context that ends with ctx or at BeginShutdown.
func (s *Server) untilShutdown(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-s.shutdown:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

type ctxKey int

const (
	keyRequestID ctxKey = iota
	keyUser
)

// statusWriter records the status and size of an answer.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach Flush and deadlines.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// sameSite refuses a request that changes something (any method but GET,
// HEAD and OPTIONS) when a browser says it comes from another site: a
// page elsewhere must not publish with the credentials a browser keeps
// for this server. Browsers send Sec-Fetch-Site, and Origin on every
// cross-origin POST; other clients send neither.
func sameSite(r *http.Request) error {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return nil
	}
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" && site != "none" {
		return fmt.Errorf("%w: Sec-Fetch-Site is %q: this server takes writes only from its own pages and from clients that are not browsers", errCrossSite, site)
	}
	if origin := r.Header.Get("Origin"); origin != "" {
		u, err := url.Parse(origin)
		if err != nil || u.Host == "" || !strings.EqualFold(u.Host, r.Host) {
			return fmt.Errorf("%w: Origin %q is not this server (%s)", errCrossSite, origin, r.Host)
		}
	}
	return nil
}

// wellFormedID reports a client's request id worth logging: 1 to 64
// characters of letters, digits and . _ : -.
func wellFormedID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}

// middleware adds the request id, the access log and the request metrics.
func (s *Server) middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		// The request id is always the server's own, so that no client
		// can make two requests share one; a well-formed id the client
		// sent (a follower sends its own) is logged beside it.
		var b [8]byte
		rand.Read(b[:])
		id := hex.EncodeToString(b[:])
		w.Header().Set("X-Request-Id", id)
		clientID := r.Header.Get("X-Request-Id")
		if !wellFormedID(clientID) {
			clientID = ""
		}
		// A request with a body has until ReadTimeout to send it whole,
		// credentials or not: a client that declares a body and trickles
		// it (or never sends it) cannot hold a connection, not even
		// while net/http discards an unread body after the answer. A
		// publish extends it (BodyReadTimeout) once it is authorized.
		// (Headers have http.Server's ReadHeaderTimeout; a request
		// without a body gets no deadline, which would otherwise end a
		// long-poll or an event stream: net/http watches the idle
		// connection with a read.)
		if r.ContentLength != 0 || len(r.TransferEncoding) > 0 {
			http.NewResponseController(w).SetReadDeadline(time.Now().Add(s.cfg.ReadTimeout))
		}
		user := new(string)
		ctx := context.WithValue(context.WithValue(r.Context(), keyRequestID, id), keyUser, user)
		sw := &statusWriter{ResponseWriter: w}
		r = r.WithContext(ctx)
		if err := sameSite(r); err != nil {
			s.writeError(sw, r, err)
		} else {
			next.ServeHTTP(sw, r)
		}
		if sw.status == 0 {
			sw.status = http.StatusOK
		}
		d := time.Since(start)
		route := r.Pattern
		if route == "" {
			route = "unmatched"
		}
		s.metrics.observeRequest(route, sw.status, d)
		level := slog.LevelInfo
		if r.URL.Path == "/healthz" || r.URL.Path == "/readyz" || r.URL.Path == "/metrics" {
			level = slog.LevelDebug
		}
		attrs := []any{"id", id, "method", r.Method, "path", r.URL.Path, "route", route,
			"status", sw.status, "bytes", sw.bytes, "duration", d, "user", *user, "remote", r.RemoteAddr}
		if clientID != "" {
			attrs = append(attrs, "client_id", clientID)
		}
		s.log.Log(ctx, level, "request", attrs...)
	})
}

func requestID(ctx context.Context) string {
	id, _ := ctx.Value(keyRequestID).(string)
	return id
}

func (s *Server) handleBanner(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte("This is MessageVault speaking!\n"))
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"Status": "ok"})
}

func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	type ready struct {
		Status, Role, Leader, Instance string
		// Writable: a publish sent here can be applied now (this node
		// leads, or knows the leader to forward to).
		Writable bool
	}
	role, leader := s.role(), s.leader()
	writable := role == "leader" && s.vault.Load() != nil || role != "leader" && leader != "" && s.cfg.ClusterSecret != ""
	if s.cfg.Node == nil {
		writable = s.vault.Load() != nil
	}
	switch {
	case s.shuttingDown():
		writeJSON(w, http.StatusServiceUnavailable, ready{"shutting down", role, leader, s.cfg.Instance, false})
	case !writable:
		// A load balancer takes the node out while no write can succeed
		// through it (no leader known: a failover is under way).
		writeJSON(w, http.StatusServiceUnavailable, ready{"no leader", role, leader, s.cfg.Instance, false})
	default:
		writeJSON(w, http.StatusOK, ready{"ready", role, leader, s.cfg.Instance, true})
	}
}

// authenticate checks Basic auth; it answers 401 itself and returns false
// when the request has no or wrong credentials.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request) (auth.Principal, bool) {
	if token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		p, err := s.checkToken(r, strings.TrimSpace(token))
		if err != nil {
			s.writeError(w, r, err)
			return auth.Principal{}, false
		}
		if u, ok := r.Context().Value(keyUser).(*string); ok {
			*u = p.Name
		}
		return p, true
	}
	name, password, ok := r.BasicAuth()
	if !ok {
		s.metrics.authFailures.WithLabelValues("no-credentials").Inc()
		s.writeError(w, r, errNoCredentials)
		return auth.Principal{}, false
	}
	if name == ClusterUser && s.cfg.ClusterSecret != "" {
		if subtle.ConstantTimeCompare([]byte(password), []byte(s.cfg.ClusterSecret)) != 1 {
			s.writeError(w, r, auth.ErrUnauthenticated)
			return auth.Principal{}, false
		}
		// A follower checked the user's claims before forwarding.
		if node := r.Header.Get(forwardedNodeHeader); node != "" {
			s.status.follower(node)
		}
		p := auth.Principal{Name: ClusterUser + " for " + r.Header.Get(forwardedForHeader), Claims: []string{"all:write"}}
		if u, ok := r.Context().Value(keyUser).(*string); ok {
			*u = p.Name
		}
		return p, true
	}
	p, ok := s.cfg.Users.Cached(name, password)
	if !ok {
		var err error
		if p, err = s.checkPassword(r, name, password); err != nil {
			s.writeError(w, r, err)
			return auth.Principal{}, false
		}
	}
	if u, ok := r.Context().Value(keyUser).(*string); ok {
		*u = p.Name
	}
	return p, true
}

// checkToken checks a bearer token, unless the client's address is inside
// a backoff after failed checks.
func (s *Server) checkToken(r *http.Request, token string) (auth.Principal, error) {
	addr, _ := auth.ThrottleKeys(r.RemoteAddr, "")
	now := time.Now()
	if wait := s.throttle.Wait(now, addr); wait > 0 {
		s.metrics.authFailures.WithLabelValues("throttled").Inc()
		return auth.Principal{}, &throttledError{wait: wait}
	}
	p, err := s.cfg.Users.AuthenticateToken(token)
	if err != nil {
		s.metrics.authFailures.WithLabelValues("wrong-token").Inc()
		s.throttle.Failed(now, addr)
	}
	return p, err
}

// checkPassword runs a full (bcrypt) password check, unless the client's
// address or the user name is inside a backoff after failed ones.
func (s *Server) checkPassword(r *http.Request, name, password string) (auth.Principal, error) {
	p, err := s.throttle.Check(s.cfg.Users, r.RemoteAddr, name, password)
	var te *auth.ThrottledError
	switch {
	case errors.As(err, &te):
		s.metrics.authFailures.WithLabelValues("throttled").Inc()
		return auth.Principal{}, &throttledError{wait: te.Wait}
	case errors.Is(err, auth.ErrBusy):
		s.metrics.authFailures.WithLabelValues("busy").Inc()
	case err != nil:
		s.metrics.authFailures.WithLabelValues("wrong-password").Inc()
	}
	return p, err
}

// streamFor authenticates the request, normalizes the stream name of its
// path and checks the claim; it answers the error itself and returns false
// on failure.
func (s *Server) streamFor(w http.ResponseWriter, r *http.Request, write bool) (string, bool) {
	p, ok := s.authenticate(w, r)
	if !ok {
		return "", false
	}
	name, err := messagevault.NormalizeStreamName(r.PathValue("stream"))
	if err != nil {
		s.writeError(w, r, err)
		return "", false
	}
	if write && !p.CanWrite(name) {
		s.writeError(w, r, forbidden(p.Name, name+":write"))
		return "", false
	}
	if !write && !p.CanRead(name) {
		s.writeError(w, r, forbidden(p.Name, name+":read"))
		return "", false
	}
	return name, true
}

func (s *Server) handleGrant(w http.ResponseWriter, r *http.Request) {
	name, ok := s.streamFor(w, r, false)
	if !ok {
		return
	}
	g, ok := s.cfg.Storage.(messagevault.Granter)
	if !ok {
		s.writeError(w, r, errNoGrants)
		return
	}
	url, err := g.ReadGrant(r.Context(), name, s.cfg.GrantTTL)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"Signature": url})
}

// adminStream is the prologue of the stream routes for administrators
// (admin), and the stream's name. When it returns false the answer is
// written.
func (s *Server) adminStream(w http.ResponseWriter, r *http.Request) (string, bool) {
	if !s.admin(w, r) {
		return "", false
	}
	name, err := messagevault.NormalizeStreamName(r.PathValue("stream"))
	if err != nil {
		s.writeError(w, r, err)
		return "", false
	}
	return name, true
}

// handleRevokeGrants serves DELETE /streams/{stream}/grants: every read
// grant of the stream handed out so far stops working at once (Azure);
// for users who manage users (all:write).
func (s *Server) handleRevokeGrants(w http.ResponseWriter, r *http.Request) {
	name, ok := s.adminStream(w, r)
	if !ok {
		return
	}
	rv, ok := s.cfg.Storage.(messagevault.Revoker)
	if !ok {
		s.writeError(w, r, fmt.Errorf("revoke the grants of %q: %w", name, messagevault.ErrNotRevocable))
		return
	}
	if err := rv.RevokeGrants(r.Context(), name); err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("revoked every read grant of a stream", "stream", name, "by", userOf(r))
	writeJSON(w, http.StatusOK, map[string]any{"Stream": name, "Revoked": true})
}

// handleDeleteStream serves DELETE /streams/{stream}: the stream and its
// data are removed (it leaves listings and reads at once); for users who
// manage users (all:write). A follower forwards it to the leader, which
// writes.
func (s *Server) handleDeleteStream(w http.ResponseWriter, r *http.Request) {
	name, ok := s.adminStream(w, r)
	if !ok {
		return
	}
	v := s.vault.Load()
	if v == nil {
		s.forward(w, r, nil)
		return
	}
	if err := v.DeleteStream(r.Context(), name); err != nil {
		s.writeError(w, r, err)
		return
	}
	s.log.Info("deleted a stream", "stream", name, "by", userOf(r))
	writeJSON(w, http.StatusOK, map[string]any{"Stream": name, "Deleted": true})
}

// handleTrim serves DELETE /streams/{stream}/messages?before=N: it removes
// the stream's whole segments that end at or before N (never the active
// one) and answers {"Start": S}, the first position still stored. It
// needs a trim claim on the stream, or all:write; a follower forwards it
// to the leader.
func (s *Server) handleTrim(w http.ResponseWriter, r *http.Request) {
	p, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	name, err := messagevault.NormalizeStreamName(r.PathValue("stream"))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if !p.CanTrim(name) {
		s.writeError(w, r, forbidden(p.Name, name+":trim"))
		return
	}
	v := r.URL.Query().Get("before")
	before, err := strconv.ParseInt(v, 10, 64)
	if err != nil || before < 0 {
		s.writeError(w, r, badRequest("before=%q: want a position, a whole number of bytes from 0 (segments that end at or before it are removed)", v))
		return
	}
	vlt := s.vault.Load()
	if vlt == nil {
		s.forward(w, r, nil)
		return
	}
	start, err := vlt.Trim(r.Context(), name, before)
	if err != nil {
		if errors.Is(err, messagevault.ErrOutOfRange) {
			err = badRequest("%v", err)
		}
		s.writeError(w, r, err)
		return
	}
	s.log.Info("trimmed a stream", "stream", name, "before", before, "start", start, "by", userOf(r))
	writeJSON(w, http.StatusOK, map[string]int64{"Start": start})
}

// streamsAnswer is the body of GET /streams.
type streamsAnswer struct {
	Role    string       `json:"Role"`
	Leader  string       `json:"Leader"`
	Streams []streamInfo `json:"Streams"`
}

type streamInfo struct {
	Name     string `json:"Name"`
	Position int64  `json:"Position"`
	// Start is the first position still stored (0 until trimmed).
	Start int64 `json:"Start"`
}

func (s *Server) handleStreams(w http.ResponseWriter, r *http.Request) {
	p, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	infos, err := s.listStreams(r.Context())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	ans := streamsAnswer{Role: s.role(), Leader: s.leader(), Streams: []streamInfo{}}
	for _, in := range infos {
		if p.CanRead(in.Name) {
			ans.Streams = append(ans.Streams, streamInfo{Name: in.Name, Position: in.Position, Start: in.Start})
		}
	}
	writeJSON(w, http.StatusOK, ans)
}

// listStreams lists the streams with their positions: the writer's
// committed ones while this node leads, storage's otherwise.
func (s *Server) listStreams(ctx context.Context) ([]vault.StreamInfo, error) {
	if v := s.vault.Load(); v != nil {
		return v.Streams(ctx)
	}
	return vault.List(ctx, s.cfg.Storage)
}
