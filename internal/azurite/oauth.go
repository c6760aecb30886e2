package azurite

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Microsoft Entra ID against Azurite. Azurite's OAuth mode ("basic")
// accepts bearer tokens only over HTTPS, so StartOAuth gives it a
// self-signed certificate made for the test. Clients reach it by a
// production-style host name, ACCOUNT.blob.localhost, as they reach
// ACCOUNT.blob.core.windows.net on Azure: the SDK takes the account name
// from the host when it signs user delegation SAS. Such names do not
// resolve, so clients go through an HTTPS proxy (a CONNECT tunnel to
// Azurite's loopback port) given in $HTTPS_PROXY, which Go's HTTP clients
// honour. The tokens come from Identity, a managed identity endpoint as
// Azure App Service runs one.

// oauth holds what StartOAuth made.
type oauth struct {
	certFile, keyFile string
	roots             *x509.CertPool
	proxy             *httptest.Server
}

// StartOAuth starts Azurite with HTTPS and OAuth on, on a free port with a
// fresh data folder. Shared key requests work as well.
func StartOAuth(t testing.TB) *Azurite {
	t.Helper()
	a := &Azurite{t: t, bin: Binary(t), dir: t.TempDir(), Port: "0"}
	a.oauth = &oauth{}
	a.oauth.certFile, a.oauth.keyFile, a.oauth.roots = selfSigned(t, t.TempDir(), Account+".blob.localhost")
	a.oauth.proxy = httptest.NewServer(http.HandlerFunc(a.tunnel))
	t.Cleanup(a.oauth.proxy.Close)
	a.start()
	t.Cleanup(a.Stop)
	return a
}

// AccountURL is the production-style blob endpoint of the emulator's
// account (StartOAuth only).
func (a *Azurite) AccountURL() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return fmt.Sprintf("https://%s.blob.localhost:%s/", Account, a.Port)
}

// ClientEnv is the environment a client process needs to reach
// AccountURL: the proxy, and the certificate as its only trusted root.
func (a *Azurite) ClientEnv() []string {
	return []string{"HTTPS_PROXY=" + a.oauth.proxy.URL, "SSL_CERT_FILE=" + a.oauth.certFile}
}

// HTTPClient is an HTTP client of this process that reaches AccountURL.
func (a *Azurite) HTTPClient() *http.Client {
	proxy, _ := url.Parse(a.oauth.proxy.URL)
	return &http.Client{Transport: &http.Transport{
		Proxy:           http.ProxyURL(proxy),
		TLSClientConfig: &tls.Config{RootCAs: a.oauth.roots, MinVersion: tls.VersionTLS12},
	}}
}

// tunnel serves the proxy: CONNECT to ACCOUNT.blob.localhost:<port> opens
// a tunnel to Azurite; anything else is refused.
func (a *Azurite) tunnel(w http.ResponseWriter, r *http.Request) {
	host, port, err := net.SplitHostPort(r.Host)
	a.mu.Lock()
	want := a.Port
	a.mu.Unlock()
	if r.Method != http.MethodConnect || err != nil || !strings.HasSuffix(host, ".blob.localhost") || port != want {
		http.Error(w, "this proxy only tunnels to Azurite's *.blob.localhost:"+want, http.StatusForbidden)
		return
	}
	up, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", port), 5*time.Second)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	conn, buf, err := w.(http.Hijacker).Hijack()
	if err != nil {
		up.Close()
		return
	}
	io.WriteString(conn, "HTTP/1.1 200 Connection established\r\n\r\n")
	go func() {
		io.Copy(up, buf)
		up.(*net.TCPConn).CloseWrite()
	}()
	io.Copy(conn, up)
	conn.Close()
	up.Close()
}

// selfSigned writes a self-signed ECDSA certificate for the names and
// 127.0.0.1, and its key, as PEM files in dir.
func selfSigned(t testing.TB, dir string, names ...string) (certFile, keyFile string, roots *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: names[0]},
		DNSNames:              append(names, "localhost"),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "azurite-cert.pem"), filepath.Join(dir, "azurite-key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	roots = x509.NewCertPool()
	roots.AddCert(cert)
	return certFile, keyFile, roots
}

