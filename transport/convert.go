package transport

import (
	"time"

	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/tenant-registry/tenant-registry/domain"
)

// timeIn converts an optional timestamp from a request: nil is the zero
// time; an out-of-range one is a violation naming field. So is one before
// 1970, which no field here means: near year 1 it would also be taken for
// the zero time ("never") once stored at microsecond precision.
func timeIn(v *domain.Violations, field string, ts *timestamppb.Timestamp) time.Time {
	if ts == nil {
		return time.Time{}
	}
	if err := ts.CheckValid(); err != nil {
		v.Add(field, "is not a valid timestamp")
		return time.Time{}
	}
	if ts.GetSeconds() < 0 {
		v.Add(field, "must not be before 1970-01-01T00:00:00Z")
		return time.Time{}
	}
	return ts.AsTime()
}

// timeOut converts a time for a response: the zero time is absent.
func timeOut(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// maskIn converts an update mask (AIP-134) to its paths; nil when absent
// or empty, which means no mask.
func maskIn(m *fieldmaskpb.FieldMask) []string {
	if len(m.GetPaths()) == 0 {
		return nil
	}
	return m.GetPaths()
}
