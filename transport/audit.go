package transport

import (
	"context"
	"strconv"

	"connectrpc.com/connect"
	"golang.org/x/mod/sumdb/tlog"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tenant-registry/tenant-registry/domain"
	v1 "github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1"
	"github.com/tenant-registry/tenant-registry/gen/go/tenantregistry/v1/tenantregistryv1connect"
)

// AuditServer serves tenantregistry.v1.AuditService.
type AuditServer struct {
	audit *domain.AuditService
	// pages are the bytes of listed events whose answers are not yet
	// taken by their clients (see ListAuditEvents).
	pages domain.Budget
}

// Bounds of the events' text a replica's ListAuditEvents answers hold
// until their clients take them: a page holds about a megabyte (see the
// domain's auditPageBytes), and its client takes as long as it likes, up
// to the answer's deadline. About four full pages per log and reading
// tenant, 32 in all.
const (
	MaxListedBytesPerLog = 4 << 20
	MaxListedBytes       = 32 << 20
)

var _ tenantregistryv1connect.AuditServiceHandler = (*AuditServer)(nil)

// NewAuditServer returns the AuditService handler over the domain service.
func NewAuditServer(audit *domain.AuditService) *AuditServer { return &AuditServer{audit: audit} }

// RecordAuditEvent appends one event.
func (s *AuditServer) RecordAuditEvent(ctx context.Context, req *v1.RecordAuditEventRequest) (*v1.RecordAuditEventResponse, error) {
	var v domain.Violations
	if req.GetEvent() == nil {
		v.Add("event", "is required")
		return nil, v.Err()
	}
	e := auditEventIn(&v, "event.", req.GetEvent())
	if err := v.Err(); err != nil {
		return nil, err
	}
	out, err := s.audit.Record(ctx, e)
	if err != nil {
		return nil, err
	}
	return &v1.RecordAuditEventResponse{Event: auditEventOut(out)}, nil
}

// RecordAuditEvents appends up to 500 events, all or nothing.
func (s *AuditServer) RecordAuditEvents(ctx context.Context, req *v1.RecordAuditEventsRequest) (*v1.RecordAuditEventsResponse, error) {
	var v domain.Violations
	events := make([]*domain.AuditEvent, len(req.GetEvents()))
	if len(events) <= domain.MaxAuditBatch {
		for i, e := range req.GetEvents() {
			events[i] = auditEventIn(&v, "events["+strconv.Itoa(i)+"].", e)
		}
	}
	if err := v.Err(); err != nil {
		return nil, err
	}
	out, err := s.audit.RecordBatch(ctx, events)
	if err != nil {
		return nil, err
	}
	res := &v1.RecordAuditEventsResponse{Events: make([]*v1.AuditEvent, len(out))}
	for i, e := range out {
		res.Events[i] = auditEventOut(e)
	}
	return res, nil
}

// ListAuditEvents returns one page of events, newest first.
func (s *AuditServer) ListAuditEvents(ctx context.Context, req *v1.ListAuditEventsRequest) (*v1.ListAuditEventsResponse, error) {
	f, err := auditFilterIn(req)
	if err != nil {
		return nil, err
	}
	page, err := s.audit.List(ctx, f, domain.PageRequest{Size: int(req.GetPageSize()), Token: req.GetPageToken()})
	if err != nil {
		return nil, err
	}
	if err := s.holdPage(ctx, f.TenantID, page.Items); err != nil {
		return nil, err
	}
	res := &v1.ListAuditEventsResponse{NextPageToken: page.NextPageToken, Events: make([]*v1.AuditEvent, len(page.Items))}
	for i, e := range page.Items {
		res.Events[i] = auditEventOut(e)
	}
	return res, nil
}

// holdPage counts events against the log's bound for its reader's tenant
// (ReaderLogKey) and the replica's bound until their answer is taken, cut
// or ends, or says that it would pass one.
func (s *AuditServer) holdPage(ctx context.Context, tenantID string, events []*domain.AuditEvent) error {
	n := domain.AuditBytes(events)
	ri := requestInfoFrom(ctx)
	if ri == nil || n == 0 {
		return nil // no exchange to hold it (a call in process), or nothing to hold
	}
	return holdUntilAnswered(ri, &s.pages, domain.ReaderLogKey(ctx, tenantID), n, MaxListedBytesPerLog, MaxListedBytes,
		"pages of this audit log that this tenant's callers have not taken yet hold %d MiB already; try again when they are read, or ask for a smaller page_size",
		"audit pages that their callers have not taken yet hold %d MiB on this server already; try again shortly")
}

