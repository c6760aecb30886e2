package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
	"golang.org/x/net/netutil"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/auth"
	"github.com/messagevault/messagevault/azure"
	"github.com/messagevault/messagevault/cluster"
	"github.com/messagevault/messagevault/file"
	"github.com/messagevault/messagevault/internal/buildinfo"
	"github.com/messagevault/messagevault/internal/redact"
	"github.com/messagevault/messagevault/kafka"
	"github.com/messagevault/messagevault/metrics"
	"github.com/messagevault/messagevault/server"
	"github.com/messagevault/messagevault/stream"
	"github.com/messagevault/messagevault/vault"
)

// Serve defaults.
const (
	// DefaultDataDir is where serve keeps streams when --data is not given.
	DefaultDataDir = "./data"
	// DefaultListen is the address serve listens on without --listen.
	DefaultListen = "127.0.0.1:8001"
	// UsersFileName is the users file inside the data directory.
	UsersFileName = "auth.json"
	// AdminPasswordEnv sets the first admin's password instead of a random one.
	AdminPasswordEnv = "MESSAGEVAULT_ADMIN_PASSWORD"
	// DefaultMaxConnections is --max-connections' default: well below
	// the usual limit of open files, with room for storage connections.
	DefaultMaxConnections = 4096
	// ShutdownTimeout bounds how long SIGTERM waits for requests in flight.
	ShutdownTimeout = 30 * time.Second
	// ClusterSecretEnv sets the credential nodes forward writes with; by
	// default it is generated once and kept in the storage.
	ClusterSecretEnv = "MESSAGEVAULT_CLUSTER_SECRET"
	// AzureConnectionEnv is the conventional variable holding an Azure
	// storage connection string.
	AzureConnectionEnv = "AZURE_STORAGE_CONNECTION_STRING"
	// azureFromEnv is --azure given without a value.
	azureFromEnv = "$" + AzureConnectionEnv
)

// ServeCommand runs the server on the embedded default backend.
type ServeCommand struct {
	stderr io.Writer

	DataDir        string
	Advertise      string
	Azure          string
	StreamAccounts []string
	Listen         string
	UsersFile      string
	TLSCert        string
	TLSKey         string
	ClusterCA      string
	DrainDelay     time.Duration
	MaxBody        int64
	MaxInflight    int64
	GrantTTL       time.Duration
	IdleTimeout    time.Duration
	ReadTimeout    time.Duration
	WriteTimeout   time.Duration
	MaxConns       int
	MaxOpenFiles   int
	MaxReads       int
	MaxTails       int
	MaxTailAge     time.Duration
	MetricsListen  string
	KafkaListen    string
	KafkaDropHdrs  bool
	LogLevel       string
	LogFormat      string
	SegmentSize    byteSize
	RetentionBytes byteSize
	RetentionAge   time.Duration
	RetentionEvery time.Duration
}

