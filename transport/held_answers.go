package transport

import (
	"context"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/tenant-registry/tenant-registry/domain"
	"github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1/tenantregistryv1connect"
)

// A unary answer is written after its handler returned, and a client that
// does not read it keeps it in the server's memory until the answer's
// deadline: a page of 500 API keys of the largest metadata is about 9 MB,
// and over HTTP/2 a stream whose window stays shut keeps even a small
// answer. Every answer counts against these bounds, per caller's tenant
// and in all, until it is taken, cut or ends. A read whose answer would
// pass either is refused with RESOURCE_EXHAUSTED; a change is refused so
// before it runs, once its caller's tenant or the replica holds its bound
// already, and its answer counts even past them (it is made). Bytes are
// an answer's protobuf size: its JSON is up to about twice that. The
// audit log's pages count against their own, smaller bounds as well.
const (
	MaxHeldAnswerBytesPerTenant = 16 << 20
	MaxHeldAnswerBytes          = 64 << 20
)

// answerHold counts the answers of unary calls against the bounds above.
type answerHold struct{ held *domain.Budget }

// uncountedProcedures are the hot path's: their answers are a key's or an
// entitlement's, and the calls are products', on every request.
var uncountedProcedures = map[string]bool{
	tenantregistryv1connect.ApiKeyServiceVerifyApiKeyProcedure:          true,
	tenantregistryv1connect.EntitlementServiceCheckEntitlementProcedure: true,
}

func (h answerHold) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		ri := requestInfoFrom(ctx)
		if ri == nil || uncountedProcedures[req.Spec().Procedure] {
			return next(ctx, req) // no exchange to hold it (a call in process), or the hot path
		}
		tenantID := domain.CallerFrom(ctx).Principal.TenantID // "" for the platform's users
		change := req.Spec().IdempotencyLevel != connect.IdempotencyNoSideEffects
		if change {
			if total, ofTenant := h.held.Held(tenantID); ofTenant >= MaxHeldAnswerBytesPerTenant || total >= MaxHeldAnswerBytes {
				return nil, boundError(ofTenant >= MaxHeldAnswerBytesPerTenant, MaxHeldAnswerBytesPerTenant, MaxHeldAnswerBytes, tenantHeldFull, heldFull)
			}
		}
		res, err := next(ctx, req)
		if err != nil || res == nil {
			return res, err
		}
		msg, ok := res.Any().(proto.Message)
		if !ok {
			return res, nil
		}
		n := proto.Size(msg)
		if change {
			h.held.Add(tenantID, n)
			ri.afterAnswer(func() { h.held.Release(tenantID, n) })
			return res, nil
		}
		if err := holdUntilAnswered(ri, h.held, tenantID, n, MaxHeldAnswerBytesPerTenant, MaxHeldAnswerBytes, tenantHeldFull, heldFull); err != nil {
			return nil, err
		}
		return res, nil
	}
}

func (h answerHold) WrapStreamingClient(next connect.StreamingClientFunc) connect.StreamingClientFunc {
	return next
}

// Streams hold a message at a time; exports have bounds of their own.
func (h answerHold) WrapStreamingHandler(next connect.StreamingHandlerFunc) connect.StreamingHandlerFunc {
	return next
}

const (
	tenantHeldFull = "answers to this tenant's callers that they have not taken yet hold %d MiB already; try again when they are read (a smaller page_size holds less)"
	heldFull       = "answers that their callers have not taken yet hold %d MiB on this server already; try again shortly"
)

// holdUntilAnswered counts n against b for key until ri's answer is
// taken, cut or ends, or refuses it with the message of the bound it
// would pass: keyFull or full, formatted with that bound in MiB.
func holdUntilAnswered(ri *requestInfo, b *domain.Budget, key string, n, perKey, total int, keyFull, full string) error {
	ok, isKey := b.Take(key, n, perKey, total)
	if !ok {
		return boundError(isKey, perKey, total, keyFull, full)
	}
	ri.afterAnswer(func() { b.Release(key, n) })
	return nil
}

// boundError refuses what would pass a bound: the key's (keyFull, with
// perKey in MiB) or the whole's (full, with total in MiB).
func boundError(isKey bool, perKey, total int, keyFull, full string) error {
	if isKey {
		return domain.Errorf(domain.KindResourceExhausted, keyFull, perKey>>20)
	}
	return domain.Errorf(domain.KindResourceExhausted, full, total>>20)
}