// ExportAuditEvents streams every matching event, newest first.
func (s *AuditServer) ExportAuditEvents(ctx context.Context, req *v1.ExportAuditEventsRequest, stream *connect.ServerStream[v1.ExportAuditEventsResponse]) error {
	f, err := auditFilterIn(req)
	if err != nil {
		return err
	}
	return s.audit.Export(ctx, f, func(e *domain.AuditEvent) error {
		return stream.Send(&v1.ExportAuditEventsResponse{Event: auditEventOut(e)})
	})
}

var logProblems = map[domain.LogProblem]v1.AuditLogProblem{
	domain.ProblemTreeInconsistent: v1.AuditLogProblem_AUDIT_LOG_PROBLEM_TREE_INCONSISTENT,
	domain.ProblemEventChanged:     v1.AuditLogProblem_AUDIT_LOG_PROBLEM_EVENT_CHANGED,
	domain.ProblemEventMissing:     v1.AuditLogProblem_AUDIT_LOG_PROBLEM_EVENT_MISSING,
	domain.ProblemEventOutOfBand:   v1.AuditLogProblem_AUDIT_LOG_PROBLEM_EVENT_OUT_OF_BAND,
	domain.ProblemTruncated:        v1.AuditLogProblem_AUDIT_LOG_PROBLEM_TRUNCATED,
	domain.ProblemRewritten:        v1.AuditLogProblem_AUDIT_LOG_PROBLEM_REWRITTEN,
}

// VerifyAuditChain checks a tenant's log, and against a checkpoint kept.
func (s *AuditServer) VerifyAuditChain(ctx context.Context, req *v1.VerifyAuditChainRequest) (*v1.VerifyAuditChainResponse, error) {
	r, err := s.audit.VerifyChain(ctx, req.GetTenantId(), []byte(req.GetCheckpoint()))
	if err != nil {
		return nil, err
	}
	return &v1.VerifyAuditChainResponse{
		Ok: r.OK, EventsChecked: r.EventsChecked, FirstBrokenSeq: r.FirstBrokenSeq, Problem: r.Detail,
		ProblemKind: logProblems[r.Problem], LogSize: r.Size, ExpiredThroughSeq: r.ExpiredThrough,
	}, nil
}

// GetAuditCheckpoint returns a tenant's signed tree head.
func (s *AuditServer) GetAuditCheckpoint(ctx context.Context, req *v1.GetAuditCheckpointRequest) (*v1.GetAuditCheckpointResponse, error) {
	c, err := s.audit.Checkpoint(ctx, req.GetTenantId())
	if err != nil {
		return nil, err
	}
	return &v1.GetAuditCheckpointResponse{Checkpoint: string(c.Note), TreeSize: c.Checkpoint.Size, RootHash: c.Checkpoint.Root[:]}, nil
}

// ProveAuditEvent returns an inclusion proof.
func (s *AuditServer) ProveAuditEvent(ctx context.Context, req *v1.ProveAuditEventRequest) (*v1.ProveAuditEventResponse, error) {
	p, err := s.audit.ProveEvent(ctx, req.GetTenantId(), req.GetSeq(), req.GetTreeSize())
	if err != nil {
		return nil, err
	}
	return &v1.ProveAuditEventResponse{Seq: p.Seq, TreeSize: p.TreeSize, LeafHash: p.Leaf[:], RootHash: p.Root[:], Proof: hashesOut(p.Proof)}, nil
}

// ProveAuditConsistency returns a consistency proof.
func (s *AuditServer) ProveAuditConsistency(ctx context.Context, req *v1.ProveAuditConsistencyRequest) (*v1.ProveAuditConsistencyResponse, error) {
	p, err := s.audit.ProveConsistency(ctx, req.GetTenantId(), req.GetOldSize(), req.GetNewSize())
	if err != nil {
		return nil, err
	}
	return &v1.ProveAuditConsistencyResponse{
		OldSize: p.OldSize, NewSize: p.NewSize, OldRootHash: p.OldRoot[:], NewRootHash: p.NewRoot[:], Proof: hashesOut(p.Proof),
	}, nil
}

// GetAuditVerifierKey returns the checkpoints' public key.
func (s *AuditServer) GetAuditVerifierKey(ctx context.Context, _ *v1.GetAuditVerifierKeyRequest) (*v1.GetAuditVerifierKeyResponse, error) {
	name, id, vkey := s.audit.VerifierKey()
	return &v1.GetAuditVerifierKeyResponse{VerifierKey: vkey, Name: name, KeyId: id}, nil
}

