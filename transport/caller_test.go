package transport

import (
	"net/http"
	"net/netip"
	"testing"
)

func TestSourceIP(t *testing.T) {
	r := sourceResolver{trustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}}
	tests := []struct {
		name, peer, xff, want string
	}{
		{"direct client", "192.0.2.7:5555", "", "192.0.2.7"},
		{"untrusted peer's header is ignored", "192.0.2.7:5555", "203.0.113.9", "192.0.2.7"},
		{"trusted proxy", "10.1.2.3:443", "203.0.113.9", "203.0.113.9"},
		{"chain of trusted proxies", "10.1.2.3:443", "203.0.113.9, 10.9.9.9, 10.8.8.8", "203.0.113.9"},
		{"spoofed first hop is not believed", "10.1.2.3:443", "198.51.100.1, 203.0.113.9", "203.0.113.9"},
		{"malformed hop stops the walk", "10.1.2.3:443", "203.0.113.9, garbage", "10.1.2.3"},
		{"trusted proxy without header", "10.1.2.3:443", "", "10.1.2.3"},
		{"IPv6 loopback proxy", "[::1]:443", "2001:db8::1", "2001:db8::1"},
		{"IPv4-mapped peer", "[::ffff:192.0.2.7]:1", "", "192.0.2.7"},
		{"unparsable peer", "pipe", "", ""},
	}
	for _, tc := range tests {
		h := http.Header{}
		if tc.xff != "" {
			h.Set("X-Forwarded-For", tc.xff)
		}
		if got := r.sourceIP(tc.peer, h); got != tc.want {
			t.Errorf("%s: sourceIP(%q, %q) = %q, want %q", tc.name, tc.peer, tc.xff, got, tc.want)
		}
	}
}
