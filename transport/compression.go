package transport

import (
	"compress/gzip"
	"io"

	"connectrpc.com/connect"
)

// compressMinBytes is the smallest response message that is compressed
// when the client accepts gzip. Resetting a gzip writer costs more CPU than
// a whole small RPC (a quarter of a cached VerifyApiKey, in profiles under
// load), and gzip saves nothing on a few hundred bytes.
const compressMinBytes = 1024

// compression is how responses are compressed: gzip at its fastest level,
// only from compressMinBytes up. Connect's default level spent a quarter of
// a ListAuditEvents page's CPU compressing; the fastest level costs a few
// more bytes on the wire and a fraction of the CPU.
func compression() connect.HandlerOption {
	return connect.WithHandlerOptions(
		connect.WithCompressMinBytes(compressMinBytes),
		connect.WithCompression("gzip",
			func() connect.Decompressor { return &gzip.Reader{} },
			func() connect.Compressor {
				w, _ := gzip.NewWriterLevel(io.Discard, gzip.BestSpeed) // err only for a bad level
				return w
			}),
	)
}
