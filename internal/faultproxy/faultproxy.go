// Package faultproxy is an HTTP proxy for tests that sits between a server
// and its storage (Azurite) and injects faults on demand: latency, error
// answers, dropped connections, requests stalled until the fault ends, and
// late requests: one held past its client's timeout and delivered later.
package faultproxy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
	"time"
)

// Mode is the fault the proxy injects.
type Mode int

// Modes.
const (
	Pass    Mode = iota // forward every request
	Latency             // forward after a delay
	Error               // answer with an error status, forward nothing
	Drop                // close the connection without an answer
	Stall               // hold the request until the mode changes, then drop it
)

// Proxy forwards to one target.
type Proxy struct {
	URL string // the proxy's own URL

	srv      *http.Server
	mode     atomic.Int32
	delay    atomic.Int64
	status   atomic.Int32
	faults   atomic.Int64
	mu       sync.Mutex
	released chan struct{}

	target *url.URL
	late   *late
	answer *answer
}

// answer is an armed Answer fault.
type answer struct {
	match  func(*http.Request) bool
	status int
	code   string
}

// late is an armed late-request fault.
type late struct {
	hold    func(*http.Request) bool // the request to hold
	before  func(*http.Request) bool // requests that count towards delivery
	n       int                      // deliver before the n-th of them
	seen    int
	held    *http.Request
	body    []byte
	holding bool
	status  int // what the target answered the late request; 0 before
}

// Start proxies 127.0.0.1:<free port> to target.
func Start(target string) (*Proxy, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{URL: "http://" + ln.Addr().String(), released: make(chan struct{}), target: u}
	rp := httputil.NewSingleHostReverseProxy(u)
	p.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p.lateRequest(w, r) {
			return
		}
		if p.answered(w, r) {
			return
		}
		switch Mode(p.mode.Load()) {
		case Latency:
			p.faults.Add(1)
			time.Sleep(time.Duration(p.delay.Load()))
		case Error:
			p.faults.Add(1)
			w.Header().Set("x-ms-error-code", "ServerBusy")
			w.WriteHeader(int(p.status.Load()))
			return
		case Drop:
			p.faults.Add(1)
			drop(w)
			return
		case Stall:
			p.faults.Add(1)
			p.mu.Lock()
			released := p.released
			p.mu.Unlock()
			<-released
			drop(w)
			return
		}
		rp.ServeHTTP(w, r)
	})}
	go p.srv.Serve(ln)
	return p, nil
}

func drop(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if c, _, err := hj.Hijack(); err == nil {
			c.Close()
			return
		}
	}
	panic(http.ErrAbortHandler)
}

// Set changes the fault: delay for Latency, status for Error.
func (p *Proxy) Set(m Mode, delay time.Duration, status int) {
	p.delay.Store(int64(delay))
	p.status.Store(int32(status))
	old := Mode(p.mode.Swap(int32(m)))
	if old == Stall && m != Stall {
		p.mu.Lock()
		close(p.released)
		p.released = make(chan struct{})
		p.mu.Unlock()
	}
}

// Faults returns how many requests got a fault.
func (p *Proxy) Faults() int64 { return p.faults.Load() }

// Close stops the proxy.
func (p *Proxy) Close() {
	p.Set(Pass, 0, 0)
	p.srv.Close()
}

// Answer makes the requests match accepts answer status with the Azure
// error code code (header x-ms-error-code, and the XML error body), as
// storage would, without forwarding them; Answer(nil, 0, "") disarms it.
func (p *Proxy) Answer(match func(*http.Request) bool, status int, code string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if match == nil {
		p.answer = nil
		return
	}
	p.answer = &answer{match: match, status: status, code: code}
}

func (p *Proxy) answered(w http.ResponseWriter, r *http.Request) bool {
	p.mu.Lock()
	a := p.answer
	p.mu.Unlock()
	if a == nil || !a.match(r) {
		return false
	}
	p.faults.Add(1)
	w.Header().Set("x-ms-error-code", a.code)
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(a.status)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="utf-8"?><Error><Code>%s</Code><Message>injected by the fault proxy</Message></Error>`, a.code)
	return true
}

// Late arms the late-request fault: the next request for which hold is
// true is held without an answer until its client gives up (the client
// sees a timeout: an unknown outcome), and is then delivered to the target
// just before the n-th later request for which before is true, as a
// request delayed in the network arrives after the client has moved on.
func (p *Proxy) Late(hold, before func(*http.Request) bool, n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.late = &late{hold: hold, before: before, n: n}
}

// LateStatus reports whether the late request was delivered, and the
// status the target answered it with.
func (p *Proxy) LateStatus() (delivered bool, status int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.late == nil {
		return false, 0
	}
	return p.late.status != 0, p.late.status
}

// lateRequest runs the late-request fault for r; it reports true when it
// answered r itself (by holding it).
func (p *Proxy) lateRequest(w http.ResponseWriter, r *http.Request) bool {
	p.mu.Lock()
	l := p.late
	if l == nil {
		p.mu.Unlock()
		return false
	}
	if l.held == nil && !l.holding && l.status == 0 && l.hold(r) {
		l.holding = true
		p.mu.Unlock()
		body, _ := io.ReadAll(r.Body)
		<-r.Context().Done() // the client gave up
		p.mu.Lock()
		l.held, l.body, l.holding = r.Clone(context.Background()), body, false
		p.mu.Unlock()
		p.faults.Add(1)
		return true
	}
	if l.held != nil && l.before(r) {
		l.seen++
		if l.seen == l.n {
			l.status = p.deliver(l.held, l.body)
			l.held = nil
		}
	}
	p.mu.Unlock()
	return false
}

// deliver sends a held request to the target and returns the status.
func (p *Proxy) deliver(r *http.Request, body []byte) int {
	u := *p.target
	u.Path, u.RawPath, u.RawQuery = r.URL.Path, r.URL.RawPath, r.URL.RawQuery
	req, err := http.NewRequest(r.Method, u.String(), bytes.NewReader(body))
	if err != nil {
		return -1
	}
	req.Header = r.Header.Clone()
	req.ContentLength = int64(len(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return -1
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}