// Command returns the cobra command.
func (c *ServeCommand) Command() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the server",
		Long: `Run the MessageVault server.

With no flags it keeps its streams in ./data (created if needed) and listens
on 127.0.0.1:8001. The server that holds the data directory's lock writes;
a second server started on the same directory (on this machine, on another
--listen port) becomes a standby: it logs "standby", serves reads, forwards
writes to the first, and takes over when the first exits.

With --azure it keeps them in Azure Blob Storage page blobs instead: give the
account's connection string as --azure=<connection string>, or give --azure
alone to take it from ` + AzureConnectionEnv + `. --stream-account puts chosen
streams in other accounts.

Users live in <data>/auth.json, or with --azure in the blob mv-sys/auth.json
(--users to use a local file instead). On a first start with no users, the
server creates "admin" (claim all:write) with a random password and prints it
once; set ` + AdminPasswordEnv + ` to choose it instead.

SIGTERM or SIGINT drains: publishes in flight are answered, then the process
exits 0.`,
		Example: `  messagevault serve
  messagevault serve --data /var/lib/messagevault --listen 0.0.0.0:8001
  AZURE_STORAGE_CONNECTION_STRING='DefaultEndpointsProtocol=https;AccountName=...' messagevault serve --azure
  messagevault serve --azure="$CONN" --stream-account "big-stream=$OTHER_CONN"
  messagevault serve --tls-cert cert.pem --tls-key key.pem`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if (c.TLSCert == "") != (c.TLSKey == "") {
				return usageError("--tls-cert and --tls-key go together")
			}
			if err := stream.CheckSegmentSize(int64(c.SegmentSize)); err != nil {
				return usageError("--segment-size: %v", err)
			}
			if c.RetentionAge < 0 {
				return usageError("--retention-age %v: want a positive duration, or 0 to keep all", c.RetentionAge)
			}
			return c.Run(cmd.Context())
		},
	}
	f := cmd.Flags()
	f.StringVar(&c.DataDir, "data", DefaultDataDir, "data directory of the local backend")
	addAzureFlag(f, &c.Azure, "use Azure Blob Storage")
	f.StringArrayVar(&c.StreamAccounts, "stream-account", nil, "with --azure, keep a stream in another account: <stream>=<connection string>, <stream>=env:VAR (from the environment) or <stream>=@FILE (from a file); repeatable")
	f.StringVar(&c.Listen, "listen", DefaultListen, "address to listen on (port 0 picks a free port)")
	f.StringVar(&c.Advertise, "advertise", "", "this node's internal URL, which followers forward writes to (default derived from the listening address)")
	f.StringVar(&c.UsersFile, "users", "", "users file (default <data>/"+UsersFileName+")")
	f.StringVar(&c.TLSCert, "tls-cert", "", "TLS certificate file (PEM); serve HTTPS")
	f.StringVar(&c.TLSKey, "tls-key", "", "TLS private key file (PEM)")
	f.StringVar(&c.ClusterCA, "cluster-ca", "", "CA certificate file (PEM) that signed other nodes' TLS certificates, trusted besides the system's roots when forwarding writes to the leader")
	f.DurationVar(&c.DrainDelay, "drain-delay", 0, "on SIGTERM, fail /readyz for this long while still serving, so a load balancer stops sending here, then drain and exit")
	f.Int64Var(&c.MaxBody, "max-body", server.DefaultMaxBodyBytes, "largest publish body in bytes (413 beyond)")
	f.Int64Var(&c.MaxInflight, "max-inflight", server.DefaultMaxInflightBytes, "publish bytes held in memory at once (429 beyond)")
	f.DurationVar(&c.GrantTTL, "grant-ttl", server.DefaultGrantTTL, "how long read grants are valid")
	f.DurationVar(&c.IdleTimeout, "idle-timeout", vault.DefaultIdleTimeout, "close a stream's writer after this long without appends")
	f.DurationVar(&c.ReadTimeout, "read-timeout", server.DefaultReadTimeout, "how long a client may take to send a request body before the connection is closed (an authorized publish gets 2 minutes)")
	f.DurationVar(&c.WriteTimeout, "write-timeout", server.DefaultWriteTimeout, "how long a read answer may take to send, and an event stream may wait for its client to take what it was sent, before the connection is closed")
	f.IntVar(&c.MaxConns, "max-connections", DefaultMaxConnections, "connections served at once; more wait to be accepted")
	f.IntVar(&c.MaxOpenFiles, "max-open-files", file.DefaultMaxOpenFiles, "local backend: stream files kept open at once, for all streams together; past it the least recently used idle file is closed and opened again when needed (files with writes not yet synced stay open until synced)")
	f.IntVar(&c.MaxReads, "max-reads", server.DefaultMaxReads, "reads served at once (429 beyond)")
	f.IntVar(&c.MaxTails, "max-tails", server.DefaultMaxTails, "event streams and long-polls served at once (429 beyond)")
	f.StringVar(&c.KafkaListen, "kafka-listen", "", "also serve the Kafka protocol on this address (SASL/PLAIN with MessageVault's users; TLS when --tls-cert is set); off by default")
	f.BoolVar(&c.KafkaDropHdrs, "kafka-drop-headers", false, "drop the headers of records produced through Kafka (MessageVault's records have none) instead of refusing those records; messagevault_kafka_headers_dropped_total counts them")
	f.StringVar(&c.MetricsListen, "metrics-listen", "", "also serve /metrics without authentication on this address (a private one, for a scraper); on the main address /metrics needs a user with all:read")
	f.DurationVar(&c.MaxTailAge, "max-tail-duration", server.DefaultMaxTailDuration, "end an event stream after this long (clients reconnect with Last-Event-ID and log in again)")
	f.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	f.StringVar(&c.LogFormat, "log-format", "text", "log format: text, or json (one object per line, for log collectors)")
	c.SegmentSize = stream.DefaultSegmentSize
	f.Var(&c.SegmentSize, "segment-size", "roll a stream to a new segment (blob or file) before its current one passes this size: a multiple of 512 bytes, at least 1MiB; suffixes KiB, MiB, GiB, TiB (default: the largest page blob, 8 TiB, less 64 MiB kept for the producer table, so a stream stays one blob)")
	f.Var(&c.RetentionBytes, "retention-bytes", "keep about this many of each stream's newest bytes: older whole segments are removed in the background, never the active one (0: keep all)")
	f.DurationVar(&c.RetentionAge, "retention-age", 0, "remove, in the background, each segment whose newest message is older than this, never the active one (0: keep all)")
	f.DurationVar(&c.RetentionEvery, "retention-interval", 0, "how often retention looks at the streams (default a tenth of --retention-age, from 1s to 1m)")
	return cmd
}

