package transport

import "net"

// slowReaderListener bounds the unsent bytes of every connection it
// accepts (see boundUnsent), so that the answers' write deadlines measure
// a client's reading rather than the kernel's buffering.
type slowReaderListener struct{ net.Listener }

func (l slowReaderListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		boundUnsent(c)
	}
	return c, err
}