func hashesOut(hashes []tlog.Hash) [][]byte {
	out := make([][]byte, len(hashes))
	for i := range hashes {
		out[i] = hashes[i][:]
	}
	return out
}

// auditFilterRequest is what ListAuditEventsRequest and
// ExportAuditEventsRequest share: the filters.
type auditFilterRequest interface {
	GetTenantId() string
	GetProduct() string
	GetActorId() string
	GetAction() string
	GetTargetId() string
	GetSince() *timestamppb.Timestamp
	GetUntil() *timestamppb.Timestamp
}

// auditFilterIn converts the filters of a list or export request.
func auditFilterIn(req auditFilterRequest) (domain.AuditFilter, error) {
	var v domain.Violations
	f := domain.AuditFilter{
		TenantID: req.GetTenantId(), Product: req.GetProduct(), ActorID: req.GetActorId(),
		Action: req.GetAction(), TargetID: req.GetTargetId(),
		Since: timeIn(&v, "since", req.GetSince()), Until: timeIn(&v, "until", req.GetUntil()),
	}
	return f, v.Err()
}

// auditEventIn converts an event a product sends. Server-set fields (id,
// receive_time, seq, hash) are ignored.
func auditEventIn(v *domain.Violations, prefix string, e *v1.AuditEvent) *domain.AuditEvent {
	if e == nil {
		v.Add(prefix[:len(prefix)-1], "is required")
		return nil
	}
	return &domain.AuditEvent{
		TenantID: e.GetTenantId(), Product: e.GetProduct(), Action: e.GetAction(), CRUD: e.GetCrud(),
		Actor:    domain.AuditActor{ID: e.GetActor().GetId(), Name: e.GetActor().GetName(), Type: e.GetActor().GetType()},
		Target:   domain.AuditTarget{ID: e.GetTarget().GetId(), Type: e.GetTarget().GetType(), Name: e.GetTarget().GetName()},
		SourceIP: e.GetSourceIp(), Description: e.GetDescription(), IsFailure: e.GetIsFailure(), IsAnonymous: e.GetIsAnonymous(),
		Fields: e.GetFields(), OccurTime: timeIn(v, prefix+"occur_time", e.GetOccurTime()), ExternalID: e.GetExternalId(),
	}
}

func auditEventOut(e *domain.AuditEvent) *v1.AuditEvent {
	return &v1.AuditEvent{
		Id: e.ID, TenantId: e.TenantID, Product: e.Product, Action: e.Action, Crud: e.CRUD,
		Actor:    &v1.AuditActor{Id: e.Actor.ID, Name: e.Actor.Name, Type: e.Actor.Type},
		Target:   &v1.AuditTarget{Id: e.Target.ID, Type: e.Target.Type, Name: e.Target.Name},
		SourceIp: e.SourceIP, Description: e.Description, IsFailure: e.IsFailure, IsAnonymous: e.IsAnonymous,
		Fields: e.Fields, OccurTime: timeOut(e.OccurTime), ReceiveTime: timeOut(e.ReceiveTime),
		ExternalId: e.ExternalID, Seq: e.Seq, Hash: e.Hash,
	}
}

func retentionOut(r *domain.Retention) *v1.AuditRetention {
	return &v1.AuditRetention{TenantId: r.TenantID, RetentionDays: int32(r.Days), Default: r.Default}
}

// GetAuditRetention returns how long a log keeps its events.
func (s *AuditServer) GetAuditRetention(ctx context.Context, req *v1.GetAuditRetentionRequest) (*v1.GetAuditRetentionResponse, error) {
	r, err := s.audit.Retention(ctx, req.GetTenantId())
	if err != nil {
		return nil, err
	}
	return &v1.GetAuditRetentionResponse{Retention: retentionOut(r)}, nil
}

// SetAuditRetention sets how long a log keeps its events.
func (s *AuditServer) SetAuditRetention(ctx context.Context, req *v1.SetAuditRetentionRequest) (*v1.SetAuditRetentionResponse, error) {
	if req.RetentionDays == nil {
		return nil, domain.Violations{{Field: "retention_days", Description: "is required: a number of days, or 0 to keep events forever"}}.Err()
	}
	r, err := s.audit.SetRetention(ctx, req.GetTenantId(), int(req.GetRetentionDays()))
	if err != nil {
		return nil, err
	}
	return &v1.SetAuditRetentionResponse{Retention: retentionOut(r)}, nil
}
