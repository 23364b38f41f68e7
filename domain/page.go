package domain

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
)

// Page bounds shared by every list.
const (
	DefaultPageSize = 50
	MaxPageSize     = 500
)

// PageRequest is what a caller asks of a list: how many items, and where
// to continue (an opaque token from the previous page; empty for the first).
type PageRequest struct {
	Size  int
	Token string
}

// pageSize validates the requested size and applies the default.
func (p PageRequest) pageSize(v *Violations) int {
	switch {
	case p.Size == 0:
		return DefaultPageSize
	case p.Size < 0 || p.Size > MaxPageSize:
		v.Add("page_size", "must be between 0 and %d, got %d", MaxPageSize, p.Size)
		return DefaultPageSize
	}
	return p.Size
}

// afterID decodes p's token as a position after an id in query's list ("",
// the start, for no token), recording a violation for a bad one.
func (p PageRequest) afterID(v *Violations, query string) string {
	if pos := decodeCursor(v, p.Token, query, 1); pos != nil {
		return checkID(v, "page_token", pos[0])
	}
	return ""
}

// Page is one page of a list: its items, and the token that continues
// after them ("" on the last page).
type Page[T any] struct {
	Items         []T
	NextPageToken string
}

// pageOf makes a page of items that were read one more than size: the
// extra one tells whether another page exists without a COUNT. The next
// page's token, bound to query, continues after the last item kept, at the
// position pos names.
func pageOf[T any](items []T, size int, query string, pos func(T) string) *Page[T] {
	if len(items) <= size {
		return &Page[T]{Items: items}
	}
	return &Page[T]{Items: items[:size], NextPageToken: encodeCursor(query, pos(items[size-1]))}
}

// cursor is the content of a page token: the keyset position to continue
// after, and a fingerprint of the query it belongs to, so a token cannot be
// replayed against another query.
type cursor struct {
	Query string   `json:"q"`
	After []string `json:"a"`
}

const tokenChecksumLen = 8

// encodeCursor turns a keyset position into an opaque token bound to query.
// A short checksum makes edited or truncated tokens fail cleanly.
func encodeCursor(query string, after ...string) string {
	b, _ := json.Marshal(cursor{Query: fingerprint(query), After: after})
	sum := sha256.Sum256(b)
	return base64.RawURLEncoding.EncodeToString(append(b, sum[:tokenChecksumLen]...))
}

// decodeCursor reverses encodeCursor. It returns nil for the empty token,
// and records a violation when the token is malformed, was edited, belongs
// to another query or holds a position of the wrong length.
func decodeCursor(v *Violations, token, query string, parts int) []string {
	if token == "" {
		return nil
	}
	const bad = "is not a page token of this query; pass the next_page_token of the previous response unchanged"
	raw, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil || len(raw) <= tokenChecksumLen {
		v.Add("page_token", bad)
		return nil
	}
	body, sum := raw[:len(raw)-tokenChecksumLen], raw[len(raw)-tokenChecksumLen:]
	want := sha256.Sum256(body)
	var c cursor
	if !bytes.Equal(sum, want[:tokenChecksumLen]) || json.Unmarshal(body, &c) != nil ||
		c.Query != fingerprint(query) || len(c.After) != parts {
		v.Add("page_token", bad)
		return nil
	}
	return c.After
}

func fingerprint(query string) string {
	sum := sha256.Sum256([]byte(query))
	return base64.RawURLEncoding.EncodeToString(sum[:9])
}