// retentionEvery is how often retention looks at the streams:
// --retention-interval, or a tenth of --retention-age, from a second to a
// minute.
func (c *ServeCommand) retentionEvery() time.Duration {
	if c.RetentionEvery > 0 {
		return c.RetentionEvery
	}
	every := vault.DefaultRetentionEvery
	if c.RetentionAge > 0 {
		every = min(max(c.RetentionAge/10, time.Second), every)
	}
	return every
}

// Run serves until ctx ends (SIGINT or SIGTERM), then drains and closes
// everything. Its steps: the logger, the backend, the first admin, the
// cluster's trust, the listener (and TLS), the server and its election,
// then serving until the signal.
func (c *ServeCommand) Run(ctx context.Context) (err error) {
	stderr := c.stderr
	if stderr == nil {
		stderr = os.Stderr
	}
	log, err := c.logger(stderr)
	if err != nil {
		return err
	}
	b, err := c.openBackend()
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, b.store.Close()) }()
	// Everything that can fail is checked (the port, the TLS key, the
	// cluster CA) before the first admin is created and its password
	// shown: a start that then fails must not have used the only showing.
	l, err := c.listen(log)
	if err != nil {
		return err
	}
	serving := false
	defer func() {
		if !serving {
			l.close()
		}
	}()
	secret, roots, err := c.clusterTrust(ctx, b)
	if err != nil {
		return err
	}
	users, err := c.firstAdmin(ctx, b, log, stderr)
	if err != nil {
		return err
	}
	defer users.Close()
	registry := prometheus.NewRegistry()
	build := buildinfo.Read(Version)
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		metrics.BuildInfo(build.Version, build.Revision, build.GoVersion))
	m := metrics.New(registry)
	var inst [8]byte
	rand.Read(inst[:])
	instance := hex.EncodeToString(inst[:]) // this process, in /readyz
	node, err := c.joinElection(ctx, b, l.advertise, instance, registry, m, log)
	if err != nil {
		return err
	}
	serving = true // the listener is the HTTP server's to close from here
	api := server.New(server.Config{
		Registry:         registry,
		Storage:          m.Storage(b.store),
		Users:            users,
		Logger:           log,
		Node:             node.Node,
		Self:             l.advertise,
		MaxBodyBytes:     c.MaxBody,
		MaxInflightBytes: c.MaxInflight,
		GrantTTL:         c.GrantTTL,
		ReadTimeout:      c.ReadTimeout,
		WriteTimeout:     c.WriteTimeout,
		MaxReads:         c.MaxReads,
		MaxTails:         c.MaxTails,
		MaxTailDuration:  c.MaxTailAge,
		ClusterSecret:    secret,
		Instance:         instance,
		ClusterRoots:     roots,
	})
	defer api.Close()
	metrics.RegisterPositions(registry, func() map[string]int64 {
		if v := api.Vault(); v != nil {
			return v.Positions()
		}
		return nil
	})
	node.start(api)
	return c.serveUntilSignal(ctx, api, users, node.Node, l, b, registry, log)
}

