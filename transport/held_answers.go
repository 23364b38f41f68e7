package transport

import (
	"context"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/proto"

	"github.com/tenant-registry/tenant-registry/domain"
	v1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
)

// A unary answer is written after its handler returned, and a client that
// does not read it keeps it in the server's memory until the answer's
// deadline: a page of 500 API keys of the largest metadata is about 9 MB.
// Answers of MinHeldAnswer bytes and more count against these bounds, per
// caller's tenant and in all, until they are taken, cut or end; one that
// would pass either is refused with RESOURCE_EXHAUSTED. Bytes are the
// answer's protobuf size: its JSON is up to about twice that. The audit
// log's pages count against their own, smaller bounds as well.
const (
	MaxHeldAnswerBytesPerTenant = 16 << 20
	MaxHeldAnswerBytes          = 64 << 20
	// MinHeldAnswer is where counting starts: what is smaller fits about
	// what the kernel takes of an answer (TCP_NOTSENT_LOWAT and the
	// bytes in flight), and is not worth a size.
	MinHeldAnswer = 16 << 10
)

// answerHold counts the large answers of unary reads against the bounds
// above.
type answerHold struct{ held *domain.Budget }

func (h answerHold) WrapUnary(next connect.UnaryFunc) connect.UnaryFunc {
	return func(ctx context.Context, req connect.AnyRequest) (connect.AnyResponse, error) {
		res, err := next(ctx, req)
		if err != nil || res == nil || req.Spec().IdempotencyLevel != connect.IdempotencyNoSideEffects {
			return res, err // a change's answer is one record, and refusing it would hide that the change was made
		}
		if err := h.hold(ctx, res.Any()); err != nil {
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

// hold counts answer against its caller's tenant's bound and the
// server's until it is taken, or says that it would pass one.
func (h answerHold) hold(ctx context.Context, answer any) error {
	switch answer.(type) {
	case *v1.CheckEntitlementResponse:
		return nil // the hot path's: one entitlement, far under MinHeldAnswer
	}
	msg, ok := answer.(proto.Message)
	ri := requestInfoFrom(ctx)
	if !ok || ri == nil {
		return nil // no exchange to hold it (a call in process)
	}
	n := proto.Size(msg)
	if n < MinHeldAnswer {
		return nil
	}
	tenantID := domain.CallerFrom(ctx).Principal.TenantID // "" for the platform's users
	return holdUntilAnswered(ri, h.held, tenantID, n, MaxHeldAnswerBytesPerTenant, MaxHeldAnswerBytes,
		"answers to this tenant's callers that they have not taken yet hold %d MiB already; try again when they are read (a smaller page_size holds less)",
		"answers that their callers have not taken yet hold %d MiB on this server already; try again shortly")
}

// holdUntilAnswered counts n against b for key until ri's answer is
// taken, cut or ends, or refuses it with the message of the bound it
// would pass: keyFull or full, formatted with that bound in MiB.
func holdUntilAnswered(ri *requestInfo, b *domain.Budget, key string, n, perKey, total int, keyFull, full string) error {
	switch ok, isKey := b.Take(key, n, perKey, total); {
	case ok:
		ri.afterAnswer(func() { b.Release(key, n) })
		return nil
	case isKey:
		return domain.Errorf(domain.KindResourceExhausted, keyFull, perKey>>20)
	default:
		return domain.Errorf(domain.KindResourceExhausted, full, total>>20)
	}
}
