package e2e_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/messagevault/messagevault"
	"github.com/messagevault/messagevault/auth"
	"github.com/messagevault/messagevault/internal/mvtest"
)

// slowPublish starts a publish whose body arrives in two halves: it returns
// once the server has the headers and half the body, and a function that
// sends the rest and returns the answer.
func slowPublish(t *testing.T, s *mvtest.Server, stream string, body []byte) (finish func() (int, string)) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	half := len(body) / 2
	fmt.Fprintf(conn, "POST /streams/%s HTTP/1.1\r\nHost: x\r\nAuthorization: Basic %s\r\nContent-Length: %d\r\nContent-Type: application/octet-stream\r\n\r\n",
		stream, basic(admin, adminPass), len(body))
	conn.Write(body[:half])
	// Wait until the server holds the body's reservation: it reads the
	// body only after checking the password, which takes a bcrypt.
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, m, _ := do(t, s.Request("GET", "/metrics", admin, adminPass, nil, ""))
		if !strings.Contains(string(m), "\nmessagevault_publish_inflight_bytes 0\n") && strings.Contains(string(m), "\nmessagevault_publish_inflight_bytes ") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the slow publish never reserved its body")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return func() (int, string) {
		conn.Write(body[half:])
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("slow publish answer: %v", err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
}

func basic(user, pass string) string {
	req, _ := http.NewRequest("GET", "/", nil)
	req.SetBasicAuth(user, pass)
	return strings.TrimPrefix(req.Header.Get("Authorization"), "Basic ")
}

func TestBackPressureAndBodyLimit(t *testing.T) {
	s := mvtest.Start(t, t.TempDir(), nil, "--max-body", "20000", "--max-inflight", "15000")
	big := transfer(t, []messagevault.Message{msg("k", strings.Repeat("x", 12000))})
	finish := slowPublish(t, s, "busy", big)
	// The first body holds 12 kB of the 15 kB budget: a second one that
	// would pass it is answered 429 with Retry-After, not queued.
	status, body, h := do(t, s.Request("POST", "/streams/busy", admin, adminPass, big, ""))
	if status != http.StatusTooManyRequests || h.Get("Retry-After") == "" || !strings.Contains(string(body), `"busy"`) {
		t.Fatalf("publish over the in-flight budget: %d %s (Retry-After %q)", status, body, h.Get("Retry-After"))
	}
	if code, ans := finish(); code != 200 {
		t.Fatalf("the first publish: %d %s", code, ans)
	}
	// With the budget free again it goes through.
	if status, body, _ := do(t, s.Request("POST", "/streams/busy", admin, adminPass, big, "")); status != 200 {
		t.Fatalf("publish after the budget freed: %d %s", status, body)
	}
	// A chunked body (no Content-Length) over the limit is cut at the
	// limit with 413.
	huge := transfer(t, []messagevault.Message{msg("k", strings.Repeat("x", 15000)), msg("k", strings.Repeat("y", 15000))})
	req := s.Request("POST", "/streams/busy", admin, adminPass, nil, "")
	req.Body = io.NopCloser(bytes.NewReader(huge))
	req.ContentLength = -1
	status, body, _ = do(t, req)
	if status != http.StatusRequestEntityTooLarge {
		t.Fatalf("chunked body over the limit: %d %s", status, body)
	}
	if recs := readDirect(t, s, "busy"); len(recs) != 2 {
		t.Fatalf("stream holds %d messages, want 2", len(recs))
	}
}