// logger makes the log of --log-level and --log-format; no SAS signature
// or account key reaches a log line.
func (c *ServeCommand) logger(stderr io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.LogLevel)); err != nil {
		return nil, usageError("--log-level %q: want debug, info, warn or error", c.LogLevel)
	}
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		// Durations with their unit ("1.5ms"), not JSON's bare nanoseconds.
		if a.Value.Kind() == slog.KindDuration {
			return slog.String(a.Key, a.Value.Duration().String())
		}
		return a
	}}
	switch c.LogFormat {
	case "text":
		return slog.New(redact.Handler(slog.NewTextHandler(stderr, opts))), nil
	case "json":
		return slog.New(redact.Handler(slog.NewJSONHandler(stderr, opts))), nil
	}
	return nil, usageError("--log-format %q: want text or json", c.LogFormat)
}

// firstAdmin opens the users and, when there are none, creates admin with
// the password of $MESSAGEVAULT_ADMIN_PASSWORD or a random one it prints
// once.
func (c *ServeCommand) firstAdmin(ctx context.Context, b *backend, log *slog.Logger, stderr io.Writer) (*auth.Users, error) {
	usersPath := b.users.String()
	users, err := auth.Open(ctx, b.users, log)
	if err != nil {
		return nil, err
	}
	envPassword := os.Getenv(AdminPasswordEnv)
	password, err := users.EnsureAdmin(ctx, envPassword)
	if err != nil {
		users.Close()
		return nil, fmt.Errorf("create the first admin: %w", err)
	}
	switch {
	case password != "" && envPassword != "":
		log.Info("created user admin (claim all:write) with the password from "+AdminPasswordEnv, "users", usersPath)
	case password != "" && c.LogFormat == "json":
		// One JSON record, as log collectors expect, written past the
		// logger (which redacts passwords).
		json.NewEncoder(stderr).Encode(map[string]string{
			"time": time.Now().Format(time.RFC3339Nano), "level": "WARN",
			"msg":  "created the first admin; its password is shown only this once, and stored as a bcrypt hash",
			"user": auth.DefaultAdmin, "claim": "all:write", "password": password, "users": usersPath,
		})
	case password != "":
		fmt.Fprintf(stderr, "\n========================================================================\nCreated user %q (claim all:write) with password:\n\n    %s\n\nIt is shown only this once; it is stored as a bcrypt hash in %s.\n========================================================================\n\n", auth.DefaultAdmin, password, usersPath)
	}
	return users, nil
}

// clusterTrust returns the secret followers forward writes with (from
// the environment, or kept in the storage) and the roots they trust the
// leader's certificate by (--cluster-ca added to the system's).
func (c *ServeCommand) clusterTrust(ctx context.Context, b *backend) (string, *x509.CertPool, error) {
	secret := os.Getenv(ClusterSecretEnv)
	if secret == "" {
		var err error
		if secret, err = b.secret(ctx, auth.RandomPassword()+auth.RandomPassword()); err != nil {
			return "", nil, err
		}
	}
	if c.ClusterCA == "" {
		return secret, nil, nil
	}
	pem, err := os.ReadFile(c.ClusterCA)
	if err != nil {
		return "", nil, fmt.Errorf("--cluster-ca: %w", err)
	}
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	if !roots.AppendCertsFromPEM(pem) {
		return "", nil, fmt.Errorf("--cluster-ca %s: no PEM certificate in it", c.ClusterCA)
	}
	return secret, roots, nil
}

// listener is where serve listens: the socket, the HTTP server (with TLS
// if asked), and the URL the node advertises to its peers.
type listener struct {
	ln        net.Listener
	metrics   net.Listener // --metrics-listen; nil without it
	kafka     net.Listener // --kafka-listen; nil without it
	srv       *http.Server
	scheme    string
	advertise string
}

