package transport

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"

	"connectrpc.com/connect"
)

// compressMinBytes is the smallest response message that is compressed
// when the client accepts gzip. Resetting a gzip writer costs more CPU than
// a whole small RPC (a quarter of a cached VerifyApiKey, in profiles under
// load), and gzip saves nothing on a few hundred bytes.
const compressMinBytes = 1024

// compression is how messages are compressed and decompressed: responses
// with gzip at its fastest level, only from compressMinBytes up (Connect's
// default level spent a quarter of a ListAuditEvents page's CPU
// compressing; the fastest level costs a few more bytes on the wire and a
// fraction of the CPU), and requests inflated to at most maxMessageBytes
// (zero: unbounded). The same pool serves every protocol: Connect unary
// and streaming, gRPC and gRPC-Web.
func compression(maxMessageBytes int) connect.HandlerOption {
	return connect.WithHandlerOptions(
		connect.WithCompressMinBytes(compressMinBytes),
		connect.WithCompression("gzip",
			func() connect.Decompressor { return newCappedGzip(maxMessageBytes) },
			func() connect.Compressor {
				w, _ := gzip.NewWriterLevel(io.Discard, gzip.BestSpeed) // err only for a bad level
				return w
			}),
	)
}

// cappedGzip is a gzip Decompressor that inflates at most limit bytes of
// one message and then refuses with ResourceExhausted. Connect reads a
// decompressed message through a reader bounded at its message limit + 1,
// and when that bound is hit it reads the decompressor to its end to
// report the message's full size: for a 2 MB body that inflates to 2 GiB,
// a second of CPU spent on a request it has already refused. Capping here
// ends that read at once; Connect still answers ResourceExhausted.
type cappedGzip struct {
	gz    gzip.Reader
	limit int64 // bytes one message may inflate to, plus the one that proves it too large; 0: no cap
	n     int64 // bytes inflated from the current message
}

func newCappedGzip(maxMessageBytes int) *cappedGzip {
	d := &cappedGzip{}
	if maxMessageBytes > 0 {
		d.limit = int64(maxMessageBytes) + 1
	}
	return d
}

// errInflateLimit is what a read past the cap returns. Connect hands a
// *connect.Error to the caller as it is.
func (d *cappedGzip) errInflateLimit() error {
	return connect.NewError(connect.CodeResourceExhausted,
		fmt.Errorf("the compressed message inflates to more than the %d-byte message limit", d.limit-1))
}

func (d *cappedGzip) Read(p []byte) (int, error) {
	if d.limit == 0 {
		return d.gz.Read(p)
	}
	left := d.limit - d.n
	if left <= 0 {
		return 0, d.errInflateLimit()
	}
	if int64(len(p)) > left {
		p = p[:left]
	}
	n, err := d.gz.Read(p)
	d.n += int64(n)
	return n, err
}

// Reset starts on the next message, with the whole cap available again.
func (d *cappedGzip) Reset(r io.Reader) error {
	d.n = 0
	return d.gz.Reset(r)
}

// Close closes the gzip stream; a message cut short at the cap is no error
// here (Connect has the ResourceExhausted already).
func (d *cappedGzip) Close() error {
	if err := d.gz.Close(); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}
