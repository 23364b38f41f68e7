package transport

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"connectrpc.com/connect"

	"github.com/tenant-registry/tenant-registry/domain"
)

// DevPrincipal is who every call acts as when authentication is off (dev
// mode without an issuer).
var DevPrincipal = domain.Principal{ID: "dev", Name: "dev platform admin", Type: "dev", Roles: []string{"platform-admin"}}

// callerInterceptor puts the domain.Caller into the context: the principal
// and the source address, taken from X-Forwarded-For only when the direct
// peer is a trusted proxy.
type callerInterceptor struct {
	trustedProxies []netip.Prefix
	principal      domain.Principal
}

func (i callerInterceptor) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		return next(i.with(ctx, req.Peer(), req.Header()), req)
	}
}

func (i callerInterceptor) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

func (i callerInterceptor) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return func(ctx context.Context, conn connect.StreamingHandlerConn) error {
		return next(i.with(ctx, conn.Peer(), conn.RequestHeader()), conn)
	}
}

func (i callerInterceptor) with(ctx context.Context, peer connect.Peer, h http.Header) context.Context {
	return domain.WithCaller(ctx, domain.Caller{Principal: i.principal, SourceIP: i.sourceIP(peer.Addr, h)})
}

// sourceIP returns the client's address: the peer's, or, when the peer is
// a trusted proxy, the last address in X-Forwarded-For that is not one.
func (i callerInterceptor) sourceIP(peerAddr string, h http.Header) string {
	host, _, err := net.SplitHostPort(peerAddr)
	if err != nil {
		host = peerAddr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return ""
	}
	ip = ip.Unmap()
	if !i.trusted(ip) {
		return ip.String()
	}
	hops := strings.Split(strings.Join(h.Values("X-Forwarded-For"), ","), ",")
	for j := len(hops) - 1; j >= 0; j-- {
		hop, err := netip.ParseAddr(strings.TrimSpace(hops[j]))
		if err != nil {
			break // a malformed hop ends what can be believed
		}
		ip = hop.Unmap()
		if !i.trusted(ip) {
			break
		}
	}
	return ip.String()
}

func (i callerInterceptor) trusted(ip netip.Addr) bool {
	for _, p := range i.trustedProxies {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}