// listen opens --listen (capped at --max-connections), with TLS from
// --tls-cert and --tls-key.
func (c *ServeCommand) listen(log *slog.Logger) (*listener, error) {
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", c.Listen, err)
	}
	if c.MaxConns > 0 {
		// Beyond the cap, connections wait in the listen queue instead
		// of taking the process's file descriptors.
		ln = netutil.LimitListener(ln, c.MaxConns)
	}
	l := &listener{ln: ln, scheme: "http", srv: &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}}
	if c.TLSCert != "" {
		certs, err := newCertReloader(c.TLSCert, c.TLSKey, log)
		if err != nil {
			ln.Close()
			return nil, err
		}
		l.srv.TLSConfig = tlsConfig(certs)
		l.scheme = "https"
	}
	if l.advertise = c.Advertise; l.advertise == "" {
		l.advertise = advertiseURL(l.scheme, ln.Addr())
	}
	if c.MetricsListen != "" {
		if l.metrics, err = net.Listen("tcp", c.MetricsListen); err != nil {
			ln.Close()
			return nil, fmt.Errorf("--metrics-listen %s: %w", c.MetricsListen, err)
		}
	}
	if c.KafkaListen != "" {
		if l.kafka, err = net.Listen("tcp", c.KafkaListen); err != nil {
			l.close()
			return nil, fmt.Errorf("--kafka-listen %s: %w", c.KafkaListen, err)
		}
		if c.MaxConns > 0 {
			l.kafka = netutil.LimitListener(l.kafka, c.MaxConns)
		}
		if l.srv.TLSConfig != nil {
			l.kafka = tls.NewListener(l.kafka, l.srv.TLSConfig)
		}
	}
	return l, nil
}

// close closes the listeners, for a start that fails before serving.
func (l *listener) close() {
	l.ln.Close()
	if l.metrics != nil {
		l.metrics.Close()
	}
	if l.kafka != nil {
		l.kafka.Close()
	}
}

// electedNode is this node in the leader election, not campaigning until
// start.
type electedNode struct {
	*cluster.Node
	api atomic.Pointer[server.Server]
}

// start hands the node the server whose vault it sets and starts the
// campaign.
func (n *electedNode) start(api *server.Server) {
	n.api.Store(api)
	n.Node.Start()
}

// joinElection makes this node's place in the leader election: while it
// leads, the server has a vault that writes, whose writers stop at the
// lock's safe deadline; when it steps down the vault is closed.
func (c *ServeCommand) joinElection(ctx context.Context, b *backend, advertise, instance string, registry *prometheus.Registry, m *metrics.Metrics, log *slog.Logger) (*electedNode, error) {
	if b.lock == nil {
		var err error
		if b.lock, err = b.leaderLock(advertise); err != nil {
			return nil, err
		}
	}
	if b.retake != nil {
		if err := b.retake(ctx, advertise, instance, log); err != nil {
			return nil, err
		}
	}
	n := &electedNode{}
	n.Node = cluster.New(cluster.Config{
		Lock:       b.lock,
		Advertise:  advertise,
		Logger:     log,
		OnFailover: metrics.NewFailoverHistogram(registry),
		OnElected: func(ctx context.Context, node *cluster.Node) error {
			store, err := b.writable()
			if err != nil {
				return err
			}
			old := n.api.Load().SetVault(vault.New(m.Storage(store), vault.Config{
				IdleTimeout: c.IdleTimeout,
				Logger:      log,
				Writer:      stream.WriterConfig{Deadline: node.Deadline, Observer: m, SegmentSize: int64(c.SegmentSize)},
				Retention:   vault.Retention{Bytes: int64(c.RetentionBytes), Age: c.RetentionAge, Every: c.retentionEvery()},
			}))
			if old != nil {
				old.Close() // not expected: elections and demotions alternate
			}
			return nil
		},
		OnDemoted: func() {
			if v := n.api.Load().SetVault(nil); v != nil {
				if err := v.Close(); err != nil {
					log.Error("closing the streams after stepping down", "err", err)
				}
			}
		},
	})
	metrics.RegisterNode(registry, n.Node)
	return n, nil
}