// Identity is a managed identity endpoint on loopback, speaking the
// protocol of Azure App Service's (IDENTITY_ENDPOINT, IDENTITY_HEADER),
// which azidentity's DefaultAzureCredential finds in the environment. It
// hands out tokens of the shape Microsoft Entra ID issues for Azure
// Storage, which Azurite's OAuth mode checks (issuer, audience, times);
// Azurite does not check signatures, but they are made anyway.
type Identity struct {
	srv    *httptest.Server
	header string
	key    []byte

	mu       sync.Mutex
	requests []string // the resource asked for, per token handed out
	refuse   bool
}

// Tenant and Object are the tenant and the object id of the identity.
const (
	Tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	Object = "4e4b8a0f-9a53-4b8b-a2f4-6c0c1f3b5a11"
)

// StartIdentity starts the endpoint; it stops when the test ends.
func StartIdentity(t testing.TB) *Identity {
	id := &Identity{header: randomHex(t, 16), key: []byte(randomHex(t, 32))}
	id.srv = httptest.NewServer(http.HandlerFunc(id.serve))
	t.Cleanup(id.srv.Close)
	return id
}

// Env is the environment that makes DefaultAzureCredential use this
// endpoint as the process's managed identity.
func (id *Identity) Env() []string {
	return []string{"IDENTITY_ENDPOINT=" + id.srv.URL + "/msi/token", "IDENTITY_HEADER=" + id.header}
}

// Refuse makes the endpoint refuse (true) or hand out (false) tokens, as
// an identity without access would be.
func (id *Identity) Refuse(refuse bool) {
	id.mu.Lock()
	id.refuse = refuse
	id.mu.Unlock()
}

// Tokens returns the resource of each token handed out so far.
func (id *Identity) Tokens() []string {
	id.mu.Lock()
	defer id.mu.Unlock()
	return append([]string(nil), id.requests...)
}

func (id *Identity) serve(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if r.URL.Path != "/msi/token" || r.Header.Get("X-IDENTITY-HEADER") != id.header || q.Get("api-version") != "2019-08-01" {
		http.Error(w, `{"error":"invalid_request","error_description":"wrong path, header or api-version"}`, http.StatusBadRequest)
		return
	}
	resource := q.Get("resource")
	id.mu.Lock()
	refuse := id.refuse
	if !refuse {
		id.requests = append(id.requests, resource)
	}
	id.mu.Unlock()
	if refuse {
		http.Error(w, `{"error":"invalid_scope","error_description":"this identity has no access"}`, http.StatusBadRequest)
		return
	}
	now := time.Now()
	exp := now.Add(time.Hour)
	token := id.jwt(map[string]any{
		"aud": strings.TrimSuffix(resource, "/"),
		"iss": "https://sts.windows.net/" + Tenant + "/",
		"iat": now.Unix(), "nbf": now.Add(-5 * time.Minute).Unix(), "exp": exp.Unix(),
		"oid": Object, "tid": Tenant, "sub": Object,
	})
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]string{
		"access_token": token,
		"expires_on":   strconv.FormatInt(exp.Unix(), 10),
		"resource":     resource,
		"token_type":   "Bearer",
		"client_id":    Object,
	})
}

// jwt makes an HS256 JSON Web Token of claims.
func (id *Identity) jwt(claims map[string]any) string {
	enc := base64.RawURLEncoding
	head, _ := json.Marshal(map[string]string{"alg": "HS256", "typ": "JWT"})
	body, _ := json.Marshal(claims)
	signed := enc.EncodeToString(head) + "." + enc.EncodeToString(body)
	mac := hmac.New(sha256.New, id.key)
	mac.Write([]byte(signed))
	return signed + "." + enc.EncodeToString(mac.Sum(nil))
}

func randomHex(t testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", b)
}
