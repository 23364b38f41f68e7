package domain

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"hash/crc32"
	"math/big"
	"regexp"
	"slices"
	"strings"
	"time"
)

// API key plaintext format: "bp_" + base62 of 32 random bytes (43
// characters) + a 6-character base62 CRC32 of everything before it. The
// checksum lets a mistyped key be refused without a database query, and the
// fixed shape lets secret scanners recognise a leaked key.
const (
	KeyPrefix      = "bp_"
	keyBodyLen     = 43
	keyChecksumLen = 6
	keyLen         = len(KeyPrefix) + keyBodyLen + keyChecksumLen
	// legacyKeyLen is the length of a key of the previous REST
	// implementation: "bp_" + 22 base64 characters, no checksum.
	legacyKeyLen = len(KeyPrefix) + 22
	// displayPrefixLen is how much of a key is stored in clear to tell keys
	// apart in lists: "bp_" + 8 characters.
	displayPrefixLen = len(KeyPrefix) + 8
)

// Hash formats, tagged at the front of the stored hash.
const (
	hashFormatSHA256   = "sha256|"
	hashFormatArgon2ID = "argon2id|"
)

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// encodeBase62 writes n in base62, left-padded with zeros to width.
func encodeBase62(n *big.Int, width int) string {
	out := make([]byte, width)
	n = new(big.Int).Set(n)
	base, mod := big.NewInt(62), new(big.Int)
	for i := width - 1; i >= 0; i-- {
		n.DivMod(n, base, mod)
		out[i] = base62[mod.Int64()]
	}
	return string(out)
}

// keyChecksum is the base62 CRC32 that ends a key of body s.
func keyChecksum(s string) string {
	sum := checksumOf(s)
	return string(sum[:])
}

func checksumOf(s string) (out [keyChecksumLen]byte) {
	n := crc32.ChecksumIEEE([]byte(s))
	for i := keyChecksumLen - 1; i >= 0; i-- {
		out[i] = base62[n%62]
		n /= 62
	}
	return out
}

// NewPlaintextKey returns a new random API key.
func NewPlaintextKey() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	s := KeyPrefix + encodeBase62(new(big.Int).SetBytes(b), keyBodyLen)
	return s + keyChecksum(s)
}

// keyShape says what a presented key looks like.
type keyShape int

const (
	keyMalformed keyShape = iota
	keyCurrent            // this service's format, checksum verified
	keyLegacy             // the previous implementation's format
)

func isBase62(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z') {
			return false
		}
	}
	return true
}

