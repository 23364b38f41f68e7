//go:build linux || darwin

package transport

import (
	"net"

	"golang.org/x/sys/unix"
)

// unsentLowWater is how many bytes of an answer may wait unsent in a
// connection's socket before the server's writes wait too.
//
// Without a bound, the kernel grows a connection's send buffer to
// megabytes, and a write that found it full waits until a good part of it
// has drained: at a slow client's pace (a phone downloading an export at
// a megabyte a second, or less), longer than an answer's write deadline
// (REQUEST_TIMEOUT from its last write), though the client keeps reading.
// With the bound, a blocked write is woken once the unsent bytes fall
// below half of it (Linux's rule), so it waits for about 8 kB and its own
// bytes to be read: a client that keeps reading at a few kB/s keeps its
// answer. What is in flight on the network is not bounded by it, so a long
// fast link loses no throughput; a fast reader's writes only wait more
// often, for less.
const unsentLowWater = 16 << 10

// boundUnsent sets the bound on an accepted connection (a listening
// socket's own setting is not passed on to its connections). A
// connection that refuses it is served without it.
func boundUnsent(c net.Conn) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return
	}
	_ = raw.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_NOTSENT_LOWAT, unsentLowWater)
	})
}
