package bench

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/auth"
	"github.com/messagevault/messagevault/kafka"
	"github.com/messagevault/messagevault/metrics"
	"github.com/messagevault/messagevault/server"
	"github.com/messagevault/messagevault/vault"
)

// Server is an in-process MessageVault server on a loopback port, for a
// bench without a running server.
type Server struct {
	URL, User, Password string

	http    *http.Server
	api     *server.Server
	users   *auth.Users
	vault   *vault.Vault
	dir     string
	metrics *metrics.Metrics
	kafka   *kafka.Server // after ServeKafka
}

// StorageRequestsPer1000 is the storage operations per 1,000 messages the
// server made durable so far (on Azure, about one billed request each).
func (s *Server) StorageRequestsPer1000() float64 { return s.metrics.RequestsPer1000() }

// StartServer serves storage on 127.0.0.1 at a free port with a user of
// its own (kept in a temporary file).
func StartServer(storage messagevault.Storage) (*Server, error) {
	return StartServerWith(storage, vault.Config{})
}

// StartServerWith is StartServer with the vault configured by cfg (for
// example the writers' segment size).
func StartServerWith(storage messagevault.Storage, cfg vault.Config) (*Server, error) {
	dir, err := os.MkdirTemp("", "mv-bench-users-")
	if err != nil {
		return nil, err
	}
	users, err := auth.Open(context.Background(), auth.NewFileSource(filepath.Join(dir, "auth.json")), nil)
	if err != nil {
		return nil, err
	}
	pw := auth.RandomPassword()
	if err := users.Add(context.Background(), "bench", pw, "all:write"); err != nil {
		return nil, err
	}
	// The server's storage and writers are measured, to report what
	// storage costs per message.
	m := metrics.New(prometheus.NewRegistry())
	if cfg.Writer.Observer == nil {
		cfg.Writer.Observer = m
	}
	v := vault.New(m.Storage(storage), cfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	api := server.New(server.Config{Vault: v, Users: users})
	s := &Server{URL: "http://" + ln.Addr().String(), User: "bench", Password: pw, vault: v, dir: dir, api: api, users: users,
		http: &http.Server{Handler: api}, metrics: m}
	go s.http.Serve(ln)
	return s, nil
}

// Close stops the server and closes its streams.
func (s *Server) Close() error {
	s.api.BeginShutdown()
	err := s.http.Shutdown(context.Background())
	if s.kafka != nil {
		err = errors.Join(err, s.kafka.Close())
	}
	err = errors.Join(err, s.api.Close(), s.vault.Close(), s.users.Close())
	os.RemoveAll(s.dir)
	return err
}
