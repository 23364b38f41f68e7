// Package tcpproxy forwards TCP connections to a target and can fail the
// way networks fail, for tests: cut (every connection closed, new ones
// refused) or frozen (every connection held open, no byte moving either
// way, as in a partition or behind a stuck NAT: no FIN, no RST).
package tcpproxy

import (
	"net"
	"net/url"
	"sync"
	"testing"
)

// Proxy forwards connections from its address to a target.
type Proxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	cut   bool
	gate  chan struct{} // while frozen: open, closed on thawing
	conns map[net.Conn]struct{}
}

// Start forwards a free loopback port to target until t ends.
func Start(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	go p.accept()
	t.Cleanup(func() {
		ln.Close()
		p.Cut(true)
	})
	return p
}

// Addr is the proxy's address.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// URL returns rawURL with its host replaced by the proxy's.
func (p *Proxy) URL(t testing.TB, rawURL string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = p.Addr()
	return u.String()
}

// Cut closes every forwarded connection, and every new one at once, while
// cut is true; false heals the proxy. Cutting also ends a freeze.
func (p *Proxy) Cut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		p.thawLocked()
		for c := range p.conns {
			c.Close()
		}
		clear(p.conns)
	}
}

// Freeze holds every connection open and moves no byte, in either
// direction, while frozen is true; new connections are accepted and held
// too. false lets everything held move on.
func (p *Proxy) Freeze(frozen bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if frozen && p.gate == nil {
		p.gate = make(chan struct{})
	}
	if !frozen {
		p.thawLocked()
	}
}

func (p *Proxy) thawLocked() {
	if p.gate != nil {
		close(p.gate)
		p.gate = nil
	}
}

// wait blocks while the proxy is frozen.
func (p *Proxy) wait() {
	p.mu.Lock()
	gate := p.gate
	p.mu.Unlock()
	if gate != nil {
		<-gate
	}
}

func (p *Proxy) accept() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.forward(client)
	}
}

// track remembers c unless the proxy is cut, in which case it closes c.
func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) forward(client net.Conn) {
	if !p.track(client) {
		return
	}
	p.wait() // a connection opened while frozen reaches the target after
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		client.Close()
		return
	}
	if !p.track(server) {
		client.Close()
		return
	}
	go p.pipe(server, client)
	p.pipe(client, server)
}

// pipe copies src to dst, holding what it read while frozen, until either
// fails; then it closes both.
func (p *Proxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		p.wait()
		n, err := src.Read(buf)
		if n > 0 {
			p.wait()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
