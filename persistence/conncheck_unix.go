//go:build unix

package persistence

import (
	"errors"
	"net"
	"syscall"
	"time"
)

// idleConnBroken reports whether an idle connection's socket has been
// closed by the peer or holds unread data. It reads without blocking
// through the raw socket: a read with an expired deadline would not, as Go
// reports the deadline before trying the socket.
func idleConnBroken(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	// The raw read too fails at once once the deadline of the driver's last
	// read (10 s by default) has passed, which discarded every connection
	// idle for longer; the driver sets a new deadline before each read.
	_ = c.SetReadDeadline(time.Time{})
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	broken := false
	err = raw.Read(func(fd uintptr) bool {
		var b [1]byte
		n, err := syscall.Read(int(fd), b[:])
		switch {
		case n > 0: // data nobody asked for: a goodbye from the server
			broken = true
		case n == 0 && err == nil: // end of file: closed by the peer
			broken = true
		case errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EWOULDBLOCK):
		default:
			broken = true
		}
		return true // never wait for readiness
	})
	return broken || err != nil
}
