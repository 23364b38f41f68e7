//go:build !unix

package persistence

import "net"

// idleConnBroken cannot look at a socket without blocking here; a broken
// connection then fails the one request that draws it.
func idleConnBroken(net.Conn) bool { return false }
