package transport

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/tenant-registry/tenant-registry/domain"
)

// ExportHeader is the header row of /audit/export.csv, in column order.
var ExportHeader = []string{
	"seq", "id", "tenant_id", "occur_time", "receive_time", "product", "action", "crud",
	"actor_id", "actor_name", "actor_type", "target_id", "target_type", "target_name",
	"source_ip", "description", "is_failure", "is_anonymous", "fields", "external_id", "hash",
}

// exportDownload serves GET /audit/export.csv and /audit/export.ndjson: a
// tenant's audit events, newest first, with the filters of
// ExportAuditEvents as query parameters, authenticated and authorised as
// the RPC is, streamed in constant memory. NDJSON lines are the events as
// protojson writes them, which `tenant-registry audit verify` checks
// against a checkpoint; CSV is for spreadsheets.
type exportDownload struct {
	audit  *domain.AuditService
	caller callerInterceptor
	log    *slog.Logger
	csv    bool
}

func (d exportDownload) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx, err := d.caller.with(r.Context(), connect.Peer{Addr: r.RemoteAddr}, r.Header)
	if err != nil {
		d.fail(w, r, err)
		return
	}
	f, err := exportFilter(r)
	if err != nil {
		d.fail(w, r, err)
		return
	}
	out := bufio.NewWriterSize(w, 32<<10)
	started := false
	start := func() {
		started = true
		name := "audit-" + f.TenantID
		if f.TenantID == "" {
			name = "audit-platform"
		}
		if d.csv {
			w.Header().Set("Content-Type", "text/csv; charset=utf-8")
			w.Header().Set("Content-Disposition", `attachment; filename="`+name+`.csv"`)
		} else {
			w.Header().Set("Content-Type", "application/x-ndjson")
			w.Header().Set("Content-Disposition", `attachment; filename="`+name+`.ndjson"`)
		}
		w.Header().Set("Cache-Control", "no-store")
	}
	var rows *csv.Writer
	if d.csv {
		rows = csv.NewWriter(out)
	}
	send := func(e *domain.AuditEvent) error {
		if !started {
			start()
			if rows != nil {
				if err := rows.Write(ExportHeader); err != nil {
					return err
				}
			}
		}
		if rows != nil {
			return rows.Write(csvRow(e))
		}
		b, err := protojson.Marshal(auditEventOut(e))
		if err != nil {
			return err
		}
		out.Write(b)
		return out.WriteByte('\n')
	}
	err = d.audit.Export(ctx, f, send)
	if err == nil && !started { // nothing matched: still a file, with its header
		start()
		if rows != nil {
			err = rows.Write(ExportHeader)
		}
	}
	if rows != nil && err == nil {
		rows.Flush()
		err = rows.Error()
	}
	if err == nil {
		err = out.Flush()
	}
	if err == nil {
		return
	}
	if !started {
		d.fail(w, r, err)
		return
	}
	// The answer has begun: end the connection rather than let a partial
	// file look complete.
	if ri := requestInfoFrom(r.Context()); ri != nil {
		ri.setCut(err.Error())
	}
	panic(http.ErrAbortHandler)
}

// auditText serves GET /audit/checkpoint?tenant_id=… (a log's signed
// checkpoint, as GetAuditCheckpoint) and GET /audit/verifier-key (the key
// to check it with) as plain text, for customers to keep and pass to
// `tenant-registry audit verify` as they are. Authenticated and
// authorised as the RPCs are.
type auditText struct {
	audit  *domain.AuditService
	caller callerInterceptor
	log    *slog.Logger
}