// serveUntilSignal serves the API (and --metrics-listen) until ctx ends
// or serving fails, then drains: readiness fails for --drain-delay,
// requests in flight finish, and the node leaves the election, within
// ShutdownTimeout.
func (c *ServeCommand) serveUntilSignal(ctx context.Context, api *server.Server, users *auth.Users, node *cluster.Node, l *listener, b *backend, registry *prometheus.Registry, log *slog.Logger) error {
	served := make(chan error, 3) // metrics, Kafka and HTTP
	if mln := l.metrics; mln != nil {
		msrv := &http.Server{Handler: api.MetricsHandler(), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: time.Minute}
		defer msrv.Close()
		go func() {
			if err := msrv.Serve(mln); err != http.ErrServerClosed {
				served <- fmt.Errorf("metrics listener: %w", err)
			}
		}()
		log.Info("serving metrics", "url", "http://"+mln.Addr().String()+"/metrics")
	}
	var ks *kafka.Server
	kafkaStopped := false
	if l.kafka != nil {
		var err error
		ks, err = kafka.New(l.kafka, kafka.Config{Vault: api.Vault, Storage: b.store, Users: users, DropHeaders: c.KafkaDropHdrs, Throttle: api.Throttle(), Registry: registry, Logger: log})
		if err != nil {
			return err
		}
		defer func() {
			if !kafkaStopped {
				ks.Close()
			}
		}()
		go func() {
			if err := ks.Serve(); err != nil {
				served <- err
			}
		}()
		log.Info("serving the Kafka protocol", "address", l.kafka.Addr().String())
	}
	srv := l.srv
	srv.Handler = api
	go func() {
		if srv.TLSConfig != nil {
			served <- srv.ServeTLS(l.ln, "", "") // with HTTP/2
			return
		}
		served <- srv.Serve(l.ln)
	}()
	log.Info("serving", "url", l.scheme+"://"+l.ln.Addr().String(), "advertise", l.advertise, "storage", b.describe, "users", b.users.String(), "version", buildinfo.Read(Version).String())

	select {
	case err := <-served:
		node.Close()
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	if c.DrainDelay > 0 {
		log.Info("shutting down: failing readiness first, still serving", "drain_delay", c.DrainDelay)
		api.FailReadiness()
		time.Sleep(c.DrainDelay)
	}
	log.Info("shutting down: draining requests in flight")
	api.BeginShutdown()
	sctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	// The Kafka listener stops with the HTTP one, before the vault
	// closes: its requests in flight end (appends not yet taken are
	// dropped unanswered), within the same timeout.
	kafkaClosed := make(chan struct{})
	go func() {
		if ks != nil {
			ks.Shutdown(sctx) // answers what it has read, as srv.Shutdown does
			ks.Close()
		}
		close(kafkaClosed)
	}()
	kafkaStopped = true
	shutdownErr := srv.Shutdown(sctx)
	select {
	case <-kafkaClosed:
	case <-sctx.Done():
	}
	// Then leave the election: queued appends are written, the lock is
	// released, and another node takes over at once. Storage that does
	// not answer (a stuck disk) cannot hold the exit past the drain
	// timeout: appends still waiting were never acknowledged.
	closed := make(chan struct{})
	go func() {
		node.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-sctx.Done():
		select {
		case <-closed:
			// closed as the deadline passed: fine.
		case <-time.After(100 * time.Millisecond):
		}
	}
	select {
	case <-closed:
	default:
		log.Error("storage did not answer while draining: exiting without waiting for it; appends it holds were not acknowledged", "timeout", ShutdownTimeout)
		return fmt.Errorf("shutdown: storage did not answer within %v", ShutdownTimeout)
	}
	if shutdownErr != nil {
		return fmt.Errorf("shutdown: %w", shutdownErr)
	}
	log.Info("stopped")
	return nil
}

// advertiseURL derives this node's internal URL from the address it
// listens on; an unspecified host becomes the machine's host name.
func advertiseURL(scheme string, addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return scheme + "://" + addr.String()
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		if h, err := os.Hostname(); err == nil {
			host = h
		}
	}
	return scheme + "://" + net.JoinHostPort(host, port)
}

// backend is the storage serve runs on: where it reads, how it is led,
// where it writes once elected, and where its users live.
type backend struct {
	store messagevault.Storage // reads (and writes, on Azure)
	users auth.Source
	lock  cluster.Lock
	// leaderLock makes the lock once the node's URL is known (Azure).
	leaderLock func(advertise string) (cluster.Lock, error)
	// retake, if set, runs before the election (Azure): see retakeLease.
	retake   func(ctx context.Context, advertise, instance string, log *slog.Logger) error
	writable func() (messagevault.Storage, error)
	secret   func(ctx context.Context, fresh string) (string, error)
	describe string
}

