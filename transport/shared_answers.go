package transport

import (
	"runtime"
	"sync"
	"sync/atomic"
	"weak"

	v1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
)

// sharedAnswers keeps the encodings of the answers many calls share. A
// VALID verification, and an entitlement check, is made once and returned
// to every call until it changes (see the domain's Rendered), so it is
// encoded once per codec too, instead of once a call: on the hot path the
// encoding was a fifth of what the server spent on a call. Answers are
// keyed weakly: one the domain has replaced is collected, and its entry
// goes with it.
var sharedAnswers sync.Map // weak.Pointer to the answer → *encodings

// encodings are a shared answer's encodings, made at its first call.
type encodings struct{ json, binary atomic.Pointer[[]byte] }

// shareAnswer marks msg as an answer many calls share, whose encodings
// are kept; msg must not change afterwards.
func shareAnswer[T any](msg *T) *T {
	k := weak.Make(msg)
	sharedAnswers.Store(k, &encodings{})
	runtime.AddCleanup(msg, func(k weak.Pointer[T]) { sharedAnswers.Delete(k) }, k)
	return msg
}

// encodingsOf returns the encodings kept for message, or nil when it is
// not a shared answer. Only the hot path's answers are ever shared.
func encodingsOf(message any) *encodings {
	var k any
	switch m := message.(type) {
	case *v1.VerifyApiKeyResponse:
		k = weak.Make(m)
	case *v1.CheckEntitlementResponse:
		k = weak.Make(m)
	default:
		return nil
	}
	e, ok := sharedAnswers.Load(k)
	if !ok {
		return nil
	}
	return e.(*encodings)
}

// maxKeptEncoding bounds an encoding kept: a hot-path answer is a few
// hundred bytes, but a key's metadata may make its answer 20 kB, and the
// key cache holds up to 100,000 answers. Larger answers are encoded at
// every call, as before, so keeping encodings adds at most 2 kB per
// codec to what a cached answer holds.
const maxKeptEncoding = 2 << 10

// appendEncoded appends to dst the encoding kept in kept, making it with
// encode at the first call, and keeping it when it is small enough.
func appendEncoded(dst []byte, kept *atomic.Pointer[[]byte], encode func() ([]byte, error)) ([]byte, error) {
	if b := kept.Load(); b != nil {
		return append(dst, *b...), nil
	}
	b, err := encode()
	if err != nil {
		return nil, err
	}
	if len(b) <= maxKeptEncoding {
		kept.CompareAndSwap(nil, &b)
	}
	return append(dst, b...), nil
}