func (d auditText) checkpoint(w http.ResponseWriter, r *http.Request) {
	fail := exportDownload{log: d.log}.fail
	ctx, err := d.caller.with(r.Context(), connect.Peer{Addr: r.RemoteAddr}, r.Header)
	if err != nil {
		fail(w, r, err)
		return
	}
	q := r.URL.Query()
	for name := range q {
		if name != "tenant_id" || len(q[name]) > 1 {
			fail(w, r, domain.Violations{{Field: name, Description: "is not a parameter: use tenant_id, once"}}.Err())
			return
		}
	}
	c, err := d.audit.Checkpoint(ctx, q.Get("tenant_id"))
	if err != nil {
		fail(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(c.Note)
}

func (d auditText) verifierKey(w http.ResponseWriter, r *http.Request) {
	if _, err := d.caller.with(r.Context(), connect.Peer{Addr: r.RemoteAddr}, r.Header); err != nil {
		exportDownload{log: d.log}.fail(w, r, err)
		return
	}
	_, _, vkey := d.audit.VerifierKey()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte(vkey + "\n"))
}

// exportFilter reads the filters of a download from its query.
func exportFilter(r *http.Request) (domain.AuditFilter, error) {
	q := r.URL.Query()
	var v domain.Violations
	for name := range q {
		switch name {
		case "tenant_id", "product", "actor_id", "action", "target_id", "since", "until":
			if len(q[name]) > 1 {
				v.Add(name, "must be given once")
			}
		default:
			v.Add(name, "is not a filter: use tenant_id, product, actor_id, action, target_id, since, until")
		}
	}
	at := func(name string) time.Time {
		s := q.Get(name)
		if s == "" {
			return time.Time{}
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			v.Add(name, "must be an RFC 3339 time like 2026-12-01T00:00:00Z")
		}
		return t
	}
	f := domain.AuditFilter{
		TenantID: q.Get("tenant_id"), Product: q.Get("product"), ActorID: q.Get("actor_id"),
		Action: q.Get("action"), TargetID: q.Get("target_id"), Since: at("since"), Until: at("until"),
	}
	return f, v.Err()
}

// csvRow is one event as a CSV row. A cell a spreadsheet would read as a
// formula (one starting with = + - @ or a tab or carriage return) is
// prefixed with a single quote, so that opening an export runs nothing.
func csvRow(e *domain.AuditEvent) []string {
	fields, _ := json.Marshal(e.Fields)
	cells := []string{
		strconv.FormatInt(e.Seq, 10), e.ID, e.TenantID, e.OccurTime.Format(time.RFC3339Nano), e.ReceiveTime.Format(time.RFC3339Nano),
		e.Product, e.Action, e.CRUD, e.Actor.ID, e.Actor.Name, e.Actor.Type, e.Target.ID, e.Target.Type, e.Target.Name,
		e.SourceIP, e.Description, strconv.FormatBool(e.IsFailure), strconv.FormatBool(e.IsAnonymous), string(fields),
		e.ExternalID, e.Hash,
	}
	for i, c := range cells {
		if c != "" && strings.ContainsRune("=+-@\t\r", rune(c[0])) {
			cells[i] = "'" + c
		}
	}
	return cells
}

// fail answers a download with err as Connect would answer an RPC: its
// code's HTTP status and a JSON body of code and message.
func (d exportDownload) fail(w http.ResponseWriter, r *http.Request, err error) {
	err = connectError(r.Context(), d.log, r.URL.Path, err)
	var ce *connect.Error
	if !errors.As(err, &ce) {
		ce = connect.NewError(connect.CodeInternal, errors.New("internal error"))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(httpStatus(ce.Code()))
	_ = json.NewEncoder(w).Encode(map[string]string{"code": ce.Code().String(), "message": ce.Message()})
}

// httpStatus is the HTTP status the Connect protocol gives a code.
func httpStatus(code connect.Code) int {
	switch code {
	case connect.CodeInvalidArgument, connect.CodeFailedPrecondition, connect.CodeOutOfRange:
		return http.StatusBadRequest
	case connect.CodeUnauthenticated:
		return http.StatusUnauthorized
	case connect.CodePermissionDenied:
		return http.StatusForbidden
	case connect.CodeNotFound:
		return http.StatusNotFound
	case connect.CodeAlreadyExists, connect.CodeAborted:
		return http.StatusConflict
	case connect.CodeResourceExhausted:
		return http.StatusTooManyRequests
	case connect.CodeCanceled:
		return 499
	case connect.CodeDeadlineExceeded:
		return http.StatusGatewayTimeout
	case connect.CodeUnavailable:
		return http.StatusServiceUnavailable
	case connect.CodeUnimplemented:
		return http.StatusNotImplemented
	}
	return http.StatusInternalServerError
}
