package domain

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/mod/sumdb/note"

	"github.com/tenant-registry/tenant-registry/sdk/go/auditlog"
)

// CheckpointSigner signs the tree heads of every tenant's audit log as
// C2SP signed notes (Ed25519), and opens the checkpoints customers kept,
// signed by its key or by one it replaced.
type CheckpointSigner struct {
	signer    note.Signer
	vkey      string
	verifiers note.Verifiers
}

// NewCheckpointSigner signs with skey (a note signer key,
// "PRIVATE+KEY+name+hash+key") and also opens checkpoints signed by the
// earlier keys' verifier keys, so that checkpoints survive a key rotation.
func NewCheckpointSigner(skey string, earlier ...string) (*CheckpointSigner, error) {
	signer, err := note.NewSigner(strings.TrimSpace(skey))
	if err != nil {
		return nil, errors.New("not a signer key: want PRIVATE+KEY+<name>+<hash>+<key>, as `tenant-registry audit keygen` prints")
	}
	vkey, err := verifierKey(signer.Name(), strings.TrimSpace(skey))
	if err != nil {
		return nil, err
	}
	list := []note.Verifier{}
	for _, k := range append([]string{vkey}, earlier...) {
		v, err := note.NewVerifier(strings.TrimSpace(k))
		if err != nil {
			return nil, fmt.Errorf("verifier key %.40q: %w", k, err)
		}
		list = append(list, v)
	}
	return &CheckpointSigner{signer: signer, vkey: vkey, verifiers: note.VerifierList(list...)}, nil
}

// GenerateCheckpointKey returns a new signer key and its verifier key for
// the given name (a host name of the deployment, e.g. registry.example.com).
func GenerateCheckpointKey(name string) (skey, vkey string, err error) {
	return note.GenerateKey(rand.Reader, name)
}

// verifierKey derives the verifier key of an Ed25519 signer key.
func verifierKey(name, skey string) (string, error) {
	// PRIVATE+KEY+<name>+<hash>+<base64 key>: the key's base64 may hold '+'.
	parts := strings.SplitN(strings.TrimPrefix(skey, "PRIVATE+KEY+"), "+", 3)
	if len(parts) != 3 {
		return "", errors.New("the signer key is not a note signer key")
	}
	raw, err := base64.StdEncoding.DecodeString(parts[2])
	if err != nil || len(raw) != 1+ed25519.SeedSize || raw[0] != 1 {
		return "", errors.New("the signer key is not an Ed25519 key")
	}
	pub := ed25519.NewKeyFromSeed(raw[1:]).Public().(ed25519.PublicKey)
	return note.NewEd25519VerifierKey(name, pub)
}

// Name is the signing key's name, which starts every log's origin.
func (s *CheckpointSigner) Name() string { return s.signer.Name() }

// VerifierKey is the public key customers check checkpoints with:
// "<name>+<key id>+<key>".
func (s *CheckpointSigner) VerifierKey() string { return s.vkey }

// KeyID is the key's id as it appears in signatures, in hex.
func (s *CheckpointSigner) KeyID() string { return fmt.Sprintf("%08x", s.signer.KeyHash()) }

// Sign signs a tree head.
func (s *CheckpointSigner) Sign(c auditlog.Checkpoint) ([]byte, error) {
	return auditlog.Sign(c, s.signer)
}

// Open verifies a checkpoint signed by this key or an earlier one.
func (s *CheckpointSigner) Open(signed []byte) (auditlog.Checkpoint, error) {
	n, err := note.Open(signed, s.verifiers)
	if err != nil {
		return auditlog.Checkpoint{}, err
	}
	return auditlog.ParseCheckpoint(n.Text)
}