func isBase64(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '/' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// parseKey classifies a presented key without touching any storage.
func parseKey(key string) keyShape {
	switch {
	case !strings.HasPrefix(key, KeyPrefix):
		return keyMalformed
	case len(key) == keyLen && isBase62(key[len(KeyPrefix):]):
		if sum := checksumOf(key[:keyLen-keyChecksumLen]); string(sum[:]) == key[keyLen-keyChecksumLen:] { // no allocation on the hot path
			return keyCurrent
		}
	case len(key) == legacyKeyLen && isBase64(key[len(KeyPrefix):]):
		return keyLegacy
	}
	return keyMalformed
}

// keyDigest is the hex SHA-256 of a whole key: its lookup value. Keys hold
// 256 random bits, so a fast hash is as safe as a slow one and costs
// nothing on the hot path.
func keyDigest(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// storedHash is what is stored for a key of the current format.
func storedHash(digest string) string { return hashFormatSHA256 + digest }

// displayPrefix is the part of a key kept in clear.
func displayPrefix(key string) string { return key[:displayPrefixLen] }

// ApiKeyStatus is a key's state as read at a moment.
type ApiKeyStatus string

// Key states; EXPIRED is computed from the expire time.
const (
	ApiKeyActive   ApiKeyStatus = "ACTIVE"
	ApiKeyRevoked  ApiKeyStatus = "REVOKED"
	ApiKeyExpired  ApiKeyStatus = "EXPIRED"
	ApiKeyDisabled ApiKeyStatus = "DISABLED"
)

// ApiKey is a tenant's credential for its machines. Only its hash is kept.
type ApiKey struct {
	ID           string
	TenantID     string
	Name         string
	Prefix       string // "bp_" + 8 characters, for people to tell keys apart
	Hash         string // "sha256|<hex>" or, for imported keys, "argon2id|<salt>|<hash>"
	Scopes       []string
	CreateTime   time.Time
	UpdateTime   time.Time
	ExpireTime   time.Time // zero: never
	RevokeTime   time.Time // zero: not revoked
	LastUsedTime time.Time // zero: never used; updated at most once a minute
	// CreatedBy is the key that created this one, when a key did: revoking
	// that key revokes this one too.
	CreatedBy   string
	DisableTime time.Time // zero: not disabled
	// DisabledWith is the key whose disabling disabled this one (one it
	// descends from); empty when it was disabled on its own.
	DisabledWith string
	Metadata     map[string]string // for the products that verify it; returned by VerifyApiKey
}

// Etag is the key's version (AIP-154).
func (k *ApiKey) Etag() string {
	var e etag
	return e.str(k.ID).str(k.Name).list(k.Scopes).time(k.ExpireTime).time(k.RevokeTime).time(k.DisableTime).str(k.DisabledWith).strings(k.Metadata).String()
}

// IsPlatform reports whether k is a platform key: a key of the platform
// tenant, the only kind whose platform scopes count.
func (k *ApiKey) IsPlatform() bool { return k.TenantID == PlatformTenantID }

// StatusAt is the key's status at now.
func (k *ApiKey) StatusAt(now time.Time) ApiKeyStatus {
	switch {
	case !k.RevokeTime.IsZero():
		return ApiKeyRevoked
	case !k.ExpireTime.IsZero() && !now.Before(k.ExpireTime):
		return ApiKeyExpired
	case !k.DisableTime.IsZero():
		return ApiKeyDisabled
	}
	return ApiKeyActive
}

// Bounds of a key's settings.
const (
	MaxKeyNameLen  = 200
	MaxKeyScopes   = 50
	MaxScopeLen    = 100
	MaxImportBatch = 500
	MaxGracePeriod = 30 * 24 * time.Hour
)

var scopePattern = regexp.MustCompile(`^[a-z][a-z0-9_.:*-]*$`)

// checkScopes validates scopes and returns them sorted without duplicates.
func checkScopes(v *Violations, field string, scopes []string) []string {
	if len(scopes) > MaxKeyScopes {
		v.Add(field, "must have at most %d scopes, got %d", MaxKeyScopes, len(scopes))
		return nil
	}
	for _, s := range scopes {
		if len(s) > MaxScopeLen || !scopePattern.MatchString(s) {
			v.Add(field, "scope %.40q must be lower-case letters, digits and _ . : * -, starting with a letter, at most %d characters", s, MaxScopeLen)
			return nil
		}
	}
	out := slices.Clone(scopes)
	slices.Sort(out)
	return slices.Compact(out)
}

// checkKeyScopes is checkScopes for a key of tenantID: registry scopes must
// be known ones, product:<key> must be well formed, and tenant scopes are
// for tenant keys only. Platform scopes on a tenant key are refused later,
// as a permission (see ApiKeyService.grantable).
func checkKeyScopes(v *Violations, field, tenantID string, scopes []string) []string {
	out := checkScopes(v, field, scopes)
	for _, s := range out {
		switch product, isProduct := strings.CutPrefix(s, ScopeProductPrefix); {
		case isProduct:
			checkProductKey(v, field, product)
		case strings.HasPrefix(s, registryScopePrefix) && !IsPlatformScope(s) && !isTenantScope(s):
			v.Add(field, "%q is not a registry scope; platform keys carry %s and product:<key>, tenant keys %s",
				s, strings.Join(platformScopes, ", "), strings.Join(tenantScopes, ", "))
		case tenantID == PlatformTenantID && isTenantScope(s):
			v.Add(field, "%s is a scope of tenant keys; a platform key holds %s", s, strings.Join(platformScopes, ", "))
		}
	}
	return out
}

// productScopesExist refuses product:<key> scopes naming no product of the
// catalog.
func productScopesExist(ctx context.Context, r Repositories, field string, scopes []string) error {
	var v Violations
	for _, s := range scopes {
		if product, ok := strings.CutPrefix(s, ScopeProductPrefix); ok {
			_, err := r.Products().Get(ctx, product)
			if ErrorKind(err) == KindNotFound {
				v.Add(field, "%s names no product of the catalog", s)
			} else if err != nil {
				return err
			}
		}
	}
	return v.Err()
}

// ApiKeyReader reads API keys.
type ApiKeyReader interface {
	Get(ctx context.Context, id string) (*ApiKey, error)
	// GetForVerification returns the key with exactly this stored hash
	// with its tenant and the tenant's entitlements, read together.
	GetForVerification(ctx context.Context, hash string) (*KeyRecord, error)
	// ListLegacyByPrefix returns the argon2id-hashed keys with this display prefix.
	ListLegacyByPrefix(ctx context.Context, prefix string) ([]*ApiKey, error)
	// List returns up to limit keys of a tenant with ids after afterID, by id.
	List(ctx context.Context, tenantID, afterID string, limit int) ([]*ApiKey, error)
	// Descendants returns the keys that key id created, those they
	// created, and so on, that are not revoked.
	Descendants(ctx context.Context, id string) ([]*ApiKey, error)
	// CountLive counts a tenant's keys neither revoked nor expired at now.
	CountLive(ctx context.Context, tenantID string, now time.Time) (int, error)
}

// ApiKeyRepository stores API keys, in a transaction (Store.Atomically).
type ApiKeyRepository interface {
	ApiKeyReader
	Create(ctx context.Context, k *ApiKey) error
	// GetForUpdate reads a key and keeps concurrent writers of it out until
	// the transaction ends.
	GetForUpdate(ctx context.Context, id string) (*ApiKey, error)
	// Update writes a key's name, scopes, expire, revoke and disable
	// times, metadata and update time.
	Update(ctx context.Context, k *ApiKey) error
	// RevokeAll revokes, at now, the keys of ids not yet revoked.
	RevokeAll(ctx context.Context, ids []string, now time.Time) error
	// DisableAll disables, at now and with key with, the keys of ids
	// neither revoked nor disabled.
	DisableAll(ctx context.Context, ids []string, with string, now time.Time) error
	// EnableAll enables, at now, the keys of ids disabled with key with.
	EnableAll(ctx context.Context, ids []string, with string, now time.Time) error
	// MoveDisabled makes the keys of ids disabled with key from count as
	// disabled with key to.
	MoveDisabled(ctx context.Context, ids []string, from, to string) error
	// Reparent makes the keys that key from created count as created by key to.
	Reparent(ctx context.Context, from, to string) error
	// Rehash replaces a key's hash if it still is oldHash.
	Rehash(ctx context.Context, id, oldHash, newHash string) error
	// TouchLastUsed records when keys were last used.
	TouchLastUsed(ctx context.Context, used map[string]time.Time) error
}
