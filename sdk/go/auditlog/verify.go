package auditlog

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"golang.org/x/mod/sumdb/tlog"
)

// A Break is the first place where a log does not match what it should:
// the event at Seq (0 when no single event can be blamed) and what is wrong.
type Break struct {
	Seq     int64
	Problem string
}

func (b *Break) Error() string {
	if b.Seq == 0 {
		return b.Problem
	}
	return fmt.Sprintf("seq %d: %s", b.Seq, b.Problem)
}

// Result is what a verification checked.
type Result struct {
	Checked int64 // events of the checkpoint's tree, recomputed from their bodies
	Newer   int64 // events after the checkpoint, checked against their own hashes only
}

// TenantOf returns the tenant id a checkpoint's origin names ("" for the
// platform's log).
func TenantOf(c Checkpoint) (string, error) {
	i := strings.LastIndex(c.Origin, "/audit/")
	if i < 0 {
		return "", fmt.Errorf("checkpoint origin %q names no tenant's audit log", c.Origin)
	}
	tenant := c.Origin[i+len("/audit/"):]
	if tenant == "platform" {
		tenant = ""
	}
	return tenant, nil
}

// VerifyExport checks an NDJSON export of one tenant's audit log (one
// event per line, protojson as the registry writes it, newest first: the
// order of ExportAuditEvents and of /audit/export.ndjson) against a
// checkpoint already opened with the server's verifier key. Every event up
// to the checkpoint's size must be there, in order, and hash to its root;
// an edited byte, a dropped or reordered event, an event of another
// tenant, a truncated log and a rewritten one are each a *Break. It needs
// no server.
func VerifyExport(r io.Reader, c Checkpoint) (Result, error) {
	tenant, err := TenantOf(c)
	if err != nil {
		return Result{}, err
	}
	var res Result
	var leaves []tlog.Hash // by seq-1, filled from the newest down
	last := int64(0)       // seq of the previous line
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for line := 1; sc.Scan(); line++ {
		if strings.TrimSpace(sc.Text()) == "" {
			continue
		}
		e, stored, err := parseEvent(sc.Bytes())
		if err != nil {
			return res, fmt.Errorf("line %d: %w", line, err)
		}
		switch {
		case e.TenantID != tenant:
			return res, &Break{e.Seq, fmt.Sprintf("line %d is an event of tenant %q, not of this log's", line, e.TenantID)}
		case e.Seq < 1:
			return res, &Break{0, fmt.Sprintf("line %d has no seq", line)}
		case last != 0 && e.Seq != last-1:
			if e.Seq >= last {
				return res, &Break{e.Seq, fmt.Sprintf("line %d: seq %d follows seq %d; an export lists the newest event first, one seq after another", line, e.Seq, last)}
			}
			return res, &Break{last - 1, fmt.Sprintf("event seq %d is missing", last-1)}
		}
		last = e.Seq
		leaf := e.LeafHash()
		if stored != "" && stored != hex.EncodeToString(leaf[:]) {
			return res, &Break{e.Seq, "the event was changed after it was written: its body does not match its hash"}
		}
		if e.Seq > c.Size {
			res.Newer++
			continue
		}
		if leaves == nil {
			if e.Seq != c.Size {
				return res, &Break{e.Seq + 1, fmt.Sprintf("the export ends at seq %d, but the checkpoint covers %d events: the newest were cut off", e.Seq, c.Size)}
			}
			leaves = make([]tlog.Hash, c.Size)
		}
		leaves[e.Seq-1] = leaf
		res.Checked++
	}
	if err := sc.Err(); err != nil {
		return res, err
	}
	switch {
	case c.Size == 0:
		return res, nil
	case leaves == nil:
		return res, &Break{last + 1, fmt.Sprintf("the export holds no event of the checkpoint's %d", c.Size)}
	case last != 1:
		return res, &Break{last - 1, fmt.Sprintf("the export stops at seq %d: events 1 to %d are missing", last, last-1)}
	}
	var tree Tree
	for _, leaf := range leaves {
		tree.Append(leaf)
	}
	if tree.Root() != c.Root {
		return res, &Break{0, "the events do not hash to the checkpoint's root: the log was rewritten since the checkpoint was signed"}
	}
	return res, nil
}

// exported is an event as protojson writes it; fields at their zero value
// are absent.
type exported struct {
	ID       string `json:"id"`
	TenantID string `json:"tenantId"`
	Product  string `json:"product"`
	Action   string `json:"action"`
	CRUD     string `json:"crud"`
	Actor    struct {
		ID, Name, Type string
	} `json:"actor"`
	Target struct {
		ID, Type, Name string
	} `json:"target"`
	SourceIP    string            `json:"sourceIp"`
	Description string            `json:"description"`
	IsFailure   bool              `json:"isFailure"`
	IsAnonymous bool              `json:"isAnonymous"`
	Fields      map[string]string `json:"fields"`
	OccurTime   string            `json:"occurTime"`
	ReceiveTime string            `json:"receiveTime"`
	ExternalID  string            `json:"externalId"`
	Seq         json.Number       `json:"seq"` // an int64: protojson writes it as a string
	Hash        string            `json:"hash"`
	Event       *json.RawMessage  `json:"event"` // a line of the streaming RPC wraps the event
}

// parseEvent reads one line of an export: the event and the hash the
// server stored for it.
func parseEvent(line []byte) (*Event, string, error) {
	var x exported
	dec := json.NewDecoder(strings.NewReader(string(line)))
	dec.UseNumber()
	if err := dec.Decode(&x); err != nil {
		return nil, "", fmt.Errorf("not an audit event in JSON: %w", err)
	}
	if x.Event != nil {
		return parseEvent(*x.Event)
	}
	seq, err := strconv.ParseInt(strings.Trim(x.Seq.String(), `"`), 10, 64)
	if err != nil && x.Seq != "" {
		return nil, "", fmt.Errorf("seq %q is not a number", x.Seq)
	}
	occur, err1 := parseTime(x.OccurTime)
	receive, err2 := parseTime(x.ReceiveTime)
	if err1 != nil || err2 != nil {
		return nil, "", fmt.Errorf("occurTime and receiveTime must be RFC 3339 times")
	}
	return &Event{
		ID: x.ID, TenantID: x.TenantID, Seq: seq, Product: x.Product, Action: x.Action, CRUD: x.CRUD,
		ActorID: x.Actor.ID, ActorName: x.Actor.Name, ActorType: x.Actor.Type,
		TargetID: x.Target.ID, TargetType: x.Target.Type, TargetName: x.Target.Name,
		SourceIP: x.SourceIP, Description: x.Description, IsFailure: x.IsFailure, IsAnonymous: x.IsAnonymous,
		Fields: x.Fields, OccurTime: occur, ReceiveTime: receive, ExternalID: x.ExternalID,
	}, x.Hash, nil
}

func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, fmt.Errorf("missing")
	}
	return time.Parse(time.RFC3339Nano, s)
}
