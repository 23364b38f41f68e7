package transport

import (
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/tenant-registry/tenant-registry/domain"
)

// DevPrincipal is who every call acts as when authentication is off (dev
// mode without an issuer).
var DevPrincipal = domain.Principal{ID: "dev", Name: "dev platform admin", Type: domain.PrincipalDev, Roles: []string{domain.RolePlatformAdmin}}

// sourceResolver finds a request's source address: the peer's, or from
// X-Forwarded-For when the peer is a trusted proxy.
type sourceResolver struct{ trustedProxies []netip.Prefix }

// sourceIP returns the client's address: the peer's, or, when the peer is
// a trusted proxy, the last address in X-Forwarded-For that is not one.
func (i sourceResolver) sourceIP(peerAddr string, h http.Header) string {
	host, _, err := net.SplitHostPort(peerAddr)
	if err != nil {
		host = peerAddr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return ""
	}
	if ip.Is4() && !i.trusted(ip) {
		return host // as ip.String() would write it, without making it again
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

func (i sourceResolver) trusted(ip netip.Addr) bool {
	for _, p := range i.trustedProxies {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}
