package domain

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"time"
)

// etag is a resource's version (AIP-154), made of everything an update
// may change: it changes exactly when the resource does, whatever the
// clock says, so two updates of one microsecond still tell apart.
type etag struct{ b []byte }

func (e *etag) str(s string) *etag {
	e.b = binary.AppendUvarint(e.b, uint64(len(s)))
	e.b = append(e.b, s...)
	return e
}

func (e *etag) time(t time.Time) *etag {
	if t.IsZero() {
		return e.str("")
	}
	return e.str(t.UTC().Format(time.RFC3339Nano))
}

func (e *etag) strings(m map[string]string) *etag {
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	})
	e.b = binary.AppendUvarint(e.b, uint64(len(keys)))
	for _, k := range keys {
		e.str(k).str(m[k])
	}
	return e
}

func (e *etag) limits(l Limits) *etag {
	m := make(map[string]string, len(l))
	for k, n := range l {
		m[k] = fmt.Sprint(n)
	}
	return e.strings(m)
}

func (e *etag) list(l []string) *etag {
	e.b = binary.AppendUvarint(e.b, uint64(len(l)))
	for _, s := range l {
		e.str(s)
	}
	return e
}

func (e *etag) String() string {
	sum := sha256.Sum256(e.b)
	return hex.EncodeToString(sum[:8])
}

// checkEtag refuses a change to what, whose version is now current, when
// the caller read it at another version; an empty given etag changes it
// whatever it is.
func checkEtag(given, current, what string) error {
	if given == "" || given == current {
		return nil
	}
	return Errorf(KindAborted, "etag %q is stale: the %s changed since it was read; read it again and retry", given, what)
}