// openBackend opens the local directory, or the Azure account(s) with
// --azure.
func (c *ServeCommand) openBackend() (*backend, error) {
	if c.Azure == "" {
		if len(c.StreamAccounts) > 0 {
			return nil, usageError("--stream-account needs --azure")
		}
		if c.MaxOpenFiles < 1 {
			return nil, usageError("--max-open-files must be at least 1, not %d", c.MaxOpenFiles)
		}
		opts := file.Options{MaxOpenFiles: c.MaxOpenFiles}
		lock, err := file.NewLeaderLock(c.DataDir, opts)
		if err != nil {
			return nil, err
		}
		ro, err := file.OpenReadOnly(c.DataDir, opts)
		if err != nil {
			return nil, err
		}
		users := c.UsersFile
		if users == "" {
			users = filepath.Join(ro.Dir(), UsersFileName)
		}
		return &backend{
			store: ro,
			users: auth.NewFileSource(users),
			lock:  lock,
			writable: func() (messagevault.Storage, error) {
				if s := lock.Storage(); s != nil {
					return s, nil
				}
				return nil, errors.New("the data directory lock is not held")
			},
			secret:   func(_ context.Context, fresh string) (string, error) { return file.ClusterSecret(ro.Dir(), fresh) },
			describe: ro.Dir(),
		}, nil
	}
	def, err := openAzure("--azure", c.Azure)
	if err != nil {
		return nil, err
	}
	b := &backend{store: def, users: def.Users(), secret: def.ClusterSecret, describe: def.String()}
	var lock *azure.LeaderLock
	b.leaderLock = func(string) (cluster.Lock, error) {
		var err error
		lock, err = def.LeaderLock()
		return lock, err
	}
	b.retake = func(ctx context.Context, advertise, instance string, log *slog.Logger) error {
		return retakeLease(ctx, lock, advertise, instance, log)
	}
	if len(c.StreamAccounts) > 0 {
		overrides := map[string]*azure.Storage{}
		for _, v := range c.StreamAccounts {
			name, scs, err := azure.ParseStreamAccount(v)
			if err != nil {
				return nil, usageError("--stream-account: %v", err)
			}
			s, err := openAzure("--stream-account "+name, scs)
			if err != nil {
				return nil, err
			}
			overrides[name] = s
		}
		b.store = azure.NewAccounts(def, overrides)
		b.describe = fmt.Sprintf("%s (+%d streams in other accounts)", def, len(overrides))
	}
	store := b.store
	b.writable = func() (messagevault.Storage, error) { return store, nil }
	if c.UsersFile != "" {
		b.users = auth.NewFileSource(c.UsersFile)
	}
	return b, nil
}

// probeTimeout bounds the check of who answers at this node's advertised
// URL before it joins the election.
const probeTimeout = 1500 * time.Millisecond

// retakeLease runs before a node joins the election on Azure. When the
// published leader endpoint is this node's own advertised URL, either this
// node's previous run died holding the lease, and nothing answers there
// (this process does not serve yet): the lease is broken, so the node
// takes it back at once instead of waiting for it to expire. Or another
// live process answers there, using the same URL: two nodes must not
// share one, so this one refuses to start.
func retakeLease(ctx context.Context, lock *azure.LeaderLock, advertise, instance string, log *slog.Logger) error {
	ep, err := lock.Leader(ctx)
	if err != nil || ep != advertise {
		return nil // someone else, or nobody, leads: the election decides
	}
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(pctx, http.MethodGet, strings.TrimRight(advertise, "/")+"/readyz", nil)
	if err != nil {
		return nil
	}
	// Only /readyz is asked, with no credentials: any certificate will do.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := hc.Do(req)
	if err != nil {
		log.Info("the published leader is this node's advertised URL and nothing answers there: taking the lease of the previous run back", "advertise", advertise)
		return lock.Break(ctx)
	}
	defer resp.Body.Close()
	var ready struct{ Instance string }
	json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&ready)
	if ready.Instance == instance {
		return nil
	}
	return fmt.Errorf("another live node (instance %q) already serves at %s, this node's advertised URL: give every node its own --advertise URL", ready.Instance, advertise)
}