func TestSIGTERMDrainsPublishesInFlight(t *testing.T) {
	s := mvtest.Start(t, t.TempDir(), nil)
	publish(t, s, "drain", []messagevault.Message{msg("k", "before")})
	finish := slowPublish(t, s, "drain", transfer(t, []messagevault.Message{msg("k", "in flight")}))
	// An open event stream does not hold the shutdown up.
	tail, err := http.DefaultClient.Do(s.Request("GET", "/streams/drain/events", admin, adminPass, nil, ""))
	if err != nil || tail.StatusCode != 200 {
		t.Fatalf("events: %v %v", tail, err)
	}
	defer tail.Body.Close()
	s.Signal(syscall.SIGTERM)
	s.WaitOutput("shutting down", 10*time.Second)
	// The request in flight is still served, and durable, before the exit.
	code, ans := finish()
	if code != 200 {
		t.Fatalf("publish in flight at SIGTERM: %d %s", code, ans)
	}
	if exit := s.Wait(30 * time.Second); exit != 0 {
		t.Fatalf("exit code %d after SIGTERM", exit)
	}
	// Restart on the same directory: both messages are there.
	s2 := mvtest.Start(t, s.DataDir, nil)
	if got := values(readDirect(t, s2, "drain")); fmt.Sprint(got) != "[k=before k=in flight]" {
		t.Fatalf("after restart: %q", got)
	}
}

func TestHealthReadyMetrics(t *testing.T) {
	s := mvtest.Start(t, t.TempDir(), nil)
	publish(t, s, "metered", []messagevault.Message{msg("k", "v"), msg("k", "w")})
	for _, path := range []string{"/healthz", "/readyz"} {
		status, body, _ := do(t, s.Request("GET", path, "", "", nil, ""))
		if status != 200 {
			t.Fatalf("%s: %d %s", path, status, body)
		}
	}
	_, body, _ := do(t, s.Request("GET", "/readyz", "", "", nil, ""))
	if !strings.Contains(string(body), `"Role":"leader"`) {
		t.Fatalf("/readyz does not name the role: %s", body)
	}
	status, body, _ := do(t, s.Request("GET", "/metrics", admin, adminPass, nil, ""))
	for _, want := range []string{
		`messagevault_http_requests_total{code="200",route="POST /streams/{stream}"} 1`,
		"messagevault_published_messages_total 2",
		"messagevault_http_request_duration_seconds_bucket",
		"go_goroutines",
	} {
		if status != 200 || !strings.Contains(string(body), want) {
			t.Fatalf("/metrics lacks %q:\n%s", want, body)
		}
	}
	status, body, _ = do(t, s.Request("GET", "/", "", "", nil, ""))
	if status != 200 || !strings.Contains(string(body), "MessageVault") {
		t.Fatalf("banner: %d %s", status, body)
	}
}

func TestReadClaims(t *testing.T) {
	dir := t.TempDir()
	users, _ := auth.Open(context.Background(), auth.NewFileSource(filepath.Join(dir, "auth.json")), nil)
	users.Add(context.Background(), "admin", adminPass, "all:write")
	users.Add(context.Background(), "alice", "alice-pass", "orders:read")
	users.Add(context.Background(), "bob", "bob-pass", "billing:write")
	// A plain-text password left by an old file works, with a warning.
	raw, _ := os.ReadFile(filepath.Join(dir, "auth.json"))
	var f auth.File
	mustDecode(t, raw, &f)
	f.Users["legacy"] = &auth.User{Password: "plain", Claims: []string{"all:read"}}
	raw, _ = json.Marshal(f)
	os.WriteFile(filepath.Join(dir, "auth.json"), raw, 0o600)

	s := mvtest.Start(t, dir, nil)
	publish(t, s, "orders", []messagevault.Message{msg("k", "v")})
	publish(t, s, "billing", []messagevault.Message{msg("k", "v")})
	for _, tt := range []struct {
		user, pass, method, path string
		status                   int
	}{
		{"alice", "alice-pass", "GET", "/streams/orders", 200},
		{"alice", "alice-pass", "GET", "/streams/orders/messages", 200},
		{"alice", "alice-pass", "GET", "/streams/billing/messages", 403},
		{"alice", "alice-pass", "GET", "/streams/billing", 403},
		{"bob", "bob-pass", "GET", "/streams/billing/messages", 200}, // write implies read
		{"bob", "bob-pass", "GET", "/streams/orders/messages", 403},
		{"legacy", "plain", "GET", "/streams/orders/messages", 200},
		{"legacy", "wrong", "GET", "/streams/orders/messages", 401},
		{"", "", "GET", "/streams/orders/messages", 401},
		{"", "", "GET", "/streams", 401},
		{"admin", adminPass, "GET", "/streams/nothing-here/messages", 404},
	} {
		status, body, _ := do(t, s.Request(tt.method, tt.path, tt.user, tt.pass, nil, ""))
		if status != tt.status {
			t.Errorf("%s %s %s: %d %s; want %d", tt.user, tt.method, tt.path, status, body, tt.status)
		}
	}
	// The listing shows only what the user may read.
	_, body, _ := do(t, s.Request("GET", "/streams", "alice", "alice-pass", nil, ""))
	if !strings.Contains(string(body), `"orders"`) || strings.Contains(string(body), `"billing"`) {
		t.Fatalf("alice's listing: %s", body)
	}
	s.WaitOutput("plain-text password", 5*time.Second)
}

func TestTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := selfSigned(t, dir)
	s := mvtest.Start(t, dir, nil, "--tls-cert", certFile, "--tls-key", keyFile)
	if !strings.HasPrefix(s.URL, "https://") {
		t.Fatalf("TLS server URL %s", s.URL)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	req := s.Request("POST", "/streams/secure", admin, adminPass, transfer(t, []messagevault.Message{msg("k", "v")}), "")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.TLS == nil {
		t.Fatalf("publish over TLS: %d", resp.StatusCode)
	}
	addr := strings.TrimPrefix(s.URL, "https://")
	// HTTP/2 is offered.
	h2 := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	resp, err = h2.Do(s.Request("GET", "/healthz", "", "", nil, ""))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.Proto != "HTTP/2.0" {
		t.Fatalf("protocol %s, want HTTP/2.0", resp.Proto)
	}
	// TLS 1.2 with a CBC suite (or SHA-1 MACs) is refused.
	if c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, MaxVersion: tls.VersionTLS12,
		CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256}}); err == nil {
		c.Close()
		t.Fatal("a TLS 1.2 handshake offering only CBC suites succeeded")
	}
	// A renewed certificate, written over the files, is served without a
	// restart.
	renewed := t.TempDir()
	newCert, newKey, _ := selfSigned(t, renewed)
	for _, f := range [][2]string{{newKey, keyFile}, {newCert, certFile}} {
		b, _ := os.ReadFile(f[0])
		os.WriteFile(f[1], b, 0o600)
	}
	want, _ := os.ReadFile(certFile)
	block, _ := pem.Decode(want)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		got := c.ConnectionState().PeerCertificates[0].Raw
		c.Close()
		if bytes.Equal(got, block.Bytes) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the renewed certificate is not served 10 s after it was written")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}

// TestMetricsNeedAuthOrTheirOwnAddress: /metrics on the main address needs
// a user who may read every stream (the metrics name every stream);
// --metrics-listen serves them without authentication on an address of
// their own, for a scraper on a private network.
func TestMetricsNeedAuthOrTheirOwnAddress(t *testing.T) {
	addr := freePort(t)
	s := mvtest.Start(t, t.TempDir(), nil, "--metrics-listen", addr)
	publish(t, s, "secret-stream-name", []messagevault.Message{msg("k", "v")})
	if status, body, _ := do(t, s.Request("GET", "/metrics", "", "", nil, "")); status != http.StatusUnauthorized || strings.Contains(string(body), "secret-stream-name") {
		t.Fatalf("/metrics without credentials: %d %.200s", status, body)
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `messagevault_stream_position_bytes{stream="secret-stream-name"}`) {
		t.Fatalf("--metrics-listen: %d %.300s", resp.StatusCode, body)
	}
}
