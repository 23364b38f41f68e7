package domain

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"golang.org/x/text/unicode/norm"
)

// checkText records a violation when s is not acceptable free text: invalid
// UTF-8, control characters (newlines and tabs only when multiline), or more
// than max characters. PostgreSQL cannot store NUL in text, so refusing
// control characters here also keeps such input from ever reaching it.
func checkText(v *Violations, field, s string, max int, multiline bool) {
	if !utf8.ValidString(s) {
		v.Add(field, "must be valid UTF-8")
		return
	}
	if n := utf8.RuneCountInString(s); n > max {
		v.Add(field, "must be at most %d characters, got %d", max, n)
		return
	}
	for _, r := range s {
		if unicode.IsControl(r) && !(multiline && (r == '\n' || r == '\r' || r == '\t')) {
			v.Add(field, "must not contain control characters")
			return
		}
	}
}

// checkName checks a name people read (a display name, a key's name) and
// returns it as it is stored: trimmed and NFC-normalised, so that one name
// has one spelling. Besides checkText's rules it must hold a letter or a
// digit, and nothing that shows as nothing or as a plain space: no Unicode
// format characters (bidi controls such as U+202E, zero-width ones such as
// U+200B), no other default-ignorable code points (fillers such as U+3164,
// the combining grapheme joiner, variation selectors), no spaces but
// U+0020, no line or paragraph separators, no private-use or unassigned
// code points. Such characters make different names look alike, a name
// look blank, or text read in another order than stored. Look-alike
// letters of different scripts (Cyrillic а for Latin a) remain possible.
func checkName(v *Violations, field, s string, max int) string {
	if strings.TrimSpace(s) == "" {
		v.Add(field, "is required")
		return s
	}
	before := len(*v)
	checkText(v, field, s, max, false)
	if len(*v) > before {
		return s
	}
	visible := false
	for _, r := range s {
		if invisible(r) {
			v.Add(field, "must not contain invisible or look-alike spacing characters (found U+%04X)", r)
			return s
		}
		visible = visible || unicode.IsLetter(r) || unicode.IsDigit(r)
	}
	if !visible {
		v.Add(field, "must contain a letter or a digit")
		return s
	}
	return norm.NFC.String(strings.TrimSpace(s))
}

// invisible reports whether r shows as nothing, or as a space it is not.
func invisible(r rune) bool {
	switch {
	case r == ' ':
		return false
	case r == '\u2800': // braille pattern blank: a symbol that prints as a space
		return true
	}
	return unicode.In(r, unicode.Cf, unicode.Co, unicode.Cs, unicode.Zs, unicode.Zl, unicode.Zp,
		unicode.Other_Default_Ignorable_Code_Point, unicode.Variation_Selector) ||
		!unicode.In(r, unicode.L, unicode.M, unicode.N, unicode.P, unicode.S) // unassigned
}

// NewID returns a new UUIDv7: unique, and ordered by creation time, which
// keeps inserts local in indexes and makes ids usable as keyset cursors.
func NewID() string { return uuid.Must(uuid.NewV7()).String() }

// checkID records a violation when s is not a UUID in canonical form, and
// returns s in lower case.
func checkID(v *Violations, field, s string) string {
	if s == "" {
		v.Add(field, "is required")
		return s
	}
	id, err := uuid.Parse(s)
	if err != nil || len(s) != 36 {
		v.Add(field, "must be a UUID like 00000000-0000-0000-0000-000000000001")
		return s
	}
	return id.String()
}

// ParseID validates a single id argument, returning a KindInvalid error
// naming field when it is not a UUID.
func ParseID(field, s string) (string, error) {
	var v Violations
	id := checkID(&v, field, s)
	return id, v.Err()
}
