// Package faultproxy is an HTTP proxy for tests that sits between a server
// and its storage (Azurite) and injects faults on demand: latency, error
// answers, dropped connections, and requests stalled until the fault ends.
package faultproxy

import (
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
	p := &Proxy{URL: "http://" + ln.Addr().String(), released: make(chan struct{})}
	rp := httputil.NewSingleHostReverseProxy(u)
	p.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
