//go:build !linux && !darwin

package transport

import "net"

// boundUnsent does nothing where a socket's unsent bytes cannot be
// bounded (see listen_lowat.go).
func boundUnsent(net.Conn) {}
